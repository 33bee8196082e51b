"""The real server, started in-process on ephemeral loopback ports, for tests that drive it with real clients.

The server runs on its own event loop in a background thread, so blocking clients (smtplib, imaplib,
poplib, subprocess tools) can be used directly from the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pg_cluster import pg_cluster, pg_database
from surat.app import SuratServer
from surat.certs import CertificatePaths, write_dev_certificates
from surat.config import Config, parse_config
from surat.dns.base import DNSErrorKind, Resolver
from surat.dns.fake import FakeResolver
from surat.passwords import make_credentials

T = TypeVar("T")

__all__ = ["pg_cluster", "pg_database"]  # the PostgreSQL fixtures, imported so that pytest finds them

DOMAIN = "example.test"
USER = "alice@example.test"
PASSWORD = "correct horse battery staple"

ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")


def require_tool(name: str) -> str:
    """The path of a third-party tool; skipped with the reason if missing, a failure under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it from Debian's packages)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


_DEV_TLS: dict[str, CertificatePaths] = {}
_DEV_TLS_LOCK = threading.Lock()


def dev_certificates(tmp_root: Path) -> CertificatePaths:
    """One dev CA + server certificate per test session (key generation is the slow part)."""
    with _DEV_TLS_LOCK:
        if "paths" not in _DEV_TLS:
            _DEV_TLS["paths"] = write_dev_certificates(tmp_root / "dev-tls", ["mail.example.test"])
        return _DEV_TLS["paths"]


def make_config(base: Path, **sections: dict[str, Any]) -> Config:
    tls = dev_certificates(base.parent)
    data: dict[str, Any] = {
        "hostname": "mail.example.test",
        "data_dir": "data",
        "tls": {"cert": str(tls.cert), "key": str(tls.key), "ca": str(tls.ca)},
        "listen": {role: ["127.0.0.1:0"] for role in ROLES},
        # greet_pause: the port-25 early-talker wait (issue 6) would add a second to every MX connection
        "limits": {"auth_failure_delay": 0.05, "greet_pause": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, base_dir=base)


class RunningServer:
    def __init__(self, config: Config, resolver: Resolver | None = None) -> None:
        self.config = config
        # Never the internet: an empty FakeResolver answers NXDOMAIN for everything unless a test passes one.
        # remote.example (the tests' remote domain) fails temporarily, so the relay keeps such mail
        # queued while a test looks at the queue instead of bouncing it at once.
        self.resolver = (
            resolver
            if resolver is not None
            else FakeResolver({("remote.example", "MX"): DNSErrorKind.TEMPORARY})
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="surat-test-server", daemon=True)
        self._thread.start()
        self.server = SuratServer(config, resolver=self.resolver)
        self.call(self.server.start())

    @property
    def store(self) -> Any:
        return self.server.store

    @property
    def ca_file(self) -> Path:
        assert self.config.tls.ca is not None
        return self.config.tls.ca

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def port(self, role: str) -> int:
        return self.server.bound(role)[0][1]

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context

    def add_domain(self, domain: str) -> None:
        self.call(self.store.add_domain(domain))

    def add_user(self, address: str, password: str = PASSWORD) -> None:
        self.call(self.store.add_account(address, make_credentials(password)))

    def add_alias(self, source: str, target: str) -> None:
        self.call(self.store.add_alias(source, target))

    def stop(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture
def server_config(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    dev_certificates(tmp_path_factory.getbasetemp())
    return make_config(tmp_path)


@pytest.fixture
def server(server_config: Config) -> Iterator[RunningServer]:
    """A running server with domain example.test and user alice@example.test (password PASSWORD)."""
    running = RunningServer(server_config)
    try:
        running.add_domain(DOMAIN)
        running.add_user(USER)
        yield running
    finally:
        running.stop()


class Raw:
    """A line-oriented raw SMTP client for byte-exact cases."""

    def __init__(self, server: RunningServer, role: str = "smtp") -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port(role)), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply, joined."""
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def command(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def envelope(self, rcpt: str = USER) -> None:
        assert self.command(b"EHLO client.example\r\n").startswith(b"250")
        assert self.command(b"MAIL FROM:<sender@remote.example>\r\n").startswith(b"250")
        assert self.command(f"RCPT TO:<{rcpt}>\r\n".encode()).startswith(b"250")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def read_line(sock: socket.socket) -> bytes:
    """One line (through LF), or what came before the connection closed; reads octet by octet, so
    nothing after the line is taken from the socket."""
    line = b""
    while not line.endswith(b"\n"):
        octet = sock.recv(1)
        if not octet:
            break
        line += octet
    return line


@pytest.fixture
def raw(server: RunningServer) -> Iterator[Raw]:
    """A raw SMTP client connected to the MX listener of `server`, greeting read."""
    client = Raw(server)
    try:
        yield client
    finally:
        client.close()


def inbox(server: RunningServer, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """The raw messages in one of an account's mailboxes (INBOX unless named), in UID order."""

    async def read() -> list[bytes]:
        store = server.store
        account = await store.get_account(address)
        assert account is not None
        box = await store.get_mailbox(account.id, mailbox)
        out = []
        for summary in await store.list_messages(box.id):
            (record,) = await store.get_messages(box.id, [summary.uid])
            out.append(await store.blobs.read(record.blob_id))
        return out

    result: list[bytes] = server.call(read())
    return result


def queue(server: RunningServer) -> list[Any]:
    """The server's outbound queue entries."""
    return list(server.call(server.store.list_queue()))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_in_subprocess(config: Path) -> subprocess.Popen[bytes]:
    """`surat serve` with `config` in a child process, for the tests that kill it; its log goes to
    server.log beside the config (a pipe nobody reads would fill and stop the server)."""
    with (config.parent / "server.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "surat", "serve"],
            env={**os.environ, "SURAT_CONFIG": str(config)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@contextlib.contextmanager
def serving(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`surat serve` in a child process, listening on `port` inside the block, terminated after it."""
    proc = serve_in_subprocess(config)
    try:
        wait_listening(port, proc, config)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def wait_listening(port: int, proc: subprocess.Popen[bytes], config: Path, log: Path | None = None) -> None:
    """Until the child answers on `port`; fails with the end of its log (`log`, by default
    server.log beside `config`) if it exits first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = (log or config.parent / "server.log").read_bytes()
            raise AssertionError(f"{proc.args!r} exited: {output[-2000:]!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")
