"""The command reader: framing, literals (RFC 9051 §4.3, RFC 7888, RFC 3516), APPEND streaming, limits.

Every transcript is also fed with the input split at every offset and byte by byte; the events must not
depend on how TCP cut the stream (LiteralChunk boundaries aside, which are merged before comparing).
"""

from __future__ import annotations

import datetime
import time

import pytest

from surat.proto.imap import commands as c
from surat.proto.imap.reader import (
    NEED_DATA,
    CommandReader,
    ContinuationLine,
    Event,
    LiteralChunk,
    LiteralTooBig,
    NeedLiteral,
    ParseError,
    ReaderLimits,
)
from surat.proto.imap.seqset import SequenceSet


def drain(reader: CommandReader, out: list[Event], *, reject: bool = False) -> None:
    while (event := reader.next_event()) is not NEED_DATA:
        if isinstance(event, NeedLiteral) and event.synchronizing:
            if reject:
                reader.reject_literal()
            else:
                reader.accept_literal()
        if isinstance(event, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
            out[-1] = LiteralChunk(out[-1].data + event.data)
            continue
        out.append(event)
        if isinstance(event, c.Idle | c.Authenticate):
            reader.expect_line()


def run(chunks: list[bytes], limits: ReaderLimits | None = None, *, reject: bool = False) -> list[Event]:
    reader = CommandReader(limits)
    out: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        drain(reader, out, reject=reject)
    return out


def run_all_splits(data: bytes, limits: ReaderLimits | None = None, *, reject: bool = False) -> list[Event]:
    whole = run([data], limits, reject=reject)
    for i in range(len(data) + 1):
        assert run([data[:i], data[i:]], limits, reject=reject) == whole, f"split at {i}"
    assert run([data[i : i + 1] for i in range(len(data))], limits, reject=reject) == whole, "byte by byte"
    return whole


def test_pipelined_commands() -> None:
    events = run_all_splits(b"a1 NOOP\r\na2 CAPABILITY\r\n\r\na3 LOGOUT\r\n")
    assert events == [c.Noop("a1"), c.Capability("a2"), c.Logout("a3")]  # the empty line is skipped


def test_bare_lf_is_tolerated() -> None:
    assert run_all_splits(b"a NOOP\nb NOOP\r\n") == [c.Noop("a"), c.Noop("b")]


def test_synchronizing_literal() -> None:
    events = run_all_splits(b"a LOGIN {4}\r\nfred {6}\r\nsecret\r\n")
    assert events == [
        NeedLiteral(4, True, "a"),
        NeedLiteral(6, True, "a"),
        c.Login("a", "fred", "secret"),
    ]


def test_non_synchronizing_literal() -> None:
    events = run_all_splits(b'a LOGIN {4+}\r\nfred "x"\r\nb SELECT {5+}\r\ninbox\r\n')
    assert events == [
        NeedLiteral(4, False, "a"),
        c.Login("a", "fred", "x"),
        NeedLiteral(5, False, "b"),
        c.Select("b", "INBOX"),
    ]


def test_literal_holding_crlf_and_braces() -> None:
    # A literal's content is opaque: CRLF and "{5}" inside it do not end the command or start a literal.
    events = run_all_splits(b"a SEARCH TEXT {8+}\r\nx\r\n{5}\r\n\r\n")
    assert events == [
        NeedLiteral(8, False, "a"),
        c.SearchCommand("a", False, c.SearchText("x\r\n{5}\r\n", False)),
    ]


def test_accept_waits_for_the_shell() -> None:
    reader = CommandReader()
    reader.receive_data(b"a LOGIN {4}\r\n")
    assert reader.next_event() == NeedLiteral(4, True, "a")
    with pytest.raises(RuntimeError):
        reader.next_event()  # the shell must answer first
    reader.accept_literal()
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"fred pw\r\n")
    assert reader.next_event() == c.Login("a", "fred", "pw")
    with pytest.raises(RuntimeError):
        reader.accept_literal()


def test_reject_literal_ends_the_command() -> None:
    # After `a NO`, the client does not send the literal; its next bytes are a new command.
    events = run_all_splits(b"a LOGIN {4}\r\nb NOOP\r\n", reject=True)
    assert events == [NeedLiteral(4, True, "a"), c.Noop("b")]


def test_sync_literal_over_limit_is_toobig_and_the_session_goes_on() -> None:
    limits = ReaderLimits(max_literal=10)
    events = run_all_splits(b"a LOGIN {11}\r\nb NOOP\r\n", limits)
    assert events == [LiteralTooBig("a", 11, 10, True, False), c.Noop("b")]


def test_non_sync_literal_over_limit_closes() -> None:
    limits = ReaderLimits(max_literal=10)
    reader = CommandReader(limits)
    reader.receive_data(b"a LOGIN {11+}\r\nhello world x\r\nb NOOP\r\n")
    assert reader.next_event() == LiteralTooBig("a", 11, 10, False, False)
    assert reader.closed
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"c NOOP\r\n")
    assert reader.next_event() is NEED_DATA


def test_literal_minus() -> None:
    limits = ReaderLimits(literal_plus=False)
    assert run([b"a LOGIN {4096+}\r\n" + b"x" * 4096 + b" p\r\n"], limits)[-1] == c.Login(
        "a", "x" * 4096, "p"
    )
    events = run([b"a LOGIN {4097+}\r\n"], limits)
    assert len(events) == 1
    assert isinstance(events[0], ParseError)
    assert events[0].close
    # synchronizing literals are not limited by LITERAL-
    assert run([b"a LOGIN {4097}\r\n" + b"x" * 4097 + b" p\r\n"], limits)[-1] == c.Login("a", "x" * 4097, "p")


def test_too_many_literals() -> None:
    limits = ReaderLimits(max_literals=2)
    events = run_all_splits(b"a LOGIN {1}\r\nx {1}\r\ny\r\nb RENAME {1}\r\nx {1}\r\ny\r\n", limits)
    assert events[2] == c.Login("a", "x", "y")
    assert events[5] == c.Rename("b", "x", "y")
    events = run([b"a STATUS {1}\r\nx (MESSAGES) {1}\r\n"], ReaderLimits(max_literals=1))
    assert events[-1] == ParseError("a", "too many literals in one command")
    events = run([b"a STATUS {1+}\r\nx {1+}\r\ny\r\n"], ReaderLimits(max_literals=1))
    assert isinstance(events[-1], ParseError)
    assert events[-1].close


def test_inline_literal_total_is_bounded() -> None:
    limits = ReaderLimits(max_literal=100, max_inline_total=150)
    events = run([b"a LOGIN {100}\r\n" + b"u" * 100 + b" {60}\r\n"], limits)
    assert events[-1] == LiteralTooBig("a", 60, 50, True, False)


def test_line_too_long_closes() -> None:
    limits = ReaderLimits(max_line=100)
    events = run([b"a NOOP " + b"x" * 200], limits)
    assert events == [ParseError("a", "command line too long", close=True)]
    events = run([b"b LOGIN " + b"x" * 100 + b"\r\n"], limits)
    assert events == [ParseError("b", "command line too long", close=True)]
    # exactly at the limit is fine
    line = b"c LOGIN u " + b"p" * 90
    assert len(line) == 100
    assert run([line + b"\r\n"], limits) == [c.Login("c", "u", "p" * 90)]
    # the limit covers the whole command text, across literals, but not the literal bytes
    events = run(
        [b"d LOGIN {200}\r\n" + b"u" * 200 + b" " + b"p" * 80 + b"\r\n"],
        ReaderLimits(max_line=100, max_literal=300),
    )
    assert events[-1] == c.Login("d", "u" * 200, "p" * 80)
    events = run(
        [b"d LOGIN {200}\r\n" + b"u" * 200 + b" " + b"p" * 95 + b"\r\n"],
        ReaderLimits(max_line=100, max_literal=300),
    )
    assert isinstance(events[-1], ParseError)
    assert events[-1].close


def test_trickled_long_line_is_linear() -> None:
    # A client sending one byte per segment must not make each read rescan the whole pending line.
    line = b"a LOGIN u " + b"p" * 60_000 + b"\r\n"
    reader = CommandReader()
    start = time.perf_counter()
    for i in range(len(line) - 1):
        reader.receive_data(line[i : i + 1])
        assert reader.next_event() is NEED_DATA
    reader.receive_data(line[-1:])
    assert reader.next_event() == c.Login("a", "u", "p" * 60_000)
    assert time.perf_counter() - start < 2.0


def test_parse_errors_do_not_stop_the_session() -> None:
    events = run_all_splits(b"garbage\r\na FOO\r\n* NOOP\r\nb NOOP\r\n")
    assert [type(e) for e in events] == [ParseError, ParseError, ParseError, c.Noop]
    assert [e.tag for e in events[:3] if isinstance(e, ParseError)] == ["garbage", "a", "*"]
    assert not any(isinstance(e, ParseError) and e.close for e in events)


def test_bad_charset_code() -> None:
    events = run([b"a SEARCH CHARSET KOI9-NOPE ALL\r\n"])
    assert isinstance(events[0], ParseError)
    assert events[0].code == "BADCHARSET"


# --- APPEND -----------------------------------------------------------------------------------------

TZ = datetime.timezone(datetime.timedelta(hours=-8))
MSG = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: afternoon meeting\r\n\r\nHello Joe\r\n"


def test_append_rfc_example() -> None:
    data = (
        b'A003 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(MSG)
        + MSG
        + b"\r\n"
    )
    events = run_all_splits(data)
    assert events == [
        c.AppendMessage(
            "A003",
            "saved-messages",
            ("\\Seen",),
            datetime.datetime(1994, 2, 7, 21, 52, 25, tzinfo=TZ),
            len(MSG),
            binary=False,
            utf8=False,
            index=0,
        ),
        NeedLiteral(len(MSG), True, "A003", append=True),
        LiteralChunk(MSG),
        c.Append("A003", "saved-messages", 1),
    ]


def test_multiappend_with_mailbox_literal_and_literal_plus() -> None:
    # RFC 3502 §6.3.11 example shape; the mailbox name itself is a literal, messages are {n+} and ~{n}.
    data = (
        b"A003 APPEND {5}\r\ninbox {3+}\r\nabc (\\Flagged \\Draft) ~{4}\r\na\x00\r\n"
        b' "01-Jan-2024 00:00:00 +0000" {0}\r\n\r\nA004 NOOP\r\n'
    )
    events = run_all_splits(data)
    utc = datetime.UTC
    assert events == [
        NeedLiteral(5, True, "A003"),
        c.AppendMessage("A003", "INBOX", (), None, 3, False, False, 0),
        NeedLiteral(3, False, "A003", append=True),
        LiteralChunk(b"abc"),
        c.AppendMessage("A003", "INBOX", ("\\Flagged", "\\Draft"), None, 4, True, False, 1),
        NeedLiteral(4, True, "A003", append=True, binary=True),
        LiteralChunk(b"a\x00\r\n"),
        c.AppendMessage("A003", "INBOX", (), datetime.datetime(2024, 1, 1, tzinfo=utc), 0, False, False, 2),
        NeedLiteral(0, True, "A003", append=True),
        c.Append("A003", "INBOX", 3),
        c.Noop("A004"),
    ]


def test_append_utf8_form() -> None:
    # RFC 6855 §4: append-data =/ "UTF8" SP "(" literal8 ")"
    data = b"a APPEND INBOX UTF8 (~{2+}\r\nhi) UTF8 (~{1}\r\nx)\r\n"
    events = run_all_splits(data)
    assert events == [
        c.AppendMessage("a", "INBOX", (), None, 2, True, True, 0),
        NeedLiteral(2, False, "a", append=True, binary=True),
        LiteralChunk(b"hi"),
        c.AppendMessage("a", "INBOX", (), None, 1, True, True, 1),
        NeedLiteral(1, True, "a", append=True, binary=True),
        LiteralChunk(b"x"),
        c.Append("a", "INBOX", 2),
    ]
    bad = run([b"a APPEND INBOX UTF8 ({2}\r\n"])
    assert bad == [ParseError("a", "UTF8 APPEND data must be a literal8")]


def test_append_over_appendlimit() -> None:
    limits = ReaderLimits(max_append_literal=1000)
    # No AppendMessage: nothing is spooled for a message that is refused before it is sent.
    events = run_all_splits(b"a APPEND INBOX {1001}\r\nb NOOP\r\n", limits)
    assert events == [
        LiteralTooBig("a", 1001, 1000, True, True),
        c.Noop("b"),
    ]
    # the APPEND limit, not the small inline-literal limit, applies to messages
    events = run(
        [b"a APPEND INBOX {1000+}\r\n" + b"x" * 1000 + b"\r\n"],
        ReaderLimits(max_literal=10, max_append_literal=1000),
    )
    assert events[-1] == c.Append("a", "INBOX", 1)
    reader = CommandReader(limits)
    reader.receive_data(b"a APPEND INBOX {1001+}\r\n")
    assert reader.next_event() == LiteralTooBig("a", 1001, 1000, False, True)
    assert reader.closed


def test_append_rejected_by_the_shell() -> None:
    # e.g. the mailbox does not exist: the shell answers NO [TRYCREATE] instead of "+".
    reader = CommandReader()
    reader.receive_data(b"a APPEND nosuch {10}\r\nb NOOP\r\n")
    message = reader.next_event()
    assert isinstance(message, c.AppendMessage)
    assert message.mailbox == "nosuch"
    assert reader.next_event() == NeedLiteral(10, True, "a", append=True)
    reader.reject_literal()
    assert reader.next_event() == c.Noop("b")


def test_append_errors() -> None:
    assert run([b"a APPEND INBOX\r\n"]) == [ParseError("a", "APPEND needs a message literal")]
    # garbage after the message: BAD (the shell discards what it spooled), the session goes on
    events = run([b"a APPEND INBOX {1+}\r\nx junk\r\nb NOOP\r\n"])
    assert events[-2:] == [ParseError("a", "unexpected data after APPEND message"), c.Noop("b")]
    # bad flags before a synchronizing literal: BAD, the client never sends the literal
    events = run([b"a APPEND INBOX (\\Seen {3}\r\nb NOOP\r\n"])
    assert isinstance(events[0], ParseError)
    assert events[1] == c.Noop("b")
    # bad date before a non-synchronizing literal: its bytes are coming and cannot be framed: close
    events = run([b'a APPEND INBOX "bad date" {3+}\r\nabc\r\n'])
    assert isinstance(events[0], ParseError)
    assert events[0].close
    events = run([b"a APPEND INBOX {1+}\r\nx {1+}\r\ny\r\n"], ReaderLimits(max_append_messages=1))
    assert events[-1] == ParseError("a", "too many messages in one APPEND", close=True)


def test_large_append_is_streamed_with_bounded_memory() -> None:
    size = 50 * 1024 * 1024
    reader = CommandReader()
    reader.receive_data(b"a APPEND INBOX {%d+}\r\n" % size)
    assert isinstance(reader.next_event(), c.AppendMessage)
    assert isinstance(reader.next_event(), NeedLiteral)
    block = b"x" * 65536
    received = 0
    for _ in range(size // len(block)):
        reader.receive_data(block)
        while (event := reader.next_event()) is not NEED_DATA:
            assert isinstance(event, LiteralChunk)
            assert len(event.data) <= 65536
            received += len(event.data)
        assert reader.buffered == 0
    reader.receive_data(b"\r\n")
    assert reader.next_event() == c.Append("a", "INBOX", 1)
    assert received == size


# --- continuation lines -----------------------------------------------------------------------------


def test_idle_done() -> None:
    events = run_all_splits(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert events == [c.Idle("a"), ContinuationLine(b"DONE"), c.Noop("b")]


def test_authenticate_exchange() -> None:
    events = run_all_splits(b"a AUTHENTICATE PLAIN\r\nAGZyZWQAc2VjcmV0\r\nb NOOP\r\n")
    assert events == [c.Authenticate("a", "PLAIN"), ContinuationLine(b"AGZyZWQAc2VjcmV0"), c.Noop("b")]


def test_expect_line_only_between_commands() -> None:
    reader = CommandReader()
    reader.receive_data(b"a LOGIN {1}\r\n")
    reader.next_event()
    with pytest.raises(RuntimeError):
        reader.expect_line()


def test_continuation_line_too_long() -> None:
    reader = CommandReader(ReaderLimits(max_line=50))
    reader.expect_line()
    reader.receive_data(b"x" * 60)
    event = reader.next_event()
    assert isinstance(event, ParseError)
    assert event.close


def test_uid_fetch_with_literal_free_modifiers_split() -> None:
    events = run_all_splits(b"s UID FETCH 1:* (FLAGS) (CHANGEDSINCE 7 VANISHED)\r\n")
    assert events == [
        c.Fetch("s", True, SequenceSet(((1, 0),)), (c.FetchSimple(c.FetchAttr.FLAGS),), 7, True),
    ]
