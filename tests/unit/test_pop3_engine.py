"""The POP3 server engine, fed bytes without sockets; transcripts are also run split at every offset."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from surat.proto.pop3 import (
    NEED_DATA,
    Auth,
    AuthCancelled,
    AuthResponse,
    Capa,
    Close,
    Dele,
    EngineUsageError,
    Event,
    List,
    Noop,
    Pass,
    POP3ServerEngine,
    POP3Settings,
    Quit,
    RespCode,
    Retr,
    Rset,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    retr_octets,
)

TLS = POP3Settings(implicit_tls=True)
STLS_PORT = POP3Settings(stls_available=True)
PLAIN_PORT = POP3Settings()

MESSAGES = [
    b"Subject: one\r\n\r\nfirst\r\n",
    b"Subject: two\r\n\r\n.dot line\r\n.\r\nlast",
    b"Subject: three\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n",
]


@dataclass
class FakeShell:
    """A minimal maildrop shell: the replies a real shell gives, deterministically."""

    engine: POP3ServerEngine
    messages: list[bytes] = field(default_factory=lambda: list(MESSAGES))
    password: str = "secret"
    chunk: int = 7
    deleted: set[int] = field(default_factory=set)
    expunged: list[int] = field(default_factory=list)
    start_tls: bool = True

    def size(self, n: int) -> int:
        m = self.messages[n - 1]
        return retr_octets(len(m), m[-2:])

    def exists(self, n: int) -> bool:
        return 1 <= n <= len(self.messages) and n not in self.deleted

    def handle(self, event: Event) -> None:
        e = self.engine
        match event:
            case User():
                e.ok()
            case Pass(password=password):
                if password == self.password:
                    e.ok("maildrop ready")
                else:
                    e.login_failed()
            case Auth(mechanism="PLAIN", initial_response=None):
                e.auth_challenge(b"")
            case Auth(initial_response=data) | AuthResponse(data=data):
                assert data is not None
                if data == b"\0bob\0" + self.password.encode():
                    e.ok("authenticated")
                else:
                    e.login_failed()
            case AuthCancelled(reason=reason):
                e.err(reason)
            case Stls():
                e.ok("begin TLS negotiation")
                if self.start_tls:
                    e.tls_started()
            case Capa():
                e.capabilities()
            case Utf8():
                e.ok("UTF-8 mode")
            case Quit():
                if e.state is State.UPDATE:
                    self.expunged = sorted(self.deleted)
                e.ok("bye")
            case Stat():
                live = [n for n in range(1, len(self.messages) + 1) if self.exists(n)]
                e.stat(len(live), sum(self.size(n) for n in live))
            case List(msg=None):
                e.scan_listing((n, self.size(n)) for n in range(1, len(self.messages) + 1) if self.exists(n))
            case Uidl(msg=None):
                e.unique_id_listing((n, f"7.{n}") for n in range(1, len(self.messages) + 1) if self.exists(n))
            case List(msg=int(n)) | Uidl(msg=int(n)) | Retr(msg=n) | Dele(msg=n) | Top(msg=n) if (
                not self.exists(n)
            ):
                e.err("no such message")
            case List(msg=int(n)):
                e.scan(n, self.size(n))
            case Uidl(msg=int(n)):
                e.unique_id(n, f"7.{n}")
            case Retr(msg=n) | Top(msg=n):
                e.message_start(f"{self.size(n)} octets")
                data = self.messages[n - 1]
                for i in range(0, len(data), self.chunk):
                    if not e.message_data(data[i : i + self.chunk]):
                        break
                e.message_end()
            case Dele(msg=n):
                self.deleted.add(n)
                e.ok(f"message {n} deleted")
            case Rset():
                self.deleted.clear()
                e.ok()
            case Noop():
                e.ok()
            case _:
                raise AssertionError(f"unexpected {event!r}")


def run(
    chunks: Iterable[bytes], settings: POP3Settings = TLS, **shell_args: object
) -> tuple[list[Event], bytes, FakeShell]:
    engine = POP3ServerEngine(settings)
    shell = FakeShell(engine, **shell_args)  # type: ignore[arg-type]
    engine.greet()
    out = [engine.data_to_send()]
    events: list[Event] = []
    for chunk in chunks:
        engine.receive_data(chunk)
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, Close):
                break
            shell.handle(event)
        out.append(engine.data_to_send())
        if events and isinstance(events[-1], Close):
            break
    return events, b"".join(out), shell


def run_every_split(data: bytes, settings: POP3Settings = TLS) -> tuple[list[Event], bytes]:
    """Run the transcript whole, split in two at every offset, and one octet at a time; all
    runs must give the same events and the same output bytes."""
    events, out, _ = run([data], settings)
    for cut in range(len(data) + 1):
        assert run([data[:cut], data[cut:]], settings)[:2] == (events, out), cut
    assert run([data[i : i + 1] for i in range(len(data))], settings)[:2] == (events, out)
    return events, out


def one(engine: POP3ServerEngine, line: bytes) -> Event:
    engine.receive_data(line)
    event = engine.next_event()
    assert event is not NEED_DATA
    return event


def replies(out: bytes) -> list[bytes]:
    return out.split(b"\r\n")


# ------------------------------------------------------------------------------------ transcripts

SESSION = (
    b"CAPA\r\nUSER bob\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\n"
    b"RETR 2\r\nTOP 3 1\r\nDELE 1\r\nLIST 1\r\nRETR 1\r\nNOOP\r\nRSET\r\nDELE 3\r\nQUIT\r\n"
)
SESSION_OUT = (
    b"+OK POP3 server ready\r\n"
    b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    b"EXPIRE NEVER\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256\r\nUTF8 USER\r\nIMPLEMENTATION Surat\r\n.\r\n"
    b"+OK\r\n"
    b"+OK maildrop ready\r\n"
    b"+OK 3 95\r\n"
    b"+OK scan listing follows\r\n1 23\r\n2 36\r\n3 36\r\n.\r\n"
    b"+OK 2 36\r\n"
    b"+OK unique-id listing follows\r\n1 7.1\r\n2 7.2\r\n3 7.3\r\n.\r\n"
    b"+OK 3 7.3\r\n"
    b"+OK 36 octets\r\nSubject: two\r\n\r\n..dot line\r\n..\r\nlast\r\n.\r\n"
    b"+OK 36 octets\r\nSubject: three\r\nX: y\r\n\r\nl1\r\n.\r\n"
    b"+OK message 1 deleted\r\n"
    b"-ERR no such message\r\n"
    b"-ERR no such message\r\n"
    b"+OK\r\n"
    b"+OK\r\n"
    b"+OK message 3 deleted\r\n"
    b"+OK bye\r\n"
)


def test_full_session_byte_exact_at_every_split() -> None:
    events, out = run_every_split(SESSION)
    assert out == SESSION_OUT
    assert events == [
        Capa(),
        User("bob"),
        Pass("bob", "secret"),
        Stat(),
        List(None),
        List(2),
        Uidl(None),
        Uidl(3),
        Retr(2),
        Top(3, 1),
        Dele(1),
        List(1),
        Retr(1),
        Noop(),
        Rset(),
        Dele(3),
        Quit(),
        Close("quit"),
    ]


def test_quit_in_transaction_goes_through_update_and_expunges_marked() -> None:
    _, _, shell = run([b"USER bob\r\nPASS secret\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n"])
    assert shell.expunged == [1, 2]


def test_sizes_in_list_equal_octets_retr_sends() -> None:
    _, out, _ = run([b"USER bob\r\nPASS secret\r\nLIST 2\r\nRETR 2\r\n"])
    body = out.split(b"+OK 36 octets\r\n")[-1]
    lines = body.split(b"\r\n")[:-2]  # drop the terminator line and the empty tail
    unstuffed = b"".join((ln[1:] if ln.startswith(b"..") else ln) + b"\r\n" for ln in lines)
    assert len(unstuffed) == 36


def test_lf_only_lines_are_accepted_at_every_split() -> None:
    events, out = run_every_split(b"user bob\npass secret\nstat\nquit\n")
    assert events == [User("bob"), Pass("bob", "secret"), Stat(), Quit(), Close("quit")]
    assert out.endswith(b"+OK 3 95\r\n+OK bye\r\n")


def test_auth_plain_exchange_at_every_split() -> None:
    token = base64.b64encode(b"\0bob\0secret")
    data = b"AUTH PLAIN\r\n" + token + b"\r\nSTAT\r\n"
    events, out = run_every_split(data)
    assert events == [Auth("PLAIN", None), AuthResponse(b"\0bob\0secret"), Stat()]
    assert out == b"+OK POP3 server ready\r\n+ \r\n+OK authenticated\r\n+OK 3 95\r\n"


# ---------------------------------------------------------------------- every command, every state

ALL_COMMANDS = [
    b"USER bob",
    b"PASS secret",
    b"AUTH PLAIN",
    b"STLS",
    b"UTF8",
    b"CAPA",
    b"QUIT",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"RETR 1",
    b"DELE 1",
    b"NOOP",
    b"RSET",
    b"TOP 1 0",
    b"UIDL",
    b"UIDL 1",
]
EXPECTED_EVENT = {
    b"USER bob": User("bob"),
    b"PASS secret": Pass("bob", "secret"),
    b"AUTH PLAIN": Auth("PLAIN", None),
    b"STLS": Stls(),
    b"UTF8": Utf8(),
    b"CAPA": Capa(),
    b"QUIT": Quit(),
    b"STAT": Stat(),
    b"LIST": List(None),
    b"LIST 1": List(1),
    b"RETR 1": Retr(1),
    b"DELE 1": Dele(1),
    b"NOOP": Noop(),
    b"RSET": Rset(),
    b"TOP 1 0": Top(1, 0),
    b"UIDL": Uidl(None),
    b"UIDL 1": Uidl(1),
}
AUTHZ_ONLY = {b"USER bob", b"PASS secret", b"AUTH PLAIN", b"STLS", b"UTF8"}
BOTH = {b"CAPA", b"QUIT"}


def engine_in(state: str) -> POP3ServerEngine:
    if state == "plain-authz":
        engine = POP3ServerEngine(STLS_PORT)
    else:
        engine = POP3ServerEngine(POP3Settings(stls_available=True))
        engine.receive_data(b"STLS\r\n")
        assert engine.next_event() == Stls()
        engine.ok()
        engine.tls_started()
    if state in ("after-user", "transaction"):
        assert one(engine, b"USER bob\r\n") == User("bob")
        engine.ok()
    if state == "transaction":
        assert one(engine, b"PASS secret\r\n") == Pass("bob", "secret")
        engine.ok()
        assert engine.state is State.TRANSACTION
    engine.data_to_send()
    return engine


@pytest.mark.parametrize("command", ALL_COMMANDS)
@pytest.mark.parametrize("state", ["plain-authz", "tls-authz", "after-user", "transaction"])
def test_every_command_in_every_state(state: str, command: bytes) -> None:
    engine = engine_in(state)
    engine.receive_data(command + b"\r\n")
    event = engine.next_event()
    out = engine.data_to_send()
    if state == "transaction":
        allowed = command not in AUTHZ_ONLY
    else:
        allowed = command in AUTHZ_ONLY or command in BOTH
    if allowed and state == "plain-authz" and command in {b"USER bob", b"PASS secret", b"AUTH PLAIN"}:
        assert event is NEED_DATA
        assert out == b"-ERR [AUTH] authentication requires TLS; use STLS first\r\n"
    elif allowed and command == b"STLS" and state != "plain-authz":
        assert event is NEED_DATA
        assert out == b"-ERR TLS is already active\r\n"
    elif allowed and command == b"PASS secret" and state != "after-user":
        assert event is NEED_DATA
        assert out == b"-ERR USER first\r\n"
    elif allowed:
        assert event == EXPECTED_EVENT[command]
        assert out == b""
        assert engine.awaiting_reply == event
    else:
        assert event is NEED_DATA
        assert out == b"-ERR command not valid in this state\r\n"
        assert engine.errors == 1


def test_update_and_closed_states() -> None:
    engine = engine_in("transaction")
    assert one(engine, b"QUIT\r\nNOOP\r\n") == Quit()
    assert engine.state is State.UPDATE
    engine.err("some deleted messages not removed", RespCode.SYS_TEMP)
    assert engine.closed
    assert engine.next_event() == Close("quit")
    assert engine.next_event() == Close("quit")  # stays closed
    engine.receive_data(b"STAT\r\n")  # ignored
    assert engine.buffered_octets == 0
    assert engine.data_to_send() == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"


def test_quit_in_authorization_closes_without_update() -> None:
    engine = POP3ServerEngine(TLS)
    assert one(engine, b"QUIT\r\n") == Quit()
    assert engine.state is State.AUTHORIZATION
    engine.ok("bye")
    assert engine.next_event() == Close("quit")


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"retr 1", Retr(1)),
        (b"ReTr 2", Retr(2)),
        (b"RETR 007", Retr(7)),
        (b"LIST  3 ", List(3)),
        (b"TOP 1 0", Top(1, 0)),
        (b"top 9999999999 12", Top(9999999999, 12)),
        (b"NOOP ", Noop()),
        (b"uidl", Uidl(None)),
    ],
)
def test_argument_parsing(line: bytes, event: Event) -> None:
    engine = engine_in("transaction")
    assert one(engine, line + b"\r\n") == event


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RETR", b"-ERR a message number is required"),
        (b"RETR 0", b"-ERR invalid message number"),
        (b"RETR -1", b"-ERR invalid message number"),
        (b"RETR +1", b"-ERR invalid message number"),
        (b"RETR abc", b"-ERR invalid message number"),
        (b"RETR 1 2", b"-ERR a message number is required"),
        (b"RETR \xd9\xa3", b"-ERR invalid message number"),  # ARABIC-INDIC DIGIT THREE
        (b"RETR 12345678901", b"-ERR invalid message number"),
        (b"DELE x", b"-ERR invalid message number"),
        (b"LIST 1 2", b"-ERR too many arguments"),
        (b"UIDL 0", b"-ERR invalid message number"),
        (b"TOP 1", b"-ERR syntax: TOP msg n"),
        (b"TOP 1 -1", b"-ERR invalid line count"),
        (b"TOP 1 x", b"-ERR invalid line count"),
        (b"TOP 0 1", b"-ERR invalid message number"),
        (b"STAT x", b"-ERR this command takes no arguments"),
        (b"NOOP x", b"-ERR this command takes no arguments"),
        (b"XYZZY", b"-ERR unknown command"),
        (b"APOP bob 0123456789abcdef", b"-ERR unknown command"),
        (b"", b"-ERR unknown command"),
        (b"\xff\xfe", b"-ERR invalid UTF-8 in command"),
        (b"R\xc3\xa9TR 1", b"-ERR unknown command"),
    ],
)
def test_syntax_errors(line: bytes, reply: bytes) -> None:
    engine = engine_in("transaction")
    engine.receive_data(line + b"\r\nNOOP\r\n")
    assert engine.next_event() == Noop()  # the bad line was answered, the next one parsed
    assert engine.data_to_send() == reply + b"\r\n"
    assert engine.errors == 1


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"USER", b"-ERR a user name is required"),
        (b"AUTH", b"-ERR syntax: AUTH mechanism [initial-response]"),
        (b"AUTH PLAIN a b", b"-ERR syntax: AUTH mechanism [initial-response]"),
        (b"AUTH CRAM-MD5", b"-ERR unsupported authentication mechanism"),
        (b"AUTH PLAIN !!!", b"-ERR invalid base64"),
        (b"STLS now", b"-ERR this command takes no arguments"),
        (b"UTF8 x", b"-ERR this command takes no arguments"),
    ],
)
def test_authorization_syntax_errors(line: bytes, reply: bytes) -> None:
    engine = engine_in("tls-authz")
    engine.receive_data(line + b"\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == reply + b"\r\n"


# ---------------------------------------------------------------------------------- USER / PASS


def test_pass_keeps_spaces_and_needs_user_immediately_before() -> None:
    engine = engine_in("after-user")
    assert one(engine, b"PASS  two words \r\n") == Pass("bob", " two words ")
    engine.login_failed()
    assert engine.data_to_send() == b"-ERR [AUTH] authentication failed\r\n"
    # RFC 1939 §7: after a failed PASS a new USER is needed.
    engine.receive_data(b"PASS secret\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"-ERR USER first\r\n"
    # A command between USER and PASS breaks the pair too.
    assert one(engine, b"USER bob\r\n") == User("bob")
    engine.ok()
    assert one(engine, b"CAPA\r\n") == Capa()
    engine.capabilities()
    engine.receive_data(b"PASS secret\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send().endswith(b"-ERR USER first\r\n")


def test_rejected_user_does_not_allow_pass() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"USER nobody\r\n") == User("nobody")
    engine.err("no", RespCode.AUTH)
    engine.receive_data(b"PASS x\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"-ERR [AUTH] no\r\n-ERR USER first\r\n"


def test_in_use_keeps_authorization_state() -> None:
    engine = engine_in("after-user")
    assert one(engine, b"PASS secret\r\n") == Pass("bob", "secret")
    engine.err("maildrop already locked", RespCode.IN_USE)
    assert engine.state is State.AUTHORIZATION
    assert engine.data_to_send() == b"-ERR [IN-USE] maildrop already locked\r\n"


def test_empty_pass_is_refused() -> None:
    engine = engine_in("after-user")
    engine.receive_data(b"PASS\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"-ERR a password is required\r\n"


def test_secrets_not_in_repr() -> None:
    assert "secret" not in repr(Pass("bob", "secret"))
    assert "secret" not in repr(Auth("PLAIN", b"\0bob\0secret"))
    assert "secret" not in repr(AuthResponse(b"secret"))


def test_insecure_auth_allowed_by_setting() -> None:
    engine = POP3ServerEngine(POP3Settings(allow_insecure_auth=True))
    assert one(engine, b"USER bob\r\n") == User("bob")
    engine.ok()
    assert "USER" in engine.capability_list()


# ------------------------------------------------------------------------------------------- AUTH


def test_auth_initial_response_and_empty_initial_response() -> None:
    engine = engine_in("tls-authz")
    token = base64.b64encode(b"\0bob\0secret").decode()
    assert one(engine, f"AUTH plain {token}\r\n".encode()) == Auth("PLAIN", b"\0bob\0secret")
    engine.ok()
    assert engine.state is State.TRANSACTION
    engine = engine_in("tls-authz")
    assert one(engine, b"AUTH PLAIN =\r\n") == Auth("PLAIN", b"")
    engine.login_failed()
    assert engine.data_to_send() == b"-ERR [AUTH] authentication failed\r\n"


def test_auth_multi_step_and_cancel() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"AUTH SCRAM-SHA-256\r\n") == Auth("SCRAM-SHA-256", None)
    engine.auth_challenge(b"")
    assert one(engine, b"Y2xpZW50\r\n") == AuthResponse(b"client")
    engine.auth_challenge(b"server-first")
    assert engine.data_to_send() == b"+ \r\n+ " + base64.b64encode(b"server-first") + b"\r\n"
    assert one(engine, b"*\r\n") == AuthCancelled("authentication cancelled")
    engine.err("authentication cancelled")
    assert engine.state is State.AUTHORIZATION
    assert engine.errors == 0
    # The next line is a command again.
    assert one(engine, b"CAPA\r\n") == Capa()


def test_auth_empty_response_line() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"AUTH PLAIN\r\n") == Auth("PLAIN", None)
    engine.auth_challenge(b"")
    assert one(engine, b"\r\n") == AuthResponse(b"")
    engine.auth_challenge(b"")
    assert one(engine, b"=\r\n") == AuthResponse(b"")


def test_auth_bad_base64_response() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"AUTH PLAIN\r\n") == Auth("PLAIN", None)
    engine.auth_challenge(b"")
    assert one(engine, b"not base64!\r\n") == AuthCancelled("invalid base64 in authentication response")
    engine.err("invalid base64 in authentication response")
    assert engine.errors == 1


def test_auth_response_lines_may_be_long_but_bounded() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"AUTH PLAIN\r\n") == Auth("PLAIN", None)
    engine.auth_challenge(b"")
    long_ok = base64.b64encode(b"x" * 9000)  # 12000 octets
    assert one(engine, long_ok + b"\r\n") == AuthResponse(b"x" * 9000)
    engine.auth_challenge(b"")
    engine.receive_data(b"A" * 20000)
    assert engine.next_event() == AuthCancelled("authentication response too long")
    assert engine.buffered_octets == 0
    engine.err("authentication response too long")
    engine.receive_data(b"AAAA\r\nCAPA\r\n")  # the rest of the long line is dropped
    assert engine.next_event() == Capa()


def test_auth_command_with_long_initial_response_is_accepted() -> None:
    engine = engine_in("tls-authz")
    token = base64.b64encode(b"\0bob\0" + b"p" * 400)
    assert len(token) > 255
    assert one(engine, b"AUTH PLAIN " + token + b"\r\n") == Auth("PLAIN", b"\0bob\0" + b"p" * 400)


def test_auth_success_after_challenge_enters_transaction() -> None:
    events, out, _ = run([b"AUTH PLAIN\r\n", base64.b64encode(b"\0bob\0secret") + b"\r\nSTAT\r\n"])
    assert events[-1] == Stat()
    assert out.endswith(b"+OK 3 95\r\n")


# ---------------------------------------------------------------------------------- STLS and CAPA


def test_capa_before_and_after_stls() -> None:
    engine = POP3ServerEngine(POP3Settings(stls_available=True, login_delay=900))
    before = engine.capability_list()
    assert "STLS" in before
    assert "USER" not in before
    assert not any(c.startswith("SASL") for c in before)
    assert "LOGIN-DELAY 900" in before
    assert one(engine, b"STLS\r\n") == Stls()
    engine.ok("begin TLS")
    engine.tls_started()
    after = engine.capability_list()
    assert "STLS" not in after
    assert "USER" in after
    assert "SASL PLAIN SCRAM-SHA-256" in after
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER", "UTF8 USER"):
        assert cap in before
        assert cap in after


def test_capa_same_in_both_states() -> None:
    # RFC 2449 §5: capabilities of the AUTHORIZATION state are announced in both states.
    authz = engine_in("tls-authz").capability_list()
    assert engine_in("transaction").capability_list() == authz


def test_capa_optional_entries() -> None:
    engine = POP3ServerEngine(
        POP3Settings(implicit_tls=True, implementation=None, utf8=False, sasl_mechanisms=())
    )
    caps = engine.capability_list()
    assert "USER" in caps
    assert not any(c.startswith(("SASL", "IMPLEMENTATION", "UTF8", "STLS", "LOGIN-DELAY")) for c in caps)
    engine.receive_data(b"UTF8\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"-ERR unknown command\r\n"


def test_stls_discards_pipelined_plaintext() -> None:
    # RFC 2595 §4 / CVE-2011-0411: commands sent after STLS before the handshake are dropped.
    engine = POP3ServerEngine(STLS_PORT)
    engine.receive_data(b"STLS\r\nUSER evil\r\nPASS injected\r\n")
    assert engine.next_event() == Stls()
    engine.ok("begin TLS negotiation")
    assert engine.next_event() is NEED_DATA  # nothing is parsed until TLS is up
    engine.receive_data(b"CAPA\r\n")  # still plaintext, before the handshake finished
    assert engine.next_event() is NEED_DATA
    engine.tls_started()
    assert engine.buffered_octets == 0
    assert engine.next_event() is NEED_DATA
    engine.receive_data(b"USER bob\r\n")
    assert engine.next_event() == User("bob")
    assert engine.data_to_send() == b"+OK begin TLS negotiation\r\n"


def test_stls_forgets_user_given_before() -> None:
    engine = POP3ServerEngine(POP3Settings(stls_available=True, allow_insecure_auth=True))
    assert one(engine, b"USER bob\r\n") == User("bob")
    engine.ok()
    assert one(engine, b"STLS\r\n") == Stls()
    engine.ok()
    engine.tls_started()
    engine.receive_data(b"PASS secret\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send().endswith(b"-ERR USER first\r\n")


def test_refused_stls_keeps_session_going() -> None:
    engine = POP3ServerEngine(STLS_PORT)
    assert one(engine, b"STLS\r\n") == Stls()
    engine.err("TLS not available now", RespCode.SYS_TEMP)
    assert one(engine, b"CAPA\r\n") == Capa()


@pytest.mark.parametrize(
    ("settings", "reply"),
    [
        (PLAIN_PORT, b"-ERR STLS is not available\r\n"),
        (TLS, b"-ERR TLS is already active\r\n"),
    ],
)
def test_stls_unavailable(settings: POP3Settings, reply: bytes) -> None:
    engine = POP3ServerEngine(settings)
    engine.receive_data(b"STLS\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == reply


def test_login_before_tls_on_plain_port_without_stls() -> None:
    engine = POP3ServerEngine(PLAIN_PORT)
    engine.receive_data(b"USER bob\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"-ERR [AUTH] authentication requires TLS\r\n"


def test_tls_started_without_stls_is_a_usage_error() -> None:
    with pytest.raises(EngineUsageError):
        POP3ServerEngine(STLS_PORT).tls_started()


# ------------------------------------------------------------------------------------------- UTF8


def test_utf8_mode() -> None:
    engine = engine_in("tls-authz")
    assert one(engine, b"USER bob\r\n") == User("bob")
    engine.err("caf\u00e9")
    assert engine.data_to_send() == b"-ERR caf?\r\n"  # RFC 6856 §2.1: ASCII only before UTF8
    assert one(engine, b"UTF8\r\n") == Utf8()
    engine.ok()
    assert engine.utf8_mode
    assert one(engine, "USER j\u00f6rg\r\n".encode()) == User("j\u00f6rg")
    engine.err("caf\u00e9")
    assert engine.data_to_send() == "+OK\r\n-ERR caf\u00e9\r\n".encode()


def test_stls_after_utf8_is_refused() -> None:
    engine = POP3ServerEngine(STLS_PORT)
    assert one(engine, b"UTF8\r\n") == Utf8()
    engine.ok()
    engine.receive_data(b"STLS\r\n")
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send() == b"+OK\r\n-ERR STLS is not allowed after UTF8\r\n"


# ---------------------------------------------------------------------------- limits and budget


def test_line_of_255_octets_accepted_256_refused() -> None:
    engine = engine_in("tls-authz")
    name = "a" * (255 - len("USER \r\n"))
    assert one(engine, f"USER {name}\r\n".encode()) == User(name)
    engine.ok()
    engine.data_to_send()
    engine.receive_data(f"USER {name}b\r\nCAPA\r\n".encode())
    assert engine.next_event() == Capa()
    assert engine.data_to_send() == b"-ERR line too long\r\n"


def test_long_line_in_pieces_keeps_buffer_bounded() -> None:
    engine = engine_in("transaction")
    engine.receive_data(b"NOOP ")
    assert engine.next_event() is NEED_DATA
    for _ in range(100):
        engine.receive_data(b"x" * 1000)
        assert engine.next_event() is NEED_DATA
        assert engine.buffered_octets <= 255
    assert engine.data_to_send() == b"-ERR line too long\r\n"  # answered once
    engine.receive_data(b"xxx\r\nSTAT\r\n")
    assert engine.next_event() == Stat()
    assert engine.errors == 1


def test_long_line_at_every_split() -> None:
    data = b"USER bob\r\nPASS secret\r\n" + b"X" * 600 + b"\r\nSTAT\r\nQUIT\r\n"
    events, out = run_every_split(data)
    assert events == [User("bob"), Pass("bob", "secret"), Stat(), Quit(), Close("quit")]
    assert b"-ERR line too long\r\n+OK 3 95\r\n" in out


def test_error_budget_closes_the_connection() -> None:
    engine = POP3ServerEngine(POP3Settings(implicit_tls=True, max_errors=3))
    engine.receive_data(b"BAD1\r\nBAD2\r\nBAD3\r\nCAPA\r\n")
    assert engine.next_event() == Close("too many errors")
    assert engine.data_to_send() == b"-ERR unknown command\r\n" * 3
    assert engine.state is State.CLOSED


def test_failed_logins_spend_the_budget() -> None:
    data = b"USER bob\r\nPASS wrong\r\n" * 10 + b"USER bob\r\nPASS secret\r\n"
    events, out = run_every_split(data)
    assert events[-1] == Close("too many errors")
    assert out.count(b"-ERR [AUTH] authentication failed\r\n") == 10
    assert b"maildrop ready" not in out


def test_default_budget_is_ten() -> None:
    events, out, _ = run([b"NOPE\r\n" * 12])
    assert events == [Close("too many errors")]
    assert out.count(b"-ERR") == 10


# ---------------------------------------------------------------------- replies and usage errors


def test_reply_text_cannot_split_lines_and_is_bounded() -> None:
    engine = engine_in("transaction")
    assert one(engine, b"NOOP\r\n") == Noop()
    engine.ok("a\r\n+OK injected")
    assert engine.data_to_send() == b"+OK a  +OK injected\r\n"
    assert one(engine, b"NOOP\r\n") == Noop()
    engine.err("x" * 1000)
    line = engine.data_to_send()
    assert len(line) == 512
    assert line.endswith(b"\r\n")


def test_greeting_has_no_apop_timestamp() -> None:
    engine = POP3ServerEngine()
    engine.greet("ready <1896.697170952@dbc.mtview.ca.us>")
    assert b"<" not in engine.data_to_send()


def test_usage_errors() -> None:
    engine = engine_in("transaction")
    with pytest.raises(EngineUsageError):
        engine.ok()  # nothing to answer
    assert one(engine, b"RETR 1\r\n") == Retr(1)
    with pytest.raises(EngineUsageError):
        engine.next_event()  # RETR not answered
    with pytest.raises(EngineUsageError):
        engine.ok()  # RETR needs message_start
    with pytest.raises(EngineUsageError):
        engine.message_data(b"x")
    with pytest.raises(EngineUsageError):
        engine.stat(1, 1)
    engine.message_start()
    with pytest.raises(EngineUsageError):
        engine.err("too late")  # after +OK a failure can only close
    engine.message_end()
    with pytest.raises(EngineUsageError):
        engine.message_end()
    assert one(engine, b"LIST\r\n") == List(None)
    with pytest.raises(EngineUsageError):
        engine.scan(1, 10)  # LIST without argument needs the listing
    with pytest.raises(EngineUsageError):
        engine.ok()
    engine.scan_listing([])
    assert one(engine, b"UIDL 1\r\n") == Uidl(1)
    with pytest.raises(ValueError):
        engine.unique_id(1, "has space")
    with pytest.raises(ValueError):
        engine.unique_id(1, "x" * 71)
    engine.unique_id(1, "~" * 70)
    assert engine.data_to_send().endswith(b"+OK 1 " + b"~" * 70 + b"\r\n")


def test_shutdown_answers_pending_and_closes() -> None:
    engine = engine_in("transaction")
    assert one(engine, b"STAT\r\n") == Stat()
    engine.shutdown("server shutting down", RespCode.SYS_TEMP)
    assert engine.next_event() == Close("server shutting down")
    assert engine.data_to_send() == b"-ERR [SYS/TEMP] server shutting down\r\n"


def test_top_through_engine_stops_early() -> None:
    engine = engine_in("transaction")
    assert one(engine, b"TOP 1 0\r\n") == Top(1, 0)
    engine.message_start()
    assert engine.message_data(b"A: b\r\n\r\nbody\r\n") is False
    engine.message_end()
    assert engine.data_to_send() == b"+OK\r\nA: b\r\n\r\n.\r\n"


def test_empty_listings() -> None:
    engine = engine_in("transaction")
    assert one(engine, b"UIDL\r\n") == Uidl(None)
    engine.unique_id_listing([])
    assert engine.data_to_send() == b"+OK unique-id listing follows\r\n.\r\n"


def test_replies_helper() -> None:
    assert replies(b"+OK\r\n-ERR x\r\n") == [b"+OK", b"-ERR x", b""]


def test_junk_commands_past_the_limit_spend_the_error_budget() -> None:
    engine = engine_in("transaction")
    engine.settings = POP3Settings(stls_available=True, max_junk_commands=2, max_errors=2)
    engine.receive_data(b"NOOP\r\nRSET\r\nNOOP\r\nRSET\r\nSTAT\r\n")
    for expected in (Noop(), Rset(), Noop()):  # the third spends one error and still runs
        assert engine.next_event() == expected
        engine.ok()
    assert engine.next_event() == Close("too many errors")  # the fourth spends the last one
    assert engine.state is State.CLOSED


def test_junk_limit_leaves_other_commands_alone() -> None:
    engine = engine_in("transaction")
    engine.settings = POP3Settings(stls_available=True, max_junk_commands=1, max_errors=2)
    engine.receive_data(b"STAT\r\n" * 5)
    for _ in range(5):
        assert engine.next_event() == Stat()
        engine.stat(0, 0)
    assert engine.state is State.TRANSACTION
