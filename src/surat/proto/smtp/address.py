"""Envelope addresses and ESMTP parameters of MAIL and RCPT.

Paths follow RFC 5321 §4.1.2 (with RFC 6531 UTF-8 when SMTPUTF8 is in use); domains are normalised
to lower-case A-labels (IDNA), so `Address.domain` can be compared and looked up as is. Local parts
keep their case: whether they are case-sensitive is the receiving domain's business (RFC 5321 §2.4).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from surat.proto.smtp.replies import (
    BAD_RECIPIENT_SYNTAX,
    BAD_SENDER_SYNTAX,
    SYNTAX_ERROR,
    UNKNOWN_PARAMETER,
    Reply,
)

# RFC 5321 §4.1.2 atext (from RFC 5322 §3.2.3)
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HEX = frozenset("0123456789ABCDEFabcdef")

# RFC 5321 §4.5.3.1.1-3
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256


class SMTPSyntaxError(ValueError):
    """Bad input in a command argument; carries the reply to send."""

    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(detail or str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    # lower-case A-label domain, or an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]";
    # "" only for the special RCPT TO:<Postmaster> (RFC 5321 §4.1.1.3)
    domain: str

    def __str__(self) -> str:
        local = self.local
        if not _is_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def is_ascii(self) -> bool:
        return self.local.isascii()


def _is_dot_string(text: str) -> bool:
    atoms = text.split(".")
    return bool(text) and all(atoms) and all(c in _ATEXT or ord(c) > 127 for c in text.replace(".", ""))


def normalize_domain(text: str, *, utf8: bool = True) -> str:
    """A domain as it appears in a path or config -> lower-case A-label form.

    Raises ValueError for anything that is not an RFC 5321 §4.1.2 Domain (or, with `utf8`,
    an RFC 6531 U-label domain that IDNA can convert).
    """
    if not text or text.endswith(".") or text.startswith("."):
        raise ValueError(f"bad domain {text!r}")
    if not text.isascii():
        if not utf8:
            raise ValueError("non-ASCII domain")
        try:
            # Python's codec is IDNA2003 (nameprep + punycode): it maps U-labels to A-labels and
            # lower-cases; good enough to normalise, and A-labels pass through unchanged.
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"bad IDNA domain: {exc}") from None
    text = text.lower()
    if len(text) > MAX_DOMAIN:
        raise ValueError("domain too long")
    for label in text.split("."):
        if not label or len(label) > 63 or not set(label) <= _LDH:
            raise ValueError(f"bad domain label {label!r}")
        if label[0] == "-" or label[-1] == "-":
            raise ValueError(f"bad domain label {label!r}")
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise ValueError(f"bad A-label {label!r}") from None
    return text


_IPV6_CHARS = _HEX | {":", "."}


def _snum_ipv4(text: str) -> str | None:
    """RFC 5321 §4.1.3 IPv4-address-literal (Snum 3("." Snum), Snum = 1*3DIGIT up to 255), normalised."""
    parts = text.split(".")
    if len(parts) != 4 or not all(part.isascii() and part.isdigit() and len(part) <= 3 for part in parts):
        return None
    numbers = [int(part) for part in parts]
    return ".".join(map(str, numbers)) if max(numbers) <= 255 else None


def _hex_groups(text: str) -> int | None:
    """How many IPv6-hex (1*4HEXDIG) groups "h:h:..." holds ("" holds none); None if malformed."""
    if not text:
        return 0
    groups = text.split(":")
    return len(groups) if all(1 <= len(group) <= 4 for group in groups) else None


def _is_ipv6_addr(text: str) -> bool:
    """RFC 5321 §4.1.3 IPv6-addr: IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp, nothing else.

    No zone/scope id ("%eth0"): the grammar has none, and Python's ipaddress would accept any text
    after "%" (CR and LF included), which then reached header fields.
    """
    if not text or not set(text) <= _IPV6_CHARS:
        return False
    if "." in text:
        # the v4 forms: the dotted quad stands for the last two groups (IPv6v4-full has 6 groups
        # before it, IPv6v4-comp at most 4 beside "::", the same totals as IPv6-full and IPv6-comp)
        head, colon, quad = text.rpartition(":")
        if not colon or _snum_ipv4(quad) is None:
            return False
        text = head + ":0:0"
    if "::" in text:
        left, _, right = text.partition("::")
        if "::" in right:
            return False
        counts = (_hex_groups(left), _hex_groups(right))
        return None not in counts and sum(c for c in counts if c is not None) <= 6  # "at most 6 groups"
    return _hex_groups(text) == 8


def _address_literal(text: str) -> str:
    """RFC 5321 §4.1.3 address-literal "[...]", normalised: IPv4 or "IPv6:" IPv6-addr.

    General-address-literal needs a Standardized-tag "registered with IANA" (§4.1.3); the registry
    (Address Literal Tags) holds only "IPv6", so any other tag is refused as bad syntax.
    """
    inner = text[1:-1]
    tag, colon, content = inner.partition(":")
    if not colon:
        ipv4 = _snum_ipv4(inner)
        if ipv4 is None:
            raise ValueError("bad IPv4 address literal")
        return f"[{ipv4}]"
    if tag.lower() != "ipv6" or not _is_ipv6_addr(content):
        raise ValueError("bad address literal")
    return f"[IPv6:{ipaddress.IPv6Address(content).compressed}]"


def is_ip_literal(domain: str) -> bool:
    """`domain` (as `Address.domain` holds it) is an address literal: IPv4 or IPv6, the only kinds
    `parse_path` accepts."""
    return domain.startswith("[")


# C0 controls, DEL and the C1 range: in a header field they end the field or start a forged one
# (a bare CR is a line break to many readers), on a terminal they are escape sequences.
_CONTROLS = frozenset([*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"])


class UnsafeText(ValueError):
    """Text meant for a header field or a terminal line holds a control character."""


def has_controls(text: str) -> bool:
    return not _CONTROLS.isdisjoint(text)


def header_safe(text: str, what: str) -> str:
    """`text` unchanged, checked once more where it is rendered into a header field.

    Addresses and names are refused with controls when they come in; this is the second check at
    the point of use (issue 11 item 6), so a path that skipped the first cannot inject a field.
    """
    if has_controls(text):
        raise UnsafeText(f"control character in {what}: {text!r}")
    return text


def terminal_safe(text: str) -> str:
    """`text` for one line on a terminal: control characters shown as Python escapes (\\r, \\x1b)."""
    if not has_controls(text):
        return text
    return "".join(repr(char)[1:-1] if char in _CONTROLS else char for char in text)


def parse_path(
    text: str, *, sender: bool, utf8: bool = True, postmaster_ok: bool = False
) -> tuple[Address | None, str]:
    """Parse "<...>" at the start of `text`; returns (address or None for "<>", the rest).

    `sender` selects the reply for bad syntax (501 5.1.7 vs 501 5.1.3) and allows the null path.
    The rest is "" or starts with a space (the ESMTP parameters).
    """
    bad = BAD_SENDER_SYNTAX if sender else BAD_RECIPIENT_SYNTAX
    if not text.startswith("<"):
        raise SMTPSyntaxError(bad, "path must be enclosed in <>")
    if text.startswith("<>"):
        if not sender:
            raise SMTPSyntaxError(bad, "empty recipient")
        return None, _rest(text, 2, bad)
    pos = 1
    if text.startswith("<@"):
        # RFC 5321 §4.1.2 / appendix C: a source route is accepted and ignored.
        colon = text.find(":", pos)
        if colon < 0:
            raise SMTPSyntaxError(bad, "bad source route")
        for hop in text[pos:colon].split(","):
            if not hop.startswith("@"):
                raise SMTPSyntaxError(bad, "bad source route")
            try:
                normalize_domain(hop[1:], utf8=utf8)
            except ValueError:
                raise SMTPSyntaxError(bad, "bad source route") from None
        pos = colon + 1
    start = pos
    local, pos = _local_part(text, pos, bad, utf8)
    if text.startswith(">", pos) and postmaster_ok and local.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: RCPT TO:<Postmaster> without a domain must be accepted.
        return Address(local, ""), _rest(text, pos + 1, bad)
    if not text.startswith("@", pos):
        raise SMTPSyntaxError(bad, "missing @domain")
    pos += 1
    end = text.find(">", pos)
    if end < 0:
        raise SMTPSyntaxError(bad, "missing >")
    domain_text = text[pos:end]
    try:
        if domain_text.startswith("[") and domain_text.endswith("]"):
            domain = _address_literal(domain_text)
        else:
            domain = normalize_domain(domain_text, utf8=utf8)
    except ValueError:
        raise SMTPSyntaxError(bad, "bad domain") from None
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(text[start:end].encode("utf-8")) > MAX_PATH:
        raise SMTPSyntaxError(bad, "address too long")
    return Address(local, domain), _rest(text, end + 1, bad)


def _rest(text: str, pos: int, bad: Reply) -> str:
    rest = text[pos:]
    if rest and not rest.startswith(" "):
        raise SMTPSyntaxError(bad, "junk after path")
    return rest


def _local_part(text: str, pos: int, bad: Reply, utf8: bool) -> tuple[str, int]:
    if text.startswith('"', pos):
        # RFC 5321 §4.1.2 Quoted-string: qtextSMTP / quoted-pairSMTP
        pos += 1
        out: list[str] = []
        while pos < len(text):
            char = text[pos]
            if char == '"':
                return "".join(out), pos + 1
            if char == "\\":
                pos += 1
                if pos >= len(text) or not (32 <= ord(text[pos]) <= 126):
                    raise SMTPSyntaxError(bad, "bad quoted pair")
                out.append(text[pos])
            elif 32 <= ord(char) <= 126 or (utf8 and ord(char) > 127):
                out.append(char)
            else:
                raise SMTPSyntaxError(bad, "bad character in quoted local part")
            pos += 1
        raise SMTPSyntaxError(bad, "unterminated quoted local part")
    start = pos
    while pos < len(text) and (text[pos] in _ATEXT or text[pos] == "." or (utf8 and ord(text[pos]) > 127)):
        pos += 1
    local = text[start:pos]
    if not _is_dot_string(local):
        raise SMTPSyntaxError(bad, "bad local part")
    return local, pos


# ----------------------------------------------------------------------------------- ESMTP parameters


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870
    body: str | None = None  # RFC 6152: "7BIT" or "8BITMIME"
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 §4.3: "FULL" or "HDRS"
    envid: str | None = None  # RFC 3461 §4.4, kept xtext-encoded as received (it is re-sent so)
    auth: str | None = None  # RFC 4954 §5, decoded; "<>" when the submitter is unknown
    requiretls: bool = False  # RFC 8689 §3


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: tuple[str, ...] = ()  # RFC 3461 §4.1: ("NEVER",) or a subset of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # RFC 3461 §4.2: "addr-type;xtext" as received


def xtext_decode(text: str) -> str:
    """RFC 3461 §4: xchar is %d33-42 / %d44-60 / %d62-126; "+" HEX HEX encodes any octet."""
    out = bytearray()
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "+":
            hexpair = text[pos + 1 : pos + 3]
            if len(hexpair) != 2 or not set(hexpair) <= _HEX:
                raise ValueError("bad xtext escape")
            out.append(int(hexpair, 16))
            pos += 3
            continue
        if not 33 <= ord(char) <= 126 or char == "=":
            raise ValueError("bad xtext character")
        out.append(ord(char))
        pos += 1
    return out.decode("utf-8")


def xtext_encode(text: str) -> str:
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in (0x2B, 0x3D) else f"+{octet:02X}"
        for octet in text.encode("utf-8")
    )


def _split_params(text: str) -> list[tuple[str, str | None]]:
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for word in text.split(" "):
        if not word:
            continue
        keyword, eq, value = word.partition("=")
        # RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        if not keyword or keyword[0] not in _ALNUM or not set(keyword) <= _LDH:
            raise SMTPSyntaxError(SYNTAX_ERROR, f"bad parameter {word!r}")
        if eq and (not value or "=" in value or any(ord(c) < 33 or ord(c) == 127 for c in value)):
            raise SMTPSyntaxError(SYNTAX_ERROR, f"bad parameter value {word!r}")
        keyword = keyword.upper()
        if keyword in seen:
            raise SMTPSyntaxError(SYNTAX_ERROR, f"duplicate parameter {keyword}")
        seen.add(keyword)
        params.append((keyword, value if eq else None))
    return params


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise SMTPSyntaxError(SYNTAX_ERROR, f"{keyword} needs a value")
    return value


def parse_mail_params(text: str, *, dsn: bool = True, smtputf8: bool = True) -> MailParams:
    size: int | None = None
    body: str | None = None
    utf8 = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    requiretls = False
    for keyword, value in _split_params(text):
        if keyword == "SIZE":
            digits = _need_value(keyword, value)
            # RFC 1870 §4: size-value = 1*20DIGIT
            if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad SIZE")
            size = int(digits)
        elif keyword == "BODY":
            body = _need_value(keyword, value).upper()
            if body not in ("7BIT", "8BITMIME"):  # BINARYMIME is not offered (no BINARYMIME keyword)
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad BODY")
        elif keyword == "SMTPUTF8" and smtputf8:
            if value is not None:
                raise SMTPSyntaxError(SYNTAX_ERROR, "SMTPUTF8 takes no value")
            utf8 = True
        elif keyword == "RET" and dsn:
            ret = _need_value(keyword, value).upper()
            if ret not in ("FULL", "HDRS"):
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad RET")
        elif keyword == "ENVID" and dsn:
            envid = _need_value(keyword, value)
            try:
                decoded = xtext_decode(envid)
            except ValueError:
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad ENVID") from None
            if len(decoded) > 100 or not all(32 <= ord(c) <= 126 for c in decoded):  # RFC 3461 §4.4
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad ENVID")
        elif keyword == "AUTH":
            try:
                auth = xtext_decode(_need_value(keyword, value))
            except ValueError:
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad AUTH") from None
        elif keyword == "REQUIRETLS":
            # RFC 8689 §3: no value. Whether the session allows it (TLS) is the engine's check.
            if value is not None:
                raise SMTPSyntaxError(SYNTAX_ERROR, "REQUIRETLS takes no value")
            requiretls = True
        else:
            raise SMTPSyntaxError(UNKNOWN_PARAMETER, f"unknown MAIL parameter {keyword}")
    return MailParams(
        size=size, body=body, smtputf8=utf8, ret=ret, envid=envid, auth=auth, requiretls=requiretls
    )


_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt_params(text: str, *, dsn: bool = True) -> RcptParams:
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    for keyword, value in _split_params(text):
        if keyword == "NOTIFY" and dsn:
            items = tuple(item.upper() for item in _need_value(keyword, value).split(","))
            # RFC 3461 §4.1: "NEVER" alone, or a list of SUCCESS, FAILURE, DELAY
            if items != ("NEVER",) and (not set(items) <= _NOTIFY_VALUES or len(set(items)) != len(items)):
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad NOTIFY")
            notify = items
        elif keyword == "ORCPT" and dsn:
            orcpt = _need_value(keyword, value)
            addr_type, semi, xtext = orcpt.partition(";")
            # RFC 3461 §4.2: addr-type is an atom; the whole parameter at most 500 characters.
            if not semi or not addr_type or not set(addr_type) <= _ATEXT or not xtext or len(orcpt) > 500:
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad ORCPT")
            try:
                xtext_decode(xtext)
            except ValueError:
                raise SMTPSyntaxError(SYNTAX_ERROR, "bad ORCPT") from None
        else:
            raise SMTPSyntaxError(UNKNOWN_PARAMETER, f"unknown RCPT parameter {keyword}")
    return RcptParams(notify=notify, orcpt=orcpt)
