"""The store contract: Sieve scripts (named, one active, parsed when stored) and the vacation memory,
on every backend (tests/store_contract/conftest.py), through the Store Protocol."""

from __future__ import annotations

import asyncio

import pytest

from surat.store.base import (
    MAX_SIEVE_SCRIPT_NAME,
    MAX_VACATION_MEMORY_SECONDS,
    Account,
    InvalidName,
    InvalidScript,
    NotFound,
    ScriptActive,
    Store,
)

from .conftest import CREDS, StoreFactory

FILTER = 'require "fileinto";\nif header :contains "subject" "x" { fileinto "X"; }\n'
DAY = 86400.0


async def test_put_get_list_replace(store: Store, alice: Account) -> None:
    assert await store.list_sieve_scripts(alice.id) == []
    first = await store.put_sieve_script(alice.id, "main", FILTER)
    assert (first.name, first.text, first.active) == ("main", FILTER, False)
    assert first.created_at == first.updated_at
    assert await store.get_sieve_script(alice.id, "main") == first
    assert await store.get_sieve_script(alice.id, "Main") is None  # names are exact (RFC 5804)
    await store.activate_sieve_script(alice.id, "main")
    replaced = await store.put_sieve_script(alice.id, "main", "keep;")
    # Replacing keeps the script active and its creation time, and gives it a new version.
    assert (replaced.text, replaced.active, replaced.created_at) == ("keep;", True, first.created_at)
    assert replaced.version != first.version
    await store.put_sieve_script(alice.id, "b-other", "discard;")
    assert [(s.name, s.active) for s in await store.list_sieve_scripts(alice.id)] == [
        ("b-other", False),
        ("main", True),
    ]


async def test_a_script_that_does_not_parse_is_refused_with_the_line(store: Store, alice: Account) -> None:
    with pytest.raises(InvalidScript, match=r"^line 2, column \d+: "):
        await store.put_sieve_script(alice.id, "bad", 'keep;\nfileinto "x";\n')  # fileinto not required
    with pytest.raises(InvalidScript, match=r"^line 1"):
        await store.put_sieve_script(alice.id, "bad", 'require "no-such-extension";')
    assert await store.list_sieve_scripts(alice.id) == []


@pytest.mark.parametrize("name", ["", "a\x00b", "line\nbreak", "del\x7f", "x" * (MAX_SIEVE_SCRIPT_NAME + 1)])
async def test_invalid_script_names(store: Store, alice: Account, name: str) -> None:
    with pytest.raises(InvalidName):
        await store.put_sieve_script(alice.id, name, "keep;")


async def test_one_active_script(store: Store, alice: Account) -> None:
    await store.put_sieve_script(alice.id, "a", "keep;")
    await store.put_sieve_script(alice.id, "b", "keep;")
    await store.activate_sieve_script(alice.id, "a")
    await store.activate_sieve_script(alice.id, "b")
    assert {s.name: s.active for s in await store.list_sieve_scripts(alice.id)} == {"a": False, "b": True}
    with pytest.raises(NotFound):
        await store.activate_sieve_script(alice.id, "missing")
    assert (await store.get_sieve_script(alice.id, "b")).active  # type: ignore[union-attr]
    await store.activate_sieve_script(alice.id, None)
    assert not any(s.active for s in await store.list_sieve_scripts(alice.id))


async def test_concurrent_activations_leave_one_active(store: Store, alice: Account) -> None:
    names = [f"s{i}" for i in range(6)]
    for name in names:
        await store.put_sieve_script(alice.id, name, "keep;")
    await asyncio.gather(*(store.activate_sieve_script(alice.id, name) for name in names))
    assert sum(s.active for s in await store.list_sieve_scripts(alice.id)) == 1


async def test_delete_refuses_the_active_script(store: Store, alice: Account) -> None:
    await store.put_sieve_script(alice.id, "a", "keep;")
    await store.activate_sieve_script(alice.id, "a")
    with pytest.raises(ScriptActive):  # RFC 5804 §2.10
        await store.delete_sieve_script(alice.id, "a")
    await store.activate_sieve_script(alice.id, None)
    await store.delete_sieve_script(alice.id, "a")
    assert await store.get_sieve_script(alice.id, "a") is None
    with pytest.raises(NotFound):
        await store.delete_sieve_script(alice.id, "a")


async def test_scripts_are_per_account_and_go_with_it(store: Store, alice: Account) -> None:
    bob = await store.add_account("bob@example.test", CREDS)
    await store.put_sieve_script(alice.id, "main", "keep;")
    assert await store.list_sieve_scripts(bob.id) == []
    assert await store.get_sieve_script(bob.id, "main") is None
    with pytest.raises(NotFound):
        await store.activate_sieve_script(bob.id, "main")
    with pytest.raises(NotFound):
        await store.put_sieve_script(10_000, "main", "keep;")
    await store.claim_vacation_reply(alice.id, "x@example.net", "h", 1000.0, DAY)
    await store.delete_account("alice@example.test")
    again = await store.add_account("alice@example.test", CREDS)
    assert await store.list_sieve_scripts(again.id) == []
    assert await store.claim_vacation_reply(again.id, "x@example.net", "h", 1001.0, DAY)


async def test_vacation_memory_once_per_period(store: Store, alice: Account) -> None:
    t = 1_700_000_000.0
    assert await store.claim_vacation_reply(alice.id, "x@example.net", "h", t, 7 * DAY)
    assert not await store.claim_vacation_reply(alice.id, "x@example.net", "h", t + 6 * DAY, 7 * DAY)
    # Another handle or another sender is another reply (RFC 5230 §4.2).
    assert await store.claim_vacation_reply(alice.id, "x@example.net", "other", t + 1, 7 * DAY)
    assert await store.claim_vacation_reply(alice.id, "y@example.net", "h", t + 1, 7 * DAY)
    assert await store.claim_vacation_reply(alice.id, "x@example.net", "h", t + 7 * DAY, 7 * DAY)
    # The refused attempt did not move the period: counted from the reply that went.
    assert not await store.claim_vacation_reply(alice.id, "x@example.net", "h", t + 8 * DAY, 7 * DAY)
    # :seconds 0 (RFC 6131): every time.
    assert await store.claim_vacation_reply(alice.id, "z@example.net", "h", t, 0)
    assert await store.claim_vacation_reply(alice.id, "z@example.net", "h", t, 0)


async def test_vacation_memory_is_pruned_and_shared(open_store: StoreFactory, alice: Account) -> None:
    first = await open_store()  # another process or node over the same data
    t = 1_700_000_000.0
    assert await first.claim_vacation_reply(alice.id, "old@example.net", "h", t, DAY)
    later = t + MAX_VACATION_MEMORY_SECONDS + DAY
    second = await open_store()
    assert not await second.claim_vacation_reply(alice.id, "old@example.net", "h", t + 10, DAY)
    assert await second.claim_vacation_reply(alice.id, "new@example.net", "h", later, DAY)
    # The old row was pruned: even a period longer than the memory keeps no trace of it.
    assert await first.claim_vacation_reply(
        alice.id, "old@example.net", "h", later, 10 * MAX_VACATION_MEMORY_SECONDS
    )


async def test_concurrent_vacation_claims_reply_once(store: Store, alice: Account) -> None:
    claims = await asyncio.gather(
        *(store.claim_vacation_reply(alice.id, "x@example.net", "h", 1000.0 + i / 10, DAY) for i in range(8))
    )
    assert claims.count(True) == 1
