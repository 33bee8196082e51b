"""FETCH of message/rfc822 parts (RFC 9051 §6.4.5 section numbering, §7.5.2 body-type-msg) and BINARY
decoding (RFC 3516, RFC 2045 §6.7/§6.8), over a socket: each message is APPENDed as crafted, then fetched,
and the whole FETCH response line is compared byte for byte."""

from __future__ import annotations

import re

import pytest
from conftest import RunningServer
from test_imap_basic import Raw

# A message/rfc822 part whose message is a multipart holding another message/rfc822: two levels deep.
NESTED = (
    b"From: outer@example.net\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: Inner <inner@example.net>\r\nSubject: inner\r\nMessage-ID: <in@example.net>\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
    b"--inner\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: deepest\r\n\r\ndeep body\r\n"
    b"--inner--\r\n"
    b"--outer--\r\n"
)
# RFC 2046 §5.1.5: in a multipart/digest, a part without Content-Type is message/rfc822.
DIGEST = (
    b"Subject: digest\r\nMIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n"
    b"--D\r\n\r\nFrom: a@example.net\r\nSubject: first\r\n\r\nfirst body\r\n"
    b"--D\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: second\r\nContent-Type: multipart/mixed; boundary=E\r\n\r\n"
    b"--E\r\nContent-Type: text/plain\r\n\r\nsecond body\r\n--E--\r\n"
    b"--D--\r\n"
)
# A message that is itself message/rfc822: its part 1 is the encapsulated message.
WRAPPER = b"Subject: wrapper\r\nContent-Type: message/rfc822\r\n\r\nSubject: wrapped\r\n\r\nwrapped body\r\n"

QP_CONTENT = (
    b"soft=\r\n"  # soft line break (rule 5)
    b"break  \t\r\n"  # transport padding before a hard line break is deleted (rule 3)
    b"caf=C3=A9 =3d lower=\r\n"  # lower-case hex accepted (note 1)
    b" =\t\r\n"  # white space after the soft break's "=" (rule 3)
    b"bad =ZZ and =4 and ==41 end="  # bad escapes kept (notes 2, 3); the last "=" is a soft break
)
QP_DECODED = b"softbreak\r\ncaf\xc3\xa9 = lower bad =ZZ and =4 and ==41 end"
ENCODED = (
    b"Subject: binary\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + QP_CONTENT
    + b"\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAEC\r\n/w==\r\n"
    b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\n\r\n"  # an empty body
    b"--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\n"
    b"0123456789abcdef\r\n"
    b"--B--\r\n"
)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


@pytest.fixture
def raw(server: RunningServer) -> Raw:
    client = Raw.logged_in(server)
    for message in (NESTED, DIGEST, WRAPPER, ENCODED):
        client.send(b"a APPEND INBOX {%d}\r\n" % len(message))
        assert client.line().startswith(b"+ ")
        client.send(message + b"\r\n")
        assert re.match(rb"a OK \[APPENDUID \d+ \d+\]", client.line())
    _, done = client.command("SELECT INBOX")
    assert b" OK " in done
    return client


def fetch_line(raw: Raw, command: str) -> bytes:
    lines, done = raw.command(command)
    assert b" OK " in done, done
    assert len(lines) == 1, lines
    return lines[0]


def assert_sections(raw: Raw, seq: int, table: list[tuple[str, bytes]]) -> None:
    """FETCH each BODY.PEEK[section] and compare the whole response line."""
    for section, content in table:
        line = fetch_line(raw, f"FETCH {seq} (BODY.PEEK[{section}])")
        assert line == b"* %d FETCH (BODY[%b] %b)\r\n" % (seq, section.encode(), literal(content)), section


# ------------------------------------------------------------------------------------------- message/rfc822


def test_message_rfc822_sections_two_levels_deep(raw: Raw) -> None:
    table = [
        # RFC 9051 §6.4.5: the part is the whole encapsulated message, header and body.
        ("2", NESTED[NESTED.index(b"From: Inner") : NESTED.index(b"\r\n--outer--")]),
        ("2.MIME", b"Content-Type: message/rfc822\r\n\r\n"),
        (
            "2.HEADER",
            b"From: Inner <inner@example.net>\r\nSubject: inner\r\nMessage-ID: <in@example.net>\r\n"
            b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n',
        ),
        ("2.TEXT", NESTED[NESTED.index(b"--inner\r\n") : NESTED.index(b"\r\n--outer--")]),
        ("2.1", b"inner text"),
        ("2.1.MIME", b"Content-Type: text/plain\r\n\r\n"),
        ("2.2", b"Subject: deepest\r\n\r\ndeep body"),
        ("2.2.MIME", b"Content-Type: message/rfc822\r\n\r\n"),
        ("2.2.HEADER", b"Subject: deepest\r\n\r\n"),
        ("2.2.TEXT", b"deep body"),
        ("2.2.1", b"deep body"),  # a non-multipart message's part 1 is its body
        ("2.HEADER.FIELDS (SUBJECT)", b"Subject: inner\r\n\r\n"),
        ("2.2.HEADER.FIELDS.NOT (FROM)", b"Subject: deepest\r\n\r\n"),
        # Empty, all as {0}: no such part, subparts of a leaf, HEADER/TEXT of a part that is no message.
        ("3", b""),
        ("2.3", b""),
        ("2.2.1.1", b""),
        ("1.1", b""),
        ("1.HEADER", b""),
        ("2.1.TEXT", b""),
    ]
    assert_sections(raw, 1, table)
    line = fetch_line(raw, "FETCH 1 (BODY.PEEK[2.2]<9.100> BODY.PEEK[2.2]<500.10>)")
    assert line == b"* 1 FETCH (BODY[2.2]<9> {20}\r\ndeepest\r\n\r\ndeep body BODY[2.2]<500> {0}\r\n)\r\n"


def test_message_rfc822_bodystructure(raw: Raw) -> None:
    """RFC 9051 §7.5.2 body-type-msg: body-fields, then the encapsulated message's envelope and body
    structure, then the part's line count; two levels deep."""
    size = NESTED.index(b"\r\n--outer--") - NESTED.index(b"From: Inner")
    inner = b'("Inner" NIL "inner" "example.net")'
    expected = (
        b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7BIT" 12 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" %d '
        % size
        + b'(NIL "inner" (%b) (%b) (%b) NIL NIL NIL NIL "<in@example.net>") ' % (inner, inner, inner)
        + b'(("text" "plain" NIL NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 29 (NIL "deepest" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 9 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL) 16 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "outer") NIL NIL NIL))\r\n'
    )
    assert fetch_line(raw, "FETCH 1 (BODYSTRUCTURE)") == expected
    # BODY: the same without extension data, inside the encapsulated messages too.
    assert fetch_line(raw, "FETCH 1 (BODY)") == (
        b'* 1 FETCH (BODY (("text" "plain" NIL NIL NIL "7BIT" 12 1)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" %d '
        % size
        + b'(NIL "inner" (%b) (%b) (%b) NIL NIL NIL NIL "<in@example.net>") ' % (inner, inner, inner)
        + b'(("text" "plain" NIL NIL NIL "7BIT" 10 1)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 29 (NIL "deepest" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 9 1) 3) "alternative") 16) "mixed"))\r\n'
    )


def test_digest_parts_default_to_message_rfc822(raw: Raw) -> None:
    table = [
        ("1", b"From: a@example.net\r\nSubject: first\r\n\r\nfirst body"),
        ("1.MIME", b"\r\n"),  # the digest part's header is empty
        ("1.HEADER", b"From: a@example.net\r\nSubject: first\r\n\r\n"),
        ("1.TEXT", b"first body"),
        ("1.1", b"first body"),
        ("2.TEXT", b"--E\r\nContent-Type: text/plain\r\n\r\nsecond body\r\n--E--"),
        ("2.1", b"second body"),
        ("2.1.MIME", b"Content-Type: text/plain\r\n\r\n"),
    ]
    assert_sections(raw, 2, table)
    a = b'(NIL NIL "a" "example.net")'
    assert fetch_line(raw, "FETCH 2 (BODY)") == (
        b'* 2 FETCH (BODY (("message" "rfc822" NIL NIL NIL "7BIT" 49 '
        b'(NIL "first" (%b) (%b) (%b) NIL NIL NIL NIL NIL) '
        % (a, a, a)
        + b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 10 1) 4)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 113 (NIL "second" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'(("text" "plain" NIL NIL NIL "7BIT" 11 1) "mixed") 8) "digest"))\r\n'
    )


def test_top_level_message_rfc822(raw: Raw) -> None:
    table = [
        ("1", b"Subject: wrapped\r\n\r\nwrapped body\r\n"),
        ("1.HEADER", b"Subject: wrapped\r\n\r\n"),
        ("1.TEXT", b"wrapped body\r\n"),
        ("1.1", b"wrapped body\r\n"),
        ("TEXT", b"Subject: wrapped\r\n\r\nwrapped body\r\n"),
        ("1.2", b""),
    ]
    assert_sections(raw, 3, table)
    assert fetch_line(raw, "FETCH 3 (BODY)") == (
        b'* 3 FETCH (BODY ("message" "rfc822" NIL NIL NIL "7BIT" 34 '
        b'(NIL "wrapped" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL '
        b'"7BIT" 14 1) 3))\r\n'
    )


# ------------------------------------------------------------------------------------------- BINARY


def test_binary_decodes_quoted_printable_and_base64(raw: Raw) -> None:
    line = fetch_line(raw, "FETCH 4 (BINARY.PEEK[1] BINARY.SIZE[1])")
    assert line == b"* 4 FETCH (BINARY[1] %b BINARY.SIZE[1] %d)\r\n" % (literal(QP_DECODED), len(QP_DECODED))
    # RFC 3516 §4.3 / RFC 9051 §7.5.2: content with NUL is sent as literal8 ~{n}.
    line = fetch_line(raw, "FETCH 4 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[2]<1.2>)")
    assert (
        line
        == b"* 4 FETCH (BINARY[2] ~{4}\r\n\x00\x01\x02\xff BINARY.SIZE[2] 4 BINARY[2]<1> {2}\r\n\x01\x02)\r\n"
    )
    line = fetch_line(raw, "FETCH 4 (BINARY.PEEK[5]<0.10> BINARY.PEEK[5]<10.100> BINARY.PEEK[5]<100.5>)")
    assert line == (
        b"* 4 FETCH (BINARY[5]<0> {10}\r\n0123456789 BINARY[5]<10> {6}\r\nabcdef BINARY[5]<100> {0}\r\n)\r\n"
    )
    # A message/rfc822 part has no transfer encoding of its own to remove (RFC 2046 §5.2.1).
    line = fetch_line(raw, "FETCH 1 (BINARY.PEEK[2.2] BINARY.SIZE[2.2] BINARY.PEEK[2.2.1])")
    assert line == (
        b"* 1 FETCH (BINARY[2.2] {29}\r\nSubject: deepest\r\n\r\ndeep body BINARY.SIZE[2.2] 29 "
        b"BINARY[2.2.1] {9}\r\ndeep body)\r\n"
    )


def test_binary_unknown_transfer_encoding_and_empty_parts(raw: Raw) -> None:
    # RFC 3516 §4.3 / RFC 9051 §6.4.5: a CTE the server cannot decode fails with UNKNOWN-CTE.
    for item in ("BINARY.PEEK[3]", "BINARY.SIZE[3]"):
        lines, done = raw.command(f"FETCH 4 ({item})")
        assert lines == []
        assert done.endswith(b" NO [UNKNOWN-CTE] cannot decode Content-Transfer-Encoding X-UUENCODE\r\n")
    # BODY[] of the same part is its raw content, and the session goes on.
    assert fetch_line(raw, "FETCH 4 (BODY.PEEK[3])") == b"* 4 FETCH (BODY[3] {11}\r\nbegin 644 x)\r\n"
    # An empty part and a part that does not exist: the same {0} in BODY[] and BINARY[], size 0.
    line = fetch_line(
        raw, "FETCH 4 (BODY.PEEK[4] BINARY.PEEK[4] BINARY.SIZE[4] BINARY.PEEK[9] BINARY.SIZE[9])"
    )
    assert line == (
        b"* 4 FETCH (BODY[4] {0}\r\n BINARY[4] {0}\r\n BINARY.SIZE[4] 0 BINARY[9] {0}\r\n BINARY.SIZE[9] 0)\r\n"
    )
