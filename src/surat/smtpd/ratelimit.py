"""Per-user sending limits on submission: messages and recipients per sliding hour (issue 6).

A stolen password must not turn the server into a spam cannon: past either limit, MAIL FROM (messages)
or RCPT TO (recipients) gets `451 4.7.1`, a temporary refusal, so a legitimate burst is only delayed.
Counted are messages accepted (250 at the end of DATA) and their recipients. The counters sit behind
the `SendingLimiter` Protocol so that several nodes can share them through a database later.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from surat.config import LimitsConfig

WINDOW = 3600.0


class SendingLimiter(Protocol):
    async def may_send(self, user: str) -> bool:
        """Whether `user` may start another message now."""
        ...

    async def may_add_recipients(self, user: str, count: int) -> bool:
        """Whether a message to `count` recipients stays within the user's recipient limit."""
        ...

    async def sent(self, user: str, recipients: int) -> None:
        """Record one accepted message to `recipients` recipients."""
        ...


class InMemorySendingLimiter:
    def __init__(
        self,
        *,
        messages_per_hour: int = 500,
        recipients_per_hour: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.messages_per_hour = messages_per_hour
        self.recipients_per_hour = recipients_per_hour
        self._clock = clock
        # user -> (accepted time, recipient count) of the last hour, oldest first
        self._sent: dict[str, deque[tuple[float, int]]] = {}

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> InMemorySendingLimiter:
        return cls(messages_per_hour=limits.messages_per_hour, recipients_per_hour=limits.recipients_per_hour)

    def _recent(self, user: str) -> deque[tuple[float, int]]:
        entries = self._sent.get(user)
        if entries is None:
            return deque()
        now = self._clock()
        while entries and now - entries[0][0] >= WINDOW:
            entries.popleft()
        if not entries:
            del self._sent[user]  # bounded: only users active in the last hour are kept
        return entries

    async def may_send(self, user: str) -> bool:
        return len(self._recent(user)) < self.messages_per_hour

    async def may_add_recipients(self, user: str, count: int) -> bool:
        return sum(n for _, n in self._recent(user)) + count <= self.recipients_per_hour

    async def sent(self, user: str, recipients: int) -> None:
        self._recent(user)
        self._sent.setdefault(user, deque()).append((self._clock(), recipients))
