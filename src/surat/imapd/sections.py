"""Where a FETCH body section lies in the message file (RFC 9051 §6.4.5), from the part offsets that
``surat.message.info`` recorded at delivery; no message is parsed again.

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

from surat.message.headers import read_header
from surat.message.info import MessageInfo
from surat.message.mime import BodyPart
from surat.proto.imap.commands import Section

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

MAX_HEADER_READ = 1024 * 1024  # a header block larger than this is cut (surat.message.mime keeps 256 KiB)


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
    the empty line (RFC 9051 §6.4.5: the result includes the blank line that ends the header).

    The fields are those surat.message reads, the ones ENVELOPE and SEARCH use: HEADER.FIELDS (FROM)
    shows the From that ENVELOPE showed (issue 11 item 7)."""
    header = read_header(block, spans=True)
    out: list[bytes] = []
    for key, (start, end) in zip(header.keys, header.spans, strict=True):
        if (key.decode("ascii") in fields) != exclude:
            text = block[start:end]
            out.append(text if text.endswith(b"\n") else text + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def decode_transfer_encoding(data: bytes, encoding: str) -> bytes:
    """RFC 3516 §4.2: BINARY returns the part's content with its transfer encoding removed.

    Linear in ``data`` and never larger than it; the caller bounds ``data`` (one part of a stored
    message, so at most ``limits.message_size`` octets). Decoded ``DECODE_CHUNK`` octets at a time, so
    that, run in a worker thread, no single C call holds the GIL (and so the event loop) for long."""
    enc = encoding.upper()
    if enc in _IDENTITY_ENCODINGS:
        return data
    if enc == "BASE64":
        return decode_base64(data)
    if enc == "QUOTED-PRINTABLE":
        return decode_quoted_printable(data)
    raise UnknownEncoding(encoding)


DECODE_CHUNK = 64 * 1024  # octets of encoded data per C call (about a millisecond of GIL each)
# RFC 2045 §6.2: these three are not encodings, only statements about the content ("" when absent).
_IDENTITY_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY", ""})
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# RFC 2045 §6.8: "All line breaks or other characters not found in Table 1 must be ignored by decoding
# software"; "=" is kept to find the end of the data.
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET + b"=")


def decode_base64(data: bytes, *, chunk: int = DECODE_CHUNK) -> bytes:
    """RFC 2045 §6.8 base64, leniently: characters outside the alphabet are skipped, the first "=" ends
    the data ("the occurrence of any '=' characters may be taken as evidence that the end of the data
    has been reached"), and a last quantum without its padding still gives its whole octets (two or
    three characters carry one or two octets; a lone sixth bit-group carries none)."""
    out: list[bytes] = []
    carry = b""  # fewer than 4 characters: an incomplete quantum
    for start in range(0, len(data), chunk):
        clean = carry + data[start : start + chunk].translate(None, _NOT_BASE64)
        padding = clean.find(b"=")
        if padding >= 0:
            carry = clean[:padding]
            break
        whole = len(clean) - len(clean) % 4
        out.append(binascii.a2b_base64(clean[:whole]))
        carry = clean[whole:]
    rest = len(carry) % 4
    if rest == 1:
        carry = carry[:-1]
    elif rest:
        carry += b"=" * (4 - rest)
    out.append(binascii.a2b_base64(carry))
    return b"".join(out)


def decode_quoted_printable(data: bytes, *, chunk: int = DECODE_CHUNK) -> bytes:
    """RFC 2045 §6.7 quoted-printable.

    - "=XY" is the octet XY in hex; lower-case digits are accepted (note (1): "a robust implementation
      might choose to recognize them").
    - An "=" at the end of a line, white space after it allowed, is a soft line break and vanishes
      (rule 5); so does one at the very end of the data: the part's content ends before the CRLF of the
      boundary delimiter (RFC 2046 §5.1.1), which was that soft break's line end.
    - White space at the end of a line is deleted (rule 3: "it will necessarily have been added by
      intermediate transport agents").
    - An "=" followed by anything else is kept with the octet after it, both untransformed (notes (2)
      and (3)): "=ZZ" stays "=ZZ", "==41" stays "==41" (the kept octet starts no escape). Other octets,
      line ends (CRLF, or a bare LF) and control characters are kept as they are (note (4) allows
      removing them; keeping them loses nothing).

    Linear, and in C but for a few steps per chunk of about ``chunk`` octets (see
    ``_quoted_printable_cut``). In each chunk, each bad "=" is rewritten as "=3D", white space before
    line ends is removed, then ``binascii.a2b_qp`` removes soft line breaks, decodes "=XY" and keeps
    everything else.
    """
    out: list[bytes] = []
    start, size = 0, len(data)
    while start < size:
        blanks = _leading_blanks(data, start, chunk)
        if blanks is not None:
            start, kept = blanks
            out.append(kept)
            continue
        end = _quoted_printable_cut(data, start, chunk)
        last = end >= size
        # Left to right, as a decoder reads: "==" is a bad "=" keeping the "=" after it, so runs of "="
        # pair from the left (what bytes.replace does: leftmost, non-overlapping); then any other bad
        # "=" is kept alone and the octet after it stays as it is. An "=" before a line end (blanks
        # between allowed; or at the very end) is a soft break, left for a2b_qp to remove. Blanks go
        # last: removing them first could join a kept "=" and CR to a LF ("=\r \n").
        piece = data[start:end].replace(b"==", b"=3D=3D")
        piece = (_QP_BAD_EQUALS_LAST if last else _QP_BAD_EQUALS).sub(b"=3D", piece)
        piece = (_QP_PADDING_LAST if last else _QP_PADDING).sub(b"", piece)
        out.append(binascii.a2b_qp(piece))
        start = end
    return b"".join(out)


def _leading_blanks(data: bytes, start: int, chunk: int) -> tuple[int, bytes] | None:
    """When the quoted-printable chunk at ``start`` begins with a run of blanks (or an "=" and one) that
    reaches past where the chunk would end: where the run ends and what it decodes to. Blanks before a
    line end or the end of the data are deleted (rule 3), with the "=" before them a soft break (rule 5)
    whose line end goes too; other blanks are kept, and so is the "=" (note 2). The run is scanned
    once, ``chunk`` octets per C call. A shorter run is left to the chunk (None)."""
    size = len(data)
    equals = data[start] == _EQUALS
    first = start + 1 if equals else start
    if first >= size or data[first] not in _BLANKS:
        return None
    step_end = start + max(chunk, 3)  # where _quoted_printable_cut would look first
    after = first
    while True:
        run = _BLANK_RUN.match(data, after, step_end)
        assert run is not None  # the pattern matches the empty string
        after = run.end()
        if after < step_end or after >= size:
            break
        step_end = after + chunk
    if after < start + max(chunk, 3) and after < size:
        return None
    line_end = 1 if data[after : after + 1] == b"\n" else 2 if data[after : after + 2] == b"\r\n" else 0
    if line_end or after == size:
        return (after + line_end if equals else after), b""
    return after, data[start:after]


def _quoted_printable_cut(data: bytes, start: int, chunk: int) -> int:
    """Where the chunk of quoted-printable ``data`` that begins at ``start`` (where a decoder reading
    left to right starts afresh) ends, about ``chunk`` octets on, so that decoding chunk by chunk gives
    what decoding the whole would: after a line end when there is one, else at a point that no escape,
    "==" pair or white space rule reaches across."""
    cut = start + max(chunk, 3)
    size = len(data)
    if cut >= size:
        return size
    line_end = data.rfind(b"\n", start, cut)
    if line_end >= 0:
        return line_end + 1
    if data[cut - 1] == _CR and data[cut] == _LF:
        return cut + 1
    if data[cut - 1] in _BLANKS:
        # Whether blanks are deleted depends on what follows the whole run (rule 3): end the chunk before
        # the run (and before an "=" that starts a token just before it: "=" and blanks may be a soft
        # break); the next chunk starts with it, and ``_leading_blanks`` reads it whole, once.
        run_start = start + len(data[start:cut].rstrip(b" \t"))
        if run_start > start and data[run_start - 1] == _EQUALS:
            equals = run_start - start - len(data[start:run_start].rstrip(b"="))
            run_start -= equals % 2
        if run_start > start:
            return run_start
    # A run of "=" pairs from its first octet, a token start (no escape has "=" after its first octet),
    # and the chunk's start is a token start too: parity tells whether an "=" near the end starts a
    # token that may reach into the next chunk.
    equals = cut - start - len(data[start:cut].rstrip(b"="))
    if equals:
        return cut - equals % 2
    if data[cut - 2] == _EQUALS:
        equals = cut - 1 - start - len(data[start : cut - 1].rstrip(b"="))
        if equals % 2:
            return cut - 2  # "=X" may be "=XY", Y in the next chunk
    return cut


_CR, _LF, _EQUALS = ord("\r"), ord("\n"), ord("=")
_BLANKS = frozenset(b" \t")
_BLANK_RUN = re.compile(rb"[ \t]*+")
# Rule 3: blanks before a line end (or, in the last chunk, the end of the data). A match starts only at
# the first blank of a run (the lookbehind), and "*+" never gives octets back: each octet is looked at
# a bounded number of times, however long the run.
_QP_PADDING = re.compile(rb"[ \t](?<![ \t][ \t])[ \t]*+(?=\r?\n)")
_QP_PADDING_LAST = re.compile(rb"[ \t](?<![ \t][ \t])[ \t]*+(?=\r?\n|\Z)")
# An "=" that is neither an escape nor a soft break. The blanks the lookahead skips follow this "=" and
# end at the next octet that is not blank: each run is skipped for one "=" at most.
_QP_BAD_EQUALS = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*+\r?\n)")
_QP_BAD_EQUALS_LAST = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*+(?:\r?\n|\Z))")


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
