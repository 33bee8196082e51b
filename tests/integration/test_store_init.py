"""`surat store init` creates and upgrades the schema of the configured store (SQLite in the data
directory, PostgreSQL in the tests' private cluster), and `surat serve` refuses a schema it does not
know or that is older than the code, with one line saying what to run. Every command runs as the real
`surat` program in a child process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
from conftest import free_port, serving
from psycopg import sql

from old_schema import account_database_at
from pg_cluster import SUPERUSER_PASSWORD, PostgresCluster
from surat.store import schema as sqlite_schema
from surat.store.sqlite import INDEX_FILE

SQLITE_VERSION = len(sqlite_schema.MIGRATIONS)


def write_config(directory: Path, store: str = "", listen: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "surat.toml"
    config.write_text(f'hostname = "mail.example.test"\n{listen}\n{store}\n', encoding="utf-8")
    return config


def postgresql_config(directory: Path, cluster: PostgresCluster, database: str) -> Path:
    """A config for `database` over TCP, the password in dsn_password_file as an operator would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "db.pw").write_text(SUPERUSER_PASSWORD + "\n")
    dsn = cluster.dsn(database, with_password=False)
    return write_config(
        directory, f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\ndsn_password_file = "db.pw"\n'
    )


def surat(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surat", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def location(cluster: PostgresCluster, database: str) -> str:
    return f"postgresql user=surat dbname={database} host=127.0.0.1 port={cluster.port}"


def assert_one_line_error(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"surat: {line}\n")


# ------------------------------------------------------------------------------------------- PostgreSQL


def test_postgresql_init_creates_the_schema_then_does_nothing(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    first = surat(config, "store", "init")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == f"store: {location(pg_cluster, pg_database)}: created schema version 3\n"
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        applied = conn.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall()
    assert {"accounts", "mailboxes", "messages", "queue", "blob_chunks", "schema_version"} <= tables
    assert [version for version, _ in applied] == [1, 2, 3]

    second = surat(config, "store", "init")
    assert (second.returncode, second.stderr) == (0, "")
    assert second.stdout == f"store: {location(pg_cluster, pg_database)}: schema version 3, up to date\n"
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        assert (
            conn.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall()
            == applied
        )


def test_postgresql_check_shows_the_store_without_the_password(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    assert surat(config, "store", "init").returncode == 0
    result = surat(config, "check")
    assert (result.returncode, result.stderr) == (0, "")
    assert f"store:    {location(pg_cluster, pg_database)}, schema version 3\n" in result.stdout
    assert SUPERUSER_PASSWORD not in result.stdout
    assert result.stdout.endswith("OK\n")


def test_admin_commands_work_on_postgresql_and_never_touch_data_dir(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    assert surat(config, "store", "init").returncode == 0
    added = surat(config, "domain", "add", "example.test")
    assert (added.returncode, added.stderr) == (0, "")
    assert added.stdout.startswith("added domain example.test\n")
    user = surat(config, "user", "add", "bob@example.test", "--password-stdin", stdin="a long password\n")
    assert (user.returncode, user.stdout, user.stderr) == (0, "added account bob@example.test\n", "")
    listed = surat(config, "domain", "list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "example.test\n", "")
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:  # in the database, not in a SQLite file
        assert conn.execute("SELECT address FROM accounts").fetchall() == [("bob@example.test",)]
    assert not (tmp_path / "data" / INDEX_FILE).exists()
    check = surat(config, "check")
    assert check.returncode == 0, check.stderr
    assert "1 domain(s), 1 account(s), 0 queued message(s)" in check.stdout


def test_serve_refuses_a_postgresql_schema_newer_than_the_code(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    assert surat(config, "store", "init").returncode == 0
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (4)")
    line = "store: schema version 4 is newer than this Surat knows (3); run the newer Surat that wrote it"
    assert_one_line_error(surat(config, "serve"), line)
    assert_one_line_error(surat(config, "store", "init"), line)  # and init leaves it alone
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (4,)


def test_serve_refuses_an_empty_postgresql_database(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    assert_one_line_error(
        surat(config, "serve"),
        f"store: the database has no Surat schema yet; run `surat --config {config} store init` to create it",
    )
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:  # serve created nothing
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


def test_a_wrong_password_is_one_line_without_the_password(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    config = postgresql_config(tmp_path, pg_cluster, pg_database)
    (tmp_path / "db.pw").write_text("not-the-password\n")
    result = surat(config, "store", "init")
    assert result.returncode == 1
    assert result.stderr.startswith(f"surat: store: cannot connect to {location(pg_cluster, pg_database)}: ")
    assert 'password authentication failed for user "surat"' in result.stderr
    assert result.stderr.count("\n") == 1
    assert "not-the-password" not in result.stderr


def test_a_role_that_may_not_create_tables_gets_one_line(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    role = f"reader_{pg_database}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader-pw'").format(sql.Identifier(role)))
    (tmp_path / "db.pw").write_text("reader-pw\n")
    dsn = f"postgresql://{role}@127.0.0.1:{pg_cluster.port}/{pg_database}"
    config = write_config(
        tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\ndsn_password_file = "db.pw"\n'
    )
    # PostgreSQL 15: only the database owner may create in schema public.
    assert_one_line_error(
        surat(config, "store", "init"),
        f"store: postgresql user={role} dbname={pg_database} host=127.0.0.1 port={pg_cluster.port}: "
        "permission denied for schema public",
    )


# ------------------------------------------------------------------------------------------- SQLite


def test_sqlite_init_creates_the_schema_then_does_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "data"
    first = surat(config, "store", "init")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == f"store: sqlite {data}: created schema version {SQLITE_VERSION}\n"
    assert (data / INDEX_FILE).stat().st_mode & 0o777 == 0o600
    second = surat(config, "store", "init")
    assert second.stdout == f"store: sqlite {data}: schema version {SQLITE_VERSION}, up to date\n"
    checked = surat(config, "check")
    assert (checked.returncode, checked.stderr) == (0, "")
    assert f"store:    sqlite {data}, schema version {SQLITE_VERSION}\n" in checked.stdout


def test_sqlite_old_schema_is_upgraded_only_by_init(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    account_database_at(data / INDEX_FILE, 5).close()  # an older Surat's store, holding an account
    line = (
        f"store: schema version 5 is older than this Surat's ({SQLITE_VERSION}); "
        f"run `surat --config {config} store init` to upgrade it"
    )
    assert_one_line_error(surat(config, "serve"), line)
    assert_one_line_error(surat(config, "user", "list"), line)  # the admin commands upgrade nothing either
    with sqlite3.connect(data / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (5,)

    result = surat(config, "store", "init")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"store: sqlite {data}: upgraded schema from version 5 to {SQLITE_VERSION}\n"
    listed = surat(config, "user", "list")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert "a@example.test" in listed.stdout


def test_serve_refuses_a_sqlite_schema_newer_than_the_code(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert surat(config, "store", "init").returncode == 0
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as conn:
        conn.execute(f"PRAGMA user_version = {SQLITE_VERSION + 1}")
    line = (
        f"store: schema version {SQLITE_VERSION + 1} is newer than this Surat knows ({SQLITE_VERSION}); "
        "run the newer Surat that wrote it"
    )
    assert_one_line_error(surat(config, "serve"), line)
    assert_one_line_error(surat(config, "store", "init"), line)


def test_serve_creates_a_new_sqlite_store_itself(tmp_path: Path) -> None:
    """The two-minute install: a data directory nobody has made yet needs no `store init`."""
    port = free_port()
    config = write_config(tmp_path, listen=f'[listen]\nsmtp = ["127.0.0.1:{port}"]\n')
    with serving(config, port):
        pass
    with sqlite3.connect(tmp_path / "data" / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SQLITE_VERSION,)
