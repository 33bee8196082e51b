"""The file blob backend: ids, layout, refusal of path tricks, scan; staging (write, take over,
abort), reads and streams at any offset across chunk boundaries, and recovery of staged leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.passwords import make_credentials
from surat.store import blobs as blobs_module
from surat.store.base import Account, Delivery, MailboxTarget, NotFound, StoreError
from surat.store.blobs import STREAM_CHUNK, FileBlobStore, new_blob_id
from surat.store.sqlite import SQLiteStore

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs", tmp_path / "tmp")


def test_ids_sort_by_time_and_share_a_directory_per_timestamp() -> None:
    first = new_blob_id()
    time.sleep(0.002)
    second = new_blob_id()
    assert len(first) == 26 and first < second
    same = {new_blob_id(1_700_000_000_123)[10:12] for _ in range(20)}
    assert len(same) == 1
    assert len({new_blob_id(1_700_000_000_123) for _ in range(20)}) == 20


async def test_stage_install_read_delete_scan(tmp_path: Path) -> None:
    blobs = make_store(tmp_path)
    blob_id = new_blob_id()
    (tmp_path / "blobs" / blob_id[10:12]).mkdir(parents=True)
    staged = blobs.stage()
    await staged.write(b"mess")
    await staged.write(b"age")
    assert staged.size == 7 and await staged.read(2) == b"ssage"
    target = blobs.install(staged.take(), blob_id)
    assert list((tmp_path / "tmp").iterdir()) == [] and target == blobs.path(blob_id)
    assert await blobs.read(blob_id) == b"message"
    (target.parent / "junk.part").write_bytes(b"")
    assert sorted(blob for blob, _ in blobs.scan()) == ["", blob_id]
    blobs.delete(blob_id)
    blobs.delete(blob_id)  # deleting twice is harmless
    with pytest.raises(NotFound):
        await blobs.open(blob_id)
    assert await blobs.read_many([(blob_id, 0)]) == [None]


async def test_abort_removes_the_staged_file_and_is_idempotent(tmp_path: Path) -> None:
    blobs = make_store(tmp_path)
    staged = blobs.stage()
    await staged.write(b"x" * 100)
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    staged.abort()
    staged.abort()
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(StoreError):
        await staged.write(b"more")
    with pytest.raises(StoreError):
        staged.take()  # an aborted blob cannot be handed to the store


async def test_abort_after_the_take_over_leaves_the_file_to_the_store(tmp_path: Path) -> None:
    blobs = make_store(tmp_path)
    staged = blobs.stage()
    await staged.write(b"kept")
    path = staged.take()
    staged.abort()  # a caller's `finally` after deliver/append: nothing to do any more
    assert path.read_bytes() == b"kept"
    with pytest.raises(StoreError):
        await staged.write(b"late")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "ABCDEF0123456789abcdef0123", "a" * 27, "x/y"])
async def test_ids_that_are_not_ours_are_refused(tmp_path: Path, bad: str) -> None:
    blobs = make_store(tmp_path)
    with pytest.raises(NotFound):
        await blobs.open(bad)
    with pytest.raises(NotFound):
        blobs.path(bad)


async def _blob(tmp_path: Path, data: bytes) -> tuple[FileBlobStore, str]:
    blobs = make_store(tmp_path)
    blob_id = new_blob_id()
    (tmp_path / "blobs" / blob_id[10:12]).mkdir(parents=True, exist_ok=True)
    staged = blobs.stage()
    await staged.write(data)
    blobs.install(staged.take(), blob_id)
    return blobs, blob_id


async def test_stream_and_read_at_offsets_across_chunk_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * ((3 * STREAM_CHUNK) // 256 + 7)  # three chunks and a bit
    blobs, blob_id = await _blob(tmp_path, data)
    reader = await blobs.open(blob_id)
    try:
        assert reader.size == len(data)
        offsets = [
            0,
            1,
            STREAM_CHUNK - 1,
            STREAM_CHUNK,
            STREAM_CHUNK + 1,
            2 * STREAM_CHUNK,
            len(data) - 1,
            len(data),
        ]
        for offset in offsets:
            for length in (None, 0, 1, STREAM_CHUNK - 1, STREAM_CHUNK, STREAM_CHUNK + 1, len(data)):
                chunks = [chunk async for chunk in reader.stream(offset, length)]
                expected = data[offset:] if length is None else data[offset : offset + length]
                assert b"".join(chunks) == expected, (offset, length)
                assert all(0 < len(chunk) <= STREAM_CHUNK for chunk in chunks)
                assert await reader.read(offset, len(expected)) == expected
    finally:
        reader.close()
    with pytest.raises(StoreError):
        await reader.read(0, 1)
    assert await blobs.read(blob_id, STREAM_CHUNK - 3, 10) == data[STREAM_CHUNK - 3 : STREAM_CHUNK + 7]
    assert await blobs.read(blob_id, len(data) - 5) == data[-5:]
    assert await blobs.read_many([(blob_id, 7), ("0" * 26, 0)]) == [data[7:], None]


async def test_large_reads_leave_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"z" * (blobs_module.INLINE_READ + 1)
    blobs, blob_id = await _blob(tmp_path, data)
    threads: list[object] = []
    real = asyncio.to_thread

    async def spy(func: Callable[..., bytes], /, *args: object) -> bytes:
        threads.append(func)
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    assert await blobs.read(blob_id, 0, blobs_module.INLINE_READ) == data[:-1]
    assert threads == []  # a bounded read runs inline
    assert await blobs.read(blob_id) == data
    assert len(threads) == 1


async def test_a_stream_of_a_damaged_blob_ends_early(tmp_path: Path) -> None:
    blobs, blob_id = await _blob(tmp_path, b"short")
    reader = await blobs.open(blob_id)
    try:
        assert [chunk async for chunk in reader.stream(0, 100)] == [b"short"]
    finally:
        reader.close()


@contextlib.asynccontextmanager
async def store_with_account(data_dir: Path) -> AsyncIterator[tuple[SQLiteStore, Account]]:
    store = SQLiteStore(data_dir, sync="none")
    await store.open()
    try:
        await store.add_domain("example.test")
        yield (
            store,
            await store.add_account("alice@example.test", make_credentials("pw", scram_iterations=4096)),
        )
    finally:
        await store.close()


async def test_open_removes_staged_leftovers_and_keeps_delivered_blobs(tmp_path: Path) -> None:
    async with store_with_account(tmp_path / "data") as (store, account):
        delivered = store.blobs.stage()
        await delivered.write(b"Subject: kept\r\n\r\nbody\r\n")
        await store.deliver(Delivery(delivered, delivered.size, WHEN, local=(MailboxTarget(account.id),)))
        leftover = store.blobs.stage()  # what a crash mid-DATA leaves behind
        await leftover.write(b"Subject: half")
    assert len(list((tmp_path / "data" / "tmp").iterdir())) == 1
    reopened = SQLiteStore(tmp_path / "data", sync="none")
    await reopened.open()
    try:
        assert list((tmp_path / "data" / "tmp").iterdir()) == []
        inbox = await reopened.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        (record,) = await reopened.get_messages(inbox.id, [1])
        assert await reopened.blobs.read(record.blob_id) == b"Subject: kept\r\n\r\nbody\r\n"
    finally:
        await reopened.close()


async def test_the_store_refuses_an_aborted_or_foreign_staged_blob(tmp_path: Path) -> None:
    async with store_with_account(tmp_path / "data") as (store, account):
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        staged = store.blobs.stage()
        await staged.write(b"Subject: x\r\n\r\n")
        staged.abort()
        with pytest.raises(StoreError):
            await store.append(account.id, inbox.id, staged, frozenset(), WHEN)
        other = make_store(tmp_path / "elsewhere").stage()
        await other.write(b"Subject: y\r\n\r\n")
        with pytest.raises(StoreError):
            await store.deliver(Delivery(other, other.size, WHEN, local=(MailboxTarget(account.id),)))
        assert list((tmp_path / "elsewhere" / "tmp").iterdir()) == []  # refused, and aborted
        assert await store.list_messages(inbox.id) == []
        assert list((tmp_path / "data" / "tmp").iterdir()) == []
