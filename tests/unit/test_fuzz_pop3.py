"""Fuzz: the POP3 engine (surat.proto.pop3) on random and mutated command streams split anywhere.

Driven as the shell drives it (every command answered), any input yields events, ``Close`` or
``NEED_DATA`` and nothing else; the unparsed input stays within the line limit; replies are CRLF lines;
and the events and output do not depend on how the input was split (unless STLS drops what followed it).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.pop3 import (
    NEED_DATA,
    Auth,
    AuthCancelled,
    AuthResponse,
    Capa,
    Close,
    List,
    Pass,
    POP3ServerEngine,
    POP3Settings,
    Retr,
    Stat,
    Stls,
    Top,
    Uidl,
)

pytestmark = pytest.mark.fuzz

SETTINGS = POP3Settings(stls_available=True, allow_insecure_auth=True, max_junk_commands=20)
LINE_LIMIT = max(SETTINGS.max_line, SETTINGS.max_auth_line)

_COMMANDS = st.sampled_from(
    [
        b"USER alice\r\n",
        b"PASS secret\r\n",
        b"STAT\r\n",
        b"LIST\r\n",
        b"LIST 1\r\n",
        b"RETR 1\r\n",
        b"TOP 1 0\r\n",
        b"DELE 1\r\n",
        b"NOOP\r\n",
        b"RSET\r\n",
        b"UIDL\r\n",
        b"UIDL 2\r\n",
        b"CAPA\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        b"AGFsaWNlAHNlY3JldA==\r\n",
        b"*\r\n",
        b"=\r\n",
        b"UTF8\r\n",
        b"STLS\r\n",
        b"QUIT\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"X" * 300,
        b"\xff\xfe",
        b"LIST -1\r\n",
        b"RETR 99999999999999999999\r\n",
        b"TOP 1 -5\r\n",
        b"AUTH\r\n",
        b"AUTH X\r\n",
    ]
)
_STREAMS = st.one_of(st.lists(_COMMANDS, max_size=30).map(b"".join), st.binary(max_size=1500))


def _answer(engine: POP3ServerEngine, event: object, tls_started: list[bool]) -> None:
    """A shell's answers: every login succeeds, the maildrop holds one message."""
    match event:
        case Retr() | Top():
            engine.message_start("12 octets")
            engine.message_data(b"Subject: x\r\n\r\n.dot\r\n")
            engine.message_end()
        case List(msg=None):
            engine.scan_listing([(1, 12)])
        case Uidl(msg=None):
            engine.unique_id_listing([(1, "1.1")])
        case Capa():
            engine.capabilities()
        case Stat():
            engine.stat(1, 12)
        case AuthCancelled(reason=reason):
            engine.err(reason)
        case Auth():
            engine.auth_challenge(b"")
        case Pass() | AuthResponse():
            engine.ok("logged in")
        case Stls():
            engine.ok("go")
            engine.tls_started()
            tls_started.append(True)
        case _:
            engine.ok()


def _run(chunks: list[bytes]) -> tuple[list[object], bytes, bool]:
    engine = POP3ServerEngine(SETTINGS)
    engine.greet()
    events: list[object] = []
    out = engine.data_to_send()
    tls_started: list[bool] = []
    for chunk in chunks:
        engine.receive_data(chunk)
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                assert engine.buffered_octets <= LINE_LIMIT + len(chunk) + 2
                break
            events.append(event)
            if isinstance(event, Close):
                return events, out + engine.data_to_send(), bool(tls_started)
            _answer(engine, event, tls_started)
            out += engine.data_to_send()
    return events, out + engine.data_to_send(), bool(tls_started)


@fuzz_settings()
@given(_STREAMS, st.lists(st.integers(0, 2000), max_size=8))
def test_any_stream_split_anywhere_gives_the_same_events_and_replies(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = _run([data])
    split = _run(chunks)
    assert whole[1].endswith(b"\r\n")
    if not whole[2] and not split[2]:
        assert split[:2] == whole[:2]


@fuzz_settings()
@given(
    st.lists(_COMMANDS, min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=4),
)
def test_mutated_sessions_yield_events_or_close(
    commands: list[bytes], mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(b"".join(commands))
    for position, value in mutations:
        if data:
            data[position % len(data)] = value
    _run([bytes(data)])
