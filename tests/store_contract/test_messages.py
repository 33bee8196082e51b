"""The store contract for messages: deliver, append, listings, flags, expunge, copy, move, QRESYNC
changes, \\Recent claims, quotas, the change feed and blob lifetimes, on every backend
(tests/store_contract/conftest.py), through the Store and BlobStore Protocols."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from staging import staged
from surat.message.info import compute_message_info
from surat.store.base import (
    Account,
    AlreadyExists,
    ChangeKind,
    Delivery,
    FlagMode,
    InvalidName,
    MailboxTarget,
    NotFound,
    QuotaExceeded,
    Store,
)

from .conftest import StoreFactory, staged_leftovers, stored_blob_count

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
TERMINATED = b"Subject: a\r\n\r\nbody\r\n"
UNTERMINATED = b"Subject: b\r\n\r\nlast line without CRLF"
BARE_LF = b"Subject: c\r\n\r\nends with a bare LF\n"


def message(n: int = 0, extra: bytes = b"") -> bytes:
    return (
        b"Return-Path: <sender@example.org>\r\n"
        b"From: Sender <sender@example.org>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: message " + str(n).encode() + b"\r\n"
        b"Message-ID: <" + str(n).encode() + b"@example.org>\r\n"
        b"\r\n"
        b"Hello " + str(n).encode() + b"\r\n" + extra
    )


async def deliver(store: Store, account: Account, data: bytes, mailbox: str = "INBOX") -> int:
    """`data` delivered through a staged blob into `mailbox`; its UID."""
    result = await store.deliver(
        Delivery(
            await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(account.id, mailbox),)
        )
    )
    assert result.queue_id is None
    ((account_id, _mailbox_id, uid),) = result.local
    assert account_id == account.id
    return uid


async def deliver_file(store: Store, account: Account, data: bytes) -> int:
    return await deliver(store, account, data)


async def deliver_memory(store: Store, account: Account, data: bytes) -> int:
    """`data` delivered in memory (Delivery.content, SMTP's small messages)."""
    delivery = Delivery(None, len(data), WHEN, local=(MailboxTarget(account.id),), content=data)
    return (await store.deliver(delivery)).local[0][2]


async def inbox_id(store: Store, account: Account) -> int:
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box.id


async def test_rename_moves_children_and_keeps_uidvalidity(store: Store, alice: Account) -> None:
    parent = await store.create_mailbox(alice.id, "Work")
    await store.create_mailbox(alice.id, "Work/Old")
    await store.create_mailbox(alice.id, "Workshop")
    uid = await deliver(store, alice, message(1), "Work")
    await store.rename_mailbox(alice.id, "Work", "Job")
    names = {b.name for b in await store.list_mailboxes(alice.id)}
    assert {"Job", "Job/Old", "Workshop"} <= names and "Work" not in names and "Work/Old" not in names
    job = await store.get_mailbox(alice.id, "Job")
    assert job is not None and job.id == parent.id and job.uidvalidity == parent.uidvalidity
    assert [m.uid for m in await store.list_messages(job.id)] == [uid]
    with pytest.raises(AlreadyExists):
        await store.rename_mailbox(alice.id, "Job", "Workshop")
    with pytest.raises(InvalidName):
        await store.rename_mailbox(alice.id, "Job", "Job/Inside")
    with pytest.raises(NotFound):
        await store.rename_mailbox(alice.id, "Work", "Elsewhere")


async def test_rename_inbox_moves_messages_and_leaves_it_empty(store: Store, alice: Account) -> None:
    first = await deliver(store, alice, message(1))
    second = await deliver(store, alice, message(2))
    before = await store.get_mailbox(alice.id, "INBOX")
    assert before is not None
    await store.rename_mailbox(alice.id, "INBOX", "Old Inbox")
    inbox = await store.get_mailbox(alice.id, "INBOX")
    moved = await store.get_mailbox(alice.id, "Old Inbox")
    assert inbox is not None and moved is not None
    assert inbox.id == before.id and inbox.uidvalidity == before.uidvalidity
    assert await store.list_messages(inbox.id) == []
    assert [m.uid for m in await store.list_messages(moved.id)] == [1, 2]
    changes = await store.changes_since(inbox.id, before.highestmodseq)
    assert changes.vanished == [first, second]
    # UIDs are never reused in INBOX.
    assert await deliver(store, alice, message(3)) == 3


async def test_deliver_computes_info_and_stores_the_file(store: Store, alice: Account) -> None:
    data = message(1)
    uid = await deliver(store, alice, data)
    box = await inbox_id(store, alice)
    (record,) = await store.get_messages(box, [uid, 999])
    assert record.uid == uid and record.size == len(data) and record.internal_date == WHEN
    assert record.info.subject == "message 1" and record.info.envelope.message_id == "<1@example.org>"
    assert (await store.blobs.read(record.blob_id)) == data
    assert staged_leftovers(store) == []
    status = await store.mailbox_status(box)
    assert (status.messages, status.unseen, status.size, status.deleted) == (1, 1, len(data), 0)
    assert status.mailbox.uidnext == uid + 1
    assert await store.account_usage(alice.id) == len(data)


async def test_deliver_uses_given_info(store: Store, alice: Account) -> None:
    other = message(42)
    info = compute_message_info(io.BytesIO(other))
    data = message(1)
    result = await store.deliver(
        Delivery(
            await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(alice.id),), info=info
        )
    )
    ((_, box, uid),) = result.local
    (record,) = await store.get_messages(box, [uid])
    assert record.info == info


async def test_append_flags_and_internal_date(store: Store, alice: Account) -> None:
    sent = await store.get_mailbox(alice.id, "Sent")
    assert sent is not None
    data = message(5)
    when = datetime(2023, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    uidvalidity, uid = await store.append(
        alice.id, sent.id, await staged(store.blobs, data), frozenset({"\\SEEN", "\\Recent", "$Label"}), when
    )
    assert (uidvalidity, uid) == (sent.uidvalidity, 1)
    (summary,) = await store.list_messages(sent.id)
    assert summary.flags == frozenset({"\\Seen", "$Label"})
    assert summary.internal_date == when and summary.internal_date.utcoffset() == timedelta(hours=2)
    with pytest.raises(NotFound):
        await store.append(alice.id, 99999, await staged(store.blobs, data), frozenset(), when)
    assert staged_leftovers(store) == []


async def test_uids_and_modseqs_are_monotonic_and_flags_follow_modes(store: Store, alice: Account) -> None:
    uids = [await deliver(store, alice, message(i)) for i in range(4)]
    assert uids == [1, 2, 3, 4]
    box = await inbox_id(store, alice)
    start = (await store.mailbox_status(box)).mailbox.highestmodseq
    r = await store.store_flags(box, [1, 2], FlagMode.ADD, frozenset({"\\Seen", "\\flagged"}))
    assert [(u.uid, u.flags) for u in r.updated] == [
        (1, frozenset({"\\Seen", "\\Flagged"})),
        (2, frozenset({"\\Seen", "\\Flagged"})),
    ]
    modseq1 = r.updated[0].modseq
    assert modseq1 > start
    r = await store.store_flags(box, [1], FlagMode.REMOVE, frozenset({"\\Flagged"}))
    assert r.updated[0].flags == frozenset({"\\Seen"}) and r.updated[0].modseq > modseq1
    r = await store.store_flags(box, [2, 3, 77], FlagMode.SET, frozenset({"\\Deleted"}))
    assert [u.uid for u in r.updated] == [2, 3]
    # No change, no new MODSEQ.
    same = await store.store_flags(box, [3], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert same.updated[0].modseq == r.updated[1].modseq
    # RFC 7162 UNCHANGEDSINCE: message 1 changed after modseq1, so it is reported, not touched.
    r = await store.store_flags(box, [1, 4], FlagMode.ADD, frozenset({"x"}), unchanged_since=modseq1)
    assert r.modified == [1] and [u.uid for u in r.updated] == [4]
    status = await store.mailbox_status(box)
    assert (status.unseen, status.deleted) == (3, 2)  # 2, 3 and 4 lack \Seen
    # IMAP EXPUNGE: of the messages named, only those flagged \Deleted at the time (1 and 4 are not).
    assert await store.expunge(box, [1, 2, 3, 4, 50], only_deleted=True) == [2, 3]
    assert await deliver(store, alice, message(9)) == 5  # expunged UIDs are never reused
    changes = await store.changes_since(box, modseq1)
    assert changes.vanished == [2, 3]
    assert [m.uid for m in changes.changed] == [1, 4, 5]
    assert changes.highestmodseq == (await store.mailbox_status(box)).mailbox.highestmodseq
    all_changes = await store.changes_since(box, 0)
    assert [m.uid for m in all_changes.changed] == [1, 4, 5]
    modseqs = [m.modseq for m in await store.list_messages(box)]
    assert max(modseqs) == changes.highestmodseq


async def test_copy_move_and_blob_lifetime(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    archive = await store.get_mailbox(alice.id, "Archive")
    trash = await store.get_mailbox(alice.id, "Trash")
    assert archive is not None and trash is not None
    data = message(1)
    await deliver(store, alice, data)
    await deliver(store, alice, message(2))
    await store.store_flags(box, [1], FlagMode.ADD, frozenset({"\\Seen"}))
    copied = await store.copy(box, [1, 2, 3], archive.id)
    assert copied.uidvalidity == archive.uidvalidity and copied.pairs == [(1, 1), (2, 2)]
    (copy1,) = await store.get_messages(archive.id, [1])
    assert copy1.flags == frozenset({"\\Seen"})
    assert await stored_blob_count(store) == 2  # copies share the file
    assert await store.account_usage(alice.id) == 2 * (len(data) + len(message(2)))
    moved = await store.move(archive.id, [1], trash.id)
    assert moved.pairs == [(1, 1)]
    assert [m.uid for m in await store.list_messages(archive.id)] == [2]
    assert (await store.changes_since(archive.id, 0)).vanished == [1]
    await store.expunge(box, [1])
    assert await stored_blob_count(store) == 2  # still referenced from Trash
    await store.expunge(trash.id, [1])
    assert await stored_blob_count(store) == 1
    await store.delete_mailbox(alice.id, "Archive")
    await store.expunge(box, [2])
    assert await stored_blob_count(store) == 0
    assert await store.account_usage(alice.id) == 0


async def test_quota(store: Store, alice: Account) -> None:
    data = message(1)
    await store.set_quota("alice@example.test", len(data) * 2)
    await deliver(store, alice, data)
    await deliver(store, alice, data)
    with pytest.raises(QuotaExceeded):
        await deliver(store, alice, data)
    sent = await store.get_mailbox(alice.id, "Sent")
    assert sent is not None
    with pytest.raises(QuotaExceeded):
        await store.append(alice.id, sent.id, await staged(store.blobs, data), frozenset(), WHEN)
    box = await inbox_id(store, alice)
    with pytest.raises(QuotaExceeded):
        await store.copy(box, [1], sent.id)
    assert len(await store.list_messages(box)) == 2
    assert staged_leftovers(store) == [] and await stored_blob_count(store) == 2
    # A move within the account does not change usage.
    assert (await store.move(box, [1], sent.id)).pairs == [(1, 1)]
    await store.set_quota("alice@example.test", None)
    await deliver(store, alice, data)
    with pytest.raises(NotFound):
        await store.set_quota("nobody@example.test", 1)


async def test_unknown_target_mailbox_falls_back_to_inbox(store: Store, alice: Account) -> None:
    data = message(1)
    result = await store.deliver(
        Delivery(
            await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(alice.id, "No/Such"),)
        )
    )
    assert result.local == [(alice.id, await inbox_id(store, alice), 1)]
    with pytest.raises(NotFound):
        await store.deliver(
            Delivery(await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(9999),))
        )


async def test_a_failing_delivery_does_not_sink_its_batch(store: Store, alice: Account) -> None:
    data = message(1)
    good = [
        store.deliver(
            Delivery(await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(alice.id),))
        )
        for _ in range(5)
    ]
    bad = store.deliver(
        Delivery(await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(424242),))
    )
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:5])
    assert isinstance(results[5], NotFound)
    assert len(await store.list_messages(await inbox_id(store, alice))) == 5
    assert staged_leftovers(store) == []


async def test_changes_are_published(store: Store, alice: Account) -> None:
    sub = store.changes.subscribe(alice.id)
    queue_sub = store.changes.subscribe(0)
    box = await inbox_id(store, alice)
    uid = await deliver(store, alice, message(1))
    await store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Seen"}))
    await store.expunge(box, [uid])
    created = await store.create_mailbox(alice.id, "New")
    await store.rename_mailbox(alice.id, "New", "Newer")
    await store.delete_mailbox(alice.id, "Newer")
    kinds = [(c.kind, c.mailbox_id, c.uids) for c in sub.pending()]
    assert kinds == [
        (ChangeKind.MESSAGES_ADDED, box, (uid,)),
        (ChangeKind.FLAGS_CHANGED, box, (uid,)),
        (ChangeKind.MESSAGES_EXPUNGED, box, (uid,)),
        (ChangeKind.MAILBOX_CREATED, created.id, ()),
        (ChangeKind.MAILBOX_RENAMED, created.id, ()),
        (ChangeKind.MAILBOX_DELETED, created.id, ()),
    ]
    assert queue_sub.pending() == []


@pytest.mark.parametrize("via", [deliver_file, deliver_memory], ids=["spool-file", "in-memory"])
async def test_delivery_records_whether_the_last_line_ends_with_crlf(
    store: Store, alice: Account, via: Callable[[Store, Account, bytes], Awaitable[int]]
) -> None:
    messages = [TERMINATED, UNTERMINATED, BARE_LF, b"", b"x"]
    uids = [await via(store, alice, m) for m in messages]
    blobs = await store.list_message_blobs(await inbox_id(store, alice))
    assert [b.uid for b in blobs] == sorted(uids)
    assert [b.size for b in blobs] == [len(m) for m in messages]
    # An empty message has no unterminated line.
    assert [b.ends_with_crlf for b in blobs] == [True, False, False, True, False]
    records = await store.get_messages(await inbox_id(store, alice), uids)
    assert [b.blob_id for b in blobs] == [r.blob_id for r in records]
    for blob, message in zip(blobs, messages, strict=True):
        assert (await store.blobs.read(blob.blob_id)) == message


async def test_append_and_copy_keep_the_flag(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    _, first = await store.append(alice.id, box, await staged(store.blobs, UNTERMINATED), frozenset(), WHEN)
    _, second = await store.append(alice.id, box, await staged(store.blobs, TERMINATED), frozenset(), WHEN)
    archive = await store.get_mailbox(alice.id, "Archive")
    trash = await store.get_mailbox(alice.id, "Trash")
    assert archive is not None and trash is not None
    await store.copy(box, [first, second], archive.id)
    await store.move(archive.id, [1], trash.id)
    assert [b.ends_with_crlf for b in await store.list_message_blobs(box)] == [False, True]
    assert [b.ends_with_crlf for b in await store.list_message_blobs(archive.id)] == [True]


async def test_empty_mailbox(store: Store, alice: Account) -> None:
    assert await store.list_message_blobs(await inbox_id(store, alice)) == []


async def test_claim_takes_each_uid_once(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    assert await store.claim_recent(box, 0) == (1, 0)  # an empty mailbox: nothing to claim
    for n in range(3):
        await deliver(store, alice, message(n))
    assert (await store.mailbox_status(box)).recent == 3
    assert await store.claim_recent(box, 3) == (1, 3)
    assert (await store.mailbox_status(box)).recent == 0
    assert await store.claim_recent(box, 3) == (4, 3)  # claimed already: empty
    await deliver(store, alice, message(4))
    assert (await store.mailbox_status(box)).recent == 1
    # A session that only saw UIDs up to 3 claims nothing of UID 4.
    assert await store.claim_recent(box, 3) == (4, 3)
    assert await store.claim_recent(box, 4) == (4, 4)


async def test_peek_reports_without_claiming(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    for n in range(2):
        await deliver(store, alice, message(n))
    assert await store.claim_recent(box, 2, peek=True) == (1, 2)
    assert await store.claim_recent(box, 2, peek=True) == (1, 2)
    assert await store.claim_recent(box, 2) == (1, 2)
    assert await store.claim_recent(box, 2, peek=True) == (3, 2)


async def test_recent_is_per_mailbox(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    await deliver(store, alice, message(1))
    await deliver(store, alice, message(2), mailbox="Archive")
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    assert await store.claim_recent(box, 1) == (1, 1)
    assert (await store.mailbox_status(archive.id)).recent == 1
    # A copy gets a new UID in its mailbox, and so is recent there for the next claimant.
    await store.copy(box, [1], archive.id)
    assert (await store.mailbox_status(archive.id)).recent == 2
    assert await store.claim_recent(archive.id, 2) == (1, 2)


def _union_is_disjoint(ranges: list[tuple[int, int]], top: int) -> None:
    claimed: list[int] = []
    for first, last in ranges:
        claimed.extend(range(first, last + 1))
    assert len(claimed) == len(set(claimed)), ranges  # no UID claimed twice
    assert sorted(claimed) == list(range(1, top + 1))  # and none lost


async def test_concurrent_claims_never_share_a_uid(
    store: Store, alice: Account, open_store: StoreFactory
) -> None:
    box = await inbox_id(store, alice)
    other = await open_store()  # a second store on the same data: another process or node
    ranges: list[tuple[int, int]] = []
    top = 0
    for round_ in range(5):
        for n in range(3):
            top = await deliver(store, alice, message(round_ * 10 + n))
        claims = [s.claim_recent(box, top) for s in (store, other) for _ in range(4)]
        ranges += await asyncio.gather(*claims)
    _union_is_disjoint(ranges, top)
    assert sum(1 for first, last in ranges if last >= first) == 5  # one winner per round
