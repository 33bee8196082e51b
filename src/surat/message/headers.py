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
from typing import NamedTuple

__all__ = [
    "MAX_HEADER_SECTION",
    "FieldCollector",
    "Header",
    "HeaderField",
    "field_key",
    "read_header",
    "unfold",
    "with_fields_above",
]

MAX_HEADER_SECTION = 256 * 1024  # octets of a header section read; what lies beyond is not parsed
MAX_LINE = 64 * 1024  # octets of a first line searched for its colon (RFC 5322 §2.1.1 says 998)

# RFC 5322 §3.6.8 ftext: printable US-ASCII but ":". A name is valid when deleting these octets from it
# leaves nothing (bytes.translate, one pass at C speed, no regex).
_FTEXT = bytes(range(0x21, 0x3A)) + bytes(range(0x3B, 0x7F))
# RFC 5322 §2.2.3: a CRLF followed by WSP is folding, any other CRLF ends a field.
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


class HeaderField(NamedTuple):
    name: bytes  # as written, up to the colon (it may end with WSP: RFC 5322 §4.5.3)
    key: bytes  # the name lower-cased, without WSP: what callers match on (field names are caseless)
    raw: bytes  # the value after the colon up to its final line end (excluded), folding kept as CRLF WSP

    @property
    def unfolded(self) -> bytes:
        return unfold(self.raw)


def unfold(raw: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding (the CRLF of each fold removed), WSP around the value dropped."""
    return raw.replace(b"\r\n", b"").strip(b" \t")


def field_key(line: bytes) -> tuple[bytes, int] | None:
    """The lower-cased field name and the offset after the colon when `line` starts a field, else None.

    The one definition of a field name in Surat: RFC 5322 §3.6.8 ftext, then the §4.5.3 obsolete WSP
    before the colon. Only the first MAX_LINE octets are searched for the colon.
    """
    colon = line.find(b":", 0, MAX_LINE)
    if colon < 0:
        return None
    key = line[:colon].rstrip(b" \t")
    if not key or key.translate(None, _FTEXT):
        return None
    return key.lower(), colon + 1


class Header(NamedTuple):
    """A header section read from the start of a message.

    The fields are held as three parallel tuples (a DKIM check reads every message's header, and one
    object per field costs as much as the split itself); `fields` gives them as HeaderField tuples.
    A NamedTuple: immutable, and made in a third of a frozen dataclass's time (measured, 7 fields).
    """

    names: tuple[bytes, ...]  # as written, up to the colon (RFC 5322 §4.5.3: may end with WSP)
    keys: tuple[bytes, ...]  # lower-cased names without WSP, for matching (field names are caseless)
    raws: tuple[bytes, ...]  # values after the colon, folding kept (CRLF WSP), without the final line end
    body_start: int  # offset of the body in the message (after the empty line, if there was one)
    defect: str | None = None  # why a strict reader (DKIM, submission) should refuse the section, or None
    truncated: bool = False  # the section went on beyond the bound: fields after it were not read
    # With read_header(spans=True): where each field lies in the message, [start, end) with its line
    # ends, so that a field can be cut out leaving every other octet as it was.
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def fields(self) -> tuple[HeaderField, ...]:
        return tuple(map(HeaderField, self.names, self.keys, self.raws))

    def values(self, key: bytes) -> list[bytes]:
        """The unfolded values of every field called `key` (lower case), top first."""
        return [unfold(raw) for k, raw in zip(self.keys, self.raws, strict=True) if k == key]

    def first(self, key: bytes) -> bytes | None:
        """The unfolded value of the first field called `key` (the one ENVELOPE uses), or None."""
        for k, raw in zip(self.keys, self.raws, strict=True):
            if k == key:
                return unfold(raw)
        return None


class FieldCollector:
    """Fields built from the lines of a header section fed one at a time (the streaming reader).

    `line` takes one line without its line end; it returns False for a line that is neither a field
    nor a continuation (the caller decides that the body starts there). Values are kept until `limit`
    octets, then further fields are dropped and `truncated` says so.
    """

    __slots__ = ("_key", "_name", "_value", "defect", "kept", "keys", "limit", "names", "raws", "truncated")

    def __init__(self, limit: int = MAX_HEADER_SECTION) -> None:
        self.names: list[bytes] = []
        self.keys: list[bytes] = []
        self.raws: list[bytes] = []
        self.kept = 0
        self.limit = limit
        self.defect: str | None = None
        self.truncated = False
        self._name = b""
        self._key: bytes | None = None
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
                self.names.append(self._name)
                self.keys.append(self._key)
                self.raws.append(raw)
            else:
                self.truncated = True
                self.defect = self.defect or "header section too long"
        self._key, self._value = None, []

    def header(
        self, body_start: int, defect: str | None = None, spans: tuple[tuple[int, int], ...] = ()
    ) -> Header:
        self.flush()
        return Header(
            tuple(self.names),
            tuple(self.keys),
            tuple(self.raws),
            body_start,
            self.defect or defect,
            self.truncated,
            spans[: len(self.names)],
        )


def _fast(message: bytes, end: int) -> Header | None:
    """The CRLF-only path: the section is message[:end] (end at the CRLF before the empty line), no
    bare LF in it. One regex split at the field ends, then the `field_key` rule inlined (this runs for
    every field of every message DKIM reads); None if a piece is not a field (the line path then
    decides where the header ends)."""
    names: list[bytes] = []
    keys: list[bytes] = []
    raws: list[bytes] = []
    for piece in _FIELD_END.split(message[:end]):
        name, colon, raw = piece.partition(b":")
        key = name.rstrip(b" \t")
        if not colon or not key or key.translate(None, _FTEXT):
            return None
        names.append(name)
        keys.append(key.lower())
        raws.append(raw)
    return Header(tuple(names), tuple(keys), tuple(raws), end + 4)


def read_header(
    message: bytes, limit: int = MAX_HEADER_SECTION, *, crlf_only: bool = False, spans: bool = False
) -> Header:
    """The header section at the start of `message` (bytes; only the first `limit` octets are read).

    `crlf_only` says the caller knows there is no bare LF (our SMTP engine normalises line ends);
    `spans` asks for each field's place in the message (`Header.spans`).
    """
    if spans:
        return _by_lines(message, limit, with_spans=True)
    if message.startswith((b"\r\n", b"\n")):
        return Header((), (), (), 2 if message[:1] == b"\r" else 1)
    end = message.find(b"\r\n\r\n", 0, limit)
    if end >= 0 and (crlf_only or message.count(b"\n", 0, end) == message.count(b"\r\n", 0, end)):
        header = _fast(message, end)
        if header is not None:
            return header
    return _by_lines(message, limit)


def _by_lines(message: bytes, limit: int, *, with_spans: bool = False) -> Header:
    collector = FieldCollector(limit)
    starts: list[int] = []  # where each field's first line starts (with_spans)
    pos = 0
    size = len(message)

    def spans(end: int) -> tuple[tuple[int, int], ...]:
        if not starts:
            return ()
        return tuple(zip(starts, [*starts[1:], end], strict=True))

    while pos < size:
        if pos >= limit:
            collector.truncated = True
            return collector.header(pos, "header section too long", spans(pos))
        newline = message.find(b"\n", pos)
        line_end = size if newline < 0 else newline + 1
        content = message[pos : newline if newline >= 0 else size].removesuffix(b"\r")
        if not content:
            # RFC 5322 §2.1: the empty line ends the section
            return collector.header(line_end, spans=spans(pos))
        if not collector.line(content):
            return collector.header(pos, f"not a header field: {content[:40]!r}", spans(pos))
        if with_spans and content[:1] not in (b" ", b"\t"):
            starts.append(pos)
        pos = line_end
    return collector.header(size, spans=spans(size))  # a message that is all header, with no empty line


def with_fields_above(fields: bytes, header: Header) -> Header | None:
    """The header of ``fields + message`` from `header`, the header of `message`, without reading it again.

    `fields` are whole header fields we wrote (our trace fields: Return-Path, Received, ...), each
    ending in CRLF. None when the result could differ from `read_header(fields + message)`: a section
    with a defect (its first line, a continuation, would fold into our last field) or cut short, or
    one that the added octets would push past MAX_HEADER_SECTION. The caller then reads the bytes.
    """
    if header.defect is not None or header.truncated or header.spans:
        return None
    if len(fields) + header.body_start > MAX_HEADER_SECTION:
        return None
    above = read_header(fields + b"\r\n", crlf_only=True)
    if above.defect is not None or above.body_start != len(fields) + 2:
        return None  # not whole fields: refuse rather than guess
    return Header(
        above.names + header.names,
        above.keys + header.keys,
        above.raws + header.raws,
        len(fields) + header.body_start,
    )
