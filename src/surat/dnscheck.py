"""`surat dns DOMAIN --check` (issue 13): the records `surat dns` prints (surat.dnsrecords), each
compared with what the live DNS publishes, through the configured resolver ([dns] nameservers).
The admin console shows the same per domain: `check_records` is the one code path.

Each expected record gets one of:
- ok: published as expected;
- missing: nothing of its kind at that name (NXDOMAIN, or no record of the type; for TXT, no record
  with the same version tag, e.g. no `v=spf1` record beside other TXT records);
- different: records of its kind are there, but none equals it (the published ones are shown);
- error: the lookup failed (timeout, SERVFAIL): nothing is known.

What "equal" means, per type (so that a record a DNS provider reformats still counts):
- TXT: the record's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2: a long value is split into
  255-octet strings anywhere); tag-value lists (`v=DMARC1; p=...`, DKIM, MTA-STS, TLS-RPT) compared
  tag by tag, ignoring white space around tags and `;` (RFC 6376 §3.2, RFC 7489 §6.4);
- MX, SRV, CNAME: the record data as dnspython parses it (host names compare case-insensitively,
  RFC 4343);
- a CNAME expected but A records published instead count as ok when they are the addresses the
  CNAME's target has (what a provider that "flattens" CNAMEs publishes).
The check passes when every record is ok, except that an optional record (MTA-STS, TLS-RPT) may be
missing; an optional record published with another value fails it (a stale MTA-STS id makes senders
keep an old policy).

Bounded: one query per expected record (two more for a missing CNAME), about twenty for a domain,
each bounded by the resolver's timeout, all at once.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.TXT import TXT

from surat.dns.base import DNSError, DNSErrorKind
from surat.dnsrecords import DnsRecord, RecordSet


class RecordLookup(Protocol):
    """What the check asks of DNS (surat.dns.resolver.DnsResolver has it)."""

    async def presentation(self, name: str, rdtype: str) -> list[str]: ...


class CheckStatus(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RecordCheck:
    record: DnsRecord
    status: CheckStatus
    published: tuple[str, ...] = ()  # what is there, for DIFFERENT (and an ok that differs in form)
    detail: str = ""  # why, for ERROR

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.OK or (self.status is CheckStatus.MISSING and self.record.optional)


async def check_records(record_set: RecordSet, lookup: RecordLookup) -> list[RecordCheck]:
    """Every record of `record_set` checked against the live DNS, in the order of the set."""
    return list(await asyncio.gather(*(check_record(record, lookup) for record in record_set.records)))


def all_passed(checks: Sequence[RecordCheck]) -> bool:
    return all(check.passed for check in checks)


async def check_record(record: DnsRecord, lookup: RecordLookup) -> RecordCheck:
    try:
        published = await _published(lookup, record.name, record.type)
        if not published and record.type == "CNAME":
            return await _flattened_cname(record, lookup)
    except DNSError as exc:
        return RecordCheck(record, CheckStatus.ERROR, detail=str(exc))
    expected = _comparable(record.type, record.value)
    if record.type == "TXT":
        # Only the TXT records of the same kind: the apex holds SPF beside any number of others.
        tag = _version_tag(expected)
        published = [text for text in published if _version_tag(_comparable("TXT", text)) == tag]
    if not published:
        return RecordCheck(record, CheckStatus.MISSING)
    if any(_comparable(record.type, text) == expected for text in published):
        return RecordCheck(record, CheckStatus.OK)
    return RecordCheck(record, CheckStatus.DIFFERENT, tuple(sorted(published)))


def format_checks(checks: Sequence[RecordCheck]) -> str:
    """One line per record: status, type, name, the expected value, and what is published instead."""
    width = max((len(check.record.name) for check in checks), default=0)
    lines = []
    for check in checks:
        record = check.record
        status = check.status.value + (
            " (optional)" if record.optional and check.status is not CheckStatus.OK else ""
        )
        line = f"{status:<20} {record.type:<5} {record.name:<{width}}  {record.value}"
        if check.status is CheckStatus.DIFFERENT:
            line += f"  (published: {' | '.join(check.published)})"
        elif check.status is CheckStatus.ERROR:
            line += f"  ({check.detail})"
        lines.append(line)
    return "\n".join(lines) + "\n"


async def _published(lookup: RecordLookup, name: str, rdtype: str) -> list[str]:
    try:
        return await lookup.presentation(name, rdtype)
    except DNSError as exc:
        if exc.kind is DNSErrorKind.NXDOMAIN:
            return []
        raise


async def _flattened_cname(record: DnsRecord, lookup: RecordLookup) -> RecordCheck:
    addresses, target = await asyncio.gather(
        _published(lookup, record.name, "A"), _published(lookup, record.value, "A")
    )
    if addresses and sorted(addresses) == sorted(target):
        return RecordCheck(record, CheckStatus.OK, tuple(f"A {address}" for address in sorted(addresses)))
    if addresses:
        return RecordCheck(
            record, CheckStatus.DIFFERENT, tuple(f"A {address}" for address in sorted(addresses))
        )
    return RecordCheck(record, CheckStatus.MISSING)


def _comparable(rdtype: str, text: str) -> object:
    """A value that is equal for records that mean the same; the text itself if it does not parse."""
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    except (dns.exception.DNSException, ValueError):
        return text
    if isinstance(rdata, TXT):
        joined = b"".join(rdata.strings).decode("utf-8", "replace")
        if ";" in joined and joined.lower().startswith("v="):
            # A tag-value list: tags in order, white space around them and a trailing ";" ignored.
            return tuple(part.strip().replace(" ", "") for part in joined.split(";") if part.strip())
        return " ".join(joined.split())
    return rdata.to_text().lower()


def _version_tag(value: object) -> str:
    """The `v=...` tag a TXT record starts with (lower-case), or "" for other TXT records."""
    first = value[0] if isinstance(value, tuple) else str(value).split(" ", 1)[0]
    first = str(first).lower()
    return first if first.startswith("v=") else ""
