"""Per-user sending limits on submission: messages and recipients per sliding hour (issue 6).

A stolen password must not turn the server into a spam cannon: past either limit, MAIL FROM (messages)
or RCPT TO (recipients) gets `451 4.7.1`, a temporary refusal, so a legitimate burst is only delayed.
Counted are messages accepted (250 at the end of DATA) and their recipients. The counts live in the
store, shared by every process and node (`StoreSendingLimiter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from surat.config import LimitsConfig
from surat.store.base import Store

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


class StoreSendingLimiter:
    """`SendingLimiter` over the store (`sent_messages`): every process and node using that store
    counts the same hour for a user, so a stolen password gains nothing from spreading its sessions
    over the nodes behind a load balancer (ARCHITECTURE decision 10). Each check is one indexed read
    of at most the user's messages of one hour; each accepted message one small write that also
    forgets what left the window. Times are epoch seconds, which every node reads alike."""

    def __init__(
        self,
        store: Store,
        *,
        messages_per_hour: int = 500,
        recipients_per_hour: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.messages_per_hour = messages_per_hour
        self.recipients_per_hour = recipients_per_hour
        self._clock = clock

    @classmethod
    def from_config(cls, store: Store, limits: LimitsConfig) -> StoreSendingLimiter:
        return cls(
            store, messages_per_hour=limits.messages_per_hour, recipients_per_hour=limits.recipients_per_hour
        )

    async def may_send(self, user: str) -> bool:
        messages, _ = await self.store.sending_totals(user, since=self._clock() - WINDOW)
        return messages < self.messages_per_hour

    async def may_add_recipients(self, user: str, count: int) -> bool:
        _, recipients = await self.store.sending_totals(user, since=self._clock() - WINDOW)
        return recipients + count <= self.recipients_per_hour

    async def sent(self, user: str, recipients: int) -> None:
        now = self._clock()
        await self.store.record_sending(user, now, recipients, forget_before=now - WINDOW)
