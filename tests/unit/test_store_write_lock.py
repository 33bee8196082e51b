"""Every write transaction of a SQLite store holds the data directory's write flock (WRITE_LOCK_FILE in
store/sqlite.py): writers of several processes queue on the kernel's lock instead of SQLite's
sleeping busy handler."""

from __future__ import annotations

import asyncio
import fcntl
import os

from store_contract.test_messages import deliver, inbox_id, message
from surat.store.base import Account, FlagMode
from surat.store.sqlite import WRITE_LOCK_FILE, SQLiteStore

HELD_FOR = 0.3  # long enough that a write not waiting for the lock would surely have finished


async def test_writes_wait_for_the_write_lock_and_go_on_when_it_is_released(
    store: SQLiteStore, alice: Account
) -> None:
    box = await inbox_id(store, alice)
    uid = await deliver(store, alice, message(1))
    other = os.open(store.data_dir / WRITE_LOCK_FILE, os.O_RDWR)  # another process's writer
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        delivering = asyncio.ensure_future(deliver(store, alice, message(2)))  # group commit
        flagging = asyncio.ensure_future(  # grouped write
            store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Seen"}))
        )
        creating = asyncio.ensure_future(store.create_mailbox(alice.id, "Later"))  # plain write
        await asyncio.sleep(HELD_FOR)
        assert not (delivering.done() or flagging.done() or creating.done())
        fcntl.flock(other, fcntl.LOCK_UN)
        await asyncio.wait_for(asyncio.gather(delivering, flagging, creating), 10)
    finally:
        os.close(other)
    assert [m.uid for m in await store.list_messages(box)] == [uid, uid + 1]


async def test_the_lock_is_free_between_writes(store: SQLiteStore, alice: Account) -> None:
    await deliver(store, alice, message(1))
    fd = os.open(store.data_dir / WRITE_LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
    finally:
        os.close(fd)
