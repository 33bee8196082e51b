"""IMAP flag changes commit without waiting for the WAL sync (store/sqlite.py module docstring): they
survive a crash of the process at once and power loss within FLAG_SYNC_DELAY, or at the next full
commit, whichever comes first. Mail itself keeps its sync before the answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store_contract.test_messages import deliver, inbox_id, message
from surat.store import sqlite
from surat.store.base import Account, FlagMode
from surat.store.sqlite import SQLiteStore

SRC = Path(sqlite.__file__).parents[2]


@pytest.fixture
def wal_syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The store's own fsyncs of the WAL file, in order."""
    synced: list[Path] = []
    real = sqlite._fsync_path

    def record(path: Path, directory: bool = False) -> None:
        if path.name.endswith("-wal"):
            synced.append(path)
        real(path, directory)

    monkeypatch.setattr(sqlite, "_fsync_path", record)
    return synced


async def wait_for_writer(store: SQLiteStore) -> None:
    """Until the event loop has run what the writer handed it (the timer is set from there)."""
    await store.get_mailbox(0, "INBOX")  # any read: one loop turn and back


async def test_a_flag_change_is_synced_within_the_delay(
    store: SQLiteStore, alice: Account, wal_syncs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "FLAG_SYNC_DELAY", 0.05)
    box = await inbox_id(store, alice)
    uid = await deliver(store, alice, message(1))
    await store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Flagged"}))
    assert wal_syncs == []  # answered before the sync
    await wait_for_writer(store)
    for _ in range(100):
        if wal_syncs:
            break
        await asyncio.sleep(0.01)
    assert [path.name for path in wal_syncs] == ["index.sqlite3-wal"]
    # Nothing left unsynced: no second sync follows.
    await asyncio.sleep(0.15)
    assert len(wal_syncs) == 1


async def test_a_full_commit_syncs_the_flag_change_with_it(
    store: SQLiteStore, alice: Account, wal_syncs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "FLAG_SYNC_DELAY", 0.05)
    box = await inbox_id(store, alice)
    uid = await deliver(store, alice, message(1))
    await store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Seen"}))
    # The deferred commit's setting was put back: mail commits with synchronous=FULL (2), which
    # syncs the WAL up to here, so no separate sync follows.
    assert store._conn is not None and store._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    await deliver(store, alice, message(2))
    await asyncio.sleep(0.2)
    assert wal_syncs == []


async def test_close_syncs_what_is_left(store: SQLiteStore, alice: Account, wal_syncs: list[Path]) -> None:
    box = await inbox_id(store, alice)
    uid = await deliver(store, alice, message(1))
    await store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Answered"}))
    await store.close()
    assert [path.name for path in wal_syncs] == ["index.sqlite3-wal"]


def test_a_flag_change_survives_the_process_dying_at_once(tmp_path: Path) -> None:
    # The process stores a flag and dies at once, without closing the store or its WAL sync (the
    # delay is an hour): the committed change is in the WAL, which the kernel holds.
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        sys.path[:0] = [sys.argv[2], sys.argv[3]]
        from surat.store import sqlite
        from surat.store.base import FlagMode
        from unit.conftest import UNUSED_CREDENTIALS
        from store_contract.test_messages import deliver, inbox_id, message

        sqlite.FLAG_SYNC_DELAY = 3600.0

        async def main():
            store = sqlite.SQLiteStore(sys.argv[1])
            await store.open()
            await store.add_domain("example.test")
            alice = await store.add_account("alice@example.test", UNUSED_CREDENTIALS)
            uid = await deliver(store, alice, message(1))
            await store.store_flags(await inbox_id(store, alice), [uid], FlagMode.ADD, frozenset({"\\\\Flagged"}))
            os._exit(0)

        asyncio.run(main())
        """
    )
    tests = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "data"), str(SRC), str(tests)], check=True)

    async def reopen() -> frozenset[str]:
        store = SQLiteStore(tmp_path / "data")
        await store.open()
        try:
            account = await store.get_account("alice@example.test")
            assert account is not None
            (summary,) = await store.list_messages(await inbox_id(store, account))
            return summary.flags
        finally:
            await store.close()

    assert "\\Flagged" in asyncio.run(reopen())
