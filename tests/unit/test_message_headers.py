"""surat.message.headers: the one header-section reader (RFC 5322 §2.2, §3.6.8, §4.5.3)."""

from __future__ import annotations

import pytest

from surat.message.headers import MAX_HEADER_SECTION, Header, _by_lines, field_key, read_header, unfold
from surat.smtpd.message import Spool
from surat.store.memoryblobs import MemoryBlobStore


def fields(header: Header) -> list[tuple[bytes, bytes, bytes]]:
    return list(zip(header.names, header.keys, header.raws, strict=True))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"From: a", (b"from", 5)),
        (b"From : a", (b"from", 6)),  # RFC 5322 §4.5.3: WSP before the colon (the probe)
        (b"From \t :a", (b"from", 8)),
        (b"FROM:", (b"from", 5)),
        (
            b"X-Weird!#$%&'*+-.^_`|~=?/{}()[]<>@,;\\\"name: v",
            (b"x-weird!#$%&'*+-.^_`|~=?/{}()[]<>@,;\\\"name", 43),
        ),
        (b"a:b:c", (b"a", 2)),  # the first colon ends the name
        (b": no name", None),
        (b" From: a", None),  # a continuation line, not a field
        (b"Fr om: a", None),  # WSP inside a name
        (b"From\x7f: a", None),  # DEL is not ftext
        (b"From\x00: a", None),
        ("Frøm: a".encode(), None),  # non-ASCII is not ftext (RFC 6532 keeps names ASCII)
        (b"From ceo@example.test Mon Jan  1 00:00:00 2024", None),  # an mbox line: "From" then SP then "c"
        (b"From", None),
        (b"", None),
    ],
)
def test_field_name_rule(line: bytes, expected: tuple[bytes, int] | None) -> None:
    assert field_key(line) == expected


CASES: list[tuple[bytes, list[tuple[bytes, bytes, bytes]], int, bool]] = [
    # message, (name, key, raw) per field, body_start, defect
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", [(b"A", b"a", b" 1"), (b"B", b"b", b" 2")], 14, False),
    (
        b"From : ceo@example.test\r\nFrom: bob@example.test\r\n\r\nx",
        [(b"From ", b"from", b" ceo@example.test"), (b"From", b"from", b" bob@example.test")],
        51,
        False,
    ),
    (b"Subject: a\r\n b\r\n\tc\r\n\r\n", [(b"Subject", b"subject", b" a\r\n b\r\n\tc")], 22, False),
    (b"Subject: only\r\n", [(b"Subject", b"subject", b" only")], 15, False),  # header without body
    (b"Subject: only", [(b"Subject", b"subject", b" only")], 13, False),
    (b"\r\nbody", [], 2, False),  # no header at all
    (b"\nbody", [], 1, False),
    (b"", [], 0, False),
    (b"A: 1\nB: 2\n continued\n\nbody", [(b"A", b"a", b" 1"), (b"B", b"b", b" 2\r\n continued")], 22, False),
    (b"A: 1\r\nB: 2\n\r\nbody", [(b"A", b"a", b" 1"), (b"B", b"b", b" 2")], 13, False),  # mixed line ends
    # a line that is not a field ends the header: it starts the body (lenient readers), a defect (strict)
    (b"A: 1\r\nnot a field\r\nB: 2\r\n\r\n", [(b"A", b"a", b" 1")], 6, True),
    (b"From ceo@example.test\r\nFrom: bob@example.test\r\n\r\n", [], 0, True),
    (b" lost\r\nA: 1\r\n\r\n", [(b"A", b"a", b" 1")], 15, True),  # a continuation with no field above
    (b"A:\r\n\r\n", [(b"A", b"a", b"")], 6, False),
]


@pytest.mark.parametrize(("message", "expected", "body_start", "defect"), CASES)
def test_read_header(
    message: bytes, expected: list[tuple[bytes, bytes, bytes]], body_start: int, defect: bool
) -> None:
    for header in (read_header(message), _by_lines(message, MAX_HEADER_SECTION)):
        assert fields(header) == expected
        assert header.body_start == body_start
        assert (header.defect is not None) == defect
        assert not header.truncated


@pytest.mark.parametrize(("message", "expected", "body_start", "defect"), CASES)
def test_spans_cut_out_exact_fields(
    message: bytes, expected: list[tuple[bytes, bytes, bytes]], body_start: int, defect: bool
) -> None:
    header = read_header(message, spans=True)
    assert fields(header) == expected
    assert len(header.spans) == len(expected)
    for (start, end), name, raw in zip(header.spans, header.names, header.raws, strict=True):
        text = message[start:end]
        assert text.startswith(name + b":")
        assert text.rstrip(b"\r\n").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") == name + b":" + raw


def test_values_are_unfolded_and_matched_caselessly() -> None:
    header = read_header(b"To: a\r\n\tb \r\nSUBJECT:  x  \r\nto:c\r\n\r\n")
    assert header.values(b"to") == [b"a\tb", b"c"]
    assert header.first(b"subject") == b"x"
    assert header.first(b"from") is None
    assert unfold(b" a\r\n b ") == b"a b"


def test_a_section_longer_than_the_bound_is_truncated() -> None:
    field = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    message = field * (MAX_HEADER_SECTION // len(field) + 5) + b"From: late@example.test\r\n\r\nbody"
    header = read_header(message)
    assert header.truncated and header.defect == "header section too long"
    assert header.first(b"from") is None  # beyond the bound: not read
    assert sum(len(raw) for raw in header.raws) <= MAX_HEADER_SECTION
    one_line = b"Subject: " + b"z" * (MAX_HEADER_SECTION + 10) + b"\r\n\r\n"
    assert read_header(one_line).truncated


async def test_spool_reads_the_same_header_at_every_split() -> None:
    # Submission's spool gets the message in chunks: however it is cut, it reads the same fields.
    message = b"From : ceo@example.test\r\nFrom: bob@example.test\r\nSubject: a\r\n b\r\n\r\nbody\r\n"
    expected = read_header(message)
    for cut in range(len(message) + 1):
        spool = Spool(MemoryBlobStore(), b"", add_missing_for="mail.example.test")
        await spool.write(message[:cut])
        await spool.write(message[cut:])
        await spool.finish()
        assert spool.header is not None
        assert fields(spool.header) == fields(expected), cut
        spool.discard()
