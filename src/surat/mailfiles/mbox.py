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

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

# The longest separator line looked at; RFC 4155 separators are one address and a date, far shorter.
LINE_BOUND = 64 * 1024
# Octets read from the file at once.
READ_CHUNK = 256 * 1024

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
    """Messages of an mbox file, streamed: `for message in reader: for block in reader.lines(): ...`.

    The file is read READ_CHUNK octets at a time and searched for separators with bytes.find, so
    that the per-line work of a large mbox is done in C, not per line in Python. `lines()` yields
    blocks of the message (at most about READ_CHUNK + LINE_BOUND octets each; a block may end inside
    a line, the next one continues it), unescaped (mboxrd), without the empty line that precedes the
    next separator. Line endings are left as they are in the file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._buffer = b""
        self._base = 0  # the file offset of _buffer[0]
        self._at_line_start = True  # _buffer[0] starts a line
        self._eof = False
        self._number = 0
        self._in_message = False
        self._started = False

    def _fill(self) -> bool:
        """Read more; False at the end of the file."""
        if self._eof:
            return False
        data = self._file.read(READ_CHUNK)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _separator_at_start(self) -> datetime | None:
        """The date of the separator line at _buffer[0] (read whole first, up to LINE_BOUND), if any."""
        while b"\n" not in self._buffer[:LINE_BOUND] and len(self._buffer) < LINE_BOUND and self._fill():
            pass
        if not self._at_line_start or not self._buffer.startswith(b"From "):
            return None
        return separator_date(self._buffer[: self._buffer.find(b"\n", 0, LINE_BOUND) + 1 or LINE_BOUND])

    def _find_separator(self, *, at_start: bool = False) -> int | None:
        """The index of the first separator line in _buffer (read whole), from position 0 with
        `at_start` (when _buffer[0] starts a line), else after it; None when the buffer holds none
        (more data may bring one)."""
        if at_start and self._at_line_start and self._buffer[:5] == b"From " and self._separator_at_start():
            return 0
        position = 0
        while True:
            candidate = self._buffer.find(b"\nFrom ", position)
            if candidate < 0:
                return None
            end = self._buffer.find(b"\n", candidate + 1, candidate + 1 + LINE_BOUND)
            if end < 0 and len(self._buffer) - candidate <= LINE_BOUND and not self._eof:
                return None  # the line is not whole yet; the caller reads more and searches again
            line = self._buffer[candidate + 1 : end + 1 if end >= 0 else candidate + 1 + LINE_BOUND]
            if separator_date(line) is not None:
                return candidate + 1
            position = candidate + 1

    def _take(self, length: int) -> bytes:
        block = self._buffer[:length]
        self._buffer = self._buffer[length:]
        self._base += length
        self._at_line_start = block.endswith(b"\n") if block else self._at_line_start
        return block

    def __iter__(self) -> Iterator[MboxMessage]:
        while True:
            if self._in_message:
                for _ in self.lines():
                    pass
            if not self._started:
                self._started = True
                # Text before the first separator is not a message (RFC 4155 §2: a file starts with one).
                self._fill()
                while self._separator_at_start() is None:
                    found = self._find_separator()
                    if found is not None:
                        self._take(found)
                        break
                    # keep the last line, a separator may be cut by the read
                    keep = self._buffer.rfind(b"\n")
                    self._take(
                        keep if keep > 0 else len(self._buffer) if len(self._buffer) > LINE_BOUND else 0
                    )
                    if not self._fill():
                        if self._separator_at_start() is None:
                            return
                        break
            date = self._separator_at_start()
            if date is None:
                return
            offset = self._base
            end = self._buffer.find(b"\n", 0, LINE_BOUND)
            self._take(end + 1 if end >= 0 else min(len(self._buffer), LINE_BOUND))
            self._number += 1
            self._in_message = True
            yield MboxMessage(offset, self._number, date)

    def lines(self) -> Iterator[bytes]:
        if not self._in_message:
            return
        while True:
            found = self._find_separator(at_start=True)
            if found is None and not self._eof:
                if len(self._buffer) > 2 * READ_CHUNK:
                    # A long message: hand on what lies before its last complete line (it may be the
                    # empty line before a separator that the next read completes).
                    last = self._buffer.rfind(b"\n")
                    cut = self._buffer.rfind(b"\n", 0, last) + 1 if last > 0 else 0
                    if cut <= 0 and len(self._buffer) > 2 * READ_CHUNK + 2 * LINE_BOUND:
                        cut = len(self._buffer) - LINE_BOUND - 2  # no line break in sight: a very long line
                    if cut > 0:
                        starts_a_line = self._at_line_start
                        yield _unescape(self._take(cut), starts_a_line)
                self._fill()
                continue
            starts_a_line = self._at_line_start
            block = self._take(found if found is not None else len(self._buffer))
            # RFC 4155 §2: the empty line after a message belongs to the mbox
            if block.endswith((b"\n\n", b"\n\r\n")) or (starts_a_line and block in (b"\n", b"\r\n")):
                block = block[: -2 if block.endswith(b"\r\n") else -1]
            if block:
                yield _unescape(block, starts_a_line)
            self._in_message = False
            self._at_line_start = True  # at the separator found, or at the end
            return


_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def _unescape(block: bytes, starts_a_line: bool) -> bytes:
    """mboxrd: one ">" less on every ">+From " line (linear: `>*` then a fixed string, per line)."""
    if b">" not in block:
        return block
    if starts_a_line:
        return _ESCAPED_FROM.sub(rb"\1", block)
    head = block.find(b"\n") + 1  # the block continues a line: its start is no line start
    if head == 0:
        return block
    return block[:head] + _ESCAPED_FROM.sub(rb"\1", block[head:])
