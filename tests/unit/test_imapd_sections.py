"""FETCH body sections located from MessageInfo offsets (RFC 9051 §6.4.5) and BINARY decoding (RFC 3516)."""

from __future__ import annotations

import base64
import io

import pytest

from surat.imapd.sections import (
    ByteRange,
    HeaderFields,
    binary_part,
    filter_header,
    locate,
)
from surat.message.info import compute_message_info
from surat.message.transfer import (
    UnknownEncoding,
    decode_base64,
    decode_quoted_printable,
    decode_transfer_encoding,
)
from surat.proto.imap.commands import Section
from surat.proto.imap.structure import body_structure

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
    return MESSAGE[where.start : where.end]


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
    block = MESSAGE[where.header.start : where.header.end]
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
    raw = MESSAGE[rng.start : rng.end]
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


# RFC 2045 §6.7, rule by rule and note by note.
@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"caf=C3=A9", b"caf\xc3\xa9"),  # rule 1
        (b"caf=c3=a9", b"caf\xc3\xa9"),  # note 1: lower-case hex accepted
        (b"soft=\r\nbreak", b"softbreak"),  # rule 5
        (b"soft=\nbreak", b"softbreak"),  # a bare LF ends a line too
        (b"soft= \t\r\nbreak", b"softbreak"),  # rule 3: padding after the soft break's "="
        (b"pad \t\r\nnext", b"pad\r\nnext"),  # rule 3: trailing white space deleted
        (b"pad  ", b"pad"),  # also on the last line
        (b"in side", b"in side"),  # white space inside a line stays
        (b"=20\r\n", b" \r\n"),  # an encoded space at the end stays
        (b"end=", b"end"),  # the soft break whose line end is the boundary delimiter's (RFC 2046 §5.1.1)
        (b"bad =ZZ", b"bad =ZZ"),  # note 2: "=" and the octet after it kept
        (b"=4=41", b"=4A"),  # an "=" with one hex digit is bad; the next escape is good
        (b"==41", b"==41"),  # the octet kept after a bad "=" starts no escape
        (b"a==", b"a=="),  # ... even at the end of a line: no soft break
        (b"a===", b"a=="),  # "==" kept, then a soft break
        (b"x===y \r\n", b"x===y\r\n"),  # "==" kept, then "=y" kept
        (b"=4==41", b"=4==41"),
        (b"=4", b"=4"),  # note 3: "=" as penultimate octet
        (b"tab\there\x01\xff", b"tab\there\x01\xff"),  # note 4: other octets kept
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),  # hard line breaks kept
        (
            b"=41" * 3 + b"  \t  \r\n" + b"=" * 7 + b"\r\n=4",
            b"AAA\r\n" + b"=" * 6 + b"=4",
        ),  # 3 pairs, a soft break
        # Runs of blanks longer than a chunk, deleted or kept, after an "=" or not.
        (b"a" + b" \t" * 6 + b"\r\nb", b"a\r\nb"),
        (b"a" + b" \t" * 6 + b"b", b"a" + b" \t" * 6 + b"b"),
        (b"a=" + b" \t" * 6 + b"\r\nb", b"ab"),
        (b"a=" + b" \t" * 6 + b"b", b"a=" + b" \t" * 6 + b"b"),
        (b"a=" + b" " * 9, b"a"),
        (b"", b""),
    ],
)
def test_quoted_printable(encoded: bytes, decoded: bytes) -> None:
    assert decode_transfer_encoding(encoded, "QUOTED-PRINTABLE") == decoded
    # Large parts are decoded chunk by chunk: the same octets whatever the chunk size.
    for chunk in range(1, len(encoded) + 2):
        assert decode_quoted_printable(encoded, chunk=chunk) == decoded, chunk


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"AAEC\r\n/w==\r\n", b"\x00\x01\x02\xff"),
        (b"AA EC!/w", b"\x00\x01\x02\xff"),  # RFC 2045 §6.8: characters outside the alphabet ignored
        (b"QQ==QUI=", b"A"),  # "=" ends the data
        (b"QUI", b"AB"),  # unpadded last quantum
        (b"QUJDR", b"ABC"),  # a lone last sixth carries no octet
        (b"", b""),
    ],
)
def test_base64(encoded: bytes, decoded: bytes) -> None:
    assert decode_transfer_encoding(encoded, "base64") == decoded
    for chunk in range(1, len(encoded) + 2):
        assert decode_base64(encoded, chunk=chunk) == decoded, chunk


WRAPPER = b"Subject: wrapper\r\nContent-Type: message/rfc822\r\n\r\nSubject: wrapped\r\n\r\nwrapped\r\n"


@pytest.mark.parametrize(
    ("message", "section", "expected"),
    [
        # RFC 9051 §6.4.5: a top-level message/rfc822 has a part 1, the encapsulated message.
        (WRAPPER, Section((1,)), b"Subject: wrapped\r\n\r\nwrapped\r\n"),
        (WRAPPER, Section((1,), "HEADER"), b"Subject: wrapped\r\n\r\n"),
        (WRAPPER, Section((1, 1)), b"wrapped\r\n"),
        (WRAPPER, Section((1, 1, 1)), b""),
        (WRAPPER, Section((2,)), b""),
        # A leaf has no subparts, at the top or inside a multipart.
        (b"Subject: x\r\n\r\nbody\r\n", Section((1,)), b"body\r\n"),
        (b"Subject: x\r\n\r\nbody\r\n", Section((1, 1)), b""),
        (MESSAGE, Section((1, 1)), b""),
        (MESSAGE, Section((2, 1, 1)), b""),
    ],
)
def test_part_numbering(message: bytes, section: Section, expected: bytes) -> None:
    where = locate(compute_message_info(io.BytesIO(message)), section)
    assert isinstance(where, ByteRange)
    assert message[where.start : where.end] == expected


def test_unscanned_message_rfc822_keeps_the_body_type_msg_grammar() -> None:
    # RFC 2046 §5.2.1 forbids encoding message/rfc822; such a part is not scanned, yet RFC 9051 §9
    # body-type-msg still needs an envelope, a body and a line count.
    message = (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"Subject: hidden\r\n\r\nx\r\n")
        + b"\r\n"
    )
    info = compute_message_info(io.BytesIO(message))
    assert body_structure(info.body, extensible=False) == (
        b'("message" "rfc822" NIL NIL NIL "BASE64" 34 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" NIL NIL NIL "7bit" 0 0) 1)'
    )
    located = binary_part(info, (1,))
    assert located is not None
    assert decode_transfer_encoding(message[located[0].start : located[0].end], located[1]) == (
        b"Subject: hidden\r\n\r\nx\r\n"
    )
