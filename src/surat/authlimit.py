"""Authentication-failure limiting shared by SMTP AUTH, IMAP and POP3 (issue 6).

Failures are counted per client address, never per account: after `max_failures` failures from one
address within `window` seconds, that address may not try again for `block` seconds; each further
block of the same address doubles the period, up to `block_max`. The account itself is never locked,
so its owner still logs in from anywhere else while a guesser is shut out.

Every failure is logged in one fixed form that fail2ban (or any log watcher) can match:

    ... surat.authlimit conn=Ab12 auth.failed ip=192.0.2.7 user=alice@example.com service=imap

(the user as the client typed it, "-" when the mechanism failed before naming one; never the
password), and every block as `auth.blocked ip=... seconds=...`.

IPv6 clients are counted per /64: one host usually holds a whole /64 and could otherwise rotate
addresses through it. The counters sit behind the `AuthLimiter` Protocol so that several nodes can
share them through a database later (ARCHITECTURE.md, "Scaling out").
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from surat.config import LimitsConfig
from surat.log import fields

log = logging.getLogger(__name__)

# Addresses tracked at once; the least recently seen are forgotten first (bounded memory under a
# distributed attack, at the price of forgetting the oldest guessers).
MAX_TRACKED = 100_000
# A blocked address's strike count (which sets the next block's length) is forgotten after this
# long without failures.
STRIKE_MEMORY = 86400.0


class AuthLimiter(Protocol):
    async def retry_after(self, ip: str) -> float:
        """Seconds until `ip` may try to authenticate again; 0 when it may now."""
        ...

    async def failure(self, ip: str, user: str | None, service: str) -> None:
        """Record (and log) one failed authentication from `ip` for the name `user`."""
        ...


def client_key(ip: str) -> str:
    """The unit counted: the address itself, or its /64 for IPv6 (IPv4-mapped counts as IPv4)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Client:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    strikes: int = 0  # blocks so far; the next one lasts block * 2**strikes
    last_failure: float = 0.0


class InMemoryAuthLimiter:
    """`AuthLimiter` for one process (every listener of a server shares one instance)."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        block: float = 300.0,
        block_max: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.block_max = block_max
        self._clock = clock
        self._max_tracked = max_tracked
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> InMemoryAuthLimiter:
        return cls(
            max_failures=limits.auth_max_failures,
            window=limits.auth_failure_window,
            block=limits.auth_block,
            block_max=limits.auth_block_max,
        )

    async def retry_after(self, ip: str) -> float:
        client = self._clients.get(client_key(ip))
        if client is None:
            return 0.0
        return max(0.0, client.blocked_until - self._clock())

    async def failure(self, ip: str, user: str | None, service: str) -> None:
        # The log line comes first and always: fail2ban counts on its own terms.
        log.warning("auth.failed", extra=fields(ip=ip, user=user or "-", service=service))
        now = self._clock()
        key = client_key(ip)
        client = self._clients.pop(key, None)
        if client is None:
            client = _Client()
        elif now - client.last_failure > STRIKE_MEMORY:
            client.strikes = 0
        self._clients[key] = client  # most recently seen last
        while len(self._clients) > self._max_tracked:
            self._clients.popitem(last=False)
        client.last_failure = now
        if now < client.blocked_until:
            return  # attempts racing the block (other connections) do not lengthen it
        failures = client.failures
        failures.append(now)
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            period = min(self.block * 2**client.strikes, self.block_max)
            client.strikes += 1
            client.blocked_until = now + period
            failures.clear()  # a new count starts once the block is over
            log.warning(
                "auth.blocked", extra=fields(ip=ip, key=key, seconds=round(period), strikes=client.strikes)
            )
