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

from dataclasses import dataclass

from surat.store.base import MailboxTarget, Store

# Alias chains longer than this are treated as loops (Postfix's virtual_alias_recursion_limit is
# also 1000 addresses / 100 levels; real setups never need more than a few).
MAX_ALIAS_DEPTH = 10
MAX_EXPANSION = 1000


@dataclass(frozen=True, slots=True)
class Resolution:
    local: tuple[MailboxTarget, ...] = ()  # one per account, in first-seen order
    remote: tuple[str, ...] = ()  # addresses outside our domains (from aliases, or as given)

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
    def __init__(self, store: Store) -> None:
        self.store = store
        self.accounts: dict[int, None] = {}
        self.remote: dict[str, str] = {}  # lower-cased -> as given
        self.seen: set[str] = set()

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
            return False  # an alias loop: this branch names nobody new
        self.seen.add(key)
        if await self._exact(key, depth):
            return True
        base = base_address(key)
        if base != key and base not in self.seen:
            self.seen.add(base)
            if await self._exact(base, depth):
                return True
        return await self._targets(await self.store.alias_targets(f"@{domain}"), key, depth)

    async def _exact(self, key: str, depth: int) -> bool:
        targets = await self.store.alias_targets(key)
        if targets:
            return await self._targets(targets, key, depth)
        account = await self.store.get_account(key)
        if account is not None:
            self.accounts.setdefault(account.id, None)
            return True
        return False

    async def _targets(self, targets: list[str], source: str, depth: int) -> bool:
        found = False
        for target in targets:
            if target.lower() == source:
                account = await self.store.get_account(source)  # "keep a copy here"
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
    return Resolution(
        local=tuple(MailboxTarget(account_id) for account_id in expansion.accounts),
        remote=tuple(expansion.remote.values()),
    )


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
