"""The queue in the SQLite store beyond the contract (tests/store_contract/test_queue.py): old schemas."""

from __future__ import annotations

from pathlib import Path

from old_schema import queue_database_at
from surat.store.sqlite import INDEX_FILE, SQLiteStore


async def test_entries_queued_before_schema_6_read_as_unsigned(tmp_path: Path) -> None:
    """An existing data directory keeps working: migration 6 adds the column, old entries have NULL."""
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    queue_database_at(data_dir / INDEX_FILE, 5).close()
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        entry = await store.get_queue_entry("q1")
        assert entry is not None and entry.dkim_signature is None
    finally:
        await store.close()
