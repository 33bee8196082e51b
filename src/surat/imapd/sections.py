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

from dataclasses import dataclass

from surat.message.headers import read_header
from surat.message.info import MessageInfo
from surat.message.mime import BodyPart
from surat.proto.imap.commands import Section

__all__ = [
    "MAX_HEADER_READ",
    "ByteRange",
    "HeaderFields",
    "filter_header",
    "locate",
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
