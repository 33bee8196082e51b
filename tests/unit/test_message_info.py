"""The MIME scanner behind ENVELOPE/BODYSTRUCTURE: structures, offsets, decoding, bad input."""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.policy
import io
import json
import tracemalloc

import pytest

from surat.message.address import MISSING_DOMAIN, Address
from surat.message.encoded_words import decode_encoded_words
from surat.message.info import MessageInfo, compute_message_info
from surat.message.mime import BodyPart


class Trickle(io.RawIOBase):
    """A file whose read() returns at most `step` bytes: every chunk boundary gets exercised."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def info_of(data: bytes) -> MessageInfo:
    info = compute_message_info(io.BytesIO(data))
    # The same answer whatever the read sizes are (boundaries split across reads).
    for step in (1, 2, 3, 5, 64):
        assert compute_message_info(Trickle(data, step)) == info  # type: ignore[arg-type]
    assert MessageInfo.from_json(info.to_json()) == info
    check_offsets(data, info.body)
    return info


def check_offsets(data: bytes, part: BodyPart) -> None:
    assert 0 <= part.header_start <= part.body_start <= part.end <= len(data)
    assert part.size == part.end - part.body_start
    header = data[part.header_start : part.body_start]
    # A header block either is empty or ends with its empty line (unless the header was cut short).
    assert header == b"" or header.endswith((b"\r\n\r\n", b"\n\n", b"\n")) or part.end == part.body_start
    for child in part.parts:
        assert part.body_start <= child.header_start and child.end <= part.end
        check_offsets(data, child)
    if part.message is not None:
        assert part.message.header_start == part.body_start
        assert part.message.end == part.end
        check_offsets(data, part.message)


def shape(part: BodyPart) -> tuple[object, ...]:
    children: tuple[object, ...] = tuple(shape(p) for p in part.parts)
    if part.message is not None:
        children = (shape(part.message),)
    return (f"{part.type}/{part.subtype}", part.size, part.lines, children)


def body(data: bytes, part: BodyPart) -> bytes:
    return data[part.body_start : part.end]


def mime_header(data: bytes, part: BodyPart) -> bytes:
    return data[part.header_start : part.body_start]


PLAIN = (
    b"Return-Path: <alice@example.org>\r\n"
    b"From: Alice Example <alice@example.org>\r\n"
    b'To: bob@example.test, "Carol, C." <carol@example.test>\r\n'
    b"Subject: Lunch\r\n"
    b"Date: Tue, 2 Jan 2024 10:00:00 +0100\r\n"
    b"Message-ID: <lunch-1@example.org>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)


def test_plain_message() -> None:
    info = info_of(PLAIN)
    root = info.body
    assert (root.type, root.subtype, root.params) == ("text", "plain", (("charset", "us-ascii"),))
    assert root.encoding == "7BIT"
    assert body(PLAIN, root) == b"Shall we?\r\n-- \r\nAlice\r\n"
    assert root.lines == 3
    assert root.header_start == 0 and PLAIN[: root.body_start].endswith(b"\r\n\r\n")
    env = info.envelope
    assert env.subject == "Lunch"
    assert env.date == "Tue, 2 Jan 2024 10:00:00 +0100"
    assert env.message_id == "<lunch-1@example.org>"
    assert env.from_ == (Address("Alice Example", None, "alice", "example.org"),)
    # RFC 9051 §7.5.2: absent Sender and Reply-To default to From.
    assert env.sender == env.from_ and env.reply_to == env.from_
    assert env.to == (
        Address(None, None, "bob", "example.test"),
        Address("Carol, C.", None, "carol", "example.test"),
    )
    assert env.cc == () and env.bcc == () and env.in_reply_to is None
    assert info.date == 1704186000.0  # 09:00 UTC
    assert info.message_id == "<lunch-1@example.org>"
    assert info.size == len(PLAIN)


ALTERNATIVE = (
    b"From: a@example.org\r\n"
    b"Subject: alt\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="=_b1"\r\n'
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"\r\n"
    b"--=_b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"second line\r\n"
    b"--=_b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>caf\xc3\xa9</p>\r\n"
    b"--=_b1--\r\n"
    b"\r\n"
    b"epilogue\r\n"
)


def test_multipart_alternative() -> None:
    info = info_of(ALTERNATIVE)
    root = info.body
    assert shape(root) == (
        "multipart/alternative",
        len(ALTERNATIVE) - root.body_start,
        0,
        (("text/plain", 22, 2, ()), ("text/html", 12, 1, ())),
    )
    plain, html = root.parts
    assert plain.params == (("charset", "utf-8"),)
    assert plain.encoding == "QUOTED-PRINTABLE"
    assert body(ALTERNATIVE, plain) == b"caf=C3=A9\r\nsecond line"
    assert body(ALTERNATIVE, html) == b"<p>caf\xc3\xa9</p>"
    assert mime_header(ALTERNATIVE, html) == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert root.params == (("boundary", "=_b1"),)
    assert root.part((2,)) is html and root.part((3,)) is None


MIXED = (
    b"From: Bob <bob@example.test>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: report\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"see attached\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<b>see attached</b>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Disposition: attachment;\r\n"
    b'\tfilename="report.pdf"; size=12\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <part2@example.test>\r\n"
    b"Content-Description: The report\r\n"
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://example.test/report.pdf\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"JSVFT0YK\r\n"
    b"--outer--\r\n"
)


def test_mixed_with_attachment() -> None:
    info = info_of(MIXED)
    root = info.body
    alternative, pdf = root.parts
    assert shape(alternative) == (
        "multipart/alternative",
        len(
            b"--inner\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--inner\r\nContent-Type: text/html\r\n\r\n"
            b"<b>see attached</b>\r\n--inner--"
        ),
        0,
        (("text/plain", 12, 1, ()), ("text/html", 19, 1, ())),
    )
    assert (pdf.type, pdf.subtype, pdf.params) == ("application", "pdf", (("name", "report.pdf"),))
    assert pdf.disposition == "attachment"
    assert pdf.disposition_params == (("filename", "report.pdf"), ("size", "12"))
    assert pdf.encoding == "BASE64"
    assert pdf.id == "<part2@example.test>"
    assert pdf.description == "The report"
    assert pdf.language == ("en", "de")
    assert pdf.location == "http://example.test/report.pdf"
    assert body(MIXED, pdf) == b"JVBERi0xLjQK\r\nJSVFT0YK"
    assert root.part((1, 2)) is alternative.parts[1]
    assert body(MIXED, alternative.parts[1]) == b"<b>see attached</b>"
    # BODY[2.MIME] is the part's header, ending with its empty line.
    assert mime_header(MIXED, pdf).startswith(b"Content-Type: application/pdf")
    assert mime_header(MIXED, pdf).endswith(b"\r\n\r\n")


NESTED = (
    b"From: list@example.org\r\n"
    b"Subject: Fwd: hello\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n'
    b"\r\n"
    b"--xx\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Forwarded below.\r\n"
    b"--xx\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Dave <dave@example.net>\r\n"
    b"Sender: sec@example.net\r\n"
    b"Subject: hello\r\n"
    b"In-Reply-To: <a@b>\r\n"
    b"Content-Type: multipart/mixed; boundary=yy\r\n"
    b"\r\n"
    b"--yy\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--yy--\r\n"
    b"--xx--\r\n"
)


def test_nested_message_rfc822() -> None:
    info = info_of(NESTED)
    text, rfc822 = info.body.parts
    assert body(NESTED, text) == b"Forwarded below."
    assert (rfc822.type, rfc822.subtype) == ("message", "rfc822")
    inner = rfc822.message
    assert inner is not None and rfc822.envelope is not None
    assert rfc822.envelope.subject == "hello"
    assert rfc822.envelope.from_ == (Address("Dave", None, "dave", "example.net"),)
    assert rfc822.envelope.sender == (Address(None, None, "sec", "example.net"),)
    assert rfc822.envelope.reply_to == rfc822.envelope.from_
    assert rfc822.envelope.in_reply_to == "<a@b>"
    embedded = body(NESTED, rfc822)
    assert embedded.startswith(b"From: Dave") and embedded.endswith(b"--yy--")
    assert rfc822.lines == embedded.count(b"\n") + 1
    assert inner.type == "multipart" and len(inner.parts) == 1
    # A part with no header at all: the default text/plain, body right after the delimiter's line.
    leaf = inner.parts[0]
    assert (leaf.type, leaf.subtype) == ("text", "plain")
    assert mime_header(NESTED, leaf) == b"\r\n"
    assert body(NESTED, leaf) == b"inner text"
    # RFC 9051 §6.4.5: section 2.1 is the first part of the embedded message.
    assert info.body.part((2, 1)) is leaf


def test_missing_close_boundary_ends_parts_at_eof() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\nstill two\r\n"
    )
    info = info_of(data)
    one, two = info.body.parts
    assert body(data, one) == b"one"
    assert body(data, two) == b"two\r\nstill two\r\n"
    assert two.lines == 2
    assert info.body.end == len(data)


def test_outer_boundary_closes_inner_multipart() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        b"--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
        b"--in\r\n\r\nunclosed\r\n"
        b"--out\r\nContent-Type: text/plain\r\n\r\nlast\r\n"
        b"--out--\r\n"
    )
    info = info_of(data)
    inner, last = info.body.parts
    assert len(inner.parts) == 1 and body(data, inner.parts[0]) == b"unclosed"
    assert body(data, last) == b"last"


def test_empty_last_part_before_an_outer_delimiter_stays_inside_its_multipart() -> None:
    # found by the multipart fuzz test: "--in CRLF --out": the inner multipart ended before the CRLF
    # (which belongs to "--out", RFC 2046 §5.1.1) while its empty last part started after it
    data = (
        b"Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        b"--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
        b"--in\r\n\r\nfirst\r\n--in\r\n"
        b"--out\r\nContent-Type: text/plain\r\n\r\nlast\r\n--out--\r\n"
    )
    info = info_of(data)  # check_offsets: every part inside its parent
    inner, last = info.body.parts
    first, empty = inner.parts
    assert body(data, first) == b"first" and empty.size == 0
    assert empty.header_start == inner.end == data.index(b"--out\r\nContent-Type: text")
    assert body(data, last) == b"last"


def test_empty_last_part_of_an_attached_message_stays_inside_its_part() -> None:
    # found by `make fuzz` (test_mutated_multiparts_give_message_info): the same "--in CRLF --out",
    # inside a message/rfc822 part: the attached message's empty last part started after the CRLF
    # that ends the message/rfc822 part, so the part ended before its own message
    data = (
        b"Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        b"--out\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: in\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n"
        b"--out\r\nContent-Type: text/plain\r\n\r\nlast\r\n--out--\r\n"
    )
    info = info_of(data)  # check_offsets: every part inside its parent
    attached, last = info.body.parts
    assert attached.message is not None
    (empty,) = attached.message.parts
    assert empty.size == 0 and attached.message.end <= attached.end
    assert attached.end == empty.end == data.index(b"--out\r\nContent-Type: text")
    assert body(data, last) == b"last"


def test_no_headers() -> None:
    data = b"\r\njust a body\r\n"
    info = info_of(data)
    assert info.body.body_start == 2
    assert body(data, info.body) == b"just a body\r\n"
    assert info.envelope.from_ == () and info.envelope.subject is None
    assert info.subject is None and info.date is None


def test_header_without_empty_line() -> None:
    data = b"Subject: x\r\nthis is not a header\r\nmore\r\n"
    info = info_of(data)
    assert info.subject == "x"
    assert body(data, info.body) == b"this is not a header\r\nmore\r\n"
    assert info.body.lines == 2


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: a\r\n\tfolded  value \r\n",  # folding and WSP around the value
        b" leading continuation\r\nSubject: a\r\n",  # a continuation with no field before it is dropped
        b"Subject : obsolete space before the colon\r\n",
        b"Subject: bare\rCR inside\r\n",
        b"Subject: a\r\nnot a field\r\n",  # the header ends early: the line-by-line path decides where
        b"From mbox-separator\r\nSubject: a\r\n",
        b"Subject: a\nTo: bare LF\r\n",  # a bare LF in the header: the line-by-line path
        b"Subject: " + b"x" * 70_000 + b"\r\n",  # longer than a kept line
    ],
)
def test_header_read_whole_agrees_with_line_by_line(header: bytes) -> None:
    # info_of compares a whole-buffer read (one split of the header) with reads of a few octets each
    data = header + b"\r\nbody\r\n"
    inner = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + header + b"\r\npart\r\n--b--\r\n"
    info_of(data)
    info_of(inner)


@pytest.mark.parametrize("data", [b"", b"Subject: only a header", b"\r\n", b"--\r\n", b"\n\n\n"])
def test_degenerate_inputs_do_not_raise(data: bytes) -> None:
    info = info_of(data)
    assert info.size == len(data)


def test_lf_line_endings() -> None:
    data = MIXED.replace(b"\r\n", b"\n")
    info = info_of(data)
    alternative, pdf = info.body.parts
    assert body(data, pdf) == b"JVBERi0xLjQK\nJSVFT0YK"
    assert body(data, alternative.parts[0]) == b"see attached"


def test_8bit_body_and_header() -> None:
    data = (
        "From: Jörg <jörg@exämple.de>\r\nSubject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
    ).encode()
    info = info_of(data)
    assert info.body.encoding == "8BIT"
    assert info.subject == "Grüße"
    assert info.envelope.subject == "Grüße"
    assert info.envelope.from_ == (Address("Jörg", None, "jörg", "exämple.de"),)
    assert body(data, info.body) == "Grüße aus Köln\r\n".encode()


def test_latin1_header_octets_are_kept_exactly() -> None:
    data = b"Subject: caf\xe9\r\n\r\nx"
    info = info_of(data)
    assert info.envelope.subject is not None
    assert info.envelope.subject.encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert info.subject == "café"


def test_rfc2047_words_decoded_for_search_but_raw_in_envelope() -> None:
    data = (
        b"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\r\n"
        b"To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>\r\n"
        b"Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
        b" =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\r\n"
        b"References: <a@x> <b@x>\r\n  <c@x>\r\n"
        b"In-Reply-To: <b@x> (comment)\r\n"
        b"Date: 1 Jan 2024 00:00:00 -0000\r\n"
        b"\r\n"
    )
    info = info_of(data)
    assert info.subject == "If you can read this you understand the example."
    assert info.from_ == "André Pirard <PIRARD@vm1.ulg.ac.be>"
    assert info.to == "Keith Moore <moore@cs.utk.edu>"
    env = info.envelope
    assert env.subject == (
        "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
    )
    assert env.from_[0].name == "=?ISO-8859-1?Q?Andr=E9?= Pirard"
    assert info.references == ("<a@x>", "<b@x>", "<c@x>")
    assert info.in_reply_to == "<b@x>"
    assert info.date == 1704067200.0


def test_groups_and_odd_addresses() -> None:
    data = (
        b"From: Alice <alice@example.org>\r\n"
        b"To: undisclosed-recipients:;\r\n"
        b'Cc: Team: one@example.org, "Two, Esq." <two@example.org>;, three@example.org (Three)\r\n'
        b"Bcc: <@relay.example,@hop.example:route@example.org>, localonly\r\n"
        b"Reply-To:\r\n"
        b"\r\n"
    )
    env = info_of(data).envelope
    assert env.to == (Address(None, None, "undisclosed-recipients", None), Address(None, None, None, None))
    assert env.cc == (
        Address(None, None, "Team", None),
        Address(None, None, "one", "example.org"),
        Address("Two, Esq.", None, "two", "example.org"),
        Address(None, None, None, None),
        Address("Three", None, "three", "example.org"),
    )
    assert env.cc[0].is_group_start and env.cc[3].is_group_end
    assert env.bcc == (
        Address(None, "@relay.example,@hop.example", "route", "example.org"),
        Address(None, None, "localonly", MISSING_DOMAIN),
    )
    # An empty Reply-To takes From's value too.
    assert env.reply_to == env.from_


def test_digest_parts_default_to_message_rfc822() -> None:
    data = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d--\r\n"
    )
    info = info_of(data)
    (part,) = info.body.parts
    assert (part.type, part.subtype) == ("message", "rfc822")
    assert part.envelope is not None and part.envelope.subject == "one"


def test_invalid_content_type_falls_back_to_text_plain() -> None:
    info = info_of(b"Content-Type: garbage\r\n\r\nx")
    assert (info.body.type, info.body.subtype) == ("text", "plain")


@pytest.mark.parametrize("message", [PLAIN, ALTERNATIVE, MIXED, NESTED])
def test_leaf_bodies_match_the_stdlib_parser(message: bytes) -> None:
    """A second opinion on well-formed messages: every leaf body is what `email` extracts."""
    info = info_of(message)
    ours: list[bytes] = []

    def leaves(part: BodyPart) -> None:
        if part.message is not None:
            leaves(part.message)
        elif part.parts:
            for child in part.parts:
                leaves(child)
        else:
            ours.append(body(message, part))

    leaves(info.body)
    theirs: list[bytes] = []
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    for part in parsed.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=False)
            assert isinstance(payload, str)
            theirs.append(payload.encode("utf-8", "surrogateescape"))
    assert [b.rstrip(b"\r\n") for b in ours] == [t.rstrip(b"\r\n") for t in theirs]


class Generated(io.RawIOBase):
    """A 50 MiB message produced on the fly, so that the test itself holds little memory."""

    HEAD = (
        b"Subject: big\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    LINE = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    TAIL = b"--zz--\r\n"

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self._emitted = 0
        self._stage = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._stage == 0:
            self._stage = 1
            return self.HEAD
        if self._stage == 1:
            count = min(1024, self.lines - self._emitted)
            self._emitted += count
            if self._emitted >= self.lines:
                self._stage = 2
            return self.LINE * count
        if self._stage == 2:
            self._stage = 3
            return self.TAIL
        return b""


def test_fifty_mib_in_bounded_memory() -> None:
    lines = 50 * 1024 * 1024 // len(Generated.LINE)
    tracemalloc.start()
    try:
        info = compute_message_info(Generated(lines))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text, blob = info.body.parts
    assert (text.size, text.lines) == (5, 1)
    assert blob.size == lines * len(Generated.LINE) - 2
    assert blob.lines == lines
    assert info.size == len(Generated.HEAD) + lines * len(Generated.LINE) + len(Generated.TAIL)
    assert peak < 2 * 1024 * 1024, peak  # the generator's own chunks are ~80 KiB


def test_long_line_without_newline_is_bounded() -> None:
    data = b"Subject: x\r\n\r\n" + b"a" * 300_000
    info = info_of(data)
    assert info.body.size == 300_000 and info.body.lines == 1


# ----------------------------------------------------------------------------------------- stored JSON

STORED = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"Subject: caf\xc3\xa9 \xe9t\xe9\r\n"
    b"Message-ID: <x@example.org>\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Language: en, fr\r\n\r\nhi\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=x.eml\r\n\r\n"
    b"From: Bob <bob@example.net>\r\nTo: a@x, b@y\r\nSubject: inner\r\n\r\nbody\r\n"
    b"--b--\r\n"
)
# What the first release's to_json wrote for STORED, as it sits in existing databases.
STORED_JSON = (
    '[1,[null,"caf\\u00e9 \\udce9t\\udce9",[["Alice Example",null,"alice","example.org"]],[["Alice Example",'
    'null,"alice","example.org"]],[["Alice Example",null,"alice","example.org"]],[],[],[],null,"<x@example.org>"],'
    '["multipart","mixed",[["boundary","b"]],null,null,"7BIT",238,0,null,[],[],null,0,135,373,[["text","plain",'
    '[["charset","utf-8"]],null,null,"7BIT",2,1,null,[],["en","fr"],null,140,209,211,[],null,null],["message",'
    '"rfc822",[],null,null,"7BIT",65,5,"attachment",[["filename","x.eml"]],[],null,218,299,364,[],[null,"inner",'
    '[["Bob",null,"bob","example.net"]],[["Bob",null,"bob","example.net"]],[["Bob",null,"bob","example.net"]],'
    '[[null,null,"a","x"],[null,null,"b","y"]],[],[],null,null],["text","plain",[["charset","us-ascii"]],null,'
    'null,"7BIT",4,1,null,[],[],null,299,360,364,[],null,null]]],null,null],"caf\\u00c3\\u00a9 \\u00e9t\\u00e9",'
    '"Alice Example <alice@example.org>",null,null,null,null,"<x@example.org>",null,[]]'
)
FIELDS = (
    "envelope",
    "body",
    "subject",
    "from_",
    "to",
    "cc",
    "bcc",
    "date",
    "message_id",
    "in_reply_to",
    "references",
)


def test_stored_json_still_loads() -> None:
    info = info_of(STORED)
    loaded = MessageInfo.from_json(STORED_JSON)
    assert loaded == info and hash(loaded) == hash(info)
    assert loaded.to_json() == STORED_JSON == info.to_json()
    assert loaded.envelope.subject == "caf\u00e9 \udce9t\udce9"  # raw octets kept exactly
    assert loaded.body.part((2,)) == info.body.part((2,))


@pytest.mark.parametrize("first", FIELDS)
def test_each_field_decodes_alone_and_first(first: str) -> None:
    """Fields are decoded on first use, each from its part of the text: whichever comes first, every
    field ends up equal to the eagerly decoded one."""
    info = info_of(STORED)
    lazy = MessageInfo.from_json(STORED_JSON)
    assert getattr(lazy, first) == getattr(info, first)
    for name in FIELDS:
        assert getattr(lazy, name) == getattr(info, name), name
    assert lazy.size == len(STORED)


def test_other_json_layouts_load() -> None:
    info = info_of(STORED)
    obj = json.loads(STORED_JSON)
    # Whitespace between the values, after the usual start: the lazy path skips it.
    spaced = "[1," + json.dumps(obj[1]) + " ,\n " + json.dumps(obj[2]) + " , " + json.dumps(obj[3:])[1:]
    # Pretty-printed: decoded and checked at once.
    pretty = json.dumps(obj, indent=2)
    for text in (spaced, pretty):
        for name in FIELDS:
            assert getattr(MessageInfo.from_json(text), name) == getattr(info, name)


@pytest.mark.parametrize("text", ['{"v": 1}', "[2,[],[]]", "[1, [], []]", "[]", "[1,{}]"])
def test_unknown_encodings_are_refused_at_once(text: str) -> None:
    with pytest.raises(ValueError, match="unknown MessageInfo encoding"):
        MessageInfo.from_json(text)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[1,[null", "envelope"),  # cut inside the envelope
        ("[1,[],[]]", "envelope"),  # JSON, but not the layout
        ("[1,[],[]]", "body"),
        (STORED_JSON[:400], "body"),  # cut inside the body
        (STORED_JSON.replace(',"caf\\u00c3', ';"caf\\u00c3'), "subject"),  # no comma after the body
        (STORED_JSON[:-4] + "]", "references"),  # a header value missing
        (STORED_JSON + "]", "subject"),  # trailing data
    ],
)
def test_damaged_text_raises_value_error_when_used(text: str, field: str) -> None:
    info = MessageInfo.from_json(text)
    with pytest.raises(ValueError):
        getattr(info, field)


def test_message_info_is_immutable() -> None:
    for info in (info_of(PLAIN), MessageInfo.from_json(STORED_JSON)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            info.subject = "changed"
        with pytest.raises(dataclasses.FrozenInstanceError):
            del info.subject
        with pytest.raises(AttributeError):
            info.nonexistent  # type: ignore[attr-defined]  # noqa: B018
    assert repr(MessageInfo.from_json(STORED_JSON)).startswith("MessageInfo(envelope=Envelope(")


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        # RFC 2047 §8 examples
        ("=?ISO-8859-1?Q?a?=", "a"),
        ("=?ISO-8859-1?Q?a?= b", "a b"),
        ("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab"),
        ("=?ISO-8859-1?Q?a?=  \t =?ISO-8859-1?Q?b?=", "ab"),
        ("=?ISO-8859-1?Q?a_b?=", "a b"),
        ("=?UTF-8*en?Q?hi?=", "hi"),  # RFC 2231 §5 language suffix
        # §6.3: a word that cannot be decoded is shown as written; the others are still decoded
        ("=?\xf0tf-8?q?x?=", "=?\xf0tf-8?q?x?="),
        ("=?zlib?q?x?= =?utf-8?q?caf=C3=A9?=", "=?zlib?q?x?= café"),
        ("=?utf-8?q?caf=C3=A9?= =?no-such-charset?b?QQ==?=", "café =?no-such-charset?b?QQ==?="),
        ("=?unicode-escapeÿiso-2022-jp?q?=_rot13?=", "=?unicode-escapeÿiso-2022-jp?q?=_rot13?="),
        ("=?hex?q?41?=", "=?hex?q?41?="),  # a codec, but not a text encoding
        ("plain =? not a word ?=", "plain =? not a word ?="),
    ],
)
def test_encoded_words_decode_totally(value: str, decoded: str) -> None:
    assert decode_encoded_words(value) == decoded


def test_undecodable_charset_in_subject_is_kept_raw() -> None:
    info = info_of(b"Subject: =?\xf0tf-8?q?x?=\r\nFrom: =?zlib?q?a?= <a@example.org>\r\n\r\nx")
    assert info.subject == "=?\xf0tf-8?q?x?="
    assert info.from_ == "=?zlib?q?a?= <a@example.org>"
