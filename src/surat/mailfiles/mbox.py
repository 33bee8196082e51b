"""mbox files (RFC 4155), read as a stream and written for other tools.

Reading. The file is read line by line, each read bounded by LINE_BOUND octets (a longer line comes in
pieces, and only the first piece of a line is looked at), so memory stays flat whatever the file holds.
A message starts at a line that
- begins with "From " (RFC 4155 §2: the separator line), and
- carries a timestamp in the asctime form RFC 4155 §2 gives ("Sat Jan  3 01:05:34 1996", UTC; a zone
  like "+0000" or "UTC" before the year is accepted), so that an unescaped "From " line in a body
  (mboxo writers escape only sometimes) does not cut a message in two unless it also looks exactly
  like a separator.
The empty line before a separator belongs to the mbox, not to the message (RFC 4155 §2: each message
is followed by an empty line), and is dropped. Escaping is taken to be mboxrd: a line of one or more
">" then "From " loses one ">" (an mboxo file's ">From " lines lose their ">", which is what mboxo
writers meant in all but rare cases).

Writing (mboxrd): every line of the form ">*From " gets one more ">", the message ends with a line
break and an empty line; separators are "From MAILER-DAEMON <asctime in UTC>".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

# The longest piece read at once; a separator line is far shorter (RFC 4155 separators are one
# address and a date), so only a line's first piece is examined.
LINE_BOUND = 64 * 1024

_MONTHS = {name: n for n, name in enumerate((b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul",
                                              b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), start=1)}  # fmt: skip
_WEEKDAYS = frozenset((b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"))
_ASCTIME_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ASCTIME_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def separator_date(line: bytes) -> datetime | None:
    """The timestamp of an RFC 4155 separator line (UTC), or None if `line` is not one.

    Linear: one split into at most a dozen tokens, then a scan for weekday, month, day, time, year."""
    if not line.startswith(b"From "):
        return None
    tokens = line[5:].split(None, 12)
    for i in range(len(tokens) - 4):
        if tokens[i] not in _WEEKDAYS or tokens[i + 1] not in _MONTHS:
            continue
        day, clock = tokens[i + 2], tokens[i + 3]
        rest = tokens[i + 4 : i + 6]
        # an optional zone between the time and the year ("+0000", "UTC")
        year = rest[0] if rest[0].isdigit() else rest[1] if len(rest) > 1 and rest[1].isdigit() else b""
        parts = clock.split(b":")
        if not (
            day.isdigit() and len(year) == 4 and 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts)
        ):
            return None
        try:
            return datetime(
                int(year),
                _MONTHS[tokens[i + 1]],
                int(day),
                int(parts[0]),
                int(parts[1]),
                int(parts[2]) if len(parts) == 3 else 0,
                tzinfo=UTC,
            )
        except ValueError:
            return None
    return None


def separator_line(moment: datetime, sender: str = "MAILER-DAEMON") -> bytes:
    """`From SENDER <asctime>` in UTC (RFC 4155 §2), with its line break."""
    utc = moment.astimezone(UTC)
    return (
        f"From {sender} {_ASCTIME_WEEKDAYS[utc.weekday()]} {_ASCTIME_MONTHS[utc.month - 1]} "
        f"{utc.day:2d} {utc:%H:%M:%S} {utc.year:04d}\n"
    ).encode()


def is_escaped_from(line: bytes) -> bool:
    """`>*From ` at the start of a line: what mboxrd escapes by one more ">"."""
    return line.lstrip(b">").startswith(b"From ")


@dataclass(slots=True)
class MboxMessage:
    """One message of an mbox: where it starts and its separator's date. Its lines come from
    `MboxReader.lines()`, which must be read (or is skipped) before the next message."""

    offset: int  # of its separator line in the file
    number: int  # 1, 2, ... in the file
    separator_date: datetime | None


class MboxReader:
    """Messages of an mbox file, streamed: `for message in reader: for piece in reader.lines(): ...`.

    `lines()` yields pieces of the message's lines (each ending with its line break, unless the line
    was longer than LINE_BOUND and is continued by the next piece), unescaped (mboxrd), without the
    empty line that precedes the next separator. Line endings are left as they are in the file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._offset = 0
        self._number = 0
        self._next: tuple[int, bytes] | None = None  # a separator read ahead: (offset, line)
        self._in_message = False
        self._started = False

    def _read(self) -> tuple[int, bytes]:
        """(offset, piece): at most LINE_BOUND octets, up to and with the next line break."""
        start = self._offset
        piece = self._file.readline(LINE_BOUND)
        self._offset += len(piece)
        return start, piece

    def __iter__(self) -> Iterator[MboxMessage]:
        while True:
            if self._in_message:
                for _ in self.lines():
                    pass
            if not self._started:
                self._started = True
                self._find_first_separator()
            if self._next is None:
                return
            offset, line = self._next
            self._next = None
            self._number += 1
            self._in_message = True
            yield MboxMessage(offset, self._number, separator_date(line))

    def _find_first_separator(self) -> None:
        # Text before the first separator is not a message (RFC 4155 §2: a file starts with one).
        at_line_start = True
        while True:
            offset, piece = self._read()
            if not piece:
                return
            if at_line_start and separator_date(piece) is not None:
                self._next = (offset, piece)
                return
            at_line_start = piece.endswith(b"\n")

    def lines(self) -> Iterator[bytes]:
        if not self._in_message:
            return
        held: bytes | None = None  # the last full line, held back: it may be the empty one to drop
        at_line_start = True
        while True:
            offset, piece = self._read()
            if not piece:
                break
            if at_line_start and separator_date(piece) is not None:
                self._next = (offset, piece)
                if held is not None and held not in (b"\n", b"\r\n"):
                    yield held
                self._in_message = False
                return
            if at_line_start and piece.startswith(b">") and is_escaped_from(piece):
                piece = piece[1:]  # mboxrd: one ">" less
            if held is not None:
                yield held
                held = None
            at_line_start = piece.endswith(b"\n")
            if at_line_start:
                held = piece
            else:
                yield piece
        if held is not None and held not in (b"\n", b"\r\n"):
            yield held
        self._in_message = False
