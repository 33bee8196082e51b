"""`surat store migrate` throughput: a SQLite store of ``--count`` messages into an empty PostgreSQL
database, copied and verified (surat.store.migrate, what the command runs), in messages/s and MB/s.

The store is filled through `Store.deliver` (200 in flight, file syncs off: the fill is not what is
measured). The target is ``--dsn``, or else a private cluster started from the PostgreSQL binaries
on the machine exactly as the tests start theirs (tests/pg_cluster.py: fsync and synchronous_commit
on), on the same machine: the figure includes PostgreSQL's own CPU and disk work.

    PYTHONPATH=src python bench/store_migrate.py --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from common import deliver_all

from surat.config import postgresql_store
from surat.store.base import Credentials
from surat.store.migrate import migrate_to_postgresql
from surat.store.sqlite import SQLiteStore, SyncMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_cluster import PostgresCluster  # the tests' private cluster, see the docstring

_CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")  # never used to log in


def message(n: int, size: int) -> bytes:
    head = (
        f"From: User {n % 97} <user{n % 97}@example.net>\r\nTo: alice@example.test\r\n"
        f"Subject: message {n}\r\nDate: Mon, 1 Jan 2024 10:{n % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{n}@example.net>\r\n\r\n"
    )
    line = f"line of message {n}, filler to reach the size asked for\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


async def fill(data_dir: Path, count: int, size: int) -> None:
    store = SQLiteStore(data_dir, sync=SyncMode.NONE)
    await store.open()
    try:
        await store.add_domain("example.test")
        account = await store.add_account("alice@example.test", _CREDS)
        await deliver_all(store, account.id, (message(n, size) for n in range(count)))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096, help="octets per message (about)")
    parser.add_argument("--dsn", help="an empty PostgreSQL database (default: a private cluster)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="surat-bench-migrate-") as workdir:
        data_dir = Path(workdir) / "data"
        started = time.monotonic()
        asyncio.run(fill(data_dir, args.count, args.size))
        print(f"filled {args.count} messages in {time.monotonic() - started:.1f} s")
        cluster = None
        dsn = args.dsn
        if dsn is None:
            cluster = PostgresCluster()
            cluster.start()
            dsn = cluster.dsn(cluster.new_database())
        try:
            cpu = os.times()
            report = asyncio.run(migrate_to_postgresql(data_dir, postgresql_store(dsn, None)))
            after = os.times()
        finally:
            if cluster is not None:
                cluster.stop()
    megabytes = report.body_bytes / 1e6
    print(
        f"migrated {report.messages} messages ({megabytes:.1f} MB of bodies) in {report.seconds:.2f} s: "
        f"{report.messages / report.seconds:.0f} messages/s, {megabytes / report.seconds:.1f} MB/s; "
        f"migrate process CPU {after.user - cpu.user + after.system - cpu.system:.2f} s"
    )


if __name__ == "__main__":
    main()
