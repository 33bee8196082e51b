"""Reading a PROXY protocol header off a freshly accepted socket, before any transport exists.

The header must be taken off the socket octet-exactly: on implicit-TLS ports the client's ClientHello
follows it in the same TCP segment, and once a stream or TLS transport owns the socket there is no way
to hand it octets already read. So each read first *peeks* (MSG_PEEK), feeds what it saw to the sans-IO
parser, and then consumes only what the parser says was header (the spec's own advice for receivers,
haproxy doc/proxy-protocol.txt §9). Everything after the header stays in the kernel for the transport.
"""

from __future__ import annotations

import asyncio
import socket

from surat.proto.proxy import MAX_HEADER, NEED_DATA, ProxyHeader, ProxyHeaderError, ProxyHeaderParser

__all__ = ["PROXY_HEADER_TIMEOUT", "ProxyHeaderError", "read_proxy_header"]

# A load balancer sends its header at once with the connection (§2.1: "the sender is guaranteed to
# always be able to emit it at once"); a trusted address that has sent no complete header within
# this long is closed, so a stuck or misconfigured proxy cannot hold connection tasks open.
PROXY_HEADER_TIMEOUT = 5.0


async def read_proxy_header(sock: socket.socket, timeout: float = PROXY_HEADER_TIMEOUT) -> ProxyHeader:
    """The header at the start of ``sock`` (non-blocking), consumed and nothing after it.

    Raises ProxyHeaderError (not a valid header), TimeoutError (none within ``timeout``) or
    ConnectionError (closed or reset first). At most MAX_HEADER octets are read."""
    loop = asyncio.get_running_loop()
    parser = ProxyHeaderParser()
    taken = 0
    async with asyncio.timeout(timeout):
        while True:
            await _readable(loop, sock)
            try:
                seen = sock.recv(MAX_HEADER - taken, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            if not seen:
                raise ConnectionError("closed before a complete PROXY header")
            result = parser.feed(seen)
            # All of `seen` was header (the header is not complete yet), or its first `consumed` octets.
            header_octets = len(seen) if result is NEED_DATA else result.consumed
            _consume(sock, header_octets)
            taken += header_octets
            if result is not NEED_DATA:
                return result


def _consume(sock: socket.socket, count: int) -> None:
    """Read and drop ``count`` octets just peeked (they are in the kernel's buffer already)."""
    while count > 0:
        count -= len(sock.recv(count))


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
