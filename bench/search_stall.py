"""How long SEARCH/SORT/THREAD hold the event loop: the longest await-free stretch while one runs.

A real SQLite store in a temporary directory gets ``--count`` messages (5 KiB bodies, a few MIME parts),
then each command's evaluation (``surat.imapd.search``/``sorting``/``threading``, as the IMAP handler
calls them) runs beside a probe task that wakes as often as the loop lets it. The probe's largest gap
between two wake-ups is the longest time any other session would have waited for its turn.

    PYTHONPATH=src python bench/search_stall.py --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from common import deliver_all

from surat.imapd.search import SimpleView, search
from surat.imapd.sorting import sort
from surat.imapd.threading import thread
from surat.proto.imap import commands as c
from surat.proto.imap.parser import parse_command
from surat.store.base import Credentials
from surat.store.sqlite import SQLiteStore

_CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")  # never used to log in


def message(n: int) -> bytes:
    filler = (f"line {n} of a body that is searched word by word " * 2 + "\r\n") * 50
    return (
        f"From: User {n % 97} <user{n % 97}@example.net>\r\nTo: alice@example.test\r\n"
        f"Subject: topic {n % 500}\r\nDate: Mon, 1 Jan 2024 10:{n % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{n}@example.net>\r\nReferences: <{n - 1}@example.net>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\n{filler}\r\n"
        f"--b\r\nContent-Type: text/html\r\n\r\n<p>{filler}</p>\r\n--b--\r\n"
    ).encode()


async def fill(store: SQLiteStore, count: int) -> int:
    await store.add_domain("example.test")
    account = await store.add_account("alice@example.test", _CREDS)
    await deliver_all(store, account.id, (message(n) for n in range(count)))
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    return mailbox.id


async def measure(work: Awaitable[object]) -> tuple[float, float, float]:
    """(seconds the work took, longest wall-clock gap between two wake-ups of a probe task, and the longest
    CPU time the event loop's thread spent between two wake-ups). On a shared machine the wall-clock gap
    also counts time the process was not scheduled at all; the CPU figure is the work done in one
    await-free stretch, whatever the neighbours do."""
    longest_wall = longest_cpu = 0.0
    done = False

    async def probe() -> None:
        nonlocal longest_wall, longest_cpu
        last_wall, last_cpu = time.perf_counter(), time.thread_time()
        while not done:
            await asyncio.sleep(0)
            wall, cpu = time.perf_counter(), time.thread_time()
            longest_wall = max(longest_wall, wall - last_wall)
            longest_cpu = max(longest_cpu, cpu - last_cpu)
            last_wall, last_cpu = wall, cpu

    task = asyncio.ensure_future(probe())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await work
    elapsed = time.perf_counter() - start
    done = True
    await task
    return elapsed, longest_wall, longest_cpu


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "data")
        await store.open()
        try:
            started = time.perf_counter()
            mailbox_id = await fill(store, count)
            print(f"filled {count} messages in {time.perf_counter() - started:.1f} s")
            view = SimpleView.of(await store.list_messages(mailbox_id))
            for text in (
                "a SEARCH TEXT nowhere-to-be-found",
                "a SEARCH BODY nowhere-to-be-found",
                "a SEARCH FROM user5@",
                "a SORT (FROM SUBJECT) UTF-8 ALL",
                "a THREAD REFERENCES UTF-8 ALL",
            ):
                command = parse_command(text.encode())
                work: Awaitable[object]
                if isinstance(command, c.SearchCommand):
                    work = search(store, mailbox_id, view, command.key, charset=None)
                elif isinstance(command, c.Sort):
                    work = sort(store, mailbox_id, view, command.criteria, command.key, None)
                else:
                    assert isinstance(command, c.Thread)
                    work = thread(store, mailbox_id, view, command.algorithm, command.key, None)
                elapsed, wall, cpu = await measure(work)
                print(
                    f"{text[2:]:36} total {elapsed * 1000:7.0f} ms   longest await-free stretch:"
                    f" {cpu * 1000:5.1f} ms CPU, {wall * 1000:6.1f} ms wall"
                )
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().count))
