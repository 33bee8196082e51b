"""THE header-section reader (RFC 5322 §2.2, §3.6.8, §4.5): the only code that splits header fields.

One rule for what a field is, used by every caller:
- a field's first line is a field name, optional WSP, then ":" (RFC 5322 §3.6.8 ftext: printable US-ASCII
  but ":"; §4.5.3/§4.1 obsolete syntax allows WSP before the colon, so ``From : x`` IS a From field);
- a line starting with WSP continues the field above it (§2.2.3 folding);
- the header section ends at the first empty line (§2.1), or, leniently (as Dovecot and mox read it),
  just before the first line that is neither a field nor a continuation: that line starts the body.
  Such a line, a continuation with no field above it, and a section longer than the bound are
  *defects*: strict callers (DKIM, submission) refuse them, lenient ones (IMAP) read on.

Line ends: CRLF, or bare LF (read as CRLF, as it would be in transit). Values keep their folding with
CRLF line ends, so ``name + b":" + raw + b"\\r\\n"`` gives the field back as sent (with CRLF).

Bounds: at most MAX_HEADER_SECTION octets of a message are read as its header section, and one line
is examined up to MAX_LINE octets for its field name; the work is linear in what is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "MAX_HEADER_SECTION",
    "FieldCollector",
    "Header",
    "HeaderField",
    "field_key",
    "read_header",
]

MAX_HEADER_SECTION = 256 * 1024  # octets of a header section read; what lies beyond is not parsed
MAX_LINE = 64 * 1024  # octets of a first line searched for its colon (RFC 5322 §2.1.1 says 998)

# RFC 5322 §3.6.8 ftext, then the §4.5.3 obsolete WSP before the colon. The two classes are disjoint,
# so there is one way to match and fullmatch is linear.
_NAME_AND_WSP = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*")
# RFC 5322 §2.2.3: a CRLF followed by WSP is folding, any other CRLF ends a field.
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


class HeaderField(NamedTuple):
    """One field. A NamedTuple: readers make one per field of every message, at C speed."""

    name: bytes  # as written, up to the colon (it may end with WSP: RFC 5322 §4.5.3)
    key: str  # the name lower-cased, without WSP: what callers match on (field names are caseless)
    raw: bytes  # the value after the colon up to its final line end (excluded), folding kept as CRLF WSP

    @property
    def unfolded(self) -> bytes:
        """RFC 5322 §2.2.3 unfolding (the CRLF of each fold removed), WSP around the value dropped."""
        return self.raw.replace(b"\r\n", b"").strip(b" \t")


def field_key(line: bytes) -> tuple[str, int] | None:
    """The lower-cased field name and the offset after the colon when `line` starts a field, else None.

    The one definition of a field name in Surat (RFC 5322 §3.6.8, §4.5.3 WSP before the colon).
    """
    colon = line.find(b":", 0, MAX_LINE)
    if colon <= 0:
        return None
    match = _NAME_AND_WSP.fullmatch(line, 0, colon)
    if match is None:
        return None
    return match.group(1).decode("ascii").lower(), colon + 1


@dataclass(frozen=True, slots=True)
class Header:
    """A header section read from the start of a message."""

    fields: tuple[HeaderField, ...]
    body_start: int  # offset of the body in the message (after the empty line, if there was one)
    defect: str | None = None  # why a strict reader should refuse the section, or None
    truncated: bool = False  # the section went on beyond the bound: fields after it were not read

    def values(self, key: str) -> list[bytes]:
        """The unfolded values of every field called `key` (lower case), top first."""
        return [field.unfolded for field in self.fields if field.key == key]

    def first(self, key: str) -> bytes | None:
        """The unfolded value of the first field called `key` (the one ENVELOPE uses), or None."""
        for field in self.fields:
            if field.key == key:
                return field.unfolded
        return None

    def count(self, key: str) -> int:
        return sum(1 for field in self.fields if field.key == key)


class FieldCollector:
    """Fields built from the lines of a header section fed one at a time (the streaming reader).

    `line` takes one line without its line end; it returns False for a line that is neither a field
    nor a continuation (the caller decides that the body starts there). Values are kept until `limit`
    octets, then further fields are dropped and `defect` says so.
    """

    __slots__ = ("_key", "_name", "_value", "defect", "fields", "kept", "limit", "truncated")

    def __init__(self, limit: int = MAX_HEADER_SECTION) -> None:
        self.fields: list[HeaderField] = []
        self.kept = 0
        self.limit = limit
        self.defect: str | None = None
        self.truncated = False
        self._name = b""
        self._key: str | None = None
        self._value: list[bytes] = []

    def line(self, content: bytes) -> bool:
        if content[:1] in (b" ", b"\t"):
            if self._key is not None:
                self._value.append(content)
            elif self.defect is None:
                self.defect = "a continuation line with no field above it"  # dropped
            return True
        found = field_key(content)
        if found is None:
            return False
        self.flush()
        self._key, after = found
        self._name = content[: after - 1]
        self._value = [content[after:]]
        return True

    def flush(self) -> None:
        """End the current field."""
        if self._key is not None:
            raw = b"\r\n".join(self._value)
            self.kept += len(raw)
            if self.kept <= self.limit:
                self.fields.append(HeaderField(self._name, self._key, raw))
            else:
                self.truncated = True
                self.defect = self.defect or "header section too long"
        self._key, self._value = None, []


def _fast(message: bytes, end: int) -> Header | None:
    """The CRLF-only path: the section is message[:end] (end at the CRLF before the empty line), no
    bare LF in it. One regex split at the field ends, at C speed; None if a piece is not a field."""
    fields: list[HeaderField] = []
    for piece in _FIELD_END.split(message[:end]):
        found = field_key(piece)
        if found is None:
            return None  # a continuation line first or a line that is not a field: the line path decides
        key, after = found
        fields.append(HeaderField(piece[: after - 1], key, piece[after:]))
    return Header(tuple(fields), end + 4)


def read_header(message: bytes, limit: int = MAX_HEADER_SECTION) -> Header:
    """The header section at the start of `message` (bytes; only the first `limit` octets are read)."""
    if message.startswith((b"\r\n", b"\n")):
        return Header((), 2 if message[:1] == b"\r" else 1)
    end = message.find(b"\r\n\r\n", 0, limit)
    if end >= 0 and message.count(b"\n", 0, end) == message.count(b"\r\n", 0, end):
        header = _fast(message, end)
        if header is not None:
            return header
    return _by_lines(message, limit)


def _by_lines(message: bytes, limit: int) -> Header:
    collector = FieldCollector(limit)
    pos = 0
    size = len(message)
    while pos < size:
        if pos >= limit:
            collector.flush()
            return Header(tuple(collector.fields), pos, "header section too long", truncated=True)
        newline = message.find(b"\n", pos)
        line_end = size if newline < 0 else newline + 1
        content = message[pos : newline if newline >= 0 else size]
        content = content.removesuffix(b"\r")
        if not content:
            collector.flush()
            return Header(tuple(collector.fields), line_end, collector.defect, collector.truncated)
        if not collector.line(content):
            collector.flush()
            defect = collector.defect or f"not a header field: {content[:40]!r}"
            return Header(tuple(collector.fields), pos, defect, collector.truncated)
        pos = line_end
    collector.flush()  # a message that is all header, with no empty line
    return Header(tuple(collector.fields), size, collector.defect, collector.truncated)
