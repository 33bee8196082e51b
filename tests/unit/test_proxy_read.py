"""Reading the PROXY header off a socket (surat.net.proxyheader): octet-exact, whatever the segments."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from surat.net.proxyheader import ProxyHeaderError, read_proxy_header
from surat.proto.proxy import V2_SIGNATURE, ProxiedAddresses

HEADER = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 25\r\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x04" + b"\x04\x00\x01x"  # LOCAL, with a 4-octet TLV to skip
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # what follows on an implicit-TLS port


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def leftover(server: socket.socket) -> bytes:
    server.setblocking(True)
    server.settimeout(1)
    return server.recv(1000)


async def test_header_and_what_follows_in_one_segment(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(HEADER + CLIENT_HELLO)
    header = await read_proxy_header(server, 1)
    assert header.addresses == ProxiedAddresses("203.0.113.7", 40000, "10.0.0.1", 25)
    assert leftover(server) == CLIENT_HELLO


@pytest.mark.parametrize("data", [HEADER, V2_LOCAL])
async def test_header_in_pieces_arriving_apart(
    pair: tuple[socket.socket, socket.socket], data: bytes
) -> None:
    server, client = pair

    async def send_slowly() -> None:
        for offset in range(0, len(data), 5):
            client.sendall(data[offset : offset + 5])
            await asyncio.sleep(0.005)
        client.sendall(b"EHLO x\r\n")

    sender = asyncio.create_task(send_slowly())
    header = await read_proxy_header(server, 5)
    await sender
    assert header.consumed >= 1
    assert leftover(server) == b"EHLO x\r\n"


async def test_close_before_the_header_ends(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(HEADER[:10])
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        await read_proxy_header(server, 1)


async def test_no_header_within_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(HEADER[:10])
    with pytest.raises(TimeoutError):
        await read_proxy_header(server, 0.05)


async def test_not_a_header_is_refused_at_its_first_octets(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(b"EHLO x\r\n")
    with pytest.raises(ProxyHeaderError, match="not a PROXY header"):
        await read_proxy_header(server, 1)
