"""What the PostgreSQL benchmarks share (issue 12): a private cluster, its counters and its CPU time, and
Surat configured on one of its databases.

The cluster is tests/pg_cluster.py's (initdb into a temporary directory, fsync and synchronous_commit
on, as shipped), stopped and removed by `stop()`. Each Surat configuration measured gets a database of
its own, so that it starts empty as a fresh SQLite data_dir does, and its commits can be counted apart.

Counters come from PostgreSQL's cumulative statistics: `pg_stat_database.xact_commit` of the measured
database (every committed transaction, including the LISTEN connection's short read of each NOTIFY)
and `pg_stat_wal.wal_sync` (the WAL flushes of the whole cluster). A backend publishes its counts when
it exits, or when idle at most every PGSTAT_IDLE_INTERVAL (10 s in PostgreSQL 15, pgstat.c): a reading
taken while Surat's pool connections are open is complete only after they have been idle that long.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import cpu_seconds

from pg_cluster import PostgresCluster

# Idle backends publish their statistics within PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s); one more
# second for the timer to fire on a loaded machine.
STATS_IDLE_FLUSH_SECONDS = 11.0


@dataclass(frozen=True)
class Counters:
    """Committed transactions of one database and WAL flushes of the cluster."""

    commits: int
    wal_syncs: int

    def __sub__(self, earlier: Counters) -> Counters:
        return Counters(self.commits - earlier.commits, self.wal_syncs - earlier.wal_syncs)


async def pg_counters(admin_dsn: str, database: str) -> Counters:
    """The counters now, read from another database so that the reading adds no transaction to the one
    measured."""
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = %s),"
            " (SELECT wal_sync FROM pg_stat_wal)",
            (database,),
        )
        row = await cursor.fetchone()
        assert row is not None
        return Counters(int(row[0] or 0), int(row[1] or 0))


async def settled_counters(admin_dsn: str, database: str) -> Counters:
    """The counters once the server processes of closed connections have exited and published them
    (a backend publishes at exit)."""
    last = await pg_counters(admin_dsn, database)
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = await pg_counters(admin_dsn, database)
        if now == last:
            return now
        last = now
    return last


class BenchCluster:
    """A private PostgreSQL cluster for one benchmark run: `start()`, `new_database()`, `stop()`."""

    def __init__(self) -> None:
        self.cluster = PostgresCluster()
        self.admin_dsn = ""

    def start(self) -> None:
        self.cluster.start()
        self.admin_dsn = self.cluster.dsn()

    def stop(self) -> None:
        self.cluster.stop()

    def new_database(self) -> tuple[str, str]:
        """A new, empty database: its name and its dsn."""
        name = self.cluster.new_database()
        return name, self.cluster.dsn(name)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole cluster so far: the postmaster, its live children
        (backends, WAL writer, checkpointer, ...) and the children it has reaped (closed connections)."""
        pid_file = self.cluster.data_dir / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
            children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        except (OSError, ValueError, IndexError):
            return 0.0
        return cpu_seconds(postmaster, children=True) + sum(cpu_seconds(int(pid)) for pid in children)

    async def counters(self, database: str, *, settled: bool = False) -> Counters:
        if settled:
            return await settled_counters(self.admin_dsn, database)
        return await pg_counters(self.admin_dsn, database)
