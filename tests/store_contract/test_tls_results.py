"""TLS-RPT (RFC 8460) counts and report claims in the store: counts of equal keys add up across
stores of one database (processes, nodes) and survive a reopen; a day's report is claimed once; old
days are forgotten. Runs on every backend (tests/store_contract/conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from surat.store.base import Store, TlsResultCount, TlsResultKey

from .conftest import StoreFactory

POLICY = TlsResultKey(
    day="2026-12-07",
    policy_domain="Example.NET",
    policy_type="sts",
    policy_string="version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400",
    mx_host="mx.example.net",
)
FAILURE = replace(
    POLICY,
    result_type="certificate-host-mismatch",
    receiving_mx_hostname="mx.example.net",
    receiving_ip="192.0.2.1",
    failure_reason_code="certificate verify failed: Hostname mismatch",
)


def _lower(key: TlsResultKey) -> TlsResultKey:
    return replace(key, policy_domain=key.policy_domain.lower())


async def test_counts_add_up_across_stores_and_survive_reopen(store: Store, open_store: StoreFactory) -> None:
    other = await open_store()  # another process or node on the same data
    await store.add_tls_results([TlsResultCount(POLICY, 2), TlsResultCount(FAILURE, 1)])
    await other.add_tls_results([TlsResultCount(POLICY, 3)])
    await asyncio.gather(*(other.add_tls_results([TlsResultCount(FAILURE, 1)]) for _ in range(4)))
    await store.add_tls_results([])  # nothing to write is fine
    expected = [TlsResultCount(_lower(POLICY), 5), TlsResultCount(_lower(FAILURE), 5)]
    assert sorted(await other.tls_results("2026-12-07"), key=repr) == sorted(expected, key=repr)
    assert await store.tls_results("2026-12-06") == []
    await store.close()
    reopened = await open_store()
    assert sorted(await reopened.tls_results("2026-12-07"), key=repr) == sorted(expected, key=repr)


async def test_a_report_is_claimed_once_and_old_days_are_forgotten(
    store: Store, open_store: StoreFactory
) -> None:
    other = await open_store()
    old = TlsResultKey("2026-11-01", "example.net", "no-policy-found", "", "")
    await store.add_tls_results([TlsResultCount(old, 1), TlsResultCount(POLICY, 1)])
    claims = await asyncio.gather(
        store.claim_tls_report("example.net", "2026-12-07", forget_before="2026-11-30"),
        other.claim_tls_report("EXAMPLE.net", "2026-12-07", forget_before="2026-11-30"),
    )
    assert sorted(claims) == [False, True]
    assert await store.claim_tls_report("example.org", "2026-12-07", forget_before="2026-11-30")
    assert await store.claim_tls_report("example.net", "2026-12-06", forget_before="2026-11-30")
    assert await store.tls_results("2026-11-01") == []  # before forget_before
    assert len(await store.tls_results("2026-12-07")) == 1
    # A day forgotten may be claimed again: nothing is left to report for it anyway.
    assert not await store.claim_tls_report("example.net", "2026-12-07", forget_before="2026-11-30")
