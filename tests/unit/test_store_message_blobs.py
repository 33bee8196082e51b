"""What a POP3 login reads from the store (`list_message_blobs`), the `ends_crlf` column behind it
(schema migration 2), and expunge's message-file cleanup (batched, optionally after returning)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from staging import staged
from surat.store.base import Account, Credentials, Delivery, MailboxTarget
from surat.store.schema import MIGRATIONS, migrate
from surat.store.sqlite import INDEX_FILE, SQLiteStore

CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
TERMINATED = b"Subject: a\r\n\r\nbody\r\n"
UNTERMINATED = b"Subject: b\r\n\r\nlast line without CRLF"
BARE_LF = b"Subject: c\r\n\r\nends with a bare LF\n"


async def inbox(store: SQLiteStore, account: Account) -> int:
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box.id


async def deliver_file(store: SQLiteStore, account: Account, data: bytes) -> int:
    delivery = Delivery(await staged(store.blobs, data), len(data), WHEN, local=(MailboxTarget(account.id),))
    return (await store.deliver(delivery)).local[0][2]


async def deliver_memory(store: SQLiteStore, account: Account, data: bytes) -> int:
    delivery = Delivery(None, len(data), WHEN, local=(MailboxTarget(account.id),), content=data)
    return (await store.deliver(delivery)).local[0][2]


def blob_files(store: SQLiteStore) -> list[Path]:
    return [p for p in store.blob_dir.rglob("*") if p.is_file()]


def column(store: SQLiteStore) -> list[int | None]:
    with sqlite3.connect(store.data_dir / INDEX_FILE) as conn:
        return [r[0] for r in conn.execute("SELECT ends_crlf FROM messages ORDER BY mailbox_id, uid")]


# ----------------------------------------------------------------------------------------- old rows


async def test_rows_from_before_the_column_are_computed_once_and_recorded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", CREDS)
    for m in (TERMINATED, UNTERMINATED, b""):
        await deliver_file(store, alice, m)
    box = await inbox(store, alice)
    await store.close()
    # What a database written before schema version 2 holds after the migration: NULL.
    with sqlite3.connect(data_dir / INDEX_FILE) as conn:
        conn.execute("UPDATE messages SET ends_crlf = NULL")
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        assert column(store) == [None, None, None]
        blobs = await store.list_message_blobs(box)
        assert [b.ends_with_crlf for b in blobs] == [True, False, True]
        assert column(store) == [1, 0, 1]
        # A message whose file is gone (expunged meanwhile) is not recorded.
        with sqlite3.connect(data_dir / INDEX_FILE) as conn:
            conn.execute("UPDATE messages SET ends_crlf = NULL WHERE uid = 2")
        path = store.blobs.path(blobs[1].blob_id)
        assert path is not None
        path.unlink()
        again = await store.list_message_blobs(box)
        assert [b.ends_with_crlf for b in again] == [True, True, True]
        assert column(store) == [1, None, 1]
    finally:
        await store.close()


def test_migration_2_adds_the_column_to_a_version_1_database(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "old.sqlite3", isolation_level=None) as conn:
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO domains (name) VALUES ('example.test')")
        conn.execute(
            "INSERT INTO accounts (id, address, domain, password_hash) VALUES (1, 'a@example.test', 'example.test', 'x')"
        )
        conn.execute("INSERT INTO mailboxes (id, account_id, name, uidvalidity) VALUES (1, 1, 'INBOX', 1)")
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, blob_id, info)"
            " VALUES (1, 1, 1, 0, 3, 'b', '{}')"
        )
        assert migrate(conn) == len(MIGRATIONS) >= 2
        assert conn.execute("SELECT uid, ends_crlf FROM messages").fetchall() == [(1, None)]


# ----------------------------------------------------------------------------------------- expunge


async def test_expunge_removes_unreferenced_files_in_batches(store: SQLiteStore, alice: Account) -> None:
    box = await inbox(store, alice)
    # Enough files for the parallel unlink path, and one still referenced from another mailbox.
    uids = [await deliver_memory(store, alice, TERMINATED + str(n).encode()) for n in range(40)]
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    await store.copy(box, uids[:1], archive.id)
    assert len(blob_files(store)) == 40
    assert await store.expunge(box, uids) == uids
    # Answered before the WAL sync (store/sqlite.py docstring): the files wait for it, so a power loss
    # that undid the expunge would find every message whole.
    assert len(blob_files(store)) == 40
    await store.add_domain("example.org")  # a full commit syncs the WAL; the files go
    assert len(blob_files(store)) == 1
    (kept,) = await store.list_message_blobs(archive.id)
    assert blob_files(store) == [store.blobs.path(kept.blob_id)]


async def test_expunge_with_files_in_background(store: SQLiteStore, alice: Account) -> None:
    box = await inbox(store, alice)
    uids = [await deliver_memory(store, alice, TERMINATED) for _ in range(20)]
    assert await store.expunge(box, uids[:15], files_in_background=True) == uids[:15]
    # Committed before it returned: another connection sees the rows gone at once.
    with sqlite3.connect(store.data_dir / INDEX_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (5,)
    # The writer removes the files before it runs its next job.
    await store.add_domain("example.org")
    assert len(blob_files(store)) == 5
