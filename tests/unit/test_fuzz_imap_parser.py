"""Fuzz: the IMAP command parser and reader (RFC 9051 §9 grammar, §4.3 literals) on hostile input.

Random, mutated-from-valid and chunk-split command lines yield command events or the documented error
(``CommandSyntaxError`` from ``parse_command``; ``ParseError``/``LiteralTooBig`` events from the reader),
never another exception; and how TCP cuts the stream never changes the events.
"""

from __future__ import annotations

import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.imap import commands as c
from surat.proto.imap.parser import CommandSyntaxError, parse_command
from surat.proto.imap.reader import (
    NEED_DATA,
    CommandReader,
    Event,
    LiteralChunk,
    NeedLiteral,
    ParseError,
    ReaderLimits,
)

pytestmark = pytest.mark.fuzz

# Valid commands (most from RFC examples: RFC 9051 §6, RFC 4731, RFC 5256, RFC 7162) to mutate.
VALID: tuple[bytes, ...] = (
    b"a SEARCH ALL",
    b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
    b"A284 SEARCH CHARSET UTF-8 TEXT {4}\r\n\xe2\x82\xac!",
    b"a UID SEARCH RETURN (SAVE MIN MAX ALL COUNT) OR (1:3 UNSEEN) NOT $ UID 2,4:*",
    b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338',
    b'a SEARCH HEADER Message-ID <x@y> LARGER 10 SMALLER 99999 SENTON "1-Jan-2024" KEYWORD $Junk',
    b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994",
    b"a UID SORT (REVERSE DATE DISPLAYFROM) US-ASCII BODY x",
    b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
    b"a THREAD REFERENCES US-ASCII (TO a CC b BCC c)",
    b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100>) (CHANGEDSINCE 12345)",
    b"a UID FETCH 1:* (UID MODSEQ) (CHANGEDSINCE 1 VANISHED)",
    b"a STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $Label)",
    b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
    b'a LOGIN {4+}\r\nfred "se\\"cret"',
    b'a LIST (SUBSCRIBED) "" ("*" %) RETURN (CHILDREN STATUS (MESSAGES))',
    b"a STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)",
    b"a ENABLE CONDSTORE QRESYNC",
    b"a UID EXPUNGE 3000:3002",
    b'a SETQUOTA "" (STORAGE 512)',
    b'a ID ("name" "x" "version" NIL)',
)

_TOKENS = st.sampled_from(
    [
        *(bytes([b]) for b in b' ()[]{}<>"\\*%$:,.+-~0123456789aAzZ\r\n\x00\x7f\xff'),
        b"SEARCH",
        b"UID",
        b"RETURN",
        b"CHARSET",
        b"NOT",
        b"OR",
        b"MODSEQ",
        b"HEADER",
        b"BODY",
        b"TEXT",
        b"SORT",
        b"THREAD",
        b"FETCH",
        b"{5}\r\n",
        b"{99999999999999999999}",
        b"~{2}\r\n",
        b"1-Feb-1994",
        b"4294967296",
        b"9223372036854775808",
        b"rot13",
        b"UTF-8",
    ]
)


def _parse(data: bytes) -> None:
    try:
        command = parse_command(data)
    except CommandSyntaxError as exc:
        assert exc.code in (None, "BADCHARSET")
        return
    assert isinstance(command, c.Command)


_NAMES = st.sampled_from(
    [b"SEARCH", b"UID SEARCH", b"SORT", b"UID SORT", b"THREAD", b"FETCH", b"STORE", b"LIST", b"SELECT", b"X"]
)


@fuzz_settings()
@given(_NAMES, st.lists(_TOKENS, max_size=12))
def test_random_command_lines_parse_or_raise_syntax_error(name: bytes, parts: list[bytes]) -> None:
    _parse(b"a " + name + b"".join(parts))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("insert", "delete", "replace", "truncate")))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(_TOKENS)
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at:]
    return bytes(data)


@fuzz_settings()
@given(_mutated())
def test_mutated_commands_parse_or_raise_syntax_error(data: bytes) -> None:
    _parse(data)


def test_valid_corpus_parses() -> None:
    # The mutations start from commands that parse: otherwise the test above would fuzz error paths only.
    for data in VALID:
        assert isinstance(parse_command(data), c.Command), data


# What next_event() is documented to return (besides NEED_DATA): commands, APPEND and literal events,
# ParseError and LiteralTooBig; an exception or any other object is a bug.
_EVENT_CLASSES = tuple(t for t in typing.get_args(Event) if isinstance(t, type))
_SMALL_LIMITS = ReaderLimits(max_line=512, max_literal=64, max_literals=4, max_inline_total=128)


def _events(chunks: list[bytes]) -> list[Event]:
    reader = CommandReader(_SMALL_LIMITS)
    out: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, NeedLiteral) and event.synchronizing:
                reader.accept_literal()
            if isinstance(event, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
                out[-1] = LiteralChunk(out[-1].data + event.data)
                continue
            assert isinstance(event, _EVENT_CLASSES), event
            if isinstance(event, ParseError):
                assert event.code in (None, "BADCHARSET")
            out.append(event)
            if isinstance(event, c.Idle | c.Authenticate):
                reader.expect_line()
    return out


@fuzz_settings()
@given(
    st.lists(st.one_of(_mutated(), st.sampled_from(VALID)), min_size=1, max_size=4),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_chunk_split_streams_give_the_same_events(commands: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(cmd + b"\r\n" for cmd in commands)
    whole = _events([stream])
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert _events(chunks) == whole
