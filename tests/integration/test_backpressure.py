"""Write backpressure (issue 11 item 8): replies to pipelined commands wait for the client to read.

The review's probe, against `surat serve` in a child process whose memory is read from /proc: after
login, 32 KB of pipelined `RETR` for a 61 KB message (4 000 times) without reading the replies grew the
server from 83 MB to 683 MB. Now the server stops producing replies past its high-water mark until the
client reads, and every reply still arrives intact.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import (
    DOMAIN,
    PASSWORD,
    ROLES,
    USER,
    dev_certificates,
    free_port,
    serve_in_subprocess,
    wait_listening,
)

from staging import staged
from surat.passwords import make_credentials
from surat.store.base import Delivery, MailboxTarget
from surat.store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")

PIPELINED = 4_000  # 8 octets each: 32 KB of commands
ALLOWED_GROWTH = 20 * 1024 * 1024
MESSAGE = b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: big\r\n\r\n" + b"".join(
    b"line %05d of a message of about sixty-one kilobytes...........\r\n" % n for n in range(950)
)


async def _prepare(data_dir: Path) -> None:
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        await store.add_domain(DOMAIN)
        account = await store.add_account(USER, make_credentials(PASSWORD))
        delivery = Delivery(
            await staged(store.blobs, MESSAGE),
            len(MESSAGE),
            datetime.now(UTC),
            local=(MailboxTarget(account.id, "INBOX"),),
        )
        await store.deliver(delivery)
    finally:
        await store.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_until(sock: ssl.SSLSocket, end: bytes) -> bytes:
    """Until the data ends with ``end``: nothing beyond it has been sent yet."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, data[-200:]
        data += chunk
    return data


@dataclass(frozen=True)
class Flood:
    role: str
    login: bytes  # sent after the greeting ...
    logged_in: bytes  # ... and read until the data ends with this
    command: bytes  # pipelined PIPELINED times
    reply_end: bytes


FLOODS = [
    Flood(
        "pop3s", f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode(), b"octets)\r\n", b"RETR 1\r\n", b"\r\n.\r\n"
    ),
    Flood(
        "imaps",
        f'l LOGIN {USER} "{PASSWORD}"\r\ns EXAMINE INBOX\r\n'.encode(),
        b"s OK [READ-ONLY] EXAMINE completed\r\n",
        b"f FETCH 1 BODY.PEEK[]\r\n",
        b"f OK FETCH completed\r\n",
    ),
]


@pytest.mark.parametrize("flood", FLOODS, ids=[f.role for f in FLOODS])
def test_pipelined_flood_is_held_by_backpressure(
    flood: Flood, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert 60_000 < len(MESSAGE) < 62_000
    certificates = dev_certificates(tmp_path_factory.getbasetemp())
    port = free_port()
    config = tmp_path / "surat.toml"
    listen = {role: f'["127.0.0.1:{port}"]' if role == flood.role else "[]" for role in ROLES}
    config.write_text(
        'hostname = "mail.example.test"\ndata_dir = "data"\n'
        f'[tls]\ncert = "{certificates.cert}"\nkey = "{certificates.key}"\n'
        "[listen]\n"
        + "".join(f"{role} = {value}\n" for role, value in listen.items())
        + "[limits]\nmail_auth = false\n"
    )
    asyncio.run(_prepare(tmp_path / "data"))
    proc = serve_in_subprocess(config)
    try:
        wait_listening(port, proc, config)
        context = ssl.create_default_context(cafile=str(certificates.ca))
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock = context.wrap_socket(raw, server_hostname="mail.example.test")
        _read_until(sock, b"\r\n")
        sock.sendall(flood.login)
        _read_until(sock, flood.logged_in)
        sock.sendall(flood.command)
        reply = _read_until(sock, flood.reply_end)  # one reply, to compare the flood's replies with
        assert MESSAGE in reply
        baseline = _rss(proc.pid)

        sock.sendall(flood.command * PIPELINED)
        # Not reading: the server must stop producing replies, not buffer them all (244 MB).
        peak = baseline
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, _rss(proc.pid))
        # Now read everything: every reply arrives, byte for byte.
        expected_total = len(reply) * PIPELINED
        received = 0
        pending = b""
        while received < expected_total:
            chunk = sock.recv(1 << 20)
            assert chunk, f"connection closed after {received} of {expected_total} octets"
            pending += chunk
            while len(pending) >= len(reply):
                assert pending[: len(reply)] == reply
                pending = pending[len(reply) :]
                received += len(reply)
            peak = max(peak, _rss(proc.pid))
        assert pending == b""
        sock.close()
        assert peak - baseline < ALLOWED_GROWTH, f"server grew by {(peak - baseline) >> 20} MiB"
    finally:
        proc.terminate()
        proc.wait(10)
