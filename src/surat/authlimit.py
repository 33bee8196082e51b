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
addresses through it.

The counters live in the store (`auth_clients`), not in the server's memory, so that every process
and node sees the same blocks (ARCHITECTURE decision 10: a guesser cannot spread over workers), and so
that `surat blocks list|lift` can show and lift them while the server runs. Each failure is one small
write transaction that reads, updates and prunes (`Store.update_auth_client`); each authentication
attempt is one indexed read. The policy itself is the pure `after_failure`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from surat.config import LimitsConfig
from surat.log import fields
from surat.store.base import AuthClientState, Store

log = logging.getLogger(__name__)

# A client's record (failures, strike count) is forgotten after this long without failures, unless it
# is still blocked; the store prunes such records as it writes, which bounds their number by the
# addresses that failed within a day.
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


@dataclass(frozen=True, slots=True)
class BlockPolicy:
    max_failures: int = 5  # failures within `window` seconds that start a block
    window: float = 900.0
    block: float = 300.0  # the first block; each further one doubles
    block_max: float = 86400.0

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> BlockPolicy:
        return cls(
            max_failures=limits.auth_max_failures,
            window=limits.auth_failure_window,
            block=limits.auth_block,
            block_max=limits.auth_block_max,
        )


def after_failure(
    state: AuthClientState | None, key: str, ip: str, now: float, policy: BlockPolicy
) -> AuthClientState:
    """A client's record after one more failure at `now` (epoch seconds)."""
    if state is None:
        state = AuthClientState(key, ip)
    elif now - state.last_failure > STRIKE_MEMORY:
        state = replace(state, strikes=0)
    state = replace(state, ip=ip, last_failure=now)
    if now < state.blocked_until:
        return state  # attempts racing the block (other connections) do not lengthen it
    failures = (*(t for t in state.failures if now - t <= policy.window), now)
    if len(failures) < policy.max_failures:
        return replace(state, failures=failures)
    period = min(policy.block * 2**state.strikes, policy.block_max)
    # A new count starts once the block is over.
    return replace(state, failures=(), strikes=state.strikes + 1, blocked_until=now + period)


class StoreAuthLimiter:
    """`AuthLimiter` over the store: shared by every listener, process and node using that store."""

    def __init__(self, store: Store, policy: BlockPolicy, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock

    async def retry_after(self, ip: str) -> float:
        state = await self.store.get_auth_client(client_key(ip))
        if state is None:
            return 0.0
        return max(0.0, state.blocked_until - self._clock())

    async def failure(self, ip: str, user: str | None, service: str) -> None:
        # The log line comes first and always: fail2ban counts on its own terms.
        log.warning("auth.failed", extra=fields(ip=ip, user=user or "-", service=service))
        now = self._clock()
        key = client_key(ip)
        before: list[AuthClientState | None] = []

        def update(state: AuthClientState | None) -> AuthClientState:
            before.append(state)
            return after_failure(state, key, ip, now, self.policy)

        state = await self.store.update_auth_client(key, update, forget_before=now - STRIKE_MEMORY)
        old_strikes = before[-1].strikes if before and before[-1] is not None else 0
        if state is not None and state.strikes > old_strikes and state.blocked_until > now:
            log.warning(
                "auth.blocked",
                extra=fields(ip=ip, key=key, seconds=round(state.blocked_until - now), strikes=state.strikes),
            )

    async def blocked(self) -> list[AuthClientState]:
        """The clients blocked now, soonest-lifted last."""
        return await self.store.list_auth_clients(blocked_after=self._clock())

    async def lift(self, ip: str) -> bool:
        """End the block of `ip` (or of the network it is counted in) and forget its failures."""
        key = client_key(ip)
        existed: list[bool] = []

        def forget(state: AuthClientState | None) -> None:
            existed.append(state is not None and state.blocked_until > self._clock())

        await self.store.update_auth_client(key, forget, forget_before=self._clock() - STRIKE_MEMORY)
        return bool(existed and existed[-1])
