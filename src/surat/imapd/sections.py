"""Where a FETCH body section lies in the message file (RFC 9051 §6.4.5), from the part offsets that
``store.messageinfo`` recorded at delivery; no message is parsed again.

Most sections are a byte range of the file, streamed as is. HEADER.FIELDS(.NOT) reads just the header
block and filters it. BINARY (RFC 3516) decodes one part's content transfer encoding.

Empty results have one form: a part whose content is empty, a part that does not exist, HEADER or TEXT
of a part that is not a message, and a partial fetch whose origin lies beyond the end (RFC 9051 §6.4.5:
"an empty string is returned") are all the zero-length literal ``{0}``, in BODY[] and BINARY[] alike,
and BINARY.SIZE of them is 0. RFC 9051 §9 lets a section's value be any string (quoted or literal);
section contents are always sent as literals, so a client reads every section through the same literal
path, and Dovecot answers the same way.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import BinaryIO

from surat.proto.imap.commands import Section
from surat.store.messageinfo import BodyPart, MessageInfo

__all__ = [
    "MAX_HEADER_READ",
    "ByteRange",
    "HeaderFields",
    "UnknownEncoding",
    "decode_transfer_encoding",
    "filter_header",
    "locate",
    "read_range",
]

MAX_HEADER_READ = 1024 * 1024  # a header block larger than this is cut (messageinfo keeps 256 KiB)


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """HEADER.FIELDS (``exclude`` False) or HEADER.FIELDS.NOT of the header block at ``header``."""

    header: ByteRange
    fields: frozenset[str]  # lower-cased
    exclude: bool


class UnknownEncoding(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 §4.2: UNKNOWN-CTE)."""


_EMPTY = ByteRange(0, 0)


def _message_root(info: MessageInfo, part: tuple[int, ...]) -> BodyPart | None:
    """The entity whose HEADER/TEXT a section names: the message itself for (), else the message embedded
    in a message/rfc822 part (RFC 9051 §6.4.5: HEADER, TEXT and HEADER.FIELDS of a part apply only to
    message/rfc822 parts)."""
    if not part:
        return info.body
    node = info.body.part(part)
    if node is None:
        return None
    return node.message


def locate(info: MessageInfo, section: Section) -> ByteRange | HeaderFields:
    """The bytes a section names. A part that does not exist gives an empty range, as Dovecot does:
    clients probing a structure they misparsed get an empty string rather than an error.

    RFC 9051 §6.4.5: for a message/rfc822 part N, BODY[N] is the whole encapsulated message (header
    and body), N.HEADER / N.TEXT its header and body, N.MIME the part's own MIME header, and N.1...
    the encapsulated message's parts (see ``BodyPart.part``)."""
    text = section.text
    if text in (None, "MIME"):
        if not section.part:
            # BODY[] is the whole message (MIME needs a part: the parser guarantees it).
            return ByteRange(0, info.body.end)
        node = info.body.part(section.part)
        if node is None:
            return _EMPTY
        if text == "MIME":
            return ByteRange(node.header_start, node.body_start)
        return ByteRange(node.body_start, node.end)
    root = _message_root(info, section.part)
    if root is None:
        return _EMPTY
    if text == "TEXT":
        return ByteRange(root.body_start, root.end)
    header = ByteRange(root.header_start, root.body_start)
    if text == "HEADER":
        return header
    return HeaderFields(header, frozenset(f.lower() for f in section.fields), text == "HEADER.FIELDS.NOT")


def read_range(file: BinaryIO, r: ByteRange, limit: int | None = None) -> bytes:
    size = r.size if limit is None else min(r.size, limit)
    if size <= 0:
        return b""
    file.seek(r.start)
    return file.read(size)


def filter_header(block: bytes, fields: frozenset[str], *, exclude: bool) -> bytes:
    """The header fields named (or, with ``exclude``, not named), each with its continuation lines, then
    the empty line (RFC 9051 §6.4.5: the result includes the blank line that ends the header)."""
    out: list[bytes] = []
    keep = False
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        colon = line.find(b":")
        name = line[:colon].strip().decode("latin-1").lower() if colon > 0 else ""
        keep = bool(name) and ((name in fields) != exclude)
        if keep:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def decode_transfer_encoding(data: bytes, encoding: str) -> bytes:
    """RFC 3516 §4.2: BINARY returns the part's content with its transfer encoding removed.

    Linear in ``data`` and never larger than it; the caller bounds ``data`` (one part of a stored
    message, so at most ``limits.message_size`` octets)."""
    enc = encoding.upper()
    if enc in _IDENTITY_ENCODINGS:
        return data
    if enc == "BASE64":
        return decode_base64(data)
    if enc == "QUOTED-PRINTABLE":
        return decode_quoted_printable(data)
    raise UnknownEncoding(encoding)


# RFC 2045 §6.2: these three are not encodings, only statements about the content ("" when absent).
_IDENTITY_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY", ""})
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# RFC 2045 §6.8: "All line breaks or other characters not found in Table 1 must be ignored by decoding
# software"; "=" is kept to find the end of the data.
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET + b"=")


def decode_base64(data: bytes) -> bytes:
    """RFC 2045 §6.8 base64, leniently: characters outside the alphabet are skipped, the first "=" ends
    the data ("the occurrence of any '=' characters may be taken as evidence that the end of the data
    has been reached"), and a last quantum without its padding still gives its whole octets (two or
    three characters carry one or two octets; a lone sixth bit-group carries none)."""
    clean = data.translate(None, _NOT_BASE64)
    padding = clean.find(b"=")
    if padding >= 0:
        clean = clean[:padding]
    rest = len(clean) % 4
    if rest == 1:
        clean = clean[:-1]
    elif rest:
        clean += b"=" * (4 - rest)
    return binascii.a2b_base64(clean)


_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")
# What binascii.a2b_qp would decode differently from RFC 2045 §6.7 (see decode_quoted_printable): an "="
# not followed by two hex digits or a line end, white space before a line end or the end of the data,
# an "=" at the very end. Each alternative looks at most two octets ahead: linear, no backtracking.
_QP_IRREGULAR = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r\n|\n)|[ \t](?:\r?\n|\Z)|=\Z")


def decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7 quoted-printable.

    - "=XY" is the octet XY in hex; lower-case digits are accepted (note (1): "a robust implementation
      might choose to recognize them").
    - An "=" at the end of a line, white space after it allowed, is a soft line break and vanishes
      (rule 5); so does one at the very end of the data: the part's content ends before the CRLF of the
      boundary delimiter (RFC 2046 §5.1.1), which was that soft break's line end.
    - White space at the end of a line is deleted (rule 3: "it will necessarily have been added by
      intermediate transport agents").
    - An "=" followed by anything else is kept with the octet after it, both untransformed (notes (2)
      and (3)); other octets, line ends (CRLF, or a bare LF) and control characters are kept as they
      are (note (4) allows removing them; keeping them loses nothing).
    """
    if _QP_IRREGULAR.search(data) is None:
        return binascii.a2b_qp(data)  # well-formed input: one C call gives the same octets
    return decode_quoted_printable_by_line(data)


def decode_quoted_printable_by_line(data: bytes) -> bytes:
    """``decode_quoted_printable`` for any input, line by line (the fuzz tests check that the C fast path
    agrees with it on the input it takes)."""
    out: list[bytes] = []
    lines = data.split(b"\n")
    last = len(lines) - 1
    for index, raw_line in enumerate(lines):
        if index == last:
            ending = b""
        elif raw_line.endswith(b"\r"):
            ending = b"\r\n"
        else:
            ending = b"\n"
        line = (raw_line[:-1] if ending == b"\r\n" else raw_line).rstrip(b" \t")
        if line.endswith(b"=") and not _escaped_equals_at_end(line):
            line, ending = line[:-1], b""
        out.append(_unescape_quoted_printable(line))
        out.append(ending)
    return b"".join(out)


def _escaped_equals_at_end(line: bytes) -> bool:
    """Whether the "=" that ends ``line`` is the octet kept after an invalid "=" (note (2): "==" keeps
    both) rather than a soft line break: count the run of "=" before it."""
    run = len(line) - len(line.rstrip(b"="))
    # In a run of "=", pairs form kept "==" sequences from the left; an odd run ends with a soft break.
    return run % 2 == 0


def _unescape_quoted_printable(line: bytes) -> bytes:
    """The "=XY" escapes of one line (no line end, no soft break) decoded; a bad "=" kept with the octet
    after it (RFC 2045 §6.7 note (2)). One pass: each octet is looked at once."""
    out: list[bytes] = []
    position = 0
    size = len(line)
    while True:
        equals = line.find(b"=", position)
        if equals < 0:
            out.append(line[position:])
            return b"".join(out)
        out.append(line[position:equals])
        pair = line[equals + 1 : equals + 3]
        if len(pair) == 2 and pair[0] in _HEX_DIGITS and pair[1] in _HEX_DIGITS:
            out.append(bytes((int(pair, 16),)))
            position = equals + 3
        else:
            position = min(equals + 2, size)
            out.append(line[equals:position])


def binary_part(info: MessageInfo, part: tuple[int, ...]) -> tuple[ByteRange, str] | None:
    """The body range and transfer encoding of the part BINARY[part] names; None if it does not exist.
    BINARY[] is the whole message, taken as it is."""
    if not part:
        return ByteRange(0, info.body.end), "BINARY"
    node = info.body.part(part)
    if node is None:
        return None
    if node.is_multipart or node.message is not None:
        # A container: its content has no single transfer encoding to remove (RFC 2045 §6.4 forbids
        # encoded multiparts), so it is returned as it is.
        return ByteRange(node.body_start, node.end), "BINARY"
    return ByteRange(node.body_start, node.end), node.encoding
