"""The POP3 maildrop lock (RFC 1939 §8: one session per maildrop; RFC 2449 §8.1.2 [IN-USE]).

An interface, so that several nodes can later share the lock through the database; the
in-process implementation serves a single node.
"""

from __future__ import annotations

from typing import Protocol


class MaildropLease(Protocol):
    async def release(self) -> None: ...


class MaildropLocks(Protocol):
    async def acquire(self, account_id: int) -> MaildropLease | None:
        """The lease on the account's maildrop, or None while another session holds it."""
        ...


class _InProcessLease:
    __slots__ = ("_account_id", "_locks", "_released")

    def __init__(self, locks: InProcessMaildropLocks, account_id: int) -> None:
        self._locks = locks
        self._account_id = account_id
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._locks._held.discard(self._account_id)


class InProcessMaildropLocks:
    def __init__(self) -> None:
        self._held: set[int] = set()

    async def acquire(self, account_id: int) -> MaildropLease | None:
        if account_id in self._held:
            return None
        self._held.add(account_id)
        return _InProcessLease(self, account_id)

    def held(self, account_id: int) -> bool:
        return account_id in self._held
