"""The store's \\Recent claims (RFC 3501 §2.3.2): each UID is recent for one session only, whichever
claims it first, across concurrent claims on one store and across two stores on one database (as two
processes would be)."""

from __future__ import annotations

from pathlib import Path

from old_schema import account_database_at
from surat.store import schema


def test_migration_7_starts_with_nothing_recent(tmp_path: Path) -> None:
    conn = account_database_at(tmp_path / "old.db", 6)
    try:
        conn.execute(
            "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext) VALUES (1, 'INBOX', 1, 5)"
        )
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
        # Messages stored before the upgrade are not announced as new to whoever selects first.
        assert conn.execute("SELECT recent_uid FROM mailboxes").fetchall() == [(5,)]
    finally:
        conn.close()
