"""SELECT's listing cache (store/sqlite.py LISTING_CACHE_MESSAGES): whatever happens to a mailbox, in
this store or in another process's store on the same database, `list_messages` answers exactly what a
fresh read of the rows gives."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from store_contract.test_messages import deliver, inbox_id, message
from surat.store import sqlite
from surat.store.base import Account, FlagMode, MessageSummary
from surat.store.sqlite import SQLiteStore


async def fresh(store: SQLiteStore, mailbox_id: int) -> list[MessageSummary]:
    listing = await store._in_worker(functools.partial(store._read_listing, mailbox_id=mailbox_id))
    return list(listing.messages.values())


async def test_random_changes_from_two_stores(store: SQLiteStore, alice: Account, tmp_path: Path) -> None:
    box = await inbox_id(store, alice)
    other = SQLiteStore(tmp_path / "data")  # another process, as far as SQLite is concerned
    await other.open()
    rng = random.Random(7)
    try:
        for step in range(300):
            actor = rng.choice((store, other))
            uids = [m.uid for m in await fresh(store, box)]
            action = rng.random()
            if action < 0.35 or not uids:
                await deliver(actor, alice, message(step))
            elif action < 0.7:
                chosen = rng.sample(uids, min(len(uids), rng.randint(1, 4)))
                mode = rng.choice((FlagMode.ADD, FlagMode.REMOVE, FlagMode.SET))
                await actor.store_flags(
                    box, chosen, mode, frozenset(rng.sample(["\\Seen", "\\Flagged", "x"], 2))
                )
            elif action < 0.9:
                await actor.expunge(box, rng.sample(uids, min(len(uids), rng.randint(1, 3))))
            else:
                await actor.copy(box, rng.sample(uids, 1), box)  # a copy into the same mailbox: a new UID
            if rng.random() < 0.5:
                expected = await fresh(store, box)
                assert await store.list_messages(box) == expected, step
                assert await other.list_messages(box) == expected, step
    finally:
        await other.close()


async def test_a_recreated_mailbox_is_not_answered_from_the_old_listing(
    store: SQLiteStore, alice: Account
) -> None:
    await deliver(store, alice, message(1), mailbox="Archive")
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    assert len(await store.list_messages(archive.id)) == 1
    await store.delete_mailbox(alice.id, "Archive")
    again = await store.create_mailbox(alice.id, "Archive")
    assert again.uidvalidity != archive.uidvalidity
    assert await store.list_messages(again.id) == []


async def test_the_cache_stays_within_its_bound(
    store: SQLiteStore, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "LISTING_CACHE_MESSAGES", 5)
    for name in ("A", "B"):
        await store.create_mailbox(alice.id, name)
    for n in range(3):
        await deliver(store, alice, message(n), mailbox="A")
        await deliver(store, alice, message(n), mailbox="B")
    boxes = [await store.get_mailbox(alice.id, name) for name in ("A", "B")]
    for box in boxes:
        assert box is not None
        assert len(await store.list_messages(box.id)) == 3
    assert store._listed_messages <= 5 and len(store._listings) == 1  # A was evicted for B
    await deliver(store, alice, message(9), mailbox="B")
    await deliver(store, alice, message(10), mailbox="B")
    await deliver(store, alice, message(11), mailbox="B")
    assert boxes[1] is not None
    assert len(await store.list_messages(boxes[1].id)) == 6  # too large to keep: answered, not cached
    assert store._listed_messages == 0 and not store._listings
