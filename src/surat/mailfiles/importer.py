"""`surat import`: mbox files, Maildir/Maildir++ trees and .eml files into an account's mailboxes.

Streamed: a message goes from the file to a staged blob LINE_BOUND octets at a time (mbox.py), never
a whole file, nor a whole message, in memory. Lines that end in a bare LF get CRLF (RFC 5322 §2.1:
CRLF ends a line; the store keeps messages as IMAP and POP3 serve them).

Stored up to IMPORT_CONCURRENCY at once, so that the store's group commit puts many messages in one
commit (the SQLite store) or the pool's connections work in parallel (PostgreSQL): a message under
WRITE_CHUNK octets as a local delivery with its content (`Store.deliver`: the store writes the file in
its batch, and on SQLite these keep the source's order in UIDs), a larger one staged and appended
(`Store.append`).

Resumable: every message is recognised by the SHA-256 of its stored form, recorded per mailbox in the
store's import ledger (surat.store.transfer). A message whose digest the mailbox's ledger holds is
skipped: a second run of the same import adds nothing, and an interrupted run, run again, adds what
the first did not. The ledger is written after the messages, LEDGER_BATCH at a time: a run killed
between the two may, run again, import up to LEDGER_BATCH + IMPORT_CONCURRENCY messages a second time
(never fewer than all). Two identical messages in one mailbox's source are stored once.

A broken message (over the size limit, empty, refused by the store) is reported with its position and
skipped. The account's quota is respected: the first message it refuses ends the run cleanly (what
was stored stays, recorded in the ledger; raise the quota and run again to go on).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from surat.mailfiles import maildir
from surat.mailfiles.mbox import LINE_BOUND, READ_CHUNK, MboxReader, separator_date
from surat.store.base import (
    Account,
    Delivery,
    InvalidName,
    Mailbox,
    MailboxTarget,
    QuotaExceeded,
    StagedBlob,
    StoreError,
)
from surat.store.common import normalize_mailbox_name
from surat.store.transfer import TransferStore

# Appends in flight at once: enough for the SQLite group commit to batch (one commit for many
# messages) and to keep the PostgreSQL pool busy; each holds one staged message (a file, or up to
# the PostgreSQL stage's memory bound).
IMPORT_CONCURRENCY = 32
# Ledger entries written per store call; see the module docstring for what a crash costs.
LEDGER_BATCH = 256
# Octets handed to the staged blob per write.
WRITE_CHUNK = 64 * 1024
# The longest header value kept for Date:, Status:, X-Status: and X-Keywords: (RFC 5322 §2.1.1: 998
# octets a line; folded fields are longer, and the rest is not needed).
HEADER_VALUE_BOUND = 4096
# mbox headers that carry flags (as mutt and Dovecot write them): read into flags, not stored.
MBOX_FLAG_HEADERS = frozenset((b"status", b"x-status", b"x-keywords"))
# A LF not preceded by CR (RFC 5322 §2.1: lines end in CRLF).
_BARE_LF = re.compile(rb"(?<!\r)\n")
# RFC 9051 §4: atom-specials may not be in a keyword (flag-keyword = atom).
_ATOM_SPECIALS = frozenset('(){ %*"\\]')


@dataclass(frozen=True, slots=True)
class ImportProgress:
    messages: int  # imported so far
    skipped: int  # already imported before
    broken: int
    bytes_read: int
    bytes_total: int
    seconds: float


@dataclass(slots=True)
class ImportSummary:
    imported: int = 0
    skipped: int = 0  # in the ledger already: imported by an earlier run
    imported_bytes: int = 0
    broken: list[str] = field(default_factory=list)  # "position: reason"
    mailboxes: dict[str, int] = field(default_factory=dict)  # name -> messages imported into it
    stopped: str | None = None  # why the run ended early (the quota), None when it went through
    seconds: float = 0.0


@dataclass(slots=True)
class _Candidate:
    position: str
    mailbox: str
    flags: frozenset[str]
    internal_date: datetime | None  # None: from the Date: header
    pieces: Iterator[bytes]
    mbox_headers: bool  # Status/X-Status/X-Keywords are flags, not content


@dataclass(slots=True)
class _Source:
    kind: str  # "mbox" or "file"
    path: Path
    mailbox: str
    flags: frozenset[str] = frozenset()


def is_keyword(word: str) -> bool:
    return bool(word) and word.isascii() and not any(c in _ATOM_SPECIALS or ord(c) < 0x21 for c in word)


def mbox_flags(status: bytes, x_status: bytes, x_keywords: bytes) -> frozenset[str]:
    """Flags from the headers mutt and Dovecot write into an mbox: Status R (read), X-Status A
    (answered), F (flagged), T (draft), D (deleted), X-Keywords (keywords, by spaces or commas)."""
    flags = set()
    if b"R" in status:
        flags.add("\\Seen")
    for letter, flag in ((b"A", "\\Answered"), (b"F", "\\Flagged"), (b"T", "\\Draft"), (b"D", "\\Deleted")):
        if letter in x_status:
            flags.add(flag)
    words = x_keywords.replace(b",", b" ").decode("utf-8", "replace").split()
    flags.update(word for word in words if is_keyword(word))
    return frozenset(flags)


class Normaliser:
    """A message as read (blocks of any size, cut anywhere) -> the octets to store: CRLF line ends,
    and in an mbox the flag headers taken out (and read). Keeps the Date: value for the internal
    date's fallback. Header lines are looked at whole (up to LINE_BOUND octets); the body is
    converted a block at a time by one regular-expression pass (linear: a fixed pattern)."""

    def __init__(self, mbox_headers: bool) -> None:
        self._mbox_headers = mbox_headers
        self._in_header = True
        self._at_line_start = True
        self._after_cr = False  # the previous octets ended with CR (a CRLF cut between blocks)
        self._partial = b""  # a header line not whole yet
        self._field: bytes | None = None  # the lower-case name of the field being read
        self._dropping = False  # the field being read is a flag header
        self.values: dict[bytes, bytes] = {}

    def feed(self, block: bytes) -> bytes:
        out = []
        position = 0
        while self._in_header and position < len(block):
            end = block.find(b"\n", position)
            if end < 0:
                self._partial += block[position:]
                position = len(block)
                if len(self._partial) > LINE_BOUND:  # a line too long to wait for: in parts
                    out.append(self._piece(self._partial))
                    self._partial = b""
                break
            out.append(self._piece(self._partial + block[position : end + 1]))
            self._partial = b""
            position = end + 1
        if position < len(block):
            out.append(self._body(block[position:] if position else block))
        return b"".join(out)

    def finish(self) -> bytes:
        """What is still held: an unterminated last header line."""
        partial, self._partial = self._partial, b""
        return self._piece(partial) if partial else b""

    def _body(self, data: bytes) -> bytes:
        if self._after_cr and data.startswith(b"\n"):
            converted = b"\n" + _BARE_LF.sub(b"\r\n", data[1:])
        else:
            converted = _BARE_LF.sub(b"\r\n", data)
        self._after_cr = data.endswith(b"\r")
        return converted

    def _piece(self, piece: bytes) -> bytes:
        """One header line, or a part of one (the start of a line when _at_line_start)."""
        if self._at_line_start:
            self._header_line(piece)
        elif self._field is not None:
            self._keep_value(self._field, piece)
        dropped = self._dropping and self._in_header
        line_end = piece.endswith(b"\n")
        if line_end and not piece.endswith(b"\r\n") and not (piece == b"\n" and self._after_cr):
            piece = piece[:-1] + b"\r\n"
        self._after_cr = piece.endswith(b"\r")
        self._at_line_start = line_end
        return b"" if dropped else piece

    def _header_line(self, piece: bytes) -> None:
        if piece in (b"\r\n", b"\n"):
            self._in_header, self._dropping, self._field = False, False, None
            return
        if piece[:1] in (b" ", b"\t"):  # RFC 5322 §2.2.3: folding continues the field
            if self._field is not None:
                self._keep_value(self._field, piece)
            return
        name, colon, value = piece.partition(b":")
        self._field = name.strip().lower() if colon else None
        self._dropping = self._mbox_headers and self._field in MBOX_FLAG_HEADERS
        if self._field is not None:
            self._keep_value(self._field, value)

    def _keep_value(self, name: bytes, text: bytes) -> None:
        if name in MBOX_FLAG_HEADERS or name == b"date":
            kept = self.values.get(name, b"")
            if len(kept) < HEADER_VALUE_BOUND:
                self.values[name] = kept + text[: HEADER_VALUE_BOUND - len(kept)]

    def flags(self) -> frozenset[str]:
        if not self._mbox_headers:
            return frozenset()
        return mbox_flags(
            self.values.get(b"status", b""),
            self.values.get(b"x-status", b""),
            self.values.get(b"x-keywords", b""),
        )

    def date(self) -> datetime | None:
        value = self.values.get(b"date")
        if value is None:
            return None
        try:
            moment = email.utils.parsedate_to_datetime(b" ".join(value.split()).decode("ascii", "replace"))
        except (ValueError, TypeError, IndexError):
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _file_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while piece := file.read(READ_CHUNK):
            yield piece


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _starts_with_separator(path: Path) -> bool:
    with path.open("rb") as file:
        return separator_date(file.readline(LINE_BOUND)) is not None


def discover(path: Path, mailbox: str | None) -> list[_Source]:
    """What PATH holds, as sources in import order: an mbox file (or a single message), a Maildir or
    Maildir++ tree, or a directory of .mbox files (as `surat export --format mbox` writes) and .eml
    files. `mailbox` replaces INBOX as the mailbox of the top level; subfolders go below it."""

    def named(sub: str) -> str:
        if sub in ("", "INBOX"):
            return mailbox or "INBOX"
        return f"{mailbox}/{sub}" if mailbox else sub

    if path.is_file():
        if _starts_with_separator(path):
            return [_Source("mbox", path, named(""))]
        return [_Source("file", path, named(""))]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if maildir.is_maildir(path):
        sources = _maildir_folder(path, named(""))
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") and entry.name not in (".", "..") and maildir.is_maildir(entry):
                sources += _maildir_folder(entry, named(maildir.mailbox_of_folder(entry.name)))
        return sources
    sources = []
    for entry in sorted(path.rglob("*")):
        if not entry.is_file():
            continue
        relative = entry.relative_to(path)
        if entry.suffix == ".mbox":
            sources.append(_Source("mbox", entry, named(relative.with_suffix("").as_posix())))
        elif entry.suffix == ".eml":
            sources.append(_Source("file", entry, named(relative.parent.as_posix().strip("."))))
    return sources


def _maildir_folder(folder: Path, mailbox: str) -> list[_Source]:
    keywords = maildir.read_keywords(folder)
    sources = []
    for sub in ("cur", "new"):
        directory = folder / sub
        if directory.is_dir():
            for entry in sorted(directory.iterdir(), key=lambda p: p.name):
                if entry.is_file() and not entry.name.startswith("."):
                    flags = maildir.flags_from_name(entry.name, keywords) if sub == "cur" else frozenset()
                    sources.append(
                        _Source("file", entry, mailbox, frozenset(f for f in flags if _flag_ok(f)))
                    )
    return sources


def _flag_ok(flag: str) -> bool:
    return flag.startswith("\\") or is_keyword(flag)


def _candidates(sources: list[_Source]) -> Iterator[_Candidate]:
    for source in sources:
        if source.kind == "file":
            yield _Candidate(
                str(source.path),
                source.mailbox,
                source.flags,
                _mtime(source.path),
                _file_pieces(source.path),
                False,
            )
            continue
        with source.path.open("rb") as file:
            reader = MboxReader(file)
            for message in reader:
                yield _Candidate(
                    f"{source.path}: message {message.number} at byte {message.offset}",
                    source.mailbox,
                    frozenset(),
                    message.separator_date,
                    reader.lines(),
                    True,
                )


class _Staging:
    """A message on its way to the store: held in memory up to WRITE_CHUNK octets, in a staged blob
    beyond. A small message found in the ledger (a re-run) costs no file, and a small new one goes to
    the store as content (`Delivery.content`): the store writes its file in its own batch (SQLite:
    the group commit's file stage), not one file per message made on this event loop."""

    def __init__(self, store: TransferStore) -> None:
        self._store = store
        self._pending = bytearray()
        self._staged: StagedBlob | None = None

    async def add(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= WRITE_CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if self._staged is None:
            self._staged = self._store.blobs.stage()
        await self._staged.write(bytes(self._pending))
        self._pending.clear()

    async def complete(self) -> StagedBlob | bytes:
        """The message: in memory when it is small, else the staged blob, which the caller owns from
        now on."""
        if self._staged is None:
            return bytes(self._pending)
        await self._flush()
        staged, self._staged = self._staged, None
        return staged

    def abort(self) -> None:
        if self._staged is not None:
            self._staged.abort()
            self._staged = None


class Importer:
    """One run of `surat import` into one account."""

    def __init__(
        self,
        store: TransferStore,
        account: Account,
        *,
        size_limit: int,
        progress: Callable[[ImportProgress], None] | None = None,
    ) -> None:
        self._store = store
        self._account = account
        self._size_limit = size_limit
        self._progress = progress
        self._mailboxes: dict[str, tuple[Mailbox, set[bytes]] | None] = {}
        self._ledger: dict[int, list[tuple[bytes, int]]] = {}
        self._ledger_size = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(IMPORT_CONCURRENCY)
        self._bytes_read = 0
        self._bytes_total = 0
        self._started = 0.0
        self.summary = ImportSummary()

    async def run(self, path: Path, mailbox: str | None) -> ImportSummary:
        self._started = time.monotonic()
        sources = discover(path, mailbox)
        self._bytes_total = sum(source.path.stat().st_size for source in sources)
        try:
            for candidate in _candidates(sources):
                if self.summary.stopped is not None:
                    break
                await self._one(candidate)
                if self._ledger_size >= LEDGER_BATCH:
                    await self._write_ledger()
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self._write_ledger()
        self.summary.seconds = time.monotonic() - self._started
        self._report()
        return self.summary

    def _broken(self, position: str, reason: str) -> None:
        self.summary.broken.append(f"{position}: {reason}")

    async def _target(self, name: str) -> tuple[Mailbox, set[bytes]] | None:
        if name not in self._mailboxes:
            try:
                normalized = normalize_mailbox_name(name)
                found = await self._store.get_mailbox(self._account.id, normalized)
                if found is None:
                    found = await self._store.create_mailbox(self._account.id, normalized)
                self._mailboxes[name] = (found, await self._store.imported_digests(found.id))
            except InvalidName as exc:
                self._mailboxes[name] = None
                self._broken(name, f"cannot be a mailbox name ({exc}); its messages are skipped")
        return self._mailboxes[name]

    async def _one(self, candidate: _Candidate) -> None:
        target = await self._target(candidate.mailbox)
        if target is None:
            self._drain(candidate)
            return
        mailbox, known = target
        normaliser = Normaliser(candidate.mbox_headers)
        staging = _Staging(self._store)
        try:
            digest = await self._stage(candidate, normaliser, staging)
            if digest is None or digest in known:
                self.summary.skipped += digest is not None
                self._show()
                return
            message = await staging.complete()
        finally:
            staging.abort()  # nothing once complete() handed the staged blob on
        known.add(digest)
        moment = candidate.internal_date or normaliser.date() or datetime.now(UTC)
        flags = candidate.flags | normaliser.flags()
        await self._slots.acquire()
        task = asyncio.create_task(self._append(candidate.position, mailbox, message, flags, moment, digest))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _stage(self, candidate: _Candidate, normaliser: Normaliser, staging: _Staging) -> bytes | None:
        """Normalise the message into `staging`; its digest, or None when it is broken (reported)."""
        digest = hashlib.sha256()
        size = 0
        for piece in itertools.chain(candidate.pieces, (None,)):
            if piece is None:
                out = normaliser.finish()
            else:
                self._bytes_read += len(piece)
                out = normaliser.feed(piece)
            size += len(out)
            if size > self._size_limit:
                self._broken(
                    candidate.position, f"larger than the message size limit ({self._size_limit} bytes)"
                )
                self._drain(candidate)
                return None
            digest.update(out)
            await staging.add(out)
        if size == 0:
            self._broken(candidate.position, "empty message")
            return None
        return digest.digest()

    def _drain(self, candidate: _Candidate) -> None:
        for piece in candidate.pieces:
            self._bytes_read += len(piece)

    async def _append(
        self,
        position: str,
        mailbox: Mailbox,
        message: StagedBlob | bytes,
        flags: frozenset[str],
        moment: datetime,
        digest: bytes,
    ) -> None:
        try:
            if isinstance(message, bytes):
                size = len(message)
                # A local delivery into the one mailbox: what SMTP's accepted mail takes in the store.
                target = MailboxTarget(self._account.id, mailbox.name, flags)
                delivered = await self._store.deliver(
                    Delivery(staged=None, size=size, internal_date=moment, local=(target,), content=message)
                )
                uid = delivered.local[0][2]
            else:
                size = message.size
                _, uid = await self._store.append(self._account.id, mailbox.id, message, flags, moment)
        except QuotaExceeded as exc:
            if self.summary.stopped is None:
                self.summary.stopped = f"{position}: the account's quota is reached ({exc})"
            return
        except StoreError as exc:
            self._broken(position, f"not stored: {exc}")
            return
        except Exception as exc:  # reported, and the run goes on (the store may refuse one message)
            self._broken(position, f"not stored: {type(exc).__name__}: {exc}")
            return
        finally:
            self._slots.release()
        self.summary.imported += 1
        self.summary.imported_bytes += size
        self.summary.mailboxes[mailbox.name] = self.summary.mailboxes.get(mailbox.name, 0) + 1
        self._ledger.setdefault(mailbox.id, []).append((digest, uid))
        self._ledger_size += 1
        self._show()

    async def _write_ledger(self) -> None:
        ledger, self._ledger, self._ledger_size = self._ledger, {}, 0
        for mailbox_id, entries in ledger.items():
            await self._store.record_imported(mailbox_id, entries)

    def _show(self) -> None:
        if self._progress is not None:
            self._report()

    def _report(self) -> None:
        if self._progress is not None:
            self._progress(
                ImportProgress(
                    self.summary.imported,
                    self.summary.skipped,
                    len(self.summary.broken),
                    self._bytes_read,
                    self._bytes_total,
                    time.monotonic() - self._started,
                )
            )
