"""`[server] workers = 2` (issue 12): `surat serve` as real processes, driven over real sockets.

Which worker serves a connection is up to the kernel (both accept on the same sockets), so the tests
find out: the server side of a loopback connection is the /proc/net/tcp entry with the two ports
swapped, and the worker is the child process holding that socket's inode. A test that needs a session
on a given worker connects until it lands there.
"""

from __future__ import annotations

import asyncio
import http.client
import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from conftest import PASSWORD, USER, dev_certificates, free_port, inbox, serve_in_subprocess, wait_listening
from prometheus_client.parser import text_string_to_metric_families
from test_relay import BOB, Peer, remote

from surat.passwords import make_credentials
from surat.store.sqlite import SQLiteStore

__all__ = ["remote"]  # the fixture, imported so that pytest finds it here
pytestmark = pytest.mark.slow

FORWARD = "fwd@example.test"  # an alias of bob@remote.test: mail to it is relayed
ROLES = ("smtp", "submissions", "imaps", "pop3s", "admin")
STARTED = re.compile(rb"worker\.started index=(\d+) pid=(\d+)")
MESSAGE_ID = re.compile(rb"^Message-ID: <(workers-\d+)@test>", re.MULTILINE | re.IGNORECASE)


class HasSocket(Protocol):
    @property
    def sock(self) -> Any: ...  # imaplib, poplib and smtplib clients all have one


Client = TypeVar("Client", bound=HasSocket)


class Workers:
    """`surat serve` with two workers on loopback ports, its log in server.log beside the config."""

    def __init__(self, base: Path, delivery: str = "", limits: str = "") -> None:
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
            "[server]\nworkers = 2\n"
        )
        asyncio.run(_prepare(base / "data"))
        self.proc = serve_in_subprocess(self.config)
        for port in self.ports.values():
            wait_listening(port, self.proc, self.config)
        self.wait_workers()

    def started(self) -> dict[int, int]:
        """Worker index -> pid, from the latest worker.started line of each."""
        return {int(i): int(pid) for i, pid in STARTED.findall(self.log.read_bytes())}

    def pids(self) -> list[int]:
        """The live workers: the supervisor's child processes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def wait_workers(self, without: int | None = None) -> dict[int, int]:
        """Until both workers have started (and `without` is not one of them)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = self.started()
            if (
                len(started) == 2
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

    def submissions(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL(
            "127.0.0.1",
            self.ports["submissions"],
            local_hostname="client.test",
            context=self.tls(),
            timeout=10,
        )

    def admin(self) -> http.client.HTTPConnection:
        """A keep-alive connection to the admin listener, accepted by a worker: connect() returns
        before any worker accepts, so one request is answered first."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["admin"], timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        return conn

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


async def _prepare(data_dir: Path) -> None:
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("example.test")
    await store.add_account(USER, make_credentials(PASSWORD))
    await store.add_alias(FORWARD, BOB)
    await store.close()


async def _stored_message_ids(data_dir: Path) -> list[str]:
    """The Message-IDs in alice's INBOX, read beside the running server (no recovery)."""
    store = SQLiteStore(data_dir)
    await store.open(recover=False)
    try:
        account = await store.get_account(USER)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        ids = []
        for summary in await store.list_messages(box.id):
            (record,) = await store.get_messages(box.id, [summary.uid])
            raw = await store.blobs.read(record.blob_id)
            if match := MESSAGE_ID.search(raw):
                ids.append(match.group(1).decode())
        return ids
    finally:
        await store.close()


def message(n: int, size: int = 500) -> bytes:
    head = f"From: {USER}\r\nMessage-ID: <workers-{n}@test>\r\nSubject: {n}\r\n\r\n"
    return head.encode() + b"x" * size + b"\r\n"


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


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path, limits="auth_max_failures = 3\nmessages_per_hour = 2\n")
    try:
        yield running
    finally:
        running.stop()


# ------------------------------------------------------------------------------------------------- tests


def test_idle_on_one_worker_sees_deliveries_flags_and_expunges_made_on_the_other(workers: Workers) -> None:
    first, second = workers.pids()
    idler = logged_in(workers.on_worker(second, workers.imap))
    idler.select("INBOX")
    idler.send(b"i1 IDLE\r\n")
    assert idler.readline().startswith(b"+ ")

    with workers.on_worker(first, workers.smtp) as client:
        assert client.sendmail("someone@outside.test", [USER], message(1)) == {}
    assert read_until(idler, rb"^\* 1 EXISTS\r\n$", timeout=5) < 1.0

    other = logged_in(workers.on_worker(first, workers.imap))
    other.select("INBOX")
    assert other.store("1", "+FLAGS.SILENT", r"(\Flagged)")[0] == "OK"
    # The idler was told of the message first, so it is \Recent there (RFC 3501 §2.3.2).
    assert read_until(idler, rb"^\* 1 FETCH \(FLAGS \(\\Flagged \\Recent\)\)\r\n$", timeout=5) < 1.0
    assert other.store("1", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
    assert read_until(idler, rb"^\* 1 FETCH \(FLAGS \(\\Deleted \\Flagged \\Recent\)\)\r\n$", timeout=5) < 1.0
    assert other.expunge()[0] == "OK"
    assert read_until(idler, rb"^\* 1 EXPUNGE\r\n$", timeout=5) < 1.0
    idler.send(b"DONE\r\n")
    assert idler.readline().startswith(b"i1 OK")
    other.logout()
    idler.logout()


def test_pop3_maildrop_held_on_one_worker_is_in_use_on_the_other(workers: Workers) -> None:
    first, second = workers.pids()
    holder = logged_in(workers.on_worker(first, workers.pop3))
    second_session = workers.on_worker(second, workers.pop3)
    second_session.user(USER)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\]"):
        second_session.pass_(PASSWORD)
    second_session.sock.close()
    assert holder.quit().startswith(b"+OK")
    # Released: the other worker's next session gets the maildrop.
    again = logged_in(workers.on_worker(second, workers.pop3))
    assert again.stat() == (0, 0)
    again.quit()


def test_a_login_block_made_through_one_worker_refuses_on_the_other(workers: Workers) -> None:
    first, second = workers.pids()
    for attempt in range(3):  # auth_max_failures = 3, all from 127.0.0.1, all on the first worker
        client = workers.on_worker(first, workers.imap)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(USER, f"wrong {attempt}")
        client.logout()
    client = workers.on_worker(second, workers.imap)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.login(USER, PASSWORD)
    client.logout()


def test_metrics_answered_by_either_worker_count_both(workers: Workers) -> None:
    """Both workers share the admin socket: whichever answers a scrape reports the counts of both
    (prometheus_client's multiprocess files in data/metrics, set up by the supervisor)."""
    pids = workers.pids()
    for n, pid in enumerate(pids):
        with workers.on_worker(pid, workers.smtp) as client:
            assert client.sendmail("someone@outside.test", [USER], message(n)) == {}
    for pid in pids:
        conn = workers.on_worker(pid, workers.admin)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
        conn.close()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert samples[("surat_smtp_transactions_total", (("reply", "2xx"), ("role", "smtp")))] == 2, pid
        assert samples[("surat_deliveries_total", (("kind", "local"), ("result", "delivered")))] == 2, pid
        assert samples[("surat_queue_messages", ())] == 0


def test_a_sending_limit_reached_through_one_worker_holds_on_the_other(workers: Workers) -> None:
    first, second = workers.pids()
    with logged_in(workers.on_worker(first, workers.submissions)) as client:
        for n in range(2):  # messages_per_hour = 2, both through the first worker
            assert client.sendmail(USER, [USER], message(n)) == {}
    with logged_in(workers.on_worker(second, workers.submissions)) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(USER, [USER], message(2))
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.7.1 Sending limit reached: too many messages")


def test_kill_9_of_a_worker_under_load_loses_nothing_acknowledged_and_it_is_restarted(
    workers: Workers,
) -> None:
    victim = workers.pids()[0]
    acknowledged: list[int] = []
    lock = threading.Lock()
    failures = 0

    def send(start: int, count: int) -> None:
        nonlocal failures
        for n in range(start, start + count):
            try:
                with workers.smtp() as client:
                    client.sendmail("someone@outside.test", [USER], message(n, 3000))
            except (smtplib.SMTPException, OSError):
                with lock:
                    failures += 1  # cut off by the kill: not acknowledged, so not owed
                continue
            with lock:
                acknowledged.append(n)

    senders = [threading.Thread(target=send, args=(i * 1000, 60)) for i in range(4)]
    for thread in senders:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
    for thread in senders:
        thread.join(60)

    started = workers.wait_workers(without=victim)  # restarted under a new pid
    assert victim not in started.values()
    assert b"worker.died" in workers.log.read_bytes()
    stored = asyncio.run(_stored_message_ids(workers.config.parent / "data"))
    missing = {f"workers-{n}" for n in acknowledged} - set(stored)
    assert not missing, f"acknowledged and lost: {sorted(missing)}"
    assert len(acknowledged) + failures == 240
    # The restarted worker serves: a message through each worker now.
    for pid in workers.pids():
        with workers.on_worker(pid, workers.smtp) as client:
            assert client.sendmail("someone@outside.test", [USER], message(10_000 + pid)) == {}


def test_relayed_messages_submitted_to_both_workers_are_each_delivered_once(
    tmp_path: Path, remote: Peer
) -> None:
    # A queue poll far longer than the test: a message accepted by the worker without the queue
    # reaches the runner only through the relay's wake-up.
    delivery = (
        f'routes = {{ "remote.test" = "127.0.0.1:{remote.port("smtp")}" }}\n'
        "retry_delays = [0.5]\nqueue_poll_interval = 300\nconnect_timeout = 2\n"
    )
    (tmp_path / "sender").mkdir()
    workers = Workers(tmp_path / "sender", delivery=delivery)
    try:
        runner = workers.started()[0]
        (other,) = set(workers.pids()) - {runner}
        with workers.on_worker(other, workers.smtp) as client:
            assert client.sendmail("someone@outside.test", [FORWARD], message(0)) == {}
        start = time.monotonic()
        while not inbox(remote, BOB):
            assert time.monotonic() - start < 5, "the queue worker was not woken"
            time.sleep(0.02)

        def send(first: int) -> None:
            for n in range(first, first + 50):
                with workers.smtp() as client:
                    assert client.sendmail("someone@outside.test", [FORWARD], message(n)) == {}

        senders = [threading.Thread(target=send, args=(1 + i * 50,)) for i in range(4)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)

        def delivered() -> list[str]:
            return [m.group(1).decode() for raw in inbox(remote, BOB) if (m := MESSAGE_ID.search(raw))]

        deadline = time.monotonic() + 60
        while len(delivered()) < 201 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # a second delivery of anything would arrive meanwhile
        ids = delivered()
        assert sorted(ids) == sorted(f"workers-{n}" for n in range(201)), "lost or delivered twice"
    finally:
        workers.stop()
