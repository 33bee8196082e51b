"""The store contract for IMAP flag changes, expunges and \\Recent claims, which both backends commit in
shared transactions (SQLite's `_write_grouped`, PostgreSQL's shared.py): concurrent STOREs on one
mailbox, from one store or two (two nodes), get distinct MODSEQs that rise in commit order; a write
refused on its own fails alone; a mix of flags, expunges and claims across mailboxes committed together
gives each caller its own right answer (tests/store_contract/conftest.py runs each on every backend)."""

from __future__ import annotations

import asyncio

from surat.store.base import Account, FlagMode, NotFound, Store

from .conftest import CREDS, StoreFactory
from .test_messages import deliver, inbox_id, message

WAVE = 24  # concurrent writes per test: more than one transaction in flight and one forming


async def test_concurrent_stores_on_one_mailbox_get_distinct_rising_modseqs(
    open_store: StoreFactory, alice: Account, store: Store
) -> None:
    other_node = await open_store()
    box = await inbox_id(store, alice)
    uids = [await deliver(store, alice, message(n)) for n in range(WAVE)]
    start = (await store.get_mailbox(alice.id, "INBOX")).highestmodseq  # type: ignore[union-attr]

    async def flag(uid: int) -> int:
        on = store if uid % 2 else other_node
        result = await on.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Flagged"}))
        assert [u.uid for u in result.updated] == [uid]
        assert result.updated[0].flags == frozenset({"\\Flagged"})
        return result.updated[0].modseq

    modseqs = await asyncio.gather(*(flag(uid) for uid in uids))
    # RFC 7162 §3.1.1: every change gets a MODSEQ of its own, above every one before it.
    assert len(set(modseqs)) == WAVE
    assert min(modseqs) > start
    listing = {m.uid: m.modseq for m in await store.list_messages(box)}
    assert [listing[uid] for uid in uids] == modseqs
    after = await store.get_mailbox(alice.id, "INBOX")
    assert after is not None and after.highestmodseq == max(modseqs)
    # A later STORE, after all of them returned, is above all of them.
    later = await store.store_flags(box, [uids[0]], FlagMode.REMOVE, frozenset({"\\Flagged"}))
    assert later.updated[0].modseq > max(modseqs)


async def test_a_write_on_a_missing_mailbox_fails_alone(store: Store, alice: Account) -> None:
    box = await inbox_id(store, alice)
    uids = [await deliver(store, alice, message(n)) for n in range(WAVE)]
    missing = box + 10**6
    calls = [store.store_flags(box, [uid], FlagMode.ADD, frozenset({"\\Seen"})) for uid in uids]
    calls.insert(5, store.store_flags(missing, [1], FlagMode.ADD, frozenset({"\\Seen"})))
    calls.insert(9, store.expunge(missing, [1]))  # type: ignore[arg-type]
    calls.insert(13, store.claim_recent(missing, 5))  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)] == [5, 9, 13]
    assert all(isinstance(outcomes[i], NotFound) for i in (5, 9, 13))
    assert all(m.flags == frozenset({"\\Seen"}) for m in await store.list_messages(box))


async def test_flags_expunges_and_claims_across_mailboxes_committed_together(
    store: Store, alice: Account
) -> None:
    bob = await store.add_account("bob@example.test", CREDS)
    alice_box, bob_box = await inbox_id(store, alice), await inbox_id(store, bob)
    for n in range(6):
        await deliver(store, alice, message(n))
        await deliver(store, bob, message(n))
    size = len(message(0))
    await store.store_flags(alice_box, [1, 2], FlagMode.ADD, frozenset({"\\Deleted"}))
    before = await store.get_mailbox(bob.id, "INBOX")
    assert before is not None

    claim_alice, claim_bob, flags_bob, expunged_alice, expunged_bob, claim_again = await asyncio.gather(
        store.claim_recent(alice_box, 4),
        store.claim_recent(bob_box, 6),
        store.store_flags(bob_box, [5, 6, 99], FlagMode.SET, frozenset({"$Label"})),
        store.expunge(alice_box, [1, 2, 3], only_deleted=True),
        store.expunge(bob_box, [1]),
        store.claim_recent(alice_box, 6),
    )
    assert claim_alice == (1, 4)
    assert claim_bob == (1, 6)
    assert claim_again == (5, 6)  # after the first claim of the same mailbox: the rest only
    assert [u.uid for u in flags_bob.updated] == [5, 6]  # 99 does not exist
    assert expunged_alice == [1, 2]  # 3 is not \Deleted
    assert expunged_bob == [1]
    assert [m.uid for m in await store.list_messages(alice_box)] == [3, 4, 5, 6]
    bob_listing = await store.list_messages(bob_box)
    assert [m.uid for m in bob_listing] == [2, 3, 4, 5, 6]
    assert {m.uid for m in bob_listing if m.flags == frozenset({"$Label"})} == {5, 6}
    assert await store.account_usage(alice.id) == 4 * size
    assert await store.account_usage(bob.id) == 5 * size
    # Bob's STORE and EXPUNGE each took a MODSEQ of their own (RFC 7162 §3.1.1, §3.2.7).
    after = await store.get_mailbox(bob.id, "INBOX")
    assert after is not None and after.highestmodseq == before.highestmodseq + 2
    changes = await store.changes_since(bob_box, before.highestmodseq)
    assert changes.vanished == [1]
    assert {m.uid for m in changes.changed} == {5, 6}
