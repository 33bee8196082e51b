"""Which transport security a delivery needs, and where its failures are recorded.

Precedence for a destination domain (issue 15): DANE (RFC 7672, when the DNS answers are authentic,
per MX host: a host without TLSA records falls back to what follows; RFC 8461 §2 lets DANE take
precedence) over MTA-STS (RFC 8461) over `[delivery] require_tls_domains`, else opportunistic
STARTTLS (RFC 3207, RFC 7435) as before. A policy that requires authentication makes
the session use STARTTLS with a certificate verified against the next hop's host name (RFC 8461
§4.2: the MX host name, not the recipient domain) and never fall back to clear text.

Failures are handed to a `TlsReporter` with the RFC 8460 §4.3 result type: the default reporter logs
them, `surat.delivery.tlsrpt.StoreTlsReporter` also counts them for TLS-RPT aggregate reports.
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from surat.delivery.dane import DaneHost
from surat.log import fields
from surat.mailauth.mtasts import StsMode, StsPolicy

log = logging.getLogger(__name__)


class TlsPolicyKind(enum.Enum):
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, unverified; clear text otherwise
    MTA_STS = "mta-sts"
    STATIC = "require_tls_domains"
    DANE = "dane"


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    kind: TlsPolicyKind
    enforce: bool = False  # False with MTA_STS: testing mode, deliver anyway and report (§5)
    sts: StsPolicy | None = None
    # DANE: the MX hosts with authenticated TLSA records; the others use `fallback`.
    dane: Mapping[str, DaneHost] = field(default_factory=dict)
    fallback: TlsPolicy | None = None

    def for_host(self, host: str) -> TlsPolicy:
        """The policy for one MX host: a DANE policy applies to the hosts with TLSA records only."""
        if self.kind is TlsPolicyKind.DANE and host not in self.dane:
            return self.fallback or OPPORTUNISTIC
        return self

    @property
    def verifies(self) -> bool:
        """Sessions first try STARTTLS with a verified certificate (enforced or testing)."""
        return self.kind is not TlsPolicyKind.OPPORTUNISTIC

    def allows_host(self, host: str) -> bool:
        """RFC 8461 §4.1: only MX hosts matching the policy's patterns are candidates."""
        return self.sts is None or self.sts.matches(host)

    def describe(self, domain: str) -> str:
        if self.kind is TlsPolicyKind.MTA_STS:
            return f"MTA-STS policy ({'enforce' if self.enforce else 'testing'}) of {domain}"
        if self.kind is TlsPolicyKind.STATIC:
            return f"require_tls_domains ({domain})"
        if self.kind is TlsPolicyKind.DANE:
            return f"DANE (TLSA) of {domain}'s MX host"
        return "opportunistic TLS"


OPPORTUNISTIC = TlsPolicy(TlsPolicyKind.OPPORTUNISTIC)
REQUIRE_TLS = TlsPolicy(TlsPolicyKind.STATIC, enforce=True)


def from_sts(policy: StsPolicy | None) -> TlsPolicy | None:
    """The TlsPolicy for an MTA-STS policy; None for no policy or mode "none" (RFC 8461 §5)."""
    if policy is None or policy.mode is StsMode.NONE:
        return None
    return TlsPolicy(TlsPolicyKind.MTA_STS, enforce=policy.mode is StsMode.ENFORCE, sts=policy)


# RFC 8460 §4.3 result types.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
DNSSEC_INVALID = "dnssec-invalid"

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) for the result types above.
_X509_CERT_HAS_EXPIRED = 10
_X509_HOSTNAME_MISMATCH = 62
_X509_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})


def classify_tls_error(exc: BaseException) -> str:
    """The RFC 8460 result type of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _X509_HOSTNAME_MISMATCH:
            return CERTIFICATE_HOST_MISMATCH
        if exc.verify_code == _X509_CERT_HAS_EXPIRED:
            return CERTIFICATE_EXPIRED
        if exc.verify_code in _X509_UNTRUSTED:
            return CERTIFICATE_NOT_TRUSTED
    return VALIDATION_FAILURE


def describe_tls_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class TlsFailure:
    """One session that did not meet its policy, with what RFC 8460 §4.4 failure details record."""

    host: str  # the MX host (receiving-mx-hostname)
    result_type: str  # RFC 8460 §4.3
    detail: str  # why, for people (failure-reason-code)
    receiving_ip: str = ""  # "" when no connection was made
    sending_ip: str = ""  # this end of the connection (sending-mta-ip)


class TlsReporter(Protocol):
    def failure(self, domain: str, policy: TlsPolicy, failure: TlsFailure) -> None:
        """A session for `domain` did not meet `policy` (delivered anyway in testing mode)."""
        ...

    def success(self, domain: str, policy: TlsPolicy, host: str) -> None:
        """A session to `host` for `domain` met `policy`."""
        ...


class LoggingTlsReporter:
    """Logs every result (StoreTlsReporter logs through it and counts)."""

    def failure(self, domain: str, policy: TlsPolicy, failure: TlsFailure) -> None:
        log.warning(
            "queue.tls_policy_failure",
            extra=fields(
                domain=domain,
                policy=policy.kind.value,
                mode="enforce" if policy.enforce else "testing",
                host=failure.host,
                result=failure.result_type,
                detail=failure.detail[:300],
            ),
        )

    def success(self, domain: str, policy: TlsPolicy, host: str) -> None:
        log.info("queue.tls_policy_ok", extra=fields(domain=domain, policy=policy.kind.value, host=host))
