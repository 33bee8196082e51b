"""The store contract for concurrent deliveries and APPENDs, which both backends commit in groups
(SQLite's writer thread, PostgreSQL's writer per store): UIDs rise in commit order, a write refused on
its own (quota, a missing account or mailbox) fails only itself, and deliveries to the mailboxes of
several accounts from several stores at once neither deadlock nor mix up their numbers
(tests/store_contract/conftest.py runs each test on every backend)."""

from __future__ import annotations

import asyncio
import random

import pytest

from staging import staged
from surat.store.base import Account, Delivery, MailboxTarget, NotFound, QuotaExceeded, Store

from .conftest import CREDS, StoreFactory, stored_blob_count
from .test_messages import WHEN, deliver, inbox_id, message

WAVE = 24  # concurrent deliveries per wave: more than the callers any batch waits behind


async def test_concurrent_deliveries_get_uids_that_rise_in_commit_order(store: Store, alice: Account) -> None:
    """RFC 9051 §2.3.1.1: UIDs strictly ascend; a delivery that returned before another one started
    has the lower UID, and concurrent ones get distinct, gap-free UIDs with MODSEQs that follow."""
    box = await inbox_id(store, alice)
    first_wave = await asyncio.gather(*(deliver(store, alice, message(n)) for n in range(WAVE)))
    second_wave = await asyncio.gather(*(deliver(store, alice, message(n)) for n in range(WAVE, 2 * WAVE)))
    assert sorted(first_wave) == list(range(1, WAVE + 1))
    assert sorted(second_wave) == list(range(WAVE + 1, 2 * WAVE + 1))
    listing = await store.list_messages(box)
    assert [m.uid for m in listing] == list(range(1, 2 * WAVE + 1))
    # RFC 7162 §3.1.1: a later commit has a higher MODSEQ; one commit's messages may share one.
    by_uid = {m.uid: m.modseq for m in listing}
    assert max(by_uid[uid] for uid in first_wave) < min(by_uid[uid] for uid in second_wave)
    modseqs = [by_uid[uid] for uid in range(1, 2 * WAVE + 1)]
    assert modseqs == sorted(modseqs)
    status = await store.get_mailbox(alice.id, "INBOX")
    assert status is not None and status.uidnext == 2 * WAVE + 1


async def test_a_refused_write_does_not_fail_the_others_committed_with_it(
    store: Store, alice: Account
) -> None:
    bob = await store.add_account("bob@example.test", CREDS)
    size = len(message(100))  # each of bob's (100, 102, 103)
    # Room for two of bob's messages, not three (RFC 9208 §5.1: refuse what would exceed the limit).
    await store.set_quota("bob@example.test", 2 * size + size // 2)
    missing_account = bob.id + 1000

    async def to_account(account_id: int, n: int) -> int:
        data = message(n)
        blob = await staged(store.blobs, data)
        result = await store.deliver(Delivery(blob, len(data), WHEN, local=(MailboxTarget(account_id),)))
        return result.local[0][2]

    async def append_to_missing_mailbox() -> tuple[int, int]:
        return await store.append(alice.id, 10**9, await staged(store.blobs, message(99)), frozenset(), WHEN)

    calls = [to_account(alice.id, n) for n in range(10)]
    calls.insert(3, to_account(bob.id, 100))
    calls.insert(5, to_account(missing_account, 101))
    calls.insert(6, to_account(bob.id, 102))
    calls.insert(8, append_to_missing_mailbox())  # type: ignore[arg-type]
    calls.insert(9, to_account(bob.id, 103))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    alice_uids = [o for i, o in enumerate(outcomes) if i not in (3, 5, 6, 8, 9)]
    assert sorted(alice_uids) == list(range(1, 11))  # type: ignore[type-var]
    assert isinstance(outcomes[5], NotFound)
    assert isinstance(outcomes[8], NotFound)
    # Bob's three, in arrival order: the first two fit, the third does not.
    assert outcomes[3] == 1
    assert outcomes[6] == 2
    assert isinstance(outcomes[9], QuotaExceeded)
    assert await store.account_usage(bob.id) == 2 * size
    assert await store.account_usage(alice.id) == sum(len(message(n)) for n in range(10))
    assert [m.uid for m in await store.list_messages(await inbox_id(store, bob))] == [1, 2]
    assert await stored_blob_count(store) == 12  # nothing left of the refused ones


async def test_mixed_concurrent_deliveries_over_several_accounts_and_stores(
    store: Store, alice: Account, open_store: StoreFactory
) -> None:
    """Deliveries to random sets of mailboxes of several accounts, from two stores (processes,
    nodes) at once: none deadlocks or fails, and every mailbox gets gap-free UIDs, one per copy."""
    other = await open_store()
    accounts = [alice] + [await store.add_account(f"user{i}@example.test", CREDS) for i in range(3)]
    targets = []
    for account in accounts:
        await store.create_mailbox(account.id, "Lists")
        targets += [(account.id, "INBOX"), (account.id, "Lists"), (account.id, "Archive")]
    rng = random.Random(12)  # a fixed seed: a failure replays
    plans = [rng.sample(targets, rng.randint(1, 5)) for _ in range(60)]

    async def deliver_plan(each: Store, n: int, plan: list[tuple[int, str]]) -> list[tuple[int, int, int]]:
        data = message(n)
        local = tuple(MailboxTarget(account_id, name) for account_id, name in plan)
        result = await each.deliver(Delivery(await staged(each.blobs, data), len(data), WHEN, local=local))
        return result.local

    results = await asyncio.gather(
        *(deliver_plan(store if n % 2 else other, n, plan) for n, plan in enumerate(plans))
    )
    got: dict[int, list[int]] = {}
    for plan, local in zip(plans, results, strict=True):
        assert [account_id for account_id, _, _ in local] == [account_id for account_id, _ in plan]
        for _, mailbox_id, uid in local:
            got.setdefault(mailbox_id, []).append(uid)
    for account_id, name in targets:
        mailbox = await store.get_mailbox(account_id, name)
        assert mailbox is not None
        copies = sum(plan.count((account_id, name)) for plan in plans)
        assert sorted(got.get(mailbox.id, [])) == list(range(1, copies + 1)), (account_id, name)
        assert [m.uid for m in await store.list_messages(mailbox.id)] == list(range(1, copies + 1))
    for account in accounts:
        expected = sum(
            len(message(n)) * sum(1 for a, _ in plan if a == account.id) for n, plan in enumerate(plans)
        )
        assert await store.account_usage(account.id) == expected


@pytest.mark.parametrize("cancel_after", [0, 1])
async def test_a_cancelled_caller_does_not_disturb_the_writes_committed_with_it(
    store: Store, alice: Account, cancel_after: int
) -> None:
    """A session that goes away while its delivery is being committed (SMTP client gone): the others
    of the batch commit, and the cancelled one either committed or left nothing."""
    box = await inbox_id(store, alice)
    tasks = [asyncio.create_task(deliver(store, alice, message(n))) for n in range(8)]
    for _ in range(cancel_after):
        await asyncio.sleep(0)
    tasks[2].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    kept = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(uid, int) for uid in kept)
    listing = [m.uid for m in await store.list_messages(box)]
    assert set(kept) <= set(listing)
    assert len(listing) in (7, 8)
    assert listing == list(range(1, len(listing) + 1))
    assert await stored_blob_count(store) == len(listing)
