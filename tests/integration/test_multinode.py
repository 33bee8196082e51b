"""Several `surat serve` nodes on ONE PostgreSQL database, as real processes on loopback ports (issue
12, "What must hold across nodes and workers"): concurrent deliveries into one mailbox keep the UID
rule, relayed mail goes out exactly once whichever node took it, a node killed with kill -9 loses
nothing acknowledged, a block on one node holds on the other, and a queued message wakes another
node's runner through NOTIFY.

Skipped without the PostgreSQL server programs, a failure under CI=true (tests/pg_cluster.py)."""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import PASSWORD, USER
from surat_node import SuratNode, logged_in, message
from test_postgres_serve import initialised_database, store_section
from test_relay import ScriptedPeer, wait_for

from pg_cluster import PostgresCluster
from surat.store.base import Delivery, OutboundMessage, OutboundRecipient
from surat.store.postgres.store import PostgresStore

SINK_DOMAIN = "sink.test"
MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>", re.IGNORECASE | re.MULTILINE)
# The shortest lease the config allows ([delivery] queue_lease, config.QUEUE_LEASE_MIN): the takeover
# after kill -9 waits for it.
LEASE_SECONDS = 10


@pytest.fixture
def dsn(tmp_path: Path, pg_cluster: PostgresCluster, pg_database: str) -> str:
    """A new database with Surat's schema, example.test and alice."""
    return initialised_database(pg_cluster, pg_database, tmp_path / "init")


@pytest.fixture
def sink() -> Iterator[ScriptedPeer]:
    """The remote MX of sink.test on loopback, recording every message it is sent."""
    with ScriptedPeer() as peer:
        yield peer


def relay_delivery(sink: ScriptedPeer, *, poll: float = 1.0, lease: int = LEASE_SECONDS) -> str:
    return (
        f'routes = {{ "{SINK_DOMAIN}" = "127.0.0.1:{sink.port}" }}\n'
        f"queue_poll_interval = {poll}\nqueue_lease = {lease}\nretry_delays = [1]\nconnect_timeout = 2\n"
    )


# alice sends more than the default hourly limits (500 messages) in the relay tests.
GENEROUS_LIMITS = "messages_per_hour = 100000\nrecipients_per_hour = 100000\n"


@pytest.fixture
def relay_nodes(tmp_path: Path, dsn: str, sink: ScriptedPeer) -> Iterator[tuple[SuratNode, SuratNode]]:
    """Nodes A and B on one database, both relaying sink.test to `sink`."""
    with two_nodes(tmp_path, dsn, relay_delivery(sink)) as nodes:
        yield nodes


class two_nodes:
    """Nodes A and B on the database `dsn`, stopped at the end (a node already killed is left alone)."""

    def __init__(self, base: Path, dsn: str, delivery: str = "") -> None:
        self.nodes: list[SuratNode] = []
        self.args = (base, dsn, delivery)

    def __enter__(self) -> tuple[SuratNode, SuratNode]:
        base, dsn, delivery = self.args
        try:
            for name in ("a", "b"):
                self.nodes.append(
                    SuratNode(
                        base / name, store=store_section(dsn), delivery=delivery, limits=GENEROUS_LIMITS
                    )
                )
        except BaseException:
            self.__exit__()
            raise
        return self.nodes[0], self.nodes[1]

    def __exit__(self, *_: object) -> None:
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.stop()


def relay_message(tag: str) -> bytes:
    return f"From: {USER}\r\nTo: x@{SINK_DOMAIN}\r\nMessage-ID: <{tag}@test>\r\nSubject: {tag}\r\n\r\nhi\r\n".encode()


def submit_all(node: SuratNode, tags: list[str], acknowledged: list[str]) -> None:
    """Submit one message per tag (submissions, AUTH as alice) on one connection; every tag whose
    message got 250 goes to `acknowledged`."""
    with node.submissions() as client:
        client.login(USER, PASSWORD)
        for tag in tags:
            assert client.sendmail(USER, [f"x@{SINK_DOMAIN}"], relay_message(tag)) == {}
            acknowledged.append(tag)


def in_parallel(*calls: Callable[[], None]) -> None:
    """Run `calls` at once in threads; the first failure is raised here."""
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]


def received_ids(sink: ScriptedPeer) -> Counter[str]:
    with sink.lock:
        messages = list(sink.messages)
    return Counter(_message_id(data) for data in messages)


def _field(pattern: bytes, data: bytes) -> bytes:
    found = re.search(pattern, data)
    assert found is not None, data[:500]
    return found.group(1)


def _message_id(data: bytes) -> str:
    found = MESSAGE_ID.search(data)
    assert found is not None, data[:500]
    return found.group(1).decode().removesuffix("@test")


def queue_size(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM queue").fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------------------------------------ mailboxes


def uid_search(client: imaplib.IMAP4) -> list[int]:
    typ, data = client.uid("SEARCH", "ALL")
    assert typ == "OK", data
    return [int(uid) for uid in (data[0] or b"").split()]


@pytest.mark.slow
def test_concurrent_deliveries_on_two_nodes_keep_uids_in_commit_order(tmp_path: Path, dsn: str) -> None:
    """2 x 100 SMTP deliveries on A and B at once into alice's INBOX, while an IMAP session on B polls.

    RFC 3501 §2.3.1.1: UIDs strictly ascend in the mailbox; issue 12: a client on any node never sees
    a UID lower than one it has already seen appear later (the UID is allocated in the row-locked
    mailbox update of the delivering transaction, so UID order is commit order)."""
    with two_nodes(tmp_path, dsn) as (first, second):
        reader: imaplib.IMAP4_SSL = logged_in(second.imap())
        assert reader.select("INBOX") == ("OK", [b"0"])
        highest_seen = 0
        violations: list[str] = []

        def send(node: SuratNode, numbers: range) -> None:
            with node.smtp() as client:
                for n in numbers:
                    assert client.sendmail("someone@outside.test", [USER], message(n, size=200)) == {}

        senders = threading.Thread(
            target=in_parallel,
            args=(
                lambda: send(first, range(0, 50)),
                lambda: send(first, range(50, 100)),
                lambda: send(second, range(100, 150)),
                lambda: send(second, range(150, 200)),
            ),
        )
        senders.start()
        seen: set[int] = set()
        settle_until = None  # once the senders are done: a few seconds for the last changes to arrive
        while len(seen) < 200 and not violations:
            if settle_until is None and not senders.is_alive():
                settle_until = time.monotonic() + 5
            if settle_until is not None and time.monotonic() > settle_until:
                break
            assert reader.noop()[0] == "OK"
            new = set(uid_search(reader)) - seen
            if new and min(new) < highest_seen:
                violations.append(f"UID {min(new)} appeared after UID {highest_seen} had been seen")
            seen |= new
            highest_seen = max(seen, default=0)
        senders.join(60)
        assert not violations, violations
        # A message whose UID is below one the session saw before it committed may also stay unseen.
        assert len(seen) == 200, f"the session saw {len(seen)} of 200 messages"

        # Every message once, UIDs ascending with the sequence numbers. RFC 3501 §2.3.1.1 allows gaps;
        # there are none, because a UID is allocated inside the transaction that stores the message,
        # so a delivery that rolled back (a retried deadlock) left no UID behind.
        typ, data = reader.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK"
        fetched = [item for item in data if isinstance(item, tuple)]
        uids = [int(_field(rb"UID (\d+)", item[0])) for item in fetched]
        assert uids == list(range(1, 201))
        ids = Counter(_message_id(item[1]) for item in fetched)
        assert ids == Counter(f"workers-{n}" for n in range(200))
        reader.logout()
        # The other node agrees on every UID.
        other = logged_in(first.imap())
        other.select("INBOX", readonly=True)
        assert uid_search(other) == list(range(1, 201))
        other.logout()


# ------------------------------------------------------------------------------------------------ the queue


@pytest.mark.slow
def test_a_thousand_relayed_messages_from_both_nodes_are_each_delivered_once(
    relay_nodes: tuple[SuratNode, SuratNode], sink: ScriptedPeer, dsn: str
) -> None:
    """1 000 messages submitted across A and B to one remote domain: both runners deliver (each
    claims its entries with a lease, FOR UPDATE SKIP LOCKED), the sink gets every Message-ID exactly
    once, and the one queue of both nodes is empty at the end."""
    first, second = relay_nodes
    acknowledged: list[str] = []
    tags = [f"relay-{n}" for n in range(1000)]
    in_parallel(
        *(
            (lambda node=node, part=tags[i::4]: submit_all(node, part, acknowledged))
            for i, node in enumerate((first, second, first, second))
        )
    )
    assert sorted(acknowledged) == sorted(tags)
    wait_for(lambda: len(received_ids(sink)) == len(tags), timeout=80)
    wait_for(lambda: queue_size(dsn) == 0, timeout=20)
    time.sleep(2 * 1.0)  # two poll intervals: a second copy would have been sent by now
    received = received_ids(sink)
    assert received == Counter(tags), [tag for tag, count in received.items() if count != 1][:10]
    # Both nodes delivered (neither sat idle while the other did all the work).
    for node in relay_nodes:
        assert b"queue.attempt" in node.log.read_bytes()


def leased_by(dsn: str, pid: int) -> list[str]:
    """The queue entries whose attempt in flight is under the lease of the node with process `pid`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT q.id FROM queue q JOIN queue_attempts a ON a.queue_id = q.id AND a.result IS NULL"
            " WHERE q.lease_owner LIKE %s",
            (f"%:{pid}:%",),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.slow
def test_a_node_killed_mid_delivery_leaves_its_entries_to_the_other_after_the_lease(
    relay_nodes: tuple[SuratNode, SuratNode], sink: ScriptedPeer, dsn: str
) -> None:
    """The sink holds its reply to each final dot; A and B are both stuck mid-transaction for longer
    than the lease, then A is killed with kill -9.

    While both live, nothing is delivered twice: each node's heartbeat renews its leases (a lease
    that ran out would let the other node deliver the same entry again). After the kill, B takes A's
    entries over once A's lease expired and delivers them; nothing acknowledged is lost. The messages
    A was mid-transaction on arrive twice: the sink had their data but A never read the 250, so they
    are sent again, which RFC 5321 §6.1 asks for (a message is not lost once accepted; duplicates
    are the price, §4.1.1.4's note on the lost "250" after the final dot). No other duplicates."""
    first, second = relay_nodes
    sink.data_delay = LEASE_SECONDS * 1.5
    acknowledged: list[str] = []
    tags = [f"kill-{n}" for n in range(20)]
    submit_all(first, tags, acknowledged)
    assert acknowledged == tags
    # Held past A's lease with A alive: no entry may be taken over by B meanwhile.
    wait_for(lambda: leased_by(dsn, first.proc.pid), timeout=10)
    time.sleep(LEASE_SECONDS * 1.2)
    assert max(received_ids(sink).values()) == 1, "a live node's entry was delivered again"
    in_flight_on_a = leased_by(dsn, first.proc.pid)
    assert in_flight_on_a, "A has nothing in flight to be killed with"
    with sink.lock:
        unanswered = {_message_id(data) for data in sink.unanswered}
    os.kill(first.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    first.proc.wait(10)
    sink.data_delay = 0
    # B alone now: its takeover waits for A's last renewal to expire (at most one lease).
    wait_for(
        lambda: set(received_ids(sink)) >= set(tags) and queue_size(dsn) == 0, timeout=LEASE_SECONDS + 30
    )
    took = time.monotonic() - killed_at
    print(f"kill -9 of A -> all of A's entries delivered by B: {took:.1f} s (lease {LEASE_SECONDS} s)")
    # A renewed last at most a third of a lease before it died: B cannot have taken its entries
    # over sooner than two thirds of a lease after the kill (less the test's own polling slack).
    assert took > LEASE_SECONDS * 2 / 3 - 0.5, took
    received = received_ids(sink)
    twice = {tag for tag, count in received.items() if count > 1}
    assert set(received) == set(tags)
    assert twice, "A was killed mid-transaction: those messages must come again from B"
    assert twice <= unanswered, (twice, unanswered)
    assert max(received.values()) == 2
    assert b"queue.attempt" in second.log.read_bytes()


def test_a_message_queued_elsewhere_wakes_another_node_runner_through_notify(
    tmp_path: Path, dsn: str, sink: ScriptedPeer
) -> None:
    """Node B polls its queue only every 60 s; a message queued by another node must still go out
    at once, woken by the database's NOTIFY (issue 12 "NOTIFY wakes runners").

    The other node here is a store opened by the test process: a node that accepts a message (the
    same `deliver` call smtpd makes at the end of DATA) and runs no queue runner, as an admin command
    or a node whose runner is stopped. With a runner of its own, node A would usually take its own
    message first (its change feed is in-process), and the test could not tell which wake-up
    delivered it."""
    node = SuratNode(
        tmp_path / "b",
        store=store_section(dsn),
        delivery=relay_delivery(sink, poll=60),
        limits=GENEROUS_LIMITS,
    )
    try:
        time.sleep(1)  # B's runner started its first (empty) run and now waits for a wake-up or the poll

        async def queue_one() -> None:
            store = PostgresStore(dsn)
            await store.open()
            try:
                content = relay_message("notify")
                remote = OutboundMessage(sender=USER, recipients=(OutboundRecipient(f"x@{SINK_DOMAIN}"),))
                await store.deliver(
                    Delivery(None, len(content), datetime.now(UTC), remote=remote, content=content)
                )
            finally:
                await store.close()

        started = time.monotonic()
        asyncio.run(queue_one())
        wait_for(lambda: received_ids(sink), timeout=10)
        elapsed = time.monotonic() - started
        print(f"queued on another node -> delivered by B (poll 60 s): {elapsed * 1000:.0f} ms")
        assert elapsed < 5
        assert received_ids(sink) == Counter(["notify"])
        wait_for(lambda: queue_size(dsn) == 0)
    finally:
        node.stop()


# ------------------------------------------------------------------------------------------------ limits


@pytest.mark.slow
def test_an_address_blocked_after_failed_logins_on_one_node_is_refused_on_the_other(
    tmp_path: Path, dsn: str
) -> None:
    """Five failed logins from 127.0.0.1 on node A (the default auth_max_failures): the block is in
    the store, so node B refuses even the right password from that address, on IMAP and SMTP AUTH
    (a brute-forcer cannot spread its guesses over the nodes)."""
    with two_nodes(tmp_path, dsn) as (first, second):
        for attempt in range(5):
            client = first.imap()
            with pytest.raises(imaplib.IMAP4.error) as failed:
                client.login(USER, f"wrong {attempt}")
            assert failed.value.args[0].startswith(b"[AUTHENTICATIONFAILED]")
            client.logout()
        client = second.imap()
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(USER, PASSWORD)
        assert refused.value.args == (b"[UNAVAILABLE] too many failed logins from your address, try later",)
        client.logout()
        with second.submissions() as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as smtp_refused:
            smtp.login(USER, PASSWORD)
        assert (smtp_refused.value.smtp_code, smtp_refused.value.smtp_error) == (
            454,
            b"4.7.0 Too many failed authentication attempts from your address, try later",
        )
