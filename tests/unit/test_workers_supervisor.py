"""The supervisor of `workers = N` without processes: its relay hub over socket pairs, and a bind error."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from surat.config import parse_config
from surat.store.base import Change, ChangeKind
from surat.workers.relay import MAX_LINE, OVERFLOW, READY, encode_changes, open_link
from surat.workers.supervisor import Supervisor, supervise

ADDED = Change(ChangeKind.MESSAGES_ADDED, 7, 3, (), 12)


class FakeWorker:
    """The worker end of a relay socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock, limit=MAX_LINE)

    async def say(self, line: bytes) -> None:
        self.writer.write(line)
        await self.writer.drain()

    async def hear(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 5)


async def test_the_hub_forwards_to_the_others_and_announces_a_lost_worker(tmp_path: Path) -> None:
    supervisor = Supervisor(
        parse_config({"hostname": "mail.example.test", "server": {"workers": 3}}, tmp_path)
    )
    workers, relays, ready = [], [], []
    for index in range(3):
        ours, theirs = socket.socketpair()
        link = await open_link(ours)
        supervisor._links[index] = link
        ready.append(asyncio.get_running_loop().create_future())
        relays.append(asyncio.create_task(supervisor._relay(index, link, ready[index])))
        worker = FakeWorker(theirs)
        await worker.open()
        workers.append(worker)

    await workers[0].say(READY)
    assert await asyncio.wait_for(ready[0], 5) is True
    line = encode_changes([ADDED])[0]
    await workers[0].say(line)
    assert await workers[1].hear() == line
    assert await workers[2].hear() == line
    await workers[2].say(OVERFLOW)  # worker 2 lost some of its own: the others re-read
    assert await workers[0].hear() == OVERFLOW
    assert await workers[1].hear() == OVERFLOW

    # Worker 1 dies (kill -9): what it committed and had not relayed yet is lost, so the others
    # are told to re-read; it is gone from the hub.
    workers[1].writer.transport.abort()
    await asyncio.wait_for(relays[1], 5)
    assert sorted(supervisor._links) == [0, 2]
    assert await workers[0].hear() == OVERFLOW
    assert await workers[2].hear() == OVERFLOW

    # A line that is not the relay's ends that worker's link (the worker then stops and is restarted).
    await workers[2].say(b"nonsense\n")
    await asyncio.wait_for(relays[2], 5)
    assert await workers[2].hear() == b""
    assert await workers[0].hear() == OVERFLOW
    for worker in (workers[0], workers[2]):
        worker.writer.close()
    await asyncio.wait_for(relays[0], 5)


def test_an_address_in_use_is_one_startup_error_before_any_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen: dict[str, list[str]] = {
            role: [] for role in ("submission", "submissions", "imap", "imaps", "pop3", "pop3s")
        }
        config = parse_config(
            {
                "hostname": "mail.example.test",
                "listen": {"smtp": [f"127.0.0.1:{port}"], **listen},
                "server": {"workers": 2},
            },
            tmp_path,
        )
        with caplog.at_level("INFO", logger="surat.workers"):
            assert supervise(config) == 1
    (failed,) = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "startup.failed"]
    assert failed["reason"].startswith("listen: cannot bind:")
    assert not [r for r in caplog.records if r.getMessage().startswith("worker.")]
