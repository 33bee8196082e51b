"""mbox reading and writing (RFC 4155, mboxrd), Maildir names and keyword letters, and the normaliser
that turns a file's lines into what the store keeps (CRLF, mbox flag headers read and taken out)."""

from __future__ import annotations

import io
import mailbox
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.mailfiles import maildir, mbox
from surat.mailfiles.importer import Normaliser, mbox_flags
from surat.mailfiles.mbox import MboxReader, separator_date, separator_line


def read_all(data: bytes) -> list[tuple[datetime | None, bytes]]:
    reader = MboxReader(io.BytesIO(data))
    return [(message.separator_date, b"".join(reader.lines())) for message in reader]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # RFC 4155 §2's example form
        (b"From foo@example.com Sat Jan  3 01:05:34 1996\n", datetime(1996, 1, 3, 1, 5, 34, tzinfo=UTC)),
        (b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\r\n", datetime(2011, 7, 8, 12, 8, 34, tzinfo=UTC)),
        (b"From - Mon Dec 31 23:59 2001\n", datetime(2001, 12, 31, 23, 59, tzinfo=UTC)),  # no seconds
        (b"From a@b Tue Mar  4 05:06:07 +0000 2014\n", datetime(2014, 3, 4, 5, 6, 7, tzinfo=UTC)),  # a zone
        (b"From a@b Tue Mar  4 05:06:07 UTC 2014\n", datetime(2014, 3, 4, 5, 6, 7, tzinfo=UTC)),
        (b"From a@b  Tue Mar  4 05:06:07 2014\n", datetime(2014, 3, 4, 5, 6, 7, tzinfo=UTC)),
        (b"From the body of a letter\n", None),
        (b"From a@b Tue Feb 30 05:06:07 2014\n", None),  # no such day
        (b"From a@b Tue Mar  4 05:06:07\n", None),  # no year
        (b">From a@b Tue Mar  4 05:06:07 2014\n", None),
        (b"from a@b Tue Mar  4 05:06:07 2014\n", None),  # case matters
        (b"From a@b Tue Mar  4 5x:06:07 2014\n", None),
    ],
)
def test_separator_lines(line: bytes, expected: datetime | None) -> None:
    assert separator_date(line) == expected


def test_separator_line_is_read_back() -> None:
    moment = datetime(2026, 2, 1, 23, 59, 59, tzinfo=UTC)
    assert separator_line(moment) == b"From MAILER-DAEMON Sun Feb  1 23:59:59 2026\n"
    assert separator_date(separator_line(moment)) == moment


def test_messages_are_split_unescaped_and_lose_the_empty_line_before_a_separator() -> None:
    data = (
        b"preamble that is no message\n"
        b"From a@example.net Sat Jan  3 01:05:34 1996\n"
        b"Subject: one\n\n>From the body\n>>From deeper\nFrom here, no date\n\n"
        b"From b@example.net Sun Jan  4 02:00:00 1996\n"
        b"Subject: two\n\nlast line\n\n"
    )
    assert read_all(data) == [
        (
            datetime(1996, 1, 3, 1, 5, 34, tzinfo=UTC),
            b"Subject: one\n\nFrom the body\n>From deeper\nFrom here, no date\n",
        ),
        (datetime(1996, 1, 4, 2, tzinfo=UTC), b"Subject: two\n\nlast line\n"),
    ]


def test_a_crlf_mbox_and_a_message_not_followed_by_an_empty_line() -> None:
    data = (
        b"From a Sat Jan  3 01:05:34 1996\r\nA: 1\r\n\r\nx\r\n\r\n"
        b"From b Sat Jan  3 01:05:35 1996\r\nB: 2\r\n\r\ny\r\n"
        b"From c Sat Jan  3 01:05:36 1996\r\nC: 3\r\n\r\nz"  # unterminated last line
    )
    assert [body for _, body in read_all(data)] == [
        b"A: 1\r\n\r\nx\r\n",
        b"B: 2\r\n\r\ny\r\n",
        b"C: 3\r\n\r\nz",
    ]


def test_unread_messages_are_skipped_and_empty_input_has_none() -> None:
    data = b"From a Sat Jan  3 01:05:34 1996\nA: 1\n\nx\n\nFrom b Sat Jan  3 01:05:35 1996\nB: 2\n\ny\n"
    reader = MboxReader(io.BytesIO(data))
    numbers = [(message.number, message.offset) for message in reader]  # lines() never read
    assert numbers == [(1, 0), (2, data.index(b"From b"))]
    assert read_all(b"") == []
    assert read_all(b"no separator at all\n") == []


SAMPLE = (
    b"junk before\nFrom a Sat Jan  3 01:05:34 1996\nA: 1\n\n>From x\n>>From y\nFrom no date\n\n\n"
    b"From b Sat Jan  3 01:05:35 1996\r\nB: 2\r\n\r\n"
    + b"z"
    * 300
    + b"From c Sat Jan  3 01:05:36 1996\r\n\r\n"
    b"From d Sat Jan  3 01:05:37 1996\n\nFrom e Sat Jan  3 01:05:38 1996\nE: 5\n\nend"
)
SAMPLE_MESSAGES = [
    b"A: 1\n\nFrom x\n>From y\nFrom no date\n\n",
    b"B: 2\r\n\r\n" + b"z" * 300 + b"From c Sat Jan  3 01:05:36 1996\r\n",  # mid-line: no separator
    b"",
    b"E: 5\n\nend",
]


@pytest.mark.parametrize("chunk", [*range(1, 70), 299, 300, 301, 1000])
def test_every_read_size_gives_the_same_messages(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The file read in pieces of every size: separators, escapes and empty lines cut anywhere."""
    monkeypatch.setattr(mbox, "READ_CHUNK", chunk)
    reader = MboxReader(io.BytesIO(SAMPLE))
    found = [(message.offset, b"".join(reader.lines())) for message in reader]
    assert [body for _, body in found] == SAMPLE_MESSAGES
    assert [offset for offset, _ in found] == [SAMPLE.index(b"From " + n) for n in (b"a", b"b", b"d", b"e")]


def test_a_long_message_comes_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mbox, "READ_CHUNK", 16)
    body = b"".join(b">From %d\n" % n for n in range(200)) + b"x" * 500 + b"\n"
    data = b"From a Sat Jan  3 01:05:34 1996\n" + body + b"\nFrom b Sat Jan  3 01:05:35 1996\nB\n"
    reader = MboxReader(io.BytesIO(data))
    next(iter(reader))
    blocks = list(reader.lines())
    assert len(blocks) > 10
    assert all(len(block) <= 3 * 16 + mbox.LINE_BOUND for block in blocks)
    assert b"".join(blocks) == body.replace(b">From", b"From")


def test_python_mailbox_reads_what_the_writer_conventions_give(tmp_path: Path) -> None:
    """Our separator and escaping, read by the standard library's mbox reader (as mutt reads them)."""
    path = tmp_path / "box.mbox"
    body = b"Subject: s\nStatus: RO\nX-Status: AF\n\n>From the start\n"
    path.write_bytes(separator_line(datetime(2020, 5, 6, 7, 8, 9, tzinfo=UTC)) + body + b"\n")
    messages = list(mailbox.mbox(path))
    assert len(messages) == 1
    assert messages[0].get_from() == "MAILER-DAEMON Wed May  6 07:08:09 2020"
    assert set(messages[0].get_flags()) == set("ROAF")


# ----------------------------------------------------------------------------------------- normaliser


def normalise(lines: list[bytes], mbox_headers: bool) -> tuple[bytes, Normaliser]:
    normaliser = Normaliser(mbox_headers)
    return b"".join(normaliser.feed(line) for line in lines) + normaliser.finish(), normaliser


MBOX_MESSAGE = (
    b"From: a@example.net\nStatus: RO\nX-Keywords: $Label1,\n  work\r\nx-status: AFTD\n"
    b"Date: Mon, 5 Jan 1998 10:00:00 +0100\n\nStatus: body\r\nline\n\nend"
)


@pytest.mark.parametrize("mbox_headers", [True, False])
def test_the_normaliser_gives_the_same_for_input_split_at_every_offset(mbox_headers: bool) -> None:
    whole, reference = normalise([MBOX_MESSAGE], mbox_headers)
    expected = (
        b"From: a@example.net\r\n"
        + (b"" if mbox_headers else b"Status: RO\r\nX-Keywords: $Label1,\r\n  work\r\nx-status: AFTD\r\n")
        + b"Date: Mon, 5 Jan 1998 10:00:00 +0100\r\n\r\nStatus: body\r\nline\r\n\r\nend"
    )
    assert whole == expected
    for cut in range(len(MBOX_MESSAGE) + 1):
        for second_cut in (cut, min(cut + 1, len(MBOX_MESSAGE)), min(cut + 7, len(MBOX_MESSAGE))):
            parts = [MBOX_MESSAGE[:cut], MBOX_MESSAGE[cut:second_cut], MBOX_MESSAGE[second_cut:]]
            out, normaliser = normalise(parts, mbox_headers)
            assert out == expected, (cut, second_cut)
            assert normaliser.flags() == reference.flags()
            assert normaliser.date() == reference.date()


def test_lf_lines_get_crlf_and_crlf_lines_stay() -> None:
    out, _ = normalise([b"A: 1\n", b"B: 2\r\n", b"\n", b"body\r\n", b"bare\rcr\n", b"end"], False)
    assert out == b"A: 1\r\nB: 2\r\n\r\nbody\r\nbare\rcr\r\nend"


def test_a_crlf_cut_between_pieces_is_not_doubled() -> None:
    out, _ = normalise([b"A: 1\r", b"\n", b"\n", b"x" * 10, b"y\r", b"\nz\n"], False)
    assert out == b"A: 1\r\n\r\n" + b"x" * 10 + b"y\r\nz\r\n"


def test_mbox_flag_headers_are_read_and_taken_out_of_the_header_only() -> None:
    lines = [
        b"From: a@example.net\n",
        b"Status: RO\n",
        b"X-Keywords: $Label1,\n",
        b"  work\n",  # folded
        b"x-status: AFTD\n",
        b"Date: Mon, 5 Jan 1998 10:00:00 +0100\n",
        b"\n",
        b"Status: in the body stays\n",
    ]
    out, normaliser = normalise(lines, True)
    assert out == (
        b"From: a@example.net\r\nDate: Mon, 5 Jan 1998 10:00:00 +0100\r\n\r\nStatus: in the body stays\r\n"
    )
    assert normaliser.flags() == {
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Draft",
        "\\Deleted",
        "$Label1",
        "work",
    }
    assert normaliser.date() == datetime.fromisoformat("1998-01-05T10:00:00+01:00")
    kept, plain = normalise(lines, False)  # not an mbox: they are content
    assert kept == b"".join(line.replace(b"\n", b"\r\n") for line in lines)
    assert plain.flags() == frozenset()


@pytest.mark.parametrize(
    ("status", "x_status", "x_keywords", "flags"),
    [
        (b"O", b"", b"", set()),
        (b"RO", b"", b"", {"\\Seen"}),
        (b"", b"A", b"", {"\\Answered"}),
        (b"", b"", b"a, b  c,,d", {"a", "b", "c", "d"}),
        (b"", b"", b"bad(keyword \\Seen ok", {"ok"}),  # RFC 9051 flag-keyword is an atom
    ],
)
def test_mbox_flags(status: bytes, x_status: bytes, x_keywords: bytes, flags: set[str]) -> None:
    assert mbox_flags(status, x_status, x_keywords) == flags


def test_a_missing_or_bad_date_is_none() -> None:
    assert normalise([b"A: 1\n", b"\n"], False)[1].date() is None
    assert normalise([b"Date: yesterday\n", b"\n"], False)[1].date() is None


# ----------------------------------------------------------------------------------------- Maildir


def test_maildir_flags_and_keyword_letters(tmp_path: Path) -> None:
    (tmp_path / maildir.KEYWORDS_FILE).write_text("0 $Label1\n1 work\n25 last\nbad line\n30 too far\n")
    letters = maildir.read_keywords(tmp_path)
    assert letters == {"a": "$Label1", "b": "work", "z": "last"}
    name = "1700000000.M1P2.host,S=12:2,DFPRSTabcz"
    assert maildir.flags_from_name(name, letters) == {
        "\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted", "$Label1", "work", "last",
    }  # fmt: skip
    assert maildir.flags_from_name("1700000000.M1P2.host", letters) == frozenset()
    assert maildir.read_keywords(tmp_path / "none") == {}
    flags = {"\\Seen", "\\Answered", "$Forwarded", "work", "unnumbered"}
    assert maildir.info_suffix(flags, {"work": "b"}) == ":2,PRSb"  # ASCII order


@pytest.mark.parametrize(
    ("mailbox", "folder"),
    [
        ("INBOX", ""),
        ("Sent", ".Sent"),
        ("Projects/2026", ".Projects.2026"),
        ("Entwürfe/Ä", ".Entw&APw-rfe.&AMQ-"),
    ],
)
def test_maildir_plus_plus_folder_names(mailbox: str, folder: str) -> None:
    assert maildir.folder_of_mailbox(mailbox) == folder
    if folder:
        assert maildir.mailbox_of_folder(folder) == mailbox


def test_a_folder_name_that_is_not_modified_utf7_is_kept() -> None:
    assert maildir.mailbox_of_folder(".Caf\u00e9.A&B") == "Caf\u00e9/A&B"
