"""What the web handlers need from the server, stored on each aiohttp application."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from surat.authlimit import AuthLimiter
from surat.config import Config
from surat.store.base import Store
from surat.web.sessions import SessionSigner


@dataclass(frozen=True, slots=True)
class WebContext:
    config: Config
    store: Store
    # The port clients should use per mail role, from the listeners as bound (so a test's port 0
    # becomes the real port); a role without a listener is missing and is not advertised.
    client_ports: Mapping[str, int]
    # The login-failure limiter the mail protocols use: the web login counts failures with them.
    auth_limiter: AuthLimiter
    # Where the http listener redirects to: the https listener's port (None: 443, the default).
    https_port: int | None = None
    # Signs and checks the login sessions' cookies, keyed by the installation secret (set at start).
    sessions: SessionSigner | None = None


CONTEXT = web.AppKey("context", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
