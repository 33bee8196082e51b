"""The administrative operations, one code path for the `surat` command and the admin console
(issue 13): domains, DKIM keys and DNS records, accounts, aliases, the outbound queue, login blocks.

Each operation checks its input and the store's state, acts, and returns what the caller shows;
a refusal is an `OperationError` whose message is one line meant for the operator (`InvalidInput`
for malformed input, which the CLI answers with exit status 2). Callers print or render the result;
nothing here prints, prompts or knows about HTTP.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from surat.authlimit import BlockPolicy, StoreAuthLimiter, client_key
from surat.config import Config, LimitsConfig, MtaStsConfig
from surat.delivery import dkim
from surat.delivery.local import alias_cycle
from surat.dnsrecords import RecordSet, format_records, records_for
from surat.log import fields
from surat.mailauth.mtasts import policy_id, published_policy
from surat.store.base import Account, AuthClientState, Credentials, QueueEntry, Store, StoreError

log = logging.getLogger(__name__)


class OperationError(Exception):
    """A refused operation, as one line; exit_code 2 for usage/input problems, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class InvalidInput(OperationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


def log_change(who: str, what: str, **details: object) -> None:
    """One log line per change made through the admin console (who did what, to which object)."""
    log.info("admin.change", extra=fields(who=who, what=what, **details))


# ----------------------------------------------------------------------------------------- names


def normalize_domain(text: str, what: str = "domain") -> str:
    """Lower-case A-label (IDNA) form of a domain; raises InvalidInput if it is not a host name."""
    name = text.strip().rstrip(".")
    try:
        # Python's codec implements IDNA 2003 (RFC 3490); it maps U-labels to xn-- A-labels.
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidInput(f"{what} {text!r} is not a valid domain name") from None
    labels = ascii_name.split(".")
    # RFC 1035 §2.3.1 / RFC 1123 §2.1: letters, digits, hyphens; no hyphen at either end.
    if (
        not ascii_name
        or len(ascii_name) > 253
        or any(
            not 1 <= len(label) <= 63
            or label.startswith("-")
            or label.endswith("-")
            or not all(c.isascii() and (c.isalnum() or c == "-") for c in label)
            for label in labels
        )
        or labels[-1].isdigit()
    ):
        raise InvalidInput(f"{what} {text!r} is not a valid domain name")
    return ascii_name


# RFC 5322 §3.2.3 atext; RFC 6531 §3.3 adds any non-ASCII UTF-8 character.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def normalize_address(text: str, what: str = "address") -> str:
    """`local@domain` with the local part lower-cased and the domain in A-label form."""
    local, at, domain = text.strip().rpartition("@")
    if not at or not local:
        raise InvalidInput(f"{what} {text!r} is not of the form local@domain")
    local = local.lower()
    if (
        len(local.encode()) > 64  # RFC 5321 §4.5.3.1.1
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or not all(c in _ATEXT or c == "." or ord(c) > 127 for c in local)
    ):
        raise InvalidInput(f"{what} {text!r}: the local part {local!r} is not a valid dot-atom")
    return f"{local}@{normalize_domain(domain, what + ' domain')}"


def normalize_alias_source(text: str) -> str:
    """An address, or `@domain` for a catch-all."""
    if text.strip().startswith("@"):
        return "@" + normalize_domain(text.strip()[1:], "alias source domain")
    return normalize_address(text, "alias source")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def parse_size(text: str) -> int:
    """Bytes, optionally with a binary suffix K, M, G or T (1K = 1024)."""
    value = text.strip().upper().removesuffix("B")
    multiplier = 1
    for suffix, factor in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if value.endswith(suffix):
            value, multiplier = value[:-1], factor
            break
    if not value.isdigit():
        raise InvalidInput(f"{text!r} is not a size in bytes (e.g. 1073741824, 500M, 2G)")
    return int(value) * multiplier


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ----------------------------------------------------------------------------------------- domains


async def ensure_dkim_keys(store: Store, domain: str) -> tuple[dkim.DkimKey, ...]:
    """The domain's DKIM keys (RSA-2048 and Ed25519), created in the store when missing."""
    try:
        return await dkim.ensure_keys(store.keys, domain, datetime.now(UTC))
    except (dkim.DkimError, StoreError, OSError) as exc:
        raise OperationError(f"DKIM keys for {domain}: {exc}") from None


async def load_dkim_keys(store: Store, domain: str) -> tuple[dkim.DkimKey, ...]:
    try:
        return await dkim.load_keys(store.keys, domain)
    except (dkim.DkimError, StoreError, OSError) as exc:
        raise OperationError(f"DKIM keys for {domain}: {exc}") from None


async def add_domain(store: Store, domain: str) -> tuple[dkim.DkimKey, ...]:
    """Add a local domain and create its DKIM keys; returns the keys (to publish in DNS)."""
    if await store.is_local_domain(domain):
        raise OperationError(f"domain {domain} already exists")
    await store.add_domain(domain)
    return await ensure_dkim_keys(store, domain)


async def delete_domain(store: Store, domain: str, *, accounts_hint: str = "") -> str | None:
    """Delete a domain without accounts, and its aliases. Returns where its DKIM keys stay, if it had
    any: they are kept (re-adding the domain signs with the key DNS may still publish, and a private
    key is the operator's to destroy)."""
    if not await store.is_local_domain(domain):
        raise OperationError(f"domain {domain} does not exist")
    accounts = await store.list_accounts(domain)
    if accounts:
        raise OperationError(
            f"domain {domain} still has {len(accounts)} account(s); delete them first{accounts_hint}"
        )
    for alias in await store.list_aliases(domain):
        await store.delete_alias(alias.source, alias.target)
    await store.delete_domain(domain)
    if await store.keys.dkim_keys(domain):
        return store.keys.dkim_location(domain)
    return None


def dns_record_set(
    domain: str,
    hostname: str,
    ports: Mapping[str, int],
    keys: tuple[dkim.DkimKey, ...] | None,
    config: Config | None,
) -> RecordSet:
    """The records `surat dns DOMAIN` prints and `--check` looks up. The MTA-STS policy id is that of
    the configured policy when `config` is for `hostname`, else of the default [mta_sts] policy for
    that host."""
    policy = (
        published_policy(config.mta_sts.mode, config.mta_sts.max_age, hostname)
        if config is not None and config.hostname == hostname
        else published_policy(MtaStsConfig().mode, MtaStsConfig().max_age, hostname)
    )
    return records_for(domain, hostname, ports, policy_id(policy), dkim_keys=keys)


def dns_records(
    domain: str,
    hostname: str,
    ports: Mapping[str, int],
    keys: tuple[dkim.DkimKey, ...] | None,
    config: Config | None,
) -> str:
    """The zone-file text `surat dns DOMAIN` prints."""
    return format_records(dns_record_set(domain, hostname, ports, keys, config))


# ----------------------------------------------------------------------------------------- accounts


def check_account_address(address: str) -> None:
    """Refuse a (normalized) address no account may have, whatever the store holds."""
    if "+" in address.partition("@")[0]:
        raise InvalidInput(
            f"address {address}: '+' is reserved for plus-addressing (user+tag@ delivers to user@)"
        )


async def check_new_account(store: Store, address: str, *, domain_hint: str = "") -> None:
    """Refuse an address that cannot become an account (before anyone types a password for it)."""
    check_account_address(address)
    if not await store.is_local_domain(domain_of(address)):
        raise OperationError(f"{domain_of(address)} is not a local domain{domain_hint}")
    if await store.get_account(address) is not None:
        raise OperationError(f"account {address} already exists")
    if await store.alias_targets(address):
        raise OperationError(f"{address} is an alias; delete the alias first")


async def existing_account(store: Store, address: str) -> Account:
    account = await store.get_account(address)
    if account is None:
        raise OperationError(f"account {address} does not exist")
    return account


async def add_account(store: Store, address: str, credentials: Credentials, quota: int | None = None) -> None:
    await check_new_account(store, address)
    await store.add_account(address, credentials)
    if quota is not None:
        await store.set_quota(address, quota)


async def set_password(store: Store, address: str, credentials: Credentials) -> None:
    await existing_account(store, address)
    await store.set_credentials(address, credentials)


async def delete_account(store: Store, address: str) -> list[str]:
    """Delete the account and its mail; returns the aliases that still point to it."""
    await existing_account(store, address)
    await store.delete_account(address)
    return sorted(await store.aliases_of(address))


async def set_admin(store: Store, address: str, is_admin: bool) -> None:
    await existing_account(store, address)
    await store.set_admin(address, is_admin)


async def set_quota(store: Store, address: str, quota: int | None) -> None:
    await existing_account(store, address)
    await store.set_quota(address, quota)


# ----------------------------------------------------------------------------------------- aliases


async def add_alias(store: Store, source: str, target: str) -> None:
    if not await store.is_local_domain(domain_of(source)):
        raise OperationError(f"{domain_of(source)} is not a local domain; an alias source must be in one")
    if await store.get_account(source) is not None:
        raise OperationError(f"{source} is an account; an alias cannot have the same address")
    if source == target:
        raise OperationError("an alias cannot point to itself")
    if await store.is_local_domain(domain_of(target)):
        base = target.partition("+")[0] + "@" + domain_of(target) if "+" in target else target
        if await store.get_account(base) is None and not await store.alias_targets(base):
            raise OperationError(f"target {target} is in a local domain but is no account or alias")
    if target in await store.alias_targets(source):
        raise OperationError(f"alias {source} -> {target} already exists")
    cycle = await alias_cycle(store, source, target)
    if cycle is not None:
        raise OperationError(f"alias {source} -> {target} would make a loop: {' -> '.join(cycle)}")
    await store.add_alias(source, target)


async def delete_alias(store: Store, source: str, target: str | None) -> None:
    """Remove one target of `source`, or (target None) the whole alias."""
    existing = await store.alias_targets(source)
    if not existing or (target is not None and target not in existing):
        shown = f"{source} -> {target}" if target else source
        raise OperationError(f"alias {shown} does not exist")
    await store.delete_alias(source, target)


# ----------------------------------------------------------------------------------------- queue


async def queue_entry(store: Store, queue_id: str) -> QueueEntry:
    entry = await store.get_queue_entry(queue_id)
    if entry is None:
        raise OperationError(f"no queued message {queue_id}")
    return entry


async def retry_queue_entry(store: Store, queue_id: str, now: datetime) -> None:
    """Make the entry due now (the queue runner picks it up at its next pass)."""
    entry = await queue_entry(store, queue_id)
    await store.reschedule(entry.id, now)


async def drop_queue_entry(store: Store, queue_id: str) -> None:
    """Remove the entry without sending a bounce."""
    entry = await queue_entry(store, queue_id)
    await store.drop_queue_entry(entry.id)


async def flush_queue(store: Store, now: datetime) -> int:
    """Make every entry due now; returns how many."""
    return await store.flush_queue(now)


# ----------------------------------------------------------------------------------------- blocks


def _limiter(store: Store, limits: LimitsConfig) -> StoreAuthLimiter:
    return StoreAuthLimiter(store, BlockPolicy.from_config(limits))


async def blocked_clients(store: Store, limits: LimitsConfig) -> list[AuthClientState]:
    """Addresses blocked now after failed logins (surat.authlimit), soonest-lifted last."""
    return await _limiter(store, limits).blocked()


async def lift_block(store: Store, limits: LimitsConfig, ip: str) -> str:
    """End the block of `ip` (or of its IPv6 /64); returns the key that was blocked."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidInput(f"{ip!r} is not an IP address") from None
    if not await _limiter(store, limits).lift(ip):
        raise OperationError(f"{client_key(ip)} is not blocked")
    return client_key(ip)
