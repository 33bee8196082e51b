"""`surat store migrate --to DSN`: copy the SQLite store (its index and its message files) into an
empty PostgreSQL database and verify the copy (issue 12). The operator then switches `[store]`.

What is copied, with every id and counter unchanged: domains, accounts (password hashes, SCRAM keys,
quotas, usage), app passwords (digests, times), aliases, mailboxes (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, the \\Recent mark
`recent_uid`, special-use), subscriptions, messages (UID, MODSEQ, flags and keywords, internal date
and zone, size, MessageInfo, `ends_crlf`), expunged UIDs with their MODSEQ (QRESYNC's VANISHED and
`changes_since`), the queue (entries, recipients, attempts; no leases: no node holds one yet),
login-failure records, sending records, the `meta` counters (the next UIDVALIDITY), every message
and queue body, and what every node must share (docs/shared-keys.md): the installation secret
(`server.secret`) and every DKIM key (`dkim/<domain>/<selector>.pem`, all selectors, the algorithm
read from the key, `created_at` from the file's time). POP3 UIDLs are "<uidvalidity>.<uid>" (pop3d/service.py), so they stay the same, as
IMAP's UIDVALIDITY and UIDs do: clients notice nothing. Identity sequences are set past the copied ids.

Type conversions (the PostgreSQL schema's types): epoch-second REALs become `timestamptz` at the
microsecond (what the SQLite store itself returns, `datetime.fromtimestamp`); `internal_tz` seconds
become minutes; 0/1 become booleans; `auth_clients.failures` (space-separated seconds) a
`timestamptz[]`; bodies `blob_chunks` of BLOB_CHUNK_SIZE octets.

Consistency, all or nothing (not resumable; a failed run is simply run again):
- the source is read in one SQLite read transaction, one snapshot of every table;
- the target is written in one PostgreSQL transaction, committed only after the verification below
  passed. Whatever fails (a body missing or shorter than its index says, a checksum, the connection,
  Ctrl-C) rolls it back: the target keeps the schema (created first, as `surat store init` does) and
  no data, so the next attempt finds it empty again;
- bodies are files outside SQLite's snapshot, and a server that keeps running after the snapshot
  would deliver mail the copy does not hold: if anything commits to the source during the copy (its
  `PRAGMA data_version` changes), the migrate fails and commits nothing. Stop the server first.
- the target's tables are locked (EXCLUSIVE: readers only) before they are checked for data, so a
  second migrate or a server started on the target meanwhile waits and then finds the data.

Verification, inside the target transaction before COMMIT:
- per table: the rows read from SQLite and the rows read back from PostgreSQL, counted, and a digest
  of their values computed the same way on both sides: each row's values in one canonical form
  (`_canonical`: times as integer microseconds since the epoch, booleans as 0/1), hashed with SHA-256,
  the hashes added modulo 2**256 (a multiset digest: independent of row order, so neither side sorts);
- bodies: SHA-256 of each body as read from its file, against PostgreSQL's own SHA-256 of the body's
  chunks joined (`sha256(string_agg(...))`, one body at a time), in blob id order.

Memory: rows and bodies are streamed (SQLite cursors into COPY; bodies BLOB_CHUNK_SIZE octets at a
time), never loaded whole. What grows with the store is 32 octets per body (the source digests, kept
for the comparison): 32 MB for a million messages.

This runs in the `surat` command, not in the server: SQLite reads and file reads run on the event
loop, which has nothing else to serve.
"""

# ruff: noqa: S608 -- SQL text is built only from the constant table specifications below.

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from surat.config import StoreConfig
from surat.store import schema as sqlite_schema
from surat.store.base import StoredDkimKey, StoreError
from surat.store.blobs import FileBlobReader, FileBlobStore
from surat.store.keyfiles import KEY_DIR, SECRET_FILE, read_keys
from surat.store.postgres import schema as postgres_schema
from surat.store.postgres.keys import INSTALLATION_SECRET_NAME
from surat.store.postgres.schema import BLOB_CHUNK_SIZE
from surat.store.setup import SchemaStatus, connected
from surat.store.sqlite import BLOB_DIR, INDEX_FILE, SPOOL_DIR

Connection = psycopg.AsyncConnection[TupleRow]

# Rows per fetch of the server-side cursors that read the target back: a few MB of messages rows at
# most, whatever the store's size.
READ_BACK_ROWS = 2000
# Bodies between two progress reports.
PROGRESS_EVERY = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DIGEST_MODULUS = 1 << 256


class MigrationRefused(StoreError):
    """The source or the target is not one migrate may use; nothing was written. One line."""


class MigrationFailed(StoreError):
    """The copy or its verification failed; the target transaction was rolled back. One line."""


# ------------------------------------------------------------------------------------- conversions


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _minutes(seconds: int) -> int:
    # The SQLite store keeps the INTERNALDATE zone in seconds, PostgreSQL in minutes; an RFC 9051
    # date-time zone is +-HHMM, so a whole number of minutes. Anything else would not survive.
    if seconds % 60:
        raise MigrationFailed(f"an internal date's zone of {seconds} s is not whole minutes")
    return seconds // 60


def _flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _same(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row


def _account(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:-1], bool(row[-1]))  # is_admin: 0/1 -> boolean


def _app_password(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # id, account_id, name, digest, created_at, last_used
    return (*row[:4], _moment(row[4]), None if row[5] is None else _moment(row[5]))


def _message(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # id, mailbox_id, uid, modseq, flags, seen, deleted, internal_date, internal_tz, size, blob_id,
    # info, ends_crlf
    return (
        *row[:5],
        bool(row[5]),
        bool(row[6]),
        _moment(row[7]),
        _minutes(row[8]),
        *row[9:12],
        _flag(row[12]),
    )


def _queue_entry(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # id, sender, size, blob_id, body_offset, created_at, next_attempt_at, envid, ret, smtputf8,
    # eight_bit, authenticated_user, dkim_signature, requiretls
    return (
        *row[:5],
        _moment(row[5]),
        _moment(row[6]),
        row[7],
        row[8],
        bool(row[9]),
        bool(row[10]),
        row[11],
        row[12],
        bool(row[13]),
    )


def _queue_recipient(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:7], bool(row[7]))


def _queue_attempt(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[0], row[1], _moment(row[2]), row[3], row[4])


def _auth_client(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # key, ip, failures, blocked_until, strikes, last_failure
    failures = [_moment(float(t)) for t in row[2].split()]
    return (row[0], row[1], failures, _moment(row[3]), row[4], _moment(row[5]))


def _sent(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[0], _moment(row[1]), row[2])


def _sieve_script(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # account_id, name, text, active, version, created_at, updated_at
    return (*row[:3], bool(row[3]), row[4], _moment(row[5]), _moment(row[6]))


def _vacation_reply(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:3], _moment(row[3]))


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: str  # spelled alike in both schemas, selected and copied in this order
    convert: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # a SQLite row -> the target's values
    order: str = ""  # SQLite ORDER BY: the copy goes in key order (the target's indexes like it)


# In the order of the target's foreign keys; blobs (and their chunks) go between subscriptions and
# messages, copied by _copy_bodies.
_TABLES_BEFORE_BODIES = (
    _Table("meta", "key, value", _same, order="key"),
    _Table("domains", "name", _same, order="name"),
    _Table(
        "accounts",
        "id, address, domain, password_hash, scram_salt, scram_iterations, scram_stored_key,"
        " scram_server_key, quota_bytes, used_bytes, is_admin",
        _account,
        order="id",
    ),
    _Table("aliases", "source, target, domain", _same, order="source, target"),
    _Table(
        "mailboxes",
        "id, account_id, name, uidvalidity, uidnext, highestmodseq, special_use, recent_uid",
        _same,
        order="id",
    ),
    _Table("subscriptions", "account_id, name", _same, order="account_id, name"),
    _Table("app_passwords", "id, account_id, name, digest, created_at, last_used", _app_password, order="id"),
)
_TABLES_AFTER_BODIES = (
    _Table(
        "messages",
        "id, mailbox_id, uid, modseq, flags, seen, deleted, internal_date, internal_tz, size, blob_id,"
        " info, ends_crlf",
        _message,
        order="id",
    ),
    _Table("expunged", "mailbox_id, uid, modseq", _same, order="mailbox_id, uid"),
    _Table(
        "queue",
        "id, sender, size, blob_id, body_offset, created_at, next_attempt_at, envid, ret, smtputf8,"
        " eight_bit, authenticated_user, dkim_signature, requiretls",
        _queue_entry,
        order="id",
    ),
    _Table(
        "queue_recipients",
        "queue_id, position, address, state, notify, orcpt, last_reply, delay_notified",
        _queue_recipient,
        order="queue_id, position",
    ),
    _Table(
        "queue_attempts",
        "queue_id, number, started_at, host, result",
        _queue_attempt,
        order="queue_id, number",
    ),
    _Table(
        "auth_clients", "key, ip, failures, blocked_until, strikes, last_failure", _auth_client, order="key"
    ),
    _Table("sent_messages", '"user", sent_at, recipients', _sent),
    _Table(
        "sieve_scripts",
        "account_id, name, text, active, version, created_at, updated_at",
        _sieve_script,
        order="account_id, name",
    ),
    _Table(
        "vacation_replies",
        "account_id, sender, handle, replied_at",
        _vacation_reply,
        order="account_id, sender, handle",
    ),
    _Table("imported_messages", "mailbox_id, digest, uid", _same, order="mailbox_id, digest"),
)
# The shared keys (files in the SQLite data directory, rows on PostgreSQL), copied by _copy_keys.
_KEY_TABLES = (
    _Table("shared_secrets", "name, value", _same),
    _Table("dkim_keys", "domain, selector, algorithm, private_pem, created_at", _same),
)
# The blobs table as a row table for counts and digests (its rows are written by _copy_bodies).
_BLOBS = _Table("blobs", "id, size", _same)
# Every table of the target that holds data: all must be empty before the copy. `nodes` too: a row
# there is a Surat process serving from this database.
_TARGET_TABLES = (
    *(t.name for t in _TABLES_BEFORE_BODIES),
    "blobs",
    "blob_chunks",
    *(t.name for t in _TABLES_AFTER_BODIES),
    *(t.name for t in _KEY_TABLES),
    "nodes",
)
# Tables whose `id` is an identity column: their sequences must continue after the copied ids.
_IDENTITY_TABLES = ("accounts", "mailboxes", "messages", "app_passwords")


def _canonical(value: Any) -> Any:
    """One form for a value read from either side (or converted for the target): what the row
    digests hash. datetime -> microseconds since the epoch; bool -> 0/1; bytes-likes -> bytes."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MICROSECOND
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value


class _Digest:
    """Rows counted and digested: the sum modulo 2**256 of SHA-256 over each row's canonical repr."""

    __slots__ = ("rows", "total")

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, row: tuple[Any, ...]) -> None:
        text = repr(tuple(_canonical(v) for v in row)).encode()
        self.total = (self.total + int.from_bytes(hashlib.sha256(text).digest())) % _DIGEST_MODULUS
        self.rows += 1


# ------------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Progress:
    bodies_done: int
    bodies_total: int
    bytes_done: int


@dataclass(frozen=True, slots=True)
class MigrationReport:
    tables: tuple[tuple[str, int], ...]  # (table, rows), each verified equal on both sides
    bodies: int
    body_bytes: int
    seconds: float

    @property
    def messages(self) -> int:
        return dict(self.tables).get("messages", 0)


# ------------------------------------------------------------------------------------------- source


class _Source:
    """The SQLite index in one read transaction (one snapshot), and the message files."""

    def __init__(self, data_dir: Path, init_command: str) -> None:
        index = data_dir / INDEX_FILE
        if not index.is_file():
            raise MigrationRefused(f"no Surat store in {data_dir} (no {INDEX_FILE})")
        try:
            # Read-only: migrate never changes the source.
            self.conn = sqlite3.connect(f"file:{index.resolve()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise MigrationRefused(f"cannot read the store in {data_dir}: {exc}") from None
        try:
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("BEGIN")
            # The first read starts the snapshot; every later read in this transaction sees it.
            found = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self._data_version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            self.conn.close()
            raise MigrationRefused(f"cannot read the store in {data_dir}: {exc}") from None
        expected = len(sqlite_schema.MIGRATIONS)
        if found != expected:
            self.conn.close()
            refusal = SchemaStatus("sqlite", found, expected).refusal(init_command)
            raise MigrationRefused(refusal or f"no Surat store in {data_dir} (an index without a schema)")
        self.blobs = FileBlobStore(data_dir / BLOB_DIR, data_dir / SPOOL_DIR)
        self.data_dir = data_dir

    def secret(self) -> bytes | None:
        """The installation secret, or None before the server's first start made one (the target
        then makes its own at its first start: no client has seen one yet)."""
        try:
            return (self.data_dir / SECRET_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def dkim_keys(self) -> list[StoredDkimKey]:
        keys_dir = self.data_dir / KEY_DIR
        if not keys_dir.is_dir():
            return []
        domains = sorted(entry.name for entry in keys_dir.iterdir() if entry.is_dir())
        return [key for domain in domains for key in read_keys(self.data_dir, domain)]

    def rows(self, table: _Table) -> sqlite3.Cursor:
        order = f" ORDER BY {table.order}" if table.order else ""
        return self.conn.execute(f"SELECT {table.columns} FROM {table.name}{order}")

    def bodies(self) -> sqlite3.Cursor:
        """(blob id, size recorded, how many rows disagree on the size) of every body referred to, in
        id order (SQLite's BINARY order of hex ids: PostgreSQL's COLLATE "C" order)."""
        return self.conn.execute(
            "SELECT blob_id, max(size), count(DISTINCT size) FROM"
            " (SELECT blob_id, size FROM messages UNION ALL SELECT blob_id, size FROM queue)"
            " GROUP BY blob_id ORDER BY blob_id"
        )

    def changed(self) -> bool:
        """Ends the snapshot; whether another connection committed to the store since it began."""
        self.conn.execute("COMMIT")
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0]) != self._data_version

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------------------------------- copying


async def migrate_to_postgresql(
    data_dir: Path,
    target: StoreConfig,
    *,
    init_command: str = "surat store init",
    progress: Callable[[Progress], None] | None = None,
) -> MigrationReport:
    """Copy the SQLite store in `data_dir` into `target`'s database (which must hold no Surat data),
    verify, commit. MigrationRefused/MigrationFailed/StoreUnavailable/SchemaTooNew say why not, and
    then nothing was committed to the target."""
    started = time.monotonic()
    source = _Source(data_dir, init_command)
    try:
        async with connected(target) as conn:
            # A commit that returns is on disk (whatever the server's default), times come back in UTC.
            await conn.execute(b"SET synchronous_commit = on; SET TIME ZONE 'UTC'")
            await postgres_schema.migrate(conn)  # creates the schema if absent, as `store init` does
            async with conn.transaction():
                await _lock_and_check_empty(conn)
                try:
                    digests, body_digests, body_bytes = await _copy(source, conn, progress)
                except MigrationFailed as exc:
                    if source.changed():  # the likelier cause of a body gone missing
                        raise _changed() from exc
                    raise
                if source.changed():
                    raise _changed()
                await _reset_identities(conn)
                await _verify(conn, digests, body_digests)
            # COMMIT returned: the copy is durable.
    finally:
        source.close()
    tables = tuple((name, digest.rows) for name, digest in digests.items())
    return MigrationReport(tables, len(body_digests) // 32, body_bytes, time.monotonic() - started)


def _changed() -> MigrationFailed:
    return MigrationFailed(
        "the store changed while it was copied (is surat still running?); nothing was committed: "
        "stop surat and run the migrate again"
    )


async def _lock_and_check_empty(conn: Connection) -> None:
    # EXCLUSIVE blocks every writer (a second migrate, a server started on the target) until this
    # transaction ends, and lets readers be.
    await conn.execute(f"LOCK TABLE {', '.join(_TARGET_TABLES)} IN EXCLUSIVE MODE".encode())
    in_use = []
    for name in _TARGET_TABLES:
        cursor = await conn.execute(f"SELECT EXISTS (SELECT 1 FROM {name})".encode())
        row = await cursor.fetchone()
        if row is not None and row[0]:
            in_use.append(name)
    if in_use:
        raise MigrationRefused(
            f"the target database holds Surat data already ({', '.join(in_use)}); "
            "migrate copies into an empty database only, never into one in use"
        )


async def _copy_table(source: _Source, conn: Connection, table: _Table) -> _Digest:
    digest = _Digest()
    cursor = conn.cursor()
    async with cursor.copy(f"COPY {table.name} ({table.columns}) FROM STDIN".encode()) as copy:
        for row in source.rows(table):
            values = table.convert(row)
            digest.add(values)
            await copy.write_row(values)
    return digest


async def _copy(
    source: _Source, conn: Connection, progress: Callable[[Progress], None] | None
) -> tuple[dict[str, _Digest], bytearray, int]:
    digests: dict[str, _Digest] = {}
    for table in _TABLES_BEFORE_BODIES:
        digests[table.name] = await _copy_table(source, conn, table)
    digests["blobs"], body_digests, body_bytes = await _copy_bodies(source, conn, progress)
    for table in _TABLES_AFTER_BODIES:
        digests[table.name] = await _copy_table(source, conn, table)
    digests.update(await _copy_keys(source, conn))
    return digests, body_digests, body_bytes


async def _copy_keys(source: _Source, conn: Connection) -> dict[str, _Digest]:
    """The installation secret and the DKIM keys, from their files into their tables."""
    secret = source.secret()
    secret_rows: list[tuple[Any, ...]] = [] if secret is None else [(INSTALLATION_SECRET_NAME, secret)]
    try:
        keys = source.dkim_keys()
    except (OSError, StoreError) as exc:
        raise MigrationFailed(f"cannot read the DKIM keys: {exc}") from None
    key_rows: list[tuple[Any, ...]] = [
        (k.domain, k.selector, k.algorithm, k.private_pem, k.created_at) for k in keys
    ]
    digests: dict[str, _Digest] = {}
    for table, rows in zip(_KEY_TABLES, (secret_rows, key_rows), strict=True):
        digest = digests[table.name] = _Digest()
        cursor = conn.cursor()
        async with cursor.copy(f"COPY {table.name} ({table.columns}) FROM STDIN".encode()) as copy:
            for row in rows:
                digest.add(row)
                await copy.write_row(row)
    return digests


async def _copy_bodies(
    source: _Source, conn: Connection, progress: Callable[[Progress], None] | None
) -> tuple[_Digest, bytearray, int]:
    """The `blobs` rows first (a chunk's foreign key needs its blob), sizes checked against the
    files; then every body's chunks in one binary COPY, each body hashed as it goes."""
    blob_rows = _Digest()
    cursor = conn.cursor()
    async with cursor.copy(b"COPY blobs (id, size) FROM STDIN") as copy:
        for blob_id, size, sizes in source.bodies():
            if sizes != 1:
                raise MigrationFailed(
                    f"message body {blob_id}: its messages and queue entries disagree on its size"
                )
            found = await _body_size(source, blob_id)
            if found != size:
                raise MigrationFailed(
                    f"message body {blob_id}: the file has {found} octets, the index says {size}"
                )
            blob_rows.add((blob_id, size))
            await copy.write_row((blob_id, size))
    total = blob_rows.rows
    body_digests = bytearray()
    body_bytes = 0
    cursor = conn.cursor()
    async with cursor.copy(b"COPY blob_chunks (blob_id, position, data) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int4", "bytea"])
        for blob_id, size, _ in source.bodies():
            body = hashlib.sha256()
            reader = await _open_body(source, blob_id)
            try:
                offset = 0
                position = 0
                while offset < size:
                    piece = await reader.read(offset, min(BLOB_CHUNK_SIZE, size - offset))
                    if not piece:
                        raise MigrationFailed(
                            f"message body {blob_id}: the file ends at {offset} octets, the index says {size}"
                        )
                    body.update(piece)
                    await copy.write_row((blob_id, position, piece))
                    offset += len(piece)
                    position += 1
            finally:
                reader.close()
            body_digests += body.digest()
            body_bytes += size
            done = len(body_digests) // 32
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
                progress(Progress(done, total, body_bytes))
    return blob_rows, body_digests, body_bytes


async def _open_body(source: _Source, blob_id: str) -> FileBlobReader:
    try:
        return await source.blobs.open(blob_id)
    except (OSError, StoreError) as exc:
        raise MigrationFailed(f"message body {blob_id}: cannot read its file: {exc}") from None


async def _body_size(source: _Source, blob_id: str) -> int:
    reader = await _open_body(source, blob_id)
    try:
        return reader.size
    finally:
        reader.close()


async def _reset_identities(conn: Connection) -> None:
    # The next account, mailbox or message created on PostgreSQL gets an id after the copied ones.
    for name in _IDENTITY_TABLES:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), coalesce(max(id), 0) + 1, false) FROM {name}".encode()
        )


# ---------------------------------------------------------------------------------------- verifying


async def _read_back(conn: Connection, table: _Table) -> _Digest:
    digest = _Digest()
    async with conn.cursor(name=f"surat_verify_{table.name}") as cursor:
        cursor.itersize = READ_BACK_ROWS
        await cursor.execute(f"SELECT {table.columns} FROM {table.name}".encode())
        async for row in cursor:
            digest.add(row)
    return digest


async def _verify(conn: Connection, digests: dict[str, _Digest], body_digests: bytearray) -> None:
    tables = {t.name: t for t in (*_TABLES_BEFORE_BODIES, _BLOBS, *_TABLES_AFTER_BODIES, *_KEY_TABLES)}
    for name, copied in digests.items():
        stored = await _read_back(conn, tables[name])
        if stored.rows != copied.rows:
            raise MigrationFailed(f"table {name}: {copied.rows} rows copied, {stored.rows} in the target")
        if stored.total != copied.total:
            raise MigrationFailed(f"table {name}: the rows in the target differ from the source (digest)")
    # PostgreSQL hashes each body itself, one at a time (the correlated subquery joins one body's
    # chunks; GROUP BY over all chunks would hold every body at once).
    position = 0
    async with conn.cursor(name="surat_verify_bodies") as cursor:
        cursor.itersize = READ_BACK_ROWS
        await cursor.execute(
            b"SELECT b.id, sha256(coalesce((SELECT string_agg(c.data, ''::bytea ORDER BY c.position)"
            b" FROM blob_chunks c WHERE c.blob_id = b.id), ''::bytea)) FROM blobs b ORDER BY b.id COLLATE \"C\""
        )
        async for blob_id, stored_digest in cursor:
            expected = bytes(body_digests[position * 32 : position * 32 + 32])
            if bytes(stored_digest) != expected:
                raise MigrationFailed(
                    f"message body {blob_id}: its SHA-256 in the target differs from the source's"
                )
            position += 1
    if position * 32 != len(body_digests):
        raise MigrationFailed(f"{len(body_digests) // 32} message bodies copied, {position} in the target")
