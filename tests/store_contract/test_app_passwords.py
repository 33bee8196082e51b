"""The store contract: app passwords (issue 13), on every backend (tests/store_contract/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from surat.store.base import MAX_APP_PASSWORDS, Account, AlreadyExists, LimitReached, NotFound, Store

from .conftest import CREDS, StoreFactory


async def test_add_list_find_revoke(store: Store, alice: Account) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    phone = await store.add_app_password(alice.id, "phone", "d1")
    laptop = await store.add_app_password(alice.id, "laptop <b>", "d2")
    assert (phone.account_id, phone.name, phone.last_used) == (alice.id, "phone", None)
    assert before <= phone.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert phone.created_at.tzinfo is not None
    assert await store.list_app_passwords(alice.id) == [laptop, phone]  # by name
    assert await store.find_app_password("ALICE@example.test", "d1") == (alice, phone)
    assert await store.find_app_password("alice@example.test", "nope") is None
    assert await store.find_app_password("bad address", "d1") is None
    with pytest.raises(AlreadyExists):
        await store.add_app_password(alice.id, "phone", "d3")
    await store.delete_app_password(alice.id, "phone")
    assert await store.find_app_password("alice@example.test", "d1") is None
    assert [p.name for p in await store.list_app_passwords(alice.id)] == ["laptop <b>"]
    with pytest.raises(NotFound):
        await store.delete_app_password(alice.id, "phone")


async def test_an_app_password_belongs_to_one_account(store: Store, alice: Account) -> None:
    bob = await store.add_account("bob@example.test", CREDS)
    await store.add_app_password(alice.id, "phone", "same-digest")
    await store.add_app_password(bob.id, "phone", "bobs")
    assert await store.find_app_password("bob@example.test", "same-digest") is None
    found = await store.find_app_password("alice@example.test", "same-digest")
    assert found is not None and found[0] == alice
    with pytest.raises(NotFound):
        await store.add_app_password(bob.id + alice.id + 1000, "x", "y")


async def test_last_use_is_recorded(store: Store, alice: Account) -> None:
    phone = await store.add_app_password(alice.id, "phone", "d1")
    when = datetime(2026, 5, 1, 12, 30, 15, tzinfo=UTC)
    await store.app_password_used(phone.id, when)
    (listed,) = await store.list_app_passwords(alice.id)
    assert listed.last_used == when
    await store.delete_app_password(alice.id, "phone")
    await store.app_password_used(phone.id, when)  # revoked meanwhile: nothing happens


async def test_at_most_max_app_passwords(store: Store, alice: Account) -> None:
    for number in range(MAX_APP_PASSWORDS):
        await store.add_app_password(alice.id, f"device {number}", f"d{number}")
    with pytest.raises(LimitReached):
        await store.add_app_password(alice.id, "one more", "dx")


async def test_deleting_the_account_deletes_its_app_passwords(
    store: Store, alice: Account, open_store: StoreFactory
) -> None:
    await store.add_app_password(alice.id, "phone", "d1")
    await store.delete_account("alice@example.test")
    again = await store.add_account("alice@example.test", CREDS)
    assert await store.list_app_passwords(again.id) == []
    assert await store.find_app_password("alice@example.test", "d1") is None
    other = await open_store()  # another process or node sees the same
    assert await other.list_app_passwords(alice.id) == []
