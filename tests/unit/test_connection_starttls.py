"""STARTTLS in ``surat.net.connection``: plaintext sent before the handshake is never read as if over TLS.

CVE-2011-0411 class (RFC 3207 §4.2, RFC 9051 §6.2.1, RFC 2595 §4). The old ``start_tls`` emptied the
stream's buffer and only then handed the socket to TLS, one event-loop turn later: octets the loop had
already seen arrive were read in that turn into the emptied buffer and came out after the handshake.
These tests put the octets exactly there, so the old order fails every time, not 1 time in 200.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path

from surat.certs import write_dev_certificates
from surat.net.connection import Connection
from surat.net.tls import client_context, server_context


async def _upgrade_with_plaintext_in_flight(tmp_path: Path, *, stop_before_reply: bool) -> bytes | None:
    """Server side of a STARTTLS whose client sends ``XINJECT`` in plaintext just before its handshake.

    Returns what the server reads first over TLS, or None when the handshake failed."""
    paths = write_dev_certificates(tmp_path, ["localhost"])
    client_tls = client_context(True, paths.ca)
    result: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    send_hello = threading.Event()
    client_box: dict[str, socket.socket] = {}

    def client() -> None:
        sock = client_box["sock"]
        send_hello.wait(10)
        time.sleep(0.1)  # the server is waiting for the handshake by now
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(100)
        try:
            secure = client_tls.wrap_socket(sock, server_hostname="localhost")
            secure.sendall(b"SECURE\r\n")
            secure.recv(10)
        except (ssl.SSLError, OSError):
            pass

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, "smtp")
        assert await conn.read(5) == b"STARTTLS\r\n"
        if stop_before_reply:
            conn.stop_reading()
        conn.write(b"220 2.0.0 ready to start TLS\r\n")
        # The client's plaintext is in our socket before the next turn of the loop ...
        client_box["sock"].sendall(b"XINJECT\r\n")
        await asyncio.sleep(0)  # ... in which start_tls runs, as after any await in a shell
        send_hello.set()
        try:
            await conn.start_tls(server_context(paths.cert, paths.key), timeout=10)
        except (ConnectionError, ssl.SSLError, OSError):
            result.set_result(None)
            writer.close()
            return
        first = await conn.read(10)
        result.set_result(first)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    client_box["sock"] = sock
    thread = threading.Thread(target=client)
    thread.start()
    try:
        sock.sendall(b"STARTTLS\r\n")
        return await asyncio.wait_for(result, 30)
    finally:
        send_hello.set()
        await asyncio.to_thread(thread.join, 10)
        sock.close()
        server.close()
        await server.wait_closed()


async def test_plaintext_just_before_the_handshake_fails_it_instead_of_being_read(tmp_path: Path) -> None:
    first = await _upgrade_with_plaintext_in_flight(tmp_path, stop_before_reply=False)
    # The plaintext reached the TLS layer, which cannot take it for a record: no session, nothing run.
    assert first is None


async def test_reading_stopped_before_the_reply_keeps_later_plaintext_out(tmp_path: Path) -> None:
    first = await _upgrade_with_plaintext_in_flight(tmp_path, stop_before_reply=True)
    assert first is None
