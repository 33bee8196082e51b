"""DNS blocklist lookups of the connecting client on the MX (RFC 5782), off unless `limits.dnsbl` names zones.

The client 192.0.2.99 is listed in zone Z when `99.2.0.192.Z` has an A record in 127.0.0.0/8 (RFC 5782
§2.1); IPv6 clients are looked up by their 32 reversed nibbles (§2.4). All zones are asked at once. A lookup
that fails, times out or answers outside 127/8 counts as "not listed": a blocklist outage must not stop mail.
Spamhaus-style error answers in 127.255.255.0/24 ("you are over the query limit") are not listings either.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

from surat.delivery.mx import parse_ip
from surat.dns.base import DNSError, Resolver

LOOKUP_TIMEOUT = 10.0
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_ERROR_CODES = ipaddress.IPv4Network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> str | None:
    """The RFC 5782 §2.1/§2.4 name to look up, or None for something that is not an IP address."""
    address = parse_ip(ip)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        reversed_ip = ".".join(reversed(str(address).split(".")))
    else:
        reversed_ip = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_ip}.{zone}"


def _listed(answers: list[str]) -> bool:
    for answer in answers:
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            continue
        if address in _LOOPBACK and address not in _ERROR_CODES:
            return True
    return False


async def _lookup(resolver: Resolver, name: str) -> bool:
    try:
        return _listed(await resolver.a(name))
    except DNSError:
        return False  # NXDOMAIN: not listed; temporary failure: do not block on a blocklist outage


async def listing_zone(
    resolver: Resolver, ip: str, zones: Sequence[str], *, timeout: float = LOOKUP_TIMEOUT
) -> str | None:
    """The first of `zones` (in configured order) that lists `ip`, or None."""
    names = [query_name(ip, zone) for zone in zones]
    if not zones or names[0] is None:
        return None
    try:
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*(_lookup(resolver, name) for name in names if name is not None))
    except TimeoutError:
        return None
    return next((zone for zone, listed in zip(zones, results, strict=True) if listed), None)
