"""The POP3 server state machine, sans-IO (RFC 1939, 2449, 2595, 3206, 5034, 6856).

The shell feeds received bytes with `receive_data`, takes commands from `next_event` and answers
each one with exactly one reply method (`ok`, `err`, `login_failed`, `stat`, `scan_listing`, ...)
before asking for the next: POP3 PIPELINING (RFC 2449 §6.6) means commands are processed one at a
time, in order, so the reply to a command can change how the next one is parsed (PASS, AUTH,
STLS). `data_to_send` returns the bytes to write.

The engine answers on its own everything that depends only on the protocol: unknown commands,
commands in the wrong state, bad arguments, over-long lines, STLS when it cannot be done,
authentication before TLS, PASS without USER. Those replies, and failed logins the shell reports
through `login_failed`, spend an error budget; when it is gone the engine says so and ends the
session with a `Close` event.

Message numbers are checked for syntax (a positive decimal) only: the shell owns the maildrop
and answers "no such message" itself.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from surat.proto.pop3.events import (
    NEED_DATA,
    Auth,
    AuthCancelled,
    AuthResponse,
    Capa,
    Close,
    Command,
    Dele,
    Event,
    List,
    NeedData,
    Noop,
    Pass,
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
)
from surat.proto.pop3.multiline import CRLF, TERMINATOR, MessageEncoder, stuff_line

# RFC 2449 §4: a command line is at most 255 octets including the CRLF.
MAX_COMMAND_LINE = 255
# RFC 2449 §4: the first line of a response is at most 512 octets including the CRLF.
MAX_RESPONSE_LINE = 512
# SASL responses (RFC 5034 §4) are base64 and can be much longer than a command (SCRAM with
# channel binding, OAuth tokens); 12288 octets is what Dovecot and others accept.
MAX_AUTH_LINE = 12288
# Message numbers beyond this many digits cannot name a message; refusing them keeps int()
# conversion cheap.
_MAX_MSG_DIGITS = 10


class EngineUsageError(Exception):
    """The shell used the engine out of order (a bug in the caller, not in the client)."""


@dataclass(frozen=True, slots=True)
class POP3Settings:
    implicit_tls: bool = False  # pop3s (995): TLS from the first byte
    stls_available: bool = False  # pop3 (110) with a certificate: STLS offered until TLS starts
    allow_insecure_auth: bool = False  # USER/PASS/AUTH without TLS (tests, loopback-only setups)
    sasl_mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256")
    login_delay: int | None = None  # RFC 2449 §6.5 LOGIN-DELAY seconds; the shell enforces it
    implementation: str | None = "Surat"  # RFC 2449 §6.9; None hides it
    utf8: bool = True  # RFC 6856 UTF8 command and capability
    max_line: int = MAX_COMMAND_LINE
    max_auth_line: int = MAX_AUTH_LINE
    max_errors: int = 10
    # NOOP and RSET past this many in a session each spend an error (as Postfix's SMTP junk command
    # limit): a flood of them costs a reply each and keeps the idle timer from firing.
    max_junk_commands: int = 100


class _Reject(Exception):
    """A command the engine refuses by itself, with the -ERR text to send."""

    def __init__(self, text: str, code: RespCode | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class _TooLong:
    """Marker for a line that exceeded its limit (already discarded)."""


_TOO_LONG = _TooLong()

_Parser = Callable[["POP3ServerEngine", str], Command]


def _no_args(args: str) -> None:
    if args.strip(" "):
        raise _Reject("this command takes no arguments")


def _msg_number(arg: str) -> int:
    # RFC 1939 §3: a message-number is a positive decimal; ASCII digits only (str.isdigit alone
    # would let other scripts' digits through).
    if not (arg.isascii() and arg.isdigit()) or len(arg) > _MAX_MSG_DIGITS or int(arg) == 0:
        raise _Reject("invalid message number")
    return int(arg)


def _optional_msg(args: str) -> int | None:
    parts = args.split()
    if not parts:
        return None
    if len(parts) > 1:
        raise _Reject("too many arguments")
    return _msg_number(parts[0])


def _one_msg(args: str) -> int:
    parts = args.split()
    if len(parts) != 1:
        raise _Reject("a message number is required")
    return _msg_number(parts[0])


def _parse_user(engine: POP3ServerEngine, args: str) -> Command:
    engine._require_login_allowed()
    # RFC 1939 §7 USER takes one argument; the name is everything after the space so that
    # unusual names reach the directory lookup intact (which rejects them).
    name = args.strip(" ")
    if not name:
        raise _Reject("a user name is required")
    return User(name)


def _parse_pass(engine: POP3ServerEngine, args: str) -> Command:
    engine._require_login_allowed()
    # RFC 1939 §7: PASS is valid only immediately after a successful USER.
    if engine._user is None:
        raise _Reject("USER first")
    # RFC 1939 §7 PASS: the server may treat spaces in the argument as part of the password.
    if not args:
        raise _Reject("a password is required")
    return Pass(engine._user, args)


def _parse_auth(engine: POP3ServerEngine, args: str) -> Command:
    engine._require_login_allowed()
    parts = args.split()
    if not parts or len(parts) > 2:
        raise _Reject("syntax: AUTH mechanism [initial-response]")
    mechanism = parts[0].upper()
    if mechanism not in (m.upper() for m in engine.settings.sasl_mechanisms):
        # RFC 5034 §4: an unsupported mechanism is rejected with -ERR.
        raise _Reject("unsupported authentication mechanism")
    initial: bytes | None = None
    if len(parts) == 2:
        # RFC 5034 §4: "=" is an initial response of zero length.
        initial = b"" if parts[1] == "=" else _b64decode(parts[1])
    return Auth(mechanism, initial)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject("invalid base64") from None


def _parse_stls(engine: POP3ServerEngine, args: str) -> Command:
    _no_args(args)
    if engine.tls_active:
        raise _Reject("TLS is already active")
    if not engine.settings.stls_available:
        raise _Reject("STLS is not available")
    if engine.utf8_mode:
        # RFC 6856 §2.1: clients MUST NOT issue STLS after UTF8; servers MAY reject it.
        raise _Reject("STLS is not allowed after UTF8")
    return Stls()


def _parse_top(engine: POP3ServerEngine, args: str) -> Command:
    parts = args.split()
    if len(parts) != 2:
        raise _Reject("syntax: TOP msg n")
    msg = _msg_number(parts[0])
    # RFC 1939 §7 TOP: n is a non-negative number of lines.
    n = parts[1]
    if not (n.isascii() and n.isdigit()) or len(n) > _MAX_MSG_DIGITS:
        raise _Reject("invalid line count")
    return Top(msg, int(n))


def _simple(factory: Callable[[], Command]) -> _Parser:
    def parse(engine: POP3ServerEngine, args: str) -> Command:
        _no_args(args)
        return factory()

    return parse


def _parse_utf8(engine: POP3ServerEngine, args: str) -> Command:
    if not engine.settings.utf8:
        raise _Reject("unknown command")
    _no_args(args)
    return Utf8()


_AUTHZ = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTHZ | _TRANS

# The dispatch table: command keyword -> (states it is valid in, argument parser).
# RFC 1939 §4, §5, §7; RFC 2449 §5 (CAPA: both states); RFC 2595 §4 (STLS: AUTHORIZATION);
# RFC 5034 §4 (AUTH: AUTHORIZATION); RFC 6856 §2 (UTF8: AUTHORIZATION).
_COMMANDS: dict[str, tuple[frozenset[State], _Parser]] = {
    "USER": (_AUTHZ, _parse_user),
    "PASS": (_AUTHZ, _parse_pass),
    "AUTH": (_AUTHZ, _parse_auth),
    "STLS": (_AUTHZ, _parse_stls),
    "UTF8": (_AUTHZ, _parse_utf8),
    "CAPA": (_BOTH, _simple(Capa)),
    "QUIT": (_BOTH, _simple(Quit)),
    "STAT": (_TRANS, _simple(Stat)),
    "LIST": (_TRANS, lambda e, a: List(_optional_msg(a))),
    "RETR": (_TRANS, lambda e, a: Retr(_one_msg(a))),
    "DELE": (_TRANS, lambda e, a: Dele(_one_msg(a))),
    "NOOP": (_TRANS, _simple(Noop)),
    "RSET": (_TRANS, _simple(Rset)),
    "TOP": (_TRANS, _parse_top),
    "UIDL": (_TRANS, lambda e, a: Uidl(_optional_msg(a))),
}


_JUNK = frozenset({"NOOP", "RSET"})  # see POP3Settings.max_junk_commands


def _valid_unique_id(uid: str) -> bool:
    # RFC 1939 §7 UIDL: 1 to 70 characters in the range 0x21 to 0x7E.
    return 1 <= len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)


class POP3ServerEngine:
    def __init__(self, settings: POP3Settings | None = None) -> None:
        self.settings = settings or POP3Settings()
        self._state = State.AUTHORIZATION
        self._tls_active = self.settings.implicit_tls
        self._tls_pending = False
        self._utf8 = False
        self._user: str | None = None  # the name of an accepted USER, until PASS or another command
        self._buf = bytearray()
        self._discarding = False  # dropping the rest of an over-long line
        self._auth_continue = False  # the next line is a SASL response
        self._pending: Command | None = None  # the command awaiting its reply
        self._encoder: MessageEncoder | None = None  # RETR/TOP in progress
        self._out: list[bytes] = []
        self._out_octets = 0
        self._errors = 0
        self._junk = 0
        self._close_reason = ""

    # ----------------------------------------------------------------------------- properties

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def tls_pending(self) -> bool:
        """STLS was accepted: the shell runs the TLS handshake, then calls `tls_started`."""
        return self._tls_pending

    @property
    def utf8_mode(self) -> bool:
        return self._utf8

    @property
    def errors(self) -> int:
        """Errors spent from the budget so far."""
        return self._errors

    @property
    def buffered_octets(self) -> int:
        """Received octets not yet parsed (bounded by the line limits while parsing)."""
        return len(self._buf)

    @property
    def login_allowed(self) -> bool:
        return self._tls_active or self.settings.allow_insecure_auth

    @property
    def awaiting_reply(self) -> Command | None:
        return self._pending

    # ----------------------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        if self._state is State.CLOSED:
            return
        self._buf += data

    def next_event(self) -> Event | NeedData:
        if self._pending is not None:
            raise EngineUsageError(f"{type(self._pending).__name__} has not been answered")
        if self._state is State.CLOSED:
            return Close(self._close_reason)
        while not self._tls_pending:
            line = self._next_line()
            if line is None:
                break
            event = self._handle_line(line)
            if self.closed:
                return Close(self._close_reason)
            if event is not None:
                self._pending = event
                return event
        return NEED_DATA

    def _line_limit(self) -> int:
        if self._auth_continue:
            return self.settings.max_auth_line
        # Be lenient with an AUTH command whose initial response makes it longer than a command
        # line may be (RFC 5034 §4 says the client MUST NOT, yet some do with long tokens).
        if self._buf[:5].upper() == b"AUTH ":
            return self.settings.max_auth_line
        return self.settings.max_line

    def _next_line(self) -> bytes | _TooLong | None:
        buf = self._buf
        if self._discarding:
            nl = buf.find(b"\n")
            if nl < 0:
                buf.clear()
                return None
            del buf[: nl + 1]
            self._discarding = False
        limit = self._line_limit()
        # The line including its terminator may be at most `limit` octets.
        nl = buf.find(b"\n", 0, limit)
        if nl < 0:
            if len(buf) < limit:
                return None
            # Over the limit: drop what we have of the line and the rest of it as it arrives,
            # so the buffer stays bounded whatever the client sends.
            nl = buf.find(b"\n")
            if nl < 0:
                buf.clear()
                self._discarding = True
            else:
                del buf[: nl + 1]
            return _TOO_LONG
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _handle_line(self, line: bytes | _TooLong) -> Command | None:
        if self._auth_continue:
            return self._auth_line(line)
        if isinstance(line, _TooLong):
            # RFC 2449 §4: command lines are limited to 255 octets.
            self._reject(_Reject("line too long"))
            return None
        user, self._user = self._user, None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(_Reject("invalid UTF-8 in command"))
            return None
        keyword, _, args = text.partition(" ")
        entry = _COMMANDS.get(keyword.upper()) if keyword.isascii() else None
        if entry is None:
            self._reject(_Reject("unknown command"))
            return None
        states, parse = entry
        if self._state not in states:
            self._reject(_Reject("command not valid in this state"))
            return None
        if keyword.upper() in _JUNK:
            self._junk += 1
            if self._junk > self.settings.max_junk_commands:
                self._spend_error()
                if self._state is State.CLOSED:
                    return None
        # RFC 1939 §7: PASS uses the name of the USER command just before it; any other command
        # (and PASS itself, whatever its outcome) forgets that name.
        self._user = user if keyword.upper() == "PASS" else None
        try:
            command = parse(self, args)
        except _Reject as reject:
            self._reject(reject)
            return None
        finally:
            self._user = None
        if isinstance(command, Quit) and self._state is State.TRANSACTION:
            # RFC 1939 §6: QUIT in TRANSACTION enters the UPDATE state.
            self._state = State.UPDATE
        return command

    def _auth_line(self, line: bytes | _TooLong) -> Command:
        self._auth_continue = False
        if isinstance(line, _TooLong):
            self._spend_error()
            return AuthCancelled("authentication response too long")
        if line == b"*":
            # RFC 5034 §4: "*" cancels the exchange.
            return AuthCancelled("authentication cancelled")
        if line == b"=":
            # An empty response is an empty line; accept the initial-response spelling too.
            return AuthResponse(b"")
        try:
            return AuthResponse(base64.b64decode(line, validate=True))
        except (binascii.Error, ValueError):
            self._spend_error()
            return AuthCancelled("invalid base64 in authentication response")

    def _require_login_allowed(self) -> None:
        if not self.login_allowed:
            # Plaintext credentials before TLS are refused (RFC 2595 §2.3: servers MUST be able
            # to refuse clear-text logins without an encryption layer). The code is [AUTH], not
            # [SYS/PERM]: RFC 3206 §5 lists "an attempt to authenticate in violation of policy"
            # under AUTH, while SYS (§4) is for failures of the system itself.
            hint = "; use STLS first" if self.settings.stls_available else ""
            raise _Reject("authentication requires TLS" + hint, RespCode.AUTH)

    # ----------------------------------------------------------------------------- output

    @property
    def pending_output(self) -> int:
        """Octets of replies produced and not yet taken by ``data_to_send``: the shell hands them to the
        transport (and waits for the client to read) when they pass its high-water mark, so pipelined
        commands cannot pile up replies faster than the client reads them."""
        return self._out_octets

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self._out_octets = 0
        return out

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_octets += len(data)

    def _line(self, status: str, text: str, code: RespCode | None) -> bytes:
        parts = [status]
        if code is not None:
            parts.append(f"[{code.value}]")
        if text:
            parts.append(text)
        raw = " ".join(parts)
        # Replies never carry a line break the caller slipped in (response splitting).
        raw = raw.replace("\r", " ").replace("\n", " ")
        # RFC 6856 §2.1: no non-ASCII text unless the client enabled UTF-8 mode.
        data = raw.encode("utf-8") if self._utf8 else raw.encode("ascii", "replace")
        if len(data) > MAX_RESPONSE_LINE - 2:
            # RFC 2449 §4: a response line is at most 512 octets with its CRLF.
            data = data[: MAX_RESPONSE_LINE - 2].decode("utf-8", "ignore").encode("utf-8")
        return data + CRLF

    def greet(self, text: str = "POP3 server ready") -> None:
        """The +OK greeting (RFC 1939 §4). No "<timestamp>": APOP is not offered (RFC 2449 §6)."""
        self._send(self._line("+OK", text.replace("<", "(").replace(">", ")"), None))

    def _take(self, *allowed: type[Command]) -> Command:
        pending = self._pending
        if pending is None:
            raise EngineUsageError("no command is awaiting a reply")
        if self._encoder is not None:
            raise EngineUsageError("a message is being sent; call message_end()")
        if allowed and not isinstance(pending, allowed):
            raise EngineUsageError(f"cannot answer {type(pending).__name__} this way")
        self._pending = None
        return pending

    def _require_msg(self, kind: type[List | Uidl], single: bool) -> None:
        pending = self._pending
        if not isinstance(pending, kind) or (pending.msg is not None) != single:
            raise EngineUsageError(f"cannot answer {pending!r} this way")
        self._take()

    def ok(self, text: str = "") -> None:
        """+OK for a single-line reply; its effect depends on the command it answers."""
        pending = self._pending
        if isinstance(pending, Retr | Top | Capa | AuthCancelled) or (
            isinstance(pending, List | Uidl) and pending.msg is None
        ):
            raise EngineUsageError(f"{type(pending).__name__} needs its own reply method")
        command = self._take()
        self._send(self._line("+OK", text, None))
        if isinstance(command, User):
            self._user = command.name
        elif isinstance(command, Pass | Auth | AuthResponse):
            self._state = State.TRANSACTION
        elif isinstance(command, Stls):
            # RFC 2595 §4: TLS negotiation begins right after this +OK; nothing the client sent
            # in plaintext after STLS may be acted on (see tls_started).
            self._tls_pending = True
        elif isinstance(command, Utf8):
            self._utf8 = True
        elif isinstance(command, Quit):
            self._close("quit")

    def err(self, text: str, code: RespCode | None = None) -> None:
        """-ERR [code] text. After QUIT in UPDATE, it reports that not every deletion happened
        (RFC 1939 §6) and closes like +OK does."""
        command = self._take()
        self._send(self._line("-ERR", text, code))
        if isinstance(command, Quit):
            self._close("quit")

    def login_failed(
        self, text: str = "authentication failed", code: RespCode | None = RespCode.AUTH
    ) -> None:
        """A failed PASS or AUTH: -ERR, and one error spent (brute force ends the connection)."""
        self._take(Pass, Auth, AuthResponse, AuthCancelled)
        self._send(self._line("-ERR", text, code))
        self._spend_error()

    def auth_challenge(self, challenge: bytes) -> None:
        """RFC 5034 §4: "+ " and the base64 challenge; the next line is the client's response."""
        self._take(Auth, AuthResponse)
        self._send(b"+ " + base64.b64encode(challenge) + CRLF)
        self._auth_continue = True

    def stat(self, count: int, octets: int) -> None:
        """RFC 1939 §5 STAT: "+OK nn mm" (the drop listing)."""
        self._take(Stat)
        self._send(self._line("+OK", f"{count} {octets}", None))

    def scan(self, msg: int, octets: int) -> None:
        """RFC 1939 §5 LIST msg: "+OK msg size"."""
        self._require_msg(List, single=True)
        self._send(self._line("+OK", f"{msg} {octets}", None))

    def scan_listing(self, entries: Iterable[tuple[int, int]], text: str = "scan listing follows") -> None:
        """RFC 1939 §5 LIST: one "msg size" line per message not marked deleted."""
        self._require_msg(List, single=False)
        self._multiline(text, (f"{msg} {octets}".encode() for msg, octets in entries))

    def unique_id(self, msg: int, uid: str) -> None:
        """RFC 1939 §7 UIDL msg: "+OK msg unique-id"."""
        if not _valid_unique_id(uid):
            raise ValueError(f"invalid POP3 unique-id {uid!r}")
        self._require_msg(Uidl, single=True)
        self._send(self._line("+OK", f"{msg} {uid}", None))

    def unique_id_listing(
        self, entries: Iterable[tuple[int, str]], text: str = "unique-id listing follows"
    ) -> None:
        lines = []
        for msg, uid in entries:
            if not _valid_unique_id(uid):
                raise ValueError(f"invalid POP3 unique-id {uid!r}")
            lines.append(f"{msg} {uid}".encode())
        self._require_msg(Uidl, single=False)
        self._multiline(text, lines)

    def capabilities(self) -> None:
        """The reply to CAPA (RFC 2449 §5)."""
        self._take(Capa)
        self._multiline("capability list follows", (c.encode() for c in self.capability_list()))

    def capability_list(self) -> list[str]:
        """What CAPA announces now. It depends on TLS but not on the session state: RFC 2449 §5
        wants capabilities of the AUTHORIZATION state announced in both states."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.settings.login_delay is not None:
            caps.append(f"LOGIN-DELAY {self.settings.login_delay}")
        if self.login_allowed:
            caps.append("USER")
            if self.settings.sasl_mechanisms:
                caps.append("SASL " + " ".join(self.settings.sasl_mechanisms))
        if self.settings.stls_available and not self._tls_active:
            caps.append("STLS")  # RFC 2595 §4
        if self.settings.utf8:
            # RFC 6856 §2.2: USER means UTF-8 user names and passwords are accepted.
            caps.append("UTF8 USER")
        if self.settings.implementation:
            caps.append(f"IMPLEMENTATION {self.settings.implementation}")
        return caps

    def _multiline(self, text: str, lines: Iterable[bytes]) -> None:
        out = [self._line("+OK", text, None)]
        out.extend(stuff_line(line) for line in lines)
        out.append(TERMINATOR)
        self._send(b"".join(out))

    # -- RETR / TOP

    def message_start(self, text: str = "") -> None:
        """Begin the reply to RETR or TOP: "+OK text" (e.g. "1205 octets"). Then feed the
        message with `message_data` and end with `message_end`. Once "+OK" is out, a failure
        while reading the message cannot be reported: the shell must close the connection."""
        pending = self._pending
        if not isinstance(pending, Retr | Top):
            raise EngineUsageError("message_start() answers RETR or TOP only")
        if self._encoder is not None:
            raise EngineUsageError("message_start() called twice")
        self._encoder = MessageEncoder(pending.lines if isinstance(pending, Top) else None)
        self._send(self._line("+OK", text, None))

    def message_data(self, chunk: bytes) -> bool:
        """Add a chunk of the message; returns False when TOP needs nothing more."""
        if self._encoder is None:
            raise EngineUsageError("message_data() before message_start()")
        encoded = self._encoder.feed(chunk)
        if encoded:
            self._send(encoded)
        return self._encoder.wants_more

    def message_end(self) -> None:
        if self._encoder is None:
            raise EngineUsageError("message_end() before message_start()")
        self._send(self._encoder.finish())
        self._encoder = None
        self._pending = None

    # ----------------------------------------------------------------------------- TLS and close

    def tls_started(self) -> None:
        """The TLS handshake after STLS succeeded. Bytes received before it are dropped
        (RFC 2595 §4 and the STARTTLS command-injection attacks, CVE-2011-0411 and kin), and
        so is what the client said before (RFC 2595 §4: discard knowledge obtained from it)."""
        if not self._tls_pending:
            raise EngineUsageError("tls_started() without an accepted STLS")
        self._tls_pending = False
        self._tls_active = True
        self._buf.clear()
        self._discarding = False
        self._user = None

    def shutdown(self, text: str, code: RespCode | None = None) -> None:
        """End the session from the server side (shutting down, fatal store error): -ERR, then
        `next_event()` returns Close. Answers the pending command if there is one."""
        self._pending = None
        self._encoder = None
        self._send(self._line("-ERR", text, code))
        self._close(text)

    def _reject(self, reject: _Reject) -> None:
        self._send(self._line("-ERR", reject.text, reject.code))
        self._spend_error()

    def _spend_error(self) -> None:
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._close("too many errors")

    def _close(self, reason: str) -> None:
        self._state = State.CLOSED
        self._close_reason = reason
        self._buf.clear()
        self._auth_continue = False
