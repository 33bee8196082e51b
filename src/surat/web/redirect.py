"""The http listener: everything is redirected to https, except ACME HTTP-01 challenges."""

from __future__ import annotations

from aiohttp import web

from surat.acme.files import AcmeFiles
from surat.web.context import context_of
from surat.web.hosts import request_host

# RFC 8555 §8.3: the CA fetches http://DOMAIN/.well-known/acme-challenge/TOKEN over plain HTTP (port
# 80), on whatever name is being validated. It may follow redirects (§8.3), but answering here keeps
# validation independent of the https listener and of the certificate it serves.
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


async def acme_challenge(request: web.Request) -> web.Response:
    """The key authorization the ACME client (surat.acme, possibly in another worker process) wrote
    for this token; 404 for any other token, and always without [acme]."""
    context = context_of(request)
    if context.config.acme is not None:
        # A bounded read of one small file (surat.acme.files.MAX_KEY_AUTHORIZATION); a token that is
        # not base64url is refused before any file name is built from it.
        answer = AcmeFiles(context.config.data_dir).challenge(request.match_info["token"])
        if answer is not None:
            # RFC 8555 §8.3: the body is the key authorization (the CA ignores trailing white
            # space; none is added).
            return web.Response(body=answer, content_type="application/octet-stream")
    raise web.HTTPNotFound(text="no such ACME challenge\n")


async def to_https(request: web.Request) -> web.Response:
    """301 to the same path on https: the server's hostname when the Host is missing or odd, and the
    https listener's port when it is not 443."""
    context = context_of(request)
    host = request_host(request) or context.config.hostname
    port = context.https_port
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    authority = host if port in (None, 443) else f"{host}:{port}"
    # The target as the client sent it (still percent-encoded); only origin-form ("/...") is kept,
    # so that the redirect never leaves for a host the request line named.
    target = request.raw_path if request.raw_path.startswith("/") else "/"
    raise web.HTTPMovedPermanently(location=f"https://{authority}{target}")


def routes() -> list[web.RouteDef]:
    return [
        web.get(ACME_CHALLENGE_PREFIX + "{token}", acme_challenge),
        web.route("*", "/{path:.*}", to_https),
    ]
