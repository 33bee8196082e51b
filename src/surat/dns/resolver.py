"""The `Resolver` over dnspython's asyncio resolver, with a bounded TTL cache.

Outcomes map onto the `Resolver` contract: NXDOMAIN raises `DNSError(NXDOMAIN)`; NOERROR with no
records of the type (NODATA) returns []; SERVFAIL, REFUSED, timeouts and network errors raise
`DNSError(TEMPORARY)`. Positive answers are cached for their TTL, NXDOMAIN and NODATA for the
negative TTL of the zone's SOA (RFC 2308 §5); temporary failures are never cached.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TLSA import TLSA
from dns.rdtypes.ANY.TXT import TXT

from surat.config import HostPort
from surat.dns.base import DNSError, DNSErrorKind, MXRecord, TLSARecord

# A CNAME chain longer than this is treated as a loop (temporary: the zone may be fixed).
MAX_CNAME_DEPTH = 8

_Records = list[str] | list[MXRecord]


class DnsResolver:
    """`Resolver` over dnspython; `nameservers` () means the system's (/etc/resolv.conf)."""

    def __init__(
        self,
        nameservers: Sequence[HostPort] = (),
        timeout: float = 5.0,
        *,
        cache_size: int = 10_000,
        max_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            servers: list[str | dns.nameserver.Nameserver] = []
            for server in nameservers:
                try:
                    ipaddress.ip_address(server.host)
                except ValueError:
                    raise ValueError(f"DNS server {server} must be an IP address") from None
                servers.append(dns.nameserver.Do53Nameserver(server.host, server.port))
            resolver.nameservers = servers
        # `timeout` bounds one whole lookup (all servers and retries), like a read timeout.
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, 2.0)
        self._resolver = resolver
        self._cache: OrderedDict[tuple[str, int], tuple[float, _Records | DNSError]] = OrderedDict()
        self._cache_size = cache_size
        self._inflight: dict[tuple[str, int], asyncio.Future[tuple[_Records, float | None]]] = {}
        self._max_ttl = max_ttl
        self._clock = clock
        self._secure_resolver: dns.asyncresolver.Resolver | None = None

    # ------------------------------------------------------------------------------ Resolver

    async def mx(self, name: str) -> list[MXRecord]:
        records = await self._lookup(name, dns.rdatatype.MX)
        return [r for r in records if isinstance(r, MXRecord)]

    async def a(self, name: str) -> list[str]:
        return _strings(await self._lookup(name, dns.rdatatype.A))

    async def aaaa(self, name: str) -> list[str]:
        return _strings(await self._lookup(name, dns.rdatatype.AAAA))

    async def txt(self, name: str) -> list[str]:
        return _strings(await self._lookup(name, dns.rdatatype.TXT))

    async def ptr(self, address: str) -> list[str]:
        try:
            reverse = dns.reversename.from_address(address).to_text()
        except (ValueError, dns.exception.SyntaxError):
            raise DNSError(DNSErrorKind.NXDOMAIN, address, "not an IP address") from None
        return _strings(await self._lookup(reverse, dns.rdatatype.PTR))

    async def presentation(self, name: str, rdtype: str) -> list[str]:
        """The records of type `rdtype` ("MX", "TXT", "SRV", "CNAME"...) at `name` in presentation
        format, as published now: not cached, for `surat dns --check` (surat.dnscheck). [] for NODATA;
        DNSError(NXDOMAIN) for a name that does not exist, DNSError(TEMPORARY) for failures."""
        try:
            answer = await self._resolve(name, dns.rdatatype.from_text(rdtype), name)
        except _NXDomain:
            raise DNSError(DNSErrorKind.NXDOMAIN, name.rstrip(".")) from None
        return [rdata.to_text() for rdata in answer.rrset] if answer.rrset is not None else []

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------------------ DnssecResolver

    async def secure_mx(self, name: str) -> tuple[list[MXRecord], bool]:
        rrset, authentic = await self._secure(name, dns.rdatatype.MX)
        records = [r for r in _convert(rrset) if isinstance(r, MXRecord)] if rrset is not None else []
        return records, authentic

    async def tlsa(self, name: str) -> tuple[list[TLSARecord], bool]:
        rrset, authentic = await self._secure(name, dns.rdatatype.TLSA)
        records = [
            TLSARecord(r.usage, r.selector, r.mtype, bytes(r.cert))
            for r in rrset or ()
            if isinstance(r, TLSA)
        ]
        return records, authentic

    async def _secure(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[Any, bool]:
        """(answer RRset or None, AD bit of the response). RFC 6840 §5.7: the query sets AD to ask
        for it; DO (RFC 3225) so that a validating resolver validates for us."""
        resolver = self._secure_resolver
        if resolver is None:
            resolver = self._secure_resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = self._resolver.nameservers
            resolver.lifetime, resolver.timeout = self._resolver.lifetime, self._resolver.timeout
            resolver.use_edns(0, dns.flags.DO, 1232)
            resolver.flags = dns.flags.RD | dns.flags.AD
        try:
            answer = await self._resolve(name, rdtype, name, resolver)
        except _NXDomain as exc:
            return None, exc.authentic  # an authenticated denial of existence, or not
        return answer.rrset, bool(answer.response.flags & dns.flags.AD)

    # ------------------------------------------------------------------------------ internals

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Records:
        key = (name.rstrip(".").lower(), int(rdtype))
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            expires, value = cached
            if expires > now:
                self._cache.move_to_end(key)
                if isinstance(value, DNSError):
                    raise DNSError(value.kind, value.name, "cached")
                return value.copy()  # callers may mutate what they get
            del self._cache[key]
        # Concurrent sessions asking the same question (20 messages from one sender domain) share
        # one query instead of each sending its own while the cache is cold.
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._query(key[0], rdtype))
            self._inflight[key] = pending
            pending.add_done_callback(functools.partial(self._query_done, key))
        try:
            records, ttl = await asyncio.shield(pending)
            records = records.copy()  # callers may mutate what they get
        except _NXDomain as exc:
            error = DNSError(DNSErrorKind.NXDOMAIN, name.rstrip("."))
            if exc.ttl is not None:
                self._store(key, error, exc.ttl)
            raise error from None
        if ttl is not None:
            self._store(key, records, ttl)
        return records

    def _query_done(self, key: tuple[str, int], done: asyncio.Future[tuple[_Records, float | None]]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved here too, so a failure nobody awaited any more is not logged

    def _store(self, key: tuple[str, int], value: _Records | DNSError, ttl: float) -> None:
        ttl = min(ttl, self._max_ttl)
        if ttl <= 0 or self._cache_size <= 0:
            return
        self._cache[key] = (self._clock() + ttl, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[_Records, float | None]:
        """Records of `rdtype` at `name` after CNAMEs, and how long the answer may be cached."""
        qname = name
        ttls: list[float] = []
        for _ in range(MAX_CNAME_DEPTH):
            answer = await self._resolve(qname, rdtype, name)
            # The TTL of a chain is that of its shortest-lived link.
            ttls.extend(rrset.ttl for rrset in answer.response.answer)
            if answer.rrset is not None:
                return _convert(answer.rrset), min(ttls)
            canonical = answer.canonical_name.to_text()
            if answer.canonical_name == dns.name.from_text(qname):
                # NODATA: cache for the SOA's negative TTL (RFC 2308 §5), else not at all.
                negative = _negative_ttl(answer.response)
                return [], None if negative is None else min([*ttls, negative])
            # The server gave the CNAME but not its target (another zone): ask for the target.
            qname = canonical
        raise DNSError(DNSErrorKind.TEMPORARY, name, "CNAME chain too long")

    async def _resolve(
        self,
        qname: str,
        rdtype: dns.rdatatype.RdataType,
        name: str,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> Any:
        try:
            return await (resolver or self._resolver).resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[Any, dns.message.Message] = exc.kwargs.get("responses") or {}
            negatives = [_negative_ttl(r) for r in responses.values()]
            known = [ttl for ttl in negatives if ttl is not None]
            authentic = bool(responses) and all(r.flags & dns.flags.AD for r in responses.values())
            raise _NXDomain(min(known) if known else None, authentic) from None
        except dns.resolver.LifetimeTimeout:
            raise DNSError(DNSErrorKind.TEMPORARY, name, "timeout") from None
        except dns.resolver.NoNameservers:
            # Every server answered SERVFAIL or REFUSED (or something unusable).
            raise DNSError(DNSErrorKind.TEMPORARY, name, "server failure") from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DNSError(DNSErrorKind.TEMPORARY, name, type(exc).__name__) from None


class _NXDomain(Exception):
    def __init__(self, ttl: float | None, authentic: bool = False) -> None:
        super().__init__("NXDOMAIN")
        self.ttl = ttl
        self.authentic = authentic  # every response had the AD bit (DnssecResolver)


def _negative_ttl(response: dns.message.Message) -> float | None:
    # RFC 2308 §5: the lesser of the SOA record's TTL and its MINIMUM field.
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            for rdata in rrset:
                if isinstance(rdata, SOA):
                    return float(min(rrset.ttl, rdata.minimum))
    return None


def _convert(rrset: Any) -> _Records:
    strings: list[str] = []
    records: list[MXRecord] = []
    for rdata in rrset:
        if isinstance(rdata, MX):
            exchange = rdata.exchange
            # RFC 7505: "0 ." is a null MX; the root name becomes "".
            host = "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True).lower()
            records.append(MXRecord(rdata.preference, host))
        elif isinstance(rdata, TXT):
            # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: the strings of one record are concatenated.
            strings.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        elif isinstance(rdata, PTR):
            strings.append(rdata.target.to_text(omit_final_dot=True).lower())
        else:
            strings.append(str(rdata.address))  # A, AAAA
    if records:
        records.sort(key=lambda r: r.preference)
        return records
    return strings


def _strings(records: _Records) -> list[str]:
    return [r for r in records if isinstance(r, str)]
