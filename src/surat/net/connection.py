"""One client connection, as the protocol shells see it: read with a timeout, write, upgrade to TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

READ_SIZE = 65536


class ConnectionTimeout(Exception):
    """No data arrived within the idle timeout."""


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str
    cipher: str


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        self.reader = reader
        self.writer = writer
        self.role = role
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        self.peer_host: str = str(peer[0])
        self.peer_port: int = int(peer[1])
        sock = writer.get_extra_info("sockname") or ("unknown", 0)
        self.local_host: str = str(sock[0])
        self.local_port: int = int(sock[1])

    @property
    def tls(self) -> TLSInfo | None:
        ssl_object: ssl.SSLObject | None = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        return TLSInfo(version=ssl_object.version() or "TLS", cipher=cipher[0] if cipher else "unknown")

    async def read(self, timeout: float) -> bytes:
        """Up to READ_SIZE bytes; b"" at end of stream; ConnectionTimeout when idle too long."""
        try:
            # asyncio.timeout, not wait_for: wait_for (3.11) wraps the read in a new Task, which
            # costs a Task and extra event-loop turns on every command of every session.
            async with asyncio.timeout(timeout):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise ConnectionTimeout from None
        except (ConnectionError, ssl.SSLError):
            return b""

    def write(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.drain()

    async def start_tls(self, context: ssl.SSLContext, timeout: float = 30.0) -> None:
        """Upgrade in place (STARTTLS, STLS); raises ConnectionError or ssl.SSLError if the handshake fails."""
        await self.drain()
        # Plaintext the client sent after the STARTTLS/STLS command must never be read as if it had
        # come over TLS (command injection, CVE-2011-0411; RFC 3207 §4.2). The engines drop what they
        # were fed; this drops what the stream had buffered but not yet handed out. There is no
        # public API for it, hence the private attribute.
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        try:
            await asyncio.wait_for(self.writer.start_tls(context), timeout)
        except TimeoutError:
            raise ConnectionError("TLS handshake timed out") from None

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)
