"""The auth-failure limiter's pieces that need no store (surat.authlimit; its behaviour over the store is
in tests/store_contract/test_auth_clients.py) and the per-user sending limiter (surat.smtpd.ratelimit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_clock import Clock
from surat.authlimit import BlockPolicy, client_key
from surat.config import LimitsConfig
from surat.smtpd.ratelimit import StoreSendingLimiter
from surat.store.sqlite import SQLiteStore


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
