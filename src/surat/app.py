"""Composition root: config -> store -> TLS -> listeners; clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import dns.exception

from surat.authlimit import BlockPolicy, StoreAuthLimiter
from surat.config import MAIL_ROLES, WEB_ROLES, Config, HostPort, admin_url
from surat.delivery.dkim import SigningKeys
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.dns.base import Resolver
from surat.dns.resolver import DnsResolver
from surat.imapd.session import IMAPService
from surat.log import fields, setup_logging
from surat.net.listener import Handler, Listeners, ListenerSpec
from surat.net.tls import TLSSetupError, client_context, server_context
from surat.pop3d.locks import FileMaildropLocks
from surat.pop3d.service import POP3Service
from surat.smtpd.service import SMTPService
from surat.store.base import Store
from surat.store.filemodes import make_private_dir
from surat.store.sqlite import SQLiteStore
from surat.web.server import WebServer

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


def _system_resolver(config: Config) -> Resolver:
    try:
        return DnsResolver(config.dns.nameservers, config.dns.timeout)
    except ValueError as exc:  # a nameserver that is not an IP address
        raise StartupError(f"dns.nameservers: {exc}") from None
    except dns.exception.DNSException as exc:  # no /etc/resolv.conf, or nothing usable in it
        raise StartupError(
            f"dns.nameservers: the system resolver cannot be used ({exc}); set [dns] nameservers"
        ) from None


class SuratServer:
    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        *,
        resolver: Resolver | None = None,
        listening: Mapping[str, Sequence[socket.socket]] | None = None,
        run_queue: bool = True,
    ) -> None:
        """`listening`: sockets bound already, by role, served instead of binding [listen] (a worker
        of `workers = N`). `run_queue=False`: no outbound queue runner in this process (another
        worker runs it)."""
        self.config = config
        self._listening = listening
        self._run_queue = run_queue
        # Tests inject a FakeResolver; the server asks the configured nameservers.
        self.resolver: Resolver = resolver or _system_resolver(config)
        self._own_store = store is None
        self.store: Store = store if store is not None else SQLiteStore(config.data_dir)
        self.tls_context: ssl.SSLContext | None = None
        self._listeners = Listeners()
        self.web: WebServer | None = None
        self._auth_limiter: StoreAuthLimiter | None = None
        self._started = False
        self.queue: QueueRunner | None = None

    async def start(self) -> None:
        config = self.config
        if config.tls.cert is not None and config.tls.key is not None:
            try:
                self.tls_context = server_context(config.tls.cert, config.tls.key)
            except TLSSetupError as exc:
                raise StartupError(str(exc)) from None
        if self._own_store:
            await self.store.open()
        self._started = True
        secret = load_or_create_secret(config.data_dir)
        # One limiter for SMTP AUTH, IMAP and POP3: failures on any of them count together.
        auth_limiter = StoreAuthLimiter(self.store, BlockPolicy.from_config(config.limits))
        self._auth_limiter = auth_limiter
        # DKIM keys read and parsed once, for signing at submission and for the queue's fallback
        signing_keys = SigningKeys(config.data_dir)
        smtp = SMTPService(
            config,
            self.store,
            self.tls_context,
            scram_secret=secret,
            resolver=self.resolver,
            auth_limiter=auth_limiter,
            trusted_arc_sealers=config.limits.trusted_arc_sealers,
            signing_keys=signing_keys,
        )
        # Several processes: the maildrop lock must hold across them (RFC 1939 §8, one session per
        # maildrop), so it lives outside any one process's memory.
        maildrop_locks = (
            FileMaildropLocks(config.data_dir / "locks" / "pop3") if config.server.workers > 1 else None
        )
        pop3 = POP3Service(
            config,
            self.store,
            self.tls_context,
            scram_secret=secret,
            auth_limiter=auth_limiter,
            locks=maildrop_locks,
        )
        imap = IMAPService(
            config, self.store, self.tls_context, scram_secret=secret, auth_limiter=auth_limiter
        )
        roles: list[tuple[str, Callable[[], Handler], bool, bytes]] = [
            ("smtp", lambda: smtp.handler("smtp"), False, b"421 4.7.0 Too many connections, try later\r\n"),
            ("submission", lambda: smtp.handler("submission"), False, b"421 4.7.0 Too many connections\r\n"),
            ("submissions", lambda: smtp.handler("submissions"), True, b"421 4.7.0 Too many connections\r\n"),
            ("pop3", lambda: pop3.handler("pop3"), False, b"-ERR [SYS/TEMP] Too many connections\r\n"),
            ("pop3s", lambda: pop3.handler("pop3s"), True, b"-ERR [SYS/TEMP] Too many connections\r\n"),
            ("imap", lambda: imap.handler("imap"), False, b"* BYE [UNAVAILABLE] Too many connections\r\n"),
            ("imaps", lambda: imap.handler("imaps"), True, b"* BYE [UNAVAILABLE] Too many connections\r\n"),
        ]
        try:
            for role, make_handler, implicit_tls, refusal in roles:
                addresses = getattr(config.listen, role)
                if not addresses:
                    continue
                if implicit_tls and self.tls_context is None:
                    raise StartupError(f"tls.cert: listener {role} needs a TLS certificate")
                spec = ListenerSpec(
                    role=role,
                    addresses=addresses,
                    handler=make_handler(),
                    implicit_tls=self.tls_context if implicit_tls else None,
                    refusal=refusal,
                    max_per_ip=config.limits.connections_per_ip,
                    max_total=config.limits.connections_total,
                    proxy=config.proxy,
                    sockets=tuple(self._listening.get(role, ())) if self._listening is not None else (),
                )
                await self._listeners.start(spec)
            await self._start_web()
        except OSError as exc:
            await self.stop()
            raise StartupError(f"listen: cannot bind: {exc.strerror or exc}") from None
        if not self._run_queue:
            return
        # The outbound queue; STARTTLS to peers is opportunistic, certificates unchecked (RFC 7435).
        self.queue = QueueRunner(
            self.store,
            self.resolver,
            RunnerSettings.from_config(config),
            data_dir=config.data_dir,
            tls_context=client_context(verify=False),
            smarthost_tls_context=client_context(verify=True),  # it gets our AUTH credentials
            signing_keys=signing_keys,
        )
        await self.queue.start()

    async def _start_web(self) -> None:
        """The web listeners (surat.web), after the mail ones: autoconfiguration advertises the ports
        those are bound to."""
        config = self.config
        if not any(getattr(config.listen, role) for role in WEB_ROLES):
            return
        if config.listen.https and self.tls_context is None:
            raise StartupError("tls.cert: listener https needs a TLS certificate")
        assert self._auth_limiter is not None  # made by start() before the listeners
        client_ports = {role: bound[0][1] for role in MAIL_ROLES if (bound := self._listeners.bound(role))}
        self.web = WebServer(
            config, self.store, self.tls_context, client_ports, self._auth_limiter, listening=self._listening
        )
        await self.web.start()
        if self.web.bound("admin"):
            host, port = self.web.bound("admin")[0]
            log.info(
                "admin.console",
                extra=fields(url=admin_url(replace(config.listen, admin=(HostPort(host, port),)))),
            )

    def bound(self, role: str) -> list[tuple[str, int]]:
        if role in WEB_ROLES:
            return self.web.bound(role) if self.web is not None else []
        return self._listeners.bound(role)

    async def stop(self) -> None:
        if self.queue is not None:
            await self.queue.stop()
            self.queue = None
        if self.web is not None:
            await self.web.stop()
            self.web = None
        await self._listeners.stop()
        if self._own_store and self._started:
            await self.store.close()
            self._started = False


def load_or_create_secret(data_dir: Path) -> bytes:
    """A per-installation secret that survives restarts.

    SASL uses it to derive stable fake SCRAM salts for unknown users, so that probing names cannot tell
    which accounts exist (the answer for a name must not change between restarts either).
    """
    path = data_dir / "server.secret"
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    make_private_dir(data_dir, parents=True)
    secret = secrets.token_bytes(32)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return secret


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(config: Config) -> None:
    server = SuratServer(config)
    await server.start()
    log.info("started", extra=fields(hostname=config.hostname, data_dir=config.data_dir))
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()
        log.info("stopped")


def run(config: Config) -> int:
    """`surat serve`: run until SIGINT/SIGTERM. Returns the process exit code."""
    setup_logging()
    if config.server.workers > 1:
        from surat.workers.supervisor import supervise  # noqa: PLC0415 (it imports this module)

        return supervise(config)
    try:
        asyncio.run(_serve(config))
    except StartupError as exc:
        log.error("startup.failed", extra=fields(reason=str(exc)))
        return 1
    return 0
