"""The store contract: domains, accounts, aliases, mailboxes and subscriptions, on every backend
(tests/store_contract/conftest.py), through the Store Protocol."""

from __future__ import annotations

import pytest

from surat.store.base import (
    DEFAULT_MAILBOXES,
    Account,
    AlreadyExists,
    Credentials,
    InvalidName,
    NotFound,
    Store,
    StoreError,
)

from .conftest import CREDS, StoreFactory


async def test_domains(store: Store) -> None:
    await store.add_domain("Example.TEST.")
    await store.add_domain("bücher.example")
    assert await store.list_domains() == ["example.test", "xn--bcher-kva.example"]
    assert await store.is_local_domain("EXAMPLE.test")
    assert await store.is_local_domain("BÜCHER.example")
    assert not await store.is_local_domain("example.net")
    assert not await store.is_local_domain("")
    with pytest.raises(AlreadyExists):
        await store.add_domain("example.test")
    with pytest.raises(InvalidName):
        await store.add_domain("bad domain")
    await store.delete_domain("xn--bcher-kva.example")
    with pytest.raises(NotFound):
        await store.delete_domain("xn--bcher-kva.example")


async def test_account_gets_default_mailboxes_and_credentials(store: Store, alice: Account) -> None:
    assert alice.address == "alice@example.test" and alice.quota_bytes is None
    boxes = await store.list_mailboxes(alice.id)
    assert sorted((b.name, b.special_use) for b in boxes) == sorted(DEFAULT_MAILBOXES)
    assert all(b.uidnext == 1 and b.subscribed for b in boxes)
    assert len({b.uidvalidity for b in boxes}) == 6
    assert await store.get_account("ALICE@example.test") == alice
    assert await store.get_account_by_id(alice.id) == alice
    assert await store.get_account("nobody@example.test") is None
    assert await store.get_credentials("alice@EXAMPLE.test") == (alice, CREDS)
    new = Credentials("$argon2id$other", None)
    await store.set_credentials("alice@example.test", new)
    assert await store.get_credentials("alice@example.test") == (alice, new)
    with pytest.raises(AlreadyExists):
        await store.add_account("alice@example.test", CREDS)
    with pytest.raises(NotFound):
        await store.add_account("bob@elsewhere.example", CREDS)  # not a local domain
    with pytest.raises(StoreError):
        await store.delete_domain("example.test")  # still has an account
    bob = await store.add_account("bob@example.test", CREDS)
    assert [a.address for a in await store.list_accounts("example.test")] == [alice.address, bob.address]
    await store.delete_account("bob@example.test")
    assert await store.list_accounts() == [alice]
    assert await store.list_mailboxes(bob.id) == []
    with pytest.raises(NotFound):
        await store.delete_account("bob@example.test")


async def test_aliases(store: Store, alice: Account) -> None:
    await store.add_alias("Postmaster@example.test", "alice@example.test")
    await store.add_alias("@example.test", "alice@example.test")
    await store.add_alias("team@example.test", "alice@example.test")
    await store.add_alias("team@example.test", "Carol@Example.NET")
    assert await store.alias_targets("team@EXAMPLE.test") == ["alice@example.test", "carol@example.net"]
    assert await store.alias_targets("@example.test") == ["alice@example.test"]
    assert await store.alias_targets("nobody@example.test") == []
    assert await store.aliases_of("alice@example.test") == [
        "@example.test",
        "postmaster@example.test",
        "team@example.test",
    ]
    assert len(await store.list_aliases("example.test")) == 4
    with pytest.raises(AlreadyExists):
        await store.add_alias("team@example.test", "carol@example.net")
    with pytest.raises(NotFound):
        await store.add_alias("x@example.net", "alice@example.test")  # source domain not local
    await store.delete_alias("team@example.test", "carol@example.net")
    assert await store.alias_targets("team@example.test") == ["alice@example.test"]
    await store.delete_alias("team@example.test")
    with pytest.raises(NotFound):
        await store.delete_alias("team@example.test")


@pytest.mark.parametrize("name", ["", "/a", "a/", "a//b", "a/../b", "..", "a\x00b", "tab\there", "a*", "50%"])
async def test_invalid_mailbox_names(store: Store, alice: Account, name: str) -> None:
    with pytest.raises(InvalidName):
        await store.create_mailbox(alice.id, name)
    assert await store.get_mailbox(alice.id, name) is None


async def test_create_delete_and_inbox_case(store: Store, alice: Account) -> None:
    box = await store.create_mailbox(alice.id, "Projects/2024/Q1")
    assert box.name == "Projects/2024/Q1"
    names = [b.name for b in await store.list_mailboxes(alice.id)]
    assert "Projects" in names and "Projects/2024" in names  # superiors created (RFC 9051 §6.3.4)
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(alice.id, "Projects")
    inbox = await store.get_mailbox(alice.id, "inbox")
    assert inbox is not None and inbox.name == "INBOX"
    child = await store.create_mailbox(alice.id, "iNbOx/sub")
    assert child.name == "INBOX/sub"
    with pytest.raises(InvalidName):
        await store.delete_mailbox(alice.id, "Inbox")
    # A recreated name gets a new UIDVALIDITY.
    await store.delete_mailbox(alice.id, "Projects/2024/Q1")
    again = await store.create_mailbox(alice.id, "Projects/2024/Q1")
    assert again.uidvalidity != box.uidvalidity
    with pytest.raises(NotFound):
        await store.delete_mailbox(alice.id, "Nope")
    await store.set_subscribed(alice.id, "Projects", False)
    projects = await store.get_mailbox(alice.id, "Projects")
    assert projects is not None and not projects.subscribed
    with pytest.raises(NotFound):
        await store.set_subscribed(alice.id, "Nope", True)


async def test_subscriptions_outlive_their_mailbox(store: Store, alice: Account) -> None:
    await store.create_mailbox(alice.id, "Lists/rust")
    assert {"Lists", "Lists/rust"} <= set(
        await store.list_subscriptions(alice.id)
    )  # new ones start subscribed
    # RFC 9051 §6.3.7: deleting a mailbox does not remove its name from the subscription list.
    await store.delete_mailbox(alice.id, "Lists/rust")
    assert "Lists/rust" in await store.list_subscriptions(alice.id)
    with pytest.raises(NotFound):
        await store.set_subscribed(alice.id, "Lists/rust", True)  # subscribing needs the mailbox
    await store.set_subscribed(alice.id, "Lists/rust", False)  # unsubscribing does not
    assert "Lists/rust" not in await store.list_subscriptions(alice.id)
    with pytest.raises(NotFound):
        await store.set_subscribed(alice.id, "Lists/rust", False)
    # A renamed mailbox keeps its subscription, under its new name, children included.
    await store.create_mailbox(alice.id, "Lists/go")
    await store.set_subscribed(alice.id, "Lists", False)
    await store.rename_mailbox(alice.id, "Lists", "Groups")
    subscriptions = await store.list_subscriptions(alice.id)
    assert "Groups/go" in subscriptions and "Groups" not in subscriptions
    assert not any(name.startswith("Lists") for name in subscriptions)
    group = await store.get_mailbox(alice.id, "Groups/go")
    assert group is not None and group.subscribed


async def test_closed_store_refuses_work(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.close()
    with pytest.raises(StoreError):
        await store.add_domain("example.test")


async def test_admin_flag(store: Store, alice: Account) -> None:
    assert not alice.is_admin
    await store.set_admin("ALICE@example.test", True)
    promoted = await store.get_account("alice@example.test")
    assert promoted is not None and promoted.is_admin
    assert await store.get_account_by_id(alice.id) == promoted
    assert [a.is_admin for a in await store.list_accounts("example.test")] == [True]
    found = await store.get_credentials("alice@example.test")
    assert found is not None and found[0].is_admin and found[1] == CREDS
    await store.set_admin("alice@example.test", False)
    assert await store.get_account("alice@example.test") == alice
    with pytest.raises(NotFound):
        await store.set_admin("nobody@example.test", True)
