"""What every web response shares: security headers, a time bound per request, request counting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from surat import metrics
from surat.log import fields

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Limits of one request (aiohttp enforces these; the values are ours):
# - a connection that has not sent a complete request head within KEEPALIVE_TIMEOUT seconds, or sits
#   idle that long between requests, is closed (aiohttp's keep-alive timer also runs before the first
#   request), so a client dripping header bytes cannot hold a connection;
# - the request line and each header field at most MAX_LINE octets, at most MAX_HEADERS fields;
# - a body at most MAX_BODY octets (413 beyond: `client_max_size`), the handler's whole work, body
#   reading included, at most REQUEST_TIMEOUT seconds (408 beyond).
KEEPALIVE_TIMEOUT = 30.0
MAX_LINE = 8190
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 30.0

# No inline script or style, nothing from elsewhere: a page can only load its own static files, and no
# other site may frame it (clickjacking) or receive its address as a referrer.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Only ever sent over TLS (RFC 6797 §7.2: a plain-HTTP response must not carry it).
HSTS = "max-age=31536000"


def middleware(listener: str, *, tls: bool) -> Middleware:  # aiohttp's middleware type
    """The middleware of one listener's application."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413, redirects...: they get the headers too
            _decorate(exc, tls)
            metrics.http_request(listener, exc.status)
            raise
        except TimeoutError:
            response = web.Response(status=408, text="request timeout\n")
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: logged with its traceback, the client told no more than that
            log.exception("web.error", extra=fields(listener=listener, path=request.path))
            response = web.Response(status=500, text="internal error\n")
        _decorate(response, tls)
        metrics.http_request(listener, response.status)
        return response

    return guard


def _decorate(response: web.StreamResponse, tls: bool) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    if tls:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
