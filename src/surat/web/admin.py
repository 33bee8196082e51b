"""The admin listener (loopback by default): /metrics now, the admin console later (issue 13).

No route here is ever added to the https application: the admin listener is the only way in.
"""

from __future__ import annotations

from aiohttp import web

from surat import metrics
from surat.web.context import context_of
from surat.web.templating import STATIC_DIR, render


async def index(request: web.Request) -> web.Response:
    context = context_of(request)
    domains = await context.store.list_domains()
    return render("admin_index.html", hostname=context.config.hostname, domains=domains)


async def metrics_text(request: web.Request) -> web.Response:
    context = context_of(request)
    acme_data_dir = context.config.data_dir if context.config.acme is not None else None
    body = await metrics.render(context.store, acme_data_dir)
    response = web.Response(body=body)
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


def routes() -> list[web.AbstractRouteDef]:
    return [
        web.get("/", index),
        web.get("/metrics", metrics_text),
        web.static("/static", STATIC_DIR),
    ]
