"""Transport settings of IMAP connections, on a real TLS connection over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from surat.certs import write_dev_certificates
from surat.imapd.transport import TLS_READ_BUFFER, WRITE_HIGH_WATER, tune_transport
from surat.net.connection import Connection
from surat.net.tls import client_context, server_context


async def test_tls_connection_gets_a_small_read_buffer_and_still_carries_large_data(tmp_path: Path) -> None:
    paths = write_dev_certificates(tmp_path, ["localhost"])
    payload = bytes(range(256)) * 2048  # 512 KiB: many reads through the smaller buffer
    seen: dict[str, object] = {}
    done = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, "imaps")
        protocol = getattr(writer.transport, "_ssl_protocol", None)
        seen["before"] = len(getattr(protocol, "_ssl_buffer", b""))
        tune_transport(conn)
        seen["after"] = len(getattr(protocol, "_ssl_buffer", b""))
        seen["high"] = writer.transport.get_write_buffer_limits()[1]
        received = await reader.readexactly(len(payload))
        writer.write(received)  # echoed whole: more than the old high-water mark at once
        await writer.drain()
        writer.close()
        done.set_result(None)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(paths.cert, paths.key))
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(True, paths.ca), server_hostname="localhost"
        )
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload
        writer.close()
        await asyncio.wait_for(done, 30)
    finally:
        server.close()
        await server.wait_closed()
    # asyncio's own size first (this test tells when a Python release changes it), then ours.
    assert seen["before"] == 256 * 1024
    assert seen["after"] == TLS_READ_BUFFER
    assert seen["high"] == WRITE_HIGH_WATER


async def test_plain_connection_keeps_its_transport_and_only_gets_the_write_limit() -> None:
    done = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tune_transport(Connection(reader, writer, "imap"))
        done.set_result(writer.transport.get_write_buffer_limits()[1])
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(done, 10) == WRITE_HIGH_WATER
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
