"""FETCH body sections located from MessageInfo offsets (RFC 9051 §6.4.5) and BINARY decoding (RFC 3516)."""

from __future__ import annotations

import base64
import io

import pytest

from surat.imapd.sections import (
    ByteRange,
    HeaderFields,
    UnknownEncoding,
    binary_part,
    decode_transfer_encoding,
    filter_header,
    locate,
    read_range,
)
from surat.proto.imap.commands import Section
from surat.store.messageinfo import compute_message_info

INNER = b"Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner body\r\n"
MESSAGE = (
    b"Subject: outer\r\nX-Folded: a\r\n b\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + INNER + b"--B\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"\x00\xffdata")
    + b"\r\n--B--\r\n"
)
INFO = compute_message_info(io.BytesIO(MESSAGE))


def text(section: Section) -> bytes:
    where = locate(INFO, section)
    assert isinstance(where, ByteRange)
    return read_range(io.BytesIO(MESSAGE), where)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (Section(), MESSAGE),
        (Section((), "TEXT"), MESSAGE[MESSAGE.index(b"--B") :]),
        (Section((1,)), b"first"),
        (Section((1,), "MIME"), b"Content-Type: text/plain\r\n\r\n"),
        (Section((2,)), INNER[:-2]),  # the embedded message; the CRLF before "--B" is the delimiter's
        (Section((2,), "HEADER"), b"Subject: inner\r\nContent-Type: text/plain\r\n\r\n"),
        (Section((2,), "TEXT"), b"inner body"),
        (Section((2, 1)), b"inner body"),
        (Section((3,)), base64.b64encode(b"\x00\xffdata")),
        (Section((9,)), b""),  # no such part
        (Section((1,), "TEXT"), b""),  # TEXT of a part that is not a message
    ],
)
def test_locate(section: Section, expected: bytes) -> None:
    assert text(section) == expected


def test_header_fields_and_not() -> None:
    where = locate(INFO, Section((), "HEADER.FIELDS", ("X-FOLDED", "SUBJECT")))
    assert isinstance(where, HeaderFields)
    block = read_range(io.BytesIO(MESSAGE), where.header)
    assert filter_header(block, where.fields, exclude=False) == b"Subject: outer\r\nX-Folded: a\r\n b\r\n\r\n"
    assert filter_header(block, where.fields, exclude=True) == (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    )
    # An unmatched list still yields the empty line (RFC 9051 §6.4.5).
    assert filter_header(block, frozenset({"nope"}), exclude=False) == b"\r\n"


def test_binary_part_decodes_transfer_encoding() -> None:
    located = binary_part(INFO, (3,))
    assert located is not None
    rng, encoding = located
    raw = read_range(io.BytesIO(MESSAGE), rng)
    assert decode_transfer_encoding(raw, encoding) == b"\x00\xffdata"
    assert binary_part(INFO, (7,)) is None
    whole = binary_part(INFO, ())
    assert whole is not None and whole[0] == ByteRange(0, len(MESSAGE))


@pytest.mark.parametrize(
    ("data", "encoding", "expected"),
    [
        (b"caf=C3=A9 soft=\r\nbreak\r\nnext", "quoted-printable", b"caf\xc3\xa9 softbreak\r\nnext"),
        (b"AAEC\r\n/w==\r\n", "BASE64", b"\x00\x01\x02\xff"),
        (b"AAE", "base64", b"\x00\x01"),  # unpadded last quantum: its whole octets
        (b"raw \x00 bytes", "binary", b"raw \x00 bytes"),
        (b"text", "7bit", b"text"),
    ],
)
def test_decode_transfer_encoding(data: bytes, encoding: str, expected: bytes) -> None:
    assert decode_transfer_encoding(data, encoding) == expected


def test_unknown_encoding() -> None:
    with pytest.raises(UnknownEncoding):
        decode_transfer_encoding(b"x", "x-uuencode")
