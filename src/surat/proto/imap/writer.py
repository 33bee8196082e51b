"""Serialising IMAP responses (RFC 9051 §7 and §9): strings, lists, response codes, status lines.

Every function returns bytes ready for the wire. String choice follows RFC 9051 §4.3: an atom when the
grammar allows one and the value is atom-safe, a quoted string for short text without CR/LF/NUL, else a
literal; literal8 (RFC 3516) for binary data containing NUL. 8-bit text goes in a quoted string only for
clients that accept UTF-8 (IMAP4rev2 or UTF8=ACCEPT, RFC 6855 §3); others get a literal.
"""

from __future__ import annotations

import base64
import datetime
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from surat.proto.imap import mutf7
from surat.proto.imap.seqset import SequenceSet

__all__ = [
    "CRLF",
    "Code",
    "ResponseCode",
    "Status",
    "astring",
    "capability",
    "continuation",
    "continuation_base64",
    "enabled",
    "esearch",
    "exists",
    "expunge",
    "fetch",
    "flag_list",
    "flags",
    "format_date_time",
    "list_response",
    "literal",
    "literal8",
    "mailbox_name",
    "nstring",
    "paren",
    "quoted",
    "search",
    "status_response",
    "string",
    "tagged",
    "untagged",
    "untagged_status",
    "vanished",
]

CRLF: Final = b"\r\n"
NIL: Final = b"NIL"
MAX_QUOTED: Final = 1024  # longer values go as literals: cheaper to parse for clients, no escaping
_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"
    PREAUTH = "PREAUTH"


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """`[NAME data]` (RFC 9051 §7.1). ``data`` is already serialised text."""

    name: str
    data: str | None = None

    def render(self) -> bytes:
        if self.data is None:
            return f"[{self.name}]".encode()
        return f"[{self.name} {self.data}]".encode()

    # Parameterised codes -----------------------------------------------------------------------------

    @classmethod
    def uidnext(cls, n: int) -> ResponseCode:
        return cls("UIDNEXT", str(n))

    @classmethod
    def uidvalidity(cls, n: int) -> ResponseCode:
        return cls("UIDVALIDITY", str(n))

    @classmethod
    def unseen(cls, n: int) -> ResponseCode:  # rev1 only (RFC 3501 §7.1)
        return cls("UNSEEN", str(n))

    @classmethod
    def highestmodseq(cls, n: int) -> ResponseCode:  # RFC 7162 §3.1.2.1
        return cls("HIGHESTMODSEQ", str(n))

    @classmethod
    def permanentflags(cls, names: Iterable[str]) -> ResponseCode:
        return cls("PERMANENTFLAGS", "(" + " ".join(names) + ")")

    @classmethod
    def capability(cls, names: Iterable[str]) -> ResponseCode:
        return cls("CAPABILITY", " ".join(names))

    @classmethod
    def badcharset(cls, charsets: Iterable[str]) -> ResponseCode:
        return cls("BADCHARSET", "(" + " ".join(charsets) + ")")

    @classmethod
    def appenduid(cls, uidvalidity: int, uids: SequenceSet | int) -> ResponseCode:  # RFC 4315 §3
        return cls("APPENDUID", f"{uidvalidity} {uids}")

    @classmethod
    def copyuid(cls, uidvalidity: int, source: SequenceSet, dest: SequenceSet) -> ResponseCode:
        # RFC 4315 §3: the two sets list UIDs in corresponding order, so they are written as given.
        return cls("COPYUID", f"{uidvalidity} {source} {dest}")

    @classmethod
    def modified(cls, seqset: SequenceSet) -> ResponseCode:  # RFC 7162 §3.1.3
        return cls("MODIFIED", str(seqset))


class Code:
    """Codes without data (RFC 9051 §7.1, RFC 5530, RFC 7162, RFC 4978, RFC 6154)."""

    ALERT: Final = ResponseCode("ALERT")
    ALREADYEXISTS: Final = ResponseCode("ALREADYEXISTS")
    AUTHENTICATIONFAILED: Final = ResponseCode("AUTHENTICATIONFAILED")
    AUTHORIZATIONFAILED: Final = ResponseCode("AUTHORIZATIONFAILED")
    CANNOT: Final = ResponseCode("CANNOT")
    CLIENTBUG: Final = ResponseCode("CLIENTBUG")
    CLOSED: Final = ResponseCode("CLOSED")
    COMPRESSIONACTIVE: Final = ResponseCode("COMPRESSIONACTIVE")
    CONTACTADMIN: Final = ResponseCode("CONTACTADMIN")
    CORRUPTION: Final = ResponseCode("CORRUPTION")
    EXPIRED: Final = ResponseCode("EXPIRED")
    EXPUNGEISSUED: Final = ResponseCode("EXPUNGEISSUED")
    HASCHILDREN: Final = ResponseCode("HASCHILDREN")
    INUSE: Final = ResponseCode("INUSE")
    LIMIT: Final = ResponseCode("LIMIT")
    NOMODSEQ: Final = ResponseCode("NOMODSEQ")
    NONEXISTENT: Final = ResponseCode("NONEXISTENT")
    NOPERM: Final = ResponseCode("NOPERM")
    NOTSAVED: Final = ResponseCode("NOTSAVED")
    OVERQUOTA: Final = ResponseCode("OVERQUOTA")
    PARSE: Final = ResponseCode("PARSE")
    PRIVACYREQUIRED: Final = ResponseCode("PRIVACYREQUIRED")
    READ_ONLY: Final = ResponseCode("READ-ONLY")
    READ_WRITE: Final = ResponseCode("READ-WRITE")
    SERVERBUG: Final = ResponseCode("SERVERBUG")
    TOOBIG: Final = ResponseCode("TOOBIG")
    TRYCREATE: Final = ResponseCode("TRYCREATE")
    UIDNOTSTICKY: Final = ResponseCode("UIDNOTSTICKY")
    UNAVAILABLE: Final = ResponseCode("UNAVAILABLE")
    UNKNOWN_CTE: Final = ResponseCode("UNKNOWN-CTE")
    USEATTR: Final = ResponseCode("USEATTR")


# --- strings ----------------------------------------------------------------------------------------


def _as_bytes(value: str | bytes) -> bytes:
    # surrogateescape: raw header octets kept in a str (surat.message.mime) go back out unchanged.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def literal(data: bytes) -> bytes:
    """A server literal: always the synchronizing form `{n}` (RFC 7888 `+` is client-only)."""
    return b"{%d}\r\n" % len(data) + data


def literal8(data: bytes) -> bytes:
    """RFC 3516 §4.3 literal8 `~{n}`, for BINARY[] content that may contain NUL."""
    return b"~{%d}\r\n" % len(data) + data


def _quotable(data: bytes, utf8: bool) -> bool:
    if len(data) > MAX_QUOTED or b"\r" in data or b"\n" in data or b"\x00" in data:
        return False
    if not data.isascii():
        if not utf8:
            return False
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _quote(data: bytes) -> bytes:
    # RFC 9051 §9 quoted-specials: only DQUOTE and backslash are escaped.
    if b'"' in data or b"\\" in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


def _quick(value: str) -> bytes | None:
    """The quoted form of plain ASCII text without CR, LF or NUL, or None for the general path.

    Nearly every ENVELOPE and BODYSTRUCTURE field takes this path, so it avoids the bytes round trip:
    ``str.isascii`` is O(1) in CPython, and raw 8-bit octets kept as surrogate escapes are not ASCII.
    """
    if (
        value.isascii()
        and len(value) <= MAX_QUOTED
        and "\r" not in value
        and "\n" not in value
        and "\x00" not in value
    ):
        if '"' in value or "\\" in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{value}"'.encode("ascii")
    return None


def quoted(value: str | bytes) -> bytes:
    """A quoted string; the caller guarantees no CR, LF or NUL (RFC 9051 §4.3)."""
    data = _as_bytes(value)
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        raise ValueError("CR, LF and NUL cannot be quoted")
    return _quote(data)


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """RFC 9051 §9 string: quoted when possible, else a literal (or literal8 if it holds NUL)."""
    if isinstance(value, str):
        fast = _quick(value)
        if fast is not None:
            return fast
    data = _as_bytes(value)
    if _quotable(data, utf8):
        return _quote(data)
    if b"\x00" in data:
        return literal8(data)
    return literal(data)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    if value is None:
        return NIL
    if isinstance(value, str):
        fast = _quick(value)  # most ENVELOPE fields: skip a call level
        if fast is not None:
            return fast
    return string(value, utf8=utf8)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """RFC 9051 §9 astring: bare when every octet is an ASTRING-CHAR (and not the word NIL), else a string."""
    data = _as_bytes(value)
    if (
        data
        and data.isascii()
        and data.upper() != b"NIL"
        and all(b not in _ATOM_SPECIALS or b == 0x5D for b in data)
    ):
        return data
    return string(data, utf8=utf8)


def mailbox_name(name: str, *, utf8: bool) -> bytes:
    """A mailbox name for LIST/LSUB/STATUS responses: UTF-8 for IMAP4rev2/UTF8=ACCEPT sessions, modified
    UTF-7 for IMAP4rev1 ones (RFC 3501 §5.1.3, RFC 9051 §5.1); always a string or atom, never NIL."""
    if not utf8:
        name = mutf7.encode(name)
    # RFC 9051 §9 mailbox = "INBOX" / astring; NIL-like atoms are quoted by astring().
    return astring(name, utf8=utf8)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(names: Iterable[str]) -> bytes:
    return paren(n.encode("ascii") for n in names)


def format_date_time(value: datetime.datetime) -> str:
    """RFC 9051 §9 date-time content (without quotes): `17-Jul-1996 02:44:25 -0700`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    offset = value.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


# --- response lines ---------------------------------------------------------------------------------


def _text(text: str) -> bytes:
    # RFC 9051 §9 text = 1*TEXT-CHAR: no CR/LF; a leading "[" would be read as a response code.
    clean = text.replace("\r", " ").replace("\n", " ")
    if clean.startswith("["):
        clean = " " + clean[1:]
    return clean.encode("utf-8")


def tagged(tag: str, status: Status, text: str, code: ResponseCode | None = None) -> bytes:
    """`tag OK [CODE] text` (RFC 9051 §7.1). ``text`` must be non-empty for the grammar."""
    line = tag.encode("ascii") + b" " + status.value.encode()
    if code is not None:
        line += b" " + code.render()
    return line + b" " + _text(text or status.value.lower()) + CRLF


def untagged_status(status: Status, text: str, code: ResponseCode | None = None) -> bytes:
    return tagged("*", status, text, code)


def untagged(*parts: bytes) -> bytes:
    """`* part part ...` CRLF."""
    return b"* " + b" ".join(parts) + CRLF


def continuation(text: str = "Ready") -> bytes:
    """RFC 9051 §7.5 continue-req with resp-text."""
    return b"+ " + _text(text) + CRLF


def continuation_base64(data: bytes) -> bytes:
    """A SASL challenge (RFC 9051 §6.2.2): base64, or empty."""
    return b"+ " + base64.b64encode(data) + CRLF


def capability(names: Iterable[str]) -> bytes:
    return untagged(b"CAPABILITY", " ".join(names).encode("ascii"))


def enabled(names: Iterable[str]) -> bytes:
    """RFC 5161 §3.2: `* ENABLED` lists only what this command newly enabled (may be empty)."""
    items = " ".join(names)
    return b"* ENABLED" + (b" " + items.encode("ascii") if items else b"") + CRLF


def exists(n: int) -> bytes:
    return b"* %d EXISTS\r\n" % n


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def vanished(uids: SequenceSet, *, earlier: bool = False) -> bytes:
    """RFC 7162 §3.2.10: `* VANISHED [(EARLIER)] uid-set`."""
    return b"* VANISHED " + (b"(EARLIER) " if earlier else b"") + str(uids).encode("ascii") + CRLF


def flags(names: Iterable[str]) -> bytes:
    return untagged(b"FLAGS", flag_list(names))


def fetch(seq: int, items: Sequence[tuple[str, bytes]]) -> bytes:
    """`* seq FETCH (NAME value NAME value)`; values already serialised (see ``string``, ``paren``)."""
    body = b" ".join(name.encode("ascii") + b" " + value for name, value in items)
    return b"* %d FETCH (" % seq + body + b")" + CRLF


def search(numbers: Iterable[int], *, modseq: int | None = None) -> bytes:
    """Classic `* SEARCH 2 5 9` (RFC 9051 §7.3.6 for rev1; RFC 7162 §3.1.5 `(MODSEQ n)`)."""
    line = b"* SEARCH"
    for n in numbers:
        line += b" %d" % n
    if modseq is not None:
        line += b" (MODSEQ %d)" % modseq
    return line + CRLF


def esearch(
    tag: str,
    *,
    uid: bool,
    min_: int | None = None,
    max_: int | None = None,
    all_: SequenceSet | None = None,
    count: int | None = None,
    modseq: int | None = None,
) -> bytes:
    """RFC 9051 §7.3.4 / RFC 4731 §3.1: `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n]`."""
    parts = [b"ESEARCH", b"(TAG " + quoted(tag) + b")"]
    if uid:
        parts.append(b"UID")
    if min_ is not None:
        parts.append(b"MIN %d" % min_)
    if max_ is not None:
        parts.append(b"MAX %d" % max_)
    if all_ is not None and all_.ranges:
        parts.append(b"ALL " + str(all_).encode("ascii"))
    if count is not None:
        parts.append(b"COUNT %d" % count)
    if modseq is not None:
        parts.append(b"MODSEQ %d" % modseq)
    return untagged(*parts)


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    *,
    utf8: bool,
    command: str = "LIST",
    extended: Sequence[bytes] = (),
) -> bytes:
    """`* LIST (\\HasNoChildren) "/" INBOX` (RFC 9051 §7.3.1); ``extended`` items follow (RFC 5258 §9,
    e.g. `("CHILDINFO" ("SUBSCRIBED"))` or `("OLDNAME" ("x"))`)."""
    delim = NIL if delimiter is None else quoted(delimiter)
    line = untagged(command.encode("ascii"), flag_list(attributes), delim, mailbox_name(name, utf8=utf8))
    if extended:
        line = line[:-2] + b" " + paren(extended) + CRLF
    return line


def status_response(name: str, items: Sequence[tuple[str, int]], *, utf8: bool) -> bytes:
    """`* STATUS name (MESSAGES 2 UIDNEXT 5)` (RFC 9051 §7.3.2)."""
    values = b" ".join(b"%s %d" % (k.encode("ascii"), v) for k, v in items)
    return untagged(b"STATUS", mailbox_name(name, utf8=utf8), b"(" + values + b")")
