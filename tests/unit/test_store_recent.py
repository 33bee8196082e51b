"""The store's \\Recent claims (RFC 3501 §2.3.2): each UID is recent for one session only, whichever
claims it first, across concurrent claims on one store and across two stores on one database (as two
processes would be)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from old_schema import account_database_at
from surat.store import schema
from surat.store.base import Account
from surat.store.sqlite import SQLiteStore
from unit.test_store_sqlite import deliver, inbox_id, message


async def test_claim_takes_each_uid_once(store: SQLiteStore, alice: Account) -> None:
    box = await inbox_id(store, alice)
    assert await store.claim_recent(box, 0) == (1, 0)  # an empty mailbox: nothing to claim
    for n in range(3):
        await deliver(store, alice, message(n))
    assert (await store.mailbox_status(box)).recent == 3
    assert await store.claim_recent(box, 3) == (1, 3)
    assert (await store.mailbox_status(box)).recent == 0
    assert await store.claim_recent(box, 3) == (4, 3)  # claimed already: empty
    await deliver(store, alice, message(4))
    assert (await store.mailbox_status(box)).recent == 1
    # A session that only saw UIDs up to 3 claims nothing of UID 4.
    assert await store.claim_recent(box, 3) == (4, 3)
    assert await store.claim_recent(box, 4) == (4, 4)


async def test_peek_reports_without_claiming(store: SQLiteStore, alice: Account) -> None:
    box = await inbox_id(store, alice)
    for n in range(2):
        await deliver(store, alice, message(n))
    assert await store.claim_recent(box, 2, peek=True) == (1, 2)
    assert await store.claim_recent(box, 2, peek=True) == (1, 2)
    assert await store.claim_recent(box, 2) == (1, 2)
    assert await store.claim_recent(box, 2, peek=True) == (3, 2)


async def test_recent_is_per_mailbox(store: SQLiteStore, alice: Account) -> None:
    box = await inbox_id(store, alice)
    await deliver(store, alice, message(1))
    await deliver(store, alice, message(2), mailbox="Archive")
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    assert await store.claim_recent(box, 1) == (1, 1)
    assert (await store.mailbox_status(archive.id)).recent == 1
    # A copy gets a new UID in its mailbox, and so is recent there for the next claimant.
    await store.copy(box, [1], archive.id)
    assert (await store.mailbox_status(archive.id)).recent == 2
    assert await store.claim_recent(archive.id, 2) == (1, 2)


def _union_is_disjoint(ranges: list[tuple[int, int]], top: int) -> None:
    claimed: list[int] = []
    for first, last in ranges:
        claimed.extend(range(first, last + 1))
    assert len(claimed) == len(set(claimed)), ranges  # no UID claimed twice
    assert sorted(claimed) == list(range(1, top + 1))  # and none lost


async def test_concurrent_claims_never_share_a_uid(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    box = await inbox_id(store, alice)
    # A second store on the same database: another process, as far as SQLite is concerned.
    other = SQLiteStore(tmp_path / "data")
    await other.open()
    try:
        ranges: list[tuple[int, int]] = []
        top = 0
        for round_ in range(5):
            for n in range(3):
                top = await deliver(store, alice, message(round_ * 10 + n))
            claims = [s.claim_recent(box, top) for s in (store, other) for _ in range(4)]
            ranges += await asyncio.gather(*claims)
        _union_is_disjoint(ranges, top)
        assert sum(1 for first, last in ranges if last >= first) == 5  # one winner per round
    finally:
        await other.close()


def test_migration_7_starts_with_nothing_recent(tmp_path: Path) -> None:
    conn = account_database_at(tmp_path / "old.db", 6)
    try:
        conn.execute(
            "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext) VALUES (1, 'INBOX', 1, 5)"
        )
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
        # Messages stored before the upgrade are not announced as new to whoever selects first.
        assert conn.execute("SELECT recent_uid FROM mailboxes").fetchall() == [(5,)]
    finally:
        conn.close()
