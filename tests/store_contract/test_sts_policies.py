"""The MTA-STS policy cache (RFC 8461 §5.1) in the store: it survives a reopen (a restart), is shared
by the stores of one database, is replaced per domain, and forgets expired policies. Runs on every
backend (tests/store_contract/conftest.py)."""

from __future__ import annotations

from surat.store.base import CachedStsPolicy, Store

from .conftest import StoreFactory

POLICY = "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n"


async def test_policy_survives_reopen_and_is_shared(store: Store, open_store: StoreFactory) -> None:
    assert await store.get_sts_policy("example.net") is None
    cached = CachedStsPolicy("example.net", "id1", POLICY, 1_000_000.0, 1_086_400.0)
    await store.put_sts_policy(cached, forget_before=0)
    other = await open_store()  # another process on the same data
    assert await other.get_sts_policy("Example.NET") == cached
    await store.close()
    reopened = await open_store()  # a restart
    assert await reopened.get_sts_policy("example.net") == cached


async def test_refetch_replaces_and_expired_policies_are_forgotten(store: Store) -> None:
    await store.put_sts_policy(CachedStsPolicy("a.example", "old", POLICY, 100.0, 200.0), forget_before=0)
    await store.put_sts_policy(CachedStsPolicy("b.example", "b", POLICY, 100.0, 5000.0), forget_before=0)
    newer = CachedStsPolicy("a.example", "new", POLICY.replace("enforce", "testing"), 300.0, 400.0)
    await store.put_sts_policy(newer, forget_before=0)
    assert await store.get_sts_policy("a.example") == newer
    # Writing c.example at time 1000 forgets a.example (expired at 400), keeps b.example (5000).
    await store.put_sts_policy(
        CachedStsPolicy("c.example", "c", POLICY, 1000.0, 2000.0), forget_before=1000.0
    )
    assert await store.get_sts_policy("a.example") is None
    assert (await store.get_sts_policy("b.example")) is not None
    assert (await store.get_sts_policy("c.example")) is not None
