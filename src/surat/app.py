"""Composition root: config -> store -> TLS -> listeners; clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import dns.exception

from surat.acme.files import AcmeFiles
from surat.acme.renewal import AcmeRenewal
from surat.authlimit import BlockPolicy, StoreAuthLimiter
from surat.config import MAIL_ROLES, WEB_ROLES, Config, HostPort, admin_url
from surat.delivery.dkim import SigningKeys
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.delivery.tlsrpt import StoreTlsReporter, TlsReportSender, report_settings
from surat.dns.base import DnssecResolver, Resolver
from surat.dns.resolver import DnsResolver
from surat.imapd.session import IMAPService
from surat.log import fields, setup_logging
from surat.net.listener import Handler, Listeners, ListenerSpec
from surat.net.tls import TLSSetupError, client_context
from surat.net.tlscontexts import TlsContexts
from surat.pidfile import AlreadyRunning, ServerPidFile
from surat.pop3d.locks import FileMaildropLocks, MaildropLocks
from surat.pop3d.service import POP3Service
from surat.smtpd.service import SMTPService
from surat.store.base import Store
from surat.store.setup import ConfiguredStore, StoreUnavailable, configured_store, store_location
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


async def open_store(store: ConfiguredStore, *, recover: bool = True) -> None:
    """Open the server's store; one that cannot be reached (PostgreSQL down, a schema this Surat does
    not know) is a StartupError with the store's one line."""
    try:
        await store.open(recover=recover)
    except StoreUnavailable as exc:
        raise StartupError(str(exc)) from None


class SuratServer:
    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        *,
        resolver: Resolver | None = None,
        listening: Mapping[str, Sequence[socket.socket]] | None = None,
        run_queue: bool = True,
        run_acme: bool = True,
        reload_everywhere: Callable[[], object] | None = None,
    ) -> None:
        """`listening`: sockets bound already, by role, served instead of binding [listen] (a worker
        of `workers = N`). `run_queue=False`: no outbound queue runner in this process (another
        worker runs it). `run_acme=False`: with [acme], another process renews the certificate.
        `reload_everywhere`: how a renewal makes every process reload (default: this one's
        reload_certificates; a worker asks the supervisor)."""
        self.config = config
        self._listening = listening
        self._run_queue = run_queue
        self._run_acme = run_acme
        self._reload_everywhere = reload_everywhere or self.reload_certificates
        self.acme: AcmeRenewal | None = None
        # Tests inject a FakeResolver; the server asks the configured nameservers.
        self.resolver: Resolver = resolver or _system_resolver(config)
        # The store this server opens and closes itself; None when the caller passed one in.
        self._own_store: ConfiguredStore | None = None
        if store is None:
            store = self._own_store = configured_store(config)
        self.store: Store = store
        # Read at every handshake, swapped by reload_certificates (surat.net.tlscontexts).
        self.tls: TlsContexts | None = None
        self._listeners = Listeners()
        self._maildrop_locks: MaildropLocks | None = None
        self.web: WebServer | None = None
        self._auth_limiter: StoreAuthLimiter | None = None
        self._started = False
        self.queue: QueueRunner | None = None
        self.tls_reporter: StoreTlsReporter | None = None
        self.tls_reports: TlsReportSender | None = None

    async def start(self) -> None:
        config = self.config
        # [acme]: until the first certificate is issued the listeners serve a self-signed
        # placeholder, so they can start (the CA's validation needs the http listener up).
        if config.acme is not None and AcmeFiles(config.data_dir).ensure_placeholder(
            config.acme.hostnames or [config.hostname]
        ):
            log.info("acme.placeholder", extra=fields(cert=config.tls.cert))
        if config.tls.cert is not None and config.tls.key is not None:
            try:
                self.tls = TlsContexts(config.tls)
            except TLSSetupError as exc:
                raise StartupError(str(exc)) from None
            self._log_ignored_names(self.tls)
        if self._own_store is not None:
            await open_store(self._own_store)
        self._started = True
        # From the store, so that every process and node has the same one (issue 12).
        secret = await self.store.keys.installation_secret()
        # One limiter for SMTP AUTH, IMAP and POP3: failures on any of them count together.
        auth_limiter = StoreAuthLimiter(self.store, BlockPolicy.from_config(config.limits))
        self._auth_limiter = auth_limiter
        # DKIM keys read and parsed once, for signing at submission and for the queue's fallback
        signing_keys = SigningKeys(self.store.keys)
        smtp = SMTPService(
            config,
            self.store,
            self.tls,
            scram_secret=secret,
            resolver=self.resolver,
            auth_limiter=auth_limiter,
            trusted_arc_sealers=config.limits.trusted_arc_sealers,
            signing_keys=signing_keys,
        )
        maildrop_locks = self._maildrop_locks = maildrop_locks_for(config)
        pop3 = POP3Service(
            config,
            self.store,
            self.tls,
            scram_secret=secret,
            auth_limiter=auth_limiter,
            locks=maildrop_locks,
        )
        imap = IMAPService(config, self.store, self.tls, scram_secret=secret, auth_limiter=auth_limiter)
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
                if implicit_tls and self.tls is None:
                    raise StartupError(f"tls.cert: listener {role} needs a TLS certificate")
                spec = ListenerSpec(
                    role=role,
                    addresses=addresses,
                    handler=make_handler(),
                    implicit_tls=self.tls if implicit_tls else None,
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
        if config.acme is not None and self._run_acme:
            # After the http listener: the CA validates through it (RFC 8555 §8.3).
            self.acme = AcmeRenewal(config, self.store, self._reload_everywhere)
            self.acme.start()
        if not self._run_queue:
            return
        # The outbound queue; STARTTLS to peers is opportunistic, certificates unchecked (RFC 7435).
        # TLS-RPT (RFC 8460): every policy-checked session is counted in the store; the daily
        # reports go out only with [tls_reports] enabled.
        self.tls_reporter = StoreTlsReporter(self.store, _utc_now)
        self.queue = QueueRunner(
            self.store,
            self.resolver,
            RunnerSettings.from_config(config),
            data_dir=config.data_dir,
            tls_context=client_context(verify=False),
            smarthost_tls_context=client_context(verify=True),  # it gets our AUTH credentials
            signing_keys=signing_keys,
            tls_reporter=self.tls_reporter,
            # DANE only when the operator vouches for the resolver's AD bit (config.py checks loopback).
            dane_resolver=(
                self.resolver
                if config.dns.dnssec_trusted and isinstance(self.resolver, DnssecResolver)
                else None
            ),
        )
        await self.queue.start()
        self.tls_reporter.start()
        reports = config.tls_reports
        if reports.enabled:
            self.tls_reports = TlsReportSender(
                self.store,
                self.resolver,
                report_settings(config.hostname, reports.organization, reports.contact, reports.sender),
                signing_keys,
                clock=_utc_now,
                wake_queue=self.queue.wake,
            )
            self.tls_reports.start()

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The server context for a handshake starting now."""
        return self.tls.current if self.tls is not None else None

    def reload_certificates(self) -> bool:
        """Re-read the certificate and key files (SIGHUP, `surat reload`, an ACME renewal): new
        handshakes get the new certificates, connections already encrypted are untouched. A pair
        that cannot be used is refused with one log line, and the old certificates stay. Whether
        the new ones are served."""
        if self.acme is not None:
            self.acme.wake()  # the operator may have added a domain, or revoked the certificate
        if self.tls is None:
            log.info("tls.reload_skipped", extra=fields(reason="no [tls] certificate configured"))
            return False
        try:
            self.tls.reload()
        except TLSSetupError as exc:
            log.error(
                "tls.reload_failed", extra=fields(setting=exc.setting, reason=str(exc), pid=os.getpid())
            )
            return False
        log.info("tls.reloaded", extra=fields(pid=os.getpid(), **self.tls.describe()))
        self._log_ignored_names(self.tls)
        return True

    @staticmethod
    def _log_ignored_names(tls: TlsContexts) -> None:
        for note in tls.ignored_names:
            log.warning("tls.name_ignored", extra=fields(reason=note))

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
        # aiohttp keeps the context it is given: a front context hands each handshake to the current
        # certificates, so SIGHUP/ACME reloads reach https too (TlsContexts.front_context).
        front = self.tls.front_context() if self.tls is not None else None
        self.web = WebServer(
            config, self.store, front, client_ports, self._auth_limiter, listening=self._listening
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
        if self.tls_reports is not None:
            await self.tls_reports.stop()
            self.tls_reports = None
        if self.acme is not None:
            await self.acme.stop()
            self.acme = None
        if self.queue is not None:
            await self.queue.stop()
            self.queue = None
        if self.tls_reporter is not None:
            await self.tls_reporter.stop()  # after the queue: its last counts are written
            self.tls_reporter = None
        if self.web is not None:
            await self.web.stop()
            self.web = None
        await self._listeners.stop()
        if self._maildrop_locks is not None:
            await self._maildrop_locks.close()  # after the sessions: their leases end with it
        self._maildrop_locks = None
        if self._own_store is not None and self._started:
            await self.store.close()
            self._started = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def maildrop_locks_for(config: Config) -> MaildropLocks | None:
    """The POP3 maildrop lock that holds across everything serving this store (RFC 1939 §8: one
    session per maildrop); None: the POP3 service's in-process lock (one process on SQLite)."""
    if config.store.backend == "postgresql":
        # Every process and node on the database: an advisory lock in the database itself.
        from surat.store.postgres.locks import PostgresMaildropLocks  # noqa: PLC0415 (psycopg)
        from surat.store.postgres.pool import connect_options  # noqa: PLC0415

        assert config.store.dsn is not None  # config validation: postgresql has a dsn
        return PostgresMaildropLocks(config.store.dsn, connect_options(config.store.dsn_password))
    if config.server.workers > 1:
        # The processes of one machine: a file lock outside any one process's memory.
        return FileMaildropLocks(config.data_dir / "locks" / "pop3")
    return None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def hold_pid_file(config: Config) -> ServerPidFile:
    """`surat serve` holds data_dir/surat.pid (surat.pidfile) for `surat reload` to find it, taken
    before anything touches the store: a second server's crash recovery would delete this one's
    staged files. Until the event loop handles SIGHUP, SIGHUP is ignored (its default action would
    kill the process): the certificates are read after that, so they are the newest anyway."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pid_file = ServerPidFile(config.data_dir)
    try:
        pid_file.acquire()
    except AlreadyRunning as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"data_dir: cannot write {pid_file.path}: {exc.strerror or exc}") from None
    return pid_file


async def _serve(config: Config) -> None:
    server = SuratServer(config)
    # Before start, which reads the certificates: a SIGHUP from here on is never lost.
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, server.reload_certificates)
    await server.start()
    log.info(
        "started",
        extra=fields(hostname=config.hostname, data_dir=config.data_dir, store=store_location(config)),
    )
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()
        log.info("stopped")


def run(config: Config) -> int:
    """`surat serve`: run until SIGINT/SIGTERM, re-reading the certificates on SIGHUP. Returns the
    process exit code."""
    setup_logging()
    try:
        pid_file = hold_pid_file(config)
    except StartupError as exc:
        log.error("startup.failed", extra=fields(reason=str(exc)))
        return 1
    try:
        if config.server.workers > 1:
            from surat.workers.supervisor import supervise  # noqa: PLC0415 (it imports this module)

            return supervise(config)
        try:
            asyncio.run(_serve(config))
        except StartupError as exc:
            log.error("startup.failed", extra=fields(reason=str(exc)))
            return 1
        return 0
    finally:
        pid_file.release()
