"""The auth-failure limiter's pieces that need no store (surat.authlimit; its behaviour over the store is
in tests/store_contract/test_auth_clients.py) and the per-user sending limiter (surat.smtpd.ratelimit)."""

from __future__ import annotations

import pytest

from fake_clock import Clock
from surat.authlimit import BlockPolicy, client_key
from surat.config import LimitsConfig
from surat.smtpd.ratelimit import InMemorySendingLimiter


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


async def test_messages_per_hour() -> None:
    clock = Clock()
    start = clock.now
    lim = InMemorySendingLimiter(messages_per_hour=3, recipients_per_hour=100, clock=clock)
    for _ in range(3):
        assert await lim.may_send("alice")
        await lim.sent("alice", 1)
        clock.now += 60
    assert not await lim.may_send("alice")
    assert await lim.may_send("bob")
    clock.now = start + 3600  # the first message leaves the window
    assert await lim.may_send("alice")


async def test_recipients_per_hour() -> None:
    clock = Clock()
    lim = InMemorySendingLimiter(messages_per_hour=100, recipients_per_hour=10, clock=clock)
    await lim.sent("alice", 7)
    assert await lim.may_add_recipients("alice", 3)
    assert not await lim.may_add_recipients("alice", 4)
    assert await lim.may_add_recipients("bob", 10)
    assert not await lim.may_add_recipients("bob", 11)
    clock.now += 3600
    assert await lim.may_add_recipients("alice", 10)


def test_sending_limiter_from_config() -> None:
    lim = InMemorySendingLimiter.from_config(LimitsConfig(messages_per_hour=7, recipients_per_hour=9))
    assert (lim.messages_per_hour, lim.recipients_per_hour) == (7, 9)
