"""Local recipient resolution: accounts, aliases, catch-all, plus-addressing.

Used by smtpd at RCPT time and by the relay for local bounces. Works only through the `Store`
Protocol. For a local address the lookup order is:

1. an alias with this exact source (its targets are resolved in turn; a target equal to the source
   itself means "and keep a copy in this account");
2. an account with this address;
3. the address without its "+tag" subaddress (RFC 5233 style: `user+tag@d` -> `user@d`), by the
   same rules, so subaddresses work for aliases as well as for accounts;
4. the catch-all alias `@domain`.

Addresses in domains that are not local are remote and returned as such; what to do with them
(relay or refuse) is the caller's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from surat.store.base import Account, MailboxTarget, RecipientLookup, Store

# Alias chains longer than this are treated as loops (Postfix's virtual_alias_recursion_limit is
# also 1000 addresses / 100 levels; real setups never need more than a few).
MAX_ALIAS_DEPTH = 10
MAX_EXPANSION = 1000


@dataclass(frozen=True, slots=True)
class Resolution:
    local: tuple[MailboxTarget, ...] = ()  # one per account, in first-seen order
    remote: tuple[str, ...] = ()  # addresses outside our domains (from aliases, or as given)
    # An alias cycle met on the way (a -> b -> a), as the addresses in order with the first repeated at
    # the end. `surat alias add` refuses cycles, so one here slipped in (concurrent edits, an older
    # version): when nothing else was found, the caller reports a configuration error, not "no such
    # user", and logs the cycle for the administrator.
    loop: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.local or self.remote)


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


def base_address(address: str) -> str:
    """`user+tag@d` -> `user@d` (RFC 5233 subaddress removed); other addresses unchanged."""
    local, domain = split_address(address)
    if "+" in local and not local.startswith("+"):
        return f"{local.partition('+')[0]}@{domain}"
    return address


class _Expansion:
    def __init__(
        self, store: Store, prefetched: RecipientLookup | None = None, asked: Sequence[str] = ()
    ) -> None:
        self.store = store
        # What resolve_recipient read ahead for the addresses `asked` (absent there: none).
        self.prefetched = prefetched if prefetched is not None else RecipientLookup(domain_is_local=True)
        self.asked = frozenset(asked)
        self.accounts: dict[int, None] = {}
        self.remote: dict[str, str] = {}  # lower-cased -> as given
        self.seen: set[str] = set()
        self.path: list[str] = []  # the alias chain being expanded, to name a cycle
        self.loop: tuple[str, ...] = ()

    async def expand(self, address: str, depth: int, *, domain_is_local: bool = False) -> bool:
        """Add what `address` delivers to; False when it names nobody."""
        if depth > MAX_ALIAS_DEPTH or len(self.seen) >= MAX_EXPANSION:
            return False
        local, domain = split_address(address)
        if not local or not domain:
            return False
        if not domain_is_local and not await self.store.is_local_domain(domain):
            self.remote.setdefault(address.lower(), address)
            return True
        key = f"{local.lower()}@{domain}"
        if key in self.seen:
            if key in self.path and not self.loop:
                self.loop = (*self.path[self.path.index(key) :], key)
            return False  # an alias loop, or an address already expanded: nobody new here
        self.seen.add(key)
        if await self._exact(key, depth):
            return True
        base = base_address(key)
        if base != key and base not in self.seen and not self.loop:
            self.seen.add(base)
            if await self._exact(base, depth):
                return True
        if self.loop:
            return False  # a cycle is a configuration error: never hide it behind the catch-all
        return await self._targets(await self._alias_targets(f"@{domain}"), key, depth)

    def resolution(self) -> Resolution:
        return Resolution(
            local=tuple(MailboxTarget(account_id) for account_id in self.accounts),
            remote=tuple(self.remote.values()),
            loop=self.loop,
        )

    async def _alias_targets(self, source: str) -> list[str]:
        if source in self.asked:
            return self.prefetched.alias_targets.get(source, [])
        return await self.store.alias_targets(source)

    async def _account(self, address: str) -> Account | None:
        if address in self.asked:
            return self.prefetched.accounts.get(address)
        return await self.store.get_account(address)

    async def _exact(self, key: str, depth: int) -> bool:
        targets = await self._alias_targets(key)
        if targets:
            self.path.append(key)
            try:
                return await self._targets(targets, key, depth)
            finally:
                self.path.pop()
        account = await self._account(key)
        if account is not None:
            self.accounts.setdefault(account.id, None)
            return True
        return False

    async def _targets(self, targets: list[str], source: str, depth: int) -> bool:
        found = False
        for target in targets:
            if target.lower() == source:
                account = await self._account(source)  # "keep a copy here"
                if account is not None:
                    self.accounts.setdefault(account.id, None)
                    found = True
                continue
            found = await self.expand(target, depth + 1) or found
        return found


async def resolve(store: Store, address: str, *, domain_is_local: bool = False) -> Resolution:
    """Where mail for `address` (local@domain, domain in A-label form) goes; empty if nowhere.

    `domain_is_local`: the caller has just asked the store, so the first lookup is not repeated."""
    expansion = _Expansion(store)
    await expansion.expand(address, 0, domain_is_local=domain_is_local)
    return expansion.resolution()


async def resolve_recipient(store: Store, address: str) -> Resolution | None:
    """`resolve` for SMTP's RCPT: None when the address's domain is not local. The domain, the
    address's aliases and account, those of its base address (+tag removed) and the catch-all are read
    in one `lookup_recipient` (one round trip on PostgreSQL, issue 12); only alias chains beyond
    them take more reads."""
    local, domain = split_address(address)
    key = f"{local.lower()}@{domain}"
    # Bounded by MAX_LOOKUP_CANDIDATES: the address, its base address and the catch-all.
    candidates = list(dict.fromkeys([key, base_address(key), f"@{domain}"]))
    found = await store.lookup_recipient(domain, candidates)
    if not found.domain_is_local:
        return None
    expansion = _Expansion(store, found, candidates)
    await expansion.expand(address, 0, domain_is_local=True)
    return expansion.resolution()


async def alias_cycle(store: Store, source: str, target: str) -> tuple[str, ...] | None:
    """The cycle that adding the alias `source -> target` would close, or None.

    Follows the existing aliases from `target` (exact sources, and the base address of a +tag as
    `resolve` does) breadth-first; a path back to `source` is a cycle, returned as the addresses in
    order (`source`, `target`, ..., `source`). Bounded by MAX_EXPANSION addresses, like delivery.
    """
    source = source.lower()
    start = target.lower()
    if start == source:
        return None  # "source -> source" means "keep a copy here", not a loop
    previous: dict[str, str] = {start: source}
    queue = [start]
    while queue and len(previous) < MAX_EXPANSION:
        address = queue.pop(0)
        candidates = [address]
        base = base_address(address)
        if base != address:
            candidates.append(base)
        for candidate in candidates:
            for listed in await store.alias_targets(candidate):
                following = listed.lower()
                if following == candidate:
                    continue  # a "keep a copy" entry
                if following == source:
                    chain = [source, address]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return (source, *reversed(chain[1:]), source)
                if following not in previous:
                    previous[following] = address
                    queue.append(following)
    return None


async def owned_addresses(store: Store, account_address: str) -> set[str]:
    """The addresses a user may send as: their own and every alias source pointing to it.

    Catch-all sources ("@domain") are not included: pointing a catch-all at a user must not let
    them send as anyone in the domain.
    """
    own = account_address.lower()
    return {own} | {source.lower() for source in await store.aliases_of(own) if not source.startswith("@")}


async def owns(store: Store, account_address: str, address: str) -> bool:
    """Whether the user may use `address` as sender; a +tag of an owned address is owned too."""
    local, domain = split_address(address)
    candidate = f"{local.lower()}@{domain}"
    owned = await owned_addresses(store, account_address)
    return candidate in owned or base_address(candidate) in owned
