"""`[server] workers = 2` (issue 12): `surat serve` as real processes, driven over real sockets
(surat_node.SuratNode: how a test finds the worker that serves a connection)."""

from __future__ import annotations

import asyncio
import imaplib
import os
import poplib
import re
import signal
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, inbox
from prometheus_client.parser import text_string_to_metric_families
from surat_node import SuratNode, logged_in, message, read_until
from test_relay import BOB, Peer, remote

from surat.passwords import make_credentials
from surat.store.sqlite import SQLiteStore

__all__ = ["remote"]  # the fixture, imported so that pytest finds it here
pytestmark = pytest.mark.slow

FORWARD = "fwd@example.test"  # an alias of bob@remote.test: mail to it is relayed
MESSAGE_ID = re.compile(rb"^Message-ID: <(workers-\d+)@test>", re.MULTILINE | re.IGNORECASE)


class Workers(SuratNode):
    """`surat serve` with two workers on SQLite: alice, and an alias relayed to bob@remote.test."""

    def __init__(self, base: Path, delivery: str = "", limits: str = "") -> None:
        asyncio.run(_prepare(base / "data"))
        super().__init__(base, workers=2, delivery=delivery, limits=limits)


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
