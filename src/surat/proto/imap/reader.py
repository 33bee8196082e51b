"""The sans-IO IMAP command reader: bytes in, commands and literal events out.

The reader frames commands (lines plus literals, RFC 9051 §4.3 and §2.2.1), enforces every size limit,
and hands each complete command to ``parser.parse_command``. Literal bodies of APPEND are never held whole:
the reader emits ``AppendMessage`` (the message's flags, date and size), then ``LiteralChunk`` events, so a
50 MiB APPEND costs at most one read buffer of memory. Small literals inside other commands (a mailbox
name, a search string) are inlined into the command bytes and reach the parser as strings.

Use from the shell::

    reader.receive_data(data)
    while (event := reader.next_event()) is not NEED_DATA:
        match event:
            case NeedLiteral(synchronizing=True): reader.accept_literal(); write(b"+ Ready\\r\\n")
                                                  # or reader.reject_literal(); write(b"tag NO [TOOBIG] ...")
            case LiteralTooBig(): ...   # NO [TOOBIG]; or BAD + close when not synchronizing
            case ParseError(): ...      # BAD; close the connection if event.close
            case AppendMessage() | LiteralChunk(): spool
            case _: dispatch the command
"""

from __future__ import annotations

import datetime
import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from surat.proto.imap import commands as c
from surat.proto.imap.parser import CommandSyntaxError, Scanner, _Fail, parse_command, parse_tag

__all__ = [
    "NEED_DATA",
    "CommandReader",
    "ContinuationLine",
    "Event",
    "LiteralChunk",
    "LiteralTooBig",
    "NeedData",
    "NeedLiteral",
    "ParseError",
    "ReaderLimits",
]


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    """A literal was announced. For a synchronizing literal (`{n}`) the reader waits until the shell calls
    ``accept_literal()`` (and sends `+ ...`) or ``reject_literal()`` (and sends a tagged NO/BAD). For a
    non-synchronizing one (`{n+}`, RFC 7888) the client is already sending: this is informational only.

    ``append`` is True for an APPEND message literal (limit: APPENDLIMIT), whose ``AppendMessage`` event came
    just before; ``binary`` for literal8 (RFC 3516).
    """

    size: int
    synchronizing: bool
    tag: str = "*"
    append: bool = False
    binary: bool = False


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """A piece of the current APPEND message's bytes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ParseError:
    """The command is malformed: reply ``tag BAD message`` (``code`` in brackets if set).

    ``code`` "BADCHARSET" asks for ``NO [BADCHARSET]`` instead (RFC 9051 §6.4.4). When ``close`` is set the
    reader cannot find the next command boundary; the shell sends the BAD, then BYE, and closes.
    """

    tag: str
    message: str
    code: str | None = None
    close: bool = False


@dataclass(frozen=True, slots=True)
class LiteralTooBig:
    """A literal over the limit. Synchronizing: reply ``tag NO [TOOBIG]`` and go on (the client never sends
    it, RFC 9051 §7.1 TOOBIG, RFC 7889 §3). Non-synchronizing: reply ``tag BAD [TOOBIG]``, then close,
    because its bytes are already on the way (RFC 7888 §4)."""

    tag: str
    size: int
    limit: int
    synchronizing: bool
    append: bool


@dataclass(frozen=True, slots=True)
class ContinuationLine:
    """A line read after ``expect_line()``: an AUTHENTICATE response or the `DONE` ending IDLE. No CRLF."""

    line: bytes


Event = (
    c.Command
    | c.AppendMessage
    | NeedLiteral
    | LiteralChunk
    | ParseError
    | LiteralTooBig
    | ContinuationLine
    | Literal[NeedData.NEED_DATA]
)


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    max_line: int = 64 * 1024  # command text, excluding literal bytes
    max_literal: int = 64 * 1024  # a literal inside a command other than an APPEND message
    max_literals: int = 32  # literals per command (APPEND messages not counted)
    max_inline_total: int = 1024 * 1024  # all inline literal bytes of one command
    max_append_literal: int = 50 * 1024 * 1024  # APPENDLIMIT (RFC 7889)
    max_append_messages: int = 1000  # MULTIAPPEND messages per command (RFC 3502)
    literal_plus: bool = True  # LITERAL+; False means LITERAL- (RFC 7888 §5: non-sync literals <= 4096)
    chunk_size: int = 64 * 1024


_LITERAL_MINUS_MAX: Final = 4096
_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")


class _State(enum.Enum):
    LINE = "line"
    WAIT_CONTINUATION = "wait_continuation"  # a synchronizing literal awaits accept/reject
    INLINE_LITERAL = "inline_literal"
    APPEND_LITERAL = "append_literal"
    CONT_LINE = "cont_line"  # expect_line() was called
    CLOSED = "closed"


@dataclass(slots=True)
class _AppendContext:
    tag: str
    mailbox: str
    count: int = 0
    close_paren: bool = False  # the previous message used RFC 6855 `UTF8 (~{n})`


class CommandReader:
    """Byte-fed IMAP command reader (RFC 9051 §2.2.1). See the module docstring for the event loop."""

    def __init__(self, limits: ReaderLimits | None = None) -> None:
        self.limits = limits or ReaderLimits()
        self._buf = bytearray()
        self._scan_from = 0  # bytes of _buf already searched for a line end
        self._state = _State.LINE
        self._cmd = bytearray()  # wire bytes of the command so far (inline literals included)
        self._line_len = 0
        self._literal_count = 0
        self._inline_total = 0
        self._remaining = 0  # bytes left of the current literal
        self._pending: NeedLiteral | None = None
        self._append: _AppendContext | None = None
        self._next_append: _AppendContext | None = None
        self._out: deque[Event] = deque()

    # -- public API --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (lets the shell bound its reads)."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        if self._state is not _State.CLOSED:
            self._buf += data

    def expect_line(self) -> None:
        """The next line is a continuation (AUTHENTICATE response, IDLE's DONE), not a command."""
        if self._state is not _State.LINE or self._cmd:
            raise RuntimeError("expect_line() is only valid between commands")
        self._state = _State.CONT_LINE

    def accept_literal(self) -> None:
        """The shell sent `+` for the pending synchronizing literal: read it."""
        if self._state is not _State.WAIT_CONTINUATION or self._pending is None:
            raise RuntimeError("no synchronizing literal is pending")
        self._state = _State.APPEND_LITERAL if self._pending.append else _State.INLINE_LITERAL
        self._pending = None

    def reject_literal(self) -> None:
        """The shell refused the pending synchronizing literal with a tagged NO/BAD: the client will not send
        it and the command is over (RFC 9051 §4.3)."""
        if self._state is not _State.WAIT_CONTINUATION:
            raise RuntimeError("no synchronizing literal is pending")
        self._reset()

    def next_event(self) -> Event:
        if self._out:
            return self._out.popleft()
        while True:
            state = self._state
            if state is _State.LINE:
                event = self._read_line()
            elif state is _State.INLINE_LITERAL:
                event = self._read_inline_literal()
            elif state is _State.APPEND_LITERAL:
                event = self._read_append_chunk()
            elif state is _State.CONT_LINE:
                return self._read_cont_line()
            elif state is _State.WAIT_CONTINUATION:
                raise RuntimeError("call accept_literal() or reject_literal() first")
            else:
                return NEED_DATA
            if event is not None:
                return event

    # -- internals ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._state = _State.LINE
        self._cmd.clear()
        self._line_len = 0
        self._literal_count = 0
        self._inline_total = 0
        self._remaining = 0
        self._pending = None
        self._append = None
        self._next_append = None
        self._out.clear()

    def _tag(self) -> str:
        if self._append is not None:
            return self._append.tag
        return parse_tag(bytes(self._cmd[:256])) or "*"

    def _close(self, message: str, tag: str | None = None) -> ParseError:
        tag = tag if tag is not None else self._tag()
        self._reset()
        self._state = _State.CLOSED
        self._buf.clear()
        self._scan_from = 0
        return ParseError(tag, message, close=True)

    def _take_line(self, limit: int) -> bytes | ParseError | None:
        """The next line without its terminator, None if incomplete, or a closing error if too long."""
        # Resume the search where the last one stopped: a line trickling in byte by byte costs O(n), not O(n²).
        idx = self._buf.find(b"\n", self._scan_from, limit + 2)
        if idx < 0:
            self._scan_from = len(self._buf)
            if len(self._buf) > limit + 1:
                # Without a line end within the limit the next command boundary cannot be found safely.
                if self._state is _State.LINE and not self._cmd:
                    self._cmd += self._buf[:256]
                return self._close("command line too long")
            return None
        end = idx - 1 if idx > 0 and self._buf[idx - 1] == 0x0D else idx  # bare LF tolerated
        line = bytes(self._buf[:end])
        del self._buf[: idx + 1]
        self._scan_from = 0
        if len(line) > limit:
            if self._state is _State.LINE and not self._cmd:
                self._cmd += line[:256]
            return self._close("command line too long")
        return line

    def _read_cont_line(self) -> Event:
        line = self._take_line(self.limits.max_line)
        if line is None:
            return NEED_DATA
        if isinstance(line, ParseError):
            return line
        self._state = _State.LINE
        return ContinuationLine(line)

    def _read_line(self) -> Event | None:
        line = self._take_line(self.limits.max_line - self._line_len)
        if line is None:
            return NEED_DATA
        if isinstance(line, ParseError):
            return line
        self._line_len += len(line)
        match = _LITERAL_AT_END.search(line)
        if match is None:
            return self._complete(line)
        binary = match.group(1) == b"~"
        size = int(match.group(2))
        synchronizing = match.group(3) == b""
        head = line[: match.start()]
        return self._literal_announced(head, line, size, synchronizing=synchronizing, binary=binary)

    def _complete(self, line: bytes) -> Event | None:
        append = self._append
        if append is not None:
            # After an APPEND message: CRLF ends the command (RFC 3502 §6.3.11: the CRLF after the last).
            tag = append.tag
            if line != (b")" if append.close_paren else b""):
                self._reset()
                return ParseError(tag, "unexpected data after APPEND message")
            self._reset()
            return c.Append(tag, append.mailbox, append.count)
        data = bytes(self._cmd) + line
        self._reset()
        if not data:
            return None  # an empty line is not a command; skip it
        if _command_name(data) == "APPEND":
            return ParseError(parse_tag(data) or "*", "APPEND needs a message literal")
        try:
            return parse_command(data)
        except CommandSyntaxError as exc:
            return ParseError(exc.tag, exc.message, exc.code)

    def _literal_announced(
        self, head: bytes, line: bytes, size: int, *, synchronizing: bool, binary: bool
    ) -> Event | None:
        limits = self.limits
        prefix = bytes(self._cmd) + head
        tag = self._append.tag if self._append is not None else (parse_tag(prefix) or "*")
        is_append = self._append is not None or (
            _command_name(prefix) == "APPEND" and not _at_append_mailbox(prefix)
        )
        append_event: c.AppendMessage | None = None
        if is_append:
            try:
                append_event = self._append_header(prefix, size, binary)
            except _Fail as exc:
                if synchronizing:
                    self._reset()
                    return ParseError(tag, exc.message)
                return self._close(exc.message, tag)
            limit = limits.max_append_literal
        else:
            limit = min(limits.max_literal, limits.max_inline_total - self._inline_total)
            self._literal_count += 1
            if self._literal_count > limits.max_literals:
                if synchronizing:
                    self._reset()
                    return ParseError(tag, "too many literals in one command")
                return self._close("too many literals in one command", tag)
        if not synchronizing and not limits.literal_plus and size > _LITERAL_MINUS_MAX:
            # RFC 7888 §4 (LITERAL-): a larger non-synchronizing literal is a protocol error.
            return self._close("non-synchronizing literal over 4096 octets", tag)
        if size > limit:
            self._reset()
            if not synchronizing:
                self._state = _State.CLOSED
                self._buf.clear()
                self._scan_from = 0
            return LiteralTooBig(tag, size, limit, synchronizing, is_append)
        need = NeedLiteral(size, synchronizing, tag, is_append, binary)
        self._remaining = size
        if is_append:
            self._cmd.clear()
            self._append = self._next_append
        else:
            self._cmd += line + b"\r\n"
            self._inline_total += size
        if synchronizing:
            self._pending = need
            self._state = _State.WAIT_CONTINUATION
        else:
            self._state = _State.APPEND_LITERAL if is_append else _State.INLINE_LITERAL
        if append_event is not None:
            # The shell learns the message's metadata first, then the literal, so it can refuse a
            # synchronizing literal (missing mailbox, quota) before the client sends the bytes.
            self._out.append(need)
            return append_event
        return need

    def _append_header(self, prefix: bytes, size: int, binary: bool) -> c.AppendMessage:
        """Parse `tag APPEND mailbox` (first message) or the text after the previous message, up to the
        literal. RFC 9051 §9: append = "APPEND" SP mailbox 1*append-message;
        append-message = append-opts SP append-data; append-opts = [SP flag-list] [SP date-time]."""
        ctx = self._append
        s = Scanner(prefix)
        if ctx is None:
            tag = parse_tag(prefix)
            if tag is None:
                raise _Fail("invalid or missing tag")
            s.pos = len(tag)
            s.sp()
            s.atom()
            s.sp()
            ctx = _AppendContext(tag, s.mailbox())
        elif ctx.close_paren:
            s.expect(b")")
        if ctx.count >= self.limits.max_append_messages:
            raise _Fail("too many messages in one APPEND")
        flags: tuple[str, ...] = ()
        date: datetime.datetime | None = None
        s.sp()
        if s.peek() == 0x28:
            flags = s.flag_list()
            s.sp()
        if s.peek() == 0x22:
            date = s.date_time()
            s.sp()
        utf8 = False
        if s.keyword("UTF8"):
            # RFC 6855 §4: append-data =/ "UTF8" SP "(" literal8 ")"
            s.sp()
            s.expect(b"(")
            utf8 = True
            if not binary:
                raise _Fail("UTF8 APPEND data must be a literal8")
        s.end()
        event = c.AppendMessage(ctx.tag, ctx.mailbox, flags, date, size, binary, utf8, ctx.count)
        self._next_append = _AppendContext(ctx.tag, ctx.mailbox, ctx.count + 1, utf8)
        return event

    def _read_inline_literal(self) -> Event | None:
        if len(self._buf) < self._remaining:
            return NEED_DATA
        n = self._remaining
        self._cmd += self._buf[:n]
        del self._buf[:n]
        self._scan_from = 0
        self._remaining = 0
        self._state = _State.LINE
        return None

    def _read_append_chunk(self) -> Event | None:
        if self._remaining == 0:
            # The message is complete; what follows is CRLF, or the next message of a MULTIAPPEND.
            self._line_len = 0
            self._state = _State.LINE
            return None
        if not self._buf:
            return NEED_DATA
        n = min(self._remaining, len(self._buf), self.limits.chunk_size)
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        self._scan_from = 0
        self._remaining -= n
        return LiteralChunk(chunk)


def _command_name(data: bytes) -> str | None:
    tag = parse_tag(data)
    if tag is None:
        return None
    s = Scanner(data, len(tag))
    try:
        s.sp()
        return s.atom().upper()
    except _Fail:
        return None


def _at_append_mailbox(prefix: bytes) -> bool:
    """Whether a literal starting right after ``prefix`` is APPEND's mailbox name, the only APPEND argument
    that can be a literal besides the messages (flags and date-time cannot be)."""
    tag = parse_tag(prefix)
    if tag is None:
        return False
    s = Scanner(prefix, len(tag))
    try:
        s.sp()
        s.atom()
        s.sp()
    except _Fail:
        return False
    return s.at_end()
