"""The PostgreSQL store's outbound queue, shared by every node on the database (issue 12 "Queue"): any
node delivers; an entry is claimed with a lease and never delivered by two nodes at once.

Node id: each store object (one per process) names itself `hostname:pid:random` (`node_id`); the
random part keeps a restarted process with a reused pid from passing for its predecessor. `open()`
records it in `nodes`, every claim refreshes its `seen_at` (a heartbeat at the runner's poll rate,
for operators: leases alone decide who may deliver), and `close()` removes it.

Leases (columns `queue.lease_owner`, `queue.lease_expires_at`):
- `due_queue_entries` claims what it returns in one transaction: `SELECT ... FOR UPDATE SKIP LOCKED`
  of the due entries that no live lease of another node holds, then `lease_owner = <node id>,
  lease_expires_at = now() + lease`. A concurrent claim skips the rows this one locked, and
  re-checks the lease of rows committed meanwhile (READ COMMITTED re-evaluates the WHERE clause of
  a locking read), so two nodes never get the same entry. A node gets its own leased entries again,
  as SQLite returns due entries again: the runner skips those it has in flight.
- `record_attempt` renews the lease to the caller's `lease_until` (as a duration from `started_at`,
  measured on the database's clock); it refuses (LeaseLost) an entry another node holds a live lease
  on, because our claim expired and that node took it over.
- `renew_leases` (the runner's heartbeat, every third of the lease) extends this node's leases on
  the entries it has in flight in one UPDATE, so a live node keeps them however long an attempt
  takes, and the lease can be short (2 minutes by default): what a node killed with kill -9 holds.
- `finish_attempt` and `reschedule` clear this node's lease; `reschedule` and `flush_queue` (`surat
  queue retry/flush`) leave another node's live lease alone: that node finishes the attempt in
  flight and schedules the next one itself.
- A node that dies leaves its leases to expire; then any node's claim takes the entries over and
  marks the dead node's attempts in flight interrupted. `recover_queue` (at start) interrupts only
  attempts under this node's own lease, an expired lease, or no lease: never another node's live one.
- `close()` hands this node's leased entries back at once (its runner stopped first, see app.py).

Lease times are on the database's clock (`now()`), one clock for all nodes; `next_attempt_at` is on
the caller's clock, as in the SQLite store.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from surat.log import fields
from surat.store.base import (
    Change,
    ChangeKind,
    NotFound,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    QueueSummary,
    RecipientUpdate,
    StoreError,
)
from surat.store.common import (
    QUEUE_ENTRY_COLUMNS,
    QUEUE_RECIPIENT_COLUMNS,
    queue_entry_from_row,
    queue_recipient_from_row,
)
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.postgres.rows import delete_unreferenced_blobs

log = logging.getLogger(__name__)

# How long a claim holds an entry when the runner names no lease (`due_queue_entries(lease=None)`,
# admin reads): the runner passes its own `RunnerSettings.lease` (`[delivery] queue_lease`, the same
# default), renews it every third of it while the entry is in flight (`renew_leases`), and a node
# killed with kill -9 therefore holds its entries for at most this long (docs/queue-leases.md).
LEASE = timedelta(minutes=2)
# What start-up recovery, a takeover and a clean close write into an attempt cut short.
INTERRUPTED = "interrupted"

# A lease that does not keep the entry from node %s: none, its own, or expired.
_CLAIMABLE = "(lease_owner IS NULL OR lease_owner = %s OR lease_expires_at <= now())"


class LeaseLost(NotFound):
    """Another node holds a live lease on the entry (ours expired and it took the entry over): this
    node must not attempt it. A NotFound, so the runner drops its task as for an entry gone."""


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def _entries(conn: Connection, where: str, params: tuple[Any, ...]) -> list[QueueEntry]:
    cursor = await conn.execute(f"SELECT {QUEUE_ENTRY_COLUMNS} FROM queue {where}".encode(), params)
    rows = await cursor.fetchall()
    ids = [row[0] for row in rows]
    # Recipients and attempts of all rows in two queries, not two per row: the runner reads up to a
    # batch of due entries at every refill.
    recipients_of: dict[str, list[QueueRecipient]] = {}
    attempts_of: dict[str, list[QueueAttempt]] = {}
    if ids:
        cursor = await conn.execute(
            f"SELECT {QUEUE_RECIPIENT_COLUMNS} FROM queue_recipients WHERE queue_id = ANY(%s)"
            " ORDER BY queue_id, position".encode(),
            (ids,),
        )
        for q in await cursor.fetchall():
            recipients_of.setdefault(q[0], []).append(queue_recipient_from_row(q))
        cursor = await conn.execute(
            b"SELECT queue_id, number, started_at, host, result FROM queue_attempts"
            b" WHERE queue_id = ANY(%s) ORDER BY queue_id, number",
            (ids,),
        )
        for a in await cursor.fetchall():
            attempts_of.setdefault(a[0], []).append(
                QueueAttempt(number=a[1], started_at=a[2], host=a[3], result=a[4])
            )
    return [
        queue_entry_from_row(
            r, recipients_of.get(r[0], ()), attempts_of.get(r[0], ()), created_at=r[5], next_attempt_at=r[6]
        )
        for r in rows
    ]


async def _interrupt(conn: Connection, queue_ids: Sequence[str]) -> None:
    await conn.execute(
        b"UPDATE queue_attempts SET result = %s WHERE queue_id = ANY(%s) AND result IS NULL",
        (INTERRUPTED, list(queue_ids)),
    )


class QueueStore(PooledStore):
    """The queue methods of the `Store` Protocol, with leases owned by `node_id`."""

    # The claim's lease; an instance attribute may replace it (tests use a short one).
    lease: timedelta = LEASE

    @functools.cached_property
    def node_id(self) -> str:
        return new_node_id()

    # ------------------------------------------------------------------------------ this node

    async def register_node(self) -> None:
        """Record this node in `nodes` (called by `open()`)."""

        async def fn(conn: Connection) -> None:
            await conn.execute(
                b"INSERT INTO nodes (id, hostname) VALUES (%s, %s)"
                b" ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                (self.node_id, socket.gethostname()),
            )

        await self.with_connection(fn)

    async def retire_node(self) -> None:
        """Hand this node's leased entries back (attempts in flight interrupted, due now) and remove
        it from `nodes` (called by `close()`, after the runner stopped): another node, or this one
        restarted, takes them over at once instead of after the lease."""

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL,"
                b" next_attempt_at = LEAST(next_attempt_at, now()) WHERE lease_owner = %s RETURNING id",
                (self.node_id,),
            )
            released = [row[0] for row in await cursor.fetchall()]
            await _interrupt(conn, released)
            await conn.execute(b"DELETE FROM nodes WHERE id = %s", (self.node_id,))
            return None, [Change(ChangeKind.QUEUE_CHANGED, 0)] if released else []

        try:
            await self._transaction(fn)
        except (StoreError, psycopg.Error) as exc:
            # The store closes all the same: the leases then end when they expire.
            log.warning("queue.retire_failed", extra=fields(node=self.node_id, error=str(exc)))

    # ------------------------------------------------------------------------------ reads

    async def list_queue(self) -> list[QueueEntry]:
        return await self.with_connection(lambda conn: _entries(conn, "ORDER BY created_at, id", ()))

    async def queue_summary(self) -> QueueSummary:
        row = await self._fetchone("SELECT count(*), min(created_at) FROM queue")
        assert row is not None
        return QueueSummary(int(row[0]), row[1])

    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None:
        entries = await self.with_connection(lambda conn: _entries(conn, "WHERE id = %s", (queue_id,)))
        return entries[0] if entries else None

    async def due_queue_entries(
        self, now: datetime, limit: int, lease: timedelta | None = None
    ) -> list[QueueEntry]:
        """The due entries this node may deliver, claimed with a lease (see the module's text)."""
        claim = self.lease if lease is None else lease

        async def fn(conn: Connection) -> tuple[list[QueueEntry], list[Change]]:
            # One statement locks and leases: `claimable` locks the rows (skipping those another
            # claim holds) and keeps their previous owner, whose attempts in flight are taken over.
            cursor = await conn.execute(
                f"UPDATE queue q SET lease_owner = %s, lease_expires_at = now() + %s"
                f" FROM (SELECT id, lease_owner FROM queue WHERE next_attempt_at <= %s AND {_CLAIMABLE}"
                f" ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) AS claimable"
                f" WHERE q.id = claimable.id RETURNING q.id, claimable.lease_owner".encode(),
                (self.node_id, claim, now, self.node_id, limit),
            )
            claimed = await cursor.fetchall()
            # Another node's expired lease: that node died (or stalled past the lease) mid-attempt.
            await _interrupt(conn, [row[0] for row in claimed if row[1] not in (None, self.node_id)])
            await conn.execute(b"UPDATE nodes SET seen_at = now() WHERE id = %s", (self.node_id,))
            if not claimed:
                return [], []
            ids = [row[0] for row in claimed]
            return await _entries(conn, "WHERE id = ANY(%s) ORDER BY next_attempt_at, id", (ids,)), []

        return await self._transaction(fn)

    # ------------------------------------------------------------------------------ writes

    async def reschedule(self, queue_id: str, next_attempt_at: datetime) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            # Another node's live lease stays: clearing it would let a third node deliver the entry
            # while that node still is (`surat queue retry` of an entry in flight).
            cursor = await conn.execute(
                b"UPDATE queue SET next_attempt_at = %s,"
                b" lease_owner = CASE WHEN " + _CLAIMABLE.encode() + b" THEN NULL ELSE lease_owner END,"
                b" lease_expires_at = CASE WHEN " + _CLAIMABLE.encode() + b" THEN NULL"
                b" ELSE lease_expires_at END WHERE id = %s",
                (next_attempt_at, self.node_id, self.node_id, queue_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"queue entry {queue_id}")
            return None, [Change(ChangeKind.QUEUE_CHANGED, 0)]

        await self._transaction(fn)

    async def drop_queue_entry(self, queue_id: str) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(b"DELETE FROM queue WHERE id = %s RETURNING blob_id", (queue_id,))
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"queue entry {queue_id}")
            await delete_unreferenced_blobs(conn, [row[0]])
            return None, [Change(ChangeKind.QUEUE_CHANGED, 0)]

        await self._transaction(fn)

    async def flush_queue(self, now: datetime) -> int:
        async def fn(conn: Connection) -> tuple[int, list[Change]]:
            # Every entry counts, leased or not; a leased one is attempted again once its lease ends.
            cursor = await conn.execute(b"UPDATE queue SET next_attempt_at = %s", (now,))
            count = cursor.rowcount
            return count, [Change(ChangeKind.QUEUE_CHANGED, 0)] if count else []

        return await self._transaction(fn)

    async def record_attempt(
        self,
        queue_id: str,
        started_at: datetime,
        host: str | None,
        lease_until: datetime,
        dkim_signature: bytes | None = None,
    ) -> int:
        # The lease's length on the caller's clock, its end on the database's (module text).
        lease = max(lease_until - started_at, timedelta(0))

        async def fn(conn: Connection) -> tuple[int, list[Change]]:
            cursor = await conn.execute(
                f"SELECT {_CLAIMABLE} FROM queue WHERE id = %s FOR UPDATE".encode(),
                (self.node_id, queue_id),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"queue entry {queue_id}")
            if not row[0]:
                raise LeaseLost(f"queue entry {queue_id} is leased by another node")
            # No change published: the runner that claims the entry is the one that would wake.
            # A signature already stored is never replaced (signed once, issue 18).
            await conn.execute(
                b"UPDATE queue SET next_attempt_at = %s, lease_owner = %s, lease_expires_at = now() + %s,"
                b" dkim_signature = COALESCE(dkim_signature, %s) WHERE id = %s",
                (lease_until, self.node_id, lease, dkim_signature, queue_id),
            )
            cursor = await conn.execute(
                b"INSERT INTO queue_attempts (queue_id, number, started_at, node_id, host)"
                b" SELECT %s, COALESCE(MAX(number), 0) + 1, %s, %s, %s FROM queue_attempts"
                b" WHERE queue_id = %s RETURNING number",
                (queue_id, started_at, self.node_id, host, queue_id),
            )
            inserted = await cursor.fetchone()
            assert inserted is not None  # an INSERT ... SELECT of an aggregate makes one row
            return int(inserted[0]), []

        return await self._transaction(fn)

    async def finish_attempt(
        self,
        queue_id: str,
        number: int,
        result: str,
        updates: Sequence[RecipientUpdate],
        next_attempt_at: datetime | None,
        host: str | None = None,
    ) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(b"SELECT blob_id FROM queue WHERE id = %s FOR UPDATE", (queue_id,))
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"queue entry {queue_id}")  # dropped meanwhile (`surat queue drop`)
            await conn.execute(
                b"UPDATE queue_attempts SET result = %s, host = COALESCE(%s, host)"
                b" WHERE queue_id = %s AND number = %s",
                (result, host, queue_id, number),
            )
            await conn.cursor().executemany(
                b"UPDATE queue_recipients SET state = %s, last_reply = %s,"
                b" delay_notified = delay_notified OR %s WHERE queue_id = %s AND position = %s",
                [(u.state.value, u.last_reply, u.delay_notified, queue_id, u.index) for u in updates],
            )
            if next_attempt_at is not None:
                # The lease ends with the attempt; another node's (it took over) stays its own.
                await conn.execute(
                    b"UPDATE queue SET next_attempt_at = %s,"
                    b" lease_expires_at = CASE WHEN lease_owner = %s THEN NULL ELSE lease_expires_at END,"
                    b" lease_owner = NULLIF(lease_owner, %s) WHERE id = %s",
                    (next_attempt_at, self.node_id, self.node_id, queue_id),
                )
                return None, []
            await conn.execute(b"DELETE FROM queue WHERE id = %s", (queue_id,))
            await delete_unreferenced_blobs(conn, [row[0]])
            return None, []

        await self._transaction(fn)

    async def renew_leases(self, queue_ids: Sequence[str], now: datetime, lease: timedelta) -> list[str]:
        """The runner's heartbeat: one UPDATE extends every lease this node still holds among
        `queue_ids` to `lease` from now (the database's clock, as every lease); returns those that
        another node holds now. Such an entry was taken over after this node failed to renew for a
        whole lease (the database unreachable, the process stalled): the runner logs it and lets its
        attempt finish (docs/queue-leases.md "Lease lost": a duplicate is possible, a loss is not)."""
        if not queue_ids:
            return []
        wanted = list(queue_ids)

        async def fn(conn: Connection) -> tuple[list[str], list[Change]]:
            # next_attempt_at follows as in record_attempt: what `surat queue list` shows is when
            # the entry is attempted again should this node die now.
            cursor = await conn.execute(
                b"UPDATE queue SET lease_expires_at = now() + %s, next_attempt_at = %s"
                b" WHERE id = ANY(%s) AND lease_owner = %s RETURNING id",
                (lease, now + lease, wanted, self.node_id),
            )
            renewed = {row[0] for row in await cursor.fetchall()}
            missing = [queue_id for queue_id in wanted if queue_id not in renewed]
            if not missing:
                return [], []
            # Rare: finished (lease cleared), dropped (row gone) or taken over (another owner).
            cursor = await conn.execute(
                b"SELECT id FROM queue WHERE id = ANY(%s) AND lease_owner IS NOT NULL AND lease_owner <> %s",
                (missing, self.node_id),
            )
            return [row[0] for row in await cursor.fetchall()], []

        return await self._transaction(fn)

    async def recover_queue(self, now: datetime) -> int:
        """Attempts left in flight under this node's lease, an expired lease or none are marked
        interrupted and their entries made due at `now`; another node's live lease is its own."""

        async def fn(conn: Connection) -> tuple[int, list[Change]]:
            cursor = await conn.execute(
                f"UPDATE queue SET next_attempt_at = %s, lease_owner = NULL, lease_expires_at = NULL"
                f" WHERE id IN (SELECT queue_id FROM queue_attempts WHERE result IS NULL)"
                f" AND {_CLAIMABLE} RETURNING id".encode(),
                (now, self.node_id),
            )
            recovered = [row[0] for row in await cursor.fetchall()]
            await _interrupt(conn, recovered)
            return len(recovered), [Change(ChangeKind.QUEUE_CHANGED, 0)] if recovered else []

        return await self._transaction(fn)
