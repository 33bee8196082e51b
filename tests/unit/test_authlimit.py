"""The shared auth-failure limiter (surat.authlimit) and the per-user sending limiter (surat.smtpd.ratelimit)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from surat.authlimit import STRIKE_MEMORY, BlockPolicy, StoreAuthLimiter, client_key
from surat.config import LimitsConfig
from surat.smtpd.ratelimit import StoreSendingLimiter
from surat.store.sqlite import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # epoch seconds: records are shared by processes through the store

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limiter(store: SQLiteStore) -> Callable[..., StoreAuthLimiter]:
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


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(ip: str, key: str) -> None:
    assert client_key(ip) == key


async def test_records_are_shared_through_the_store_and_forgotten_after_a_quiet_day(
    store: SQLiteStore, limiter: Callable[..., StoreAuthLimiter]
) -> None:
    clock = Clock()
    first, second = limiter(clock, max_failures=2), limiter(clock, max_failures=2)  # two processes
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


def test_from_config() -> None:
    limits = LimitsConfig(auth_max_failures=3, auth_failure_window=60, auth_block=10, auth_block_max=20)
    assert BlockPolicy.from_config(limits) == BlockPolicy(3, 60, 10, 20)


# ----------------------------------------------------------------------------- sending limits


async def test_messages_per_hour(store: SQLiteStore) -> None:
    clock = Clock()
    start = clock.now
    lim = StoreSendingLimiter(store, messages_per_hour=3, recipients_per_hour=100, clock=clock)
    for _ in range(3):
        assert await lim.may_send("alice")
        await lim.sent("alice", 1)
        clock.now += 60
    assert not await lim.may_send("alice")
    assert await lim.may_send("bob")
    clock.now = start + 3600  # the first message leaves the window
    assert await lim.may_send("alice")


async def test_recipients_per_hour(store: SQLiteStore) -> None:
    clock = Clock()
    lim = StoreSendingLimiter(store, messages_per_hour=100, recipients_per_hour=10, clock=clock)
    await lim.sent("alice", 7)
    assert await lim.may_add_recipients("alice", 3)
    assert not await lim.may_add_recipients("alice", 4)
    assert await lim.may_add_recipients("bob", 10)
    assert not await lim.may_add_recipients("bob", 11)
    clock.now += 3600
    assert await lim.may_add_recipients("alice", 10)


async def test_sending_counts_are_shared_by_two_stores_on_one_database(tmp_path: Path) -> None:
    # Two processes (or nodes) behind a load balancer: each has its own Store on the same database.
    clock = Clock()
    first_store, second_store = SQLiteStore(tmp_path / "data"), SQLiteStore(tmp_path / "data")
    await first_store.open()
    await second_store.open()
    try:
        first = StoreSendingLimiter(first_store, messages_per_hour=2, recipients_per_hour=5, clock=clock)
        second = StoreSendingLimiter(second_store, messages_per_hour=2, recipients_per_hour=5, clock=clock)
        await first.sent("alice", 2)
        clock.now += 10
        await second.sent("alice", 2)
        assert not await first.may_send("alice")
        assert not await second.may_send("alice")
        assert not await first.may_add_recipients("alice", 2)
        assert await second.may_add_recipients("alice", 1)
        assert await first.may_send("bob")
        clock.now += 3591  # the first message leaves the window on both
        assert await second.may_send("alice")
        assert await first.may_add_recipients("alice", 3)
        # Writing forgets every user's messages that left the window: the table stays one hour long.
        await first.sent("bob", 1)
        assert await second_store.sending_totals("alice", since=0) == (1, 2)
    finally:
        await first_store.close()
        await second_store.close()


def test_sending_limiter_from_config(store: SQLiteStore) -> None:
    lim = StoreSendingLimiter.from_config(store, LimitsConfig(messages_per_hour=7, recipients_per_hour=9))
    assert (lim.messages_per_hour, lim.recipients_per_hour) == (7, 9)
