"""Where to send mail for a domain: MX resolution (RFC 5321 §5.1) and configured next hops.

`resolve_targets` answers with either a `Route` (the hosts to try, in order, each with its
addresses) or a `RouteFailure` carrying the reply to record (permanent or temporary). Order of
precedence, as Postfix's transport_maps over relayhost over DNS: `[delivery] routes` for the
domain, then `[delivery] smarthost`, then the domain's MX records.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from itertools import groupby

from surat.config import HostPort
from surat.dns.base import DNSError, DNSErrorKind, MXRecord, Resolver
from surat.proto.smtp import replies as R
from surat.proto.smtp.replies import Reply

SMTP_PORT = 25
# Postfix tries at most 5 addresses per attempt (smtp_mx_address_limit); hosts beyond the limits
# wait for the next attempt, which starts again from the most preferred.
DEFAULT_MAX_HOSTS = 5
DEFAULT_MAX_ADDRESSES = 10


class RouteKind(enum.Enum):
    MX = "mx"  # the domain's MX records
    IMPLICIT_MX = "implicit-mx"  # no MX: the domain's own addresses (RFC 5321 §5.1)
    LITERAL = "literal"  # an address literal domain, "[192.0.2.1]" (RFC 5321 §4.1.3)
    ROUTE = "route"  # [delivery] routes
    SMARTHOST = "smarthost"  # [delivery] smarthost: the runner uses its AUTH and TLS settings


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # MX host name (or route / smarthost host, or the literal address)
    port: int
    addresses: tuple[str, ...]  # to try in this order: IPv6 first, then IPv4
    preference: int | None = None  # MX preference; None for routes, smarthost and literals


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Route:
    domain: str
    kind: RouteKind
    hosts: tuple[Host, ...]  # never empty

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every (host, address, port) to try, in order."""
        return tuple(Target(h.name, a, h.port) for h in self.hosts for a in h.addresses)


@dataclass(frozen=True, slots=True)
class RouteFailure:
    domain: str
    reply: Reply  # locally generated; reply.code >= 500 means give up now (bounce)
    detail: str = ""  # for logs and the DSN's diagnostic text

    @property
    def permanent(self) -> bool:
        return self.reply.code >= 500


RouteResult = Route | RouteFailure


async def resolve_targets(
    resolver: Resolver,
    domain: str,
    *,
    local_hostnames: Collection[str],
    routes: Mapping[str, HostPort] | None = None,
    smarthost: HostPort | None = None,
    rng: random.Random | None = None,
    port: int = SMTP_PORT,
    ipv6: bool = True,
    max_hosts: int = DEFAULT_MAX_HOSTS,
    max_addresses: int = DEFAULT_MAX_ADDRESSES,
) -> RouteResult:
    """The hosts to try for mail to `domain` (a lower-case A-label or an address literal).

    `local_hostnames`: names under which this server receives mail (its `hostname` at least),
    used to detect loops. `port` is the port for MX hosts (25; tests point it elsewhere).
    """
    domain = domain.rstrip(".").lower()
    rng = rng or random.Random()
    local = {name.rstrip(".").lower() for name in local_hostnames}
    limits = _Limits(max_hosts, max_addresses, ipv6)

    if routes and domain in routes:
        return await _static(resolver, domain, routes[domain], RouteKind.ROUTE, limits)
    if smarthost is not None:
        return await _static(resolver, domain, smarthost, RouteKind.SMARTHOST, limits)
    if domain.startswith("[") and domain.endswith("]"):
        return _literal(domain, port)

    try:
        records = await resolver.mx(domain)
    except DNSError as exc:
        return _dns_failure(domain, exc)

    if not records:
        # RFC 5321 §5.1: no MX records -> the domain itself is the only host, preference 0.
        if domain in local:
            return RouteFailure(domain, R.MAIL_LOOP, f"{domain} is this server")
        return await _hosts(resolver, domain, [MXRecord(0, domain)], RouteKind.IMPLICIT_MX, port, limits)

    # RFC 7505 §3: a null MX is a single record "0 ."; a "." among other records is unusable
    # and skipped (the domain is misconfigured, but its real MX hosts may still work).
    if len(records) == 1 and records[0].exchange == "":
        return RouteFailure(domain, R.NULL_MX)
    records = [MXRecord(r.preference, r.exchange.rstrip(".").lower()) for r in records if r.exchange]

    # RFC 5321 §5.1: when this server is one of the MX hosts, only more preferred hosts are
    # candidates; if none is more preferred, the mail loops (we are its best MX, yet not local).
    ours = [r.preference for r in records if r.exchange in local]
    if ours:
        records = [r for r in records if r.preference < min(ours)]
        if not records:
            return RouteFailure(domain, R.MAIL_LOOP, f"{domain}'s best MX is this server")

    return await _hosts(resolver, domain, _order(records, rng), RouteKind.MX, port, limits)


@dataclass(frozen=True, slots=True)
class _Limits:
    hosts: int
    addresses: int
    ipv6: bool


def _order(records: list[MXRecord], rng: random.Random) -> list[MXRecord]:
    """By preference; RFC 5321 §5.1: hosts of equal preference in random order (load spreading)."""
    ordered: list[MXRecord] = []
    for _, group in groupby(sorted(records, key=lambda r: r.preference), key=lambda r: r.preference):
        same = list(group)
        rng.shuffle(same)
        ordered.extend(same)
    return ordered


def _dns_failure(domain: str, exc: DNSError) -> RouteFailure:
    if exc.kind is DNSErrorKind.NXDOMAIN:
        return RouteFailure(domain, R.DOMAIN_NOT_FOUND, str(exc))
    return RouteFailure(domain, R.DNS_TEMPORARY, str(exc))


async def _addresses(resolver: Resolver, name: str, limits: _Limits) -> tuple[list[str], DNSError | None]:
    """AAAA then A addresses of `name`; the worse of the two errors when there are none."""
    found: list[str] = []
    errors: list[DNSError] = []
    lookups = (resolver.aaaa, resolver.a) if limits.ipv6 else (resolver.a,)
    for lookup in lookups:
        try:
            found.extend(a for a in await lookup(name) if a not in found)
        except DNSError as exc:
            errors.append(exc)
    if found or not errors:
        return found, None
    temporary = [e for e in errors if e.kind is DNSErrorKind.TEMPORARY]
    return [], (temporary or errors)[0]


async def _hosts(
    resolver: Resolver,
    domain: str,
    records: list[MXRecord],
    kind: RouteKind,
    port: int,
    limits: _Limits,
) -> RouteResult:
    hosts: list[Host] = []
    budget = limits.addresses
    temporary: DNSError | None = None
    last_error: DNSError | None = None
    for record in records:
        if len(hosts) >= limits.hosts or budget <= 0:
            break
        addresses, error = await _addresses(resolver, record.exchange, limits)
        if error is not None:
            last_error = error
            if error.kind is DNSErrorKind.TEMPORARY:
                temporary = temporary or error
            continue
        if not addresses:
            continue
        addresses = addresses[:budget]
        budget -= len(addresses)
        hosts.append(Host(record.exchange, port, tuple(addresses), record.preference))
    if hosts:
        return Route(domain, kind, tuple(hosts))
    if temporary is not None:
        return RouteFailure(domain, R.DNS_TEMPORARY, str(temporary))
    if kind is RouteKind.IMPLICIT_MX and last_error is not None:
        # The MX lookup said NODATA, the address lookups NXDOMAIN: the domain does not exist.
        return RouteFailure(domain, R.DOMAIN_NOT_FOUND, str(last_error))
    return RouteFailure(domain, R.NO_ADDRESS, ", ".join(r.exchange for r in records))


async def _static(
    resolver: Resolver, domain: str, hop: HostPort, kind: RouteKind, limits: _Limits
) -> RouteResult:
    """A configured next hop: an address as is, a name through its A/AAAA records (no MX)."""
    host = hop.host.strip("[]")
    if _is_ip(host):
        return Route(domain, kind, (Host(host, hop.port, (host,)),))
    addresses, error = await _addresses(resolver, host.rstrip(".").lower(), limits)
    if error is not None and error.kind is DNSErrorKind.TEMPORARY:
        return RouteFailure(domain, R.DNS_TEMPORARY, f"{kind.value} {hop}: {error}")
    if not addresses:
        # A broken configured route is the operator's to fix: keep the mail (temporary).
        return RouteFailure(domain, R.no_address_for_host(kind.value, hop.host))
    return Route(domain, kind, (Host(host, hop.port, tuple(addresses[: limits.addresses])),))


def _literal(domain: str, port: int) -> RouteResult:
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    if not _is_ip(inner):
        return RouteFailure(domain, R.bad_address_literal(domain))
    return Route(domain, RouteKind.LITERAL, (Host(inner, port, (inner,)),))


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an address, IPv4-mapped IPv6 (::ffff:a.b.c.d) as the IPv4 address it stands for;
    None for anything that is not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public_address(address: str, own_addresses: Collection[str] = ()) -> bool:
    """Whether mail may go to `address` when DNS or an address literal named it.

    Refused: loopback, private (RFC 1918, RFC 4193 ULA), link-local, multicast, unspecified, reserved,
    shared (RFC 6598) and documentation space (`is_global` is False for all but multicast), IPv4-mapped
    IPv6 forms of those, and the addresses this server listens on. Configured routes and the smarthost
    are trusted and never checked (issue 11 item 11).
    """
    ip = parse_ip(address)
    return ip is not None and ip.is_global and not ip.is_multicast and str(ip) not in own_addresses


def refuse_private(route: Route, own_addresses: Collection[str] = ()) -> RouteResult:
    """`route` without the addresses `is_public_address` refuses; a permanent failure if none is left.

    For routes found in DNS or an address literal only: `[delivery] routes` and the smarthost are the
    operator's own choice (a relay on 127.0.0.1 is normal there).
    """
    if route.kind in (RouteKind.ROUTE, RouteKind.SMARTHOST):
        return route
    hosts: list[Host] = []
    refused: list[str] = []
    for host in route.hosts:
        allowed = tuple(a for a in host.addresses if is_public_address(a, own_addresses))
        refused += (a for a in host.addresses if a not in allowed)
        if allowed:
            hosts.append(Host(host.name, host.port, allowed, host.preference))
    if hosts:
        return Route(route.domain, route.kind, tuple(hosts))
    return RouteFailure(route.domain, R.REFUSED_DESTINATION, "refused destination " + ", ".join(refused))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
