"""The PostgreSQL store's messages: deliver and append (group commit: many of them, blobs and rows, in
one transaction, UIDs and MODSEQs from the row-locked mailbox UPDATE; deliveries.py), listings, flags, expunge, copy, move, QRESYNC changes and
\\Recent claims.

Every transaction that adds, changes or removes messages locks the mailboxes it writes first, in
ascending id order (rows.py), and holds the locks until COMMIT: so the numbers it allocates are above
those of every transaction that committed before it in that mailbox, and below those of every one
that commits after (issue 12: UIDs and MODSEQs strictly increase in commit order, on every node).
A delivery (deliveries.py) writes its blob before it takes any mailbox lock, so the lock is held only for a few short
statements, whatever the message's size.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, BinaryIO, cast

from surat.message.info import MessageInfo, compute_message_info
from surat.store.base import (
    Change,
    ChangeKind,
    CopyResult,
    Delivery,
    DeliveryResult,
    FlagMode,
    FlagUpdate,
    Mailbox,
    MailboxChanges,
    MessageBlob,
    MessageRecord,
    MessageSummary,
    NotFound,
    StagedBlob,
    StoreError,
    StoreFlagsResult,
)
from surat.store.common import (
    CommitStats,
    flags_of,
    flags_text,
    message_info,
    normalize_flags,
)
from surat.store.postgres.blobs import StagedSpool, blob_tail
from surat.store.postgres.deliveries import GroupCommit, PendingWrite, TakenBody, write_batch
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.postgres.rows import (
    MAILBOX_BY_ID,
    MESSAGE_INSERT_COLUMNS,
    allocate,
    bump_modseq,
    charge,
    delete_unreferenced_blobs,
    joined_date,
    lock_mailboxes,
    mailbox_by_id,
    mailbox_found,
)
from surat.store.postgres.shared import LockedMailboxes, SharedWrite, SharedWrites, write_shared

# Messages up to this size are parsed (MessageInfo) on the event loop; larger ones in a thread.
INLINE_PARSE_BYTES = 64 * 1024
_SUMMARY_COLUMNS = "uid, modseq, flags, size, internal_date, internal_tz"


def _summary(row: tuple[Any, ...]) -> MessageSummary:
    return MessageSummary(
        uid=row[0],
        modseq=row[1],
        flags=flags_of(row[2]),
        size=row[3],
        internal_date=joined_date(row[4], row[5]),
    )


async def expunge_rows(
    conn: Connection,
    mailbox: Mailbox,
    uids: Sequence[int],
    only_deleted: bool = False,
    next_modseq: Callable[[int], int] | None = None,
) -> tuple[list[int], list[Change]]:
    """Remove messages of a mailbox the caller has locked; returns the UIDs removed and the change.
    `next_modseq`: the caller hands out the mailbox's MODSEQs itself (shared.py), else an UPDATE does.
    The statements after the DELETE are never read, so in pipeline mode they ride with the next one."""
    deleted = b" AND deleted" if only_deleted else b""
    cursor = await conn.execute(
        b"DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
        + deleted
        + b" RETURNING uid, size, blob_id",
        (mailbox.id, sorted(set(uids))),
    )
    rows = await cursor.fetchall()
    if not rows:
        return [], []
    modseq = next_modseq(mailbox.id) if next_modseq is not None else await bump_modseq(conn, mailbox.id)
    removed = sorted(row[0] for row in rows)
    # RFC 7162 §3.2.7: remember expunged UIDs with their MODSEQ for VANISHED (EARLIER).
    await conn.execute(
        b"INSERT INTO expunged (mailbox_id, uid, modseq) SELECT %s, uid, %s FROM unnest(%s::bigint[]) AS uid"
        b" ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq",
        (mailbox.id, modseq, removed),
    )
    await conn.execute(
        b"UPDATE accounts SET used_bytes = used_bytes - %s WHERE id = %s",
        (sum(row[1] for row in rows), mailbox.account_id),
    )
    await delete_unreferenced_blobs(conn, (row[2] for row in rows))
    return removed, [
        Change(ChangeKind.MESSAGES_EXPUNGED, mailbox.account_id, mailbox.id, tuple(removed), modseq)
    ]


async def copy_rows(
    conn: Connection, source: Mailbox, uids: Sequence[int], dest: Mailbox, *, check_quota: bool = True
) -> tuple[CopyResult, list[Change]]:
    """Copy messages between two mailboxes the caller has locked (both, in id order). The copies
    share the blob; they get new UIDs in the source's UID order (RFC 4315 COPYUID pairs them)."""
    cursor = await conn.execute(
        b"SELECT uid, size FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid",
        (source.id, sorted(set(uids))),
    )
    rows = await cursor.fetchall()
    if not rows:
        return CopyResult(dest.uidvalidity, []), []
    await charge(conn, dest.account_id, sum(row[1] for row in rows), check_quota=check_quota)
    first, modseq = await allocate(conn, dest.id, len(rows))
    old_uids = [row[0] for row in rows]
    new_uids = list(range(first, first + len(rows)))
    await conn.execute(
        f"INSERT INTO messages ({MESSAGE_INSERT_COLUMNS}) SELECT %s, u.new_uid, %s, m.flags, m.seen, m.deleted,"
        " m.internal_date, m.internal_tz, m.size, m.blob_id, m.info, m.ends_crlf FROM messages m"
        " JOIN unnest(%s::bigint[], %s::bigint[]) AS u(old_uid, new_uid) ON m.uid = u.old_uid"
        " WHERE m.mailbox_id = %s".encode(),
        (dest.id, modseq, old_uids, new_uids, source.id),
    )
    change = Change(ChangeKind.MESSAGES_ADDED, dest.account_id, dest.id, tuple(new_uids), modseq)
    return CopyResult(dest.uidvalidity, list(zip(old_uids, new_uids, strict=True))), [change]


class MessagesStore(PooledStore):
    # ------------------------------------------------------------------------------ reads

    async def list_messages(self, mailbox_id: int) -> list[MessageSummary]:
        async def fn(conn: Connection) -> list[MessageSummary]:
            await mailbox_by_id(conn, mailbox_id)  # NotFound
            cursor = await conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM messages WHERE mailbox_id = %s ORDER BY uid".encode(),
                (mailbox_id,),
            )
            return [_summary(row) for row in await cursor.fetchall()]

        return await self.with_connection(fn)

    async def list_message_blobs(self, mailbox_id: int) -> list[MessageBlob]:
        async def fn(conn: Connection) -> list[MessageBlob]:
            cursor = await conn.execute(
                b"SELECT uid, size, blob_id, ends_crlf FROM messages WHERE mailbox_id = %s ORDER BY uid",
                (mailbox_id,),
            )
            out = []
            for uid, size, blob_id, recorded in await cursor.fetchall():
                ends = recorded
                if ends is None:  # a row copied in without it: look at the blob (RFC 1939 §3 sizes)
                    tail = await blob_tail(conn, blob_id, size)
                    ends = size == 0 or tail == b"\r\n" or len(tail) < min(2, size)
                out.append(MessageBlob(uid, size, blob_id, bool(ends)))
            return out

        return await self.with_connection(fn)

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        rows = await self._fetchall(
            f"SELECT {_SUMMARY_COLUMNS}, blob_id, info FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
            " ORDER BY uid",
            (mailbox_id, sorted(set(uids))),
        )
        return [
            MessageRecord(
                mailbox_id=mailbox_id,
                uid=row[0],
                modseq=row[1],
                flags=flags_of(row[2]),
                size=row[3],
                internal_date=joined_date(row[4], row[5]),
                blob_id=row[6],
                info=message_info(row[7]),
            )
            for row in rows
        ]

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        async def fn(conn: Connection) -> MailboxChanges:
            # The mailbox first: a change committed between these statements then shows in the rows
            # and raises HIGHESTMODSEQ beyond what is reported, so the client asks again later and
            # misses nothing (the other order could report a HIGHESTMODSEQ past unseen changes).
            # The three go in one round trip (pipeline mode): the server still runs them in this
            # order, each (READ COMMITTED) seeing what was committed before it started. IMAP sessions
            # ask this before most commands' replies (RFC 9051 §7.5.1), so on a busy machine the
            # two round trips saved are a large part of a command's wait.
            async with conn.pipeline():
                mailbox_rows = await conn.execute(MAILBOX_BY_ID.encode(), (mailbox_id, None))
                changed_rows = await conn.execute(
                    f"SELECT {_SUMMARY_COLUMNS} FROM messages WHERE mailbox_id = %s AND modseq > %s"
                    " ORDER BY uid".encode(),
                    (mailbox_id, modseq),
                )
                vanished_rows = await conn.execute(
                    b"SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                    (mailbox_id, modseq),
                )
            mailbox = await mailbox_found(mailbox_rows, mailbox_id)
            changed = [_summary(row) for row in await changed_rows.fetchall()]
            vanished = [row[0] for row in await vanished_rows.fetchall()]
            return MailboxChanges(changed=changed, vanished=vanished, highestmodseq=mailbox.highestmodseq)

        return await self.with_connection(fn)

    # ------------------------------------------------------------------------------ flags and recent

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult:
        """`updated` lists every existing message the command applied to, with its flags after the
        command; only those whose flags changed get the new MODSEQ (the others keep theirs). Runs in a
        shared transaction (shared.py) without waiting for the WAL flush (pool.py's docstring)."""
        given = normalize_flags(flags)
        wanted = sorted(set(uids))

        async def apply(conn: Connection, locked: LockedMailboxes) -> tuple[StoreFlagsResult, list[Change]]:
            mailbox = locked.mailboxes[mailbox_id]
            cursor = await conn.execute(
                b"SELECT uid, modseq, flags FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid",
                (mailbox_id, wanted),
            )
            updated: list[FlagUpdate] = []
            modified: list[int] = []
            changed: list[tuple[int, int, str, bool, bool]] = []
            for uid, old_modseq, text in await cursor.fetchall():
                if unchanged_since is not None and old_modseq > unchanged_since:
                    modified.append(uid)  # RFC 7162 §3.1.3
                    continue
                old = flags_of(text)
                new = given if mode is FlagMode.SET else old | given if mode is FlagMode.ADD else old - given
                if new == old:
                    updated.append(FlagUpdate(uid, old, old_modseq))
                    continue
                changed.append((len(updated), uid, flags_text(new), "\\Seen" in new, "\\Deleted" in new))
                updated.append(FlagUpdate(uid, new, 0))
            if not changed:
                return StoreFlagsResult(updated=updated, modified=modified), []
            # RFC 7162 §3.1.1: the changed messages share the next MODSEQ of the locked mailbox.
            modseq = locked.next_modseq(mailbox_id)
            for index, uid, _, _, _ in changed:
                updated[index] = FlagUpdate(uid, updated[index].flags, modseq)
            # One statement for every changed message; its result is not read, so it goes with the
            # next write's read or the COMMIT.
            await conn.execute(
                b"UPDATE messages m SET flags = u.flags, seen = u.seen, deleted = u.deleted, modseq = %s"
                b" FROM unnest(%s::bigint[], %s::text[], %s::boolean[], %s::boolean[])"
                b" AS u(uid, flags, seen, deleted) WHERE m.mailbox_id = %s AND m.uid = u.uid",
                (
                    modseq,
                    [c[1] for c in changed],
                    [c[2] for c in changed],
                    [c[3] for c in changed],
                    [c[4] for c in changed],
                    mailbox_id,
                ),
            )
            change = Change(
                ChangeKind.FLAGS_CHANGED, mailbox.account_id, mailbox_id, tuple(c[1] for c in changed), modseq
            )
            return StoreFlagsResult(updated=updated, modified=modified), [change]

        result: StoreFlagsResult = await self._shared_write(SharedWrite(mailbox_id, apply))
        return result

    async def claim_recent(self, mailbox_id: int, up_to_uid: int, *, peek: bool = False) -> tuple[int, int]:
        if not peek:

            async def apply(
                conn: Connection, locked: LockedMailboxes
            ) -> tuple[tuple[int, int], list[Change]]:
                # RFC 3501 §2.3.2: claimed under the mailbox's row lock, so two sessions, on any
                # node, never both claim a UID (\\Recent is session state: a shared transaction).
                return locked.claim_recent(mailbox_id, up_to_uid), []

            claimed: tuple[int, int] = await self._shared_write(SharedWrite(mailbox_id, apply))
            return claimed
        row = await self._fetchone("SELECT recent_uid FROM mailboxes WHERE id = %s", (mailbox_id,))
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        return int(row[0]), up_to_uid

    # ------------------------------------------------------------------------------ expunge, copy, move

    async def expunge(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        files_in_background: bool = False,
        only_deleted: bool = False,
    ) -> list[int]:
        # files_in_background has nothing to defer here: the blobs go in the same transaction, a
        # shared one (shared.py) that does not wait for the WAL flush (pool.py's docstring).
        async def apply(conn: Connection, locked: LockedMailboxes) -> tuple[list[int], list[Change]]:
            return await expunge_rows(
                conn, locked.mailboxes[mailbox_id], uids, only_deleted, locked.next_modseq
            )

        removed: list[int] = await self._shared_write(SharedWrite(mailbox_id, apply, locks_account=True))
        return removed

    async def copy(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult:
        async def fn(conn: Connection) -> tuple[CopyResult, list[Change]]:
            locked = await lock_mailboxes(conn, [mailbox_id, dest_mailbox_id])
            return await copy_rows(conn, locked[mailbox_id], uids, locked[dest_mailbox_id])

        return await self._transaction(fn)

    async def move(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult:
        async def fn(conn: Connection) -> tuple[CopyResult, list[Change]]:
            locked = await lock_mailboxes(conn, [mailbox_id, dest_mailbox_id])
            source, dest = locked[mailbox_id], locked[dest_mailbox_id]
            # RFC 6851 §3.3: a move within one account does not change usage, so no quota check.
            result, changes = await copy_rows(
                conn, source, uids, dest, check_quota=source.account_id != dest.account_id
            )
            expunge_changes = (await expunge_rows(conn, source, [pair[0] for pair in result.pairs]))[1]
            return result, changes + expunge_changes

        return await self._transaction(fn)

    # ------------------------------------------------------------------------------ deliver and append

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Deliveries and APPENDs go through one writer per store (deliveries.py).
        self._writes = GroupCommit(self._commit_writes)

        # IMAP flag changes, \\Recent claims and expunges: shared transactions (shared.py).
        self._shared = SharedWrites(self._commit_shared)

    async def _commit_shared(self, batch: list[SharedWrite]) -> list[Any]:
        # synchronous=False: the durability rule for these writes (pool.py's docstring).
        return await self._attempts(lambda conn: write_shared(conn, batch), pipelined=True, synchronous=False)

    async def _shared_write(self, item: SharedWrite) -> Any:
        self._require_open()
        return await self._shared.submit(item)

    def commit_stats(self) -> CommitStats:
        """How many group commits carried how many deliveries/appends (for tests and benchmarks)."""
        return self._writes.stats()

    async def _commit_writes(self, batch: list[PendingWrite]) -> list[Any]:
        return await self._attempts(lambda conn: write_batch(conn, batch))

    def _take(self, staged: StagedBlob) -> TakenBody:
        """Own a staged blob from now on (before any await: a caller cancelled meanwhile can no longer
        abort it); only this backend's staged blobs are accepted."""
        if not isinstance(staged, StagedSpool):
            staged.abort()
            raise StoreError("a staged blob of another store")
        size = staged.size
        spool = staged.take()
        spool.seek(max(0, size - 2))
        tail = spool.read(2)
        return TakenBody(spool, size, size == 0 or tail == b"\r\n")

    @staticmethod
    async def _parse(body: TakenBody) -> MessageInfo:
        if isinstance(body.source, bytes):
            return compute_message_info(io.BytesIO(body.source))
        spool = body.source

        def parse() -> MessageInfo:
            spool.seek(0)
            return compute_message_info(cast(BinaryIO, spool))

        if body.size <= INLINE_PARSE_BYTES:
            return parse()
        return await asyncio.to_thread(parse)

    async def _parsed(self, body: TakenBody, info: MessageInfo | None) -> MessageInfo:
        """The message's MessageInfo, parsed here when the caller has none; closes `body` on failure
        (from the group commit's submit on, the writer owns and closes it)."""
        try:
            self._require_open()
            return info if info is not None else await self._parse(body)
        except BaseException:
            body.close()
            raise

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        if delivery.staged is not None:
            body = self._take(delivery.staged)
        elif delivery.content is not None:
            content = delivery.content
            body = TakenBody(content, len(content), not content or content.endswith(b"\r\n"))
        else:
            raise StoreError("a delivery needs content or a staged blob")
        info = await self._parsed(body, delivery.info)
        result: DeliveryResult = await self._writes.submit(
            PendingWrite(body, info, delivery.internal_date, delivery=delivery)
        )
        return result

    async def append(
        self,
        account_id: int,
        mailbox_id: int,
        staged: StagedBlob,
        flags: frozenset[str],
        internal_date: datetime,
    ) -> tuple[int, int]:
        body = self._take(staged)
        info = await self._parsed(body, None)
        result: tuple[int, int] = await self._writes.submit(
            PendingWrite(body, info, internal_date, account_id=account_id, mailbox_id=mailbox_id, flags=flags)
        )
        return result
