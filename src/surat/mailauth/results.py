"""The Authentication-Results header field (RFC 8601): writing ours, removing forgeries of ours.

One header field carries every result, with our host name as the authserv-id. Before adding it, the MX removes
any Authentication-Results field that already claims our authserv-id (RFC 8601 §5): a sender could otherwise
pretend we had already vouched for the message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from surat.mailauth.dkim_verify import ARCResult, ARCStatus, DKIMResult
from surat.mailauth.dmarc import DMARCResult, DMARCStatus
from surat.mailauth.spf import SPFResult
from surat.message.headers import read_header

HEADER_NAME = "Authentication-Results"
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+")  # RFC 2045 token (RFC 8601 §2.2 value)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*")


def _printable(text: str) -> str:
    # header fields are 7-bit here (no SMTPUTF8 guarantee downstream); control characters would break folding
    if text.isascii() and text.isprintable():
        return text  # the usual case, without a character-by-character copy
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)


def _value(text: str) -> str:
    """RFC 8601 §2.2 `value`: a token, or else a quoted-string."""
    text = _printable(text)
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    text = _printable(text)
    return "(" + re.sub(r"([()\\])", r"\\\1", text) + ")"


def _reason(text: str) -> str:
    return f" reason={_value(text)}" if text else ""


def _mailfrom(sender: str) -> str:
    # RFC 8601 §2.7.2 pvalue: [[local-part] "@"] domain-name; an odd local-part is left out rather than quoted
    local, at, domain = sender.rpartition("@")
    if at and local and _DOT_ATOM.fullmatch(local):
        return f"{_printable(local)}@{_printable(domain)}"
    return _printable(domain or sender)


def _spf(spf: SPFResult) -> str:
    if spf.identity == "helo":
        prop = f"smtp.helo={_value(spf.domain)}"
    else:
        prop = f"smtp.mailfrom={_mailfrom(spf.sender)}"
    return f"spf={spf.result.value}{_reason(spf.reason)} {prop}"


def _dkim(result: DKIMResult) -> str:
    props = []
    if result.domain:
        props.append(f"header.d={_value(result.domain)}")
    if result.selector:
        props.append(f"header.s={_value(result.selector)}")
    if result.algorithm:
        props.append(f"header.a={_value(result.algorithm)}")
    if result.b_prefix:
        props.append(f"header.b={_value(result.b_prefix)}")  # RFC 6008: tells several signatures apart
    return f"dkim={result.status.value}{_reason(result.reason)}" + "".join(" " + p for p in props)


def _dmarc(result: DMARCResult) -> str:
    out = f"dmarc={result.status.value}"
    if result.status is DMARCStatus.FAIL and result.requested_policy is not None:
        # the policy asked for and the disposition applied, in the comment form OpenDMARC and others use
        out += " " + _comment(f"p={result.requested_policy.value} dis={result.policy.value}")
    out += _reason(result.reason)
    if result.from_domain:
        out += f" header.from={_value(result.from_domain)}"
    return out


def _arc(result: ARCResult) -> str:
    out = f"arc={result.status.value}"
    if result.status is not ARCStatus.NONE and result.instances:
        out += " " + _comment(f"i={result.instances}")
    return out + _reason(result.reason if result.status is ARCStatus.FAIL else "")


def authentication_results(
    authserv_id: str,
    *,
    spf: SPFResult | None = None,
    dkim: Sequence[DKIMResult] = (),
    dmarc: DMARCResult | None = None,
    arc: ARCResult | None = None,
) -> bytes:
    """The complete header field, folded, ending in CRLF, ready to be prepended to the message.

    With no results at all it says "none" (RFC 8601 §2.2). A message without DKIM signatures gets dkim=none.
    """
    parts: list[str] = []
    if spf is not None:
        parts.append(_spf(spf))
    if dkim:
        parts.extend(_dkim(result) for result in dkim)
    elif spf is not None or dmarc is not None:
        parts.append("dkim=none")
    if dmarc is not None:
        parts.append(_dmarc(dmarc))
    if arc is not None:
        parts.append(_arc(arc))
    head = _head(authserv_id)
    if not parts:
        return f"{head}; none\r\n".encode("ascii")
    return (head + "".join(f";\r\n\t{part}" for part in parts) + "\r\n").encode("ascii")


@functools.lru_cache(maxsize=16)  # one authserv-id per server
def _head(authserv_id: str) -> str:
    return f"{HEADER_NAME}: {_printable(authserv_id)}"


def _skip_cfws(text: str, pos: int) -> int:
    """Skip folding white space and (nested) comments (RFC 5322 §3.2.2)."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if depth:
            if char == "\\":
                pos += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif not char.isspace():
            break
        pos += 1
    return pos


def authserv_id_of(value: str) -> str:
    """The authserv-id of an Authentication-Results field value ("" if it has none)."""
    pos = _skip_cfws(value, 0)
    if value[pos : pos + 1] == '"':
        out: list[str] = []
        pos += 1
        while pos < len(value) and value[pos] != '"':
            if value[pos] == "\\":
                pos += 1
            out.append(value[pos : pos + 1])
            pos += 1
        return "".join(out)
    match = _TOKEN.match(value, pos)
    return match.group() if match else ""


def remove_forged_results(message: bytes, authserv_id: str) -> bytes:
    """Drop every Authentication-Results field in the header whose authserv-id is ours (RFC 8601 §5).

    Works on the header section only (up to the first empty line) and leaves all other bytes as they are.
    Fields of other authserv-ids stay: they are someone else's claims and harmless to keep.
    """
    ours = authserv_id.lower().removesuffix(".")
    name = HEADER_NAME.lower().encode()
    # the fields as surat.message reads them, for DKIM and IMAP alike, with where each lies
    header = read_header(message, spans=True)
    out: list[bytes] = []
    pos = 0
    for key, raw, (start, end) in zip(header.keys, header.raws, header.spans, strict=True):
        if key == name and authserv_id_of(raw.decode("utf-8", "replace")).lower().removesuffix(".") == ours:
            out.append(message[pos:start])
            pos = end
    if not out:
        return message
    out.append(message[pos:])
    return b"".join(out)
