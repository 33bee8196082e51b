"""SMTP server engine: bytes in, events and reply bytes out, no sockets.

Every test that feeds bytes goes through `check_splits`, which runs the input whole, split in two
at every offset, and one octet at a time, and requires the same events and output each time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest

from surat.proto.smtp import replies as R
from surat.proto.smtp.address import Address, MailParams, RcptParams
from surat.proto.smtp.replies import Reply
from surat.proto.smtp.server import (
    MAX_AUTH_LINE,
    NEED_DATA,
    AuthResponse,
    AuthStart,
    BdatStart,
    ChunkEnd,
    Close,
    DataStart,
    Event,
    Hello,
    MailFrom,
    MessageData,
    MessageEnd,
    Quit,
    RcptTo,
    Reset,
    ServerSettings,
    SMTPServerEngine,
    StartTLS,
    State,
)

MX = ServerSettings(hostname="mx.example.test", starttls=True)
SUBMISSION = ServerSettings(
    hostname="mx.example.test",
    starttls=True,
    auth_mechanisms=("PLAIN", "LOGIN", "SCRAM-SHA-256"),
    auth_required=True,
)
SUBMISSION_TLS = replace(SUBMISSION, starttls=False, tls_active=True)

E = TypeVar("E")
Responder = Callable[[SMTPServerEngine, Event], Reply]


def accept_all(engine: SMTPServerEngine, event: Event) -> Reply:
    match event:
        case Hello():
            return engine.ehlo_reply(event)
        case MailFrom():
            return R.SENDER_OK
        case RcptTo():
            return R.RECIPIENT_OK
        case DataStart():
            return R.START_DATA
        case ChunkEnd():
            return event.problem or Reply(250, "2.0.0", f"{event.size} octets received")
        case MessageEnd():
            return event.problem or R.QUEUED
        case StartTLS():
            return R.READY_FOR_TLS
        case AuthStart() | AuthResponse():
            return R.AUTH_OK
    raise AssertionError(f"unexpected {event!r}")


@dataclass
class Run:
    events: list[Event]
    output: bytes
    engine: SMTPServerEngine

    @property
    def replies(self) -> list[str]:
        """Reply lines, e.g. "250 2.1.0 Sender OK" (continuation lines included)."""
        return self.output.decode().splitlines()

    @property
    def codes(self) -> list[str]:
        """The final line of each reply, reduced to "code enhanced" (or just the code)."""
        out = []
        for line in self.replies:
            if line[3] == " ":
                parts = line.split(" ")
                enhanced = parts[1] if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1] else ""
                out.append(f"{line[:3]} {enhanced}".strip())
        return out

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def message(self) -> bytes:
        return b"".join(event.chunk for event in self.events if isinstance(event, MessageData))


def _merge(events: list[Event]) -> list[Event]:
    """Consecutive MessageData chunks are one: how text is chunked depends on the split."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, MessageData) and out and isinstance(out[-1], MessageData):
            out[-1] = MessageData(out[-1].chunk + event.chunk)
        else:
            out.append(event)
    return out


def feed(
    pieces: Sequence[bytes],
    settings: ServerSettings = MX,
    responder: Responder = accept_all,
    engine: SMTPServerEngine | None = None,
) -> Run:
    engine = engine or SMTPServerEngine(settings)
    events: list[Event] = []
    for piece in pieces:
        engine.receive_data(piece)
        while not engine.closed or engine.awaiting_reply:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if engine.awaiting_reply:
                engine.respond(responder(engine, event))
        if engine.closed:
            # the Close event, if one is due
            event = engine.next_event()
            if event is not NEED_DATA:
                events.append(event)
    return Run(_merge(events), engine.data_to_send(), engine)


def check_splits(
    data: bytes, settings: ServerSettings = MX, responder: Responder = accept_all, every_offset: bool = True
) -> Run:
    """Run `data` whole, in two at every offset, and octet by octet: all must agree."""
    whole = feed([data], settings, responder)
    variants: list[list[bytes]] = [[data[i : i + 1] for i in range(len(data))]]
    if every_offset:
        variants += [[data[:i], data[i:]] for i in range(1, len(data))]
    for pieces in variants:
        run = feed(pieces, settings, responder)
        assert run.events == whole.events, pieces
        assert run.output == whole.output, pieces
    return whole


HELLO = b"EHLO client.example\r\n"
ENVELOPE = HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n"


# ------------------------------------------------------------------------------------- greeting, EHLO


def test_reply_formatting() -> None:
    assert Reply(250, "2.0.0", "OK").to_bytes() == b"250 2.0.0 OK\r\n"
    assert Reply(250, None, ("a", "b", "c")).to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.1.1", "x\r\n250 injected").to_bytes() == b"550 5.1.1 x  250 injected\r\n"
    assert R.auth_challenge(b"abc").to_bytes() == b"334 YWJj\r\n"


def test_greeting() -> None:
    engine = SMTPServerEngine(MX)
    engine.send(engine.greeting())
    assert engine.data_to_send() == b"220 mx.example.test ESMTP Surat\r\n"


def test_ehlo_keywords_mx() -> None:
    run = check_splits(HELLO)
    assert run.events == [Hello("client.example", True)]
    assert run.replies == [
        "250-mx.example.test",
        "250-PIPELINING",
        f"250-SIZE {MX.max_message_size}",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-SMTPUTF8",
        "250-CHUNKING",
        "250-DSN",
        "250 STARTTLS",
    ]


def test_ehlo_keywords_submission_plain_has_no_auth() -> None:
    run = feed([HELLO], SUBMISSION)
    assert "250 STARTTLS" in run.replies
    assert not any("AUTH" in line for line in run.replies)


def test_ehlo_keywords_submission_tls_has_auth_and_no_starttls() -> None:
    run = feed([HELLO], SUBMISSION_TLS)
    assert run.replies[-1] == "250 AUTH PLAIN LOGIN SCRAM-SHA-256"
    assert not any("STARTTLS" in line for line in run.replies)


def test_helo() -> None:
    run = check_splits(b"HELO client.example\r\n")
    assert run.events == [Hello("client.example", False)]
    assert run.replies == ["250 mx.example.test"]


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"EHLO a b\r\n", b"HELO \r\n"])
def test_hello_needs_one_argument(line: bytes) -> None:
    assert check_splits(line).codes == ["501 5.5.4"]


def test_lowercase_commands_and_bare_lf_command_lines() -> None:
    run = check_splits(b"ehlo x\nnoop\r\n")
    assert run.events == [Hello("x", True)]
    assert run.codes[-1] == "250 2.0.0"


# ------------------------------------------------------------------------------------- transactions


def test_full_transaction_with_data() -> None:
    data = ENVELOPE + b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    run = check_splits(data)
    assert run.events == [
        Hello("client.example", True),
        MailFrom(Address("a", "example.org"), MailParams()),
        RcptTo(Address("b", "example.test"), RcptParams()),
        DataStart(),
        MessageData(b"Subject: hi\r\n\r\nbody\r\n"),
        MessageEnd(None),
        Quit(),
    ]
    assert run.codes == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    assert run.engine.closed


def test_pipelined_transactions_reply_in_order() -> None:
    one = b"MAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nx\r\n.\r\n"
    run = check_splits(HELLO + one + one + b"RSET\r\n")
    assert len(run.of(MessageEnd)) == 2
    assert run.of(MailFrom)[0] == MailFrom(None, MailParams())
    assert run.codes[1:] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "250 2.0.0"] * 2 + ["250 2.0.0"]
    assert run.events[-1] == Reset()


def test_commands_after_quit_are_ignored() -> None:
    run = check_splits(b"QUIT\r\nNOOP\r\n")
    assert run.codes == ["221 2.0.0"]
    assert run.events == [Quit()]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"NOOP\r\n", "250 2.0.0"),
        (b"NOOP anything\r\n", "250 2.0.0"),
        (b"VRFY postmaster\r\n", "252 2.5.0"),
        (b"VRFY\r\n", "501 5.5.4"),
        (b"EXPN list\r\n", "502 5.5.1"),
        (b"HELP\r\n", "214 2.0.0"),
        (b"RSET\r\n", "250 2.0.0"),
        (b"RSET x\r\n", "501 5.5.4"),
        (b"QUIT x\r\n", "501 5.5.4"),
        (b"FOO\r\n", "500 5.5.1"),
        (b"\r\n", "500 5.5.1"),
        (b"GET / HTTP/1.1\r\n", "500 5.5.1"),
        (b"NOOP \xff\r\n", "500 5.5.2"),
    ],
)
def test_simple_commands(line: bytes, code: str) -> None:
    assert check_splits(HELLO + line).codes[1:] == [code]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"MAIL FROM:<a@example.org>\r\n", "503 5.5.1"),  # before EHLO
        (HELLO + b"RCPT TO:<b@example.test>\r\n", "503 5.5.1"),
        (HELLO + b"DATA\r\n", "503 5.5.1"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\n", "503 5.5.1"),
        (ENVELOPE + b"STARTTLS\r\n", "503 5.5.1"),
        (HELLO + b"MAIL FROM:a@example.org\r\n", "501 5.1.7"),
        (HELLO + b"MAIL FROM:<a@@example.org>\r\n", "501 5.1.7"),
        (HELLO + b"MAIL TO:<a@example.org>\r\n", "501 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org> SIZE=x\r\n", "501 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org> FOO=1\r\n", "555 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org> SIZE=52428801\r\n", "552 5.3.4"),
        (HELLO + b"MAIL FROM:<\xc3\xa9@example.org>\r\n", "553 5.6.7"),
        (b"HELO x\r\nMAIL FROM:<a@example.org> SIZE=10\r\n", "555 5.5.4"),  # no ESMTP after HELO
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<>\r\n", "501 5.1.3"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:b@example.test\r\n", "501 5.1.3"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT FROM:<b@example.test>\r\n", "501 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test> NOTIFY=SOMETIMES\r\n", "501 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test> BAR\r\n", "555 5.5.4"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<\xc3\xa9@example.test>\r\n", "553 5.6.7"),
        (HELLO + b"MAIL FROM:<a@example.org>\r\nDATA\r\n", "554 5.5.1"),  # no recipient
        (ENVELOPE + b"DATA now\r\n", "501 5.5.4"),
    ],
)
def test_refused_commands(data: bytes, code: str) -> None:
    run = check_splits(data)
    assert run.codes[-1] == code
    assert not run.of(DataStart)


def test_smtputf8_addresses() -> None:
    data = HELLO + "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<élise@example.test>\r\n".encode()
    run = check_splits(data, every_offset=False)
    assert run.of(MailFrom) == [MailFrom(Address("jörg", "xn--bcher-kva.example"), MailParams(smtputf8=True))]
    assert run.of(RcptTo) == [RcptTo(Address("élise", "example.test"), RcptParams())]


def test_dsn_parameters_reach_the_events() -> None:
    data = HELLO + (
        b"MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B1 BODY=8BITMIME SIZE=100\r\n"
        b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.test\r\n"
    )
    run = check_splits(data)
    assert run.of(MailFrom)[0].params == MailParams(size=100, body="8BITMIME", ret="HDRS", envid="QQ+2B1")
    assert run.of(RcptTo)[0].params == RcptParams(("SUCCESS", "FAILURE"), "rfc822;b+40example.test")


def test_refused_mail_keeps_state() -> None:
    def refuse_mail(engine: SMTPServerEngine, event: Event) -> Reply:
        return R.SENDER_NOT_OWNED if isinstance(event, MailFrom) else accept_all(engine, event)

    run = check_splits(ENVELOPE, responder=refuse_mail)
    assert run.codes[1:] == ["553 5.7.1", "503 5.5.1"]


def test_data_with_only_refused_recipients() -> None:
    def refuse_rcpt(engine: SMTPServerEngine, event: Event) -> Reply:
        return R.NO_SUCH_USER if isinstance(event, RcptTo) else accept_all(engine, event)

    run = check_splits(ENVELOPE + b"DATA\r\n", responder=refuse_rcpt)
    assert run.codes[1:] == ["250 2.1.0", "550 5.1.1", "554 5.5.1"]
    assert not run.of(DataStart)


def test_too_many_recipients() -> None:
    settings = replace(MX, max_recipients=3)
    rcpts = b"".join(b"RCPT TO:<u%d@example.test>\r\n" % n for n in range(4))
    run = check_splits(HELLO + b"MAIL FROM:<a@example.org>\r\n" + rcpts + b"DATA\r\n", settings)
    assert run.codes[2:] == ["250 2.1.5"] * 3 + ["452 4.5.3", "354"]
    assert len(run.of(RcptTo)) == 3


def test_ehlo_and_rset_reset_the_transaction() -> None:
    run = check_splits(ENVELOPE + b"EHLO again\r\nRCPT TO:<b@example.test>\r\n")
    assert run.codes[-1] == "503 5.5.1"
    run = check_splits(ENVELOPE + b"RSET\r\nRCPT TO:<b@example.test>\r\n")
    assert run.codes[-2:] == ["250 2.0.0", "503 5.5.1"]
    assert Reset() in run.events


# ------------------------------------------------------------------------------------- limits


def test_command_line_limit() -> None:
    ok = b"NOOP " + b"x" * (512 - 7) + b"\r\n"  # exactly 512 octets with CRLF
    too_long = b"NOOP " + b"x" * (512 - 6) + b"\r\n"
    assert len(ok) == 512
    run = check_splits(ok + too_long + b"NOOP\r\n", every_offset=False)
    assert run.codes == ["250 2.0.0", "500 5.5.2", "250 2.0.0"]


def test_long_command_line_is_discarded_with_bounded_buffer() -> None:
    engine = SMTPServerEngine(MX)
    run = feed([b"NOOP "] + [b"x" * 1000] * 100 + [b"\r\nNOOP\r\n"], engine=engine)
    assert run.codes == ["500 5.5.2", "250 2.0.0"]
    big = SMTPServerEngine(MX)
    for _ in range(100):
        big.receive_data(b"y" * 1000)
        assert big.next_event() is NEED_DATA
        assert big.buffered < 512
    assert big.data_to_send() == b"500 5.5.2 Line too long\r\n"  # one reply per long line


def test_mail_line_may_carry_long_parameters() -> None:
    envid = b"E" * 100
    orcpt = b"rfc822;" + b"o" * 480
    data = HELLO + b"MAIL FROM:<a@example.org> ENVID=" + envid + b" AUTH=<>\r\n"
    data += b"RCPT TO:<b@example.test> ORCPT=" + orcpt + b" NOTIFY=NEVER\r\n"
    run = check_splits(data, every_offset=False)
    assert run.codes[1:] == ["250 2.1.0", "250 2.1.5"]
    assert run.of(RcptTo)[0].params == RcptParams(("NEVER",), orcpt.decode())


def test_bad_command_budget() -> None:
    settings = replace(MX, max_bad_commands=3)
    run = check_splits(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n", settings)
    assert run.codes == ["500 5.5.1", "500 5.5.1", "421 4.7.0"]
    assert run.events == [Close(R.TOO_MANY_ERRORS)]
    assert run.engine.closed


def test_default_budget_is_ten() -> None:
    run = check_splits(HELLO + b"RCPT TO:<x@y>\r\n" * 12, every_offset=False)
    assert run.codes[1:] == ["503 5.5.1"] * 9 + ["421 4.7.0"]


def test_line_too_long_counts_against_budget() -> None:
    settings = replace(MX, max_bad_commands=2)
    run = check_splits(b"X" * 600 + b"\r\n" + b"Y" * 600, settings, every_offset=False)
    assert run.codes == ["500 5.5.2", "421 4.7.0"]
    assert run.events == [Close(R.TOO_MANY_ERRORS)]


# ------------------------------------------------------------------------------------- DATA


def _data_run(text: bytes, settings: ServerSettings = MX, every_offset: bool = True) -> Run:
    return check_splits(ENVELOPE + b"DATA\r\n" + text, settings, every_offset=every_offset)


def test_dot_unstuffing() -> None:
    run = _data_run(b"..leading\r\n...\r\n. \r\nmid.dle\r\n.\r\n")
    assert run.message == b".leading\r\n..\r\n \r\nmid.dle\r\n"
    assert run.of(MessageEnd) == [MessageEnd(None)]


def test_dot_as_the_first_line_ends_an_empty_message() -> None:
    run = _data_run(b".\r\nNOOP\r\n")
    assert run.message == b""
    assert run.of(MessageEnd) == [MessageEnd(None)]
    assert run.codes[-1] == "250 2.0.0"


def test_empty_line_then_end() -> None:
    assert _data_run(b"\r\n.\r\n").message == b"\r\n"


def test_bare_cr_and_lf_are_normalised() -> None:
    run = _data_run(b"a\rb\nc\r\r\nd\n\n\r\r\n.\r\n")
    assert run.message == b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n\r\n\r\n"


SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
    b"\r\n \r\n.\r\n"[:-2] + b"\n",
]


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS)
def test_smuggling_endings_do_not_end_data(ending: bytes) -> None:
    smuggled = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nforged\r\n"
    run = _data_run(b"Subject: x\r\n\r\nbody" + ending + smuggled + b".\r\nNOOP\r\n")
    assert run.of(MessageEnd) == [MessageEnd(None)]
    assert len(run.of(MailFrom)) == 1
    assert b"MAIL FROM:<evil@example.org>\r\n" in run.message
    assert run.message.endswith(b"forged\r\n")
    # nothing bare is left: every CR is followed by LF and every LF preceded by CR
    assert run.message.count(b"\r") == run.message.count(b"\n") == run.message.count(b"\r\n")
    assert run.codes[-2:] == ["250 2.0.0", "250 2.0.0"]


def test_message_size_enforced_while_streaming() -> None:
    settings = replace(MX, max_message_size=1024)
    run = check_splits(
        ENVELOPE + b"DATA\r\n" + b"0123456789abcde\r\n" * 200 + b".\r\nNOOP\r\n", settings, every_offset=False
    )
    assert run.of(MessageEnd) == [MessageEnd(R.MESSAGE_TOO_BIG)]
    assert len(run.message) <= 1024
    assert run.codes[-2:] == ["552 5.3.4", "250 2.0.0"]


def test_message_of_exactly_the_limit_is_accepted() -> None:
    settings = replace(MX, max_message_size=1024)
    run = _data_run(b"x" * 1022 + b"\r\n.\r\n", settings, every_offset=False)
    assert run.of(MessageEnd) == [MessageEnd(None)]
    assert len(run.message) == 1024


def test_long_text_line_streams_with_bounded_memory() -> None:
    engine = SMTPServerEngine(MX)
    feed([ENVELOPE + b"DATA\r\n"], engine=engine)
    received = 0
    line = b"y" * 65536
    for _ in range(32):  # a 2 MiB line, far over 998 octets
        engine.receive_data(line)
        while (event := engine.next_event()) is not NEED_DATA:
            assert isinstance(event, MessageData)
            assert b"\r" not in event.chunk and b"\n" not in event.chunk
            received += len(event.chunk)
        assert engine.buffered <= 2
    engine.receive_data(b"\r\n.\r\n")
    assert engine.next_event() == MessageData(b"\r\n")
    assert engine.next_event() == MessageEnd(None)
    assert received == 32 * 65536


# ------------------------------------------------------------------------------------- BDAT


def test_bdat_chunks() -> None:
    run = check_splits(ENVELOPE + b"BDAT 5\r\nhelloBDAT 10 LAST\r\n\r\n.world\r\nNOOP\r\n")
    assert run.events[3:] == [
        BdatStart(5, False, True),
        MessageData(b"hello"),
        ChunkEnd(5, None),
        BdatStart(10, True, False),
        MessageData(b"\r\n.world\r\n"),  # no dot-unstuffing in BDAT
        MessageEnd(None),
    ]
    assert run.codes[3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]


def test_bdat_zero_last_and_normalisation_across_chunks() -> None:
    run = check_splits(ENVELOPE + b"BDAT 2\r\na\rBDAT 3\r\n\nb\rBDAT 0 LAST\r\n")
    assert run.message == b"a\r\nb\r\n"
    assert run.of(MessageEnd) == [MessageEnd(None)]


def test_bdat_size_limit_then_further_bdat_is_refused() -> None:
    settings = replace(MX, max_message_size=1024)
    run = check_splits(
        ENVELOPE + b"BDAT 2000\r\n" + b"z" * 2000 + b"BDAT 4 LAST\r\nQUITRSET\r\nNOOP\r\n",
        settings,
        every_offset=False,
    )
    assert run.of(ChunkEnd) == [ChunkEnd(2000, R.MESSAGE_TOO_BIG)]
    assert run.message == b""
    assert not run.of(MessageEnd)
    assert not run.of(Quit)  # the swallowed octets were not taken as a command
    assert run.codes[3:] == ["552 5.3.4", "503 5.5.1", "250 2.0.0", "250 2.0.0"]


def test_bdat_refused_out_of_sequence_swallows_its_octets() -> None:
    run = check_splits(HELLO + b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert run.codes[1:] == ["503 5.5.1", "250 2.0.0"]
    assert not run.of(Quit)


def test_bdat_without_recipients() -> None:
    run = check_splits(HELLO + b"MAIL FROM:<>\r\nBDAT 3 LAST\r\nabcNOOP\r\n")
    assert run.codes[1:] == ["250 2.1.0", "554 5.5.1", "250 2.0.0"]


def test_data_after_bdat_is_refused() -> None:
    run = check_splits(ENVELOPE + b"BDAT 1\r\nxDATA\r\n")
    assert run.codes[-1] == "503 5.5.1"
    assert not run.of(DataStart)


def test_bdat_syntax() -> None:
    run = check_splits(ENVELOPE + b"BDAT\r\nBDAT x\r\nBDAT 1 FIRST\r\n")
    assert run.codes[3:] == ["501 5.5.4"] * 3


def test_bdat_oversized_announcement_is_refused_at_once() -> None:
    settings = replace(MX, max_message_size=1024)
    run = check_splits(ENVELOPE + b"BDAT 2000 LAST\r\n" + b"q" * 2000, settings, every_offset=False)
    assert run.of(MessageEnd) == [MessageEnd(R.MESSAGE_TOO_BIG)]
    assert run.message == b""


# ------------------------------------------------------------------------------------- STARTTLS


def test_starttls_discards_pipelined_commands() -> None:
    """CVE-2011-0411: what follows STARTTLS in the same packet is not run inside TLS."""
    engine = SMTPServerEngine(MX)
    run = feed([HELLO + b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n"], engine=engine)
    assert run.events[-1] == StartTLS()
    assert run.codes[-1] == "220 2.0.0"
    assert engine.state is State.STARTTLS
    engine.receive_data(b"RCPT TO:<x@example.test>\r\n")  # plaintext before the handshake
    assert engine.next_event() is NEED_DATA
    engine.tls_started()
    assert engine.tls and engine.buffered == 0
    after = feed([b"MAIL FROM:<a@example.org>\r\nEHLO x\r\nSTARTTLS\r\n"], engine=engine)
    assert after.codes[0] == "503 5.5.1"  # RFC 3207 §4.2: EHLO again first
    assert "250 STARTTLS" not in after.replies
    assert after.codes[-1] == "503 5.5.1"
    assert not after.of(StartTLS)


def test_starttls_not_available() -> None:
    run = check_splits(HELLO + b"STARTTLS\r\n", replace(MX, starttls=False))
    assert run.codes[-1] == "502 5.5.1"
    assert "STARTTLS" not in run.output.decode()


def test_starttls_refused_by_shell_keeps_plaintext() -> None:
    def no_tls(engine: SMTPServerEngine, event: Event) -> Reply:
        return R.TLS_UNAVAILABLE if isinstance(event, StartTLS) else accept_all(engine, event)

    run = check_splits(HELLO + b"STARTTLS\r\nNOOP\r\n", responder=no_tls)
    assert run.codes[1:] == ["454 4.7.0", "250 2.0.0"]
    assert not run.engine.tls


# ------------------------------------------------------------------------------------- AUTH

PLAIN = base64.b64encode(b"\0user@example.test\0secret")


def test_auth_not_offered_on_mx() -> None:
    assert check_splits(HELLO + b"AUTH PLAIN " + PLAIN + b"\r\n").codes[-1] == "502 5.5.1"


def test_auth_before_tls_refused() -> None:
    run = check_splits(HELLO + b"AUTH PLAIN " + PLAIN + b"\r\n", SUBMISSION)
    assert run.codes[-1] == "530 5.7.0"
    assert not run.of(AuthStart)


def test_mail_before_auth_refused_on_submission() -> None:
    assert check_splits(HELLO + b"MAIL FROM:<a@example.test>\r\n", SUBMISSION_TLS).codes[-1] == "530 5.7.0"
    assert check_splits(HELLO + b"MAIL FROM:<a@example.test>\r\n", SUBMISSION).codes[-1] == "530 5.7.0"


def test_auth_plain_initial_response() -> None:
    data = HELLO + b"AUTH plain " + PLAIN + b"\r\nAUTH PLAIN\r\nMAIL FROM:<user@example.test>\r\n"
    run = check_splits(data, SUBMISSION_TLS)
    assert run.of(AuthStart) == [AuthStart("PLAIN", b"\0user@example.test\0secret")]
    assert run.codes[1:] == ["235 2.7.0", "503 5.5.1", "250 2.1.0"]
    assert run.engine.authenticated


def test_auth_login_continuations_and_failure() -> None:
    def login(engine: SMTPServerEngine, event: Event) -> Reply:
        match event:
            case AuthStart():
                return R.auth_challenge(b"Username:")
            case AuthResponse(data=b"user"):
                return R.auth_challenge(b"Password:")
            case AuthResponse():
                return R.AUTH_FAILED
        return accept_all(engine, event)

    data = HELLO + b"AUTH LOGIN\r\ndXNlcg==\r\nd3Jvbmc=\r\nNOOP\r\n"
    run = check_splits(data, SUBMISSION_TLS, login)
    assert run.of(AuthResponse) == [AuthResponse(b"user"), AuthResponse(b"wrong")]
    assert run.replies[-4:] == [
        "334 VXNlcm5hbWU6",
        "334 UGFzc3dvcmQ6",
        "535 5.7.8 Authentication credentials invalid",
        "250 2.0.0 OK",
    ]
    assert not run.engine.authenticated


def test_auth_cancel_and_bad_base64() -> None:
    def challenge(engine: SMTPServerEngine, event: Event) -> Reply:
        if isinstance(event, AuthStart):
            return R.auth_challenge(b"")
        if isinstance(event, AuthResponse) and event.data is None:
            return R.AUTH_CANCELLED
        return accept_all(engine, event)

    run = check_splits(HELLO + b"AUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n!!!\r\nNOOP\r\n", SUBMISSION_TLS, challenge)
    assert run.of(AuthResponse) == [AuthResponse(None)]
    assert run.codes[1:] == ["334", "501 5.0.0", "334", "501 5.5.2", "250 2.0.0"]


def test_auth_continuation_line_limit() -> None:
    def challenge(engine: SMTPServerEngine, event: Event) -> Reply:
        if isinstance(event, AuthStart):
            return R.auth_challenge(b"")
        return R.AUTH_FAILED if isinstance(event, AuthResponse) else accept_all(engine, event)

    # RFC 4954 §4: lines up to 12288 octets with the CRLF are read (this one is not base64)
    fits = b"A" * (MAX_AUTH_LINE - 2)
    run = feed([HELLO + b"AUTH SCRAM-SHA-256\r\n" + fits + b"\r\nNOOP\r\n"], SUBMISSION_TLS, challenge)
    assert run.replies[-3:] == ["334 ", "501 5.5.2 Invalid base64 data", "250 2.0.0 OK"]
    run = feed([HELLO + b"AUTH SCRAM-SHA-256\r\n" + fits + b"A\r\nNOOP\r\n"], SUBMISSION_TLS, challenge)
    assert run.replies[-3:] == ["334 ", "500 5.5.2 Line too long", "250 2.0.0 OK"]
    valid = b"A" * (MAX_AUTH_LINE - 4)
    run = feed([HELLO + b"AUTH SCRAM-SHA-256\r\n" + valid + b"\r\n"], SUBMISSION_TLS, challenge)
    assert run.of(AuthResponse) == [AuthResponse(base64.b64decode(valid))]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"AUTH CRAM-MD5\r\n", "504 5.5.4"),
        (b"AUTH PLAIN !!notbase64\r\n", "501 5.5.2"),
        (b"AUTH\r\n", "501 5.5.4"),
    ],
)
def test_auth_refusals(line: bytes, code: str) -> None:
    assert check_splits(HELLO + line, SUBMISSION_TLS).codes[-1] == code


def test_auth_empty_initial_response() -> None:
    run = check_splits(HELLO + b"AUTH PLAIN =\r\n", SUBMISSION_TLS)
    assert run.of(AuthStart) == [AuthStart("PLAIN", b"")]


def test_auth_after_starttls() -> None:
    engine = SMTPServerEngine(SUBMISSION)
    feed([HELLO + b"STARTTLS\r\n"], engine=engine)
    engine.tls_started()
    run = feed([HELLO + b"AUTH PLAIN " + PLAIN + b"\r\n"], engine=engine)
    assert "250 AUTH PLAIN LOGIN SCRAM-SHA-256" in run.replies
    assert run.codes[-1] == "235 2.7.0"


# ------------------------------------------------------------------------------------- misuse


def test_shell_misuse_is_an_engine_error() -> None:
    from surat.proto.smtp.server import EngineError

    engine = SMTPServerEngine(MX)
    with pytest.raises(EngineError):
        engine.respond(R.OK)
    engine.receive_data(HELLO + b"NOOP\r\n")
    assert isinstance(engine.next_event(), Hello)
    with pytest.raises(EngineError):
        engine.next_event()
    with pytest.raises(EngineError):
        engine.tls_started()


def test_421_reply_closes() -> None:
    engine = SMTPServerEngine(MX)
    engine.send(R.IDLE_TIMEOUT)
    assert engine.closed
    assert engine.data_to_send() == b"421 4.4.2 Idle timeout, closing connection\r\n"


def test_junk_commands_past_the_limit_spend_the_bad_command_budget() -> None:
    # Postfix's smtpd_junk_command_limit: NOOP/RSET/VRFY/EXPN/HELP past the limit each count as an error.
    settings = replace(MX, max_junk_commands=3, max_bad_commands=3)
    run = check_splits(b"NOOP\r\nRSET\r\nHELP\r\nNOOP\r\nVRFY x\r\nNOOP\r\nNOOP\r\n", settings)
    # Three free, two more answered as usual but counted, the next one spends the last of the budget.
    assert run.codes == ["250 2.0.0", "250 2.0.0", "214 2.0.0", "250 2.0.0", "252 2.5.0", "421 4.7.0"]
    assert run.events[-1] == Close(R.TOO_MANY_ERRORS)
    assert run.engine.closed


def test_junk_limit_leaves_real_commands_alone() -> None:
    settings = replace(MX, max_junk_commands=1, max_bad_commands=2)
    run = check_splits(b"EHLO client.example\r\n" * 5, settings, every_offset=False)
    assert run.codes == ["250"] * 5 and not run.engine.closed


# ------------------------------------------------------------------------------ control characters

PROBE_SENDER = b"MAIL FROM:<a@[IPv6:::1%\rAuthentication-Results: x; dkim=pass\rX-Evil: 1]>\r\n"


@pytest.mark.parametrize(
    "line",
    [
        PROBE_SENDER,  # the review's probe: bare CRs inside the address literal's scope id
        b"MAIL FROM:<a@example.org>\rRCPT TO:<b@example.test>\r\n",
        b"MAIL FROM:<a@example.org>\x00\r\n",
        b"MAIL FROM:<a\x00b@example.org>\r\n",
        b"MAIL FROM:<a@example.org> ENVID=x\x1b\r\n",
        b"NOOP \x7f\r\n",
        b"EHLO client\rexample\r\n",
    ],
)
def test_control_characters_in_a_command_line_are_refused(line: bytes) -> None:
    run = check_splits(HELLO + line + b"MAIL FROM:<a@example.org>\r\n")
    assert run.codes[1:] == ["501 5.5.2", "250 2.1.0"]  # refused, and the session goes on
    assert [event.path for event in run.of(MailFrom)] == [Address("a", "example.org")]


def test_tab_in_a_command_line_is_not_a_control_character_error() -> None:
    assert check_splits(HELLO + b"NOOP x\ty\r\n").codes[1:] == ["250 2.0.0"]


# ------------------------------------------------------------------------------------- REQUIRETLS


MX_TLS = replace(MX, starttls=False, tls_active=True)


def test_requiretls_is_offered_in_tls_sessions_only() -> None:
    """RFC 8689 §4.1: the EHLO keyword only where the session is TLS."""
    assert (
        "250-REQUIRETLS" not in feed([HELLO], MX).replies
        and "250 REQUIRETLS" not in feed([HELLO], MX).replies
    )
    assert feed([HELLO], MX_TLS).replies[-1] == "250 REQUIRETLS"
    assert "250-REQUIRETLS" in feed([HELLO], SUBMISSION_TLS).replies
    assert not any("REQUIRETLS" in line for line in feed([HELLO], replace(MX_TLS, requiretls=False)).replies)


def test_requiretls_parameter_over_tls_reaches_the_event() -> None:
    data = HELLO + b"MAIL FROM:<a@example.org> REQUIRETLS\r\nRCPT TO:<b@example.test>\r\n"
    run = check_splits(data, MX_TLS)
    assert run.of(MailFrom) == [MailFrom(Address("a", "example.org"), MailParams(requiretls=True))]
    assert run.replies[-2:] == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"]


@pytest.mark.parametrize(
    ("settings", "line", "reply"),
    [
        # RFC 8689 §4.1: not in a plain session
        (
            MX,
            b"MAIL FROM:<a@example.org> REQUIRETLS",
            "530 5.7.10 REQUIRETLS needs a TLS session: STARTTLS first",
        ),
        # not offered at all: an unknown parameter (RFC 5321 §4.1.1.11)
        (
            replace(MX_TLS, requiretls=False),
            b"MAIL FROM:<a@example.org> REQUIRETLS",
            "555 5.5.4 Unsupported MAIL/RCPT parameter",
        ),
        # RFC 8689 §3: no value
        (
            MX_TLS,
            b"MAIL FROM:<a@example.org> REQUIRETLS=YES",
            "501 5.5.4 Syntax error in parameters or arguments",
        ),
    ],
)
def test_requiretls_refused(settings: ServerSettings, line: bytes, reply: str) -> None:
    run = check_splits(HELLO + line + b"\r\nRCPT TO:<b@example.test>\r\n", settings)
    assert run.of(MailFrom) == []
    assert run.replies[-2:] == [reply, "503 5.5.1 Bad sequence of commands"]
