"""The store contract: what every node of an installation must hold alike (issue 12), the installation
secret and the DKIM signing keys, on every backend (tests/store_contract/conftest.py), through the
Store Protocol's `keys` role: files in the data directory for SQLite, tables for PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from surat.delivery import dkim
from surat.store.base import INSTALLATION_SECRET_BYTES, AlreadyExists, StoredDkimKey, StoreError

from .conftest import StoreFactory

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
# Made once for the module: RSA-2048 generation costs a tenth of a second or more per key.
RSA = dkim.generate_key("example.test", dkim.DkimAlgorithm.RSA, NOW)
ED25519 = dkim.generate_key("example.test", dkim.DkimAlgorithm.ED25519, NOW)


def stored(key: dkim.DkimKey, selector: str | None = None) -> StoredDkimKey:
    return StoredDkimKey(key.domain, selector or key.selector, key.algorithm.value, key.private_pem, NOW)


async def test_installation_secret_is_made_once_and_shared(open_store: StoreFactory) -> None:
    store = await open_store()
    secret = await store.keys.installation_secret()
    assert len(secret) >= INSTALLATION_SECRET_BYTES
    assert await store.keys.installation_secret() == secret
    other = await open_store()  # another process or node on the same data
    assert await other.keys.installation_secret() == secret
    await store.close()
    again = await open_store()  # a restart
    assert await again.keys.installation_secret() == secret


async def test_concurrent_first_calls_agree_on_one_secret(open_store: StoreFactory) -> None:
    stores = [await open_store() for _ in range(2)]
    secrets = await asyncio.gather(*(store.keys.installation_secret() for store in stores for _ in range(4)))
    assert len(set(secrets)) == 1
    assert await (await open_store()).keys.installation_secret() == secrets[0]


async def test_dkim_keys_added_listed_and_never_replaced(open_store: StoreFactory) -> None:
    store = await open_store()
    keys = store.keys
    assert await keys.dkim_keys("example.test") == []
    assert await keys.add_dkim_key(stored(ED25519))
    assert await keys.add_dkim_key(stored(RSA))
    listed = await keys.dkim_keys("EXAMPLE.test")
    assert [(k.domain, k.selector, k.algorithm, k.private_pem) for k in listed] == [
        ("example.test", "s20261126e", "ed25519", ED25519.private_pem),
        ("example.test", "s20261126r", "rsa", RSA.private_pem),
    ]
    assert all(k.created_at.tzinfo is not None for k in listed)
    # A selector is never replaced, not even by a key of another algorithm: DNS may publish it.
    with pytest.raises(AlreadyExists):
        await keys.add_dkim_key(stored(RSA, "s20261126e"))
    assert [k.private_pem for k in await keys.dkim_keys("example.test")] == [
        ED25519.private_pem,
        RSA.private_pem,
    ]
    # A second key of an algorithm (a rotation) is kept beside the first, unless only the first is wanted.
    newer = stored(ED25519, "s20270301e")
    assert not await keys.add_dkim_key(newer, only_first_of_algorithm=True)
    assert await keys.add_dkim_key(newer)
    assert [k.selector for k in await keys.dkim_keys("example.test")] == [
        "s20261126e",
        "s20261126r",
        "s20270301e",
    ]
    assert await keys.dkim_keys("other.test") == []
    # Seen from another store on the same data; the newest per algorithm is what signs.
    other = await open_store()
    assert [k.selector for k in await dkim.load_keys(other.keys, "example.test")] == [
        "s20261126r",
        "s20270301e",
    ]
    with pytest.raises(StoreError):
        await keys.add_dkim_key(stored(RSA, "../escape"))
    assert "example.test" in keys.dkim_location("Example.TEST")


async def test_only_the_first_key_of_an_algorithm_is_added_under_concurrency(
    open_store: StoreFactory,
) -> None:
    """Nodes racing to make a new domain's key: whatever the interleaving, one insert wins."""
    a, b = await open_store(), await open_store()
    candidates = [stored(ED25519, "s20261126e" + (str(n) if n > 1 else "")) for n in range(1, 9)]
    added = await asyncio.gather(
        *(
            (a if n % 2 else b).keys.add_dkim_key(key, only_first_of_algorithm=True)
            for n, key in enumerate(candidates)
        )
    )
    assert added.count(True) == 1
    assert len(await a.keys.dkim_keys("example.test")) == 1


async def test_two_stores_ensuring_a_domains_keys_end_with_one_per_algorithm(
    open_store: StoreFactory,
) -> None:
    a, b = await open_store(), await open_store()
    ensured = await asyncio.gather(
        *(dkim.ensure_keys(store.keys, "example.test", NOW) for store in (a, b, a, b))
    )
    assert all(keys == ensured[0] for keys in ensured)  # every node signs with the same keys
    assert [key.algorithm for key in ensured[0]] == [dkim.DkimAlgorithm.RSA, dkim.DkimAlgorithm.ED25519]
    listed = await b.keys.dkim_keys("example.test")
    assert sorted(k.algorithm for k in listed) == ["ed25519", "rsa"]  # none left over from a loser
