"""SMTP client engine: scripted server replies in, client bytes and events out, no sockets.

Each script is a list of segments (normally one server reply each). A segment is fed only when
the engine asks for data and the previous one has been consumed, so `writes[k]` -- what the client
sent after k segments -- shows how commands are grouped (pipelining). `check` runs every script
with each segment whole, split in two at every offset, and one octet at a time, and requires the
same writes and events each time.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from surat.proto.smtp import replies as R
from surat.proto.smtp.address import Address
from surat.proto.smtp.client import (
    NEED_DATA,
    ClientSettings,
    Closed,
    Credentials,
    EngineError,
    Envelope,
    Event,
    Extensions,
    Phase,
    Ready,
    Recipient,
    SendMessage,
    SessionFailed,
    SMTPClientEngine,
    StartTLS,
    Timeouts,
    TransactionDone,
    TransactionResult,
)
from surat.proto.smtp.replies import (
    ADDRESS_NEEDS_SMTPUTF8,
    AUTH_NEEDS_TLS,
    BAD_REPLY,
    CONNECTION_LOST,
    NEEDS_8BITMIME,
    NEEDS_SMTPUTF8,
    TLS_FAILED,
    TLS_NOT_OFFERED,
    Reply,
)

SETTINGS = ClientSettings(hostname="out.example.org")
GREETING = b"220 mx.example.net ESMTP\r\n"
EHLO_FULL = (
    b"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n"
)
EHLO_PLAIN = b"250-mx.example.net\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"  # no PIPELINING
EHLO_CHUNKING = b"250-mx.example.net\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
OK_MAIL = b"250 2.1.0 Sender OK\r\n"
OK_RCPT = b"250 2.1.5 Recipient OK\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = b"250 2.0.0 Queued as 1234\r\n"
BYE = b"221 2.0.0 Bye\r\n"

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
STUFFED = b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"


def addr(text: str) -> Address:
    local, _, domain = text.rpartition("@")
    return Address(local, domain)


def envelope(*rcpts: str, message: bytes = MESSAGE, **kwargs: object) -> Envelope:
    recipients = tuple(Recipient(addr(r)) for r in (rcpts or ("bob@example.net",)))
    return Envelope(addr("alice@example.org"), recipients, len(message), **kwargs)  # type: ignore[arg-type]


@dataclass
class Run:
    writes: list[bytes]
    events: list[Event]
    engine: SMTPClientEngine
    phases: list[Phase] = field(default_factory=list)  # engine.phase at every NEED_DATA

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)

    @property
    def results(self) -> list[TransactionResult]:
        return [e.result for e in self.events if isinstance(e, TransactionDone)]


Splitter = Callable[[int, bytes], list[bytes]]


def whole(index: int, segment: bytes) -> list[bytes]:
    return [segment]


def run(
    segments: Sequence[bytes],
    envelopes: Sequence[Envelope] = (),
    *,
    settings: ClientSettings = SETTINGS,
    chunks: Sequence[bytes] = (MESSAGE,),
    split: Splitter = whole,
    quit_after: bool = True,
) -> Run:
    engine = SMTPClientEngine(settings)
    writes = [b""] * (len(segments) + 1)
    events: list[Event] = []
    phases: list[Phase] = []
    pending = deque(envelopes)
    pieces: deque[bytes] = deque()
    next_segment = 0
    feed: deque[bytes] = deque()
    for _ in range(100_000):
        event = engine.next_event()
        # Output so far belongs after the segments fed completely (none is being fed partially
        # when a reply completes, so this does not depend on the splitting).
        writes[next_segment - (1 if pieces else 0)] += engine.data_to_send()
        if event is NEED_DATA:
            phases.append(engine.phase)
            if not pieces:
                if next_segment == len(segments):
                    engine.connection_lost()
                    continue
                pieces = deque(p for p in split(next_segment, segments[next_segment]) if p)
                next_segment += 1
            engine.receive_data(pieces.popleft())
            continue
        if not isinstance(event, SendMessage):
            events.append(event)
        match event:
            case Ready() | TransactionDone():
                if pending:
                    engine.send_mail(pending.popleft())
                    feed = deque(chunks)
                elif quit_after:
                    engine.quit()
                else:
                    return Run(writes, events, engine, phases)
            case StartTLS():
                engine.tls_started()
            case SendMessage():
                if feed:
                    engine.send_message_data(feed.popleft())
                else:
                    engine.end_message()
            case Closed():
                return Run(writes, events, engine, phases)
    raise AssertionError("the engine did not finish")


def check(segments: Sequence[bytes], envelopes: Sequence[Envelope] = (), **kwargs: object) -> Run:
    """Run with every way of splitting each segment; all runs must agree."""
    reference = run(segments, envelopes, **kwargs)  # type: ignore[arg-type]
    splitters: list[Splitter] = [lambda i, s: [s[j : j + 1] for j in range(len(s))]]
    for target, segment in enumerate(segments):
        for offset in range(1, len(segment)):
            splitters.append(
                lambda i, s, t=target, o=offset: [s[:o], s[o:]] if i == t else [s]  # type: ignore[misc]
            )
    for splitter in splitters:
        other = run(segments, envelopes, split=splitter, **kwargs)  # type: ignore[arg-type]
        assert other.writes == reference.writes
        assert other.events == reference.events
    return reference


def codes(result: TransactionResult) -> list[tuple[int, str | None]]:
    return [(r.reply.code, r.reply.enhanced) for r in result.recipients]


# ------------------------------------------------------------------------------ transactions


def test_pipelined_data_transaction() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope("bob@example.net", "carol@example.net")],
    )
    assert r.writes == [
        b"",
        b"EHLO out.example.org\r\n",
        # RFC 2920: MAIL, every RCPT and DATA in one group
        b"MAIL FROM:<alice@example.org> SIZE=35\r\n"
        b"RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n",
        b"",
        b"",
        b"",
        STUFFED,
        b"QUIT\r\n",
        b"",
    ]
    ready, _done, closed = r.events
    assert isinstance(ready, Ready) and ready.extensions.pipelining and not ready.tls
    assert isinstance(closed, Closed)
    (result,) = r.results
    assert all(x.delivered and x.remote for x in result.recipients)
    assert result.final == Reply(250, "2.0.0", "Queued as 1234")
    assert [x.recipient.address for x in result.recipients] == [
        addr("bob@example.net"),
        addr("carol@example.net"),
    ]
    assert result.dsn_passed and not result.tls


def test_without_pipelining_one_command_per_reply() -> None:
    r = check(
        [GREETING, EHLO_PLAIN, OK_MAIL, OK_RCPT, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope("bob@example.net", "carol@example.net")],
    )
    assert r.writes == [
        b"",
        b"EHLO out.example.org\r\n",
        b"MAIL FROM:<alice@example.org>\r\n",
        b"RCPT TO:<bob@example.net>\r\n",
        b"RCPT TO:<carol@example.net>\r\n",
        b"DATA\r\n",
        STUFFED,
        b"QUIT\r\n",
        b"",
    ]
    assert all(x.delivered for x in r.results[0].recipients)


def test_timeout_phases_follow_the_conversation() -> None:
    r = run([GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [envelope()])
    # one NEED_DATA per segment here; the phase is the reply being waited for
    assert (
        r.phases
        == [
            Phase.GREETING,
            Phase.EHLO,
            Phase.MAIL,
            Phase.RCPT,
            Phase.DATA_INIT,
            Phase.DATA_END,
            Phase.QUIT,
            Phase.CLOSED,
        ][: len(r.phases)]
    )
    t = Timeouts()
    # RFC 5321 §4.5.3.2
    assert [t.for_phase(p) for p in (Phase.GREETING, Phase.MAIL, Phase.RCPT)] == [300, 300, 300]
    assert [t.for_phase(p) for p in (Phase.DATA_INIT, Phase.DATA_BLOCK, Phase.DATA_END)] == [120, 180, 600]
    assert t.for_phase(Phase.READY) is None


def phase_of(engine: SMTPClientEngine) -> Phase:
    return engine.phase  # a call: mypy must not narrow a property across engine calls


def test_engine_phase_and_timeout_while_sending() -> None:
    engine = SMTPClientEngine(replace(SETTINGS, timeouts=Timeouts(data_block=7.0)))
    assert phase_of(engine) is Phase.GREETING and engine.timeout == 300
    engine.receive_data(GREETING + EHLO_FULL + OK_MAIL + OK_RCPT + GO_AHEAD)
    assert isinstance(engine.next_event(), Ready)
    engine.send_mail(envelope())
    assert isinstance(engine.next_event(), SendMessage)
    assert phase_of(engine) is Phase.DATA_BLOCK and engine.timeout == 7.0
    engine.send_message_data(b"x\r\n")
    engine.end_message()
    assert engine.next_event() is NEED_DATA
    assert phase_of(engine) is Phase.DATA_END and engine.timeout == 600


def test_partial_recipient_failure() -> None:
    r = check(
        [
            GREETING,
            EHLO_FULL,
            OK_MAIL,
            OK_RCPT,
            b"550 5.1.1 No such user\r\n",
            b"452-4.2.2 Mailbox full\r\n452 4.2.2 try later\r\n",
            GO_AHEAD,
            QUEUED,
            BYE,
        ],
        [envelope("a@example.net", "b@example.net", "c@example.net")],
    )
    (result,) = r.results
    assert codes(result) == [(250, "2.0.0"), (550, "5.1.1"), (452, "4.2.2")]
    a, b, c = result.recipients
    assert a.delivered and b.permanent and not c.permanent and not c.delivered
    assert c.reply.lines == ("Mailbox full", "try later")


def test_all_recipients_refused_then_next_transaction_resets() -> None:
    refused = b"550 5.1.1 No such user\r\n"
    r = check(
        [
            GREETING,
            EHLO_FULL,
            OK_MAIL,
            refused,
            b"554 5.5.1 No valid recipients\r\n",
            b"250 2.0.0 Flushed\r\n",
            OK_MAIL,
            OK_RCPT,
            GO_AHEAD,
            QUEUED,
            BYE,
        ],
        [envelope("x@example.net"), envelope("bob@example.net")],
    )
    first, second = r.results
    assert codes(first) == [(550, "5.1.1")] and first.final is None
    assert codes(second) == [(250, "2.0.0")]
    # The refused DATA may have left the transaction open: RSET leads the next group.
    assert r.writes[5] == (
        b"RSET\r\nMAIL FROM:<alice@example.org> SIZE=35\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"
    )


def test_354_without_accepted_recipient_sends_only_the_dot() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, b"550 5.1.1 No\r\n", GO_AHEAD, b"554 5.5.1 No recipients\r\n", BYE],
        [envelope()],
    )
    assert r.writes[5] == b".\r\n"  # RFC 2920 §3.1: no content, but the 354 must be answered
    assert codes(r.results[0]) == [(550, "5.1.1")]


def test_mail_refused_pipelined() -> None:
    r = check(
        [
            GREETING,
            EHLO_FULL,
            b"553 5.7.1 Sender rejected\r\n",
            b"503 5.5.1 Bad sequence\r\n",
            b"503 5.5.1 Bad sequence\r\n",
            b"503 5.5.1 Bad sequence\r\n",
            BYE,
        ],
        [envelope("a@example.net", "b@example.net")],
    )
    (result,) = r.results
    # The RCPT replies are consequences of the refused MAIL: the MAIL reply is what counts.
    assert codes(result) == [(553, "5.7.1"), (553, "5.7.1")]
    assert r.writes[6] == b"QUIT\r\n"  # no RSET needed, no message sent
    assert b"." not in r.output.split(b"DATA\r\n")[1]


def test_mail_refused_without_pipelining_sends_no_rcpt() -> None:
    r = check([GREETING, EHLO_PLAIN, b"451 4.3.0 Try later\r\n", BYE], [envelope()])
    assert b"RCPT" not in r.output
    assert codes(r.results[0]) == [(451, "4.3.0")]
    assert not r.results[0].recipients[0].permanent


def test_final_reply_refusal_applies_to_accepted_recipients() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, b"550 5.1.1 no\r\n", GO_AHEAD, b"554 5.7.1 Spam\r\n", BYE],
        [envelope("a@example.net", "b@example.net")],
    )
    assert codes(r.results[0]) == [(554, "5.7.1"), (550, "5.1.1")]
    assert r.results[0].final == Reply(554, "5.7.1", "Spam")


def test_two_transactions_on_one_connection() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope("a@example.net"), envelope("b@example.net")],
    )
    assert [codes(x) for x in r.results] == [[(250, "2.0.0")], [(250, "2.0.0")]]
    assert b"RSET" not in r.output


# ------------------------------------------------------------------------------ EHLO, HELO, greeting


def test_ehlo_refused_falls_back_to_helo() -> None:
    r = check(
        [
            GREETING,
            b"502 5.5.1 EHLO not implemented\r\n",
            b"250 mx.example.net\r\n",
            OK_MAIL,
            OK_RCPT,
            GO_AHEAD,
            QUEUED,
            BYE,
        ],
        [envelope()],
    )
    assert r.writes[2] == b"HELO out.example.org\r\n"
    assert r.writes[3] == b"MAIL FROM:<alice@example.org>\r\n"  # no ESMTP parameters after HELO
    assert r.events[0] == Ready(Extensions(), tls=False, authenticated=False)


def test_greeting_refused_fails_session_and_quits() -> None:
    r = check([b"554 5.3.2 Go away\r\n", BYE], [envelope()])
    assert r.events == [SessionFailed(Reply(554, "5.3.2", "Go away"), Phase.GREETING, remote=True), Closed()]
    assert r.writes[1] == b"QUIT\r\n"


def test_421_greeting() -> None:
    r = check([b"421 4.3.2 Busy\r\n"], [envelope()])
    assert r.events == [SessionFailed(Reply(421, "4.3.2", "Busy"), Phase.GREETING, remote=True), Closed()]
    assert r.output == b""


@pytest.mark.parametrize(
    ("segments", "code", "phase"),
    [
        ([b"250 mx.example.net\r\n", BYE], 250, Phase.GREETING),
        ([GREETING, b"220 again\r\n", BYE], 220, Phase.EHLO),
    ],
)
def test_a_positive_reply_out_of_place_fails_as_a_protocol_error(
    segments: list[bytes], code: int, phase: Phase
) -> None:
    # found by the client fuzz test: the server's 250 was the failure's reason, so a DSN would have
    # quoted a success status for an undelivered recipient
    r = check(segments, [envelope()])
    assert r.events == [SessionFailed(R.unexpected_reply(code), phase, remote=False), Closed()]
    assert R.unexpected_reply(code).code == 451  # transient: the next attempt may find a sane server


def test_rset_before_next_transaction_without_pipelining() -> None:
    r = check(
        [
            GREETING,
            EHLO_PLAIN,
            OK_MAIL,
            b"550 5.1.1 No\r\n",
            b"250 2.0.0 Flushed\r\n",
            OK_MAIL,
            OK_RCPT,
            GO_AHEAD,
            QUEUED,
            BYE,
        ],
        [envelope("x@example.net"), envelope("bob@example.net")],
    )
    assert r.writes[4:7] == [
        b"RSET\r\n",
        b"MAIL FROM:<alice@example.org>\r\n",
        b"RCPT TO:<bob@example.net>\r\n",
    ]
    assert [codes(x) for x in r.results] == [[(550, "5.1.1")], [(250, "2.0.0")]]


def test_greeting_multiline() -> None:
    r = check([b"220-mx.example.net ESMTP\r\n220-more\r\n220 text\r\n", EHLO_FULL], quit_after=False)
    assert isinstance(r.events[0], Ready)


def test_421_mid_transaction_closes_without_quit() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, b"421 4.3.2 Shutting down\r\n"],
        [envelope("a@example.net", "b@example.net", "c@example.net")],
    )
    done, closed = r.events[1:]
    assert isinstance(done, TransactionDone) and isinstance(closed, Closed)
    # accepted but undelivered and unanswered recipients all get the 421
    assert codes(done.result) == [(421, "4.3.2")] * 3
    assert all(x.remote and not x.permanent for x in done.result.recipients)
    assert b"QUIT" not in r.output
    assert r.engine.closed and r.engine.next_event() == Closed()


def test_connection_lost_after_final_dot_is_temporary() -> None:
    r = check([GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD], [envelope()])
    (result,) = r.results
    assert result.recipients[0].reply == CONNECTION_LOST and not result.recipients[0].remote
    assert r.events[-1] == Closed()


def test_connection_lost_before_ready() -> None:
    r = check([GREETING])
    assert r.events == [SessionFailed(CONNECTION_LOST, Phase.EHLO, remote=False), Closed()]


def test_timed_out_names_the_phase() -> None:
    engine = SMTPClientEngine(SETTINGS)
    engine.receive_data(GREETING + EHLO_FULL + OK_MAIL)
    assert isinstance(engine.next_event(), Ready)
    engine.send_mail(envelope())
    assert engine.next_event() is NEED_DATA
    assert engine.phase is Phase.RCPT
    engine.timed_out()
    done = engine.next_event()
    assert isinstance(done, TransactionDone)
    assert done.result.recipients[0].reply == Reply(451, "4.4.2", "Timeout in phase rcpt")
    assert engine.next_event() == Closed()


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello\r\n",
        b"25\r\n",
        b"250x\r\n",
        b"650 weird\r\n",
        b"250-one\r\n251 two\r\n",
        b"250 " + b"x" * 5000 + b"\r\n",
        b"250-x\r\n" * 300 + b"250 x\r\n",
    ],
)
def test_malformed_or_unbounded_replies_abort(garbage: bytes) -> None:
    r = run([GREETING, garbage])
    assert r.events == [SessionFailed(BAD_REPLY, Phase.EHLO, remote=False), Closed()]


# ------------------------------------------------------------------------------ STARTTLS and AUTH


EHLO_TLS = b"250-mx.example.net\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


def test_starttls_then_ehlo_again() -> None:
    r = check(
        [GREETING, EHLO_TLS, b"220 2.0.0 Ready\r\n", EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope()],
    )
    assert r.writes[2] == b"STARTTLS\r\n"
    assert r.writes[3] == b"EHLO out.example.org\r\n"  # RFC 3207 §4.2
    assert r.events[0] == StartTLS()
    ready = r.events[1]
    assert isinstance(ready, Ready) and ready.tls and ready.extensions.dsn  # the post-TLS EHLO counts
    assert r.results[0].tls


def test_starttls_response_injection_is_discarded() -> None:
    # A man in the middle appends a fake EHLO reply to the 220 in clear text.
    r = run(
        [GREETING, EHLO_TLS, b"220 2.0.0 Ready\r\n250-evil\r\n250 AUTH PLAIN\r\n", EHLO_FULL],
        quit_after=False,
    )
    ready = r.events[1]
    assert isinstance(ready, Ready) and not ready.extensions.auth and ready.extensions.dsn


def test_tls_handshake_failure() -> None:
    engine = SMTPClientEngine(SETTINGS)
    engine.receive_data(GREETING + EHLO_TLS + b"220 2.0.0 Ready\r\n")
    assert engine.next_event() == StartTLS()
    assert phase_of(engine) is Phase.STARTTLS
    engine.tls_failed()
    assert engine.next_event() == SessionFailed(TLS_FAILED, Phase.STARTTLS, remote=False)
    assert engine.next_event() == Closed()
    assert engine.data_to_send() == b"EHLO out.example.org\r\nSTARTTLS\r\n"


def test_starttls_refused_goes_on_in_clear() -> None:
    r = check([GREETING, EHLO_TLS, b"454 4.7.0 TLS not available\r\n"], quit_after=False)
    assert isinstance(r.events[0], Ready) and not r.events[0].tls


def test_starttls_disabled_in_settings() -> None:
    r = check([GREETING, EHLO_TLS], settings=replace(SETTINGS, starttls=False), quit_after=False)
    assert isinstance(r.events[0], Ready) and b"STARTTLS" not in r.output


def test_require_tls() -> None:
    strict = replace(SETTINGS, require_tls=True)
    r = check([GREETING, EHLO_FULL, BYE], settings=strict)
    assert r.events == [SessionFailed(TLS_NOT_OFFERED, Phase.STARTTLS, remote=False), Closed()]
    r = check([GREETING, EHLO_TLS, b"454 4.7.0 No TLS now\r\n", BYE], settings=strict)
    assert r.events[0] == SessionFailed(Reply(454, "4.7.0", "No TLS now"), Phase.STARTTLS, remote=True)


CREDS = Credentials("user@example.org", "s3cret")
SMARTHOST = replace(SETTINGS, tls_active=True, credentials=CREDS)
EHLO_AUTH = b"250-smtp.provider.test\r\n250-AUTH LOGIN PLAIN\r\n250 PIPELINING\r\n"


def test_auth_plain() -> None:
    r = check([GREETING, EHLO_AUTH, b"235 2.7.0 OK\r\n"], settings=SMARTHOST, quit_after=False)
    token = base64.b64encode(b"\0user@example.org\0s3cret")
    assert r.writes[2] == b"AUTH PLAIN " + token + b"\r\n"
    assert r.events == [Ready(Extensions.parse(["AUTH LOGIN PLAIN", "PIPELINING"]), True, True)]
    assert "s3cret" not in repr(CREDS)


def test_auth_login() -> None:
    r = check(
        [
            GREETING,
            b"250-x\r\n250 AUTH=LOGIN\r\n",
            b"334 VXNlcm5hbWU6\r\n",
            b"334 UGFzc3dvcmQ6\r\n",
            b"235 2.7.0 OK\r\n",
        ],
        settings=SMARTHOST,
        quit_after=False,
    )
    assert r.writes[2:5] == [
        b"AUTH LOGIN\r\n",
        base64.b64encode(b"user@example.org") + b"\r\n",
        base64.b64encode(b"s3cret") + b"\r\n",
    ]
    assert isinstance(r.events[0], Ready) and r.events[0].authenticated


def test_auth_failure_is_a_session_failure() -> None:
    r = check([GREETING, EHLO_AUTH, b"535 5.7.8 Bad credentials\r\n", BYE], settings=SMARTHOST)
    assert r.events == [SessionFailed(Reply(535, "5.7.8", "Bad credentials"), Phase.AUTH, True), Closed()]


def test_no_credentials_in_clear_text() -> None:
    r = check([GREETING, EHLO_AUTH, BYE], settings=replace(SMARTHOST, tls_active=False))
    assert r.events[0] == SessionFailed(AUTH_NEEDS_TLS, Phase.AUTH, remote=False)
    assert b"AUTH" not in r.output


# ------------------------------------------------------------------------------ BDAT


def test_bdat_chunks_wait_for_each_reply() -> None:
    chunks = [b"Subject: x\r\n\r\n", b".dot\r\n", b"end"]
    r = check(
        [
            GREETING,
            EHLO_CHUNKING,
            OK_MAIL,
            OK_RCPT,
            b"250 2.0.0 14 octets\r\n",
            b"250 2.0.0 6 octets\r\n",
            QUEUED,
            BYE,
        ],
        [envelope()],
        chunks=chunks,
    )
    assert r.writes[2] == b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
    # The first chunk is held until the next one shows it is not the last.
    assert r.writes[4] == b"BDAT 14\r\nSubject: x\r\n\r\n"
    assert r.writes[5] == b"BDAT 6\r\n.dot\r\n"  # no dot-stuffing under BDAT
    assert r.writes[6] == b"BDAT 5 LAST\r\nend\r\n"  # the final CRLF added
    assert codes(r.results[0]) == [(250, "2.0.0")]


def test_bdat_refused_chunk_fails_and_resets() -> None:
    r = check(
        [
            GREETING,
            EHLO_CHUNKING,
            OK_MAIL,
            OK_RCPT,
            b"552 5.3.4 Too big\r\n",
            b"250 2.0.0 Flushed\r\n",
            OK_MAIL,
            OK_RCPT,
            b"250 2.0.0 3 octets\r\n",
            QUEUED,
            BYE,
        ],
        [envelope(), envelope()],
        chunks=[b"a\r\n", b"b\r\n"],
    )
    first, second = r.results
    assert codes(first) == [(552, "5.3.4")] and codes(second) == [(250, "2.0.0")]
    assert r.writes[4] == b"BDAT 3\r\na\r\n"  # "b" is held back, then dropped with the refusal
    assert r.writes[5].startswith(b"RSET\r\nMAIL FROM:")
    assert b"b\r\n" not in r.writes[5]


def test_bdat_disabled_uses_data() -> None:
    r = check(
        [GREETING, EHLO_CHUNKING, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope()],
        settings=replace(SETTINGS, chunking=False),
    )
    assert b"BDAT" not in r.output and STUFFED in r.output


def test_bdat_empty_message() -> None:
    r = run([GREETING, EHLO_CHUNKING, OK_MAIL, OK_RCPT, QUEUED, BYE], [envelope(message=b"")], chunks=[])
    assert r.writes[4] == b"BDAT 0 LAST\r\n"


# ------------------------------------------------------------------------------ checks before sending


def test_size_refused_before_sending() -> None:
    big = envelope(message=b"x" * 10001)
    r = check([GREETING, EHLO_FULL, BYE], [big])
    (result,) = r.results
    assert codes(result) == [(552, "5.3.4")]
    assert result.recipients[0].permanent and not result.recipients[0].remote
    assert b"MAIL" not in r.output
    ok = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [envelope(message=b"x" * 10000)]
    )
    assert b"SIZE=10000" in ok.output


def test_size_without_limit() -> None:
    ehlo = b"250-mx\r\n250 SIZE\r\n"
    r = check([GREETING, ehlo, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [envelope(message=b"x" * 99999)])
    assert b"SIZE=99999" in r.output and r.results[0].recipients[0].delivered


def test_smtputf8_message_to_peer_without_it() -> None:
    r = check([GREETING, EHLO_PLAIN, BYE], [envelope(smtputf8=True)])
    assert [x.reply for x in r.results[0].recipients] == [NEEDS_SMTPUTF8]
    utf8_sender = Envelope(addr("jösé@example.org"), (Recipient(addr("b@example.net")),), 5)
    r = check([GREETING, EHLO_PLAIN, BYE], [utf8_sender])
    assert [x.reply for x in r.results[0].recipients] == [NEEDS_SMTPUTF8]


def test_non_ascii_recipient_refused_alone() -> None:
    r = check(
        [GREETING, EHLO_PLAIN, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope("ünï@example.net", "bob@example.net")],
    )
    (result,) = r.results
    assert [x.reply for x in result.recipients] == [
        ADDRESS_NEEDS_SMTPUTF8,
        Reply(250, "2.0.0", "Queued as 1234"),
    ]
    assert "ünï".encode() not in r.output


def test_smtputf8_parameter_when_supported() -> None:
    r = check(
        [GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE],
        [envelope("ünï@example.net")],
    )
    assert "MAIL FROM:<alice@example.org> SIZE=35 SMTPUTF8\r\nRCPT TO:<ünï@example.net>".encode() in r.output


def test_eight_bit_body() -> None:
    r = check([GREETING, b"250-mx\r\n250 PIPELINING\r\n", BYE], [envelope(eight_bit=True)])
    assert [x.reply for x in r.results[0].recipients] == [NEEDS_8BITMIME]
    assert r.results[0].recipients[0].permanent
    r = check([GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [envelope(eight_bit=True)])
    assert b"MAIL FROM:<alice@example.org> SIZE=35 BODY=8BITMIME\r\n" in r.output


def test_dsn_parameters_only_when_offered() -> None:
    env = Envelope(
        None,
        (Recipient(addr("b@example.net"), ("SUCCESS", "FAILURE"), "rfc822;b+40example.net"),),
        len(MESSAGE),
        ret="HDRS",
        envid="QQ314159",
    )
    r = check([GREETING, EHLO_FULL, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [env])
    assert (
        b"MAIL FROM:<> SIZE=35 RET=HDRS ENVID=QQ314159\r\n"
        b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.net\r\n"
    ) in r.output
    assert r.results[0].dsn_passed
    r = check([GREETING, EHLO_PLAIN, OK_MAIL, OK_RCPT, GO_AHEAD, QUEUED, BYE], [env])
    assert b"MAIL FROM:<>\r\n" in r.output and b"RCPT TO:<b@example.net>\r\n" in r.output
    assert not r.results[0].dsn_passed


# ------------------------------------------------------------------------------ misuse


def test_engine_misuse_is_an_error() -> None:
    engine = SMTPClientEngine(SETTINGS)
    with pytest.raises(EngineError):
        engine.send_mail(envelope())
    with pytest.raises(EngineError):
        engine.tls_started()
    with pytest.raises(EngineError):
        engine.send_message_data(b"x")
    engine.receive_data(GREETING + EHLO_FULL)
    assert isinstance(engine.next_event(), Ready)
    with pytest.raises(EngineError):
        engine.next_event()  # Ready: the shell must send_mail() or quit()
    with pytest.raises(EngineError):
        engine.send_mail(Envelope(None, (), 0))


# ------------------------------------------------------------------------------ extensions


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], Extensions()),
        (
            ["PIPELINING", "8bitmime", "SMTPUTF8"],
            Extensions(pipelining=True, eight_bit_mime=True, smtputf8=True),
        ),
        (["SIZE 52428800"], Extensions(size=52428800)),
        (["SIZE"], Extensions(size=0)),
        (["SIZE x"], Extensions(size=0)),
        (["STARTTLS", "DSN", "CHUNKING"], Extensions(starttls=True, dsn=True, chunking=True)),
        (["ENHANCEDSTATUSCODES"], Extensions(enhanced_status_codes=True)),
        (["AUTH PLAIN login CRAM-MD5"], Extensions(auth=frozenset({"PLAIN", "LOGIN", "CRAM-MD5"}))),
        (["AUTH=LOGIN PLAIN"], Extensions(auth=frozenset({"PLAIN", "LOGIN"}))),
        (["XCLIENT NAME ADDR", "VRFY", "ETRN"], Extensions()),
    ],
)
def test_extensions_parse(lines: list[str], expected: Extensions) -> None:
    assert Extensions.parse(lines) == expected


# ------------------------------------------------------------------------------ REQUIRETLS (RFC 8689)

EHLO_REQUIRETLS = b"250-mx.example.net\r\n250-PIPELINING\r\n250-REQUIRETLS\r\n250 8BITMIME\r\n"


def test_requiretls_is_passed_on_over_tls_to_a_server_offering_it() -> None:
    """RFC 8689 §4.2.1: MAIL FROM carries REQUIRETLS to the next hop."""
    r = check(
        [
            GREETING,
            EHLO_TLS,
            b"220 2.0.0 Ready\r\n",
            EHLO_REQUIRETLS,
            OK_MAIL,
            OK_RCPT,
            GO_AHEAD,
            QUEUED,
            BYE,
        ],
        [envelope(requiretls=True)],
    )
    assert r.writes[4].startswith(b"MAIL FROM:<alice@example.org> REQUIRETLS\r\n")
    assert codes(r.results[0]) == [(250, "2.0.0")]


@pytest.mark.parametrize(
    "segments",
    [
        # TLS, and no REQUIRETLS offered
        [GREETING, EHLO_TLS, b"220 2.0.0 Ready\r\n", EHLO_FULL, BYE],
        # REQUIRETLS offered in clear (a server that should not): not TLS, so not enough
        [GREETING, EHLO_REQUIRETLS, BYE],
    ],
)
def test_requiretls_message_is_not_sent_without_it(segments: list[bytes]) -> None:
    r = check(segments, [envelope(requiretls=True)])
    assert b"MAIL FROM" not in r.output
    [recipient] = r.results[0].recipients
    assert (recipient.reply.code, recipient.reply.enhanced, recipient.remote) == (550, "5.7.30", False)


def test_requiretls_keyword_is_parsed() -> None:
    assert Extensions.parse(["REQUIRETLS"]) == Extensions(requiretls=True)
