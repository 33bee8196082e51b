"""TCP listeners: plain or implicit TLS, connection limits, connection ids, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from surat.config import HostPort
from surat.log import connection_id, fields, new_connection_id
from surat.net.connection import Connection

log = logging.getLogger(__name__)

Handler = Callable[[Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    role: str  # "smtp", "submission", "imaps", ... (the [listen] key)
    addresses: tuple[HostPort, ...]
    handler: Handler
    implicit_tls: ssl.SSLContext | None = None
    # What to write to a client refused for too many connections, in the protocol's own words.
    refusal: bytes = b""
    max_per_ip: int = 20
    max_total: int = 1000


class Listeners:
    def __init__(self) -> None:
        self._servers: list[tuple[str, asyncio.Server]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[tuple[str, str]] = Counter()
        self._per_role: Counter[str] = Counter()

    async def start(self, spec: ListenerSpec) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # This is the root of the connection's task, which asyncio's stream server reads the
            # result of: a cancellation (server stop) ends here instead of being logged as an
            # "exception in callback". Nothing above us waits for it.
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept(spec, reader, writer)

        for address in spec.addresses:
            server = await asyncio.start_server(
                accept,
                host=address.host,
                port=address.port,
                ssl=spec.implicit_tls,
                ssl_handshake_timeout=30 if spec.implicit_tls else None,
                reuse_address=True,
                family=socket.AF_INET6 if ":" in address.host else socket.AF_INET,
                backlog=1024,
            )
            self._servers.append((spec.role, server))
            for sock in server.sockets:
                log.info("listening", extra=fields(role=spec.role, address=_format(sock.getsockname())))

    def bound(self, role: str) -> list[tuple[str, int]]:
        """The addresses actually bound for a role (port 0 in the config gets a real port here)."""
        out: list[tuple[str, int]] = []
        for server_role, server in self._servers:
            if server_role == role:
                out.extend((sock.getsockname()[0], sock.getsockname()[1]) for sock in server.sockets)
        return out

    async def _accept(
        self, spec: ListenerSpec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection_id.set(new_connection_id())
        conn = Connection(reader, writer, spec.role)
        key = (spec.role, conn.peer_host)
        try:
            if self._per_ip[key] >= spec.max_per_ip or self._per_role[spec.role] >= spec.max_total:
                log.warning(
                    "connection.refused", extra=fields(role=spec.role, peer=conn.peer_host, reason="limit")
                )
                conn.write(spec.refusal)
                await conn.close()
                return
            self._per_ip[key] += 1
            self._per_role[spec.role] += 1
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
                await conn.close()
        finally:
            self._tasks.discard(task)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running sessions `grace` seconds, then cancel them."""
        for _, server in self._servers:
            server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for _, server in self._servers:
            await server.wait_closed()
        self._servers.clear()


def _format(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
