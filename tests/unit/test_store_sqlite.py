"""The embedded store: directory, mailboxes, messages, group commit, crash recovery, queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from old_schema import account_database_at
from staging import staged
from store_contract.test_messages import deliver, inbox_id, message
from surat.store import schema
from surat.store.base import (
    Account,
    ChangeKind,
    Credentials,
    Delivery,
    MailboxTarget,
    ScramCredentials,
)
from surat.store.blobs import new_blob_id
from surat.store.sqlite import SQLiteStore

CREDS = Credentials(
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", ScramCredentials(b"salt", 4096, b"s" * 32, b"k" * 32)
)
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture
async def alice(store: SQLiteStore) -> Account:
    await store.add_domain("example.test")
    return await store.add_account("Alice@Example.TEST", CREDS)


def blob_files(store: SQLiteStore) -> list[Path]:
    return [p for p in store.blob_dir.rglob("*") if p.is_file()]


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
