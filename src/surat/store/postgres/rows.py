"""Row-level helpers the PostgreSQL store's role modules share inside their transactions: mailbox
rows, UID/MODSEQ allocation under the mailbox's row lock, quota charges, times, unreferenced blobs.

Lock order (so that two transactions never wait for each other in a cycle): mailbox rows first, in
ascending id order, then account rows. Every writer of messages takes its mailboxes' locks with
`lock_mailboxes` (or the allocating UPDATE, which takes the same lock) before anything else.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import TupleRow

from surat.store.base import Mailbox, NotFound, QuotaExceeded
from surat.store.common import flags_text, mailbox_from_row
from surat.store.postgres.pool import Connection

MAILBOX_COLUMNS = (
    "id, account_id, name, uidvalidity, uidnext, highestmodseq, special_use, EXISTS (SELECT 1 FROM"
    " subscriptions s WHERE s.account_id = mailboxes.account_id AND s.name = mailboxes.name)"
)
# Parameters: the mailbox id, and its account id or None for any account.
MAILBOX_BY_ID = (
    f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = %s AND account_id = coalesce(%s, account_id)"
)

MESSAGE_INSERT_COLUMNS = "mailbox_id, uid, modseq, flags, seen, deleted, internal_date, internal_tz, size, blob_id, info, ends_crlf"


async def mailbox_by_id(
    conn: Connection, mailbox_id: int, *, lock: bool = False, account_id: int | None = None
) -> Mailbox:
    """The mailbox (of `account_id`, if given); with `lock`, its row stays locked until the
    transaction ends."""
    suffix = " FOR UPDATE" if lock else ""
    cursor = await conn.execute(f"{MAILBOX_BY_ID}{suffix}".encode(), (mailbox_id, account_id))
    return await mailbox_found(cursor, mailbox_id)


async def mailbox_found(cursor: AsyncCursor[TupleRow], mailbox_id: int) -> Mailbox:
    """The mailbox that MAILBOX_BY_ID returned (its cursor, maybe from a pipeline); NotFound if none."""
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"mailbox {mailbox_id}")
    return mailbox_from_row(row)


async def mailbox_by_name(conn: Connection, account_id: int, name: str) -> Mailbox:
    cursor = await conn.execute(
        f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = %s AND name = %s".encode(),
        (account_id, name),
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"mailbox {name}")
    return mailbox_from_row(row)


async def lock_mailboxes(conn: Connection, mailbox_ids: Iterable[int]) -> dict[int, Mailbox]:
    """Lock the mailboxes' rows in ascending id order (the store's fixed lock order); NotFound if one
    of them does not exist. Returns them as they are under the lock."""
    wanted = sorted(set(mailbox_ids))
    found = await lock_existing_mailboxes(conn, wanted)
    missing = [mailbox_id for mailbox_id in wanted if mailbox_id not in found]
    if missing:
        raise NotFound(f"mailbox {missing[0]}")
    return found


async def lock_existing_mailboxes(conn: Connection, mailbox_ids: Iterable[int]) -> dict[int, Mailbox]:
    """Lock those of the mailboxes' rows that exist, in ascending id order; returns them as they are
    under the lock (the caller decides what a missing one means)."""
    # One statement: PostgreSQL locks the rows in the order the ORDER BY produces them.
    cursor = await conn.execute(
        f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE".encode(),
        (sorted(set(mailbox_ids)),),
    )
    return {row[0]: mailbox_from_row(row) for row in await cursor.fetchall()}


async def allocate(conn: Connection, mailbox_id: int, count: int = 1) -> tuple[int, int]:
    """Reserve `count` UIDs and one new MODSEQ of a mailbox: (first uid, modseq).

    The UPDATE holds the mailbox's row lock until commit, so the next transaction allocating in this
    mailbox waits and gets higher numbers: UIDs and MODSEQs rise in commit order on every node (issue
    12; RFC 9051 §2.3.1.1 strictly ascending UIDs, RFC 7162 §3.1.1 MODSEQs). Never a sequence: a
    sequence hands out numbers in allocation order, not commit order, and a client could see UID 7
    appear after UID 8 (and never look below 8 again)."""
    cursor = await conn.execute(
        b"UPDATE mailboxes SET uidnext = uidnext + %s, highestmodseq = highestmodseq + 1 WHERE id = %s"
        b" RETURNING uidnext - %s, highestmodseq",
        (count, mailbox_id, count),
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"mailbox {mailbox_id}")
    return int(row[0]), int(row[1])


async def allocate_many(conn: Connection, counts: dict[int, int]) -> dict[int, tuple[int, int]]:
    """`allocate` for several mailboxes in one statement: mailbox id -> (first uid, modseq) for
    `counts[id]` new UIDs each. The caller holds the mailboxes' row locks already (lock_mailboxes),
    so the order in which this UPDATE visits the rows cannot deadlock."""
    if not counts:
        return {}
    cursor = await conn.execute(
        b"UPDATE mailboxes m SET uidnext = m.uidnext + c.n, highestmodseq = m.highestmodseq + 1"
        b" FROM unnest(%s::bigint[], %s::bigint[]) AS c(id, n) WHERE m.id = c.id"
        b" RETURNING m.id, m.uidnext - c.n, m.highestmodseq",
        (list(counts), list(counts.values())),
    )
    allocated = {int(row[0]): (int(row[1]), int(row[2])) for row in await cursor.fetchall()}
    missing = [mailbox_id for mailbox_id in counts if mailbox_id not in allocated]
    if missing:
        raise NotFound(f"mailbox {missing[0]}")
    return allocated


async def bump_modseq(conn: Connection, mailbox_id: int) -> int:
    cursor = await conn.execute(
        b"UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = %s RETURNING highestmodseq",
        (mailbox_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"mailbox {mailbox_id}")
    return int(row[0])


async def charge(conn: Connection, account_id: int, size: int, *, check_quota: bool = True) -> None:
    """Add `size` to the account's usage; QuotaExceeded (the caller's transaction rolls back) when
    that takes it over its limit: RFC 9208 §5.1, refuse what would exceed the STORAGE limit."""
    cursor = await conn.execute(
        b"UPDATE accounts SET used_bytes = used_bytes + %s WHERE id = %s RETURNING quota_bytes, used_bytes",
        (size, account_id),
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"account {account_id}")
    quota, used = row
    if check_quota and quota is not None and used > quota:
        raise QuotaExceeded(f"quota of {quota} bytes exceeded")


async def delete_unreferenced_blobs(conn: Connection, blob_ids: Iterable[str]) -> None:
    """Delete those of `blob_ids` that no message or queue entry refers to any more (their chunks go
    with them, ON DELETE CASCADE), in the transaction that removed the last reference: a blob is never
    left behind by a crash, so `open()` has nothing to collect.

    A concurrent COPY of one of these blobs' messages holds the source mailbox's lock, which the caller
    holds too, so it cannot add a reference between this check and the commit."""
    wanted = sorted(set(blob_ids))
    if not wanted:
        return
    await conn.execute(
        b"DELETE FROM blobs b WHERE b.id = ANY(%s)"
        b" AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)"
        b" AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob_id = b.id)",
        (wanted,),
    )


def message_row(
    mailbox_id: int,
    uid: int,
    modseq: int,
    flags: frozenset[str],
    internal_date: datetime,
    size: int,
    blob_id: str,
    info_json: str,
    ends_crlf: bool | None,
) -> tuple[Any, ...]:
    """The values of one `messages` row, in MESSAGE_INSERT_COLUMNS order."""
    moment, zone_minutes = split_date(internal_date)
    return (
        mailbox_id,
        uid,
        modseq,
        flags_text(flags),
        "\\Seen" in flags,
        "\\Deleted" in flags,
        moment,
        zone_minutes,
        size,
        blob_id,
        info_json,
        ends_crlf,
    )


def split_date(moment: datetime) -> tuple[datetime, int]:
    """An INTERNALDATE as (the instant, its zone in minutes east of UTC): `timestamptz` keeps only the
    instant, and RFC 9051 §2.3.3 INTERNALDATE is shown in the zone it was given in."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    return moment, minutes


def joined_date(moment: datetime, zone_minutes: int) -> datetime:
    if not zone_minutes:
        return moment.astimezone(UTC)
    return moment.astimezone(timezone(timedelta(minutes=zone_minutes)))
