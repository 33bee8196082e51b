"""One client connection, as the protocol shells see it: read with a timeout, write, upgrade to TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

READ_SIZE = 65536
# Replies a shell may hold before it hands them to the transport and waits (``drain``) until the
# client has read enough: with pipelined commands, output grows as fast as the client can send
# commands, and only waiting for the client bounds it. The transport's own buffer pauses ``drain``
# above asyncio's high-water mark (64 KiB; IMAP sets 1 MiB, see imapd.transport), and while a shell
# waits it reads nothing more: the stream stops reading the socket past twice its 64 KiB limit. So a
# session holds at most about this + the transport's mark + one reply + 128 KiB of unread input.
OUTPUT_HIGH_WATER = 64 * 1024


class ConnectionTimeout(Exception):
    """No data arrived within the idle timeout."""


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str
    cipher: str


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        role: str,
        peer: tuple[str, int] | None = None,
    ) -> None:
        """``peer``: the real client when a trusted proxy relays the connection (its PROXY header);
        logs, limits, login-failure blocks, SPF and Received headers all see this address."""
        self.reader = reader
        self.writer = writer
        self.role = role
        peer = peer or writer.get_extra_info("peername") or ("unknown", 0)
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

    def stop_reading(self) -> None:
        """Read nothing more from the socket until ``start_tls`` hands it to TLS.

        Called before the reply that starts a TLS handshake (SMTP 220 to STARTTLS, IMAP OK to STARTTLS,
        POP3 +OK to STLS): from then on every octet the client sends stays in the kernel until the TLS
        layer reads it, so no plaintext can reach the protocol as if it had come over TLS."""
        transport = self.writer.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            transport.pause_reading()

    async def start_tls(self, context: ssl.SSLContext, timeout: float = 30.0) -> None:
        """Upgrade in place (STARTTLS, STLS); raises ConnectionError or ssl.SSLError if the handshake fails.

        Plaintext the client sent after the STARTTLS/STLS command must never be read as if it had come
        over TLS (command injection, CVE-2011-0411): RFC 3207 §4.2, RFC 9051 §6.2.1 and RFC 2595 §4 forbid
        the client to pipeline after it, and the server must discard such data. Reading stops (here at
        the latest, ideally before the reply, see ``stop_reading``), then what the stream had buffered but
        not handed out is dropped; the engines drop what they were fed. Octets arriving later stay in the
        socket until the TLS layer reads them, as TLS records: plaintext there fails the handshake.
        Clearing the buffer and only then pausing (the old order) left one event-loop turn in which
        arriving plaintext went into the cleared buffer and was read after the handshake."""
        self.stop_reading()
        await self.drain()
        # No public API empties a StreamReader, hence the private attributes.
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        if getattr(self.reader, "_paused", False):
            # The stream had paused the socket for a full buffer; the TLS layer resumes it itself.
            self.reader._paused = False  # type: ignore[attr-defined]
        try:
            # asyncio.timeout: no extra Task (and event-loop turn) between the checks above and the
            # handover of the socket to TLS.
            async with asyncio.timeout(timeout):
                await self.writer.start_tls(context)
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
