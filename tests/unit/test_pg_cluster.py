"""The private PostgreSQL cluster itself: reachable over TCP (with the password) and the unix socket,
and running with the durability settings the store's contract assumes."""

from __future__ import annotations

import psycopg
import pytest

from pg_cluster import PostgresCluster, PostgresUnavailable, find_bindir


def test_cluster_runs_with_fsync_and_synchronous_commit_on(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.dsn()) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_unix_socket_connection(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.socket_dsn()) as conn:
        # inet_server_addr() is NULL on a unix-socket connection
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_tcp_needs_the_password(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_cluster.dsn(with_password=False), connect_timeout=10).close()


def test_each_test_database_is_new_and_empty(pg_cluster: PostgresCluster, pg_database: str) -> None:
    assert pg_database != pg_cluster.new_database()
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)


def test_missing_server_programs_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where neither pg_config nor /usr/lib/postgresql/*/bin gives initdb and pg_ctl, the fixture gets
    PostgresUnavailable naming what to install (then skips, or fails under CI=true)."""
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(PostgresUnavailable, match=r"initdb, pg_ctl\) are not installed .*postgresql package"):
        find_bindir()


def test_the_server_programs_are_found_here() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()
