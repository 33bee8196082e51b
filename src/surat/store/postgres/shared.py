"""Shared transactions of the PostgreSQL store's IMAP flag changes, \\Recent claims and IMAP expunges
(issue 12 "Performance"; the SQLite store's `_write_grouped` is the model).

Every one of these writes locks its mailbox's row (MODSEQs are allocated under it, rows.py). One
transaction each made the writers of a busy mailbox queue on that lock, each holding it for its own
round trips and commit (measured: 30 ms BEGIN->COMMIT at p50 for a 0.8 ms WAL flush). Here a store
has one writer for them (`SharedWrites`): writes that arrive while a transaction is in flight wait,
and the next transaction takes them all (at most MAX_SHARED_WRITES), in arrival order:

1. BEGIN, `SET LOCAL synchronous_commit = off` (the durability rule of pool.py's docstring) and the
   lock of every mailbox of the batch in ascending id order, then of the expunges' accounts in
   ascending id order (the store's lock order, rows.py), in one round trip (pipeline mode);
2. each write in turn, against the locked rows: a STORE reads its messages and updates them (one
   round trip, the UPDATE rides with the next read), an EXPUNGE deletes (one round trip) and its
   bookkeeping rides with the next, a \\Recent claim needs no statement at all;
3. one UPDATE of the mailboxes' HIGHESTMODSEQ and recent_uid, one NOTIFY and the COMMIT, in one
   round trip.

MODSEQs: the batch holds each mailbox's lock from step 1 to COMMIT and hands out its MODSEQs in
memory, one per changing write, above the locked HIGHESTMODSEQ: so they strictly increase in commit
order on every node and in arrival order within the batch (RFC 7162 §3.1.1).

A write refused on its own fails alone: a mailbox missing at step 1 fails the writes on it with
NotFound and the others go on. Anything else that aborts the transaction makes the writer run each
write of the batch in a transaction of its own, so that only the write at fault fails.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from surat.store.base import Change, Mailbox, NotFound
from surat.store.common import mailbox_from_row
from surat.store.postgres.batches import BatchWriter
from surat.store.postgres.pool import Connection
from surat.store.postgres.rows import MAILBOX_COLUMNS

# A transaction takes at most this many writes: a caller waits behind at most one transaction in flight
# and this many writes before it, and the transaction holds its locks for a bounded number of
# statements (at most two round trips per write).
MAX_SHARED_WRITES = 64


class LockedMailboxes:
    """The batch's mailbox rows as locked at step 1, and the numbers its writes took from them since
    (written back at step 3)."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.mailboxes: dict[int, Mailbox] = {row[0]: mailbox_from_row(row) for row in rows}
        self._modseq = {row[0]: int(row[5]) for row in rows}
        self._recent_uid = {row[0]: int(row[8]) for row in rows}
        self._changed: set[int] = set()

    def next_modseq(self, mailbox_id: int) -> int:
        """A new MODSEQ of the locked mailbox, above every one it had (RFC 7162 §3.1.1)."""
        self._modseq[mailbox_id] += 1
        self._changed.add(mailbox_id)
        return self._modseq[mailbox_id]

    def claim_recent(self, mailbox_id: int, up_to_uid: int) -> tuple[int, int]:
        """RFC 3501 §2.3.2: the UIDs from the first unclaimed one up to `up_to_uid` are this session's
        \\Recent ones, and no other session's (the row is locked): (first, last), empty if last < first."""
        first = self._recent_uid[mailbox_id]
        if first > up_to_uid:
            return first, first - 1
        self._recent_uid[mailbox_id] = up_to_uid + 1
        self._changed.add(mailbox_id)
        return first, up_to_uid

    async def write_back(self, conn: Connection) -> None:
        """Step 3: one UPDATE for every mailbox whose numbers changed (its result is never read, so it
        goes in the COMMIT's round trip)."""
        if not self._changed:
            return
        ids = sorted(self._changed)
        await conn.execute(
            b"UPDATE mailboxes m SET highestmodseq = c.modseq, recent_uid = c.recent_uid"
            b" FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS c(id, modseq, recent_uid)"
            b" WHERE m.id = c.id",
            (ids, [self._modseq[i] for i in ids], [self._recent_uid[i] for i in ids]),
        )


# One write: given the connection and the locked mailboxes, its result and its changes.
Apply = Callable[[Connection, LockedMailboxes], Awaitable[tuple[Any, list[Change]]]]


@dataclass(eq=False, slots=True)
class SharedWrite:
    mailbox_id: int
    apply: Apply
    locks_account: bool = False  # an expunge: it changes its account's usage
    # Settled by the writer with the outcome; made on the running loop.
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


async def write_shared(conn: Connection, batch: list[SharedWrite]) -> tuple[list[Any], list[Change]]:
    """Steps 1-3 of the module docstring in the caller's transaction (pipeline mode, pool.py); each
    write's result or the NotFound that refuses it alone. Touches nothing outside the database: the
    transaction may run again after a deadlock."""
    mailbox_ids = sorted({item.mailbox_id for item in batch})
    locked_rows = await conn.execute(
        f"SELECT {MAILBOX_COLUMNS}, recent_uid FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE".encode(),
        (mailbox_ids,),
    )
    account_mailboxes = sorted({item.mailbox_id for item in batch if item.locks_account})
    if account_mailboxes:
        # Rows are locked in the order ORDER BY produces them: accounts after mailboxes, ascending.
        await conn.execute(
            b"SELECT id FROM accounts WHERE id IN (SELECT account_id FROM mailboxes WHERE id = ANY(%s))"
            b" ORDER BY id FOR UPDATE",
            (account_mailboxes,),
        )
    locked = LockedMailboxes(await locked_rows.fetchall())
    outcomes: list[Any] = []
    changes: list[Change] = []
    for item in batch:
        if item.mailbox_id not in locked.mailboxes:
            outcomes.append(NotFound(f"mailbox {item.mailbox_id}"))
            continue
        result, item_changes = await item.apply(conn, locked)
        outcomes.append(result)
        changes += item_changes
    await locked.write_back(conn)
    return outcomes, changes


class SharedWrites(BatchWriter[SharedWrite]):
    """One store's writer of the shared transactions (batches.py), at most MAX_SHARED_WRITES a batch."""

    def __init__(self, commit: Callable[[list[SharedWrite]], Awaitable[Sequence[Any]]]) -> None:
        super().__init__(commit, name="shared_writes")

    def take(self, waiting: deque[SharedWrite]) -> list[SharedWrite]:
        # Bounded by MAX_SHARED_WRITES, enforced here.
        return [waiting.popleft() for _ in range(min(len(waiting), MAX_SHARED_WRITES))]
