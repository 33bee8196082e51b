"""The TLS-RPT DNS record (RFC 8460 §3): where a domain wants its SMTP TLS reports.

Strict: a record that does not follow the grammar means the domain has no usable TLS-RPT record,
and nothing is sent. Pure functions over the TXT strings; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from surat.mailauth.mtasts import PolicyError, check_record_extension
from surat.proto.smtp.address import SMTPSyntaxError, parse_path

VERSION = "v=TLSRPTv1"
_WSP = " \t"
# A TXT record is at most a few kilobytes (RFC 1035 §3.3: 255 octets per string, one UDP/TCP
# message in all); this bound keeps the parser's work linear and small whatever the DNS returns.
MAX_RECORD_LENGTH = 8192
# rua URIs kept from one record: a report goes to each, so a record cannot make us send many.
MAX_RUA = 10
# RFC 3986 URI characters (unreserved, reserved, "%"): anything else is not a URI.
_URI_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#[]@!$&'()*+,;=%"
)


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    mailto: tuple[str, ...]  # addresses from "mailto:" URIs (RFC 8460 §3: rua), decoded
    https: tuple[str, ...]  # "https:" URIs, as published


def parse_record(texts: Iterable[str]) -> TlsRptRecord | None:
    """The TLS-RPT record among the TXT records at `_smtp._tls.DOMAIN`; None when there is none.

    RFC 8460 §3: records that do not begin with "v=TLSRPTv1" and a field delimiter are discarded;
    when what remains is not exactly one record, the domain does not implement TLS-RPT; a malformed
    record is `PolicyError`. Unknown extension fields are ignored (they follow tlsrpt-extension)."""
    candidates = [text for text in texts if _is_candidate(text)]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise PolicyError(f"{len(candidates)} {VERSION} TXT records, expected one")
    record = candidates[0]
    if len(record) > MAX_RECORD_LENGTH:
        raise PolicyError(f"record longer than {MAX_RECORD_LENGTH} characters")
    # tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim],
    # field-delim = *WSP ";" *WSP
    fields = record[len(VERSION) :].split(";")  # fields[0] is whitespace: _is_candidate
    if fields[-1].strip(_WSP) == "" and len(fields) > 1:
        fields.pop()  # the optional trailing delimiter
    rua: tuple[str, ...] | None = None
    for field in fields[1:]:
        name, equals, value = field.strip(_WSP).partition("=")
        if not equals:
            raise PolicyError(f"field without '=': {field.strip(_WSP)[:40]!r}")
        if name == "rua":
            if rua is not None:
                raise PolicyError("more than one rua field")  # Note 1: exactly once
            rua = _parse_rua(value)
        else:
            check_record_extension(name, value)
    if rua is None:
        raise PolicyError("no rua field")
    mailto: list[str] = []
    https: list[str] = []
    for uri in rua:
        scheme, _, rest = uri.partition(":")
        if scheme.lower() == "mailto":
            mailto.append(_mailto_address(rest))
        elif scheme.lower() == "https":
            https.append(uri)
        # other schemes: none is defined for reports (§3 names mailto and https); ignored
    return TlsRptRecord(tuple(mailto), tuple(https))


def _is_candidate(text: str) -> bool:
    if not text.startswith(VERSION):
        return False
    return text[len(VERSION) :].lstrip(_WSP).startswith(";")


def _parse_rua(value: str) -> tuple[str, ...]:
    # tlsrpt-rua = "rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri); commas inside a URI are encoded.
    uris = tuple(part.strip(_WSP) for part in value.split(","))
    if len(uris) > MAX_RUA:
        raise PolicyError(f"more than {MAX_RUA} rua URIs")
    for uri in uris:
        scheme, colon, rest = uri.partition(":")
        if not colon or not scheme or not rest or not scheme[0].isascii() or not scheme[0].isalpha():
            raise PolicyError(f"rua is not a URI: {uri[:60]!r}")
        if not set(uri) <= _URI_CHARS or "!" in uri:
            # RFC 8460 §3: "," and "!" MUST be encoded in a tlsrpt-uri
            raise PolicyError(f"rua URI with characters a URI may not hold: {uri[:60]!r}")
    return uris


def _mailto_address(rest: str) -> str:
    """The address of a "mailto:" URI (RFC 6068): one address, percent-decoded, no header fields."""
    if "?" in rest:
        raise PolicyError("mailto: rua with header fields")
    try:
        address = unquote(rest, errors="strict") if "%" in rest else rest
    except UnicodeDecodeError:
        raise PolicyError(f"mailto: rua not UTF-8 once decoded: {rest[:60]!r}") from None
    # The address goes into a To: field: no control characters or spaces, whatever was encoded.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in address):
        raise PolicyError(f"mailto: rua with control characters or spaces: {rest[:60]!r}")
    try:
        parsed, remainder = parse_path(f"<{address}>", sender=False)
    except SMTPSyntaxError:
        parsed, remainder = None, ""
    if parsed is None or remainder or not parsed.local or not parsed.domain:
        raise PolicyError(f"mailto: rua with no valid address: {rest[:60]!r}")
    return address
