"""The MIME scanner (RFC 2045, RFC 2046): one pass over a message, the BODYSTRUCTURE tree out.

`scan_message` streams a message through a line-based, boundary-aware scanner with bounded memory (it
reads in chunks; one header line and one header block are capped), and gives the root entity
(`BodyPart`, with the byte offsets of every part: `header_start`, `body_start`, `end`, so that
BODY[1.2.MIME], BODY[2.TEXT] or BINARY[3] are served by reading a byte range, never by parsing again)
and the first value of each of its header fields. Embedded messages (message/rfc822, message/global)
carry their RFC 9051 §7.5.2 ENVELOPE, with header values kept raw (RFC 2047 encoded words are NOT
decoded there, as IMAP requires).

Raw header text is bytes in the message; it is kept here as `str` decoded from UTF-8 with
`surrogateescape`, so `value.encode("utf-8", "surrogateescape")` gives back the exact octets.

Malformed input never raises: a missing closing boundary ends the parts at end of file, a header
block without its empty line ends at the first line that is not a header field, and so on, much
like Dovecot and mox degrade. Pure: it reads the binary file object it is given, nothing else.

Bounds (the work is linear in the message): MAX_LINE octets of a line kept, MAX_HEADER octets of a
header block kept, MAX_DEPTH levels of nesting, MAX_PARTS entities; beyond those, parts are opaque.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

from surat.message.address import Address, parse_address_list
from surat.message.headers import FieldCollector, Header, read_header, unfold

__all__ = [
    "MAX_DEPTH",
    "MAX_HEADER",
    "MAX_LINE",
    "MAX_PARTS",
    "BodyPart",
    "Envelope",
    "envelope_of",
    "scan_message",
]

_CHUNK = 64 * 1024
MAX_LINE = 64 * 1024  # octets of one line kept; longer lines are scanned but not kept
MAX_HEADER = 256 * 1024  # octets of one header block kept
MAX_DEPTH = 32  # nesting of multipart and message/rfc822 parts
MAX_PARTS = 5000  # beyond this, multiparts are treated as opaque leaves


# ----------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Envelope:
    date: str | None
    subject: str | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One MIME entity (RFC 9051 §7.5.2 BODYSTRUCTURE) and where it lies in the file.

    `type`, `subtype`, parameter names and the disposition are lower-cased; values are raw.
    Offsets: the entity's header is [header_start, body_start) (including the empty line that ends
    it), its body is [body_start, end). For a part inside a multipart, `end` stops before the CRLF
    that belongs to the next boundary delimiter (RFC 2046 §5.1.1).
    """

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    id: str | None
    description: str | None
    encoding: str  # Content-Transfer-Encoding, upper-cased; "7BIT" by default
    size: int  # octets of the body
    lines: int  # text lines of the body (IMAP shows it for text/* and message/rfc822); 0 for multiparts
    disposition: str | None
    disposition_params: tuple[tuple[str, str], ...]
    language: tuple[str, ...]
    location: str | None
    header_start: int
    body_start: int
    end: int
    parts: tuple[BodyPart, ...] = ()  # children of a multipart
    envelope: Envelope | None = None  # of the embedded message, for message/rfc822 and message/global
    message: BodyPart | None = None  # root entity of the embedded message (its header starts at body_start)
    md5: str | None = None  # Content-MD5 is not computed (RFC 9051 allows NIL)

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    def part(self, section: tuple[int, ...]) -> BodyPart | None:
        """The part that IMAP section numbers (e.g. (1, 2) for "1.2") name, or None.

        RFC 9051 §6.4.5: a multipart's parts are numbered from 1; a non-multipart message has a part 1
        (its body); the parts of a message/rfc822 (or message/global) part are those of the message it
        encapsulates, numbered the same way (so "3.1" is the body of a non-multipart message in part
        3). Any other non-multipart part has no subparts. This holds at the top too: a message that is
        itself message/rfc822 has a part 1 (the encapsulated message), and "1.1" is in that message.
        """
        node: BodyPart = self
        for depth, number in enumerate(section):
            if depth and not node.is_multipart:
                if node.message is None:
                    return None  # a leaf part has no subparts
                node = node.message
            if node.is_multipart:
                if not 1 <= number <= len(node.parts):
                    return None
                node = node.parts[number - 1]
            elif number != 1:
                return None
        return node


# ----------------------------------------------------------------------------------------- reader


@dataclass(slots=True)  # not frozen: one is made per line scanned, and a frozen init costs twice as much
class _Line:
    start: int
    content: bytes  # without the LF, at most MAX_LINE octets; may end with CR
    truncated: bool
    has_newline: bool
    end: int  # offset after the LF


@dataclass(frozen=True, slots=True)
class _Term:
    """What ended a stretch of content: a boundary delimiter line, or the end of the file."""

    pos: int  # offset of the delimiter line (or of end of file)
    newlines: int  # LFs consumed before `pos`
    last: bytes  # up to 4 octets just before `pos`
    depth: int = -1  # index of the matched boundary in the stack; -1 for end of file
    close: bool = False  # a close delimiter ("--boundary--")
    line_end: int = 0  # offset after the delimiter line

    @property
    def eof(self) -> bool:
        return self.depth < 0


class _Reader:
    """Buffered reading over a binary file, counting LFs and remembering the last octets read."""

    def __init__(self, file: BinaryIO, base: int = 0, last: bytes = b"") -> None:
        """`base`: the message offset of the file's current position (the body, when the header was
        read before); `last`: the octets just before it."""
        self._file = file
        self._buf = b""
        self._pos = 0
        self._base = base  # message offset of _buf[0]
        self._eof = False
        self.newlines = 0  # counted from `base`: only differences are used
        self.last = last  # up to 4 octets most recently consumed

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._file.read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._base += self._pos
        self._pos = 0
        return True

    def _consume(self, to: int) -> None:
        buf = self._buf
        pos = self._pos
        self.newlines += buf.count(b"\n", pos, to)
        self.last = (self.last + buf[max(pos, to - 4) : to])[-4:]
        self._pos = to

    def at_eof(self) -> bool:
        return self._pos >= len(self._buf) and not self._fill()

    def readline(self) -> _Line | None:
        start = self.offset
        kept: list[bytes] = []
        kept_len = 0
        truncated = False
        while True:
            buf = self._buf
            pos = self._pos
            i = buf.find(b"\n", pos)
            stop = i if i >= 0 else len(buf)
            if stop > pos and not truncated:
                room = MAX_LINE - kept_len
                if stop - pos > room:
                    truncated = True
                    kept.append(buf[pos : pos + room])
                    kept_len = MAX_LINE
                else:
                    kept.append(buf[pos:stop])
                    kept_len += stop - pos
            if i >= 0:
                self._consume(i + 1)
                return _Line(start, b"".join(kept), truncated, True, self.offset)
            self._consume(len(buf))
            if not self._fill():
                if self.offset == start:
                    return None
                return _Line(start, b"".join(kept), truncated, False, self.offset)

    def header_block(self, stack: list[bytes]) -> bytes | None:
        """The header section ahead, up to and including the CRLF before its empty line, when it can be
        split in one piece: wholly in the buffer, every line ending in CRLF, no line that could be a
        boundary delimiter. None sends the caller to the line-by-line path, which handles everything."""
        if self._pos >= len(self._buf) and not self._fill():
            return None
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n\r\n", pos, pos + MAX_LINE)
        if end < 0 or buf.startswith(b"\r\n", pos):
            return None
        block = buf[pos : end + 2]
        if block.count(b"\n") != block.count(b"\r\n") or (
            stack and (block.startswith(b"--") or b"\n--" in block)
        ):
            return None
        return block

    def skip(self, count: int) -> None:
        """Consume `count` octets that are in the buffer."""
        self._consume(self._pos + count)

    def peek2(self) -> bytes:
        while len(self._buf) - self._pos < 2 and self._fill():
            pass
        return self._buf[self._pos : self._pos + 2]

    def skip_to_boundary(self, stack: list[bytes], at_line_start: bool = True) -> _Term:
        """Skip body octets up to the next delimiter line of a boundary in `stack`, or EOF.

        Fast path: only lines that begin with "--" are examined, found with bytes.find.
        """
        while True:
            if at_line_start and stack and self.peek2() == b"--":
                newlines, last = self.newlines, self.last
                line = self.readline()
                assert line is not None
                match = _match_boundary(line, stack)
                if match is not None:
                    depth, close = match
                    return _Term(line.start, newlines, last, depth, close, line.end)
                at_line_start = line.has_newline
                continue
            buf = self._buf
            if self._pos >= len(buf):
                if not self._fill():
                    return _Term(self.offset, self.newlines, self.last)
                continue
            if not stack:
                self._consume(len(buf))
                continue
            i = buf.find(b"\n--", self._pos)
            if i >= 0:
                self._consume(i + 1)
                at_line_start = True
                continue
            # Keep the last two octets: they may be the start of "\n--" split across reads.
            keep = max(self._pos, len(buf) - 2)
            if keep > self._pos:
                self._consume(keep)
                at_line_start = buf[keep - 1 : keep] == b"\n"
            if not self._fill():
                self._consume(len(self._buf))
                return _Term(self.offset, self.newlines, self.last)


def _match_boundary(line: _Line, stack: list[bytes]) -> tuple[int, bool] | None:
    # RFC 2046 §5.1.1: "--" boundary ["--"] transport-padding CRLF. The innermost boundary wins;
    # an outer one also ends the inner multiparts (a missing close delimiter).
    if line.truncated or not line.content.startswith(b"--"):
        return None
    text = line.content.rstrip(b" \t\r")
    for depth in range(len(stack) - 1, -1, -1):
        boundary = stack[depth]
        if text == b"--" + boundary:
            return depth, False
        if text == b"--" + boundary + b"--":
            return depth, True
    return None


def _span(start: int, newlines_at_start: int, term: _Term) -> tuple[int, int]:
    """(end, lines) of content from `start` to the terminator."""
    last = term.last
    if term.eof:
        end = term.pos
        newlines = term.newlines - newlines_at_start
        last_octet = last[-1:]
    else:
        # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter.
        prev_nl = 2 if last.endswith(b"\r\n") else 1 if last.endswith(b"\n") else 0
        end = term.pos - prev_nl
        if end <= start:
            return start, 0
        newlines = term.newlines - newlines_at_start - (1 if prev_nl else 0)
        index = len(last) - prev_nl - 1
        last_octet = last[index : index + 1] if index >= 0 else b""
    if end <= start:
        return start, 0
    return end, newlines + (1 if last_octet != b"\n" else 0)


# ----------------------------------------------------------------------------------------- headers

_Headers = list[tuple[str, bytes]]  # (lower-cased name, unfolded raw value)


def _raw(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _first_values(headers: _Headers) -> dict[str, bytes]:
    """The first occurrence of each field (the one ENVELOPE and BODYSTRUCTURE use)."""
    first: dict[str, bytes] = {}
    for key, value in headers:
        first.setdefault(key, value)
    return first


# ----------------------------------------------------------------------------------------- structured values


def _strip_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    quoted = False
    escape = False
    for ch in text:
        if escape:
            escape = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escape = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            out.append(ch)
            if ch == '"':
                quoted = False
            continue
        if ch == "(":
            depth += 1
            continue
        if ch == ")" and depth > 0:
            depth -= 1
            continue
        if depth == 0:
            if ch == '"':
                quoted = True
            out.append(ch)
    return "".join(out)


def _split_semicolons(text: str) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    quoted = False
    escape = False
    for ch in text:
        if escape:
            escape = False
        elif ch == "\\" and quoted:
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        current.append(ch)
    segments.append("".join(current))
    return segments


def _unquote(value: str) -> str:
    if len(value) >= 1 and value[0] == '"':
        body = value[1:-1] if len(value) >= 2 and value.endswith('"') else value[1:]
        return re.sub(r"\\(.)", r"\1", body)
    return value


def _parse_params(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """RFC 2045 §5.1 `value *(";" parameter)`: the value, lower-cased, and raw parameters.

    RFC 2231 continuations and charsets are left as written (as Dovecot does in BODYSTRUCTURE).
    """
    segments = _split_semicolons(_strip_comments(text))
    main = segments[0].strip().lower()
    params: list[tuple[str, str]] = []
    for segment in segments[1:]:
        name, eq, value = segment.partition("=")
        name = name.strip().lower()
        if not eq or not name or any(c.isspace() for c in name):
            continue
        params.append((name, _unquote(value.strip())))
    return main, tuple(params)


_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")


def _content_type(
    value: bytes | None, default: tuple[str, str]
) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    if value is not None:
        main, params = _parse_params(_raw(value))
        kind, slash, sub = main.partition("/")
        kind, sub = kind.strip(), sub.strip()
        if slash and _TOKEN.match(kind) and _TOKEN.match(sub):
            return kind, sub, params
    # RFC 2045 §5.2: no (or an unusable) Content-Type means text/plain; charset=us-ascii.
    if default == ("text", "plain"):
        return "text", "plain", (("charset", "us-ascii"),)
    return default[0], default[1], ()


# ----------------------------------------------------------------------------------------- envelope


def _raw_or_none(value: bytes | None) -> str | None:
    return _raw(value) if value is not None else None


def envelope_of(first: dict[str, bytes]) -> Envelope:
    from_ = parse_address_list(first.get("from"))
    sender = parse_address_list(first.get("sender"))
    reply_to = parse_address_list(first.get("reply-to"))
    return Envelope(
        date=_raw_or_none(first.get("date")),
        subject=_raw_or_none(first.get("subject")),
        from_=from_,
        # RFC 9051 §7.5.2: absent or empty Sender and Reply-To take the value of From.
        sender=sender or from_,
        reply_to=reply_to or from_,
        to=parse_address_list(first.get("to")),
        cc=parse_address_list(first.get("cc")),
        bcc=parse_address_list(first.get("bcc")),
        in_reply_to=_raw_or_none(first.get("in-reply-to")),
        message_id=_raw_or_none(first.get("message-id")),
    )


# ----------------------------------------------------------------------------------------- the scanner


def _pairs(header: Header) -> _Headers:
    return [(key.decode("ascii"), unfold(raw)) for key, raw in zip(header.keys, header.raws, strict=True)]


def _split_header_block(block: bytes) -> _Headers | None:
    """The fields of a header section of CRLF lines (see `_Reader.header_block`), as `_read_header` reads
    them; None when a line is not a field, for the line-by-line path to decide where the body starts."""
    header = read_header(block + b"\r\n", MAX_HEADER + len(block))
    if header.body_start != len(block) + 2:
        return None
    return _pairs(header)


class _Scanner:
    def __init__(self, file: BinaryIO, header: Header | None = None) -> None:
        # With `header` (the root's header section, read already), the file is at the root's body.
        self.header = header
        if header is None:
            self.reader = _Reader(file)
        else:
            self.reader = _Reader(file, header.body_start, _EMPTY_LINE if header.keys else _EMPTY_LINE[2:])
        self.parts = 0

    def _read_header(self, start: int, stack: list[bytes]) -> tuple[_Headers, int, _Term | None]:
        """Header fields, the body's start, and the terminator if one cut the header short."""
        reader = self.reader
        block = reader.header_block(stack)
        if block is not None:
            fast = _split_header_block(block)
            if fast is not None:
                reader.skip(len(block) + 2)  # and the empty line
                return fast, reader.offset, None
        fields = FieldCollector(MAX_HEADER)
        while True:
            newlines, last = reader.newlines, reader.last
            line = reader.readline()
            if line is None:
                fields.flush()
                return (
                    _pairs(fields.header(0)),
                    reader.offset,
                    _Term(reader.offset, reader.newlines, reader.last),
                )
            match = _match_boundary(line, stack) if stack else None
            if match is not None:
                # A delimiter inside a header: the entity has no body.
                fields.flush()
                depth, close = match
                term = _Term(line.start, newlines, last, depth, close, line.end)
                end = max(start, _span(start, newlines, term)[0])
                return _pairs(fields.header(0)), end, term
            content = line.content[:-1] if line.content.endswith(b"\r") else line.content
            if not content and not line.truncated:
                fields.flush()  # RFC 5322 §2.1: the empty line ends the header section
                return _pairs(fields.header(0)), line.end, None
            if not fields.line(content):
                # Not a header field: the header ended without its empty line; this is body.
                fields.flush()
                return _pairs(fields.header(0)), line.start, None

    def entity(
        self, start: int, stack: list[bytes], default: tuple[str, str], depth: int
    ) -> tuple[BodyPart, _Term, dict[str, bytes]]:
        reader = self.reader
        self.parts += 1
        given, self.header = self.header, None  # the root's, read before: not read again
        if given is not None:
            headers, body_start, term = _pairs(given), given.body_start, None
        else:
            headers, body_start, term = self._read_header(start, stack)
        first = _first_values(headers)
        nl_body = reader.newlines
        if term is None and body_start < reader.offset:
            # The line read last belongs to the body (no empty line after the header).
            nl_body = reader.newlines - (1 if reader.last.endswith(b"\n") else 0)
        kind, subtype, params = _content_type(first.get("content-type"), default)
        encoding = _raw(first.get("content-transfer-encoding") or b"7BIT").strip().upper() or "7BIT"
        parts: tuple[BodyPart, ...] = ()
        envelope: Envelope | None = None
        message: BodyPart | None = None
        opaque = depth >= MAX_DEPTH or self.parts >= MAX_PARTS
        boundary = dict(params).get("boundary", "").encode("utf-8", "surrogateescape")
        if term is not None:
            pass  # the header was cut short: empty body
        elif kind == "multipart" and boundary and not opaque:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            parts, term = self._multipart(boundary, stack, child_default, depth)
        elif (
            kind == "message"
            and subtype in ("rfc822", "global")
            and encoding in ("7BIT", "8BIT", "BINARY")
            and not opaque
        ):
            # RFC 9051 §7.5.2: the embedded message's envelope and structure are part of ours.
            message, term, inner_headers = self.entity(body_start, stack, ("text", "plain"), depth + 1)
            envelope = envelope_of(inner_headers)
        else:
            term = reader.skip_to_boundary(stack, at_line_start=True)
        end, lines = _span(body_start, nl_body, term)
        if kind == "multipart" and parts:
            lines = 0  # RFC 9051 §7.5.2 has no line count for multiparts
            # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it, so a multipart ends before the
            # CRLF of the outer delimiter; but an empty last part right after its own delimiter line
            # ("--inner CRLF --outer") starts after that very CRLF: the multipart holds its parts.
            end = max(end, parts[-1].end)
        elif message is not None and message.end > end:
            # The same within a message/rfc822 part whose message ends with such an empty part
            # ("--inner CRLF --outer"): the part holds its message. The octets added are that line
            # end, which ends a line already counted, so `lines` stays.
            end = message.end
        disposition_value = first.get("content-disposition")
        disposition: str | None = None
        disposition_params: tuple[tuple[str, str], ...] = ()
        if disposition_value is not None:
            disposition, disposition_params = _parse_params(_raw(disposition_value))
            disposition = disposition or None
        language_value = first.get("content-language")
        language: tuple[str, ...] = ()
        if language_value is not None:
            language = tuple(
                t for t in (s.strip() for s in _strip_comments(_raw(language_value)).split(",")) if t
            )
        part = BodyPart(
            type=kind,
            subtype=subtype,
            params=params,
            id=_raw_or_none(first.get("content-id")),
            description=_raw_or_none(first.get("content-description")),
            encoding=encoding,
            size=end - body_start,
            lines=lines,
            disposition=disposition,
            disposition_params=disposition_params,
            language=language,
            location=_raw_or_none(first.get("content-location")),
            header_start=start,
            body_start=body_start,
            end=end,
            parts=parts,
            envelope=envelope,
            message=message,
        )
        return part, term, first

    def _multipart(
        self, boundary: bytes, stack: list[bytes], child_default: tuple[str, str], depth: int
    ) -> tuple[tuple[BodyPart, ...], _Term]:
        reader = self.reader
        inner = [*stack, boundary]
        mine = len(stack)
        children: list[BodyPart] = []
        term = reader.skip_to_boundary(inner)  # the preamble
        while not term.eof and term.depth == mine and not term.close:
            child, term, _ = self.entity(term.line_end, inner, child_default, depth + 1)
            children.append(child)
        if term.eof or term.depth != mine:
            # EOF or an enclosing delimiter without our close delimiter: the parts end here.
            return tuple(children), term
        return tuple(children), reader.skip_to_boundary(stack)  # the epilogue


_EMPTY_LINE = b"\r\n\r\n"  # what ends a header section (with the CRLF of its last field)


def scan_message(file: BinaryIO, header: Header | None = None) -> tuple[BodyPart, dict[str, bytes]]:
    """Scan a message from the file's current position (offsets count from there): the root entity
    and the first value of each of its header fields (lower-cased name -> unfolded raw value).

    `header` is the message's header section as `read_header` read it (the end of DATA reads it once
    and hands it on): the scan then starts at its body, so the header is not read twice. It is used
    only when it is what the scanner would read itself: no defect, not cut short, ended by its empty
    line (checked in the file: a seek and at most 4 octets), within the first MAX_LINE octets (beyond
    that the scanner reads a section line by line, keeping MAX_LINE octets of each). Otherwise the file
    is scanned from the start, so the result is always that of `scan_message(file)`. The file must be
    seekable when `header` is given.
    """
    if header is not None and _header_is_usable(file, header):
        body, _term, first = _Scanner(file, header).entity(0, [], ("text", "plain"), 0)
    else:
        body, _term, first = _Scanner(file).entity(0, [], ("text", "plain"), 0)
    return body, first


def _header_is_usable(file: BinaryIO, header: Header) -> bool:
    """Whether `header` is what the scanner would read (see scan_message); leaves the file at the body
    if so, where it was if not."""
    start = file.tell()
    body_start = header.body_start
    if header.defect is not None or header.truncated or not 2 <= body_start <= MAX_LINE:
        return False
    # RFC 5322 §2.1: the section ends with an empty line (after the CRLF of the last field, if any)
    ending = _EMPTY_LINE if header.keys else _EMPTY_LINE[2:]
    if body_start < len(ending) or (not header.keys and body_start != 2):
        return False
    file.seek(start + body_start - len(ending))
    if file.read(len(ending)) != ending:
        file.seek(start)
        return False
    return True
