"""Store-level delivery benchmark: PostgresStore beside SQLiteStore, no SMTP in between (issue 12).

N deliveries of a 4 KiB message through `Store.deliver`, in four scenarios: into one mailbox or
spread over many (one INBOX per account), one caller after the other or --concurrency callers at
once. For each: deliveries/s, p50/p99 latency, and for PostgreSQL the database's transactions
(commits) per delivery (`pg_stat_database.xact_commit`; the LISTEN connection counts one more each
time it reads a NOTIFY, as PostgreSQL reads its notification queue in a short read-only transaction)
and WAL flushes per delivery (`pg_stat_wal.wal_sync`, the fdatasync calls of the whole private
cluster); for SQLite the store's group commits per delivery (`commit_stats()`).

    PYTHONPATH=src .venv/bin/python bench/pg_deliver.py                    # both backends
    PYTHONPATH=src .venv/bin/python bench/pg_deliver.py --backend postgresql --deliveries 400

PostgreSQL runs in a private cluster started here (tests/pg_cluster.py: initdb into a temporary
directory, fsync and synchronous_commit on, as shipped), removed at the end.

Bounded: at most --deliveries deliveries and --timeout seconds per scenario (a scenario that runs out
of time stops issuing and reports what it did).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import percentile_ms
from pg_common import settled_counters

from pg_cluster import PostgresCluster
from surat.store.base import Credentials, Delivery, MailboxTarget, Store
from surat.store.postgres import schema as postgres_schema
from surat.store.postgres.store import PostgresStore
from surat.store.sqlite import SQLiteStore

CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", None)
MESSAGE_SIZE = 4096
ACCOUNTS = 16  # the "many mailboxes" scenarios spread over this many INBOXes
SCENARIOS = (("one mailbox", False), ("many mailboxes", True))


def message(n: int) -> bytes:
    head = f"From: a@example.test\r\nTo: b@example.test\r\nSubject: message {n}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = line * ((MESSAGE_SIZE - len(head)) // len(line))
    return head + body + b"y" * (MESSAGE_SIZE - len(head) - len(body) - 2) + b"\r\n"


@dataclass
class Figures:
    backend: str
    scenario: str
    callers: int
    deliveries: int
    seconds: float
    latencies: list[float]
    commits: int | None  # transactions (PostgreSQL) or group commits (SQLite)
    wal_flushes: int | None

    def line(self) -> str:
        rate = self.deliveries / self.seconds if self.seconds else 0.0

        def per(count: int | None) -> str:
            return f"{count / self.deliveries:.2f}" if count is not None and self.deliveries else "-"

        return (
            f"{self.backend:<10} {self.scenario:<15} callers={self.callers:<3} n={self.deliveries:<5}"
            f" {rate:8.1f}/s  p50={percentile_ms(self.latencies, 0.5):6.1f}ms"
            f" p99={percentile_ms(self.latencies, 0.99):6.1f}ms"
            f"  commits/delivery={per(self.commits)}  wal_flushes/delivery={per(self.wal_flushes)}"
        )


async def run_load(
    store: Store, account_ids: list[int], spread: bool, count: int, callers: int, timeout: float
) -> tuple[int, float, list[float]]:
    """`count` deliveries by `callers` concurrent callers; returns (done, seconds, latencies)."""
    latencies: list[float] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + timeout

    async def caller() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            n = issued
            issued += 1
            account_id = account_ids[n % len(account_ids)] if spread else account_ids[0]
            raw = message(n)
            delivery = Delivery(
                None, len(raw), datetime.now(UTC), local=(MailboxTarget(account_id),), content=raw
            )
            began = time.perf_counter()
            await store.deliver(delivery)
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(latencies), time.perf_counter() - start, latencies


async def make_accounts(store: Store) -> list[int]:
    await store.add_domain("example.test")
    return [(await store.add_account(f"user{i}@example.test", CREDS)).id for i in range(ACCOUNTS)]


# ------------------------------------------------------------------------------ PostgreSQL


async def bench_postgresql(args: argparse.Namespace) -> list[Figures]:
    cluster = PostgresCluster()
    cluster.start()
    try:
        database = cluster.new_database()
        dsn = cluster.dsn(database)
        admin = cluster.dsn()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await postgres_schema.migrate(conn)
        store = PostgresStore(dsn)
        await store.open()
        try:
            account_ids = await make_accounts(store)
        finally:
            await store.close()

        async def measured(
            run: Callable[[PostgresStore], Awaitable[tuple[int, float, list[float]]]],
        ) -> tuple[tuple[int, float, list[float]], int, int]:
            before = await settled_counters(admin, database)
            store = PostgresStore(dsn)
            await store.open()
            try:
                outcome = await run(store)
            finally:
                await store.close()
            after = await settled_counters(admin, database)
            return outcome, after.commits - before.commits, after.wal_syncs - before.wal_syncs

        async def nothing(_: PostgresStore) -> tuple[int, float, list[float]]:
            return 0, 0.0, []

        # What opening and closing a store costs (schema check, LISTEN, node registration), subtracted.
        _, base_commits, base_flushes = await measured(nothing)
        figures = []
        for scenario, spread in SCENARIOS:
            for callers in (1, args.concurrency):

                async def load(
                    store: PostgresStore, spread: bool = spread, callers: int = callers
                ) -> tuple[int, float, list[float]]:
                    return await run_load(store, account_ids, spread, args.deliveries, callers, args.timeout)

                (done, seconds, latencies), commits, flushes = await measured(load)
                figures.append(
                    Figures(
                        "postgresql",
                        scenario,
                        callers,
                        done,
                        seconds,
                        latencies,
                        commits - base_commits,
                        flushes - base_flushes,
                    )
                )
                print(figures[-1].line(), flush=True)
        return figures
    finally:
        cluster.stop()


# ------------------------------------------------------------------------------ SQLite


async def bench_sqlite(args: argparse.Namespace) -> list[Figures]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="surat-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "data")
        await store.open()
        try:
            account_ids = await make_accounts(store)
            for scenario, spread in SCENARIOS:
                for callers in (1, args.concurrency):
                    before = store.commit_stats()
                    done, seconds, latencies = await run_load(
                        store, account_ids, spread, args.deliveries, callers, args.timeout
                    )
                    after = store.commit_stats()
                    figures.append(
                        Figures(
                            "sqlite",
                            scenario,
                            callers,
                            done,
                            seconds,
                            latencies,
                            after.batches - before.batches,
                            None,
                        )
                    )
                    print(figures[-1].line(), flush=True)
        finally:
            await store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("both", "postgresql", "sqlite"), default="both")
    parser.add_argument("--deliveries", type=int, default=400, help="per scenario (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers (default 16)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per scenario at most (default 60)"
    )
    args = parser.parse_args()
    print(
        f"# {args.deliveries} deliveries of {MESSAGE_SIZE} bytes per scenario, {ACCOUNTS} accounts for 'many'"
    )
    if args.backend in ("both", "postgresql"):
        asyncio.run(bench_postgresql(args))
    if args.backend in ("both", "sqlite"):
        asyncio.run(bench_sqlite(args))


if __name__ == "__main__":
    main()
