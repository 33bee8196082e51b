"""A SQLite index written by an older Surat, for the tests of schema migrations (unit tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from surat.store import schema


def queue_database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database at `path` with the first `version` migrations applied, holding one queue entry
    `q1` (sender a@example.test) with one pending recipient; the caller closes the connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, target=version)
    conn.execute(
        "INSERT INTO queue (id, sender, size, blob_id, created_at, next_attempt_at)"
        " VALUES ('q1', 'a@example.test', 1, 'b1', 0, 0)"
    )
    conn.execute(
        "INSERT INTO queue_recipients (queue_id, position, address, state) VALUES ('q1', 0, 'x@dead.test', 'pending')"
    )
    return conn


def account_database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database at `path` with the first `version` migrations applied, holding account 1
    (a@example.test) without mailboxes; the caller closes the connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, target=version)
    conn.execute("INSERT INTO domains (name) VALUES ('example.test')")
    conn.execute(
        "INSERT INTO accounts (id, address, domain, password_hash) VALUES (1, 'a@example.test', 'example.test', 'x')"
    )
    return conn
