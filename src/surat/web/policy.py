"""The MTA-STS policy (RFC 8461 §3.3) at https://mta-sts.DOMAIN/.well-known/mta-sts.txt."""

from __future__ import annotations

from aiohttp import web

from surat.mailauth.mtasts import MEDIA_TYPE, published_policy, render_policy
from surat.web.context import context_of
from surat.web.hosts import MTA_STS_PREFIX, local_domain, request_host

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3


async def mta_sts_policy(request: web.Request) -> web.Response:
    context = context_of(request)
    host = request_host(request)
    # Only on the policy host of a local domain: senders fetch it from there (RFC 8461 §3.3), and a
    # policy answered for any name would vouch for domains that are not ours.
    if (
        not host.startswith(MTA_STS_PREFIX)
        or await local_domain(context.store, host.removeprefix(MTA_STS_PREFIX)) is None
    ):
        raise web.HTTPNotFound()
    # §3.2: media type text/plain. Senders cache it for max_age themselves (§3.3: HTTP caching is not
    # what decides), so no-store costs nothing.
    sts = context.config.mta_sts
    return web.Response(
        text=render_policy(published_policy(sts.mode, sts.max_age, context.config.hostname)),
        content_type=MEDIA_TYPE,
        charset="utf-8",
    )


def routes() -> list[web.RouteDef]:
    return [web.get(POLICY_PATH, mta_sts_policy)]
