"""The change feed across the processes of `[server] workers = N` (ARCHITECTURE decision 6 and 10).

Each worker publishes its committed changes on its own in-process feed (its IMAP sessions and queue
runner see them at once) and also sends them to the supervisor over a unix socket; the supervisor
forwards them to every other worker, which publishes them on its local feed. This is the shape the
PostgreSQL backend takes with LISTEN/NOTIFY (one small notification per group commit, a dedicated
connection per process): only the transport differs.

Wire format: one JSON value per line (LF-terminated), at most MAX_LINE octets:
- `[[kind, account_id, mailbox_id, modseq], ...]`: changes, in commit order. UIDs are not sent:
  subscribers only learn *that* a mailbox moved and re-read it from the store since their MODSEQ
  (`changes_since`), so a notification stays a few dozen octets whatever the change touched;
- `"ready"`: a worker has started (worker to supervisor only);
- `"overflow"`: changes were lost on the way (a full buffer, or a worker that died after committing
  and before relaying); the receiver publishes `ChangeKind.OVERFLOW` to every subscriber, which then
  re-reads the store since its MODSEQ, so nothing is missed.

Every buffer is bounded: a link holds at most MAX_PENDING_LINES lines not yet handed to the socket
(plus asyncio's write buffer up to its high-water mark, which `drain` respects); when more arrive,
the waiting lines are replaced by one `"overflow"`. A reader takes lines of at most MAX_LINE octets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence

from surat.log import fields
from surat.store.base import Change, ChangeKind
from surat.store.feed import DEFAULT_LIMIT, InProcessChangeFeed

log = logging.getLogger(__name__)

# Octets in one line, the reader's limit. A change encodes in under 64 octets, so CHANGES_PER_LINE
# of them stay far below it.
MAX_LINE = 64 * 1024
CHANGES_PER_LINE = 256
# Lines waiting on one link before they are replaced by an "overflow" (at most ~4 MB at full lines;
# a commit's notification is usually one line of ~40 octets).
MAX_PENDING_LINES = 256

READY = b'"ready"\n'
OVERFLOW = b'"overflow"\n'

_KINDS = {kind.value: kind for kind in ChangeKind if kind is not ChangeKind.OVERFLOW}


class RelayProtocolError(Exception):
    """A line that is not one of the relay's messages."""


def encode_changes(changes: Sequence[Change]) -> list[bytes]:
    """The lines that carry `changes` (none for none). A subscriber's own OVERFLOW is never relayed."""
    rows = [
        [change.kind.value, change.account_id, change.mailbox_id, change.modseq]
        for change in changes
        if change.kind is not ChangeKind.OVERFLOW
    ]
    return [
        json.dumps(rows[start : start + CHANGES_PER_LINE], separators=(",", ":")).encode() + b"\n"
        for start in range(0, len(rows), CHANGES_PER_LINE)
    ]


def decode_line(line: bytes) -> list[Change] | bytes:
    """The changes a line carries, or the line itself for READY and OVERFLOW."""
    if line in (READY, OVERFLOW):
        return line
    try:
        rows = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise RelayProtocolError("not JSON") from None
    if not isinstance(rows, list) or not rows or len(rows) > CHANGES_PER_LINE:
        raise RelayProtocolError("expected a list of changes")
    changes = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4):
            raise RelayProtocolError("expected [kind, account_id, mailbox_id, modseq]")
        kind, account_id, mailbox_id, modseq = row
        if (
            not isinstance(kind, str)
            or kind not in _KINDS
            or not _is_count(account_id)
            or not (mailbox_id is None or _is_count(mailbox_id))
            or not _is_count(modseq)
        ):
            raise RelayProtocolError(f"bad change {row!r}")
        changes.append(Change(_KINDS[kind], account_id, mailbox_id, (), modseq))
    return changes


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


class RelayLink:
    """One end of a relay connection: `send` never blocks (bounded, see the module docstring); `run`
    writes what was sent; `lines` reads what the other end sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: deque[bytes] = deque()
        self._overflowed = False  # the pending lines were replaced by OVERFLOW, not written yet
        self._wakeup = asyncio.Event()
        self._closed = False

    def send(self, lines: Sequence[bytes]) -> None:
        if self._closed or self._overflowed or not lines:
            return  # closed, or an OVERFLOW is waiting: it covers these lines too
        if len(self._pending) + len(lines) > MAX_PENDING_LINES:
            self.send_overflow()
            return
        self._pending.extend(lines)
        self._wakeup.set()

    def send_overflow(self) -> None:
        if self._closed or self._overflowed:
            return
        self._pending.clear()
        self._pending.append(OVERFLOW)
        self._overflowed = True
        self._wakeup.set()

    async def run(self) -> None:
        """Write what `send` queues, until the link closes or the peer goes away."""
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    line = self._pending.popleft()
                    if line == OVERFLOW:
                        # From here on, lines are news again: the receiver re-reads the store when it
                        # gets the marker, which covers everything committed before.
                        self._overflowed = False
                    self._writer.write(line)
                    await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the peer is gone: `lines` ends too, and its owner handles that
        finally:
            self.close()

    async def lines(self) -> AsyncIterator[bytes]:
        """Lines from the peer, until it closes the connection. RelayProtocolError for a line longer
        than MAX_LINE (the reader's limit), or one cut off by the end of the connection."""
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise RelayProtocolError("connection closed inside a line") from None
                return
            except asyncio.LimitOverrunError:
                raise RelayProtocolError(f"line longer than {MAX_LINE} octets") from None
            except (ConnectionError, OSError):
                return
            yield line

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._writer.close()


async def open_link(sock: socket.socket) -> RelayLink:
    """A link over a connected unix socket (a socketpair end)."""
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
    return RelayLink(reader, writer)


class RelayedChangeFeed(InProcessChangeFeed):
    """A worker's change feed: what its store publishes goes to local subscribers and to the relay;
    what the relay brings from other workers goes to local subscribers only."""

    def __init__(self, link: RelayLink, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(limit)
        self.link = link

    def publish(self, changes: Iterable[Change]) -> None:
        committed = list(changes)
        super().publish(committed)
        self.link.send(encode_changes(committed))

    async def follow(self) -> None:
        """Publish locally what other workers committed, until the relay ends (the supervisor is
        gone). Then every subscriber gets OVERFLOW: what was in flight is re-read from the store."""
        try:
            async for line in self.link.lines():
                message = decode_line(line)
                if message == OVERFLOW:
                    self.overflow_all()
                elif isinstance(message, list):
                    super().publish(message)
        except RelayProtocolError as exc:
            log.error("relay.protocol_error", extra=fields(error=str(exc)))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self.overflow_all()
