"""The SMTP client state machine, sans-IO (h11 style): one session, any number of transactions.

The shell connects, then loops: write `data_to_send()`, call `next_event()` and act on it:

    NEED_DATA        read from the socket (timeout: `engine.timeout`) and `receive_data(bytes)`;
                     on EOF call `connection_lost()`, on timeout `timed_out()`
    StartTLS         the server said 220 to STARTTLS: do the TLS handshake, then `tls_started()`
                     (on failure close; retrying the host without TLS is the caller's choice)
    Ready            the session is up: `send_mail(envelope)` or `quit()`
    SendMessage      feed the message: `send_message_data(chunk)` (repeatedly), then `end_message()`
    TransactionDone  per-recipient results: `send_mail(next)` or `quit()`
    SessionFailed    the session could not be set up; the engine QUITs by itself where it can
    Closed           close the socket; every later `next_event()` returns Closed again

Session: greeting -> EHLO (HELO if EHLO is refused, RFC 5321 §3.2) -> STARTTLS when offered and
enabled, then EHLO again (RFC 3207 §4.2) -> AUTH PLAIN or LOGIN when credentials are set (only
under TLS unless the settings allow it).

Transaction: MAIL FROM with SIZE/BODY/SMTPUTF8/RET/ENVID as the peer supports them, RCPT TO for
every recipient (NOTIFY/ORCPT when the peer supports DSN), then DATA with dot-stuffing or BDAT
when CHUNKING is offered. With PIPELINING, MAIL, the RCPTs and DATA go out as one group (RFC 2920
§3.1: DATA last in its group; message content only after every reply of the group is in).

Checks before anything is sent (results generated here, `RecipientResult.remote` False):
- message larger than the peer's SIZE -> 552 5.3.4 (RFC 1870 §6.1: the client should not send it);
- message needing SMTPUTF8 (flag, or a non-ASCII sender) to a peer without it -> 550 5.6.7 for all;
  a non-ASCII recipient to such a peer -> 553 5.6.7 for that recipient (RFC 6531 §3.2);
- 8-bit body (BODY=8BITMIME) to a peer without 8BITMIME -> 554 5.6.3. RFC 6152 §3 leaves two
  choices: convert to 7 bit or treat it as a permanent failure. Postfix converts to
  quoted-printable (disable_mime_output_conversion = no); we do not, because conversion breaks
  DKIM signatures and every current MTA announces 8BITMIME, so the bounce is the honest outcome.

Message text goes out with canonical CRLF line endings (bare CR and LF become CRLF, RFC 5321
§2.3.8, so no peer can read a smuggled end of data), every line starting with "." gets another
"." (RFC 5321 §4.5.2) under DATA, and a final CRLF is added when missing.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from surat.proto.smtp import replies as R
from surat.proto.smtp.address import Address
from surat.proto.smtp.replies import Reply

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers send longer ones, so the
# bounds are generous but still bounds.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 256

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |$)")
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")


# ---------------------------------------------------------------------------------------- settings


class Phase(enum.Enum):
    """What the engine waits for; the shell applies `Timeouts.for_phase(engine.phase)`."""

    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    READY = "ready"  # between transactions: the shell decides, nothing is awaited
    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA_INIT = "data_init"  # the 354 to DATA
    DATA_BLOCK = "data_block"  # sending message text (and the reply to a non-LAST BDAT chunk)
    DATA_END = "data_end"  # the reply to the final dot or BDAT LAST
    QUIT = "quit"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """RFC 5321 §4.5.3.2 minimums, in seconds; the RFC names none for EHLO, STARTTLS, AUTH,
    RSET and QUIT, which get Postfix's defaults (smtp_helo_timeout, smtp_starttls_timeout...)."""

    greeting: float = 300.0  # §4.5.3.2.1
    ehlo: float = 300.0
    starttls: float = 300.0
    auth: float = 300.0
    rset: float = 20.0
    mail: float = 300.0  # §4.5.3.2.2
    rcpt: float = 300.0  # §4.5.3.2.3
    data_init: float = 120.0  # §4.5.3.2.4
    data_block: float = 180.0  # §4.5.3.2.5 (each write / each BDAT chunk reply)
    data_end: float = 600.0  # §4.5.3.2.6
    quit: float = 300.0

    def for_phase(self, phase: Phase) -> float | None:
        if phase in (Phase.READY, Phase.CLOSED):
            return None
        value: float = getattr(self, phase.value)
        return value


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    hostname: str  # our EHLO name
    starttls: bool = True  # use STARTTLS when offered (opportunistic)
    require_tls: bool = False  # fail the session unless TLS is up (smarthost, MTA-STS)
    tls_active: bool = False  # the connection is already TLS (implicit TLS, port 465)
    credentials: Credentials | None = None  # AUTH PLAIN or LOGIN (a smarthost)
    auth_without_tls: bool = False  # allow sending credentials in clear text (tests only)
    pipelining: bool = True  # use PIPELINING when offered
    chunking: bool = True  # use BDAT when CHUNKING is offered
    timeouts: Timeouts = Timeouts()
    max_reply_line: int = MAX_REPLY_LINE
    max_reply_lines: int = MAX_REPLY_LINES


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server's EHLO reply announced (RFC 5321 §4.1.1.1); all off after HELO."""

    pipelining: bool = False  # RFC 2920
    size: int | None = None  # RFC 1870: None not offered, 0 offered without a fixed limit
    eight_bit_mime: bool = False  # RFC 6152
    smtputf8: bool = False  # RFC 6531
    starttls: bool = False  # RFC 3207
    dsn: bool = False  # RFC 3461
    chunking: bool = False  # RFC 3030
    enhanced_status_codes: bool = False  # RFC 2034
    requiretls: bool = False  # RFC 8689
    auth: frozenset[str] = frozenset()  # RFC 4954 mechanisms, upper-case

    @classmethod
    def parse(cls, lines: Sequence[str]) -> Extensions:
        """The keyword lines of a 250 reply to EHLO (the first line, the greeting name, excluded)."""
        flags: set[str] = set()
        size: int | None = None
        auth: set[str] = set()
        for line in lines:
            keyword, _, params = line.strip().partition(" ")
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):
                # Old servers announce "AUTH=LOGIN PLAIN" (pre-RFC 4954 syntax).
                auth.update(m.upper() for m in (keyword[5:] + " " + params).split())
            elif keyword == "AUTH":
                auth.update(m.upper() for m in params.split())
            elif keyword == "SIZE":
                value = params.strip()
                size = int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else 0
            elif keyword in _FLAGS:
                flags.add(_FLAGS[keyword])
        return cls(size=size, auth=frozenset(auth), **dict.fromkeys(flags, True))


_FLAGS = {
    "PIPELINING": "pipelining",
    "8BITMIME": "eight_bit_mime",
    "SMTPUTF8": "smtputf8",
    "STARTTLS": "starttls",
    "DSN": "dsn",
    "CHUNKING": "chunking",
    "ENHANCEDSTATUSCODES": "enhanced_status_codes",
    "REQUIRETLS": "requiretls",
}


# ---------------------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Recipient:
    address: Address
    notify: tuple[str, ...] = ()  # RFC 3461 §4.1, passed on when the peer supports DSN
    orcpt: str | None = None  # RFC 3461 §4.2, "addr-type;xtext" as received


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: Address | None  # None: the null reverse-path <>
    recipients: tuple[Recipient, ...]
    size: int  # octets of the message as it will be fed (for SIZE=)
    eight_bit: bool = False  # the body is 8-bit (BODY=8BITMIME)
    smtputf8: bool = False  # the message needs SMTPUTF8 (UTF-8 header fields or addresses)
    ret: str | None = None  # RFC 3461 §4.3 "FULL" / "HDRS"
    envid: str | None = None  # RFC 3461 §4.4, xtext-encoded as received
    requiretls: bool = False  # RFC 8689: MAIL FROM ... REQUIRETLS, over TLS to a server offering it


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: Recipient
    reply: Reply  # the RCPT reply when it refused, else the reply to the end of data
    remote: bool = True  # False: generated here (SIZE/SMTPUTF8/8BITMIME checks, lost connection...)

    @property
    def delivered(self) -> bool:
        return 200 <= self.reply.code < 300

    @property
    def permanent(self) -> bool:
        return self.reply.code >= 500


@dataclass(frozen=True, slots=True)
class TransactionResult:
    recipients: tuple[RecipientResult, ...]  # in the envelope's order
    final: Reply | None  # the reply to the final dot / BDAT LAST; None when no message was sent
    dsn_passed: bool  # NOTIFY/ORCPT/RET/ENVID went to the peer: it sends the DSNs from here on
    tls: bool


# ------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Ready:
    extensions: Extensions
    tls: bool
    authenticated: bool


@dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclass(frozen=True, slots=True)
class SendMessage:
    pass


@dataclass(frozen=True, slots=True)
class TransactionDone:
    result: TransactionResult


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """No transaction was possible. `remote` False: the reply was generated here."""

    reply: Reply
    phase: Phase
    remote: bool


@dataclass(frozen=True, slots=True)
class Closed:
    pass


Event = Ready | StartTLS | SendMessage | TransactionDone | SessionFailed | Closed


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[_NeedData.NEED_DATA] = _NeedData.NEED_DATA


class EngineError(RuntimeError):
    """The shell used the engine wrongly (a bug in the shell, not in the server)."""


class ReplyError(ValueError):
    """The server sent something that is not an SMTP reply, or one past the bounds."""


# ----------------------------------------------------------------------------------- reply parsing


class ReplyParser:
    """Bytes from the server -> `Reply` values (RFC 5321 §4.2), bounded in line length and count.

    The enhanced status code (RFC 2034/3463), when the first line starts with one whose class
    matches the reply code, is split off every line that carries it.
    """

    def __init__(self, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self._buf = bytearray()
        self._code = 0
        self._lines: list[str] = []

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        self._buf.clear()
        self._lines = []

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None; raises ReplyError for garbage."""
        while True:
            newline = self._buf.find(b"\n", 0, self.max_line + 1)
            if newline < 0:
                if len(self._buf) > self.max_line:
                    raise ReplyError("reply line too long")
                return None
            raw = bytes(self._buf[:newline])
            del self._buf[: newline + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            # Servers send Latin-1 and worse in reply texts; the code is what matters.
            line = raw.decode("utf-8", "replace")
            code_text, separator = line[:3], line[3:4]
            if not (len(code_text) == 3 and code_text.isascii() and code_text.isdigit()):
                raise ReplyError(f"bad reply line {line[:40]!r}")
            if separator not in ("", " ", "-") or code_text[0] not in "2345":
                raise ReplyError(f"bad reply line {line[:40]!r}")
            code = int(code_text)
            if self._lines and code != self._code:
                raise ReplyError("reply code changed inside a multi-line reply")
            self._code = code
            self._lines.append(line[4:])
            if len(self._lines) > self.max_lines:
                raise ReplyError("too many reply lines")
            if separator == "-":
                continue
            lines, self._lines = self._lines, []
            return _make_reply(code, lines)


def _make_reply(code: int, lines: list[str]) -> Reply:
    match = _ENHANCED.match(lines[0])
    if match is None or match.group(1) != str(code)[0]:
        return Reply(code, None, lines[0] if len(lines) == 1 else tuple(lines))
    enhanced = f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"
    prefix = match.group(0).rstrip(" ")
    texts = [
        line[len(prefix) + 1 :] if line == prefix or line.startswith(prefix + " ") else line for line in lines
    ]
    return Reply(code, enhanced, texts[0] if len(texts) == 1 else tuple(texts))


# --------------------------------------------------------------------------------- message encoder


class MessageEncoder:
    """Message bytes -> wire text: CRLF line endings (RFC 5321 §2.3.8), with `stuff` dot-stuffing
    (RFC 5321 §4.5.2), across arbitrary chunk boundaries; `finish()` adds a missing final CRLF."""

    def __init__(self, stuff: bool) -> None:
        self.stuff = stuff
        self.octets = 0  # encoded octets so far
        self._line_start = True
        self._pending_cr = False

    def encode(self, data: bytes) -> bytes:
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            # It may be the first half of a CRLF split across chunks: decide with the next one.
            data = data[:-1]
            self._pending_cr = True
        if not data:
            return b""
        newlines = data.count(b"\n")
        if newlines != data.count(b"\r\n") or data.count(b"\r") != newlines:
            data = _ANY_NEWLINE.sub(b"\r\n", data)
        if self.stuff:
            data = data.replace(b"\r\n.", b"\r\n..")
            if self._line_start and data.startswith(b"."):
                data = b"." + data
        self._line_start = data.endswith(b"\r\n")
        self.octets += len(data)
        return data

    def finish(self) -> bytes:
        if self._pending_cr or (self.octets and not self._line_start):
            # A CR left at the very end is a bare CR: it becomes CRLF like any other.
            self._pending_cr = False
            self._line_start = True
            self.octets += 2
            return b"\r\n"
        return b""


# -------------------------------------------------------------------------------------------- engine


class _Cmd(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DOT = "dot"  # the end of a real message
    EMPTY_DOT = "empty_dot"  # ends DATA after a 354 that came though no RCPT was accepted
    BDAT = "bdat"
    BDAT_LAST = "bdat_last"
    QUIT = "quit"


_PHASES = {
    _Cmd.GREETING: Phase.GREETING,
    _Cmd.EHLO: Phase.EHLO,
    _Cmd.HELO: Phase.EHLO,
    _Cmd.STARTTLS: Phase.STARTTLS,
    _Cmd.AUTH: Phase.AUTH,
    _Cmd.RSET: Phase.RSET,
    _Cmd.MAIL: Phase.MAIL,
    _Cmd.RCPT: Phase.RCPT,
    _Cmd.DATA: Phase.DATA_INIT,
    _Cmd.DOT: Phase.DATA_END,
    _Cmd.EMPTY_DOT: Phase.DATA_END,
    _Cmd.BDAT: Phase.DATA_BLOCK,
    _Cmd.BDAT_LAST: Phase.DATA_END,
    _Cmd.QUIT: Phase.QUIT,
}


class _State(enum.Enum):
    SESSION = "session"  # greeting, EHLO, STARTTLS, AUTH
    WAIT_TLS = "wait_tls"  # StartTLS returned, waiting for tls_started()
    READY = "ready"
    TRANSACTION = "transaction"  # waiting for MAIL/RCPT/DATA/end-of-data replies
    MESSAGE = "message"  # the shell feeds message text
    QUITTING = "quitting"
    CLOSED = "closed"


class SMTPClientEngine:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.extensions = Extensions()
        self.tls = settings.tls_active
        self.authenticated = False
        self._parser = ReplyParser(settings.max_reply_line, settings.max_reply_lines)
        self._out = bytearray()
        self._expect: deque[_Cmd] = deque([_Cmd.GREETING])
        self._events: deque[Event] = deque()
        self._state = _State.SESSION
        self._tls_refused = False
        self._auth_steps = 0
        self._auth_mechanism = ""
        self._needs_rset = False
        # transaction
        self._envelope: Envelope | None = None
        self._results: dict[int, RecipientResult] = {}  # decided recipients, by envelope index
        self._rcpt_order: list[int] = []  # envelope indexes sent in RCPT commands, in order
        self._rcpt_next = 0  # next position in _rcpt_order to send (non-pipelined) / answer
        self._accepted: list[int] = []
        self._mail_failure: Reply | None = None
        self._pipelined = False
        self._bdat = False
        self._dsn = False
        self._encoder = MessageEncoder(stuff=True)
        self._held = b""  # BDAT: the latest chunk, sent when the next one (or the end) comes

    # ------------------------------------------------------------------------------ public API

    @property
    def phase(self) -> Phase:
        if self._state is _State.CLOSED:
            return Phase.CLOSED
        if self._expect:
            return _PHASES[self._expect[0]]
        if self._state is _State.MESSAGE:
            return Phase.DATA_BLOCK
        if self._state is _State.WAIT_TLS:
            return Phase.STARTTLS
        return Phase.READY

    @property
    def timeout(self) -> float | None:
        """Seconds the shell allows for the current phase (RFC 5321 §4.5.3.2), None: no wait."""
        return self.settings.timeouts.for_phase(self.phase)

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def receive_data(self, data: bytes) -> None:
        if self._state in (_State.CLOSED, _State.WAIT_TLS):
            # Between our STARTTLS and the handshake nothing the server sends in clear counts
            # (response injection, the client side of CVE-2011-0411).
            return
        self._parser.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | Literal[_NeedData.NEED_DATA]:
        while True:
            if self._events:
                return self._events.popleft()
            if self._state is _State.CLOSED:
                return Closed()
            if self._expect:
                try:
                    reply = self._parser.next_reply()
                except ReplyError:
                    self._abort(R.BAD_REPLY)
                    continue
                if reply is None:
                    return NEED_DATA
                self._handle(self._expect.popleft(), reply)
                continue
            if self._state is _State.MESSAGE:
                return SendMessage()
            raise EngineError(f"nothing to wait for in state {self._state.value}: the shell must act")

    def tls_started(self) -> None:
        """The shell completed the TLS handshake after the server's 220 to STARTTLS."""
        if self._state is not _State.WAIT_TLS:
            raise EngineError("tls_started() without an accepted STARTTLS")
        # RFC 3207 §4.2: discard all knowledge from the server obtained before TLS; EHLO again.
        self._parser.clear()
        self.tls = True
        self.extensions = Extensions()
        self._state = _State.SESSION
        self._command(_Cmd.EHLO, f"EHLO {self.settings.hostname}")

    def send_mail(self, envelope: Envelope) -> None:
        """Start a transaction; TransactionDone follows (at once when a check fails)."""
        if self._state is not _State.READY:
            raise EngineError(f"send_mail() in state {self._state.value}")
        if not envelope.recipients:
            raise EngineError("an envelope needs recipients")
        self._begin(envelope)
        ext = self.extensions
        problem: Reply | None = None
        if ext.size and envelope.size > ext.size:
            problem = R.too_big_for_server(envelope.size, ext.size)
        elif self._needs_utf8(envelope) and not ext.smtputf8:
            problem = R.NEEDS_SMTPUTF8
        elif envelope.eight_bit and not ext.eight_bit_mime:
            problem = R.NEEDS_8BITMIME
        elif envelope.requiretls and not (self.tls and ext.requiretls):
            # RFC 8689 §4.2.1: the next hop must offer REQUIRETLS (after STARTTLS, where it is
            # offered at all); otherwise the message is not sent and is returned (5.7.30).
            problem = R.REQUIRETLS_NOT_OFFERED
        if problem is not None:
            for index in range(len(envelope.recipients)):
                self._decide(index, problem, remote=False)
            self._finish(None)
            return
        for index, recipient in enumerate(envelope.recipients):
            if not recipient.address.is_ascii and not ext.smtputf8:
                self._decide(index, R.ADDRESS_NEEDS_SMTPUTF8, remote=False)
            else:
                self._rcpt_order.append(index)
        if not self._rcpt_order:
            self._finish(None)
            return
        self._state = _State.TRANSACTION
        self._pipelined = self.settings.pipelining and ext.pipelining
        self._bdat = self.settings.chunking and ext.chunking
        self._dsn = ext.dsn
        self._encoder = MessageEncoder(stuff=not self._bdat)
        if self._pipelined:
            # RFC 2920 §3.1: RSET, MAIL and RCPT anywhere in a group, DATA only last.
            if self._needs_rset:
                self._command(_Cmd.RSET, "RSET")
            self._command(_Cmd.MAIL, self._mail_line(envelope))
            for index in self._rcpt_order:
                self._command(_Cmd.RCPT, self._rcpt_line(envelope.recipients[index]))
            if not self._bdat:
                self._command(_Cmd.DATA, "DATA")
        elif self._needs_rset:
            self._command(_Cmd.RSET, "RSET")
        else:
            self._command(_Cmd.MAIL, self._mail_line(envelope))
        self._needs_rset = False

    def send_message_data(self, chunk: bytes) -> None:
        """Message text, any chunking; only while SendMessage is what next_event() returns."""
        self._check_message_state()
        if not self._bdat:
            self._out += self._encoder.encode(chunk)
            return
        encoded = self._encoder.encode(chunk)
        if not encoded:
            return
        if self._held:
            # RFC 3030 §2: BDAT <size> then exactly that many octets; we wait for its reply.
            self._out += b"BDAT %d\r\n" % len(self._held) + self._held
            self._expect.append(_Cmd.BDAT)
        self._held = encoded

    def end_message(self) -> None:
        self._check_message_state()
        tail = self._encoder.finish()
        if self._bdat:
            last = self._held + tail
            self._held = b""
            self._out += b"BDAT %d LAST\r\n" % len(last) + last
            self._expect.append(_Cmd.BDAT_LAST)
        else:
            self._out += tail + b".\r\n"  # RFC 5321 §4.1.1.4
            self._expect.append(_Cmd.DOT)
        self._state = _State.TRANSACTION

    def quit(self) -> None:
        if self._state is _State.CLOSED:
            return
        if self._state is not _State.READY:
            raise EngineError(f"quit() in state {self._state.value}")
        self._quit()

    def tls_failed(self, reply: Reply = R.TLS_FAILED) -> None:
        """The TLS handshake after StartTLS failed; the shell closes (and may retry in clear).
        `reply`: what to record, e.g. with the reason a certificate was not accepted."""
        self._abort(reply)

    def abort(self, reply: Reply) -> None:
        """Give up on the connection with a locally generated `reply` (e.g. shutting down)."""
        self._abort(reply)

    def connection_lost(self) -> None:
        """The server closed the connection (EOF or reset)."""
        self._abort(R.CONNECTION_LOST)

    def timed_out(self) -> None:
        """The shell's timer for the current phase expired; the shell closes the connection."""
        self._abort(R.timed_out_in(self.phase.value))

    # ------------------------------------------------------------------------------ replies

    def _handle(self, cmd: _Cmd, reply: Reply) -> None:
        if reply.code == 421 and cmd is not _Cmd.QUIT:
            # RFC 5321 §3.8: the server is closing the transmission channel.
            self._abort(reply, remote=True, phase=_PHASES[cmd])
            return
        match cmd:
            case _Cmd.GREETING:
                if reply.code == 220:
                    self._command(_Cmd.EHLO, f"EHLO {self.settings.hostname}")
                else:
                    # RFC 5321 §3.1: after a 554 greeting the client should QUIT.
                    self._session_failed(reply, Phase.GREETING, remote=True)
            case _Cmd.EHLO:
                if reply.code == 250:
                    self.extensions = Extensions.parse(reply.lines[1:])
                    self._after_hello()
                elif reply.code >= 500:
                    self._command(_Cmd.HELO, f"HELO {self.settings.hostname}")  # RFC 5321 §3.2
                else:
                    self._session_failed(reply, Phase.EHLO, remote=True)
            case _Cmd.HELO:
                if reply.code == 250:
                    self.extensions = Extensions()
                    self._after_hello()
                else:
                    self._session_failed(reply, Phase.EHLO, remote=True)
            case _Cmd.STARTTLS:
                if reply.code == 220:
                    self._parser.clear()  # anything after the 220 in clear text is an injection
                    self._state = _State.WAIT_TLS
                    self._events.append(StartTLS())
                elif self.settings.require_tls:
                    self._session_failed(reply, Phase.STARTTLS, remote=True)
                else:
                    self._tls_refused = True  # RFC 3207 §4: go on without TLS
                    self._after_hello()
            case _Cmd.AUTH:
                self._auth_reply(reply)
            case _Cmd.QUIT:
                self._close()
            case _:
                self._transaction_reply(cmd, reply)

    def _after_hello(self) -> None:
        ext = self.extensions
        if not self.tls:
            if self.settings.starttls and ext.starttls and not self._tls_refused:
                self._command(_Cmd.STARTTLS, "STARTTLS")
                return
            if self.settings.require_tls:
                self._session_failed(R.TLS_NOT_OFFERED, Phase.STARTTLS, remote=False)
                return
        credentials = self.settings.credentials
        if credentials is not None and not self.authenticated:
            if not self.tls and not self.settings.auth_without_tls:
                self._session_failed(R.AUTH_NEEDS_TLS, Phase.AUTH, remote=False)
                return
            if "PLAIN" in ext.auth:
                self._auth_mechanism = "PLAIN"
                # RFC 4616: authzid NUL authcid NUL passwd, sent as the RFC 4954 §4 initial response.
                self._command(_Cmd.AUTH, "AUTH PLAIN " + self._plain(credentials))
            elif "LOGIN" in ext.auth:
                self._auth_mechanism = "LOGIN"
                self._command(_Cmd.AUTH, "AUTH LOGIN")
            else:
                self._session_failed(R.AUTH_NOT_OFFERED, Phase.AUTH, remote=False)
            return
        self._state = _State.READY
        self._events.append(Ready(ext, self.tls, self.authenticated))

    def _auth_reply(self, reply: Reply) -> None:
        credentials = self.settings.credentials
        assert credentials is not None
        if reply.code == 235:
            self.authenticated = True
            self._after_hello()
            return
        if reply.code == 334 and self._auth_steps < 2:
            step = self._auth_steps
            self._auth_steps += 1
            if self._auth_mechanism == "PLAIN":
                # The server ignored the initial response and asks for it (RFC 4954 §4).
                self._command(_Cmd.AUTH, self._plain(credentials))
            else:
                # LOGIN: the first challenge asks for the user name, the second for the password.
                value = credentials.username if step == 0 else credentials.password
                self._command(_Cmd.AUTH, _b64(value.encode("utf-8")))
            return
        if reply.code == 334:
            self._command(_Cmd.AUTH, "*")  # RFC 4954 §4: cancel an exchange that does not end
            return
        # Like Postfix (smtp_sasl_auth_soft_bounce), an AUTH failure keeps the mail queued:
        # the reply is passed on, the caller treats every session failure as temporary.
        self._session_failed(reply, Phase.AUTH, remote=True)

    @staticmethod
    def _plain(credentials: Credentials) -> str:
        return _b64(
            b"\0" + credentials.username.encode("utf-8") + b"\0" + credentials.password.encode("utf-8")
        )

    def _transaction_reply(self, cmd: _Cmd, reply: Reply) -> None:
        envelope = self._envelope
        assert envelope is not None
        ok = 200 <= reply.code < 300
        match cmd:
            case _Cmd.RSET:
                if not self._pipelined:
                    self._command(_Cmd.MAIL, self._mail_line(envelope))
            case _Cmd.MAIL:
                if not ok:
                    self._mail_failure = reply
                    if not self._pipelined:
                        self._finish(None)
                elif not self._pipelined:
                    self._send_next_rcpt()
            case _Cmd.RCPT:
                index = self._rcpt_order[self._rcpt_next]
                self._rcpt_next += 1
                if self._mail_failure is None:
                    if ok:
                        self._accepted.append(index)
                    else:
                        self._decide(index, reply)
                if self._rcpt_next < len(self._rcpt_order):
                    if not self._pipelined:
                        self._send_next_rcpt()
                    return
                # The last RCPT reply of the transaction.
                if self._mail_failure is not None or not self._accepted:
                    if self._pipelined and not self._bdat:
                        return  # the DATA reply is still to come
                    self._needs_rset = self._mail_failure is None
                    self._finish(None)
                elif self._bdat:
                    self._state = _State.MESSAGE
                elif not self._pipelined:
                    self._command(_Cmd.DATA, "DATA")
            case _Cmd.DATA:
                if reply.code == 354 and (self._mail_failure is not None or not self._accepted):
                    # RFC 2920 §3.1: no message content without an accepted recipient, but a 354
                    # must be answered: end the (empty) data at once.
                    self._out += b".\r\n"
                    self._expect.append(_Cmd.EMPTY_DOT)
                elif reply.code == 354:
                    self._state = _State.MESSAGE
                else:
                    self._needs_rset = self._mail_failure is None
                    self._fail_accepted(reply)
                    self._finish(None)
            case _Cmd.EMPTY_DOT:
                self._needs_rset = True
                self._finish(None)
            case _Cmd.DOT | _Cmd.BDAT_LAST:
                # RFC 5321 §4.1.1.4: whatever the reply, the transaction is over.
                self._needs_rset = cmd is _Cmd.BDAT_LAST and not ok
                self._fail_accepted(reply)
                self._finish(reply)
            case _Cmd.BDAT:
                if ok:
                    self._state = _State.MESSAGE
                else:
                    # RFC 3030 §2: after a refused chunk the rest is not sent; RSET before more.
                    self._held = b""
                    self._needs_rset = True
                    self._fail_accepted(reply)
                    self._finish(None)
            case _:
                raise EngineError(f"unexpected {cmd}")

    def _send_next_rcpt(self) -> None:
        envelope = self._envelope
        assert envelope is not None
        index = self._rcpt_order[self._rcpt_next]
        self._command(_Cmd.RCPT, self._rcpt_line(envelope.recipients[index]))

    # ------------------------------------------------------------------------------ helpers

    def _command(self, cmd: _Cmd, line: str) -> None:
        self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append(cmd)

    def _mail_line(self, envelope: Envelope) -> str:
        ext = self.extensions
        parts = [f"MAIL FROM:<{envelope.sender if envelope.sender is not None else ''}>"]
        if ext.size is not None:
            parts.append(f"SIZE={envelope.size}")  # RFC 1870 §6
        if envelope.eight_bit:
            parts.append("BODY=8BITMIME")  # RFC 6152 §3; send_mail checked the peer has it
        if ext.smtputf8 and (self._needs_utf8(envelope) or self._utf8_recipients(envelope)):
            parts.append("SMTPUTF8")  # RFC 6531 §3.4
        if envelope.requiretls:
            parts.append("REQUIRETLS")  # RFC 8689 §4.2.1: passed on; send_mail checked the peer has it
        if ext.dsn:
            if envelope.ret:
                parts.append(f"RET={envelope.ret}")  # RFC 3461 §4.3
            if envelope.envid:
                parts.append(f"ENVID={envelope.envid}")  # RFC 3461 §4.4
        return " ".join(parts)

    def _rcpt_line(self, recipient: Recipient) -> str:
        parts = [f"RCPT TO:<{recipient.address}>"]
        if self.extensions.dsn:
            if recipient.notify:
                parts.append("NOTIFY=" + ",".join(recipient.notify))  # RFC 3461 §4.1
            if recipient.orcpt:
                parts.append(f"ORCPT={recipient.orcpt}")  # RFC 3461 §4.2
        return " ".join(parts)

    @staticmethod
    def _needs_utf8(envelope: Envelope) -> bool:
        return envelope.smtputf8 or (envelope.sender is not None and not envelope.sender.is_ascii)

    @staticmethod
    def _utf8_recipients(envelope: Envelope) -> bool:
        return any(not r.address.is_ascii for r in envelope.recipients)

    def _check_message_state(self) -> None:
        if self._state is not _State.MESSAGE or self._expect:
            raise EngineError("message data only when next_event() returned SendMessage")

    def _begin(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._results = {}
        self._rcpt_order = []
        self._rcpt_next = 0
        self._accepted = []
        self._mail_failure = None
        self._held = b""

    def _decide(self, index: int, reply: Reply, *, remote: bool = True) -> None:
        envelope = self._envelope
        assert envelope is not None
        if index not in self._results:
            self._results[index] = RecipientResult(envelope.recipients[index], reply, remote)

    def _fail_accepted(self, reply: Reply) -> None:
        for index in self._accepted:
            self._decide(index, reply)

    def _finish(self, final: Reply | None) -> None:
        envelope = self._envelope
        assert envelope is not None
        for index in range(len(envelope.recipients)):
            # Everyone not decided yet was refused with MAIL (or never got an answer).
            self._decide(
                index, self._mail_failure or R.CONNECTION_LOST, remote=self._mail_failure is not None
            )
        result = TransactionResult(
            recipients=tuple(self._results[i] for i in range(len(envelope.recipients))),
            final=final,
            dsn_passed=self._dsn and final is not None,
            tls=self.tls,
        )
        self._envelope = None
        self._expect.clear()
        if self._state is not _State.CLOSED:
            self._state = _State.READY
        self._events.append(TransactionDone(result))

    def _session_failed(self, reply: Reply, phase: Phase, *, remote: bool) -> None:
        if reply.code < 400:
            # A positive reply where the step needed another (a 250 greeting, a 220 to EHLO) is a
            # protocol error (RFC 3463 X.5.0), not a reason: a DSN quoting it would read as success.
            reply, remote = R.unexpected_reply(reply.code), False
        self._events.append(SessionFailed(reply, phase, remote))
        self._quit()

    def _quit(self) -> None:
        self._expect.clear()
        self._state = _State.QUITTING
        self._command(_Cmd.QUIT, "QUIT")

    def _abort(self, reply: Reply, *, remote: bool = False, phase: Phase | None = None) -> None:
        """The connection is unusable: decide everyone still open with `reply`, then close."""
        if self._state is _State.CLOSED:
            return
        if self._envelope is not None:
            for index in self._rcpt_order:
                self._decide(index, reply, remote=remote)
            self._state = _State.CLOSED
            self._finish(None)
        elif self._state in (_State.SESSION, _State.WAIT_TLS):
            self._events.append(SessionFailed(reply, phase or self.phase, remote))
        self._close()

    def _close(self) -> None:
        self._state = _State.CLOSED
        self._expect.clear()
        self._parser.clear()
        self._events.append(Closed())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
