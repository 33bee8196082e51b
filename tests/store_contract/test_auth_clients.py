"""The login-failure limiter over the store (surat.authlimit.StoreAuthLimiter): its records live in the
store, so every process and node shares them (issue 12: a brute-forcer cannot spread over nodes).
Runs on every backend (tests/store_contract/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from fake_clock import Clock
from surat.authlimit import STRIKE_MEMORY, BlockPolicy, StoreAuthLimiter
from surat.store.base import Store

from .conftest import StoreFactory


@pytest.fixture
def limiter(store: Store) -> Callable[..., StoreAuthLimiter]:
    def make(clock: Clock, **kw: float) -> StoreAuthLimiter:
        options: dict[str, float] = {"max_failures": 5, "window": 900, "block": 300, "block_max": 1000}
        options.update(kw)
        policy = BlockPolicy(
            max_failures=int(options["max_failures"]),
            window=options["window"],
            block=options["block"],
            block_max=options["block_max"],
        )
        return StoreAuthLimiter(store, policy, clock=clock)

    return make


async def fail(lim: StoreAuthLimiter, ip: str, times: int, user: str = "alice@example.test") -> None:
    for _ in range(times):
        await lim.failure(ip, user, "imap")


async def test_four_failures_do_not_block_the_fifth_does(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    await fail(lim, "192.0.2.1", 4)
    assert await lim.retry_after("192.0.2.1") == 0
    await fail(lim, "192.0.2.1", 1)
    assert await lim.retry_after("192.0.2.1") == 300


async def test_block_is_per_address_not_per_account(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    await fail(lim, "192.0.2.1", 5)
    assert await lim.retry_after("192.0.2.1") > 0
    assert await lim.retry_after("192.0.2.2") == 0
    assert await lim.retry_after("127.0.0.1") == 0


async def test_failures_outside_the_window_are_forgotten(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    await fail(lim, "192.0.2.1", 4)
    clock.now += 901
    await fail(lim, "192.0.2.1", 4)
    assert await lim.retry_after("192.0.2.1") == 0
    await fail(lim, "192.0.2.1", 1)
    assert await lim.retry_after("192.0.2.1") == 300


async def test_block_expires_and_grows_on_repeat_up_to_the_maximum(
    limiter: Callable[..., StoreAuthLimiter],
) -> None:
    clock = Clock()
    lim = limiter(clock)
    expected = [300, 600, 1000, 1000]
    for period in expected:
        await fail(lim, "192.0.2.1", 5)
        assert await lim.retry_after("192.0.2.1") == period
        clock.now += period - 1
        assert await lim.retry_after("192.0.2.1") == 1
        clock.now += 1
        assert await lim.retry_after("192.0.2.1") == 0


async def test_failures_during_a_block_do_not_extend_it(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    await fail(lim, "192.0.2.1", 5)
    clock.now += 100
    await fail(lim, "192.0.2.1", 10)
    assert await lim.retry_after("192.0.2.1") == 200


async def test_strikes_are_forgotten_after_a_quiet_day(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    await fail(lim, "192.0.2.1", 5)
    clock.now += 300
    await fail(lim, "192.0.2.1", 5)
    assert await lim.retry_after("192.0.2.1") == 600
    clock.now += 2 * 86400
    await fail(lim, "192.0.2.1", 5)
    assert await lim.retry_after("192.0.2.1") == 300


async def test_ipv6_counts_per_64(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock)
    for host in range(5):
        await lim.failure(f"2001:db8:1:2::{host + 1}", "bob", "pop3")
    assert await lim.retry_after("2001:db8:1:2:ffff::9") == 300
    assert await lim.retry_after("2001:db8:1:3::1") == 0


async def test_records_are_shared_through_the_store_and_forgotten_after_a_quiet_day(
    store: Store, open_store: StoreFactory
) -> None:
    clock = Clock()
    policy = BlockPolicy(max_failures=2, window=900, block=300, block_max=1000)
    # two processes (or nodes), each with its own store over the same data
    first = StoreAuthLimiter(store, policy, clock=clock)
    second = StoreAuthLimiter(await open_store(), policy, clock=clock)
    await first.failure("192.0.2.1", None, "smtp")
    await second.failure("192.0.2.1", None, "imap")
    assert await first.retry_after("192.0.2.1") == 300
    assert [state.key for state in await second.blocked()] == ["192.0.2.1"]
    await first.failure("192.0.2.2", None, "smtp")
    clock.now += STRIKE_MEMORY + 301
    await first.failure("192.0.2.3", None, "smtp")  # each write forgets records older than a day
    assert await store.get_auth_client("192.0.2.1") is None
    assert await store.get_auth_client("192.0.2.2") is None
    assert await store.get_auth_client("192.0.2.3") is not None


async def test_lift_ends_a_block_and_forgets_the_failures(limiter: Callable[..., StoreAuthLimiter]) -> None:
    clock = Clock()
    lim = limiter(clock, max_failures=2)
    await fail(lim, "2001:db8:1:2::1", 2)
    assert await lim.retry_after("2001:db8:1:2::1") == 300
    assert await lim.lift("2001:db8:1:2::5") is True  # the same /64
    assert await lim.retry_after("2001:db8:1:2::1") == 0
    assert await lim.blocked() == []
    assert await lim.lift("2001:db8:1:2::1") is False
    await fail(lim, "2001:db8:1:2::1", 1)
    assert await lim.retry_after("2001:db8:1:2::1") == 0  # the count started afresh


async def test_log_lines_name_ip_and_user_for_fail2ban(
    caplog: pytest.LogCaptureFixture, limiter: Callable[..., StoreAuthLimiter]
) -> None:
    clock = Clock()
    lim = limiter(clock, max_failures=2)
    with caplog.at_level(logging.INFO, logger="surat.authlimit"):
        await lim.failure("192.0.2.7", "alice@example.test", "imap")
        await lim.failure("192.0.2.7", None, "smtp")
    records = [(r.getMessage(), getattr(r, "kv", {})) for r in caplog.records]
    assert records[0] == ("auth.failed", {"ip": "192.0.2.7", "user": "alice@example.test", "service": "imap"})
    assert records[1] == ("auth.failed", {"ip": "192.0.2.7", "user": "-", "service": "smtp"})
    assert records[2][0] == "auth.blocked"
    assert records[2][1]["ip"] == "192.0.2.7"
    assert records[2][1]["seconds"] == 300
