"""MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, and MX host matching; and the
policy this server publishes for its own domains (`published_policy`, `render_policy`, `policy_id`).

Pure functions, no I/O: the fetch and the cache of other domains' policies live in
`surat.delivery.stspolicies`; the web server serves ours (`surat.web.policy`) and `surat dns`
prints the TXT record with its id.

Strict where the RFC gives a grammar (RFC 8461 §3.1, §3.2 ABNF), lenient only where leniency cannot
weaken a policy: unknown keys are ignored (§3.2 "extension" fields), blank lines are skipped, and
both CRLF and LF end a line (the ABNF's `sts-policy-term-delim`, erratum 6253). Everything else
that does not parse raises `PolicyError`; the caller then treats the domain as having no usable
policy (§3.3: a sender "MUST NOT" use a malformed policy).

Work is linear in the input, and the input is bounded: `MAX_POLICY_SIZE` bytes for a policy file
(enforced here and by the fetcher), a TXT answer by the DNS message size.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 8461 §3.3: "the policy file MUST NOT exceed 64 KiB" (senders may refuse anything larger).
MAX_POLICY_SIZE = 64 * 1024
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
MAX_MAX_AGE = 31_557_600
# RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT).
MAX_ID_LENGTH = 32
# RFC 8461 §3.1/§3.2: ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
MAX_EXTENSION_NAME = 32
# RFC 1035 §2.3.4: a domain name is at most 253 characters in text form, a label 63.
MAX_DOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_EXTENSION_NAME_CHARS = _ALNUM | frozenset("_-.")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_WSP = " \t"


class PolicyError(ValueError):
    """A TXT record or policy file that does not follow RFC 8461; the message says what is wrong."""


class StsMode(enum.Enum):
    """RFC 8461 §5: what a sender does when a policy is not satisfied."""

    ENFORCE = "enforce"  # do not deliver (defer)
    TESTING = "testing"  # deliver anyway, report the failure (TLS-RPT, RFC 8460)
    NONE = "none"  # the domain withdrew its policy


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The `_mta-sts.DOMAIN` TXT record (RFC 8461 §3.1)."""

    id: str  # changes whenever the policy changes: the sender refetches


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A policy file (RFC 8461 §3.2)."""

    mode: StsMode
    max_age: int  # seconds the policy may be cached and applied
    mx: tuple[str, ...]  # lower-case patterns: "mail.example.com" or "*.example.net"

    def matches(self, host: str) -> bool:
        """Whether MX host `host` is allowed by one of the policy's `mx` patterns (RFC 8461 §4.1)."""
        return any(mx_pattern_matches(pattern, host) for pattern in self.mx)


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: a pattern is a host name, or "*." and a name where the wildcard stands for
    exactly one left-most label: "*.example.com" matches "mx1.example.com" but neither
    "example.com" nor "a.b.example.com". Case-insensitive; a trailing dot on `host` is ignored."""
    host = host.rstrip(".").lower()
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def parse_record(texts: Iterable[str]) -> StsRecord | None:
    """The MTA-STS record among the TXT records at `_mta-sts.DOMAIN`; None when there is none.

    RFC 8461 §3.1: records that do not begin with "v=STSv1;" are discarded; if what remains is not
    exactly one record, or that one is malformed, the domain has no MTA-STS: `PolicyError`.
    """
    candidates = [text for text in texts if text.startswith("v=STSv1;")]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise PolicyError(f"{len(candidates)} v=STSv1 TXT records, expected one")
    record_id: str | None = None
    # sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim], where
    # sts-field-delim = *WSP ";" *WSP.
    fields = candidates[0][len("v=STSv1") :].split(";")
    if fields[-1].strip(_WSP) == "":
        fields.pop()  # the optional trailing delimiter (or whitespace before the end)
    if len(fields) < 2:
        raise PolicyError("no fields after v=STSv1")
    for field in fields[1:]:
        name, equals, value = field.strip(_WSP).partition("=")
        if not equals:
            raise PolicyError(f"field without '=': {field.strip(_WSP)[:40]!r}")
        if name == "id":
            if record_id is not None:
                raise PolicyError("more than one id field")
            if not 1 <= len(value) <= MAX_ID_LENGTH or not set(value) <= _ALNUM:
                raise PolicyError(f"id must be 1 to {MAX_ID_LENGTH} letters or digits: {value[:40]!r}")
            record_id = value
        else:
            check_record_extension(name, value)
    if record_id is None:
        raise PolicyError("no id field")
    return StsRecord(record_id)


def parse_policy(body: bytes) -> StsPolicy:
    """A policy file's body (RFC 8461 §3.2); `PolicyError` when it is not a valid STSv1 policy."""
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8") from None
    version: str | None = None
    mode: StsMode | None = None
    max_age: int | None = None
    mx: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").rstrip(_WSP)  # sts-policy-field *WSP, then CRLF or LF
        if not line:
            continue
        # sts-policy-field-delim = ":" *WSP: the key runs up to the colon, no space before it.
        key, colon, value = line.partition(":")
        value = value.lstrip(_WSP)
        if not colon:
            raise PolicyError(f"line {number}: no ':'")
        if key == "version":
            if version is not None:
                raise PolicyError(f"line {number}: version given twice")
            if value != "STSv1":
                raise PolicyError(f"line {number}: unsupported version {value[:40]!r}")
            version = value
        elif key == "mode":
            if mode is not None:
                raise PolicyError(f"line {number}: mode given twice")
            try:
                mode = StsMode(value)
            except ValueError:
                raise PolicyError(f"line {number}: unknown mode {value[:40]!r}") from None
        elif key == "max_age":
            if max_age is not None:
                raise PolicyError(f"line {number}: max_age given twice")
            # sts-policy-max-age-value = 1*10DIGIT, at most MAX_MAX_AGE (§3.2).
            if not 1 <= len(value) <= 10 or not value.isascii() or not value.isdigit():
                raise PolicyError(f"line {number}: max_age is not a number of seconds")
            max_age = int(value)
            if max_age > MAX_MAX_AGE:
                raise PolicyError(f"line {number}: max_age {max_age} above {MAX_MAX_AGE}")
        elif key == "mx":
            mx.append(_mx_pattern(value, number))
        else:
            # §3.2: sts-policy-extension; unknown keys are ignored once their name is well formed.
            _check_extension_name(key)
    if version is None:
        raise PolicyError("no version field")
    if mode is None:
        raise PolicyError("no mode field")
    if max_age is None:
        raise PolicyError("no max_age field")
    if not mx and mode is not StsMode.NONE:
        # §3.2: "mx": one or more patterns; a policy that names no host could never be satisfied.
        raise PolicyError("no mx field")
    return StsPolicy(mode, max_age, tuple(dict.fromkeys(mx)))


def _mx_pattern(value: str, number: int) -> str:
    """sts-policy-mx-value = ["*."] Domain (RFC 5321 Domain: LDH labels, no empty label)."""
    pattern = value.lower()
    name = pattern.removeprefix("*.")
    if not name or len(name) > MAX_DOMAIN_LENGTH:
        raise PolicyError(f"line {number}: bad mx pattern {value[:60]!r}")
    for label in name.split("."):
        if (
            not label
            or len(label) > MAX_LABEL_LENGTH
            or not set(label) <= _LDH
            or label.startswith("-")
            or label.endswith("-")
        ):
            raise PolicyError(f"line {number}: bad mx pattern {value[:60]!r}")
    return pattern


def check_record_extension(name: str, value: str) -> None:
    """An extension field of a TXT record: RFC 8461 §3.1 sts-extension, and the same grammar in
    RFC 8460 §3 tlsrpt-extension; `PolicyError` when it does not follow it."""
    _check_extension_name(name)
    # ext-value = 1*(%x21-3A / %x3C / %x3E-7E): visible ASCII except ";" and "=".
    if not value or any(not 0x21 <= ord(c) <= 0x7E or c == "=" for c in value):
        raise PolicyError(f"bad value for {name!r}")


def _check_extension_name(name: str) -> None:
    if (
        not 1 <= len(name) <= MAX_EXTENSION_NAME
        or name[0] not in _ALNUM
        or not set(name) <= _EXTENSION_NAME_CHARS
    ):
        raise PolicyError(f"bad field name {name[:40]!r}")


# ------------------------------------------------------------------------------------ publishing

MEDIA_TYPE = "text/plain"  # RFC 8461 §3.2: "This resource ... has the media type text/plain"


def published_policy(mode: str, max_age: int, hostname: str) -> StsPolicy:
    """The policy of every local domain: they all receive mail at this server's hostname (the MX
    record `surat dns` prints); `[mta_sts]` says the mode and lifetime."""
    return StsPolicy(StsMode(mode), max_age, (hostname.lower(),))


def render_policy(policy: StsPolicy) -> str:
    """The policy body (RFC 8461 §3.2): CRLF-terminated `key: value` lines, version first."""
    lines = ["version: STSv1", f"mode: {policy.mode.value}"]
    lines += [f"mx: {mx}" for mx in policy.mx]
    lines.append(f"max_age: {policy.max_age}")
    return "".join(line + "\r\n" for line in lines)


def policy_id(policy: StsPolicy) -> str:
    """The `id` of the `_mta-sts` TXT record (RFC 8461 §3.1: senders re-fetch the policy when it
    changes): derived from the policy's text, so it changes exactly when the policy does and every
    process and node computes the same one. 20 hex digits, within the 32 alphanumerics allowed."""
    return hashlib.sha256(render_policy(policy).encode("ascii")).hexdigest()[:20]
