"""The embedded store: directory, mailboxes, messages, group commit, crash recovery, queue."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from old_schema import account_database_at
from staging import staged
from surat.store import schema
from surat.store.base import (
    Account,
    AlreadyExists,
    Change,
    ChangeKind,
    Credentials,
    Delivery,
    FlagMode,
    InvalidName,
    MailboxTarget,
    NotFound,
    OutboundMessage,
    OutboundRecipient,
    QuotaExceeded,
    RecipientState,
    ScramCredentials,
)
from surat.store.blobs import new_blob_id
from surat.store.messageinfo import compute_message_info
from surat.store.sqlite import SQLiteStore

CREDS = Credentials(
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", ScramCredentials(b"salt", 4096, b"s" * 32, b"k" * 32)
)
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


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


@pytest.fixture
async def alice(store: SQLiteStore) -> Account:
    await store.add_domain("example.test")
    return await store.add_account("Alice@Example.TEST", CREDS)


async def deliver(store: SQLiteStore, account: Account, data: bytes, mailbox: str = "INBOX") -> int:
    result = await store.deliver(
        Delivery(
            await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(account.id, mailbox),)
        )
    )
    assert result.queue_id is None
    ((account_id, _mailbox_id, uid),) = result.local
    assert account_id == account.id
    return uid


async def inbox_id(store: SQLiteStore, account: Account) -> int:
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box.id


def blob_files(store: SQLiteStore) -> list[Path]:
    return [p for p in store.blob_dir.rglob("*") if p.is_file()]


# ----------------------------------------------------------------------------------------- directory


# ----------------------------------------------------------------------------------------- mailboxes


async def test_rename_moves_children_and_keeps_uidvalidity(store: SQLiteStore, alice: Account) -> None:
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


async def test_rename_inbox_moves_messages_and_leaves_it_empty(store: SQLiteStore, alice: Account) -> None:
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


# ----------------------------------------------------------------------------------------- messages


async def test_deliver_computes_info_and_stores_the_file(store: SQLiteStore, alice: Account) -> None:
    data = message(1)
    uid = await deliver(store, alice, data)
    box = await inbox_id(store, alice)
    (record,) = await store.get_messages(box, [uid, 999])
    assert record.uid == uid and record.size == len(data) and record.internal_date == WHEN
    assert record.info.subject == "message 1" and record.info.envelope.message_id == "<1@example.org>"
    assert (await store.blobs.read(record.blob_id)) == data
    assert list(store.spool_dir.iterdir()) == []
    status = await store.mailbox_status(box)
    assert (status.messages, status.unseen, status.size, status.deleted) == (1, 1, len(data), 0)
    assert status.mailbox.uidnext == uid + 1
    assert await store.account_usage(alice.id) == len(data)


async def test_deliver_uses_given_info(store: SQLiteStore, alice: Account) -> None:
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


async def test_append_flags_and_internal_date(store: SQLiteStore, alice: Account) -> None:
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
    assert list(store.spool_dir.iterdir()) == []


async def test_uids_and_modseqs_are_monotonic_and_flags_follow_modes(
    store: SQLiteStore, alice: Account
) -> None:
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


async def test_copy_move_and_blob_lifetime(store: SQLiteStore, alice: Account) -> None:
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
    assert len(blob_files(store)) == 2  # copies share the file
    assert await store.account_usage(alice.id) == 2 * (len(data) + len(message(2)))
    moved = await store.move(archive.id, [1], trash.id)
    assert moved.pairs == [(1, 1)]
    assert [m.uid for m in await store.list_messages(archive.id)] == [2]
    assert (await store.changes_since(archive.id, 0)).vanished == [1]
    await store.expunge(box, [1])
    assert len(blob_files(store)) == 2  # still referenced from Trash
    await store.expunge(trash.id, [1])
    assert len(blob_files(store)) == 1
    await store.delete_mailbox(alice.id, "Archive")
    await store.expunge(box, [2])
    assert blob_files(store) == []
    assert await store.account_usage(alice.id) == 0


async def test_quota(store: SQLiteStore, alice: Account) -> None:
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
    assert list(store.spool_dir.iterdir()) == [] and len(blob_files(store)) == 2
    # A move within the account does not change usage.
    assert (await store.move(box, [1], sent.id)).pairs == [(1, 1)]
    await store.set_quota("alice@example.test", None)
    await deliver(store, alice, data)
    with pytest.raises(NotFound):
        await store.set_quota("nobody@example.test", 1)


async def test_unknown_target_mailbox_falls_back_to_inbox(store: SQLiteStore, alice: Account) -> None:
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


# ----------------------------------------------------------------------------------------- group commit


async def test_concurrent_deliveries_share_commits(store: SQLiteStore, alice: Account) -> None:
    calls = 40
    before = store.commit_stats()
    sub = store.changes.subscribe(alice.id)
    uids = await asyncio.gather(*(deliver(store, alice, message(i)) for i in range(calls)))
    stats = store.commit_stats()
    assert sorted(uids) == list(range(1, calls + 1))
    assert stats.items - before.items == calls
    assert stats.batches - before.batches < calls  # fewer commits than calls
    assert stats.largest > 1
    published = [c for c in sub.pending() if c.kind is ChangeKind.MESSAGES_ADDED]
    assert sorted(uid for c in published for uid in c.uids) == list(range(1, calls + 1))
    # The feed tells the commits in order: MODSEQs never go down.
    assert [c.modseq for c in published] == sorted(c.modseq for c in published)
    assert len(blob_files(store)) == calls


async def test_a_failing_delivery_does_not_sink_its_batch(store: SQLiteStore, alice: Account) -> None:
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
    assert list(store.spool_dir.iterdir()) == []


async def test_changes_are_published(store: SQLiteStore, alice: Account) -> None:
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


# ----------------------------------------------------------------------------------------- queue


async def queue_one(store: SQLiteStore, local: tuple[MailboxTarget, ...] = ()) -> str:
    data = message(7)
    remote = OutboundMessage(
        sender="alice@example.test",
        recipients=(
            OutboundRecipient(
                "bob@example.net", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;bob@example.net"
            ),
            OutboundRecipient("carol@example.org"),
        ),
        envid="env-1",
        ret="HDRS",
        smtputf8=True,
        eight_bit=True,
        authenticated_user="alice@example.test",
        body_offset=35,
    )
    result = await store.deliver(
        Delivery(await staged(store.blobs, data), len(data), WHEN, local=local, remote=remote)
    )
    assert result.queue_id is not None
    return result.queue_id


async def test_queue(store: SQLiteStore, alice: Account) -> None:
    sub = store.changes.subscribe(0)
    queue_id = await queue_one(store)
    assert sub.pending() == [Change(ChangeKind.QUEUE_CHANGED, 0)]
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    assert entry.sender == "alice@example.test" and entry.size == len(message(7))
    assert [(r.address, r.state, r.notify, r.orcpt) for r in entry.recipients] == [
        ("bob@example.net", RecipientState.PENDING, ("SUCCESS", "FAILURE"), "rfc822;bob@example.net"),
        ("carol@example.org", RecipientState.PENDING, (), None),
    ]
    assert (entry.envid, entry.ret, entry.smtputf8, entry.eight_bit) == ("env-1", "HDRS", True, True)
    assert entry.authenticated_user == "alice@example.test" and entry.body_offset == 35
    assert (await store.blobs.read(entry.blob_id)) == message(7)
    now = datetime.now(UTC)
    assert [e.id for e in await store.due_queue_entries(now + timedelta(seconds=1), 10)] == [queue_id]
    later = now + timedelta(hours=1)
    await store.reschedule(queue_id, later)
    assert await store.due_queue_entries(now + timedelta(seconds=1), 10) == []
    rescheduled = await store.get_queue_entry(queue_id)
    assert rescheduled is not None and abs(rescheduled.next_attempt_at - later) < timedelta(milliseconds=1)
    second = await queue_one(store, local=(MailboxTarget(alice.id),))
    assert [e.id for e in await store.list_queue()] == [queue_id, second]
    assert await store.flush_queue(now) == 2
    assert len(await store.due_queue_entries(now, 10)) == 2
    assert len(await store.due_queue_entries(now, 1)) == 1
    await store.drop_queue_entry(queue_id)
    assert await store.get_queue_entry(queue_id) is None
    with pytest.raises(NotFound):
        await store.drop_queue_entry(queue_id)
    with pytest.raises(NotFound):
        await store.reschedule(queue_id, now)
    assert len(blob_files(store)) == 1
    # The second entry's file is shared with the local copy: dropping the entry keeps it.
    await store.drop_queue_entry(second)
    assert len(blob_files(store)) == 1
    await store.expunge(await inbox_id(store, alice), [1])
    assert blob_files(store) == []


# ----------------------------------------------------------------------------------------- recovery


async def test_reopen_removes_orphans_and_keeps_messages(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", CREDS)
    await deliver(store, alice, message(1))
    await store.close()
    # What a crash between the file move and the commit leaves: a blob without a row, a spool file.
    orphan_id = new_blob_id()
    orphan = data_dir / "blobs" / orphan_id[10:12] / orphan_id
    orphan.write_bytes(b"half")
    stale = data_dir / "tmp" / "spool-123"
    stale.write_bytes(b"partial")
    reopened = SQLiteStore(data_dir)
    await reopened.open()
    try:
        assert not orphan.exists() and not stale.exists()
        box = await inbox_id(reopened, alice)
        (record,) = await reopened.get_messages(box, [1])
        assert (await reopened.blobs.read(record.blob_id)) == message(1)
        assert await deliver(reopened, alice, message(2)) == 2
    finally:
        await reopened.close()


async def test_open_without_recovery_leaves_another_process_deliveries_alone(tmp_path: Path) -> None:
    # A worker of `workers = N` (or an admin command) opening the store beside a process that is
    # delivering: that process's staged file and its blob not yet committed are not leftovers.
    data_dir = tmp_path / "data"
    delivering = SQLiteStore(data_dir)
    await delivering.open()
    try:
        await delivering.add_domain("example.test")
        alice = await delivering.add_account("alice@example.test", CREDS)
        staging = await staged(delivering.blobs, message(1))
        uncommitted_id = new_blob_id()
        uncommitted = data_dir / "blobs" / uncommitted_id[10:12] / uncommitted_id
        uncommitted.write_bytes(b"moved, its row not committed yet")
        beside = SQLiteStore(data_dir)
        await beside.open(recover=False)
        await beside.close()
        assert uncommitted.exists() and len(list(delivering.spool_dir.iterdir())) == 1
        result = await delivering.deliver(
            Delivery(staging, len(message(1)), WHEN, local=(MailboxTarget(alice.id, "INBOX"),))
        )
        (record,) = await delivering.get_messages(result.local[0][1], [1])
        assert await delivering.blobs.read(record.blob_id) == message(1)
    finally:
        await delivering.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from surat.store.base import Credentials, Delivery, MailboxTarget
    from surat.store.sqlite import SQLiteStore

    async def main(data_dir):
        store = SQLiteStore(Path(data_dir))
        await store.open()
        await store.add_domain("example.test")
        account = await store.add_account("alice@example.test", Credentials("x"))
        n = 0
        async def one(i):
            data = b"Subject: %d\\r\\n\\r\\n" % i + b"x" * 2000
            staged = store.blobs.stage()
            await staged.write(data)
            result = await store.deliver(Delivery(staged, len(data), datetime.now(UTC), local=(MailboxTarget(account.id),)))
            print(result.local[0][2], flush=True)
        while True:
            await asyncio.gather(*(one(n + k) for k in range(8)))
            n += 8

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_open_after_sigkill_keeps_every_acknowledged_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged: list[int] = []
    loop = asyncio.get_running_loop()
    while len(acknowledged) < 60:
        line = await loop.run_in_executor(None, proc.stdout.readline)
        assert line, "child died"
        acknowledged.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        account = await store.get_account("alice@example.test")
        assert account is not None
        box = await inbox_id(store, account)
        present = {m.uid for m in await store.list_messages(box)}
        assert set(acknowledged) <= present
        records = await store.get_messages(box, sorted(present))
        referenced = {r.blob_id for r in records}
        on_disk = {p.name for p in blob_files(store)}
        assert on_disk == referenced  # no orphan file, no row without its file
        for record in records:
            assert (await store.blobs.read(record.blob_id)).startswith(b"Subject: ")
    finally:
        await store.close()


def test_migration_4_moves_subscriptions_to_their_own_table(tmp_path: Path) -> None:
    conn = account_database_at(tmp_path / "old.db", 3)
    try:
        for name, subscribed in (("INBOX", 1), ("Old", 0)):
            conn.execute(
                "INSERT INTO mailboxes (account_id, name, uidvalidity, subscribed) VALUES (1, ?, 1, ?)",
                (name, subscribed),
            )
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
        assert conn.execute("SELECT account_id, name FROM subscriptions").fetchall() == [(1, "INBOX")]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(mailboxes)")]
        assert "subscribed" not in columns
    finally:
        conn.close()
