"""The in-process change feed (ARCHITECTURE decision 6) for the single-node store.

Each subscription has its own bounded queue. A subscriber that falls more than `limit` changes
behind does not make the server hold more memory: its queue is emptied and replaced by one
`Change(ChangeKind.OVERFLOW, account_id)`, after which it receives nothing until it has consumed
that marker. On OVERFLOW the consumer resynchronises from the store (an IMAP session re-reads the
selected mailbox with `list_messages`/`changes_since`; a POP3 session ignores it).

`publish` must be called on the event loop thread that consumes the subscriptions (the SQLite
store does so); it never blocks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable

from surat.store.base import Change, ChangeKind

DEFAULT_LIMIT = 10_000


class InProcessSubscription:
    def __init__(self, feed: InProcessChangeFeed, account_id: int, limit: int) -> None:
        self._feed = feed
        self.account_id = account_id
        self._limit = limit
        self._queue: deque[Change] = deque()
        self._event = asyncio.Event()
        self._overflowed = False
        self._closed = False

    def _push(self, change: Change) -> None:
        if self._closed or self._overflowed:
            return
        if len(self._queue) >= self._limit:
            self._queue.clear()
            self._queue.append(Change(ChangeKind.OVERFLOW, self.account_id))
            self._overflowed = True
        else:
            self._queue.append(change)
        self._event.set()

    def _push_overflow(self) -> None:
        if self._closed or self._overflowed:
            return  # an OVERFLOW is already waiting: it covers this loss too
        self._queue.clear()
        self._queue.append(Change(ChangeKind.OVERFLOW, self.account_id))
        self._overflowed = True
        self._event.set()

    def pending(self) -> list[Change]:
        changes = list(self._queue)
        self._queue.clear()
        self._overflowed = False
        self._event.clear()
        return changes

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while True:
            while self._queue:
                change = self._queue.popleft()
                if change.kind is ChangeKind.OVERFLOW:
                    self._overflowed = False
                yield change
            if self._closed:
                return
            self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._feed._remove(self)
            self._event.set()  # wake an iterator so that it ends

    def __enter__(self) -> InProcessSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessChangeFeed:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._subscribers: dict[int, set[InProcessSubscription]] = {}

    def subscribe(self, account_id: int) -> InProcessSubscription:
        subscription = InProcessSubscription(self, account_id, self._limit)
        self._subscribers.setdefault(account_id, set()).add(subscription)
        return subscription

    def publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            for subscription in tuple(self._subscribers.get(change.account_id, ())):
                subscription._push(change)

    def overflow_all(self) -> None:
        """Tell every subscriber that changes may have been missed (the cross-process relay lost some,
        see surat.workers.relay): each resynchronises from the store, as after its own overflow."""
        for subscribers in tuple(self._subscribers.values()):
            for subscription in tuple(subscribers):
                subscription._push_overflow()

    def subscriber_count(self, account_id: int) -> int:
        return len(self._subscribers.get(account_id, ()))

    def _remove(self, subscription: InProcessSubscription) -> None:
        subscribers = self._subscribers.get(subscription.account_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.account_id]
