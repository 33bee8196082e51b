"""Group commit of the PostgreSQL store's deliveries and APPENDs (ARCHITECTURE decision 4; issue 12
"Performance" and "one NOTIFY per group commit").

Without it, every delivery was its own transaction: it locked its INBOX row and waited for its own
COMMIT's WAL flush, so concurrent deliveries into one mailbox queued on the row lock and paid one
flush each (measured: 16 concurrent callers barely faster than one). Here a store has one writer
(`GroupCommit`, a task started on demand): writes that arrive while a batch is being committed wait,
and the next batch takes them all (at most MAX_BATCH_ITEMS and MAX_BATCH_BYTES), so N concurrent
deliveries cost one transaction, one WAL flush and one NOTIFY instead of N.

One batch is one transaction (`write_batch`), a constant number of statements whatever its size:
1. resolve every target mailbox (one SELECT);
2. write every body (one INSERT into `blobs`, one COPY of all chunks), before any lock is taken, so
   that the locks below are held only for a few short statements, whatever the messages' sizes;
3. lock the target mailboxes in ascending id order, then their accounts in ascending id order (the
   store's lock order, rows.py): two writers, on this node or another, never wait in a cycle;
4. check each write's quota in arrival order (RFC 9208 §5.1), against the usage read under the
   account locks plus what the writes before it in the batch took;
5. allocate UIDs and one MODSEQ per mailbox (one UPDATE) under those locks: the numbers rise in
   commit order on every node, and within a batch in arrival order (RFC 9051 §2.3.1.1, RFC 7162
   §3.1.1; one MODSEQ for a mailbox's new messages of one commit, as SQLite's group commit does);
6. insert the rows (executemany, pipelined), then NOTIFY and COMMIT in one round trip (pool.py).

Each caller gets its own outcome. The failures a write can have on its own (its account or mailbox is
gone, its quota is exceeded) are found by the checks above and fail only that write: its blob is
deleted again in the same transaction and the others commit. Anything else that aborts the batch's
transaction (a bug, data PostgreSQL refuses) makes the writer run each write of the batch in a
transaction of its own, so that only the write at fault fails.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from surat.message.info import MessageInfo
from surat.store.base import (
    Change,
    Delivery,
    DeliveryResult,
    InvalidName,
    Mailbox,
    NotFound,
    QuotaExceeded,
    RecipientState,
    StoreError,
)
from surat.store.blobs import new_blob_id
from surat.store.common import (
    CommitStats,
    added_changes,
    mailbox_from_row,
    normalize_flags,
    normalize_mailbox_name,
)
from surat.store.postgres.batches import BatchWriter
from surat.store.postgres.blobs import write_blobs
from surat.store.postgres.pool import Connection
from surat.store.postgres.rows import (
    MAILBOX_COLUMNS,
    MESSAGE_INSERT_COLUMNS,
    allocate_many,
    lock_existing_mailboxes,
    message_row,
)

# A batch takes at most this many writes: one transaction's statements carry arrays and row lists of
# this length, and a caller waits behind at most this many others.
MAX_BATCH_ITEMS = 64
# ... and writes of at most this many octets together (the first write always goes, whatever its size):
# a large message does not hold up many small ones' commit for long, nor they its.
MAX_BATCH_BYTES = 8 * 1024 * 1024

_INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_INSERT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
).encode()


@dataclass(frozen=True, slots=True)
class TakenBody:
    """A message taken over from its caller: in memory, or a spool (StagedSpool.take())."""

    source: bytes | IO[bytes]
    size: int
    ends_crlf: bool

    def close(self) -> None:
        if not isinstance(self.source, bytes):
            self.source.close()


@dataclass(eq=False, slots=True)
class PendingWrite:
    """One delivery (`delivery` set) or APPEND (`mailbox_id` set) waiting for its group commit."""

    body: TakenBody
    info: MessageInfo
    internal_date: datetime
    delivery: Delivery | None = None
    account_id: int = 0
    mailbox_id: int = 0
    flags: frozenset[str] = field(default_factory=frozenset)
    # Settled by the writer with the outcome; made on the running loop.
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


# What `write_batch` decides for one write: its result (DeliveryResult, or (uidvalidity, uid) for an
# APPEND), or the StoreError that refuses it alone.
Outcome = Any


def _new_queue_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def _wanted_name(name: str) -> str:
    try:
        return normalize_mailbox_name(name)
    except InvalidName:
        return "INBOX"  # as SQLite does: a target it cannot name falls back to INBOX


async def _resolve(
    conn: Connection, batch: list[PendingWrite]
) -> list[list[tuple[Mailbox, frozenset[str]]] | StoreError]:
    """Each write's target mailboxes (with their flags), or NotFound, from one SELECT. A delivery's
    target falls back to the account's INBOX when the named mailbox does not exist."""
    ids = [item.mailbox_id for item in batch if item.delivery is None]
    accounts: list[int] = []
    names: list[str] = []
    for item in batch:
        for local in item.delivery.local if item.delivery is not None else ():
            accounts += [local.account_id, local.account_id]
            names += [_wanted_name(local.mailbox), "INBOX"]
    cursor = await conn.execute(
        f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ANY(%s) OR (account_id, name) IN"
        " (SELECT * FROM unnest(%s::bigint[], %s::text[]))".encode(),
        (ids, accounts, names),
    )
    by_id: dict[int, Mailbox] = {}
    by_name: dict[tuple[int, str], Mailbox] = {}
    for row in await cursor.fetchall():
        mailbox = mailbox_from_row(row)
        by_id[mailbox.id] = mailbox
        by_name[(mailbox.account_id, mailbox.name)] = mailbox
    resolved: list[list[tuple[Mailbox, frozenset[str]]] | StoreError] = []
    for item in batch:
        if item.delivery is None:
            found = by_id.get(item.mailbox_id)
            if found is None or found.account_id != item.account_id:
                resolved.append(NotFound(f"mailbox {item.mailbox_id}"))
            else:
                resolved.append([(found, normalize_flags(item.flags))])
            continue
        targets: list[tuple[Mailbox, frozenset[str]]] = []
        for local in item.delivery.local:
            named = by_name.get((local.account_id, _wanted_name(local.mailbox)))
            target = named or by_name.get((local.account_id, "INBOX"))
            if target is None:
                break
            targets.append((target, normalize_flags(local.flags)))
        else:
            resolved.append(targets)
            continue
        resolved.append(NotFound(f"account {local.account_id}"))
    return resolved


def _queued(item: PendingWrite) -> bool:
    remote = item.delivery.remote if item.delivery is not None else None
    return remote is not None and bool(remote.recipients)


async def write_batch(conn: Connection, batch: list[PendingWrite]) -> tuple[list[Outcome], list[Change]]:
    """The batch's rows in the caller's transaction (see the module docstring for the steps). Touches
    nothing outside the database: pool.py may run it again after a deadlock."""
    outcomes: list[Outcome] = list(await _resolve(conn, batch))
    # Writes with nowhere to go (no local target, nobody remote) are done: nothing to store.
    for index, item in enumerate(batch):
        if outcomes[index] == [] and not _queued(item):
            outcomes[index] = DeliveryResult(local=[], queue_id=None)
    placed = {i: targets for i, targets in enumerate(outcomes) if isinstance(targets, list)}
    blob_ids = {i: new_blob_id() for i in placed}
    await write_blobs(conn, [(blob_ids[i], batch[i].body.size, batch[i].body.source) for i in placed])

    # Step 3: the lock order.
    locked = await lock_existing_mailboxes(conn, (m.id for targets in placed.values() for m, _ in targets))
    cursor = await conn.execute(
        b"SELECT id, quota_bytes, used_bytes FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (sorted({m.account_id for targets in placed.values() for m, _ in targets}),),
    )
    usage = {row[0]: (row[1], row[2]) for row in await cursor.fetchall()}

    # Step 4: quotas in arrival order; a refused write takes nothing from the ones after it.
    charged: dict[int, int] = {}
    rejected: list[int] = []
    for i, targets in placed.items():
        needed: dict[int, int] = {}
        for mailbox, _ in targets:
            needed[mailbox.account_id] = needed.get(mailbox.account_id, 0) + batch[i].body.size
        refusal: StoreError | None = None
        for mailbox, _ in targets:
            if mailbox.id not in locked:  # deleted since step 1
                refusal = NotFound(f"mailbox {mailbox.id}")
        for account_id, size in needed.items():
            if refusal is None and account_id not in usage:
                refusal = NotFound(f"account {account_id}")
            elif refusal is None:
                quota, used = usage[account_id]
                # RFC 9208 §5.1: refuse what would take the account over its STORAGE limit.
                if quota is not None and used + charged.get(account_id, 0) + size > quota:
                    refusal = QuotaExceeded(f"quota of {quota} bytes exceeded")
        if refusal is not None:
            outcomes[i] = refusal
            rejected.append(i)
            continue
        for account_id, size in needed.items():
            charged[account_id] = charged.get(account_id, 0) + size
    if rejected:
        # Their blobs go again (chunks with them, ON DELETE CASCADE): nothing refers to them.
        await conn.execute(b"DELETE FROM blobs WHERE id = ANY(%s)", ([blob_ids[i] for i in rejected],))
        for i in rejected:
            del placed[i]
    if charged:
        await conn.execute(
            b"UPDATE accounts a SET used_bytes = a.used_bytes + c.size"
            b" FROM unnest(%s::bigint[], %s::bigint[]) AS c(id, size) WHERE a.id = c.id",
            (list(charged), list(charged.values())),
        )

    # Step 5: numbers, in arrival order within each mailbox.
    counts: dict[int, int] = {}
    for targets in placed.values():
        for mailbox, _ in targets:
            counts[mailbox.id] = counts.get(mailbox.id, 0) + 1
    allocated = await allocate_many(conn, counts)
    next_uid = {mailbox_id: first for mailbox_id, (first, _) in allocated.items()}
    rows: list[tuple[Any, ...]] = []
    added: dict[int, list[int]] = {}
    queue_rows: list[tuple[Any, ...]] = []
    recipient_rows: list[tuple[Any, ...]] = []
    for i, targets in placed.items():
        item = batch[i]
        info_json = item.info.to_json()
        local: list[tuple[int, int, int]] = []
        for mailbox, flags in targets:
            uid = next_uid[mailbox.id]
            next_uid[mailbox.id] = uid + 1
            modseq = allocated[mailbox.id][1]
            rows.append(
                message_row(
                    mailbox.id,
                    uid,
                    modseq,
                    flags,
                    item.internal_date,
                    item.body.size,
                    blob_ids[i],
                    info_json,
                    item.body.ends_crlf,
                )
            )
            local.append((mailbox.account_id, mailbox.id, uid))
            added.setdefault(mailbox.id, []).append(uid)
        if item.delivery is None:
            outcomes[i] = (locked[targets[0][0].id].uidvalidity, local[0][2])
            continue
        queue_id = None
        remote = item.delivery.remote
        if remote is not None and remote.recipients:
            queue_id = _new_queue_id()
            now = datetime.now(UTC)
            queue_rows.append(
                (
                    queue_id,
                    remote.sender,
                    item.body.size,
                    blob_ids[i],
                    remote.body_offset,
                    now,
                    now,
                    remote.envid,
                    remote.ret,
                    remote.smtputf8,
                    remote.eight_bit,
                    remote.authenticated_user,
                    remote.dkim_signature,
                    remote.requiretls,
                )
            )
            recipient_rows += [
                (queue_id, position, r.address, RecipientState.PENDING.value, " ".join(r.notify), r.orcpt)
                for position, r in enumerate(remote.recipients)
            ]
        outcomes[i] = DeliveryResult(local=local, queue_id=queue_id)

    # Step 6: the rows, each kind in one pipelined executemany.
    cursor = conn.cursor()
    if rows:
        await cursor.executemany(_INSERT_MESSAGE, rows)
    if queue_rows:
        await cursor.executemany(
            b"INSERT INTO queue (id, sender, size, blob_id, body_offset, created_at, next_attempt_at,"
            b" envid, ret, smtputf8, eight_bit, authenticated_user, dkim_signature, requiretls)"
            b" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            queue_rows,
        )
        await cursor.executemany(
            b"INSERT INTO queue_recipients (queue_id, position, address, state, notify, orcpt)"
            b" VALUES (%s, %s, %s, %s, %s, %s)",
            recipient_rows,
        )
    owners = {mailbox_id: locked[mailbox_id].account_id for mailbox_id in added}
    modseqs = {mailbox_id: modseq for mailbox_id, (_, modseq) in allocated.items()}
    return outcomes, added_changes(added, owners, modseqs, bool(queue_rows))


def take_batch(waiting: deque[PendingWrite]) -> list[PendingWrite]:
    """The next batch, in arrival order: bounded by MAX_BATCH_ITEMS and MAX_BATCH_BYTES (enforced here)."""
    batch = [waiting.popleft()]
    size = batch[0].body.size
    while waiting and len(batch) < MAX_BATCH_ITEMS and size + waiting[0].body.size <= MAX_BATCH_BYTES:
        item = waiting.popleft()
        size += item.body.size
        batch.append(item)
    return batch


class GroupCommit(BatchWriter[PendingWrite]):
    """One store's writer of deliveries and APPENDs (batches.py), batches bounded by `take_batch`;
    it counts what its batches committed (`stats`)."""

    def __init__(self, commit: Callable[[list[PendingWrite]], Awaitable[Sequence[Outcome]]]) -> None:
        super().__init__(commit, name="group_commit")
        self._batches = 0
        self._items = 0
        self._largest = 0

    def stats(self) -> CommitStats:
        return CommitStats(self._batches, self._items, self._largest)

    def take(self, waiting: deque[PendingWrite]) -> list[PendingWrite]:
        return take_batch(waiting)

    def settle(self, item: PendingWrite, outcome: Outcome) -> None:
        """Hand a write its outcome and let its body go (the writer owns the body until then: a caller
        cancelled meanwhile must not close what a retry may still read)."""
        item.body.close()
        super().settle(item, outcome)

    def committed(self, batch: list[PendingWrite], outcomes: Sequence[Outcome]) -> None:
        committed = sum(1 for outcome in outcomes if not isinstance(outcome, BaseException))
        if committed:
            self._batches += 1
            self._items += committed
            self._largest = max(self._largest, committed)
