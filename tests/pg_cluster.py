"""A private PostgreSQL cluster for the tests: `initdb` into a temporary directory, `pg_ctl start` on a
free loopback port and a private unix socket directory, stopped and removed at the end.

It runs with PostgreSQL's durability settings as shipped (fsync and synchronous_commit on): the store's
contract is "acknowledged means committed to disk", so the tests must not measure or pass under a
weaker one. PostgreSQL refuses to run as root; under root the cluster runs as an unprivileged system
user (created if missing) and every PostgreSQL program is started through `runuser`.

The fixtures `pg_cluster` (one cluster a session, started on first use) and `pg_database` (a new
database for one test) are imported by tests/unit/conftest.py and tests/integration/conftest.py.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# The system user the cluster runs as when the tests run as root.
CLUSTER_USER = "surat-pgtest"
# The cluster's superuser and its password (host connections use SCRAM, unix sockets trust).
SUPERUSER = "surat"
SUPERUSER_PASSWORD = "surat-test-password"
# initdb, the first start and the shutdown of an empty cluster take a second or two; the bound
# leaves room for a loaded machine shared with other test runs.
START_TIMEOUT = 60


class PostgresUnavailable(Exception):
    """The PostgreSQL server programs are not installed here (the message says what is missing)."""


def find_bindir() -> Path:
    """The directory of initdb/pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    # Debian's layout: the client's pg_config may point at /usr/bin, where initdb is not.
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in versions if Path(p).parent.name.isdigit()]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        "the PostgreSQL server programs (initdb, pg_ctl) are not installed "
        "(.ci/run installs Debian's postgresql package)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """One running cluster; `start()` then `stop()`. `dsn()` and `new_database()` for the tests."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="surat-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_file = self.root / "postgresql.log"
        self.port = 0
        self._running = False

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", CLUSTER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log}")
        return result

    def _prepare_user(self) -> None:
        """Under root: the unprivileged user exists and owns the cluster's directory."""
        if not self.as_root:
            return
        try:
            pwd.getpwnam(CLUSTER_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CLUSTER_USER],
                check=True,
                capture_output=True,
            )
        entry = pwd.getpwnam(CLUSTER_USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        self._prepare_user()
        self.socket_dir.mkdir(mode=0o700)
        password_file = self.root / "superuser-password"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        if self.as_root:
            entry = pwd.getpwnam(CLUSTER_USER)
            for path in (self.socket_dir, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # --no-sync only skips initdb's own flush of the template files (a crash during the test setup
        # costs nothing); the server started below runs with fsync on.
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        # A free port can be taken between the probe and the start; try a few.
        for attempt in range(5):
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir}"
                " -c fsync=on -c synchronous_commit=on"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-o", options, "start"
                )
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        self._running = True

    def stop(self) -> None:
        try:
            if self._running:
                # The cluster is thrown away: no shutdown checkpoint (a fast stop syncs every page, and
                # on a loaded machine that outlasted the last test's timeout).
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
                self._running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", *, with_password: bool = True) -> str:
        """A libpq URL over TCP to `database`; without the password for tests of dsn_password_file."""
        secret = f":{SUPERUSER_PASSWORD}" if with_password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def socket_dsn(self, database: str = "postgres") -> str:
        """A libpq URL over the private unix socket (trusted, no password)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def new_database(self) -> str:
        """A new, empty database for one test; returns its name."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the session, started on first use. Without the PostgreSQL programs the tests
    that need it are skipped with the reason, or fail under CI=true (.ci/run installs them)."""
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> str:
    """The name of a new, empty database in the cluster, for one test."""
    return pg_cluster.new_database()
