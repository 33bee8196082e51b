"""The DNS boundary: what the relay (MX lookups) and mail authentication (SPF, DKIM, DMARC) ask of DNS.

The real implementation sits on dnspython (`surat.dns.resolver`); tests use a dict-backed fake
(`surat.dns.fake`). Answers are plain values so callers never see dnspython types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class DNSErrorKind(enum.Enum):
    NXDOMAIN = "nxdomain"  # the name does not exist: permanent
    TEMPORARY = "temporary"  # SERVFAIL, timeout, network: try again later


class DNSError(Exception):
    def __init__(self, kind: DNSErrorKind, name: str, detail: str = "") -> None:
        super().__init__(f"{kind.value}: {name}{': ' + detail if detail else ''}")
        self.kind = kind
        self.name = name


@dataclass(frozen=True, slots=True)
class MXRecord:
    preference: int
    exchange: str  # lower-case, no trailing dot; "" for a null MX (RFC 7505: "0 .")


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """RFC 6698 §2.1: certificate usage, selector, matching type, certificate association data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes


@runtime_checkable
class DnssecResolver(Protocol):
    """Lookups that also say whether the answer is authentic (the AD bit, RFC 4035 §3.2.3, RFC 6840
    §5.7), for DANE (RFC 7672). Only meaningful from a validating resolver the server trusts, on
    loopback: `[dns] dnssec_trusted`. Not cached: a DANE decision is made per delivery attempt.

    Both return (records, authentic); NXDOMAIN and NODATA are ([], authentic) (an authenticated
    denial, RFC 7672 §2.2.1); a failure (SERVFAIL, which is also what a bogus answer gets) raises
    DNSError(TEMPORARY)."""

    async def secure_mx(self, name: str) -> tuple[list[MXRecord], bool]: ...

    async def tlsa(self, name: str) -> tuple[list[TLSARecord], bool]: ...


class Resolver(Protocol):
    """Every method returns [] for NOERROR/NODATA and raises DNSError for NXDOMAIN or failures.

    CNAMEs are followed by the implementation. Names are absolute; a trailing dot is optional.
    """

    async def mx(self, name: str) -> list[MXRecord]: ...

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined into one (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        ...

    async def ptr(self, address: str) -> list[str]: ...
