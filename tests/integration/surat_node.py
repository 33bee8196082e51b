"""A Surat node for multi-process tests: `surat serve` as a real child process on loopback ports,
driven over real sockets (test_workers.py: `workers = 2` on SQLite; test_postgres_serve.py: nodes
and workers on one PostgreSQL database).

With several workers, which one serves a connection is up to the kernel (all accept on the same
sockets), so the tests find out: the server side of a loopback connection is the /proc/net/tcp entry
with the two ports swapped, and the worker is the child process holding that socket's inode. A test
that needs a session on a given worker connects until it lands there (`on_worker`).
"""

from __future__ import annotations

import http.client
import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from conftest import PASSWORD, USER, dev_certificates, free_port, serve_in_subprocess, wait_listening

ROLES = ("smtp", "submissions", "imaps", "pop3s", "admin")
STARTED = re.compile(rb"worker\.started index=(\d+) pid=(\d+)")
# The line `surat serve` logs once it serves: the process itself, or the supervisor of N workers.
SERVING = re.compile(rb" conn=- started hostname=")


class HasSocket(Protocol):
    @property
    def sock(self) -> Any: ...  # imaplib, poplib and smtplib clients all have one


Client = TypeVar("Client", bound=HasSocket)


class SuratNode:
    """`surat serve` as a child process on loopback ports (one per role in ROLES), with `workers`
    worker processes, its config and its log (server.log) in `base`. `store`: a `[store]` section
    (default: SQLite in base/data). The store must hold its schema already (on PostgreSQL: `surat
    store init`, see test_postgres_serve.initialised_database); the node is listening on every port,
    and all its workers have started, when this returns."""

    def __init__(
        self, base: Path, *, workers: int = 1, store: str = "", delivery: str = "", limits: str = ""
    ) -> None:
        self.workers = workers
        base.mkdir(parents=True, exist_ok=True)
        tls = dev_certificates(base.parent)
        self.ca = tls.ca
        self.ports = {role: free_port() for role in ROLES}
        self.config = base / "surat.toml"
        self.log = base / "server.log"
        listen = "".join(
            f'{role} = ["127.0.0.1:{self.ports[role]}"]\n' if role in self.ports else f"{role} = []\n"
            for role in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "admin")
        )
        self.config.write_text(
            'hostname = "mail.example.test"\ndata_dir = "data"\n'
            f'[tls]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
            f"[listen]\n{listen}"
            f"[limits]\nmail_auth = false\ngreet_pause = 0\nauth_failure_delay = 0.05\n{limits}"
            f"[delivery]\n{delivery}"
            f"[server]\nworkers = {workers}\n"
            f"{store}"
        )
        self.proc = serve_in_subprocess(self.config)
        for port in self.ports.values():
            wait_listening(port, self.proc, self.config)
        if workers > 1:
            self.wait_workers()
        self.wait_log(SERVING)  # listeners, store and queue runner(s) up; SIGTERM now stops it cleanly

    def wait_log(self, pattern: re.Pattern[bytes], timeout: float = 30) -> None:
        """Until the node's log has a line matching `pattern`."""
        deadline = time.monotonic() + timeout
        while not pattern.search(self.log.read_bytes()):
            assert self.proc.poll() is None, self.log.read_bytes()[-2000:]
            assert time.monotonic() < deadline, f"not in the log: {pattern.pattern!r}"
            time.sleep(0.05)

    def started(self) -> dict[int, int]:
        """Worker index -> pid, from the latest worker.started line of each."""
        return {int(i): int(pid) for i, pid in STARTED.findall(self.log.read_bytes())}

    def pids(self) -> list[int]:
        """The live workers: the supervisor's child processes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def wait_workers(self, without: int | None = None) -> dict[int, int]:
        """Until every worker has started (and `without` is not one of them)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = self.started()
            if (
                len(started) == self.workers
                and without not in started.values()
                and set(started.values()) == set(self.pids())
            ):
                return started
            assert self.proc.poll() is None, self.log.read_bytes()[-2000:]
            time.sleep(0.05)
        raise AssertionError(f"workers did not start: {self.log.read_bytes()[-2000:]!r}")

    def owner(self, client: socket.socket) -> int:
        """The pid of the worker serving the server side of `client`."""
        local, remote_end = client.getsockname(), client.getpeername()
        wanted = (f"0100007F:{remote_end[1]:04X}", f"0100007F:{local[1]:04X}")
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if (parts[1], parts[2]) == wanted:
                inode = parts[9]
        assert inode is not None, "no server side for this connection"
        for pid in self.pids():
            with _suppress_gone():
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with _suppress_gone():
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                            return pid
        raise AssertionError("no worker holds this connection")

    def on_worker(self, pid: int, connect: Callable[[], Client]) -> Client:
        """A client whose connection the worker `pid` serves (connects until one lands there)."""
        for _ in range(200):
            client = connect()
            if self.owner(client.sock) == pid:
                return client
            client.sock.close()
        raise AssertionError(f"no connection landed on worker {pid}")

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.check_hostname = False
        return context

    def imap(self) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls(), timeout=10)

    def pop3(self) -> poplib.POP3_SSL:
        return poplib.POP3_SSL("127.0.0.1", self.ports["pop3s"], context=self.tls(), timeout=10)

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.ports["smtp"], local_hostname="client.test", timeout=10)

    def admin(self) -> http.client.HTTPConnection:
        """A keep-alive connection to the admin listener, accepted by a worker: connect() returns
        before any worker accepts, so one request is answered first."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["admin"], timeout=10)
        conn.request("GET", "/login")  # a page without a session (the console's others redirect here)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        return conn

    def submissions(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL(
            "127.0.0.1",
            self.ports["submissions"],
            local_hostname="client.test",
            context=self.tls(),
            timeout=10,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            assert self.proc.wait(40) == 0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class _suppress_gone:
    """/proc entries of a descriptor or process that went away while we looked."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, FileNotFoundError | ProcessLookupError)


def read_until(client: imaplib.IMAP4, pattern: bytes, timeout: float) -> float:
    """Read IDLE's untagged lines until one matches `pattern`; the seconds it took."""
    start = time.monotonic()
    client.sock.settimeout(timeout)
    while True:
        line = client.readline()
        assert line, "connection closed"
        if re.search(pattern, line):
            return time.monotonic() - start


def logged_in(client: Any) -> Any:
    if isinstance(client, poplib.POP3):
        client.user(USER)
        client.pass_(PASSWORD)
    else:
        client.login(USER, PASSWORD)
    return client


def message(n: int, size: int = 500) -> bytes:
    """A message to alice, Message-ID <workers-N@test>."""
    head = f"From: {USER}\r\nMessage-ID: <workers-{n}@test>\r\nSubject: {n}\r\n\r\n"
    return head.encode() + b"x" * size + b"\r\n"
