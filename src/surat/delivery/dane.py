"""DANE for SMTP (RFC 7672): which TLSA records we can use, and whether a server certificate matches.

Supported: DANE-EE(3) with selector Cert(0) or SPKI(1) and matching type Full(0), SHA2-256(1) or
SHA2-512(2) (RFC 6698 §2.1, RFC 7671 §5.1). RFC 7672 §3.1.1: for DANE-EE, neither the names in the
certificate nor its validity dates are checked; the key (or certificate) is pinned by DNSSEC.

Not supported: DANE-TA(2). Checking a chain against a trust anchor needs the chain the server sent,
which Python's ssl module (before 3.13) does not expose. DANE-TA records count as unusable here, so a
host with only DANE-TA records gets mandatory TLS without authentication (RFC 7672 §2.2) rather than
a false failure. PKIX-TA(0) and PKIX-EE(1) are unusable by RFC 7672 §3.1.3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from surat.dns.base import TLSARecord

DANE_EE = 3
SELECTOR_CERT = 0
SELECTOR_SPKI = 1
MATCH_FULL = 0
MATCH_SHA256 = 1
MATCH_SHA512 = 2
_DIGEST_SIZES = {MATCH_SHA256: 32, MATCH_SHA512: 64}


@dataclass(frozen=True, slots=True)
class DaneHost:
    """What DNSSEC-authenticated TLSA records at `_25._tcp.HOST` ask for one MX host."""

    usable: tuple[TLSARecord, ...]  # empty: records exist, none usable -> TLS without authentication
    lookup_failed: str | None = None  # the TLSA lookup failed in a signed zone: the host is skipped


def usable_records(records: Sequence[TLSARecord]) -> tuple[TLSARecord, ...]:
    """The records this implementation can match (RFC 7672 §2.2: the others are ignored)."""
    return tuple(
        r
        for r in records
        if r.usage == DANE_EE
        and r.selector in (SELECTOR_CERT, SELECTOR_SPKI)
        and (r.matching_type == MATCH_FULL or len(r.data) == _DIGEST_SIZES.get(r.matching_type, -1))
    )


def certificate_matches(records: Sequence[TLSARecord], certificate_der: bytes) -> bool:
    """Whether the server's certificate (DER) matches one of the DANE-EE `records`."""
    spki: bytes | None = None
    for record in records:
        if record.selector == SELECTOR_CERT:
            selected = certificate_der
        else:
            if spki is None:
                try:
                    key = x509.load_der_x509_certificate(certificate_der).public_key()
                except ValueError:
                    return False
                spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            selected = spki
        if record.matching_type == MATCH_SHA256:
            selected = hashlib.sha256(selected).digest()
        elif record.matching_type == MATCH_SHA512:
            selected = hashlib.sha512(selected).digest()
        if selected == record.data:
            return True
    return False
