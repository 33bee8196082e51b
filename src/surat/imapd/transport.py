"""Transport settings for IMAP connections: little memory while idle, no stalls while sending a lot."""

from __future__ import annotations

from surat.net.connection import Connection

__all__ = ["TLS_READ_BUFFER", "WRITE_HIGH_WATER", "trim_tls_read_buffer", "tune_transport"]

TLS_READ_BUFFER = 32 * 1024  # two full TLS records
# Output queued before the session waits for the client to read (asyncio's default is 64 KiB): a long
# response (FETCH 1:* ENVELOPE) is then produced while the client is still reading the previous part,
# instead of the two taking turns.
WRITE_HIGH_WATER = 1024 * 1024


def tune_transport(conn: Connection) -> None:
    """Apply both settings; again after STARTTLS, which replaces the transport."""
    trim_tls_read_buffer(conn)
    conn.writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


def trim_tls_read_buffer(conn: Connection) -> None:
    """Give a TLS connection a 32 KiB receive buffer instead of asyncio's 256 KiB.

    CPython's asyncio TLS transport (``sslproto.SSLProtocol``, 3.11+) allocates ``max_size`` = 256 KiB per
    connection, zero-filled and so resident at once; IMAP connections mostly sit idle (IDLE, or a client
    keeping one connection per folder), and at hundreds of them that buffer is most of their memory.
    Smaller reads only mean more of them for a large APPEND. Nothing happens when the transport is not
    the one this knows (no TLS, another event loop implementation)."""
    protocol = getattr(conn.writer.transport, "_ssl_protocol", None)
    buffer = getattr(protocol, "_ssl_buffer", None)
    if protocol is None or not isinstance(buffer, bytearray) or len(buffer) <= TLS_READ_BUFFER:
        return
    if not isinstance(getattr(protocol, "max_size", None), int):
        return
    # Safe between two reads: the transport asks for the buffer and fills it in one synchronous step.
    protocol.max_size = TLS_READ_BUFFER
    protocol._ssl_buffer = bytearray(TLS_READ_BUFFER)
    protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)
