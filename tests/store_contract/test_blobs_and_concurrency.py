"""The store contract for message bodies (the BlobStore Protocol: staging, ranges, streams, batches)
and for concurrent deliveries from two stores on the same data (two processes, or two nodes on one
PostgreSQL), on every backend (tests/store_contract/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from staging import staged
from surat.store.base import Account, Delivery, MailboxTarget, NotFound, Store, StoreError
from surat.store.blobs import new_blob_id

from .conftest import StoreFactory, staged_leftovers
from .test_messages import WHEN, deliver, inbox_id, message

CHUNK_BOUND = 256 * 1024  # no backend streams pieces larger than this (PostgreSQL's chunk size)
# Over 1 MiB (PostgreSQL's staged spool leaves memory for a file) and over four 256 KiB chunks.
BIG = b"Subject: big\r\n\r\n" + bytes(range(256)) * (5 * 1024 + 7) + b"\r\n"


async def test_staged_blob_reads_back_aborts_and_leaves_nothing(store: Store) -> None:
    blob = store.blobs.stage()
    for start in range(0, len(BIG), 65536):
        await blob.write(BIG[start : start + 65536])
    assert blob.size == len(BIG)
    assert await blob.read() == BIG
    assert await blob.read(len(BIG) - 5) == BIG[-5:]
    await blob.write(b"more")  # writes after a read append
    assert await blob.read(len(BIG)) == b"more"
    blob.abort()
    blob.abort()  # a no-op the second time
    with pytest.raises(StoreError):
        await blob.write(b"x")
    assert staged_leftovers(store) == []


async def test_a_staged_blob_taken_over_refuses_writes_and_ignores_abort(
    store: Store, alice: Account
) -> None:
    blob = await staged(store.blobs, message(1))
    await store.deliver(Delivery(blob, blob.size, WHEN, local=(MailboxTarget(alice.id),)))
    blob.abort()  # the store owns it: nothing happens
    with pytest.raises(StoreError):
        await blob.write(b"x")
    (summary,) = await store.list_messages(await inbox_id(store, alice))
    (record,) = await store.get_messages(await inbox_id(store, alice), [summary.uid])
    assert await store.blobs.read(record.blob_id) == message(1)


async def test_large_blob_ranges_streams_and_batches(store: Store, alice: Account) -> None:
    uid = await deliver(store, alice, BIG)
    (record,) = await store.get_messages(await inbox_id(store, alice), [uid])
    reader = await store.blobs.open(record.blob_id)
    try:
        assert reader.size == len(BIG)
        edges = [
            (0, 10),
            (CHUNK_BOUND - 5, 10),  # across a chunk boundary
            (CHUNK_BOUND, CHUNK_BOUND),  # exactly one chunk
            (3, 3 * CHUNK_BOUND),  # over several
            (len(BIG) - 3, 10),  # fewer at the end
            (len(BIG), 5),  # nothing past it
        ]
        for offset, length in edges:
            assert await reader.read(offset, length) == BIG[offset : offset + length], (offset, length)
        pieces = [piece async for piece in reader.stream(100, len(BIG) - 200)]
        assert b"".join(pieces) == BIG[100:-100]
        assert all(0 < len(piece) <= CHUNK_BOUND for piece in pieces)
        assert b"".join([piece async for piece in reader.stream()]) == BIG
    finally:
        reader.close()
    assert await store.blobs.read(record.blob_id, 5, 7) == BIG[5:12]
    assert await store.blobs.read(record.blob_id, len(BIG) - 4) == BIG[-4:]
    small = await deliver(store, alice, message(2))
    (small_record,) = await store.get_messages(await inbox_id(store, alice), [small])
    missing = new_blob_id()
    assert await store.blobs.read_many([(small_record.blob_id, 3), (missing, 0), (record.blob_id, 7)]) == [
        message(2)[3:],
        None,
        BIG[7:],
    ]
    with pytest.raises(NotFound):
        await store.blobs.open(missing)
    with pytest.raises(NotFound):
        await store.blobs.read(missing)


async def test_concurrent_deliveries_from_two_stores_appear_in_uid_order(
    store: Store, alice: Account, open_store: StoreFactory
) -> None:
    """Two stores (processes, nodes) deliver into one mailbox at once while a reader watches: UIDs
    are unique, and every UID that appears is above every UID that appeared before it (RFC 9051
    §2.3.1.1: a client never sees a lower UID appear later), with MODSEQs above the HIGHESTMODSEQ
    read before (RFC 7162 §3.1.1)."""
    other = await open_store()
    box = await inbox_id(store, alice)
    per_store = 25
    done = asyncio.Event()
    seen: set[int] = set()
    observed_rounds = 0

    async def watch() -> None:
        nonlocal observed_rounds
        highest = 0
        while True:
            finished = done.is_set()
            changes = await other.changes_since(box, highest)
            new = sorted(m.uid for m in changes.changed if m.uid not in seen)
            if new:
                assert not seen or new[0] > max(seen), (new, max(seen))
                assert all(m.modseq > highest for m in changes.changed)
                seen.update(new)
                observed_rounds += 1
            assert changes.highestmodseq >= highest
            highest = changes.highestmodseq
            if finished:
                return
            await asyncio.sleep(0)

    async def deliver_round(each: Store, first: int) -> list[int]:
        return list(
            await asyncio.gather(*(deliver(each, alice, message(n)) for n in range(first, first + per_round)))
        )

    # Rounds, each waiting until the watcher has seen the one before: with group commit a whole round
    # can land in one transaction, and the watcher must see the mailbox grow, not only its end state.
    rounds, per_round = 5, per_store // 5
    uids: list[int] = []
    watcher = asyncio.create_task(watch())
    try:
        for number in range(rounds):
            both = await asyncio.gather(
                deliver_round(store, number * per_round), deliver_round(other, number * per_round)
            )
            uids += both[0] + both[1]
            async with asyncio.timeout(10):
                while not set(uids) <= seen:
                    await asyncio.sleep(0.01)
    finally:
        done.set()
        await watcher
    assert sorted(uids) == list(range(1, 2 * per_store + 1))  # no duplicates, none lost
    assert seen == set(uids)
    assert observed_rounds > 1  # the watcher saw the mailbox grow, not only its end state
    listing = await store.list_messages(box)
    assert [m.uid for m in listing] == sorted(uids)
