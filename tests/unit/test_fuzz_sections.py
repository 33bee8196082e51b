"""Fuzz: FETCH section addressing over random MIME trees (RFC 9051 §6.4.5) and the BINARY decoders
(RFC 2045 §6.7, §6.8). Every section of a generated message names exactly the bytes the generator put
there, any other section is empty, and the decoders take any input without raising."""

from __future__ import annotations

import base64
import binascii
import io
import quopri
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.imapd import sections
from surat.imapd.sections import ByteRange, HeaderFields
from surat.message import transfer
from surat.message.info import compute_message_info
from surat.message.transfer import UnknownEncoding
from surat.proto.imap.commands import Section
from surat.proto.imap.structure import body_structure

pytestmark = pytest.mark.fuzz


@dataclass(frozen=True)
class Leaf:
    data: bytes  # the decoded content
    encoding: str  # 7bit, base64 or quoted-printable


@dataclass(frozen=True)
class Multipart:
    subtype: str  # mixed or digest
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Message:
    """A message/rfc822 entity; ``inner`` is the root entity of the message it encapsulates."""

    inner: Node


Node = Leaf | Multipart | Message


@dataclass(frozen=True)
class Entity:
    """A node written out: its header block (with the empty line) and its body."""

    node: Node
    header: bytes
    body: bytes
    children: tuple[Entity, ...]  # of a multipart; the one encapsulated root of a message


# Text without "-" so that no line looks like a boundary delimiter; "=" to tempt the QP decoder.
_TEXT = st.lists(st.sampled_from([b"a", b"Zz", b" ", b"\t", b"=", b"=4", b"=41", b"\r\n"]), max_size=8).map(
    b"".join
)
_LEAF = st.one_of(
    st.builds(Leaf, _TEXT, st.just("7bit")),
    # No "-": quoted-printable keeps it, and a line "--b1" would be a boundary delimiter.
    st.builds(
        Leaf,
        st.binary(max_size=40).map(lambda b: b.replace(b"-", b"_")),
        st.sampled_from(["base64", "quoted-printable"]),
    ),
)


def _trees(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(Multipart, st.sampled_from(["mixed", "digest"]), st.lists(children, max_size=4).map(tuple)),
        st.builds(Message, children),
    )


_TREE: st.SearchStrategy[Node] = st.recursive(_LEAF, _trees, max_leaves=10)


class _Writer:
    def __init__(self) -> None:
        self.boundaries = 0

    def entity(self, node: Node, *, in_digest: bool = False, top: bool = False) -> Entity:
        subject = b"Subject: m\r\n" if top else b""
        if isinstance(node, Leaf):
            body = _encode(node)
            header = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: %b\r\n" % node.encoding.encode()
            return Entity(node, subject + header + b"\r\n", body, ())
        if isinstance(node, Message):
            inner = self.entity(node.inner, top=True)
            # RFC 2046 §5.1.5: in a digest, message/rfc822 is the default.
            header = b"" if in_digest else b"Content-Type: message/rfc822\r\n"
            return Entity(node, subject + header + b"\r\n", inner.header + inner.body, (inner,))
        self.boundaries += 1
        boundary = b"b%d" % self.boundaries
        children = tuple(self.entity(c, in_digest=node.subtype == "digest") for c in node.children)
        body = b"".join(b"--" + boundary + b"\r\n" + c.header + c.body + b"\r\n" for c in children)
        body += b"--" + boundary + b"--"
        header = b"Content-Type: multipart/%b; boundary=%b\r\n\r\n" % (node.subtype.encode(), boundary)
        return Entity(node, subject + header, body, children)


def _encode(leaf: Leaf) -> bytes:
    if leaf.encoding == "base64":
        return base64.encodebytes(leaf.data).replace(b"\n", b"\r\n")
    if leaf.encoding == "quoted-printable":
        return quopri.encodestring(leaf.data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return leaf.data


def _decoded(leaf: Leaf) -> bytes:
    if leaf.encoding == "quoted-printable":
        return leaf.data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return leaf.data


def _named(entity: Entity, path: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Entity]]:
    """The entity a section path names, then everything inside it (RFC 9051 §6.4.5 numbering)."""
    yield path, entity
    if isinstance(entity.node, Multipart):
        for number, child in enumerate(entity.children, 1):
            yield from _named(child, (*path, number))
    elif isinstance(entity.node, Message):
        yield from _parts_of(entity.children[0], path)


def _parts_of(root: Entity, path: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Entity]]:
    """The numbered parts of a message whose root entity is ``root``: a multipart's children, or part 1."""
    if isinstance(root.node, Multipart):
        for number, child in enumerate(root.children, 1):
            yield from _named(child, (*path, number))
    else:
        yield from _named(root, (*path, 1))


def _text(message: bytes, where: ByteRange | HeaderFields) -> bytes:
    assert isinstance(where, ByteRange)
    assert 0 <= where.start <= where.end <= len(message)
    return message[where.start : where.end]


@fuzz_settings()
@given(_TREE, st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), max_size=10))
def test_every_section_of_a_random_mime_tree(tree: Node, probes: list[tuple[int, ...]]) -> None:
    top = _Writer().entity(tree, top=True)
    message = top.header + top.body
    info = compute_message_info(io.BytesIO(message))
    assert _text(message, sections.locate(info, Section())) == message
    assert _text(message, sections.locate(info, Section((), "TEXT"))) == top.body
    named = dict(_parts_of(top, ()))
    for path, entity in named.items():
        assert _text(message, sections.locate(info, Section(path))) == entity.body, path
        assert _text(message, sections.locate(info, Section(path, "MIME"))) == entity.header, path
        header, text = (b"", b"")
        if isinstance(entity.node, Message):
            header, text = entity.children[0].header, entity.children[0].body
        assert _text(message, sections.locate(info, Section(path, "HEADER"))) == header, path
        assert _text(message, sections.locate(info, Section(path, "TEXT"))) == text, path
        located = sections.binary_part(info, path)
        assert located is not None
        content = transfer.decode_transfer_encoding(_text(message, located[0]), located[1])
        assert content == (_decoded(entity.node) if isinstance(entity.node, Leaf) else entity.body), path
    for path in probes:
        if path not in named:
            assert _text(message, sections.locate(info, Section(path))) == b"", path
            assert sections.binary_part(info, path) is None, path
    assert body_structure(info.body).startswith(b"(")


def reference_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7 read octet by octet, as the rules say it (the slow, obvious decoder)."""
    out = bytearray()
    position = 0
    size = len(data)
    hex_digits = b"0123456789ABCDEFabcdef"
    while position < size:
        octet = data[position : position + 1]
        if octet in (b" ", b"\t"):
            end = position
            while end < size and data[end : end + 1] in (b" ", b"\t"):
                end += 1
            if end == size or data[end : end + 1] == b"\n" or data[end : end + 2] == b"\r\n":
                position = end  # rule 3: white space at a line end is deleted
            else:
                out += data[position:end]
                position = end
            continue
        if octet != b"=":
            out += octet
            position += 1
            continue
        pair = data[position + 1 : position + 3]
        if len(pair) == 2 and pair[0] in hex_digits and pair[1] in hex_digits:
            out.append(int(pair, 16))
            position += 3
            continue
        end = position + 1
        while end < size and data[end : end + 1] in (b" ", b"\t"):
            end += 1
        if end == size:
            return bytes(out)  # a soft break whose line end is the boundary delimiter's
        if data[end : end + 1] == b"\n":
            position = end + 1  # rule 5: soft line break
        elif data[end : end + 2] == b"\r\n":
            position = end + 2
        else:
            out += data[position : position + 2]  # note 2: "=" and the octet after it, untransformed
            position += 2
    return bytes(out)


_QP_PIECES = st.sampled_from(
    [b"=", b"==", b"=4", b"=41", b"=3d", b"=ZZ", b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"\x00", b"\xff"]
)


@fuzz_settings()
@given(st.lists(_QP_PIECES, max_size=40).map(b"".join), st.integers(1, 12))
def test_quoted_printable_agrees_with_the_octet_by_octet_reading(data: bytes, chunk: int) -> None:
    decoded = transfer.decode_quoted_printable(data)
    assert decoded == reference_quoted_printable(data)
    assert len(decoded) <= len(data)
    # Decoded in small chunks (cut wherever the rules allow), the result is the same.
    assert transfer.decode_quoted_printable(data, chunk=chunk) == decoded


@fuzz_settings()
@given(st.binary(max_size=200))
def test_decoders_take_any_input(data: bytes) -> None:
    assert len(transfer.decode_quoted_printable(data)) <= len(data)
    assert len(transfer.decode_base64(data)) <= len(data)
    for encoding in ("7bit", "8bit", "binary", "BASE64", "Quoted-Printable", "x-uuencode", "x-\xff"):
        try:
            transfer.decode_transfer_encoding(data, encoding)
        except UnknownEncoding:
            assert encoding.startswith("x-")


@fuzz_settings()
@given(st.binary(max_size=200), st.integers(0, 200))
def test_base64_round_trip_with_noise(data: bytes, noise_at: int) -> None:
    encoded = base64.encodebytes(data)
    # RFC 2045 §6.8: characters outside the alphabet are ignored wherever they are.
    noisy = encoded[:noise_at] + b" \r\n!" + encoded[noise_at:]
    assert transfer.decode_base64(noisy) == data == binascii.a2b_base64(encoded)
    assert transfer.decode_base64(noisy, chunk=noise_at % 7 + 1) == data


@fuzz_settings()
@given(
    st.lists(_QP_PIECES | st.sampled_from([b" " * 20, b"\t \t" * 7]), max_size=40).map(b"".join)
    | st.binary(max_size=200),
    st.lists(st.integers(0, 60), max_size=8),
    st.integers(1, 12),
)
def test_streaming_decoders_agree_with_the_whole_part(data: bytes, cuts: list[int], chunk: int) -> None:
    """SEARCH feeds a part in pieces: whatever the pieces, the octets are those BINARY gives."""
    pieces, start = [], 0
    for cut in sorted(cuts):
        pieces.append(data[start : start + cut])
        start += cut
    pieces.append(data[start:])
    for decoder, whole in (
        (transfer.QuotedPrintableDecoder(chunk), transfer.decode_quoted_printable(data)),
        (transfer.Base64Decoder(chunk), transfer.decode_base64(data)),
    ):
        assert b"".join(decoder.feed(piece) for piece in pieces) + decoder.flush() == whole
