"""The embedded store: SQLite (WAL) for metadata, one file per message body.

Layout under `data_dir`: `index.sqlite3` (+ -wal, -shm), `blobs/xx/<id>` (message bodies, see
`blobs.py`), `tmp/` (staged messages, `BlobStore.stage()`, before `deliver`/`append` take them over).

Threads:
- one writer thread owns the only read-write connection; every mutation runs there, so UIDs and
  MODSEQs are allocated inside its transactions and writes never contend for SQLite's lock;
- IMAP's flag changes, expunges, copies and moves run under `_write_grouped`: those that arrive while
  the writer is busy share one transaction and one WAL sync (ten sessions on one mailbox each STORE
  and EXPUNGE; one commit each capped them at the disk's sync rate);
- `deliver()` and `append()` go through a group commit (ARCHITECTURE decision 4) in two stages.
  The file stage (its own thread) takes every pending message at once, moves the staged files into
  the blob area and makes them durable (see `SyncMode`: one syncfs(2), or concurrent fdatasyncs,
  then one fsync of each directory the batch's files went to); then the writer inserts all their
  rows in one transaction (few statements per batch), commits (one WAL fsync: `synchronous=FULL`),
  and only then answers every caller. The file syncs stay off the writer, so the next batch's files
  are synced while this one commits, and IMAP's flag changes never queue behind them (with the
  syncs in the writer, a STORE waited behind an APPEND's three syncs);
- IMAP flag changes (STORE, \\Recent claims) and IMAP expunges are the one exception to "synced before
  the answer": they commit without the WAL sync (`synchronous=NORMAL` for a group made only of them),
  so they survive a crash of Surat at once, and power loss once the WAL is synced: by the next full
  commit or at most FLAG_SYNC_DELAY later. The files of expunged messages are unlinked only after
  that sync, so an expunge that power loss undoes finds its message whole. Dovecot's default
  (`mail_fsync=optimized`) syncs neither; a flag or an expunge that reverts after power loss loses no
  mail, while a sync per STORE capped ten sessions on one mailbox at the disk's sync rate (issue 10).
  Mail itself, copies, moves and the queue keep the full sync;
- small indexed reads on hot paths (account, domain, alias, credential and mailbox lookups) run
  inline on a read-only connection (measured 8 us per get_account, against 124 us through a worker
  thread); larger reads and MIME parsing run in a small worker pool with one read-only connection
  per thread.

Crash safety: a message becomes visible only with its committed row, and its file is durable
before that commit. `open()` removes files left in `tmp/` and blob files no row refers to (a crash
between the file move and the commit, or between a commit that dropped the last reference and the
unlink); `open(recover=False)` does not, for processes beside the one that owns the directory.

Changes are published on the feed from the writer, in commit order, via the event loop.
"""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "?" placeholders.

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from surat.message.info import MessageInfo, compute_message_info
from surat.store.base import (
    DEFAULT_MAILBOXES,
    HIERARCHY_DELIMITER,
    MAX_APP_PASSWORDS,
    MAX_LOOKUP_CANDIDATES,
    MAX_VACATION_MEMORY_SECONDS,
    Account,
    Alias,
    AlreadyExists,
    AppPassword,
    AuthClientState,
    CachedStsPolicy,
    Change,
    ChangeFeed,
    ChangeKind,
    CopyResult,
    Credentials,
    Delivery,
    DeliveryResult,
    FlagMode,
    FlagUpdate,
    InvalidName,
    LimitReached,
    Mailbox,
    MailboxChanges,
    MailboxStatus,
    MessageBlob,
    MessageRecord,
    MessageSummary,
    NotFound,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    QueueSummary,
    QuotaExceeded,
    RecipientLookup,
    RecipientState,
    RecipientUpdate,
    ScramCredentials,
    ScriptActive,
    SieveScript,
    StagedBlob,
    StoreError,
    StoreFlagsResult,
    TlsResultCount,
)
from surat.store.blobs import FileBlobStore, StagedFile, new_blob_id
from surat.store.common import (
    ADD_TLS_RESULT,
    CLAIM_TLS_REPORT,
    FORGET_TLS_RESULTS,
    QUEUE_ENTRY_COLUMNS,
    QUEUE_RECIPIENT_COLUMNS,
    SELECT_TLS_RESULTS,
    CommitStats,
    added_changes,
    check_sieve_script,
    flags_of,
    flags_text,
    mailbox_from_row,
    message_info,
    new_script_version,
    normalize_address,
    normalize_domain,
    normalize_flags,
    normalize_mailbox_name,
    queue_entry_from_row,
    queue_recipient_from_row,
    tls_result_count,
    tls_result_row,
)
from surat.store.feed import InProcessChangeFeed
from surat.store.filemodes import PRIVATE_FILE_MODE, make_private_dir
from surat.store.keyfiles import FileKeyStore
from surat.store.schema import migrate
from surat.store.transfer import (
    ACCOUNT_USAGE_SQL,
    MAILBOX_COUNTERS_SQL,
    ORPHAN_MIN_AGE,
    RECOUNTED_USAGE_SQL,
    BodyCheck,
    VerifyProgress,
    VerifyReport,
    body_problem,
    mailbox_counter_problem,
    usage_problem,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")  # what a _Coalescer queues

INDEX_FILE = "index.sqlite3"
# Writers of every process on this data directory (`[server] workers = N`, admin commands) take an
# exclusive flock on this file around each write transaction. SQLite's own lock makes a second
# writer retry on a timer (its busy handler sleeps 1, 2, 5, ... 100 ms between tries), so under
# contention a commit waited for the next wake-up after the lock came free; the kernel hands a
# flock to the next waiter as it is released. SQLite's lock stays the rule for correctness: the
# flock only orders the writers that take it, and busy_timeout still covers any that do not.
WRITE_LOCK_FILE = "write.lock"
BLOB_DIR = "blobs"  # message bodies, under data_dir (blobs.py)
SPOOL_DIR = "tmp"  # staged messages, under data_dir
_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit
PARALLEL_SYNCS = 8  # threads that fsync one batch's files concurrently (1: one after the other)
FLAG_SYNC_DELAY = 1.0  # seconds: the longest a committed flag change waits for its WAL sync
SYNCFS_MIN_BATCH = 4
INLINE_READ_ROWS = 256  # reads of up to this many rows run on the event loop's connection
# changes_since answers kept for reuse (see there): per mailbox, for one HIGHESTMODSEQ, up to this many
# starting MODSEQs, and for this many mailboxes (least recently used out). Only answers read inline
# (at most INLINE_READ_ROWS rows) are kept, so the memory is bounded by these three numbers.
CHANGES_CACHE_SINCES = 16
# SELECT's listing of a mailbox, kept per mailbox and brought up to date with changes_since: ten
# sessions re-SELECTing a 1 000-message mailbox read every row each time (the largest CPU cost of the
# shared-mailbox bench). Bounded in messages summed over the cached mailboxes (~200 bytes each).
LISTING_CACHE_MESSAGES = 100_000
CHANGES_CACHE_MAILBOXES = 256
COLLECT_PARALLEL_MIN = 16  # unreferenced blobs from which unlinks run on several threads
_VERIFY_SLICE = 256  # bodies per worker-thread job of `verify`


class SyncMode:
    """How a group commit makes its new files durable before the index commit.

    Measured on the 2-core dev VM (ext4), 4 KiB files, time per batch: 1 file: fdatasync
    0.26 ms, syncfs 0.73 ms; 20 files: fdatasync one after the other 3.8 ms, concurrently 2.2 ms,
    one syncfs 0.45 ms. syncfs(2) also flushes whatever else is dirty on the filesystem, so its
    cost depends on other writers: AUTO uses it only for batches large enough to win.
    """

    AUTO = "auto"  # syncfs for batches of SYNCFS_MIN_BATCH files or more (Linux), else FSYNC
    FSYNC = "fsync"  # fdatasync each new file (concurrently), then fsync each directory that got one
    SYNCFS = "syncfs"  # one syncfs(2) per batch (Linux)
    NONE = "none"  # no file syncs, synchronous=NORMAL: for throwaway test stores only


# ----------------------------------------------------------------------------------------- helpers


def _timestamp(moment: datetime) -> tuple[float, int]:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    return moment.timestamp(), int(offset.total_seconds()) if offset is not None else 0


def _datetime(ts: float, offset: int = 0) -> datetime:
    return datetime.fromtimestamp(ts, timezone(timedelta(seconds=offset)) if offset else UTC)


def _new_queue_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def _chunks(items: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        if directory:
            os.fsync(fd)
        else:
            os.fdatasync(fd)  # a new file's size is flushed with its data
    finally:
        os.close(fd)


def _file_ends_with_crlf(path: Path, size: int) -> bool:
    """Whether the file's last line ends with CRLF (an empty file has no unterminated line)."""
    if size == 0:
        return True
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, 2, max(0, size - 2)) == b"\r\n"
    finally:
        os.close(fd)


def _pending_ends_with_crlf(item: _Pending) -> bool | None:
    if item.content is not None:
        return not item.content or item.content.endswith(b"\r\n")
    if item.staged is None:
        return None
    try:
        return _file_ends_with_crlf(item.staged.path, item.size)
    except OSError:
        return None  # unknown: list_message_blobs looks again later


class _SyncFS:
    """syncfs(2) through libc: flushes the whole filesystem holding `path` with one call."""

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None

    def available(self) -> bool:
        return self._libc is not None and hasattr(self._libc, "syncfs")

    def __call__(self, path: Path) -> None:
        assert self._libc is not None
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------- pending writes


# A write run by _write_grouped: (result, changes to publish, blob ids it may have freed).
_GroupedWrite = Callable[[sqlite3.Connection], tuple[Any, list[Change], set[str]]]


@dataclass(frozen=True, slots=True)
class _Listing:
    """A mailbox's messages as of one MODSEQ (see LISTING_CACHE_MESSAGES)."""

    uidvalidity: int
    highestmodseq: int
    messages: dict[int, MessageSummary]  # by UID, in UID order


@dataclass(frozen=True, slots=True)
class _Grouped:
    fn: _GroupedWrite
    future: asyncio.Future[Any]
    sync: bool  # False: a flag change, whose WAL sync may follow the answer (see FLAG_SYNC_DELAY)


@dataclass(slots=True)
class _Pending:
    """One deliver() or append() waiting for the group commit."""

    staged: StagedFile | None  # the file to move in (taken over), or None when `content` holds the message
    size: int
    info: MessageInfo
    future: asyncio.Future[Any]
    delivery: Delivery | None = None
    # append():
    account_id: int = 0
    mailbox_id: int = 0
    flags: frozenset[str] = frozenset()
    internal_date: datetime | None = None
    # filled by the writer
    blob_id: str = ""
    placements: list[tuple[Mailbox, frozenset[str], tuple[float, int]]] = field(default_factory=list)
    keep: bool = False  # some row refers to the file: keep it, rather than delete it after the commit
    ends_crlf: bool | None = None  # see _pending_ends_with_crlf; set by the file stage
    content: bytes | None = None
    result: Any = None
    error: BaseException | None = None


# ----------------------------------------------------------------------------------------- the store


class _Coalescer(Generic[Item]):
    """Group commit's queue: items that arrive while the writer thread is busy wait here and are
    handed to `commit` together, in one writer job, as soon as the writer is free again."""

    def __init__(
        self, submit: Callable[[Callable[[], None]], object], commit: Callable[[list[Item]], None]
    ) -> None:
        self._submit = submit
        self._commit = commit
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._scheduled = False

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._items) or self._scheduled

    def add(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._submit(self._job)

    def _job(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        try:
            if items:
                self._commit(items)
        finally:
            with self._lock:
                again = bool(self._items)
                self._scheduled = again
            if again:
                self._submit(self._job)


class SQLiteStore:
    """`Store` over SQLite + message files. `await open()` before use, `await close()` after."""

    def __init__(
        self,
        data_dir: Path,
        *,
        sync: str = SyncMode.AUTO,
        feed: ChangeFeed | None = None,
        workers: int = 3,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.spool_dir = self.data_dir / SPOOL_DIR
        self.blob_dir = self.data_dir / BLOB_DIR
        self.blobs = FileBlobStore(self.blob_dir, self.spool_dir)
        # The installation secret and DKIM keys stay files in the data directory (keyfiles.py).
        self.keys = FileKeyStore(self.data_dir)
        self.changes: ChangeFeed = feed if feed is not None else InProcessChangeFeed()
        if sync not in (SyncMode.AUTO, SyncMode.FSYNC, SyncMode.SYNCFS, SyncMode.NONE):
            raise ValueError(f"unknown sync mode {sync!r}")
        self._syncfs: _SyncFS | None = None
        if sync in (SyncMode.AUTO, SyncMode.SYNCFS):
            self._syncfs = _SyncFS()
            if not self._syncfs.available():
                if sync == SyncMode.SYNCFS:
                    raise ValueError("syncfs(2) is not available on this system")
                self._syncfs = None
        self._sync = sync
        self._workers_count = workers
        self._writer: ThreadPoolExecutor | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # writer thread only
        self._write_lock_fd: int | None = None  # WRITE_LOCK_FILE, writer thread only
        self._wal_unsynced = False  # writer thread only: a flag change committed without its WAL sync
        self._blobs_after_sync: set[str] = set()  # writer thread only: expunged, unlinked once synced
        self._wal_sync_timer: asyncio.TimerHandle | None = None  # event loop thread only
        self._ro: sqlite3.Connection | None = None  # event loop thread only
        self._local = threading.local()
        self._worker_conns: list[sqlite3.Connection] = []
        self._worker_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._files: ThreadPoolExecutor | None = None  # the deliveries' file stage, see the docstring
        self._deliveries: _Coalescer[_Pending] = _Coalescer(self._submit_to_file_stage, self._install_batch)
        # Small writes (queue attempts) waiting to share one transaction; see _write_grouped.
        self._grouped_writes: _Coalescer[_Grouped] = _Coalescer(self._submit_to_writer, self._commit_group)
        # mailbox id -> ((HIGHESTMODSEQ, UIDVALIDITY), {since: answer}) for changes_since; event loop only.
        self._listings: OrderedDict[int, _Listing] = OrderedDict()  # event loop thread only
        self._listed_messages = 0  # summed over self._listings
        self._recent_changes: OrderedDict[int, tuple[tuple[int, int], dict[int, MailboxChanges]]] = (
            OrderedDict()
        )
        self._batches = 0
        self._batched_items = 0
        self._largest_batch = 0
        self._open = False

    # ------------------------------------------------------------------------------ lifecycle

    async def open(self, *, recover: bool = True) -> None:
        """`recover=False`: leave `tmp/` and unreferenced blobs alone. Only the one process that owns
        the data directory may recover: while another process (a `surat serve` worker, an admin
        command beside a running server) is delivering, its staged files and its blobs not yet
        committed look exactly like a crash's leftovers (docs/workers.md)."""
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surat-store-writer")
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surat-store-files")
        self._workers = ThreadPoolExecutor(
            max_workers=self._workers_count, thread_name_prefix="surat-store-worker"
        )
        if self._sync in (SyncMode.FSYNC, SyncMode.AUTO) and PARALLEL_SYNCS > 1:
            self._sync_pool = ThreadPoolExecutor(
                max_workers=PARALLEL_SYNCS, thread_name_prefix="surat-store-sync"
            )
        try:
            await self._loop.run_in_executor(self._writer, self._open_writer, recover)
            self._ro = self._connect_ro()
        except BaseException:
            self._writer.shutdown(wait=False)
            self._files.shutdown(wait=False)
            self._workers.shutdown(wait=False)
            raise
        self._open = True

    def _open_writer(self, recover: bool) -> None:
        # Owner-only, whatever the umask (issue 11 item 12): the index holds password hashes and SCRAM
        # keys, the blobs hold mail. Modes are set when we create; `surat check` reports looser ones.
        make_private_dir(self.data_dir, parents=True)
        make_private_dir(self.spool_dir)
        make_private_dir(self.blob_dir)
        # Create every blob directory up front: a batch then never needs to sync a new one.
        created = False
        for i in range(256):
            sub = self.blob_dir / f"{i:02x}"
            if not sub.is_dir():
                make_private_dir(sub)
                created = True
        if created and self._sync != SyncMode.NONE:
            _fsync_path(self.blob_dir, directory=True)
            _fsync_path(self.data_dir, directory=True)
        index = self.data_dir / INDEX_FILE
        # SQLite creates the -wal and -shm files with the mode of the database file, so creating that
        # one 0600 first makes all three private.
        os.close(os.open(index, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))
        self._write_lock_fd = os.open(
            self.data_dir / WRITE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE
        )
        conn = sqlite3.connect(index, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'NORMAL' if self._sync == SyncMode.NONE else 'FULL'}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        self._conn = conn
        migrate(conn)
        if recover:
            self._recover()

    def _connect_ro(self) -> sqlite3.Connection:
        path = (self.data_dir / INDEX_FILE).resolve()
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _recover(self) -> None:
        """Remove what a crash can leave behind: spool files and blobs without a row."""
        assert self._conn is not None
        spool_removed = 0
        for entry in os.scandir(self.spool_dir):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                spool_removed += 1
        referenced = {
            row[0]
            for row in self._conn.execute("SELECT blob_id FROM messages UNION SELECT blob_id FROM queue")
        }
        orphans = 0
        for blob_id, path in self.blobs.scan():
            if not blob_id or blob_id not in referenced:
                path.unlink()
                orphans += 1
        if spool_removed or orphans:
            log.info("store.recovered spool_files=%d orphan_blobs=%d", spool_removed, orphans)

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        while True:  # let the group commit drain
            if not (self._deliveries.busy or self._grouped_writes.busy):
                break
            await asyncio.sleep(0.002)
        if self._wal_sync_timer is not None:
            self._wal_sync_timer.cancel()  # _close_writer syncs what is left
            self._wal_sync_timer = None
        assert self._writer is not None and self._workers is not None and self._loop is not None
        if self._files is not None:
            self._files.shutdown(wait=True)  # idle (drained above); its last batch is in the writer's queue
        await self._loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._workers.shutdown(wait=True)
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True)
            self._sync_pool = None
        with self._worker_lock:
            for conn in self._worker_conns:
                conn.close()
            self._worker_conns.clear()
        if self._ro is not None:
            self._ro.close()
            self._ro = None

    def _close_writer(self) -> None:
        self._sync_wal()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()
            self._conn = None
        if self._write_lock_fd is not None:
            os.close(self._write_lock_fd)
            self._write_lock_fd = None

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Writer thread: hold WRITE_LOCK_FILE's flock for one write transaction (see there)."""
        fd = self._write_lock_fd
        assert fd is not None
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only this thread, never the event loop
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def commit_stats(self) -> CommitStats:
        """How many group commits carried how many deliveries/appends (for tests and benchmarks)."""
        with self._lock:
            return CommitStats(self._batches, self._batched_items, self._largest_batch)

    # ------------------------------------------------------------------------------ plumbing

    def _read(self) -> sqlite3.Connection:
        if self._ro is None:
            raise StoreError("store is not open")
        return self._ro

    def _worker_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect_ro()
            self._local.conn = conn
            with self._worker_lock:
                self._worker_conns.append(conn)
        return conn

    async def _in_worker(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on a worker thread with its own read-only connection."""
        if self._workers is None or self._loop is None:
            raise StoreError("store is not open")
        return await self._loop.run_in_executor(self._workers, lambda: fn(self._worker_conn()))

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], tuple[T, list[Change], set[str]]],
        *,
        collect_after_return: bool = False,
    ) -> T:
        """Run `fn` in one write transaction on the writer thread.

        `fn` returns (result, changes to publish, blob ids whose last reference it may have
        removed). Blobs no longer referenced are deleted after the commit: before this returns,
        or with `collect_after_return` just after (by the writer, before its next job).
        """
        if self._writer is None or self._loop is None or not self._open:
            raise StoreError("store is not open")
        loop = self._loop
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            conn = self._conn
            assert conn is not None
            try:
                with self._write_lock():
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result, changes, blobs = fn(conn)
                        conn.execute("COMMIT")
                        self._synced_by_commit()
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, future, None, exc, None, None)
                return
            if collect_after_return:
                loop.call_soon_threadsafe(_settle, future, result, None, self.changes, changes)
            try:
                self._collect_blobs(blobs)
            except (OSError, sqlite3.Error):
                log.exception("store.blob_cleanup_failed")  # open() removes what is left
            if not collect_after_return:
                loop.call_soon_threadsafe(_settle, future, result, None, self.changes, changes)

        self._writer.submit(job)
        return await future

    async def _write_grouped(
        self, fn: Callable[[sqlite3.Connection], tuple[T, list[Change], set[str]]], *, sync: bool = True
    ) -> T:
        """Like `_write`, but the writes that arrive while the writer is busy share one transaction
        (one WAL sync instead of one each: the outbound queue records two per message). Each runs
        under its own SAVEPOINT, so one that raises (NotFound...) is undone alone and only its
        caller sees the error. Blobs are collected after the commit, before the callers resume.
        `sync=False` (flag changes only): the answer need not wait for the WAL sync, see the module
        docstring and FLAG_SYNC_DELAY."""
        if self._writer is None or self._loop is None or not self._open:
            raise StoreError("store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._grouped_writes.add(_Grouped(fn, future, sync))
        return await future

    def _submit_to_writer(self, job: Callable[[], None]) -> None:
        assert self._writer is not None
        self._writer.submit(job)

    def _commit_group(self, group: list[_Grouped]) -> None:
        conn, loop = self._conn, self._loop
        assert conn is not None and loop is not None
        settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        changes: list[Change] = []
        blobs: set[str] = set()
        # Only flag changes in this group: commit without the WAL sync (module docstring). The
        # setting holds for the connection, so it is put back at once: every other commit syncs.
        deferred = self._sync != SyncMode.NONE and not any(item.sync for item in group)
        if deferred:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for item in group:
                        fn, future = item.fn, item.future
                        conn.execute("SAVEPOINT grouped_write")
                        try:
                            result, fn_changes, fn_blobs = fn(conn)
                        except Exception as exc:
                            conn.execute("ROLLBACK TO grouped_write")
                            conn.execute("RELEASE grouped_write")
                            settled.append((future, None, exc))
                            continue
                        conn.execute("RELEASE grouped_write")
                        settled.append((future, result, None))
                        changes.extend(fn_changes)
                        blobs.update(fn_blobs)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    if deferred:
                        conn.execute("PRAGMA synchronous = FULL")
        except BaseException as exc:
            for item in group:
                loop.call_soon_threadsafe(_settle, item.future, None, exc, None, None)
            return
        if deferred:
            # Unlinked once the expunge is durable (module docstring): before, a power loss could
            # bring back rows whose files were gone.
            self._blobs_after_sync.update(blobs)
            blobs = set()
            if not self._wal_unsynced:
                self._wal_unsynced = True
                loop.call_soon_threadsafe(self._schedule_wal_sync)
        else:
            self._synced_by_commit()
        try:
            self._collect_blobs(blobs)
        except (OSError, sqlite3.Error):
            log.exception("store.blob_cleanup_failed")  # open() removes what is left
        loop.call_soon_threadsafe(_settle_group, settled, self.changes, changes)

    def _synced_by_commit(self) -> None:
        """Writer thread, after a synchronous=FULL commit: it synced the WAL, and with it every frame
        before it, so the flag changes waiting for a sync have it."""
        if self._sync != SyncMode.NONE:
            self._wal_unsynced = False
        self._collect_blobs_after_sync()

    async def sync(self) -> None:
        """Make every committed change durable now, without waiting for FLAG_SYNC_DELAY (and unlink the
        files of expunged messages that waited for it)."""
        if self._writer is None or self._loop is None or not self._open:
            raise StoreError("store is not open")
        await self._loop.run_in_executor(self._writer, self._sync_wal)

    def _collect_blobs_after_sync(self) -> None:
        """Writer thread, once the WAL is synced: unlink the files of the expunges it made durable."""
        if not self._blobs_after_sync:
            return
        blobs, self._blobs_after_sync = self._blobs_after_sync, set()
        try:
            self._collect_blobs(blobs)
        except (OSError, sqlite3.Error):
            log.exception("store.blob_cleanup_failed")  # open() removes what is left

    def _schedule_wal_sync(self) -> None:
        """Event loop: sync the WAL within FLAG_SYNC_DELAY of a deferred commit, unless a full commit
        does it first (then the writer finds nothing to do)."""
        if self._wal_sync_timer is None and self._loop is not None:
            self._wal_sync_timer = self._loop.call_later(FLAG_SYNC_DELAY, self._wal_sync_due)

    def _wal_sync_due(self) -> None:
        self._wal_sync_timer = None
        if self._writer is not None and self._open:
            self._writer.submit(self._sync_wal)

    def _sync_wal(self) -> None:
        """Writer thread: make the flag changes committed without a WAL sync durable."""
        if not self._wal_unsynced:
            return
        self._wal_unsynced = False
        try:
            # fsync through any descriptor flushes the file: SQLite's own would do the same.
            _fsync_path(self.data_dir / (INDEX_FILE + "-wal"))
        except FileNotFoundError:
            pass  # checkpointed and removed at close: the database file holds (and synced) it all
        except OSError:
            log.exception("store.wal_sync_failed")  # the files wait for the next full commit
            return
        self._collect_blobs_after_sync()

    def _collect_blobs(self, blob_ids: Iterable[str]) -> None:
        """Delete blobs that no message or queue entry refers to any more (after commit)."""
        conn = self._conn
        assert conn is not None
        candidates = sorted(set(blob_ids))
        unreferenced: list[str] = []
        for start in range(0, len(candidates), _CHUNK // 2):  # each id is bound twice
            chunk = candidates[start : start + _CHUNK // 2]
            marks = _marks(len(chunk))
            # One query per chunk rather than per blob (expunging a POP3 maildrop: 1 000 blobs).
            kept = {
                row[0]
                for row in conn.execute(
                    f"SELECT blob_id FROM messages WHERE blob_id IN ({marks})"
                    f" UNION SELECT blob_id FROM queue WHERE blob_id IN ({marks})",
                    (*chunk, *chunk),
                )
            }
            unreferenced += [blob_id for blob_id in chunk if blob_id not in kept]
        if len(unreferenced) >= COLLECT_PARALLEL_MIN and self._sync_pool is not None:
            # Unlinking a file whose blocks are on disk costs ~0.1 ms of journal work on ext4;
            # concurrent unlinks overlap it (measured ~2x faster for 1 000 files).
            list(self._sync_pool.map(self.blobs.delete, unreferenced, chunksize=32))
        else:
            for blob_id in unreferenced:
                self.blobs.delete(blob_id)

    # ------------------------------------------------------------------------------ domains

    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            try:
                conn.execute("INSERT INTO domains (name) VALUES (?)", (domain,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"domain {domain}") from None
            return None, [], set()

        await self._write(fn)

    async def delete_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
                raise NotFound(f"domain {domain}")
            (accounts,) = conn.execute("SELECT count(*) FROM accounts WHERE domain = ?", (domain,)).fetchone()
            if accounts:
                raise StoreError(f"domain {domain} still has {accounts} account(s)")
            conn.execute("DELETE FROM aliases WHERE domain = ?", (domain,))
            conn.execute("DELETE FROM domains WHERE name = ?", (domain,))
            return None, [], set()

        await self._write(fn)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in self._read().execute("SELECT name FROM domains ORDER BY name")]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return self._read().execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is not None

    # ------------------------------------------------------------------------------ accounts

    _ACCOUNT_COLUMNS = "id, address, quota_bytes, is_admin"

    @staticmethod
    def _account(row: sqlite3.Row | tuple[Any, ...]) -> Account:
        return Account(id=row[0], address=row[1], quota_bytes=row[2], is_admin=bool(row[3]))

    async def add_account(self, address: str, credentials: Credentials) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        def fn(conn: sqlite3.Connection) -> tuple[Account, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
                raise NotFound(f"domain {domain} is not a local domain")
            scram = credentials.scram_sha256
            try:
                cur = conn.execute(
                    "INSERT INTO accounts (address, domain, password_hash, scram_salt, scram_iterations,"
                    " scram_stored_key, scram_server_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        addr,
                        domain,
                        credentials.password_hash,
                        scram.salt if scram else None,
                        scram.iterations if scram else None,
                        scram.stored_key if scram else None,
                        scram.server_key if scram else None,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"account {addr}") from None
            account_id = cur.lastrowid
            assert account_id is not None
            changes = []
            for name, special_use in DEFAULT_MAILBOXES:
                mailbox = self._insert_mailbox(conn, account_id, name, special_use)
                changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
            return Account(account_id, addr, None), changes, set()

        return await self._write(fn)

    async def delete_account(self, address: str) -> None:
        addr = normalize_address(address)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            row = conn.execute("SELECT id FROM accounts WHERE address = ?", (addr,)).fetchone()
            if row is None:
                raise NotFound(f"account {addr}")
            blobs = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT m.blob_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                    " WHERE b.account_id = ?",
                    (row[0],),
                )
            }
            conn.execute("DELETE FROM accounts WHERE id = ?", (row[0],))
            return None, [], blobs

        await self._write(fn)

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = (
            self._read()
            .execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts WHERE address = ?", (addr,))
            .fetchone()
        )
        return self._account(row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = (
            self._read()
            .execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,))
            .fetchone()
        )
        return self._account(row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain is None:
            rows = self._read().execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts ORDER BY address")
        else:
            rows = self._read().execute(
                f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts WHERE domain = ? ORDER BY address",
                (normalize_domain(domain),),
            )
        return [self._account(r) for r in rows]

    async def get_credentials(self, address: str) -> tuple[Account, Credentials] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = (
            self._read()
            .execute(
                "SELECT id, address, quota_bytes, is_admin, password_hash, scram_salt, scram_iterations,"
                " scram_stored_key, scram_server_key FROM accounts WHERE address = ?",
                (addr,),
            )
            .fetchone()
        )
        if row is None:
            return None
        scram = None
        if row[5] is not None:
            scram = ScramCredentials(salt=row[5], iterations=row[6], stored_key=row[7], server_key=row[8])
        return self._account(row), Credentials(password_hash=row[4], scram_sha256=scram)

    async def set_credentials(self, address: str, credentials: Credentials) -> None:
        addr = normalize_address(address)
        scram = credentials.scram_sha256

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            cur = conn.execute(
                "UPDATE accounts SET password_hash = ?, scram_salt = ?, scram_iterations = ?,"
                " scram_stored_key = ?, scram_server_key = ? WHERE address = ?",
                (
                    credentials.password_hash,
                    scram.salt if scram else None,
                    scram.iterations if scram else None,
                    scram.stored_key if scram else None,
                    scram.server_key if scram else None,
                    addr,
                ),
            )
            if cur.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, [], set()

        await self._write(fn)

    async def set_quota(self, address: str, quota_bytes: int | None) -> None:
        addr = normalize_address(address)
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError("quota must be >= 0")

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            cur = conn.execute("UPDATE accounts SET quota_bytes = ? WHERE address = ?", (quota_bytes, addr))
            if cur.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, [], set()

        await self._write(fn)

    async def set_admin(self, address: str, is_admin: bool) -> None:
        addr = normalize_address(address)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            cur = conn.execute("UPDATE accounts SET is_admin = ? WHERE address = ?", (int(is_admin), addr))
            if cur.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, [], set()

        await self._write(fn)

    async def account_usage(self, account_id: int) -> int:
        row = self._read().execute("SELECT used_bytes FROM accounts WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            raise NotFound(f"account {account_id}")
        return int(row[0])

    # ------------------------------------------------------------------------------ app passwords

    _APP_PASSWORD_COLUMNS = "p.id, p.account_id, p.name, p.created_at, p.last_used"  # noqa: S105

    @staticmethod
    def _app_password(row: Sequence[Any]) -> AppPassword:
        last_used = datetime.fromtimestamp(row[4], UTC) if row[4] is not None else None
        return AppPassword(row[0], row[1], row[2], datetime.fromtimestamp(row[3], UTC), last_used)

    async def add_app_password(self, account_id: int, name: str, digest: str) -> AppPassword:
        def fn(conn: sqlite3.Connection) -> tuple[AppPassword, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"account {account_id}")
            (count,) = conn.execute(
                "SELECT count(*) FROM app_passwords WHERE account_id = ?", (account_id,)
            ).fetchone()
            if count >= MAX_APP_PASSWORDS:
                raise LimitReached(f"at most {MAX_APP_PASSWORDS} app passwords per account")
            now = time.time()
            try:
                cur = conn.execute(
                    "INSERT INTO app_passwords (account_id, name, digest, created_at) VALUES (?, ?, ?, ?)",
                    (account_id, name, digest, now),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"app password {name}") from None
            assert cur.lastrowid is not None
            return self._app_password((cur.lastrowid, account_id, name, now, None)), [], set()

        return await self._write(fn)

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        rows = self._read().execute(
            f"SELECT {self._APP_PASSWORD_COLUMNS} FROM app_passwords p WHERE p.account_id = ? ORDER BY p.name",
            (account_id,),
        )
        return [self._app_password(row) for row in rows]

    async def delete_app_password(self, account_id: int, name: str) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            cur = conn.execute(
                "DELETE FROM app_passwords WHERE account_id = ? AND name = ?", (account_id, name)
            )
            if cur.rowcount == 0:
                raise NotFound(f"app password {name}")
            return None, [], set()

        await self._write(fn)

    async def find_app_password(self, address: str, digest: str) -> tuple[Account, AppPassword] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = (
            self._read()
            .execute(
                f"SELECT a.id, a.address, a.quota_bytes, a.is_admin, {self._APP_PASSWORD_COLUMNS}"
                " FROM app_passwords p JOIN accounts a ON a.id = p.account_id"
                " WHERE p.digest = ? AND a.address = ?",
                (digest, addr),
            )
            .fetchone()
        )
        return (self._account(row[:4]), self._app_password(row[4:])) if row else None

    async def app_password_used(self, app_password_id: int, when: datetime) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            conn.execute(
                "UPDATE app_passwords SET last_used = ? WHERE id = ?", (when.timestamp(), app_password_id)
            )
            return None, [], set()

        await self._write(fn)

    # ------------------------------------------------------------------------------ login failures

    _AUTH_COLUMNS = "key, ip, failures, blocked_until, strikes, last_failure"

    @staticmethod
    def _auth_client(row: tuple[Any, ...]) -> AuthClientState:
        failures = tuple(float(t) for t in row[2].split())
        return AuthClientState(row[0], row[1], failures, row[3], row[4], row[5])

    async def get_auth_client(self, key: str) -> AuthClientState | None:
        row = (
            self._read()
            .execute(f"SELECT {self._AUTH_COLUMNS} FROM auth_clients WHERE key = ?", (key,))
            .fetchone()
        )
        return self._auth_client(row) if row is not None else None

    async def update_auth_client(
        self,
        key: str,
        update: Callable[[AuthClientState | None], AuthClientState | None],
        *,
        forget_before: float,
    ) -> AuthClientState | None:
        def fn(conn: sqlite3.Connection) -> tuple[AuthClientState | None, list[Change], set[str]]:
            row = conn.execute(
                f"SELECT {self._AUTH_COLUMNS} FROM auth_clients WHERE key = ?", (key,)
            ).fetchone()
            state = update(self._auth_client(row) if row is not None else None)
            if state is None:
                conn.execute("DELETE FROM auth_clients WHERE key = ?", (key,))
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO auth_clients ({self._AUTH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        state.ip,
                        " ".join(repr(t) for t in state.failures),
                        state.blocked_until,
                        state.strikes,
                        state.last_failure,
                    ),
                )
            conn.execute(
                "DELETE FROM auth_clients WHERE last_failure < ? AND blocked_until < ?",
                (forget_before, forget_before),
            )
            return state, [], set()

        return await self._write(fn)

    async def list_auth_clients(self, blocked_after: float) -> list[AuthClientState]:
        rows = self._read().execute(
            f"SELECT {self._AUTH_COLUMNS} FROM auth_clients WHERE blocked_until > ? "
            "ORDER BY blocked_until DESC, key",
            (blocked_after,),
        )
        return [self._auth_client(row) for row in rows]

    # ------------------------------------------------------------------------------ sending limits

    async def sending_totals(self, user: str, since: float) -> tuple[int, int]:
        # An index range: at most the user's messages of one window (the limiter refuses more).
        row = (
            self._read()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(recipients), 0) FROM sent_messages WHERE user = ? AND sent_at > ?",
                (user, since),
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    async def record_sending(self, user: str, at: float, recipients: int, *, forget_before: float) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            conn.execute(
                "INSERT INTO sent_messages (user, sent_at, recipients) VALUES (?, ?, ?)",
                (user, at, recipients),
            )
            # Bounds the table by one window's messages of all users.
            conn.execute("DELETE FROM sent_messages WHERE sent_at < ?", (forget_before,))
            return None, [], set()

        await self._write(fn)

    # ------------------------------------------------------------------------------ MTA-STS cache

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        row = (
            self._read()
            .execute(
                "SELECT domain, policy_id, policy, fetched_at, expires_at FROM sts_policies WHERE domain = ?",
                (domain.lower(),),
            )
            .fetchone()
        )
        if row is None:
            return None
        return CachedStsPolicy(row[0], row[1], row[2], float(row[3]), float(row[4]))

    async def put_sts_policy(self, policy: CachedStsPolicy, *, forget_before: float) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            conn.execute(
                "INSERT OR REPLACE INTO sts_policies (domain, policy_id, policy, fetched_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    policy.domain.lower(),
                    policy.policy_id,
                    policy.policy,
                    policy.fetched_at,
                    policy.expires_at,
                ),
            )
            # Bounds the table by the domains mailed within one max_age (a year at most).
            conn.execute("DELETE FROM sts_policies WHERE expires_at < ?", (forget_before,))
            return None, [], set()

        await self._write(fn)

    # ------------------------------------------------------------------------------ sieve scripts

    _SCRIPT_COLUMNS = "name, text, active, version, created_at, updated_at"

    @staticmethod
    def _script(row: tuple[Any, ...]) -> SieveScript:
        return SieveScript(row[0], row[1], bool(row[2]), row[3], _datetime(row[4]), _datetime(row[5]))

    async def put_sieve_script(self, account_id: int, name: str, text: str) -> SieveScript:
        check_sieve_script(name, text)
        version = new_script_version()
        now = time.time()

        def fn(conn: sqlite3.Connection) -> tuple[SieveScript, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"account {account_id}")
            conn.execute(
                "INSERT INTO sieve_scripts (account_id, name, text, version, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, name) DO UPDATE"
                " SET text = excluded.text, version = excluded.version, updated_at = excluded.updated_at",
                (account_id, name, text, version, now, now),
            )
            row = conn.execute(
                f"SELECT {self._SCRIPT_COLUMNS} FROM sieve_scripts WHERE account_id = ? AND name = ?",
                (account_id, name),
            ).fetchone()
            return self._script(row), [], set()

        return await self._write(fn)

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None:
        row = (
            self._read()
            .execute(
                f"SELECT {self._SCRIPT_COLUMNS} FROM sieve_scripts WHERE account_id = ? AND name = ?",
                (account_id, name),
            )
            .fetchone()
        )
        return self._script(row) if row else None

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        rows = (
            self._read()
            .execute(
                f"SELECT {self._SCRIPT_COLUMNS} FROM sieve_scripts WHERE account_id = ? ORDER BY name",
                (account_id,),
            )
            .fetchall()
        )
        return [self._script(row) for row in rows]

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            if name is not None and (
                conn.execute(
                    "SELECT 1 FROM sieve_scripts WHERE account_id = ? AND name = ?", (account_id, name)
                ).fetchone()
                is None
            ):
                raise NotFound(f"script {name}")
            # RFC 5804 §2.8: activating one script deactivates the one active before, in one step.
            conn.execute("UPDATE sieve_scripts SET active = 0 WHERE account_id = ? AND active", (account_id,))
            if name is not None:
                conn.execute(
                    "UPDATE sieve_scripts SET active = 1 WHERE account_id = ? AND name = ?",
                    (account_id, name),
                )
            return None, [], set()

        await self._write(fn)

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            row = conn.execute(
                "SELECT active FROM sieve_scripts WHERE account_id = ? AND name = ?", (account_id, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"script {name}")
            if row[0]:
                raise ScriptActive(f"script {name} is active")  # RFC 5804 §2.10
            conn.execute("DELETE FROM sieve_scripts WHERE account_id = ? AND name = ?", (account_id, name))
            return None, [], set()

        await self._write(fn)

    def _replied_within(
        self, account_id: int, sender: str, handle: str, since: float, conn: sqlite3.Connection | None = None
    ) -> bool:
        row = (
            (conn or self._read())
            .execute(
                "SELECT replied_at FROM vacation_replies WHERE account_id = ? AND sender = ? AND handle = ?",
                (account_id, sender, handle),
            )
            .fetchone()
        )
        return row is not None and row[0] > since

    async def claim_vacation_reply(
        self, account_id: int, sender: str, handle: str, now: float, period: float
    ) -> bool:
        if self._replied_within(account_id, sender, handle, now - period):
            # Most messages to a user on vacation come from senders already answered: a read, no write.
            return False

        def fn(conn: sqlite3.Connection) -> tuple[bool, list[Change], set[str]]:
            if self._replied_within(account_id, sender, handle, now - period, conn):
                return False, [], set()  # another delivery claimed it since the read above
            conn.execute(
                "INSERT OR REPLACE INTO vacation_replies (account_id, sender, handle, replied_at)"
                " VALUES (?, ?, ?, ?)",
                (account_id, sender, handle, now),
            )
            # Bounds the table by one longest period's replies of all users.
            conn.execute(
                "DELETE FROM vacation_replies WHERE replied_at < ?", (now - MAX_VACATION_MEMORY_SECONDS,)
            )
            return True, [], set()

        return await self._write(fn)

    # ------------------------------------------------------------------------------ TLS-RPT

    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        rows = [tls_result_row(count) for count in counts]

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            conn.executemany(ADD_TLS_RESULT, rows)
            return None, [], set()

        if rows:
            await self._write(fn)

    async def tls_results(self, day: str) -> list[TlsResultCount]:
        rows = self._read().execute(SELECT_TLS_RESULTS, (day,)).fetchall()
        return [tls_result_count(row) for row in rows]

    async def claim_tls_report(self, policy_domain: str, day: str, *, forget_before: str) -> bool:
        def fn(conn: sqlite3.Connection) -> tuple[bool, list[Change], set[str]]:
            for statement in FORGET_TLS_RESULTS:
                conn.execute(statement, (forget_before,))
            claimed = conn.execute(CLAIM_TLS_REPORT, (policy_domain.lower(), day)).rowcount == 1
            return claimed, [], set()

        return await self._write(fn)

    # ------------------------------------------------------------------------------ aliases

    async def add_alias(self, source: str, target: str) -> None:
        src = normalize_address(source, allow_catchall=True)
        dst = normalize_address(target)
        domain = src.rpartition("@")[2]

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
                raise NotFound(f"domain {domain} is not a local domain")
            try:
                conn.execute(
                    "INSERT INTO aliases (source, target, domain) VALUES (?, ?, ?)", (src, dst, domain)
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"alias {src} -> {dst}") from None
            return None, [], set()

        await self._write(fn)

    async def delete_alias(self, source: str, target: str | None = None) -> None:
        src = normalize_address(source, allow_catchall=True)
        dst = normalize_address(target) if target is not None else None

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            if dst is None:
                cur = conn.execute("DELETE FROM aliases WHERE source = ?", (src,))
            else:
                cur = conn.execute("DELETE FROM aliases WHERE source = ? AND target = ?", (src, dst))
            if cur.rowcount == 0:
                raise NotFound(f"alias {src}" + (f" -> {dst}" if dst else ""))
            return None, [], set()

        await self._write(fn)

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        if domain is None:
            rows = self._read().execute("SELECT source, target FROM aliases ORDER BY source, target")
        else:
            rows = self._read().execute(
                "SELECT source, target FROM aliases WHERE domain = ? ORDER BY source, target",
                (normalize_domain(domain),),
            )
        return [Alias(r[0], r[1]) for r in rows]

    async def alias_targets(self, source: str) -> list[str]:
        try:
            src = normalize_address(source, allow_catchall=True)
        except InvalidName:
            return []
        rows = self._read().execute("SELECT target FROM aliases WHERE source = ? ORDER BY target", (src,))
        return [r[0] for r in rows]

    async def lookup_recipient(self, domain: str, candidates: Sequence[str]) -> RecipientLookup:
        # The inline reads below take microseconds each on the read-only connection (module
        # docstring): one statement would save nothing here (PostgreSQL's saves round trips).
        if len(candidates) > MAX_LOOKUP_CANDIDATES:
            raise ValueError(f"at most {MAX_LOOKUP_CANDIDATES} candidates")
        if not await self.is_local_domain(domain):
            return RecipientLookup(domain_is_local=False)
        found = RecipientLookup(domain_is_local=True)
        for candidate in candidates:
            targets = await self.alias_targets(candidate)
            if targets:
                found.alias_targets[candidate] = targets
            account = None if candidate.startswith("@") else await self.get_account(candidate)
            if account is not None:
                found.accounts[candidate] = account
        return found

    async def aliases_of(self, target: str) -> list[str]:
        try:
            dst = normalize_address(target)
        except InvalidName:
            return []
        rows = self._read().execute("SELECT source FROM aliases WHERE target = ? ORDER BY source", (dst,))
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------ mailboxes

    _MAILBOX_COLUMNS = (
        "id, account_id, name, uidvalidity, uidnext, highestmodseq, special_use, EXISTS (SELECT 1 FROM"
        " subscriptions s WHERE s.account_id = mailboxes.account_id AND s.name = mailboxes.name)"
    )

    _mailbox = staticmethod(mailbox_from_row)

    @staticmethod
    def _next_uidvalidity(conn: sqlite3.Connection) -> int:
        # RFC 9051 §2.3.1.1: a recreated name must get a new UIDVALIDITY; time-based values also
        # stay unique if the database is ever rebuilt. Must fit in 32 bits.
        row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        value = max((row[0] + 1) if row else 1, int(time.time()))
        value = value if value < 2**32 else (row[0] % (2**32 - 1)) + 1
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('uidvalidity', ?)", (value,))
        return value

    def _insert_mailbox(
        self, conn: sqlite3.Connection, account_id: int, name: str, special_use: str | None
    ) -> Mailbox:
        uidvalidity = self._next_uidvalidity(conn)
        try:
            cur = conn.execute(
                "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
                (account_id, name, uidvalidity, special_use),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"mailbox {name}") from None
        mailbox_id = cur.lastrowid
        assert mailbox_id is not None
        # A new mailbox starts subscribed (what clients that never SUBSCRIBE expect to see in LSUB).
        conn.execute(
            "INSERT OR IGNORE INTO subscriptions (account_id, name) VALUES (?, ?)", (account_id, name)
        )
        return Mailbox(mailbox_id, account_id, name, uidvalidity, 1, 1, special_use, True)

    def _ensure_parents(self, conn: sqlite3.Connection, account_id: int, name: str) -> list[Change]:
        # RFC 9051 §6.3.4: CREATE SHOULD create superior names that are needed.
        changes = []
        parts = name.split(HIERARCHY_DELIMITER)
        for i in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:i])
            exists = conn.execute(
                "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, parent)
            ).fetchone()
            if exists is None:
                mailbox = self._insert_mailbox(conn, account_id, parent, None)
                changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
        return changes

    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        rows = self._read().execute(
            f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? ORDER BY name", (account_id,)
        )
        return [self._mailbox(r) for r in rows]

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        try:
            normalized = normalize_mailbox_name(name)
        except InvalidName:
            return None
        row = (
            self._read()
            .execute(
                f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?",
                (account_id, normalized),
            )
            .fetchone()
        )
        return self._mailbox(row) if row else None

    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None) -> Mailbox:
        normalized = normalize_mailbox_name(name)

        def fn(conn: sqlite3.Connection) -> tuple[Mailbox, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
                raise NotFound(f"account {account_id}")
            changes = self._ensure_parents(conn, account_id, normalized)
            mailbox = self._insert_mailbox(conn, account_id, normalized, special_use)
            changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
            return mailbox, changes, set()

        return await self._write(fn)

    def _mailbox_by_name(self, conn: sqlite3.Connection, account_id: int, name: str) -> Mailbox:
        row = conn.execute(
            f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?",
            (account_id, name),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {name}")
        return self._mailbox(row)

    def _mailbox_by_id(self, conn: sqlite3.Connection, mailbox_id: int) -> Mailbox:
        row = conn.execute(
            f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        return self._mailbox(row)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        normalized = normalize_mailbox_name(name)
        if normalized == "INBOX":
            raise InvalidName("INBOX cannot be deleted")  # RFC 9051 §6.3.5

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            mailbox = self._mailbox_by_name(conn, account_id, normalized)
            blobs = {
                r[0] for r in conn.execute("SELECT blob_id FROM messages WHERE mailbox_id = ?", (mailbox.id,))
            }
            (size,) = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = ?", (mailbox.id,)
            ).fetchone()
            conn.execute("UPDATE accounts SET used_bytes = used_bytes - ? WHERE id = ?", (size, account_id))
            conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox.id,))
            conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox.id,))
            return None, [Change(ChangeKind.MAILBOX_DELETED, account_id, mailbox.id)], blobs

        await self._write(fn)

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        source = normalize_mailbox_name(old)
        target = normalize_mailbox_name(new)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            mailbox = self._mailbox_by_name(conn, account_id, source)
            if conn.execute(
                "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, target)
            ).fetchone():
                raise AlreadyExists(f"mailbox {target}")
            if target.startswith(source + HIERARCHY_DELIMITER):
                raise InvalidName("cannot rename a mailbox into itself")
            changes = self._ensure_parents(conn, account_id, target)
            if source == "INBOX":
                # RFC 9051 §6.3.6: renaming INBOX moves its messages to a new mailbox and leaves
                # INBOX (and its inferiors) in place, empty.
                created = self._insert_mailbox(conn, account_id, target, None)
                changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, created.id))
                uids = [
                    r[0] for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox.id,))
                ]
                if uids:
                    _, copy_changes = self._copy_rows(conn, mailbox, uids, created, check_quota=False)
                    changes += copy_changes
                    changes += self._expunge_rows(conn, mailbox, uids)[1]
                return None, changes, set()
            prefix = source + HIERARCHY_DELIMITER
            children = conn.execute(
                "SELECT id, name FROM mailboxes WHERE account_id = ? AND substr(name, 1, ?) = ?",
                (account_id, len(prefix), prefix),
            ).fetchall()
            renames = [(mailbox.id, target)] + [
                (cid, target + cname[len(source) :]) for cid, cname in children
            ]
            old_names = {mailbox.id: source} | {cid: cname for cid, cname in children}
            for mailbox_id, new_name in renames:
                try:
                    conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (new_name, mailbox_id))
                except sqlite3.IntegrityError:
                    raise AlreadyExists(f"mailbox {new_name}") from None
                # The subscription follows the mailbox (a name left behind would list as \NonExistent).
                moved = conn.execute(
                    "DELETE FROM subscriptions WHERE account_id = ? AND name = ?",
                    (account_id, old_names[mailbox_id]),
                ).rowcount
                if moved:
                    conn.execute(
                        "INSERT OR IGNORE INTO subscriptions (account_id, name) VALUES (?, ?)",
                        (account_id, new_name),
                    )
                changes.append(Change(ChangeKind.MAILBOX_RENAMED, account_id, mailbox_id))
            return None, changes, set()

        await self._write(fn)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        normalized = normalize_mailbox_name(name)

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            exists = conn.execute(
                "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, normalized)
            ).fetchone()
            if subscribed:
                if exists is None:
                    raise NotFound(f"mailbox {normalized}")  # RFC 9051 §6.3.7: the server MAY check
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (account_id, name) VALUES (?, ?)",
                    (account_id, normalized),
                )
                return None, [], set()
            removed = conn.execute(
                "DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, normalized)
            ).rowcount
            if not removed and exists is None:
                raise NotFound(f"mailbox {normalized}")
            return None, [], set()

        await self._write(fn)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = self._read().execute(
            "SELECT name FROM subscriptions WHERE account_id = ? ORDER BY name", (account_id,)
        )
        return [r[0] for r in rows]

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
        def fn(conn: sqlite3.Connection) -> MailboxStatus:
            conn.execute("BEGIN")  # one snapshot for both queries
            try:
                mailbox = self._mailbox_by_id(conn, mailbox_id)
                row = conn.execute(
                    "SELECT count(*), coalesce(sum(1 - seen), 0), coalesce(sum(size), 0),"
                    " coalesce(sum(deleted), 0), coalesce(sum(uid >= (SELECT recent_uid FROM mailboxes"
                    " WHERE id = ?)), 0) FROM messages WHERE mailbox_id = ?",
                    (mailbox_id, mailbox_id),
                ).fetchone()
            finally:
                conn.execute("COMMIT")
            return MailboxStatus(
                mailbox, messages=row[0], unseen=row[1], size=row[2], deleted=row[3], recent=row[4]
            )

        # A small mailbox (STATUS of Archive, Sent... while INBOX is selected) is summed on the event
        # loop's connection: a handful of rows cost less than the hand-over to a worker and back.
        (small,) = (
            self._read()
            .execute(
                "SELECT count(*) <= ? FROM (SELECT 1 FROM messages WHERE mailbox_id = ? LIMIT ?)",
                (INLINE_READ_ROWS, mailbox_id, INLINE_READ_ROWS + 1),
            )
            .fetchone()
        )
        if small:
            return fn(self._read())
        return await self._in_worker(fn)

    # ------------------------------------------------------------------------------ messages

    @staticmethod
    def _summary(row: tuple[Any, ...]) -> MessageSummary:
        return MessageSummary(
            uid=row[0],
            modseq=row[1],
            flags=flags_of(row[2]),
            size=row[3],
            internal_date=_datetime(row[4], row[5]),
        )

    async def list_messages(self, mailbox_id: int) -> list[MessageSummary]:
        mailbox = self._mailbox_by_id(self._read(), mailbox_id)  # NotFound as before
        cached = self._listings.get(mailbox_id)
        if cached is not None and cached.uidvalidity == mailbox.uidvalidity:
            listing = await self._listing_brought_up_to_date(mailbox_id, cached)
        else:
            listing = await self._in_worker(functools.partial(self._read_listing, mailbox_id=mailbox_id))
        self._keep_listing(mailbox_id, listing)
        return list(listing.messages.values())

    def _read_listing(self, conn: sqlite3.Connection, mailbox_id: int) -> _Listing:
        conn.execute("BEGIN")  # the rows and the MODSEQ they are as of: one snapshot
        try:
            mailbox = self._mailbox_by_id(conn, mailbox_id)
            rows = conn.execute(
                "SELECT uid, modseq, flags, size, internal_date, internal_tz FROM messages"
                " WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            )
            # IMAP SELECT of a large mailbox: the per-row work inlined (a third faster than _summary).
            summary, flags_from, from_ts = MessageSummary, flags_of, datetime.fromtimestamp
            messages = {
                uid: summary(
                    uid, modseq, flags_from(flags), size, _datetime(ts, tz) if tz else from_ts(ts, UTC)
                )
                for uid, modseq, flags, size, ts, tz in rows
            }
        finally:
            conn.execute("COMMIT")
        return _Listing(mailbox.uidvalidity, mailbox.highestmodseq, messages)

    async def _listing_brought_up_to_date(self, mailbox_id: int, cached: _Listing) -> _Listing:
        changes = await self.changes_since(mailbox_id, cached.highestmodseq)
        if changes.highestmodseq == cached.highestmodseq:
            return cached
        messages = dict(cached.messages)  # a copy: a concurrent caller may hold the cached one
        for uid in changes.vanished:
            messages.pop(uid, None)
        last = next(reversed(messages), 0)
        for summary in changes.changed:
            messages[summary.uid] = summary
        if any(summary.uid < last and summary.uid not in cached.messages for summary in changes.changed):
            messages = dict(sorted(messages.items()))  # not expected (UIDs ascend), but kept in order
        return _Listing(cached.uidvalidity, changes.highestmodseq, messages)

    def _keep_listing(self, mailbox_id: int, listing: _Listing) -> None:
        """Cache `listing` unless the cache holds a newer one (two SELECTs may finish out of order)."""
        old = self._listings.pop(mailbox_id, None)
        if old is not None:
            self._listed_messages -= len(old.messages)
            if old.uidvalidity == listing.uidvalidity and old.highestmodseq > listing.highestmodseq:
                listing = old
        if len(listing.messages) > LISTING_CACHE_MESSAGES:
            return
        self._listings[mailbox_id] = listing
        self._listed_messages += len(listing.messages)
        while self._listed_messages > LISTING_CACHE_MESSAGES:
            _, evicted = self._listings.popitem(last=False)
            self._listed_messages -= len(evicted.messages)

    async def list_message_blobs(self, mailbox_id: int) -> list[MessageBlob]:
        def fn(conn: sqlite3.Connection) -> tuple[list[MessageBlob], list[tuple[int, int, int]]]:
            rows = conn.execute(
                "SELECT uid, size, blob_id, ends_crlf FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            ).fetchall()
            out = []
            learned = []
            for uid, size, blob_id, recorded in rows:
                ends = recorded
                if ends is None:
                    # A row from before schema version 2: look at the file once and record it.
                    try:
                        ends = _file_ends_with_crlf(self.blobs.path(blob_id), size)
                    except (OSError, NotFound):
                        ends = True  # gone (expunged meanwhile): nobody will send it
                    else:
                        learned.append((int(ends), mailbox_id, uid))
                out.append(MessageBlob(uid, size, blob_id, bool(ends)))
            return out, learned

        blobs, learned = await self._in_worker(fn)
        if learned:

            def record(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
                conn.executemany(
                    "UPDATE messages SET ends_crlf = ? WHERE mailbox_id = ? AND uid = ?", learned
                )
                return None, [], set()

            await self._write(record)
        return blobs

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        wanted = sorted(set(uids))

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            out = []
            for chunk in _chunks(wanted):
                rows = conn.execute(
                    "SELECT uid, modseq, flags, size, internal_date, internal_tz, blob_id, info FROM messages"
                    f" WHERE mailbox_id = ? AND uid IN ({_marks(len(chunk))}) ORDER BY uid",
                    (mailbox_id, *chunk),
                )
                for r in rows:
                    out.append(
                        MessageRecord(
                            mailbox_id=mailbox_id,
                            uid=r[0],
                            modseq=r[1],
                            flags=flags_of(r[2]),
                            size=r[3],
                            internal_date=_datetime(r[4], r[5]),
                            blob_id=r[6],
                            info=message_info(r[7]),
                        )
                    )
            return out

        if len(wanted) <= INLINE_READ_ROWS:
            # A few rows by primary key: cheaper on the event loop's connection than a round trip
            # through a worker thread (IMAP FETCH asks for a few hundred at most each time).
            return fn(self._read())
        return await self._in_worker(fn)

    def _allocate(self, conn: sqlite3.Connection, mailbox_id: int, count: int = 1) -> tuple[int, int]:
        """Reserve `count` UIDs and one new MODSEQ: (first uid, modseq). UIDs are never reused."""
        row = conn.execute(
            "UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1 WHERE id = ?"
            " RETURNING uidnext - ?, highestmodseq",
            (count, mailbox_id, count),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        return int(row[0]), int(row[1])

    def _bump_modseq(self, conn: sqlite3.Connection, mailbox_id: int) -> int:
        row = conn.execute(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING highestmodseq",
            (mailbox_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        return int(row[0])

    @staticmethod
    def _charge(conn: sqlite3.Connection, account_id: int, size: int, check_quota: bool = True) -> None:
        row = conn.execute(
            "SELECT quota_bytes, used_bytes FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"account {account_id}")
        quota, used = row
        # RFC 9208 §5.1: refuse what would take the account over its STORAGE limit.
        if check_quota and quota is not None and used + size > quota:
            raise QuotaExceeded(f"quota of {quota} bytes exceeded")
        conn.execute("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?", (size, account_id))

    @staticmethod
    def _insert_message(
        conn: sqlite3.Connection,
        mailbox_id: int,
        uid: int,
        modseq: int,
        *,
        flags: frozenset[str],
        internal_date: tuple[float, int],
        size: int,
        blob_id: str,
        info_json: str,
        ends_crlf: bool | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date, internal_tz,"
            " size, blob_id, info, ends_crlf) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mailbox_id,
                uid,
                modseq,
                flags_text(flags),
                int("\\Seen" in flags),
                int("\\Deleted" in flags),
                internal_date[0],
                internal_date[1],
                size,
                blob_id,
                info_json,
                ends_crlf,
            ),
        )

    async def append(
        self,
        account_id: int,
        mailbox_id: int,
        staged: StagedBlob,
        flags: frozenset[str],
        internal_date: datetime,
    ) -> tuple[int, int]:
        taken = self._take(staged)
        try:
            info = await self._compute_info(taken)
        except BaseException:
            taken.discard_taken()
            raise
        item = _Pending(
            staged=taken,
            size=taken.size,
            info=info,
            future=self._new_future(),
            account_id=account_id,
            mailbox_id=mailbox_id,
            flags=normalize_flags(flags),
            internal_date=internal_date,
        )
        result: tuple[int, int] = await self._submit(item)
        return result

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult:
        """`updated` lists every existing message the command applied to, with its flags after
        the command; only those whose flags changed get the new MODSEQ (the others keep theirs)."""
        given = normalize_flags(flags)
        wanted = sorted(set(uids))

        def fn(conn: sqlite3.Connection) -> tuple[StoreFlagsResult, list[Change], set[str]]:
            mailbox = self._mailbox_by_id(conn, mailbox_id)
            rows: list[tuple[int, int, str]] = []
            for chunk in _chunks(wanted):
                rows += conn.execute(
                    "SELECT uid, modseq, flags FROM messages"
                    f" WHERE mailbox_id = ? AND uid IN ({_marks(len(chunk))})"
                    " ORDER BY uid",
                    (mailbox_id, *chunk),
                ).fetchall()
            updated: list[FlagUpdate] = []
            modified: list[int] = []
            changed_uids: list[int] = []
            modseq = 0
            for uid, old_modseq, text in rows:
                if unchanged_since is not None and old_modseq > unchanged_since:
                    modified.append(uid)  # RFC 7162 §3.1.3
                    continue
                old = flags_of(text)
                if mode is FlagMode.SET:
                    new = given
                elif mode is FlagMode.ADD:
                    new = old | given
                else:
                    new = old - given
                if new == old:
                    updated.append(FlagUpdate(uid, old, old_modseq))
                    continue
                if not modseq:
                    modseq = self._bump_modseq(conn, mailbox_id)
                conn.execute(
                    "UPDATE messages SET flags = ?, seen = ?, deleted = ?, modseq = ?"
                    " WHERE mailbox_id = ? AND uid = ?",
                    (
                        flags_text(new),
                        int("\\Seen" in new),
                        int("\\Deleted" in new),
                        modseq,
                        mailbox_id,
                        uid,
                    ),
                )
                updated.append(FlagUpdate(uid, new, modseq))
                changed_uids.append(uid)
            changes = []
            if changed_uids:
                changes.append(
                    Change(
                        ChangeKind.FLAGS_CHANGED, mailbox.account_id, mailbox_id, tuple(changed_uids), modseq
                    )
                )
            return StoreFlagsResult(updated=updated, modified=modified), changes, set()

        # Concurrent sessions' STOREs share one commit, answered before its WAL sync (module docstring).
        return await self._write_grouped(fn, sync=False)

    def _expunge_rows(
        self, conn: sqlite3.Connection, mailbox: Mailbox, uids: Sequence[int], only_deleted: bool = False
    ) -> tuple[list[int], list[Change], set[str]]:
        rows: list[tuple[int, int, str]] = []
        deleted = " AND deleted = 1" if only_deleted else ""
        for chunk in _chunks(sorted(set(uids))):
            rows += conn.execute(
                "SELECT uid, size, blob_id FROM messages"
                f" WHERE mailbox_id = ? AND uid IN ({_marks(len(chunk))}){deleted}"
                " ORDER BY uid",
                (mailbox.id, *chunk),
            ).fetchall()
        if not rows:
            return [], [], set()
        modseq = self._bump_modseq(conn, mailbox.id)
        removed = [r[0] for r in rows]
        for chunk in _chunks(removed):
            conn.execute(
                f"DELETE FROM messages WHERE mailbox_id = ? AND uid IN ({_marks(len(chunk))})",
                (mailbox.id, *chunk),
            )
        # RFC 7162 §3.2.7: remember expunged UIDs with their MODSEQ for VANISHED (EARLIER).
        conn.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            [(mailbox.id, uid, modseq) for uid in removed],
        )
        conn.execute(
            "UPDATE accounts SET used_bytes = used_bytes - ? WHERE id = ?",
            (sum(r[1] for r in rows), mailbox.account_id),
        )
        change = Change(ChangeKind.MESSAGES_EXPUNGED, mailbox.account_id, mailbox.id, tuple(removed), modseq)
        return removed, [change], {r[2] for r in rows}

    async def expunge(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        files_in_background: bool = False,
        only_deleted: bool = False,
    ) -> list[int]:
        def fn(conn: sqlite3.Connection) -> tuple[list[int], list[Change], set[str]]:
            mailbox = self._mailbox_by_id(conn, mailbox_id)
            return self._expunge_rows(conn, mailbox, uids, only_deleted)

        if files_in_background:
            return await self._write(fn, collect_after_return=True)
        # Concurrent IMAP EXPUNGEs share one commit, answered before its WAL sync (module docstring).
        return await self._write_grouped(fn, sync=False)

    def _copy_rows(
        self,
        conn: sqlite3.Connection,
        source: Mailbox,
        uids: Sequence[int],
        dest: Mailbox,
        check_quota: bool = True,
    ) -> tuple[CopyResult, list[Change]]:
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(sorted(set(uids))):
            rows += conn.execute(
                "SELECT uid, flags, internal_date, internal_tz, size, blob_id, info, ends_crlf FROM messages"
                f" WHERE mailbox_id = ? AND uid IN ({_marks(len(chunk))}) ORDER BY uid",
                (source.id, *chunk),
            ).fetchall()
        if not rows:
            return CopyResult(dest.uidvalidity, []), []
        self._charge(conn, dest.account_id, sum(r[4] for r in rows), check_quota)
        first, modseq = self._allocate(conn, dest.id, len(rows))
        pairs = []
        for offset, (uid, flags, date, tz, size, blob_id, info, ends_crlf) in enumerate(rows):
            self._insert_message(
                conn,
                dest.id,
                first + offset,
                modseq,
                flags=flags_of(flags),
                internal_date=(date, tz),
                size=size,
                blob_id=blob_id,
                info_json=info,
                ends_crlf=ends_crlf,
            )
            pairs.append((uid, first + offset))
        change = Change(
            ChangeKind.MESSAGES_ADDED, dest.account_id, dest.id, tuple(p[1] for p in pairs), modseq
        )
        return CopyResult(dest.uidvalidity, pairs), [change]

    async def copy(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult:
        def fn(conn: sqlite3.Connection) -> tuple[CopyResult, list[Change], set[str]]:
            source = self._mailbox_by_id(conn, mailbox_id)
            dest = self._mailbox_by_id(conn, dest_mailbox_id)
            result, changes = self._copy_rows(conn, source, uids, dest)
            return result, changes, set()

        return await self._write_grouped(fn)

    async def move(self, mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int) -> CopyResult:
        def fn(conn: sqlite3.Connection) -> tuple[CopyResult, list[Change], set[str]]:
            source = self._mailbox_by_id(conn, mailbox_id)
            dest = self._mailbox_by_id(conn, dest_mailbox_id)
            # RFC 6851 §3.3: a move within one account does not change usage, so no quota check.
            result, changes = self._copy_rows(
                conn, source, uids, dest, check_quota=source.account_id != dest.account_id
            )
            _, expunge_changes, blobs = self._expunge_rows(conn, source, [p[0] for p in result.pairs])
            return result, changes + expunge_changes, blobs

        return await self._write_grouped(fn)

    def _keep_changes(
        self, mailbox_id: int, since: int, state: tuple[int, int], answer: MailboxChanges
    ) -> None:
        """Remember `answer` for (mailbox, since) while the mailbox's (HIGHESTMODSEQ, UIDVALIDITY) is `state`."""
        recent = self._recent_changes.get(mailbox_id)
        if recent is None or recent[0] != state:
            recent = (state, {})
            self._recent_changes[mailbox_id] = recent
        self._recent_changes.move_to_end(mailbox_id)
        if len(self._recent_changes) > CHANGES_CACHE_MAILBOXES:
            self._recent_changes.popitem(last=False)
        if len(recent[1]) < CHANGES_CACHE_SINCES:
            recent[1][since] = answer

    async def claim_recent(self, mailbox_id: int, up_to_uid: int, *, peek: bool = False) -> tuple[int, int]:
        # recent_uid only grows, so a read that finds nothing to claim needs no write transaction:
        # SELECT of a mailbox without new mail costs no commit.
        row = self._read().execute("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        if peek:
            return int(row[0]), up_to_uid
        if int(row[0]) > up_to_uid:
            return int(row[0]), int(row[0]) - 1

        def fn(conn: sqlite3.Connection) -> tuple[tuple[int, int], list[Change], set[str]]:
            # One write transaction (BEGIN IMMEDIATE): read and advance recent_uid together, so two
            # sessions, in this process or another, never both claim a UID (RFC 3501 §2.3.2).
            found = conn.execute("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if found is None:
                raise NotFound(f"mailbox {mailbox_id}")
            first = int(found[0])
            if first > up_to_uid:
                return (first, first - 1), [], set()
            conn.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (up_to_uid + 1, mailbox_id))
            return (first, up_to_uid), [], set()

        return await self._write_grouped(fn, sync=False)  # \\Recent is session state, like a flag

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        uidvalidity = 0  # of the mailbox read by fn: ids can be reused after a DELETE, UIDVALIDITYs not

        def fn(conn: sqlite3.Connection, at_most: int = -1) -> MailboxChanges | None:
            nonlocal uidvalidity
            conn.execute("BEGIN")
            try:
                if at_most >= 0:
                    (count,) = conn.execute(
                        "SELECT count(*) FROM (SELECT 1 FROM messages"
                        " WHERE mailbox_id = ? AND modseq > ? LIMIT ?)",
                        (mailbox_id, modseq, at_most + 1),
                    ).fetchone()
                    if count > at_most:
                        return None  # too many for the event loop: the worker reads them
                mailbox = self._mailbox_by_id(conn, mailbox_id)
                uidvalidity = mailbox.uidvalidity
                changed = [
                    self._summary(r)
                    for r in conn.execute(
                        "SELECT uid, modseq, flags, size, internal_date, internal_tz FROM messages"
                        " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                        (mailbox_id, modseq),
                    )
                ]
                vanished = [
                    r[0]
                    for r in conn.execute(
                        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                        (mailbox_id, modseq),
                    )
                ]
            finally:
                conn.execute("COMMIT")
            return MailboxChanges(changed=changed, vanished=vanished, highestmodseq=mailbox.highestmodseq)

        # Every IMAP session on a mailbox asks this after every command that follows a change, mostly
        # with the same starting MODSEQ (all were up to date before the change): the answer depends
        # only on the rows, and every change to them raises the mailbox's HIGHESTMODSEQ in the same
        # transaction, so an answer is reused while that number (and the mailbox: its UIDVALIDITY)
        # stays: one indexed read instead of a transaction of four queries. Callers must not modify it.
        recent = self._recent_changes.get(mailbox_id)
        if recent is not None and (kept := recent[1].get(modseq)) is not None:
            row = (
                self._read()
                .execute("SELECT highestmodseq, uidvalidity FROM mailboxes WHERE id = ?", (mailbox_id,))
                .fetchone()
            )
            if row is not None and (row[0], row[1]) == recent[0]:
                return kept
        # Usually a few rows, read on the event loop's connection (counted first through the modseq
        # index, in the same snapshot).
        inline = fn(self._read(), INLINE_READ_ROWS)
        if inline is not None:
            self._keep_changes(mailbox_id, modseq, (inline.highestmodseq, uidvalidity), inline)
            return inline
        result = await self._in_worker(fn)
        assert result is not None
        return result

    # ------------------------------------------------------------------------------ delivery (group commit)

    def _new_future(self) -> asyncio.Future[Any]:
        if self._loop is None or not self._open:
            raise StoreError("store is not open")
        return self._loop.create_future()

    def _take(self, staged: StagedBlob) -> StagedFile:
        """Own a staged blob from now on (before any await: a caller cancelled meanwhile can no
        longer abort it under the writer); only staged files of this store are accepted."""
        if not isinstance(staged, StagedFile) or staged.path.parent != self.spool_dir:
            staged.abort()
            raise StoreError("a staged blob of another store")
        staged.take()
        return staged

    async def _compute_info(self, staged: StagedFile) -> MessageInfo:
        def parse() -> MessageInfo:
            with staged.path.open("rb") as f:
                return compute_message_info(f)

        if self._workers is None or self._loop is None:
            raise StoreError("store is not open")
        # Parsing runs beside the writer, so it never serialises with commits.
        return await self._loop.run_in_executor(self._workers, parse)

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        taken = self._take(delivery.staged) if delivery.staged is not None else None
        info = delivery.info
        if info is None and delivery.content is not None:
            # A message in memory is small: parsing it here (tens of microseconds) is cheaper than
            # the two thread hand-overs a worker would cost.
            info = compute_message_info(io.BytesIO(delivery.content))
        elif info is None:
            if taken is None:
                raise StoreError("a delivery needs content or a staged blob")
            try:
                info = await self._compute_info(taken)
            except BaseException:
                taken.discard_taken()
                raise
        item = _Pending(
            staged=taken,
            content=delivery.content,
            size=delivery.size,
            info=info,
            future=self._new_future(),
            delivery=delivery,
        )
        result: DeliveryResult = await self._submit(item)
        return result

    async def _submit(self, item: _Pending) -> Any:
        self._deliveries.add(item)
        # The commit goes on even if the caller is cancelled: shield so that it still settles.
        return await asyncio.shield(item.future)

    def _submit_to_file_stage(self, job: Callable[[], None]) -> None:
        assert self._files is not None
        self._files.submit(job)

    def _install_batch(self, batch: list[_Pending]) -> None:
        """File stage: give each message its blob id, move or write its file into the blob area and
        make the files durable, then hand the batch to the writer. A crash before the commit leaves
        blobs no row refers to, which `open()` removes; so does the commit for a message no mailbox
        or queue took (see `_commit_batch`)."""
        loop = self._loop
        assert loop is not None and self._writer is not None
        installed: list[str] = []
        millis = time.time_ns() // 1_000_000
        try:
            for item in batch:
                item.blob_id = new_blob_id(millis)
                item.ends_crlf = _pending_ends_with_crlf(item)  # file I/O: here, not in the writer
                if item.content is not None:
                    self.blobs.write(item.blob_id, item.content)
                else:
                    assert item.staged is not None
                    self.blobs.install(item.staged.path, item.blob_id)
                installed.append(item.blob_id)
            self._sync_blobs(installed)
        except BaseException as exc:
            log.exception("store.install_failed items=%d", len(batch))
            for blob_id in installed:
                self.blobs.delete(blob_id)
            for item in batch:
                item.error = exc
                if item.staged is not None:
                    item.staged.discard_taken()
            loop.call_soon_threadsafe(_settle_batch, batch, self.changes, [])
            return
        self._writer.submit(self._commit_batch, batch)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """Writer: the batch's rows in one transaction, over files the file stage made durable."""
        conn = self._conn
        loop = self._loop
        assert conn is not None and loop is not None
        changes: list[Change] = []
        try:
            with self._write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    changes = self._insert_batch(conn, batch)
                    conn.execute("COMMIT")
                    self._synced_by_commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
        except BaseException as exc:
            log.exception("store.commit_failed items=%d", len(batch))
            for item in batch:
                item.error = exc
            changes = []
        for item in batch:
            if item.error is not None or not item.keep:
                self.blobs.delete(item.blob_id)  # no row refers to it
        committed = sum(1 for item in batch if item.error is None)
        with self._lock:
            if committed:
                self._batches += 1
                self._batched_items += committed
                self._largest_batch = max(self._largest_batch, committed)
        loop.call_soon_threadsafe(_settle_batch, batch, self.changes, changes)

    def _sync_blobs(self, blob_ids: list[str]) -> None:
        if not blob_ids or self._sync == SyncMode.NONE:
            return
        if self._syncfs is not None and (self._sync == SyncMode.SYNCFS or len(blob_ids) >= SYNCFS_MIN_BATCH):
            self._syncfs(self.blob_dir)
            return
        paths = [self.blobs.path(blob_id) for blob_id in blob_ids]
        if len(paths) > 1 and self._sync_pool is not None:
            # Concurrent fdatasync calls share the filesystem's journal commits (measured faster
            # than the same calls one after the other); list() re-raises the first error.
            list(self._sync_pool.map(_fsync_path, paths))
        else:
            for path in paths:
                _fsync_path(path)
        for directory in {path.parent for path in paths}:
            _fsync_path(directory, directory=True)

    def _insert_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[Change]:
        """Validate every item, allocate UIDs once per mailbox, insert all rows with executemany.

        Few statements per batch rather than several per message: each statement is a GIL
        round-trip for the writer thread. Marks the items whose file a row refers to (`keep`); returns
        the changes.
        """
        mailboxes: dict[tuple[int, str | int], Mailbox | None] = {}
        usage: dict[int, tuple[int | None, int]] = {}  # account id -> (quota, used)

        def account_usage(account_id: int) -> tuple[int | None, int]:
            if account_id not in usage:
                row = conn.execute(
                    "SELECT quota_bytes, used_bytes FROM accounts WHERE id = ?", (account_id,)
                ).fetchone()
                if row is None:
                    raise NotFound(f"account {account_id}")
                usage[account_id] = (row[0], row[1])
            return usage[account_id]

        def mailbox(account_id: int, key: str | int) -> Mailbox:
            if (account_id, key) not in mailboxes:
                if isinstance(key, int):
                    sql = f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND id = ?"
                else:
                    sql = f"SELECT {self._MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?"
                row = conn.execute(sql, (account_id, key)).fetchone()
                mailboxes[(account_id, key)] = self._mailbox(row) if row else None
            found = mailboxes[(account_id, key)]
            if found is None:
                raise NotFound(f"mailbox {key}")
            return found

        accepted: list[_Pending] = []
        for item in batch:
            try:
                placements: list[tuple[Mailbox, frozenset[str], tuple[float, int]]] = []
                if item.delivery is None:  # IMAP APPEND
                    assert item.internal_date is not None
                    target = mailbox(item.account_id, item.mailbox_id)
                    placements.append((target, item.flags, _timestamp(item.internal_date)))
                else:
                    date = _timestamp(item.delivery.internal_date)
                    for local in item.delivery.local:
                        try:
                            target = mailbox(local.account_id, normalize_mailbox_name(local.mailbox))
                        except (NotFound, InvalidName):
                            target = mailbox(local.account_id, "INBOX")  # NotFound: no such account
                        placements.append((target, normalize_flags(local.flags), date))
                needed: dict[int, int] = {}
                for target, _, _ in placements:
                    needed[target.account_id] = needed.get(target.account_id, 0) + item.size
                for account_id, size in needed.items():
                    quota, used = account_usage(account_id)
                    # RFC 9208 §5.1: refuse what would take the account over its STORAGE limit.
                    if quota is not None and used + size > quota:
                        raise QuotaExceeded(f"quota of {quota} bytes exceeded")
                for account_id, size in needed.items():
                    quota, used = usage[account_id]
                    usage[account_id] = (quota, used + size)
            except StoreError as exc:
                item.error = exc
                continue
            item.placements = placements
            accepted.append(item)

        counts: dict[int, int] = {}
        owners: dict[int, int] = {}
        for item in accepted:
            for target, _, _ in item.placements:
                counts[target.id] = counts.get(target.id, 0) + 1
                owners[target.id] = target.account_id
        # One MODSEQ per mailbox per batch: all of it is one commit (RFC 7162 allows sharing).
        allocated = {mailbox_id: self._allocate(conn, mailbox_id, n) for mailbox_id, n in counts.items()}
        next_uid = {mailbox_id: first for mailbox_id, (first, _) in allocated.items()}
        added: dict[int, list[int]] = {}
        rows: list[tuple[Any, ...]] = []
        queue_rows: list[tuple[Any, ...]] = []
        recipient_rows: list[tuple[Any, ...]] = []
        for item in accepted:
            info_json = item.info.to_json()
            ends_crlf = item.ends_crlf
            local_result: list[tuple[int, int, int]] = []
            for target, flags, date in item.placements:
                uid = next_uid[target.id]
                next_uid[target.id] = uid + 1
                rows.append(
                    (
                        target.id,
                        uid,
                        allocated[target.id][1],
                        flags_text(flags),
                        int("\\Seen" in flags),
                        int("\\Deleted" in flags),
                        date[0],
                        date[1],
                        item.size,
                        item.blob_id,
                        info_json,
                        ends_crlf,
                    )
                )
                local_result.append((target.account_id, target.id, uid))
                added.setdefault(target.id, []).append(uid)
            if item.delivery is None:
                item.keep = True
                item.result = (item.placements[0][0].uidvalidity, local_result[0][2])
                continue
            queue_id: str | None = None
            remote = item.delivery.remote
            if remote is not None and remote.recipients:
                queue_id = _new_queue_id()
                now = time.time()
                queue_rows.append(
                    (
                        queue_id,
                        remote.sender,
                        item.size,
                        item.blob_id,
                        remote.body_offset,
                        now,
                        now,
                        remote.envid,
                        remote.ret,
                        int(remote.smtputf8),
                        int(remote.eight_bit),
                        remote.authenticated_user,
                        remote.dkim_signature,
                        int(remote.requiretls),
                    )
                )
                recipient_rows += [
                    (queue_id, i, r.address, RecipientState.PENDING.value, " ".join(r.notify), r.orcpt)
                    for i, r in enumerate(remote.recipients)
                ]
            item.keep = bool(local_result) or queue_id is not None
            item.result = DeliveryResult(local=local_result, queue_id=queue_id)
        conn.executemany(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date, internal_tz,"
            " size, blob_id, info, ends_crlf) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "UPDATE accounts SET used_bytes = ? WHERE id = ?",
            [(used, account_id) for account_id, (_, used) in usage.items()],
        )
        if queue_rows:
            conn.executemany(
                "INSERT INTO queue (id, sender, size, blob_id, body_offset, created_at, next_attempt_at,"
                " envid, ret, smtputf8, eight_bit, authenticated_user, dkim_signature, requiretls)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                queue_rows,
            )
            conn.executemany(
                "INSERT INTO queue_recipients (queue_id, position, address, state, notify, orcpt)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                recipient_rows,
            )
        modseqs = {mailbox_id: modseq for mailbox_id, (_, modseq) in allocated.items()}
        return added_changes(added, owners, modseqs, bool(queue_rows))

    # ------------------------------------------------------------------------------ outbound queue

    def _queue_entries(
        self, conn: sqlite3.Connection, where: str, params: tuple[Any, ...]
    ) -> list[QueueEntry]:
        rows = conn.execute(
            f"SELECT {QUEUE_ENTRY_COLUMNS} FROM queue {where}",
            params,
        ).fetchall()
        # Recipients and attempts of all rows in two queries per chunk, not two per row: the runner
        # reads up to a batch of due entries at every refill.
        recipients_of: dict[str, list[QueueRecipient]] = {}
        attempts_of: dict[str, list[QueueAttempt]] = {}
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = _marks(len(chunk))
            for q in conn.execute(
                f"SELECT {QUEUE_RECIPIENT_COLUMNS} FROM queue_recipients WHERE queue_id IN ({marks})"
                " ORDER BY queue_id, position",
                chunk,
            ):
                recipients_of.setdefault(q[0], []).append(queue_recipient_from_row(q))
            for a in conn.execute(
                "SELECT queue_id, number, started_at, host, result FROM queue_attempts"
                f" WHERE queue_id IN ({marks}) ORDER BY queue_id, number",
                chunk,
            ):
                attempts_of.setdefault(a[0], []).append(
                    QueueAttempt(number=a[1], started_at=_datetime(a[2]), host=a[3], result=a[4])
                )
        return [
            queue_entry_from_row(
                r,
                recipients_of.get(r[0], ()),
                attempts_of.get(r[0], ()),
                created_at=_datetime(r[5]),
                next_attempt_at=_datetime(r[6]),
            )
            for r in rows
        ]

    def _read_txn(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        def wrapped(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return wrapped

    async def list_queue(self) -> list[QueueEntry]:
        return await self._in_worker(
            self._read_txn(lambda conn: self._queue_entries(conn, "ORDER BY created_at, id", ()))
        )

    async def queue_summary(self) -> QueueSummary:
        row = self._read().execute("SELECT count(*), min(created_at) FROM queue").fetchone()
        return QueueSummary(row[0], _datetime(row[1]) if row[1] is not None else None)

    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None:
        entries = await self._in_worker(
            self._read_txn(lambda conn: self._queue_entries(conn, "WHERE id = ?", (queue_id,)))
        )
        return entries[0] if entries else None

    async def due_queue_entries(
        self, now: datetime, limit: int, lease: timedelta | None = None
    ) -> list[QueueEntry]:
        # One process runs the queue on SQLite: nothing to claim against, `lease` does not apply.
        ts = _timestamp(now)[0]
        return await self._in_worker(
            self._read_txn(
                lambda conn: self._queue_entries(
                    conn, "WHERE next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?", (ts, limit)
                )
            )
        )

    async def reschedule(self, queue_id: str, next_attempt_at: datetime) -> None:
        ts = _timestamp(next_attempt_at)[0]

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            cur = conn.execute("UPDATE queue SET next_attempt_at = ? WHERE id = ?", (ts, queue_id))
            if cur.rowcount == 0:
                raise NotFound(f"queue entry {queue_id}")
            return None, [Change(ChangeKind.QUEUE_CHANGED, 0)], set()

        await self._write(fn)

    async def drop_queue_entry(self, queue_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            row = conn.execute("DELETE FROM queue WHERE id = ? RETURNING blob_id", (queue_id,)).fetchone()
            if row is None:
                raise NotFound(f"queue entry {queue_id}")
            return None, [Change(ChangeKind.QUEUE_CHANGED, 0)], {row[0]}

        await self._write(fn)

    async def flush_queue(self, now: datetime) -> int:
        ts = _timestamp(now)[0]

        def fn(conn: sqlite3.Connection) -> tuple[int, list[Change], set[str]]:
            cur = conn.execute("UPDATE queue SET next_attempt_at = ?", (ts,))
            changes = [Change(ChangeKind.QUEUE_CHANGED, 0)] if cur.rowcount else []
            return cur.rowcount, changes, set()

        return await self._write(fn)

    async def record_attempt(
        self,
        queue_id: str,
        started_at: datetime,
        host: str | None,
        lease_until: datetime,
        dkim_signature: bytes | None = None,
    ) -> int:
        started, lease = _timestamp(started_at)[0], _timestamp(lease_until)[0]

        def fn(conn: sqlite3.Connection) -> tuple[int, list[Change], set[str]]:
            # No change published: the runner that claims the entry is the one that would wake.
            # A signature already stored is never replaced (signed once, issue 18).
            cur = conn.execute(
                "UPDATE queue SET next_attempt_at = ?, dkim_signature = COALESCE(dkim_signature, ?) WHERE id = ?",
                (lease, dkim_signature, queue_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"queue entry {queue_id}")
            (number,) = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM queue_attempts WHERE queue_id = ?", (queue_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO queue_attempts (queue_id, number, started_at, host) VALUES (?, ?, ?, ?)",
                (queue_id, number, started, host),
            )
            return int(number), [], set()

        return await self._write_grouped(fn)

    async def finish_attempt(
        self,
        queue_id: str,
        number: int,
        result: str,
        updates: Sequence[RecipientUpdate],
        next_attempt_at: datetime | None,
        host: str | None = None,
    ) -> None:
        next_ts = None if next_attempt_at is None else _timestamp(next_attempt_at)[0]
        rows = [(u.state.value, u.last_reply, int(u.delay_notified), queue_id, u.index) for u in updates]

        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            if conn.execute("SELECT 1 FROM queue WHERE id = ?", (queue_id,)).fetchone() is None:
                raise NotFound(f"queue entry {queue_id}")  # dropped meanwhile (`surat queue drop`)
            conn.execute(
                "UPDATE queue_attempts SET result = ?, host = COALESCE(?, host) WHERE queue_id = ? AND number = ?",
                (result, host, queue_id, number),
            )
            conn.executemany(
                "UPDATE queue_recipients SET state = ?, last_reply = ?, delay_notified = MAX(delay_notified, ?)"
                " WHERE queue_id = ? AND position = ?",
                rows,
            )
            if next_ts is not None:
                conn.execute("UPDATE queue SET next_attempt_at = ? WHERE id = ?", (next_ts, queue_id))
                return None, [], set()
            (blob_id,) = conn.execute(
                "DELETE FROM queue WHERE id = ? RETURNING blob_id", (queue_id,)
            ).fetchone()
            return None, [], {blob_id}

        await self._write_grouped(fn)

    async def renew_leases(self, queue_ids: Sequence[str], now: datetime, lease: timedelta) -> list[str]:
        """One runner per SQLite store: no other node can take an entry over, so nothing is ever
        returned; the renewal only keeps an attempt in flight from looking due (`surat queue list`,
        the runner's own due query). Only entries with an attempt in flight (result NULL) move: an
        entry whose attempt finished meanwhile keeps the next attempt time its result set."""
        until = _timestamp(now + lease)[0]
        ids = json.dumps(list(queue_ids))

        def fn(conn: sqlite3.Connection) -> tuple[list[str], list[Change], set[str]]:
            conn.execute(
                "UPDATE queue SET next_attempt_at = ? WHERE id IN (SELECT value FROM json_each(?))"
                " AND id IN (SELECT queue_id FROM queue_attempts WHERE result IS NULL)",
                (until, ids),
            )
            return [], [], set()

        if not queue_ids:
            return []
        return await self._write(fn)

    async def recover_queue(self, now: datetime) -> int:
        ts = _timestamp(now)[0]

        def fn(conn: sqlite3.Connection) -> tuple[int, list[Change], set[str]]:
            interrupted = "SELECT queue_id FROM queue_attempts WHERE result IS NULL"
            cur = conn.execute(f"UPDATE queue SET next_attempt_at = ? WHERE id IN ({interrupted})", (ts,))
            conn.execute("UPDATE queue_attempts SET result = 'interrupted' WHERE result IS NULL")
            changes = [Change(ChangeKind.QUEUE_CHANGED, 0)] if cur.rowcount else []
            return cur.rowcount, changes, set()

        return await self._write(fn)

    # ------------------------------------------------------------------------------ import ledger, verify

    async def imported_digests(self, mailbox_id: int) -> set[bytes]:
        def fn(conn: sqlite3.Connection) -> set[bytes]:
            rows = conn.execute("SELECT digest FROM imported_messages WHERE mailbox_id = ?", (mailbox_id,))
            return {bytes(row[0]) for row in rows}

        return await self._in_worker(fn)

    async def record_imported(self, mailbox_id: int, imported: Sequence[tuple[bytes, int]]) -> None:
        def fn(conn: sqlite3.Connection) -> tuple[None, list[Change], set[str]]:
            conn.executemany(
                "INSERT OR IGNORE INTO imported_messages (mailbox_id, digest, uid) VALUES (?, ?, ?)",
                [(mailbox_id, digest, uid) for digest, uid in imported],
            )
            return None, [], set()

        await self._write(fn)

    async def verify(self, *, repair: bool = False, progress: VerifyProgress | None = None) -> VerifyReport:
        """See transfer.TransferStore.verify. The rows are read in one read transaction; the files
        are checked after it, so a problem found is confirmed against the rows again (a message
        expunged meanwhile took its file with it, and is no problem)."""
        if self._workers is None or self._loop is None:
            raise StoreError("store is not open")
        report = VerifyReport()

        def read(conn: sqlite3.Connection) -> tuple[list[BodyCheck], list[str], int]:
            rows = conn.execute(
                "SELECT m.blob_id, m.size, i.digest, a.address, mb.name, m.uid FROM messages m"
                " JOIN mailboxes mb ON mb.id = m.mailbox_id JOIN accounts a ON a.id = mb.account_id"
                " LEFT JOIN imported_messages i ON i.mailbox_id = m.mailbox_id AND i.uid = m.uid"
                " ORDER BY m.blob_id"
            ).fetchall()
            report.problems += [mailbox_counter_problem(*row) for row in conn.execute(MAILBOX_COUNTERS_SQL)]
            queued = [row[0] for row in conn.execute("SELECT blob_id FROM queue")]
            return [_body_check(row) for row in rows], queued, len(rows)

        checks, queued, report.messages = await self._in_worker(self._read_txn(read))
        bodies = {check.blob_id: check for check in checks}  # a copy shares its original's body
        report.bodies = len(bodies)
        suspects: list[tuple[BodyCheck, str]] = []
        pending = list(bodies.values())
        # Files are checked in slices on a worker thread, so that progress shows between them.
        for start in range(0, len(pending), _VERIFY_SLICE):
            part = pending[start : start + _VERIFY_SLICE]
            found = await self._loop.run_in_executor(self._workers, self._check_bodies, part)
            for check, (size, matches) in zip(part, found, strict=True):
                report.body_bytes += size or 0
                report.digests_checked += check.digest is not None and size == check.size
                line = body_problem(check, size, matches)
                if line is not None:
                    suspects.append((check, line))
            if progress is not None:
                progress(min(start + _VERIFY_SLICE, len(pending)), len(pending))
        missing_queued = [
            blob_id
            for blob_id in queued
            if not await self._loop.run_in_executor(self._workers, self.blobs.path(blob_id).is_file)
        ]

        def confirm(conn: sqlite3.Connection) -> tuple[set[str], set[str], list[tuple[Any, ...]]]:
            still = {
                check.blob_id
                for check, _ in suspects
                if conn.execute("SELECT 1 FROM messages WHERE blob_id = ?", (check.blob_id,)).fetchone()
            }
            queue_still = {
                blob_id
                for blob_id in missing_queued
                if conn.execute("SELECT 1 FROM queue WHERE blob_id = ?", (blob_id,)).fetchone()
            }
            return still, queue_still, conn.execute(ACCOUNT_USAGE_SQL).fetchall()

        # The files first, then the rows: a body committed between the two is referenced by then.
        unreferenced = await self._loop.run_in_executor(self._workers, self._old_blob_files)
        still, queue_still, usage = await self._in_worker(self._read_txn(confirm))
        report.problems += [line for check, line in suspects if check.blob_id in still]
        report.problems += [f"queue: body {blob_id} is missing" for blob_id in sorted(queue_still)]
        report.problems += [usage_problem(row[1], row[2], row[3]) for row in usage]

        def referenced(conn: sqlite3.Connection) -> set[str]:
            return {
                row[0]
                for blob_id in unreferenced
                for row in conn.execute(
                    "SELECT blob_id FROM messages WHERE blob_id = ? UNION SELECT blob_id FROM queue"
                    " WHERE blob_id = ?",
                    (blob_id, blob_id),
                )
            }

        in_use = await self._in_worker(self._read_txn(referenced))
        orphans = sorted(name for name in unreferenced if name not in in_use)
        report.orphans = len(orphans)
        report.problems += [f"body {name} is not referenced by any message" for name in orphans]
        if repair:
            await self._repair(report, [int(row[0]) for row in usage], orphans)
        return report

    def _check_bodies(self, checks: Sequence[BodyCheck]) -> list[tuple[int | None, bool]]:
        """(size on disk or None when missing, whether the ledger's digest matches) per body."""
        found: list[tuple[int | None, bool]] = []
        for check in checks:
            try:
                size = self.blobs.path(check.blob_id).stat().st_size
            except (FileNotFoundError, NotFound):
                found.append((None, True))
                continue
            matches = True
            if check.digest is not None and size == check.size:
                with self.blobs.path(check.blob_id).open("rb") as file:
                    matches = hashlib.file_digest(file, "sha256").digest() == check.digest
            found.append((size, matches))
        return found

    def _old_blob_files(self) -> list[str]:
        """Names in the blob area older than ORPHAN_MIN_AGE (blob ids; a stray name is kept as it is)."""
        cutoff = time.time() - ORPHAN_MIN_AGE
        names = []
        for blob_id, path in self.blobs.scan():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    names.append(blob_id or path.name)
        return names

    async def _repair(self, report: VerifyReport, accounts: list[int], orphans: list[str]) -> None:
        def recount(conn: sqlite3.Connection) -> tuple[list[str], list[Change], set[str]]:
            lines = []
            for account_id in accounts:
                # Recounted inside the writing transaction: deliveries meanwhile are counted.
                (used,) = conn.execute(RECOUNTED_USAGE_SQL.format(mark="?"), (account_id,)).fetchone()
                row = conn.execute(
                    "UPDATE accounts SET used_bytes = ? WHERE id = ? RETURNING address", (used, account_id)
                ).fetchone()
                if row is not None:
                    lines.append(f"{row[0]}: quota usage set to {used} bytes")
            # _write's collection deletes the bodies that are still unreferenced after this commit.
            return lines, [], {name for name in orphans if _is_blob_id(name)}

        report.repaired += await self._write(recount)
        for name in orphans:
            if not _is_blob_id(name):
                report.repaired.append(f"left {name} alone: not a body's name")
            elif not self.blobs.path(name).exists():
                report.repaired.append(f"removed body {name}")


# ------------------------------------------------------------------------------------ loop-side callbacks


def _settle(
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
    feed: ChangeFeed | None,
    changes: list[Change] | None,
) -> None:
    if feed is not None and changes:
        feed.publish(changes)
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_group(
    settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    feed: ChangeFeed,
    changes: list[Change],
) -> None:
    if changes:
        feed.publish(changes)
    for future, result, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _settle_batch(batch: list[_Pending], feed: ChangeFeed, changes: list[Change]) -> None:
    if changes:
        feed.publish(changes)
    for item in batch:
        if item.future.done():
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)


def _body_check(row: tuple[Any, ...]) -> BodyCheck:
    blob_id, size, digest, address, mailbox, uid = row
    return BodyCheck(
        blob_id, size, bytes(digest) if digest is not None else None, f"{address} {mailbox} uid {uid}"
    )


def _is_blob_id(name: str) -> bool:
    return len(name) == 26 and all(c in "0123456789abcdef" for c in name)
