"""The SMTP server state machine, sans-IO (h11 style).

The shell feeds bytes with `receive_data()`, pulls events with `next_event()` and, for events that
ask for a decision (`engine.awaiting_reply`), answers with `respond(reply)`. The engine advances
its state only on a positive answer. Everything that needs no policy decision -- syntax, command
order, limits, NOOP/VRFY/EXPN/HELP/RSET/QUIT -- the engine answers itself. Bytes to write come out of
`data_to_send()`.

Events that need a reply: Hello, MailFrom, RcptTo, DataStart (354 to go on), ChunkEnd, MessageEnd,
StartTLS (220 to go on), AuthStart and AuthResponse (334 to continue, 235 for success).
Events that are notifications only: BdatStart, MessageData, Reset, Quit, Close.

Message text decisions (issue 2):
- Only <CRLF>.<CRLF> ends DATA, and "." <CRLF> as the very first line (RFC 5321 §4.1.1.4). A "."
  after a bare CR or bare LF is text, so <LF>.<LF>, <CR>.<CR>, <LF>.<CRLF> never end a message
  (SMTP smuggling).
- Bare CR and bare LF inside a message are normalised to CRLF (RFC 5321 §2.3.8 forbids them in
  text; normalising keeps mail from sloppy senders instead of refusing it). Relaying dot-stuffs
  every line that starts with ".", so a stored "." line can never end a message downstream.
- Text lines over 998 octets (RFC 5321 §4.5.3.1.6) are accepted and passed on intact: the decoder
  streams and never holds a line, so memory stays bounded by the shell's read size.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from surat.proto.smtp import replies as R
from surat.proto.smtp.address import (
    Address,
    MailParams,
    RcptParams,
    SMTPSyntaxError,
    has_controls,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
)
from surat.proto.smtp.replies import Reply

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF. RFC 4954 §5 (AUTH=)
# and RFC 3461 §4.2 (ORCPT up to 500 characters) extend MAIL and RCPT lines.
MAX_COMMAND_LINE = 512
MAX_MAIL_RCPT_LINE = 512 + 500
# RFC 4954 §4: continuation lines of up to 12288 octets.
MAX_AUTH_LINE = 12288


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000
    max_bad_commands: int = 10
    # Commands that move no mail forward (NOOP, RSET, VRFY, EXPN, HELP) past this many in a session each
    # count as a bad command, as Postfix's smtpd_junk_command_limit (default 100) does: a flood of them
    # holds a slot and costs a reply each, and the idle timeout never fires.
    max_junk_commands: int = 100
    starttls: bool = False  # STARTTLS may be offered (a certificate exists, connection is plain)
    tls_active: bool = False  # the connection is already TLS (implicit TLS, RFC 8314)
    auth_mechanisms: tuple[str, ...] = ()  # () = no AUTH on this listener (MX)
    auth_requires_tls: bool = True  # RFC 8314 §3: never offer AUTH in clear text
    auth_required: bool = False  # submission: MAIL needs a successful AUTH first (RFC 6409 §4.3)
    chunking: bool = True
    dsn: bool = True
    smtputf8: bool = True
    requiretls: bool = True  # RFC 8689: offered once the session is TLS


class State(enum.Enum):
    CONNECTED = "connected"  # no HELO/EHLO yet
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted: RCPT, DATA, BDAT
    CHUNKING = "chunking"  # at least one non-LAST BDAT chunk accepted (RFC 3030)
    CHUNKING_FAILED = "chunking_failed"  # a BDAT chunk was refused: only RSET gets out
    DATA = "data"  # reading DATA text
    BDAT = "bdat"  # reading the octets of one BDAT chunk
    AUTH = "auth"  # waiting for an AUTH continuation line
    STARTTLS = "starttls"  # 220 sent, waiting for the shell's TLS handshake
    CLOSED = "closed"


_JUNK = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})  # see ServerSettings.max_junk_commands
_ANYTIME = frozenset({"EHLO", "HELO", "NOOP", "RSET", "QUIT", "VRFY", "EXPN", "HELP"})
# Commands legal in each command state; anything else known gets 503 (RFC 5321 §4.3.2 order).
_LEGAL: dict[State, frozenset[str]] = {
    State.CONNECTED: _ANYTIME,
    State.READY: _ANYTIME | {"MAIL", "STARTTLS", "AUTH"},
    State.MAIL: _ANYTIME | {"RCPT", "DATA", "BDAT"},
    State.CHUNKING: _ANYTIME | {"BDAT"},
    State.CHUNKING_FAILED: _ANYTIME,
}
_KNOWN = frozenset().union(*_LEGAL.values(), {"MAIL", "RCPT", "DATA", "BDAT", "STARTTLS", "AUTH"})


# ----------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Hello:
    domain: str
    extended: bool  # EHLO (True) or HELO
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class MailFrom:
    path: Address | None  # None: the null reverse-path <>
    params: MailParams = field(default_factory=MailParams)
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RcptTo:
    path: Address
    params: RcptParams = field(default_factory=RcptParams)
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class DataStart:
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class BdatStart:
    size: int
    last: bool
    first: bool  # the first chunk of this message: the shell opens its spool file
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class MessageData:
    chunk: bytes  # dot-unstuffed, CRLF-normalised message text
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """A non-LAST BDAT chunk was received in full."""

    size: int
    problem: Reply | None  # set when the engine refuses it (size): reply with it
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """The final dot or the end of BDAT LAST. With `problem`, discard the message, reply with it."""

    problem: Reply | None
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartTLS:
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AuthStart:
    mechanism: str  # upper-case, one of settings.auth_mechanisms
    initial_response: bytes | None  # RFC 4954 §4: decoded; b"" for "="
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AuthResponse:
    data: bytes | None  # None: the client cancelled with "*" (reply AUTH_CANCELLED)
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET was answered: the shell drops its transaction (and any spool file)."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT was answered with 221: flush and close."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Close:
    """The engine gave up on the connection (error budget); `reply` is already queued."""

    reply: Reply
    needs_reply: ClassVar[bool] = False


Event = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | BdatStart
    | MessageData
    | ChunkEnd
    | MessageEnd
    | StartTLS
    | AuthStart
    | AuthResponse
    | Reset
    | Quit
    | Close
)


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[_NeedData.NEED_DATA] = _NeedData.NEED_DATA

# Every place where DATA text needs attention: a CRLF before a "." (maybe the end marker or a
# stuffed dot), a bare CR (also one at the very end: it may be the start of a CRLF), a bare LF.
_DATA_SPECIAL = re.compile(rb"\r\n(?=\.)|\r(?!\n)|(?<!\r)\n")
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")
_BDAT_RE = re.compile(r"([0-9]{1,20})(?: +(LAST))? *", re.IGNORECASE)


class EngineError(RuntimeError):
    """The shell used the engine wrongly (a bug in the shell, not in the client)."""


class SMTPServerEngine:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state = State.CONNECTED
        self.tls = settings.tls_active
        self.authenticated = False
        self.extended = False  # the client said EHLO
        self.bad_commands = 0
        self.junk_commands = 0
        self._in = bytearray()
        self._out = bytearray()
        self._pending: Event | None = None
        self._discarding = False  # inside an over-long command line
        self._deferred: Event | None = None  # Close, returned by the next next_event()
        # transaction
        self._rcpts = 0
        self._smtputf8 = False
        self._size = 0
        self._problem: Reply | None = None
        self._chunked = False  # a BDAT was accepted in this transaction
        # DATA decoder
        self._line_start = True
        self._data_ended = False
        # BDAT decoder
        self._bdat_left = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None  # refused BDAT: swallow the octets, then reply this
        self._bdat_return: State = State.MAIL
        self._pending_cr = False

    # ------------------------------------------------------------------------------- public API

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Received octets not yet consumed (bounded: see the line limits and the DATA decoder)."""
        return len(self._in)

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def auth_available(self) -> bool:
        """The one rule for AUTH: mechanisms configured, and TLS up unless the settings waive it."""
        return bool(self.settings.auth_mechanisms) and (self.tls or not self.settings.auth_requires_tls)

    @property
    def starttls_available(self) -> bool:
        return self.settings.starttls and not self.tls

    def greeting(self) -> Reply:
        return R.greeting(self.settings.hostname)

    def ehlo_reply(self, hello: Hello) -> Reply:
        """The positive answer to `hello`, with the EHLO keywords that apply right now."""
        if not hello.extended:
            return R.ehlo((self.settings.hostname,))
        lines = [
            self.settings.hostname,
            "PIPELINING",
            f"SIZE {self.settings.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.settings.smtputf8:
            lines.append("SMTPUTF8")
        if self.settings.chunking:
            lines.append("CHUNKING")
        if self.settings.dsn:
            lines.append("DSN")
        if self.starttls_available:
            lines.append("STARTTLS")
        if self.settings.requiretls and self.tls:
            lines.append("REQUIRETLS")  # RFC 8689 §4.1: only in a TLS session
        if self.auth_available and not self.authenticated:
            lines.append("AUTH " + " ".join(self.settings.auth_mechanisms))
        return R.ehlo(tuple(lines))

    def send(self, reply: Reply) -> None:
        """Queue an unsolicited reply: the greeting, or a 421 before closing (timeout, shutdown)."""
        self._out += reply.to_bytes()
        if reply.code == 421:
            self.state = State.CLOSED

    def receive_data(self, data: bytes) -> None:
        if self.state in (State.CLOSED, State.STARTTLS):
            return  # RFC 3207 §4.2 / CVE-2011-0411: nothing sent before the handshake counts
        self._in += data

    @property
    def pending_output(self) -> int:
        """Octets of replies not yet taken by ``data_to_send``: the shell hands them to the transport (and
        waits for the client to read) when they pass its high-water mark, so a pipelined flood cannot
        pile up replies faster than the client reads them (RFC 2920 §3.1 lets the server buffer replies,
        not without bound)."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        """The shell completed the TLS handshake after our 220 to STARTTLS."""
        if self.state is not State.STARTTLS:
            raise EngineError("tls_started() without an accepted STARTTLS")
        # RFC 3207 §4.2: forget everything learnt before TLS, the client must EHLO again.
        self._in.clear()
        self.tls = True
        self.extended = False
        self._reset_transaction()
        self.state = State.CONNECTED

    def next_event(self) -> Event | Literal[_NeedData.NEED_DATA]:
        if self._pending is not None:
            raise EngineError(f"respond() to {self._pending!r} first")
        while True:
            event: Event | None
            if self._deferred is not None:
                event, self._deferred = self._deferred, None
                return event
            if self.state in (State.CLOSED, State.STARTTLS):
                return NEED_DATA
            if self.state is State.DATA:
                event = self._next_data()
                if event is None:
                    return NEED_DATA
            elif self.state is State.BDAT:
                event = self._next_bdat()
                if event is None:
                    if self.state is State.BDAT:
                        return NEED_DATA
                    continue
            else:
                line = self._next_line()
                if line is None:
                    if self._deferred is None:
                        return NEED_DATA
                    continue
                event = self._dispatch(line)
                if event is None:
                    continue
            if event.needs_reply:
                self._pending = event
            return event

    def respond(self, reply: Reply) -> None:
        """Answer the pending event; a positive reply advances the state."""
        event = self._pending
        if event is None:
            raise EngineError("respond() with no event awaiting a reply")
        self._pending = None
        self._out += reply.to_bytes()
        ok = reply.is_positive
        match event:
            case Hello():
                if ok:
                    # RFC 5321 §4.1.4: EHLO/HELO also resets any transaction.
                    self._reset_transaction()
                    self.extended = event.extended
                    self.state = State.READY
            case MailFrom():
                if ok:
                    self._smtputf8 = event.params.smtputf8
                    self.state = State.MAIL
            case RcptTo():
                if ok:
                    self._rcpts += 1
            case DataStart():
                if reply.code == 354:
                    self._line_start = True
                    self._data_ended = False
                    self._size = 0
                    self._problem = None
                    self.state = State.DATA
            case ChunkEnd():
                self.state = State.CHUNKING if ok else State.CHUNKING_FAILED
            case MessageEnd():
                self._reset_transaction()
                self.state = State.READY
            case StartTLS():
                if reply.code == 220:
                    # CVE-2011-0411: commands pipelined after STARTTLS must not run inside TLS.
                    self._in.clear()
                    self.state = State.STARTTLS
            case AuthStart() | AuthResponse():
                if reply.code == 334:
                    self.state = State.AUTH
                else:
                    if reply.code == 235:
                        self.authenticated = True
                    self.state = State.READY
            case _:
                raise EngineError(f"{event!r} takes no reply")
        if reply.code == 421:
            self.state = State.CLOSED

    # ------------------------------------------------------------------------------- commands

    def _line_limit(self) -> int:
        if self.state is State.AUTH:
            return MAX_AUTH_LINE
        if bytes(self._in[:5]).upper() in (b"MAIL ", b"RCPT "):
            return MAX_MAIL_RCPT_LINE
        return MAX_COMMAND_LINE

    def _next_line(self) -> bytes | None:
        """One command line without its line ending, or None; over-long lines get 500 5.5.2."""
        buf = self._in
        while True:
            newline = buf.find(b"\n")
            if self._discarding:
                if newline < 0:
                    buf.clear()
                    return None
                del buf[: newline + 1]
                self._discarding = False
                continue
            limit = self._line_limit()
            if newline < 0:
                if len(buf) >= limit:
                    # Bounded buffering: drop what we have and skip to the end of this line.
                    buf.clear()
                    self._discarding = True
                    self._line_too_long()
                return None
            line = bytes(buf[:newline])
            del buf[: newline + 1]
            if newline + 1 > limit:
                self._line_too_long()
                if self.closed:
                    return None
                continue
            # A bare LF ends a command line too: lenient for commands, never for message text.
            return line[:-1] if line.endswith(b"\r") else line

    def _line_too_long(self) -> None:
        if self.state is State.AUTH:
            self.state = State.READY  # the exchange is over: the client starts again with AUTH
        self._error(R.LINE_TOO_LONG)

    def _error(self, reply: Reply) -> Event | None:
        """A syntax or sequence error: reply, and close once the budget is spent.

        Returns None so handlers can `return self._error(...)`; the Close event, if any, is
        returned by the next `next_event()`.
        """
        self.bad_commands += 1
        if self.bad_commands >= self.settings.max_bad_commands:
            self._out += R.TOO_MANY_ERRORS.to_bytes()
            self.state = State.CLOSED
            self._deferred = Close(R.TOO_MANY_ERRORS)
            return None
        self._out += reply.to_bytes()
        return None

    def _reply(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _dispatch(self, raw: bytes) -> Event | None:
        if self.state is State.AUTH:
            return self._auth_line(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(R.INVALID_UTF8)
        if has_controls(line.replace("\t", " ")):
            # RFC 5321 §2.3.8: CR and LF appear only together, as the line end; a bare CR (or NUL, or
            # any other control) inside a command would reach header fields and logs from the
            # arguments (Return-Path, Received, DSN To:), so the whole command is refused.
            return self._error(R.CONTROL_CHARACTER)
        line = line.rstrip(" \t")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb not in _KNOWN:
            return self._error(R.UNRECOGNIZED)
        if verb == "BDAT":
            return self._bdat(arg.strip(" "))  # checks the state itself: the chunk must be swallowed anyway
        if verb not in _LEGAL[self.state]:
            return self._error(R.BAD_SEQUENCE)
        if verb in _JUNK:
            self.junk_commands += 1
            if self.junk_commands > self.settings.max_junk_commands:
                if self.bad_commands + 1 >= self.settings.max_bad_commands:
                    return self._error(R.TOO_MANY_ERRORS)  # spends the last of the budget: closes
                self.bad_commands += 1
        handler = _HANDLERS[verb]
        try:
            return handler(self, arg.strip(" "))
        except SMTPSyntaxError as exc:
            return self._error(exc.reply)

    def _hello(self, arg: str, extended: bool) -> Event | None:
        if not arg or " " in arg:
            return self._error(R.SYNTAX_ERROR)
        return Hello(arg, extended)

    def _ehlo(self, arg: str) -> Event | None:
        return self._hello(arg, True)

    def _helo(self, arg: str) -> Event | None:
        return self._hello(arg, False)

    def _mail(self, arg: str) -> Event | None:
        if self.settings.auth_required and not self.authenticated:
            # RFC 4954 §6 / RFC 6409 §4.3; on a plain connection the client must start TLS first.
            return self._error(R.AUTH_REQUIRED if self.auth_available else R.TLS_REQUIRED)
        if arg[:5].upper() != "FROM:":
            return self._error(R.SYNTAX_ERROR)
        path, rest = parse_path(arg[5:].lstrip(" "), sender=True)
        if rest.strip(" ") and not self.extended:
            return self._error(R.UNKNOWN_PARAMETER)  # RFC 5321 §4.1.1.11: no ESMTP after HELO
        params = parse_mail_params(rest, dsn=self.settings.dsn, smtputf8=self.settings.smtputf8)
        if not arg.isascii() and not params.smtputf8:
            self._reply(R.NON_ASCII_ADDRESS)  # RFC 6531 §3.4
            return None
        if params.size is not None and params.size > self.settings.max_message_size:
            self._reply(R.MESSAGE_TOO_BIG)  # RFC 1870 §6.1
            return None
        if params.requiretls and not (self.settings.requiretls and self.tls):
            # RFC 8689 §4.1: the session itself must be TLS (and only then is REQUIRETLS offered).
            self._reply(R.REQUIRETLS_NEEDS_TLS if self.settings.requiretls else R.UNKNOWN_PARAMETER)
            return None
        return MailFrom(path, params)

    def _rcpt(self, arg: str) -> Event | None:
        if arg[:3].upper() != "TO:":
            return self._error(R.SYNTAX_ERROR)
        path, rest = parse_path(arg[3:].lstrip(" "), sender=False, postmaster_ok=True)
        assert path is not None  # parse_path refuses <> for recipients
        if rest.strip(" ") and not self.extended:
            return self._error(R.UNKNOWN_PARAMETER)
        params = parse_rcpt_params(rest, dsn=self.settings.dsn)
        if not arg.isascii() and not self._smtputf8:
            self._reply(R.NON_ASCII_ADDRESS)
            return None
        if self._rcpts >= self.settings.max_recipients:
            self._reply(R.TOO_MANY_RECIPIENTS)  # RFC 5321 §4.5.3.1.10
            return None
        return RcptTo(path, params)

    def _data(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.SYNTAX_ERROR)
        if self._rcpts == 0:
            self._reply(R.NO_VALID_RECIPIENTS)  # RFC 5321 §3.3
            return None
        return DataStart()

    def _bdat(self, arg: str) -> Event | None:
        match = _BDAT_RE.fullmatch(arg)
        if match is None or not self.settings.chunking:
            # Without a size we cannot know where the chunk ends: nothing to swallow.
            return self._error(R.SYNTAX_ERROR if self.settings.chunking else R.UNRECOGNIZED)
        size = int(match.group(1))
        last = match.group(2) is not None
        self._bdat_left = size
        self._bdat_size = size
        self._bdat_last = last
        self._bdat_return = self.state
        self._bdat_error = None
        # RFC 3030 §2: a refused BDAT still has its octets on the wire; read and drop them.
        if self.state not in (State.MAIL, State.CHUNKING):
            self._bdat_error = R.BAD_SEQUENCE
        elif self._rcpts == 0:
            self._bdat_error = R.NO_VALID_RECIPIENTS
        self.state = State.BDAT
        if self._bdat_error is not None:
            return None
        first = not self._chunked
        if first:
            self._chunked = True
            self._size = 0
            self._problem = None
            self._pending_cr = False
        if self._size + size > self.settings.max_message_size:
            self._problem = R.MESSAGE_TOO_BIG
        return BdatStart(size, last, first)

    def _rset(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.SYNTAX_ERROR)
        self._reset_transaction()
        if self.state is not State.CONNECTED:
            self.state = State.READY
        self._reply(R.RESET_OK)
        return Reset()

    def _noop(self, arg: str) -> Event | None:
        self._reply(R.OK)  # RFC 5321 §4.1.1.9: the argument is ignored
        return None

    def _quit(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.SYNTAX_ERROR)
        self._reply(R.closing(self.settings.hostname))
        self.state = State.CLOSED
        return Quit()

    def _vrfy(self, arg: str) -> Event | None:
        if not arg:
            return self._error(R.SYNTAX_ERROR)
        self._reply(R.VRFY_CANNOT)  # RFC 5321 §3.5.3: no address harvesting
        return None

    def _expn(self, arg: str) -> Event | None:
        self._reply(R.NOT_IMPLEMENTED)  # RFC 5321 §3.5.2 permits disabling EXPN
        return None

    def _help(self, arg: str) -> Event | None:
        self._reply(R.HELP)
        return None

    def _starttls(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.SYNTAX_ERROR)
        if self.tls:
            return self._error(R.BAD_SEQUENCE)  # RFC 3207 §4.2: not again once TLS is up
        if not self.settings.starttls:
            return self._error(R.NOT_IMPLEMENTED)
        return StartTLS()

    def _auth(self, arg: str) -> Event | None:
        if not self.settings.auth_mechanisms:
            return self._error(R.NOT_IMPLEMENTED)
        if not self.auth_available:
            return self._error(R.TLS_REQUIRED)
        if self.authenticated:
            return self._error(R.ALREADY_AUTHENTICATED)  # RFC 4954 §4
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if not mechanism or " " in initial:
            return self._error(R.SYNTAX_ERROR)
        if mechanism not in self.settings.auth_mechanisms:
            return self._error(R.UNKNOWN_MECHANISM)
        response: bytes | None = None
        if initial == "=":
            response = b""  # RFC 4954 §4: "=" is an empty initial response
        elif initial:
            decoded = _b64decode(initial.encode("ascii", "replace"))
            if decoded is None:
                return self._error(R.BAD_BASE64)
            response = decoded
        return AuthStart(mechanism, response)

    def _auth_line(self, raw: bytes) -> Event | None:
        self.state = State.READY
        if raw.strip() == b"*":
            return AuthResponse(None)  # RFC 4954 §4: the client cancels; reply 501
        decoded = _b64decode(raw.strip())
        if decoded is None:
            return self._error(R.BAD_BASE64)
        return AuthResponse(decoded)

    def _reset_transaction(self) -> None:
        self._rcpts = 0
        self._smtputf8 = False
        self._size = 0
        self._problem = None
        self._chunked = False
        self._pending_cr = False

    # ------------------------------------------------------------------------------- DATA

    def _next_data(self) -> Event | None:
        if not self._data_ended:
            out = self._decode_data()
            if out:
                event = self._emit(out)
                if event is not None:
                    return event
        if self._data_ended:
            self.state = State.MAIL  # until the reply to MessageEnd resets everything
            return MessageEnd(self._problem)
        return None

    def _emit(self, out: bytes | bytearray) -> MessageData | None:
        """Count `out` against the size limit; once over, drop text and remember the problem."""
        if self._problem is not None:
            return None
        room = self.settings.max_message_size - self._size
        if len(out) > room:
            # Stop at the limit exactly (what was emitted does not depend on how input arrived);
            # the rest is swallowed up to the end marker, then MessageEnd carries the problem.
            self._problem = R.MESSAGE_TOO_BIG
            out = out[:room]
        self._size += len(out)
        return MessageData(bytes(out)) if out else None

    def _decode_data(self) -> bytearray:
        """Decode as much DATA text as the buffer allows; sets _data_ended at the end marker."""
        buf = self._in
        end = len(buf)
        out = bytearray()
        pos = 0
        # Fast path: when every CR and LF in the buffer belongs to a CRLF (a trailing CR aside),
        # the only places that need attention are CRLF "." and that CR, found with bytes.find at C
        # speed; the regex (a few times slower) is needed only for buffers with bare CR or LF.
        crlf = buf.count(b"\r\n")
        clean = buf.count(b"\n") == crlf and buf.count(b"\r") == crlf + (1 if buf.endswith(b"\r") else 0)
        while pos < end:
            if self._line_start:
                if buf[pos] == 0x2E:  # "." at the start of a line
                    if buf.startswith(b".\r\n", pos):  # RFC 5321 §4.1.1.4: the end of the data
                        pos += 3
                        self._data_ended = True
                        break
                    if end - pos == 1 or (end - pos == 2 and buf[pos + 1] == 0x0D):
                        break  # could still become ".\r\n": wait for more
                    pos += 1  # RFC 5321 §4.5.2: remove the stuffed dot
                self._line_start = False
                continue
            found = _find_special(buf, pos, end, clean)
            if found is None:
                out += buf[pos:end]
                if end - pos >= 2 and buf[end - 2 : end] == b"\r\n":
                    self._line_start = True
                pos = end
                break
            start, token = found
            if token == b"\r" and start == end - 1:
                out += buf[pos:start]
                if start - pos >= 2 and buf[start - 2 : start] == b"\r\n":
                    self._line_start = True
                pos = start  # keep the CR: it may be the start of a CRLF
                break
            out += buf[pos:start]
            out += b"\r\n"  # RFC 5321 §2.3.8: bare CR / bare LF normalised (see module docstring)
            pos = start + len(token)
            # Only a real CRLF starts a line where "." matters (smuggling: see module docstring).
            self._line_start = token == b"\r\n"
        del buf[:pos]
        return out

    # ------------------------------------------------------------------------------- BDAT

    def _next_bdat(self) -> Event | None:
        while self._bdat_left and self._in:
            take = bytes(self._in[: self._bdat_left])
            del self._in[: len(take)]
            self._bdat_left -= len(take)
            if self._bdat_error is not None:
                continue
            text = self._normalise(take, final=self._bdat_last and self._bdat_left == 0)
            if text:
                event = self._emit(text)
                if event is not None:
                    return event
        if self._bdat_left:
            return None
        if self._bdat_error is not None:
            self.state = self._bdat_return
            error, self._bdat_error = self._bdat_error, None
            self._error(error)
            return None
        if self._bdat_last and self._pending_cr:  # a CR ended the message: a bare CR
            self._pending_cr = False
            event = self._emit(b"\r\n")
            if event is not None:
                return event
        self.state = State.MAIL
        if self._bdat_last:
            return MessageEnd(self._problem)
        return ChunkEnd(self._bdat_size, self._problem)

    def _normalise(self, data: bytes, final: bool) -> bytes:
        """RFC 5321 §2.3.8 for BDAT: bare CR and LF become CRLF, even across chunk boundaries."""
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r") and not final:
            self._pending_cr = True
            data = data[:-1]
        return _ANY_NEWLINE.sub(b"\r\n", data)


def _find_special(buf: bytearray, pos: int, end: int, clean: bool) -> tuple[int, bytes] | None:
    """The next place in DATA text that needs attention (see _DATA_SPECIAL), as (offset, token)."""
    if clean:
        start = buf.find(b"\r\n.", pos)
        if start >= 0:
            return start, b"\r\n"
        if end - 1 >= pos and buf[end - 1] == 0x0D:
            return end - 1, b"\r"
        return None
    match = _DATA_SPECIAL.search(buf, pos)
    return None if match is None else (match.start(), match.group())


def _b64decode(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


_HANDLERS = {
    "EHLO": SMTPServerEngine._ehlo,
    "HELO": SMTPServerEngine._helo,
    "MAIL": SMTPServerEngine._mail,
    "RCPT": SMTPServerEngine._rcpt,
    "DATA": SMTPServerEngine._data,
    "RSET": SMTPServerEngine._rset,
    "NOOP": SMTPServerEngine._noop,
    "QUIT": SMTPServerEngine._quit,
    "VRFY": SMTPServerEngine._vrfy,
    "EXPN": SMTPServerEngine._expn,
    "HELP": SMTPServerEngine._help,
    "STARTTLS": SMTPServerEngine._starttls,
    "AUTH": SMTPServerEngine._auth,
}
