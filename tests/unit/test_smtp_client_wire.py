"""SMTP client wire format: reply parsing, message encoding (dot-stuffing, CRLF), and whole
sessions against the project's own server engine (both sans-IO, pumped in memory)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace

import pytest

from surat.proto.smtp import replies as R
from surat.proto.smtp import server as S
from surat.proto.smtp.address import Address
from surat.proto.smtp.client import (
    NEED_DATA,
    ClientSettings,
    Closed,
    Credentials,
    Envelope,
    MessageEncoder,
    Ready,
    Recipient,
    ReplyError,
    ReplyParser,
    SendMessage,
    SMTPClientEngine,
    StartTLS,
    TransactionDone,
    TransactionResult,
)
from surat.proto.smtp.replies import Reply

# ------------------------------------------------------------------------------ replies


def parse_all(data: bytes, pieces: Sequence[bytes] | None = None) -> list[Reply]:
    parser = ReplyParser()
    out: list[Reply] = []
    for piece in pieces if pieces is not None else [data]:
        parser.feed(piece)
        while (reply := parser.next_reply()) is not None:
            out.append(reply)
    assert parser.buffered == 0 or parser.next_reply() is None
    return out


def every_split(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))] + [[data[i : i + 1] for i in range(len(data))]]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"250 OK\r\n", [Reply(250, None, "OK")]),
        (b"250\r\n", [Reply(250, None, "")]),
        (b"250 2.1.0 Sender OK\r\n", [Reply(250, "2.1.0", "Sender OK")]),
        (b"550 5.1.1\r\n", [Reply(550, "5.1.1", "")]),
        # RFC 2034: every line carries the code; it is split off each
        (b"550-5.7.1 Policy\r\n550 5.7.1 see web\r\n", [Reply(550, "5.7.1", ("Policy", "see web"))]),
        # a class that does not match the reply code is text, not an enhanced code
        (b"250 5.1.1 odd\r\n", [Reply(250, None, "5.1.1 odd")]),
        (b"250 2.01.000 padded\r\n", [Reply(250, "2.1.0", "padded")]),
        (b"220-a\r\n220-b\r\n220 c\r\n", [Reply(220, None, ("a", "b", "c"))]),
        (b"354 go\n250 bare LF ok\n", [Reply(354, None, "go"), Reply(250, None, "bare LF ok")]),
        (b"421 caf\xe9\r\n", [Reply(421, None, "caf\ufffd")]),
        (b"250-x\r\n250 y\r\n251 z\r\n", [Reply(250, None, ("x", "y")), Reply(251, None, "z")]),
    ],
)
def test_reply_parser(data: bytes, expected: list[Reply]) -> None:
    assert parse_all(data) == expected
    for pieces in every_split(data):
        assert parse_all(data, pieces) == expected


@pytest.mark.parametrize(
    "data",
    [b"2500 x\r\n", b"OK\r\n", b"150 x\r\n", b"250-a\r\n354 b\r\n", b"25 x\r\n", b"250_x\r\n"],
)
def test_reply_parser_rejects(data: bytes) -> None:
    with pytest.raises(ReplyError):
        parse_all(data)


def test_reply_parser_bounds() -> None:
    parser = ReplyParser(max_line=100, max_lines=3)
    parser.feed(b"250 " + b"x" * 200)  # no newline yet, already too long
    with pytest.raises(ReplyError):
        parser.next_reply()
    parser = ReplyParser(max_line=100, max_lines=3)
    parser.feed(b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n")
    with pytest.raises(ReplyError):
        parser.next_reply()


def test_reply_round_trips_through_server_formatting() -> None:
    for reply in (R.QUEUED, R.NO_SUCH_USER, R.HELP, R.START_DATA, Reply(250, None, ("mx", "PIPELINING"))):
        assert parse_all(reply.to_bytes()) == [reply]


# ------------------------------------------------------------------------------ message encoding


def encode(chunks: Sequence[bytes], stuff: bool = True) -> bytes:
    encoder = MessageEncoder(stuff)
    out = b"".join(encoder.encode(c) for c in chunks) + encoder.finish()
    assert encoder.octets == len(out)
    return out


@pytest.mark.parametrize(
    ("message", "stuffed"),
    [
        (b"", b""),
        (b"a\r\n", b"a\r\n"),
        (b"a", b"a\r\n"),  # final CRLF added
        (b".", b"..\r\n"),
        (b".\r\n", b"..\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n"),
        (b"a\r\n..b\r\n", b"a\r\n...b\r\n"),
        (b"\r\n.\r\n.\r\n", b"\r\n..\r\n..\r\n"),
        (b"a.b\r\n", b"a.b\r\n"),
        (b"a\n.b\n", b"a\r\n..b\r\n"),  # bare LF becomes CRLF, then the dot is stuffed
        (b"a\r.b\r", b"a\r\n..b\r\n"),  # bare CR too
        (b"a\n\r\n.", b"a\r\n\r\n..\r\n"),
        (b"x\r\r\n.", b"x\r\n\r\n..\r\n"),
    ],
)
def test_dot_stuffing(message: bytes, stuffed: bytes) -> None:
    assert encode([message]) == stuffed
    # the same at every chunk boundary: "." starting a chunk, CRLF split across chunks
    for i in range(len(message) + 1):
        assert encode([message[:i], message[i:]]) == stuffed
        for j in range(i, len(message) + 1):
            assert encode([message[:i], message[i:j], message[j:]]) == stuffed
    assert encode([message[k : k + 1] for k in range(len(message))]) == stuffed
    unstuffed = encode([message], stuff=False)
    assert unstuffed == re.sub(rb"(^|\r\n)\.\.", rb"\1.", stuffed)


def test_dot_stuffing_random_chunkings() -> None:
    rng = random.Random(5321)
    alphabet = [b".", b"\r", b"\n", b"a", b"\r\n", b"\r\n."]
    for _ in range(300):
        message = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        expected = encode([message])
        # independent reference: canonical line endings and final CRLF, then a dot per "." line
        canonical = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
        if canonical and not canonical.endswith(b"\r\n"):
            canonical += b"\r\n"
        lines = canonical.splitlines(keepends=True)
        reference = b"".join(b"." + line if line.startswith(b".") else line for line in lines)
        assert expected == reference, message
        cuts = sorted(rng.sample(range(len(message) + 1), min(4, len(message) + 1)))
        chunks = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
        assert encode(chunks) == expected


# ------------------------------------------------------------------------------ against the server engine


def accept(server: S.SMTPServerEngine, event: S.Event) -> Reply:
    match event:
        case S.Hello():
            return server.ehlo_reply(event)
        case S.MailFrom():
            return R.SENDER_OK
        case S.RcptTo():
            return R.NO_SUCH_USER if event.path.local.startswith("nobody") else R.RECIPIENT_OK
        case S.DataStart():
            return R.START_DATA
        case S.ChunkEnd():
            return event.problem or Reply(250, "2.0.0", f"{event.size} octets")
        case S.MessageEnd():
            return event.problem or R.QUEUED
        case S.StartTLS():
            return R.READY_FOR_TLS
        case S.AuthStart() | S.AuthResponse():
            return R.AUTH_OK
    raise AssertionError(f"unexpected {event!r}")


def converse(
    server_settings: S.ServerSettings,
    client_settings: ClientSettings,
    envelope: Envelope,
    chunks: Sequence[bytes],
    wire_piece: int = 0,
) -> tuple[list[bytes], TransactionResult, list[S.Event]]:
    """One session, both engines in memory; returns the messages the server received."""
    server = S.SMTPServerEngine(server_settings)
    server.send(server.greeting())
    client = SMTPClientEngine(client_settings)
    messages: list[bytes] = []
    current = bytearray()
    server_events: list[S.Event] = []
    results: list[TransactionResult] = []
    feed = list(chunks)

    def pump() -> bool:
        moved = False
        data = client.data_to_send()
        step = wire_piece or max(1, len(data))
        for i in range(0, len(data), step):  # the server reads the client's bytes in pieces
            server.receive_data(data[i : i + step])
            moved = True
            while (event := server.next_event()) is not S.NEED_DATA:
                server_events.append(event)
                if isinstance(event, S.MessageData):
                    current.extend(event.chunk)
                if isinstance(event, S.MessageEnd):
                    messages.append(bytes(current))
                    current.clear()
                if event.needs_reply:
                    server.respond(accept(server, event))
        if not data:
            while (event := server.next_event()) is not S.NEED_DATA:
                raise AssertionError(f"unexpected {event!r}")
        back = server.data_to_send()
        if back:
            client.receive_data(back)
            moved = True
        return moved

    for _ in range(10_000):
        event = client.next_event()
        if event is NEED_DATA:
            if not pump():
                raise AssertionError("deadlock: the client waits and the server has nothing to say")
            continue
        match event:
            case Ready():
                client.send_mail(envelope)
            case StartTLS():
                pump()
                server.tls_started()
                client.tls_started()
            case SendMessage():
                pump()
                if feed:
                    client.send_message_data(feed.pop(0))
                else:
                    client.end_message()
            case TransactionDone():
                results.append(event.result)
                client.quit()
            case Closed():
                pump()
                assert server.closed
                (result,) = results
                return messages, result, server_events
            case _:
                raise AssertionError(f"unexpected {event!r}")
    raise AssertionError("no end")


MX_SETTINGS = S.ServerSettings(hostname="mx.example.net", starttls=True)
CLIENT = ClientSettings(hostname="out.example.org")


def env(*rcpts: str, size: int = 100, **kwargs: object) -> Envelope:
    recipients = tuple(Recipient(Address(r.split("@")[0], r.split("@")[1])) for r in rcpts)
    return Envelope(Address("alice", "example.org"), recipients, size, **kwargs)  # type: ignore[arg-type]


def canonical(message: bytes) -> bytes:
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return text + b"\r\n" if text and not text.endswith(b"\r\n") else text


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_message_survives_transfer(chunking: bool, pipelining: bool) -> None:
    rng = random.Random(6152)
    alphabet = [b".", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"x", b"\n", b"\r", b"..", b"\xc3\xa9"]
    settings = replace(CLIENT, pipelining=pipelining, chunking=chunking, starttls=False)
    for round_ in range(60):
        message = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        cuts = sorted(rng.sample(range(len(message) + 1), min(3, len(message) + 1)))
        chunks = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
        messages, result, events = converse(
            MX_SETTINGS,
            settings,
            env("bob@example.net", "nobody@example.net"),
            chunks,
            wire_piece=1 + round_ % 7,
        )
        # What the server stores is the message, whole, whatever dots and line ends it holds.
        assert messages == [canonical(message)]
        assert [r.reply.code for r in result.recipients] == [250, 550]
        used_bdat = any(isinstance(e, S.BdatStart) for e in events)
        assert used_bdat == chunking


def test_starttls_and_auth_against_server_engine() -> None:
    server_settings = S.ServerSettings(
        hostname="smtp.provider.test", starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), auth_required=True
    )
    client_settings = replace(CLIENT, credentials=Credentials("alice", "pw"), require_tls=True)
    messages, result, events = converse(
        server_settings, client_settings, env("bob@example.net"), [b"Subject: x\r\n\r\nhello\r\n"]
    )
    assert messages == [b"Subject: x\r\n\r\nhello\r\n"]
    assert result.tls and result.recipients[0].delivered
    assert S.StartTLS() in events
    assert S.AuthStart("PLAIN", b"\0alice\0pw") in events
    hellos = [e for e in events if isinstance(e, S.Hello)]
    assert len(hellos) == 2  # EHLO again after TLS


def test_size_and_dsn_parameters_reach_the_server() -> None:
    envelope = Envelope(
        None,
        (Recipient(Address("bob", "example.net"), ("FAILURE",), "rfc822;bob@example.net"),),
        5,
        eight_bit=True,
        ret="FULL",
        envid="ID1",
    )
    _, result, events = converse(MX_SETTINGS, replace(CLIENT, starttls=False), envelope, [b"\xc3\xa9\r\n"])
    mail = next(e for e in events if isinstance(e, S.MailFrom))
    rcpt = next(e for e in events if isinstance(e, S.RcptTo))
    assert mail.path is None
    assert (mail.params.size, mail.params.body, mail.params.ret, mail.params.envid) == (
        5,
        "8BITMIME",
        "FULL",
        "ID1",
    )
    assert rcpt.params.notify == ("FAILURE",) and rcpt.params.orcpt == "rfc822;bob@example.net"
    assert result.dsn_passed


def test_size_over_server_limit_is_not_sent() -> None:
    small = replace(MX_SETTINGS, max_message_size=1000)
    server = S.SMTPServerEngine(small)
    server.send(server.greeting())
    client = SMTPClientEngine(replace(CLIENT, starttls=False))
    client.receive_data(server.data_to_send())
    assert client.next_event() is NEED_DATA
    server.receive_data(client.data_to_send())
    event = server.next_event()
    assert isinstance(event, S.Hello)
    server.respond(server.ehlo_reply(event))
    client.receive_data(server.data_to_send())
    ready = client.next_event()
    assert isinstance(ready, Ready) and ready.extensions.size == 1000
    client.send_mail(env("bob@example.net", size=1001))
    done = client.next_event()
    assert isinstance(done, TransactionDone)
    assert done.result.recipients[0].reply.enhanced == "5.3.4"
    assert client.data_to_send() == b""
