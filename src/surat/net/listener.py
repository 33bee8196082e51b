"""TCP listeners: plain or implicit TLS, connection limits, connection ids, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from surat import metrics
from surat.config import HostPort, ProxyConfig
from surat.log import connection_id, fields, new_connection_id
from surat.net import proxyheader
from surat.net.connection import Connection
from surat.net.proxyheader import ProxyHeaderError, read_proxy_header
from surat.net.tlscontexts import TlsContexts

log = logging.getLogger(__name__)

Handler = Callable[[Connection], Awaitable[None]]

BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 30.0  # implicit TLS (465, 993, 995)
STREAM_LIMIT = 64 * 1024  # asyncio's default StreamReader limit, as asyncio.start_server used
ACCEPT_ERROR_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    role: str  # "smtp", "submission", "imaps", ... (the [listen] key)
    addresses: tuple[HostPort, ...]
    handler: Handler
    # Implicit TLS: the context is taken from the holder at each accept, so a reload applies at once.
    implicit_tls: TlsContexts | None = None
    # What to write to a client refused for too many connections, in the protocol's own words.
    refusal: bytes = b""
    max_per_ip: int = 20
    max_total: int = 1000
    # Who may send a PROXY header first (and then must); see surat.net.proxyheader.
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    # Listening sockets bound already (by the supervisor of `workers = N`, see surat.workers), served
    # instead of binding `addresses`.
    sockets: tuple[socket.socket, ...] = ()


class Listeners:
    def __init__(self) -> None:
        self._sockets: list[tuple[str, socket.socket]] = []
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}  # after an accept error
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[tuple[str, str]] = Counter()
        self._per_role: Counter[str] = Counter()

    async def start(self, spec: ListenerSpec) -> None:
        # Our own accepting rather than asyncio.start_server: a PROXY header must come off the socket
        # before any (TLS) transport owns it (see surat.net.proxyheader). Like asyncio's server, a
        # reader callback on the listening socket accepts what is pending and starts a task for each.
        loop = asyncio.get_running_loop()
        groups = [list(spec.sockets)] if spec.sockets else (bind(address) for address in spec.addresses)
        for group in groups:
            for listening in group:
                self._sockets.append((spec.role, listening))
                log.info(
                    "listening", extra=fields(role=spec.role, address=format_address(listening.getsockname()))
                )
                loop.add_reader(listening.fileno(), self._accept, spec, listening)

    def bound(self, role: str) -> list[tuple[str, int]]:
        """The addresses actually bound for a role (port 0 in the config gets a real port here)."""
        return [
            (sock.getsockname()[0], sock.getsockname()[1])
            for sock_role, sock in self._sockets
            if sock_role == role
        ]

    def _accept(self, spec: ListenerSpec, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(BACKLOG):  # bounded: other listeners and sessions get their turn
            try:
                client, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors, or a connection reset while queued: as asyncio's own
                # server does, log and stop accepting for a moment rather than spin.
                log.warning("accept.failed", extra=fields(role=spec.role, error=str(exc)))
                loop.remove_reader(listening.fileno())
                self._paused[listening] = loop.call_later(ACCEPT_ERROR_PAUSE, self._resume, spec, listening)
                return
            client.setblocking(False)
            connection = loop.create_task(self._connection(spec, client))
            self._tasks.add(connection)
            connection.add_done_callback(self._tasks.discard)

    def _resume(self, spec: ListenerSpec, listening: socket.socket) -> None:
        del self._paused[listening]
        asyncio.get_running_loop().add_reader(listening.fileno(), self._accept, spec, listening)

    async def _connection(self, spec: ListenerSpec, client: socket.socket) -> None:
        # This is the root of the connection's task: a cancellation (server stop) ends here; nothing
        # above us waits for it.
        with contextlib.suppress(asyncio.CancelledError):
            connection_id.set(new_connection_id())
            try:
                streams = await self._open(spec, client)
            except Exception:
                log.exception("connection.crashed", extra=fields(role=spec.role, peer=_peer(client)[0]))
                client.close()
                return
            except BaseException:
                client.close()
                raise
            if streams is not None:
                await self._serve(spec, *streams)

    async def _open(
        self, spec: ListenerSpec, client: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int] | None] | None:
        """The header if the peer is a trusted proxy, then the TLS handshake on implicit-TLS ports."""
        socket_peer = _peer(client)
        real_peer: tuple[str, int] | None = None
        # proxy-protocol.txt §5: whether a header is read depends on configuration only, never on
        # what arrives: from anyone else "PROXY ..." is just a bad first command.
        if spec.proxy.is_trusted(socket_peer[0]):
            try:
                header = await read_proxy_header(client, proxyheader.PROXY_HEADER_TIMEOUT)
            except (ProxyHeaderError, TimeoutError, OSError) as exc:
                reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                log.warning(
                    "proxy.refused",
                    extra=fields(role=spec.role, proxy=socket_peer[0], reason=reason),
                )
                metrics.connection(spec.role, "proxy_refused")
                client.close()
                return None
            if header.addresses is not None:
                real_peer = (header.addresses.source_host, header.addresses.source_port)
        loop = asyncio.get_running_loop()
        context = spec.implicit_tls.current if spec.implicit_tls is not None else None
        opened: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = loop.create_future()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        # With a connected-callback the protocol counts as the server side, which StreamWriter.start_tls
        # (STARTTLS, STLS) relies on, as it does for asyncio.start_server's streams.
        protocol = asyncio.StreamReaderProtocol(
            reader, lambda r, w: opened.set_result((r, w)) if not opened.done() else None, loop=loop
        )
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                client,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context is not None else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info(
                "tls.handshake_failed", extra=fields(role=spec.role, peer=socket_peer[0], error=str(exc))
            )
            metrics.connection(spec.role, "tls_failed")
            client.close()
            return None
        stream_reader, writer = await opened
        return stream_reader, writer, real_peer

    async def _serve(
        self,
        spec: ListenerSpec,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        real_peer: tuple[str, int] | None,
    ) -> None:
        conn = Connection(reader, writer, spec.role, peer=real_peer)
        if real_peer is not None:
            proxy = writer.get_extra_info("peername") or ("unknown", 0)
            log.info("proxy.client", extra=fields(role=spec.role, peer=conn.peer_host, proxy=proxy[0]))
        key = (spec.role, conn.peer_host)
        if self._per_ip[key] >= spec.max_per_ip or self._per_role[spec.role] >= spec.max_total:
            log.warning(
                "connection.refused", extra=fields(role=spec.role, peer=conn.peer_host, reason="limit")
            )
            metrics.connection(spec.role, "refused")
            conn.write(spec.refusal)
            await conn.close()
            return
        metrics.connection(spec.role, "accepted")
        self._per_ip[key] += 1
        self._per_role[spec.role] += 1
        metrics.connection_opened(spec.role)
        try:
            await spec.handler(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection.crashed", extra=fields(role=spec.role, peer=conn.peer_host))
        finally:
            self._per_ip[key] -= 1
            if self._per_ip[key] <= 0:
                del self._per_ip[key]
            self._per_role[spec.role] -= 1
            metrics.connection_closed(spec.role)
            await conn.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running sessions `grace` seconds, then cancel them."""
        loop = asyncio.get_running_loop()
        for timer in self._paused.values():
            timer.cancel()
        self._paused.clear()
        for _, listening in self._sockets:
            loop.remove_reader(listening.fileno())
            listening.close()
        self._sockets.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)


def bind(address: HostPort) -> list[socket.socket]:
    """Listening sockets for every address ``address.host`` resolves to (as asyncio.start_server
    binds them): SO_REUSEADDR, and IPv6 sockets IPv6-only so that "[::]" and "0.0.0.0" can coexist."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for info_family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            listening = socket.socket(info_family, kind, proto)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if info_family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listening.bind(sockaddr)
            listening.listen(BACKLOG)
            listening.setblocking(False)
    except OSError:
        for listening in sockets:
            listening.close()
        raise
    return sockets


def _peer(client: socket.socket) -> tuple[str, int]:
    try:
        peer = client.getpeername()
    except OSError:
        return ("unknown", 0)
    return str(peer[0]), int(peer[1])


def format_address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
