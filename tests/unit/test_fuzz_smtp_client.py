"""Fuzz: the SMTP client engine (surat.proto.smtp.client) against random, mutated and chunk-split server
replies.

Whatever the server sends, the session ends (Closed) with the documented events only: Ready, StartTLS,
TransactionDone (one result per recipient), SessionFailed (a reply saying why); garbage in place of a
reply is the engine's own BAD_REPLY (RFC 5321 §4.2: a line is a code, then SP or "-"), never an
exception. The same replies split anywhere give the same events and the same commands (but for a session with
STARTTLS, see the test).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.smtp.client import (
    ClientSettings,
    Closed,
    Credentials,
    Ready,
    SessionFailed,
    StartTLS,
    TransactionDone,
)
from surat.proto.smtp.replies import Reply
from unit.test_smtp_client import (
    EHLO_CHUNKING,
    EHLO_FULL,
    GO_AHEAD,
    GREETING,
    OK_MAIL,
    OK_RCPT,
    QUEUED,
    SETTINGS,
    Run,
    envelope,
    run,
)

pytestmark = pytest.mark.fuzz

# A session with STARTTLS and AUTH offered (the engine takes both), then one transaction
STARTTLS_EHLO = b"250-mx.example.net\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING\r\n"
TLS_READY = b"220 2.0.0 Ready\r\n"
AUTH_OK = b"235 2.7.0 OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"
TRANSCRIPTS = [
    [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, OK_RCPT, GO_AHEAD, QUEUED, BYE],
    [GREETING, EHLO_CHUNKING, OK_MAIL, OK_RCPT, OK_RCPT, QUEUED, BYE],
    [
        GREETING,
        STARTTLS_EHLO,
        TLS_READY,
        STARTTLS_EHLO,
        AUTH_OK,
        OK_MAIL,
        OK_RCPT,
        OK_RCPT,
        GO_AHEAD,
        QUEUED,
        BYE,
    ],
]
TLS_SETTINGS = ClientSettings(
    hostname="out.example.org", credentials=Credentials("user", "secret"), auth_without_tls=True
)

_PIECES = st.sampled_from(
    [b"250", b"250-", b"250 ", b"220 ", b"354 ", b"421 4.3.2 bye", b"550 5.1.1 no", b"452 4.5.3 x", b"-", b" ",
     b"\r\n", b"\n", b"\r", b"2", b"9", b"0", b"5.", b"STARTTLS", b"SIZE 1", b"SIZE x", b"AUTH", b"\x00",
     b"\xff", b"CHUNKING", b"x" * 600]
)  # fmt: skip


def _mutated(transcript: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    def mutate(edits: list[tuple[int, int, int, bytes]]) -> list[bytes]:
        segments = list(transcript)
        for index, position, length, piece in edits:
            i = index % len(segments)
            at = position % (len(segments[i]) + 1)
            segments[i] = segments[i][:at] + piece + segments[i][at + length :]
        return segments

    edit = st.tuples(st.integers(0, 20), st.integers(0, 200), st.integers(0, 6), _PIECES | st.just(b""))
    return st.lists(edit, min_size=1, max_size=6).map(mutate)


_SERVER_TALK = (
    st.sampled_from(range(len(TRANSCRIPTS))).flatmap(lambda i: _mutated(TRANSCRIPTS[i]))
    | st.lists(st.lists(_PIECES, max_size=12).map(b"".join), max_size=10)
    | st.lists(st.binary(max_size=80), max_size=6)
).map(lambda segments: [segment for segment in segments if segment])  # the driver reads no empty ones


def _check(result: Run, recipients: int) -> None:
    assert isinstance(result.events[-1], Closed)
    for event in result.events:
        assert isinstance(event, Ready | StartTLS | TransactionDone | SessionFailed | Closed)
        if isinstance(event, SessionFailed):
            # a failure's reason is a failure (a positive reply there would read as success in a DSN)
            assert isinstance(event.reply, Reply) and event.reply.code >= 400
        if isinstance(event, TransactionDone):
            assert len(event.result.recipients) == recipients
            for recipient in event.result.recipients:
                assert 200 <= recipient.reply.code < 600
    # Commands only: printable lines ending in CRLF, nothing the server's text put there
    for line in result.output.split(b"\r\n")[:-1]:
        assert b"\n" not in line and b"\r" not in line


@fuzz_settings()
@given(_SERVER_TALK, st.lists(st.integers(1, 40), max_size=6), st.booleans())
def test_any_server_replies_end_the_session_with_documented_events(
    segments: list[bytes], cuts: list[int], tls: bool
) -> None:
    settings = TLS_SETTINGS if tls else SETTINGS
    envelopes = [envelope("bob@example.net", "carol@example.net")]
    whole = run(segments, envelopes, settings=settings)
    _check(whole, 2)

    def split(index: int, segment: bytes) -> list[bytes]:
        # every segment cut at the same offsets (those within it)
        pieces, start = [], 0
        for cut in sorted(cuts):
            if start < cut < len(segment):
                pieces.append(segment[start:cut])
                start = cut
        return [*pieces, segment[start:]]

    if any(isinstance(event, StartTLS) for event in whole.events):
        # Octets after the 220 to STARTTLS are dropped if they came in the same read (RFC 3207 §5
        # response injection), and would break the handshake if they came later: there, where a read
        # ends decides, so only sessions without STARTTLS must not depend on the split.
        return
    other = run(segments, envelopes, settings=settings, split=split)
    assert other.events == whole.events
    assert other.output == whole.output
