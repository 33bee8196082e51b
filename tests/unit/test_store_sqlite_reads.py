"""Reads the IMAP server makes after nearly every command: small ones on the event loop's connection,
large ones on a worker, the same answers either way; shared flag sets and decoded MessageInfo."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.message.info import compute_message_info
from surat.store.base import Account, Credentials, Delivery, FlagMode, MailboxTarget
from surat.store.sqlite import INLINE_READ_ROWS, SQLiteStore

CREDS = Credentials(password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")


def message(n: int) -> bytes:
    return (
        f"From: sender{n}@example.net\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@example.net>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "data", sync="none")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def fill(store: SQLiteStore, count: int) -> tuple[Account, int, list[int]]:
    await store.add_domain("example.test")
    account = await store.add_account("alice@example.test", CREDS)
    target = (MailboxTarget(account.id),)
    uids = []
    for n in range(count):
        raw = message(n)
        result = await store.deliver(Delivery(None, len(raw), datetime.now(UTC), local=target, content=raw))
        uids.append(result.local[0][2])
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    return account, mailbox.id, uids


@pytest.mark.parametrize("count", [3, INLINE_READ_ROWS + 5])
async def test_get_messages_small_and_large_reads_agree(store: SQLiteStore, count: int) -> None:
    _, mailbox_id, uids = await fill(store, count)
    wanted = [*uids[::-1], 10_000]  # any order, and a UID that does not exist
    records = await store.get_messages(mailbox_id, wanted)
    assert [r.uid for r in records] == uids
    for n, record in enumerate(records):
        assert record.info == compute_message_info(io.BytesIO(message(n)))
        assert record.flags == frozenset() and record.size == len(message(n))
    # Asked again: the same decoded MessageInfo objects (immutable, so shared).
    again = await store.get_messages(mailbox_id, uids[:2])
    assert again[0].info is records[0].info and again[1].info is records[1].info


async def test_flag_sets_are_shared_between_messages(store: SQLiteStore) -> None:
    _, mailbox_id, uids = await fill(store, 4)
    await store.store_flags(mailbox_id, uids[:3], FlagMode.ADD, frozenset({"\\Seen", "$Work"}))
    listing = await store.list_messages(mailbox_id)
    assert [m.flags for m in listing] == [frozenset({"\\Seen", "$Work"})] * 3 + [frozenset()]
    assert listing[0].flags is listing[1].flags is listing[2].flags
    assert [m.uid for m in listing] == uids
    assert all(m.internal_date.tzinfo is not None for m in listing)


@pytest.mark.parametrize("changed", [2, INLINE_READ_ROWS + 1])
async def test_changes_since_small_and_large(store: SQLiteStore, changed: int) -> None:
    account, mailbox_id, uids = await fill(store, INLINE_READ_ROWS + 10)
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    before = mailbox.highestmodseq
    await store.store_flags(mailbox_id, uids[:changed], FlagMode.ADD, frozenset({"\\Flagged"}))
    removed = await store.expunge(mailbox_id, [uids[-1]])
    changes = await store.changes_since(mailbox_id, before)
    assert [s.uid for s in changes.changed] == uids[:changed]
    assert all(s.flags == frozenset({"\\Flagged"}) for s in changes.changed)
    assert changes.vanished == removed == [uids[-1]]
    assert changes.highestmodseq > before
    assert (await store.changes_since(mailbox_id, changes.highestmodseq)).changed == []


async def test_changes_since_answer_is_reused_only_while_the_mailbox_is_unchanged(store: SQLiteStore) -> None:
    account, mailbox_id, uids = await fill(store, 3)
    await store.create_mailbox(account.id, "Work")
    work = await store.get_mailbox(account.id, "Work")
    assert work is not None
    start = work.highestmodseq
    first = await store.changes_since(work.id, start)
    # Ten sessions asking the same question between two changes get one answer, read once.
    assert await store.changes_since(work.id, start) is first
    moved = await store.copy(mailbox_id, uids[:1], work.id)
    after_copy = await store.changes_since(work.id, start)
    assert after_copy is not first and [s.uid for s in after_copy.changed] == [moved.pairs[0][1]]
    await store.store_flags(work.id, [moved.pairs[0][1]], FlagMode.ADD, frozenset({"\\Seen"}))
    after_store = await store.changes_since(work.id, start)
    assert after_store.changed[0].flags == frozenset({"\\Seen"})
    # A mailbox deleted and created again may get the same id and the same HIGHESTMODSEQ: its
    # UIDVALIDITY differs, so the old mailbox's answer is not handed out for it.
    await store.delete_mailbox(account.id, "Work")
    again = await store.create_mailbox(account.id, "Work")
    assert (again.id, again.highestmodseq) == (work.id, start) and again.uidvalidity != work.uidvalidity
    copied = await store.copy(mailbox_id, uids[1:], again.id)  # two messages, one MODSEQ
    await store.store_flags(again.id, [copied.pairs[0][1]], FlagMode.ADD, frozenset({"\\Seen"}))
    fresh = await store.changes_since(again.id, start)
    assert fresh.highestmodseq == after_store.highestmodseq
    assert [s.uid for s in fresh.changed] == [p[1] for p in copied.pairs]


@pytest.mark.parametrize("count", [INLINE_READ_ROWS, INLINE_READ_ROWS + 1])
async def test_mailbox_status_inline_and_on_a_worker(store: SQLiteStore, count: int) -> None:
    _, mailbox_id, uids = await fill(store, count)
    await store.store_flags(mailbox_id, uids[:3], FlagMode.ADD, frozenset({"\\Seen"}))
    await store.store_flags(mailbox_id, uids[-2:], FlagMode.ADD, frozenset({"\\Deleted"}))
    status = await store.mailbox_status(mailbox_id)
    assert (status.messages, status.unseen, status.deleted, status.recent) == (count, count - 3, 2, count)
    assert status.size == sum(len(message(n)) for n in range(count))
