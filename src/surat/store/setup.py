"""The schema of the configured store, for `surat store init`, `surat serve` and `surat check`.

Schemas change only through `surat store init` (issue 12): it creates a new store's schema or upgrades
an old one, for either backend, and says from which version to which. `surat serve` and the admin
commands read the version without changing anything, and refuse a schema they do not know (newer than
this Surat) or that is older than this Surat, with one line saying what to run.

One exception keeps a fresh install at two minutes: a SQLite store that does not exist yet (or has no
schema at all) is created by whatever opens it first (`surat quickstart`, `make run`, `surat serve`).
An empty store holds nothing an upgrade could damage; an old store that holds mail is upgraded only
when the operator runs `surat store init` (after a backup, at a time of their choosing). A PostgreSQL
database is made by its administrator, so `surat store init` is already a step of that setup.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from surat.config import Config, StoreConfig
from surat.store import schema as sqlite_schema
from surat.store.base import StoreError
from surat.store.feed import InProcessChangeFeed
from surat.store.filemodes import PRIVATE_FILE_MODE, make_private_dir
from surat.store.sqlite import INDEX_FILE, SQLiteStore
from surat.store.transfer import TransferStore

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

# psycopg and the PostgreSQL schema are imported where the postgresql backend is used: a tenth of a
# second that no command on a SQLite store should pay.

# Seconds to wait for the PostgreSQL server to answer before saying it cannot be reached.
CONNECT_TIMEOUT = 10


class StoreUnavailable(StoreError):
    """The configured store cannot be reached or read; the message is one line for the operator."""


class ConfiguredStore(TransferStore, Protocol):
    async def open(self, *, recover: bool = True) -> None:
        """`recover=False`: leave what looks like a crash's leftovers alone, because another process
        (a worker, a running server beside an admin command) may be writing them. Only SQLite has
        such leftovers (staged files, blob files without a row); PostgreSQL has none."""
        ...


def configured_store(config: Config, *, feed: InProcessChangeFeed | None = None) -> ConfiguredStore:
    """The store `[store] backend` names, not opened yet: the one place that picks a backend, for
    `surat serve`, its workers and every admin command.

    `feed`: the in-process change feed the store publishes on (a worker's relayed feed on SQLite;
    on PostgreSQL the database carries the changes between processes, so a local feed only)."""
    if config.store.backend == "sqlite":
        return SQLiteStore(config.data_dir, feed=feed)
    from surat.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg: postgresql only)

    assert config.store.dsn is not None  # config validation: postgresql has a dsn
    return PostgresStore(config.store.dsn, password=config.store.dsn_password, feed=feed)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    backend: str
    found: int  # the version in the store; 0: no schema (a new SQLite file, an empty database)
    expected: int  # the version this Surat reads and writes

    def refusal(self, init_command: str) -> str | None:
        """Why the server must not start on this store, as one line naming what to run; None if it may."""
        if self.found > self.expected:
            return (
                f"store: schema version {self.found} is newer than this Surat knows ({self.expected}); "
                "run the newer Surat that wrote it"
            )
        if self.found == self.expected or (self.found == 0 and self.backend == "sqlite"):
            return None  # up to date, or a new SQLite store that opening creates (see above)
        if self.found == 0:
            return f"store: the database has no Surat schema yet; run `{init_command}` to create it"
        return (
            f"store: schema version {self.found} is older than this Surat's ({self.expected}); "
            f"run `{init_command}` to upgrade it"
        )


def store_location(config: Config) -> str:
    """The backend and where its data is, without any password."""
    if config.store.backend == "sqlite":
        return f"sqlite {config.data_dir}"
    return config.store.describe()


async def schema_status(config: Config) -> SchemaStatus:
    """The schema version of the configured store, read without changing anything."""
    if config.store.backend == "sqlite":
        return SchemaStatus(
            "sqlite", _sqlite_version(config.data_dir / INDEX_FILE), len(sqlite_schema.MIGRATIONS)
        )
    from surat.store.postgres import schema as postgres_schema  # noqa: PLC0415

    async with connected(config.store) as conn:
        found = await postgres_schema.schema_version(conn)
    return SchemaStatus(config.store.backend, found, postgres_schema.SCHEMA_VERSION)


async def init_schema(config: Config) -> tuple[int, int]:
    """`surat store init`: create or upgrade the schema of the configured store; (from, to) versions.
    A schema newer than this Surat raises SchemaTooNew and is left as it is."""
    if config.store.backend == "sqlite":
        return _init_sqlite(config.data_dir)
    from surat.store.postgres import schema as postgres_schema  # noqa: PLC0415

    async with connected(config.store) as conn:
        found = await postgres_schema.schema_version(conn)
        return found, await postgres_schema.migrate(conn)


def _sqlite_version(index: Path) -> int:
    if not index.is_file():
        return 0
    try:
        # Read-only: checking must not create or change anything.
        conn = sqlite3.connect(f"file:{index.resolve()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read the store {index}: {exc}") from None


def _init_sqlite(data_dir: Path) -> tuple[int, int]:
    """The migrations alone, not SQLiteStore.open(): that one's crash recovery removes spool files, and
    init may run beside a server that is still writing them."""
    index = data_dir / INDEX_FILE
    try:
        make_private_dir(data_dir, parents=True)
        # Created 0600 before SQLite opens it, as SQLiteStore does: the index holds password hashes.
        os.close(os.open(index, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))
        conn = sqlite3.connect(index, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA busy_timeout = 10000")
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            return found, sqlite_schema.migrate(conn)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot open the store in {data_dir}: {exc}") from None


@contextlib.asynccontextmanager
async def connected(store: StoreConfig) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """An autocommit connection to the database of a postgresql store (the configured one, or the
    target of `surat store migrate`); PostgreSQL's errors (cannot connect, no right to create
    tables...) become one StoreUnavailable line naming the database."""
    import psycopg  # noqa: PLC0415

    assert store.dsn is not None  # config validation: postgresql has a dsn
    try:
        # password=None adds nothing: libpq then looks in the dsn, PGPASSWORD or ~/.pgpass
        conn = await psycopg.AsyncConnection.connect(
            store.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT, password=store.dsn_password
        )
    except psycopg.OperationalError as exc:
        # libpq's message names host and user, never the password.
        raise StoreUnavailable(f"cannot connect to {store.describe()}: {first_line(exc)}") from None
    try:
        async with conn:
            yield conn
    except psycopg.Error as exc:
        raise StoreUnavailable(f"{store.describe()}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (psycopg's carry a DETAIL/HINT after it), for one log line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
