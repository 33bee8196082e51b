"""The in-process change feed: per-account delivery, pending(), bounded queues, close."""

from __future__ import annotations

import asyncio

from surat.store.base import Change, ChangeKind
from surat.store.feed import InProcessChangeFeed


def added(account_id: int, uid: int) -> Change:
    return Change(ChangeKind.MESSAGES_ADDED, account_id, 1, (uid,), uid)


async def test_changes_reach_only_subscribers_of_that_account() -> None:
    feed = InProcessChangeFeed()
    one = feed.subscribe(1)
    two = feed.subscribe(2)
    feed.publish([added(1, 1), added(2, 5), added(1, 2)])
    assert one.pending() == [added(1, 1), added(1, 2)]
    assert two.pending() == [added(2, 5)]
    assert one.pending() == []


async def test_async_iteration_waits_for_changes_and_ends_on_close() -> None:
    feed = InProcessChangeFeed()
    sub = feed.subscribe(7)
    received: list[Change] = []

    async def consume() -> None:
        async for change in sub:
            received.append(change)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    feed.publish([added(7, 1)])
    await asyncio.sleep(0)
    feed.publish([added(7, 2)])
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert received == [added(7, 1), added(7, 2)]
    assert feed.subscriber_count(7) == 0


async def test_a_slow_subscriber_gets_an_overflow_marker_not_unbounded_memory() -> None:
    feed = InProcessChangeFeed(limit=3)
    slow = feed.subscribe(1)
    fast = feed.subscribe(1)
    feed.publish([added(1, 1), added(1, 2), added(1, 3)])
    assert fast.pending() == [added(1, 1), added(1, 2), added(1, 3)]
    feed.publish([added(1, 4), added(1, 5)])
    assert slow.pending() == [Change(ChangeKind.OVERFLOW, 1)]
    # After the marker is consumed, changes flow again.
    feed.publish([added(1, 6)])
    assert slow.pending() == [added(1, 6)]
    assert fast.pending() == [added(1, 4), added(1, 5), added(1, 6)]


async def test_closed_subscription_receives_nothing() -> None:
    feed = InProcessChangeFeed()
    with feed.subscribe(3) as sub:
        pass
    feed.publish([added(3, 1)])
    assert sub.pending() == []


async def test_overflow_all_tells_every_subscriber_to_resynchronise_once() -> None:
    feed = InProcessChangeFeed()
    one, two, other = feed.subscribe(1), feed.subscribe(1), feed.subscribe(2)
    feed.publish([added(1, 1)])
    feed.overflow_all()
    feed.overflow_all()  # one marker covers both losses
    assert one.pending() == two.pending() == [Change(ChangeKind.OVERFLOW, 1)]
    assert other.pending() == [Change(ChangeKind.OVERFLOW, 2)]
    feed.publish([added(1, 2)])  # after the marker was taken, changes arrive again
    assert one.pending() == [added(1, 2)]
