"""The web listeners: one aiohttp application per role, served by aiohttp's low-level runner in the
server's own event loop (not `web.run_app`, which would take over the loop and the signals)."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Mapping, Sequence

from aiohttp import web

from surat.authlimit import AuthLimiter
from surat.config import WEB_ROLES, Config
from surat.log import fields
from surat.net.listener import BACKLOG, bind, format_address
from surat.store.base import Store
from surat.web import account, admin, autoconfig, policy, redirect, security
from surat.web.context import CONTEXT, WebContext
from surat.web.sessions import SessionSigner

log = logging.getLogger(__name__)

# Seconds running requests get to finish when the server stops, as the mail listeners' sessions do.
SHUTDOWN_GRACE = 5.0


def make_application(role: str, context: WebContext) -> web.Application:
    """The application of one web listener. Each role gets only its own routes: nothing of the admin
    listener is reachable on https, whatever the path."""
    app = web.Application(
        client_max_size=security.MAX_BODY,
        middlewares=[security.middleware(role, tls=role == "https")],
    )
    app[CONTEXT] = context
    if role == "https":
        app.add_routes([*autoconfig.routes(), *policy.routes(), *account.routes()])
    elif role == "http":
        app.add_routes(redirect.routes())
    elif role == "admin":
        admin.setup(app)
    else:
        raise ValueError(f"not a web role: {role}")
    return app


class WebServer:
    def __init__(
        self,
        config: Config,
        store: Store,
        tls_context: ssl.SSLContext | None,
        client_ports: Mapping[str, int],
        auth_limiter: AuthLimiter,
        *,
        listening: Mapping[str, Sequence[socket.socket]] | None = None,
    ) -> None:
        """`listening`: sockets bound already by role (a worker of `workers = N`), served instead of
        binding [listen]."""
        self.config = config
        self.store = store
        self.tls_context = tls_context
        self.client_ports = dict(client_ports)
        self.auth_limiter = auth_limiter
        self._listening = listening
        self._runners: list[web.AppRunner] = []
        self._sockets: list[tuple[str, socket.socket]] = []

    def _sockets_for(self, role: str) -> list[socket.socket]:
        if self._listening is not None:
            return list(self._listening.get(role, ()))
        sockets: list[socket.socket] = []
        for address in getattr(self.config.listen, role):
            sockets.extend(bind(address))
        return sockets

    async def start(self) -> None:
        """Bind (or take) the web roles' sockets and serve them; OSError if one cannot be bound.
        https needs `tls_context` (the caller checks)."""
        by_role = {role: self._sockets_for(role) for role in WEB_ROLES}
        https = by_role["https"]
        context = WebContext(
            self.config,
            self.store,
            self.client_ports,
            self.auth_limiter,
            https_port=https[0].getsockname()[1] if https else None,
            # From the store's installation secret: any worker or node verifies any session.
            sessions=SessionSigner(await self.store.keys.installation_secret()),
        )
        for role, sockets in by_role.items():
            if not sockets:
                continue
            runner = web.AppRunner(
                make_application(role, context),
                handle_signals=False,
                access_log=None,  # requests are counted in /metrics; errors are logged
                shutdown_timeout=SHUTDOWN_GRACE,
                keepalive_timeout=security.KEEPALIVE_TIMEOUT,
                max_line_size=security.MAX_LINE,
                max_field_size=security.MAX_LINE,
                max_headers=security.MAX_HEADERS,
            )
            await runner.setup()
            self._runners.append(runner)
            for sock in sockets:
                site = web.SockSite(
                    runner, sock, ssl_context=self.tls_context if role == "https" else None, backlog=BACKLOG
                )
                await site.start()
                self._sockets.append((role, sock))
                log.info("listening", extra=fields(role=role, address=format_address(sock.getsockname())))

    def bound(self, role: str) -> list[tuple[str, int]]:
        return [(sock.getsockname()[0], sock.getsockname()[1]) for r, sock in self._sockets if r == role]

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        self._sockets.clear()
