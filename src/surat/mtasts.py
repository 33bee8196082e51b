"""MTA-STS (RFC 8461): the policy a domain hosted here publishes, and strict parsers for policies
and `_mta-sts` TXT records.

The web server serves `render_policy(...)` at https://mta-sts.DOMAIN/.well-known/mta-sts.txt, and
`surat dns` prints the TXT record with `policy_id(...)`. The parsers follow the RFC's ABNF and refuse
anything else; the outbound side (issue 15) can use them on what other domains publish. Pure code:
no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from surat.config import Config

VERSION = "STSv1"
MODES = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: "maximum value of 31557600"
# RFC 8461 §3.3 does not fix a size; a policy is a few lines, and a sender reading one from another
# domain must bound what it reads. 64 KiB is what large providers document as their limit.
MAX_POLICY_SIZE = 64 * 1024
MEDIA_TYPE = "text/plain"  # RFC 8461 §3.2: "This resource ... has the media type text/plain"

# RFC 8461 §3.2 ABNF, each matched against one line (never across lines): linear, as every
# alternative is a fixed literal or a single character class repeated (no nested quantifiers).
_WSP = "[ \t]"
_SUB_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"  # RFC 5321 §4.1.2 sub-domain
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_FIELD = re.compile(
    rf"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{{0,31}}):{_WSP}*(?P<value>[\x21-\x7e]+){_WSP}*",
)
_MODE_VALUE = re.compile("enforce|testing|none")
_MX_VALUE = re.compile(rf"(?:\*\.)?{_DOMAIN}")
_MAX_AGE_VALUE = re.compile("[0-9]{1,10}")
# sts-policy-extension-value = 1*(%x21-3A / %x3C / %x3E-7E): no ";" and no "=".
_EXTENSION_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")

# RFC 8461 §3.1 TXT record: sts-id = 1*32(ALPHA / DIGIT)
_STS_ID = re.compile("[A-Za-z0-9]{1,32}")
_TXT_FIELD = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,31})=(?P<value>[\x21-\x3a\x3c\x3e-\x7e]+)")


class PolicyError(ValueError):
    """Not a valid MTA-STS policy or record; the message says which rule failed."""


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str
    max_age: int
    mx: tuple[str, ...]
    version: str = VERSION


def configured_policy(config: Config) -> Policy:
    """The policy of every local domain: they all receive mail at this server's hostname (the MX
    record `surat dns` prints), and [mta_sts] says the mode and lifetime."""
    return Policy(config.mta_sts.mode, config.mta_sts.max_age, (config.hostname,))


def render_policy(policy: Policy) -> str:
    """The policy body (RFC 8461 §3.2): CRLF-terminated `key: value` lines, version first."""
    lines = [f"version: {policy.version}", f"mode: {policy.mode}"]
    lines += [f"mx: {mx}" for mx in policy.mx]
    lines.append(f"max_age: {policy.max_age}")
    return "".join(line + "\r\n" for line in lines)


def policy_id(policy: Policy) -> str:
    """The `id` of the `_mta-sts` TXT record (RFC 8461 §3.1: senders re-fetch the policy when it
    changes): derived from the policy's text, so it changes exactly when the policy does and every
    process and node computes the same one. 20 hex digits, within the 32 alphanumerics allowed."""
    return hashlib.sha256(render_policy(policy).encode("ascii")).hexdigest()[:20]


def parse_policy(text: str) -> Policy:
    """Parse a policy body strictly per RFC 8461 §3.2; PolicyError on anything else."""
    if len(text) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} octets")
    # sts-policy-term = LF / CRLF; the last field's terminator is optional.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        match = _FIELD.fullmatch(line)
        if match is None:
            raise PolicyError(f"line {number}: not a `key: value` field")
        name, value = match["name"], match["value"]
        if name == "mx":
            if _MX_VALUE.fullmatch(value) is None:
                raise PolicyError(f"line {number}: mx {value!r} is not a host name or *.domain pattern")
            mx.append(value.lower())
        elif name in ("version", "mode", "max_age"):
            # §3.2: "If any non-repeated field ... appears more than once, senders MUST use the value
            # of the first occurrence."
            fields.setdefault(name, value)
        elif _EXTENSION_VALUE.fullmatch(value) is None:
            raise PolicyError(f"line {number}: bad value for extension field {name}")
        # Unknown (extension) fields are ignored (§3.2).
    if fields.get("version") != VERSION:
        raise PolicyError(f"version must be {VERSION}, got {fields.get('version')!r}")
    mode = fields.get("mode")
    if mode is None or _MODE_VALUE.fullmatch(mode) is None:
        raise PolicyError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    max_age_text = fields.get("max_age")
    if max_age_text is None or _MAX_AGE_VALUE.fullmatch(max_age_text) is None:
        raise PolicyError(f"max_age must be 1 to 10 digits, got {max_age_text!r}")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} is above {MAX_AGE_LIMIT}")
    # §3.2: mx is required ("one or more patterns"); only a policy of mode none has no use for it.
    if not mx and mode != "none":
        raise PolicyError("no mx field")
    return Policy(mode, max_age, tuple(mx))


@dataclass(frozen=True, slots=True)
class StsRecord:
    id: str


def parse_sts_record(text: str) -> StsRecord:
    """A `_mta-sts` TXT record (RFC 8461 §3.1): `v=STSv1; id=...` with optional extensions."""
    if not text.startswith("v=STSv1"):
        raise PolicyError("the record does not start with v=STSv1")
    parts = [part.strip(" \t") for part in text.split(";")]
    if parts[-1] == "":
        parts.pop()  # a trailing ";" is allowed
    record_id: str | None = None
    for part in parts[1:]:
        match = _TXT_FIELD.fullmatch(part)
        if match is None:
            raise PolicyError(f"bad field {part!r}")
        if match["name"] == "id" and record_id is None:
            if _STS_ID.fullmatch(match["value"]) is None:
                raise PolicyError("id must be 1 to 32 letters and digits")
            record_id = match["value"]
    if parts[0] != "v=STSv1":
        raise PolicyError("the record does not start with v=STSv1")
    if record_id is None:
        raise PolicyError("no id field")
    return StsRecord(record_id)
