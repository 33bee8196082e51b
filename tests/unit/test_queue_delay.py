"""Delay notices (RFC 3461 §4.1 NOTIFY=DELAY, RFC 3464 Action: delayed): the queue runner with a
settable clock and a short schedule, against a closed port on 127.0.0.1 (a real refused connection)
or a DNS that keeps failing temporarily; the delay_notified mark in the SQLite store."""

from __future__ import annotations

import email
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from dsn_reports import recipient_blocks
from old_schema import queue_database_at
from surat.config import HostPort
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.delivery.schedule import RetrySchedule
from surat.dns.base import DNSErrorKind
from surat.dns.fake import FakeResolver
from surat.store import schema
from surat.store.base import (
    Account,
    Credentials,
    Delivery,
    OutboundMessage,
    OutboundRecipient,
    QueueEntry,
    RecipientState,
    RecipientUpdate,
)
from surat.store.sqlite import SQLiteStore

SCHEDULE = RetrySchedule(
    delays=(timedelta(minutes=1), timedelta(minutes=5)),
    expire_after=timedelta(days=1),
    delay_notice_after=timedelta(minutes=10),
)
CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
ALICE = "alice@example.test"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def runner(store: SQLiteStore, tmp_path: Path, clock: Clock) -> QueueRunner:
    settings = RunnerSettings(
        hostname="mail.example.test",
        schedule=SCHEDULE,
        routes={"dead.test": HostPort("127.0.0.1", closed_port())},
        connect_timeout=2,
    )
    resolver = FakeResolver({("flaky.test", "MX"): DNSErrorKind.TEMPORARY})
    return QueueRunner(store, resolver, settings, data_dir=tmp_path / "data", clock=clock)


async def enqueue(
    store: SQLiteStore,
    recipients: list[OutboundRecipient],
    *,
    sender: str = ALICE,
    authenticated: bool = True,
) -> QueueEntry:
    prefix = f"Return-Path: <{sender}>\r\n".encode()
    content = prefix + b"From: alice@example.test\r\nSubject: slow\r\n\r\nbody\r\n"
    remote = OutboundMessage(
        sender=sender,
        recipients=tuple(recipients),
        body_offset=len(prefix),
        authenticated_user=ALICE if authenticated else None,
    )
    result = await store.deliver(
        Delivery(None, len(content), datetime.now(UTC), remote=remote, content=content)
    )
    assert result.queue_id is not None
    entry = await store.get_queue_entry(result.queue_id)
    assert entry is not None
    return entry


async def attempt(queue: QueueRunner, store: SQLiteStore, queue_id: str) -> QueueEntry | None:
    """One attempt of the entry as it is stored now; the entry afterwards (None: finished)."""
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    await queue.process(entry)
    return await store.get_queue_entry(queue_id)


async def inbox(store: SQLiteStore, account: Account) -> list[Message]:
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    out = []
    for summary in await store.list_messages(mailbox.id):
        (record,) = await store.get_messages(mailbox.id, [summary.uid])
        out.append(email.message_from_bytes(await store.blobs.read(record.blob_id)))
    return out


async def test_closed_port_gets_one_delay_notice_then_the_failure_at_expiry(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("someone@dead.test")])
    clock = Clock(entry.created_at)
    queue = runner(store, tmp_path, clock)

    after = await attempt(queue, store, entry.id)  # at once: refused, retried, nothing said yet
    assert after is not None and after.recipients[0].state is RecipientState.PENDING
    assert not after.recipients[0].delay_notified
    clock.now = entry.created_at + timedelta(minutes=9, seconds=59)
    await attempt(queue, store, entry.id)
    assert await inbox(store, alice) == []

    clock.now = entry.created_at + timedelta(minutes=10)  # the threshold reached
    after = await attempt(queue, store, entry.id)
    assert after is not None and after.recipients[0].delay_notified
    assert after.recipients[0].state is RecipientState.PENDING
    (notice,) = await inbox(store, alice)
    assert notice["Subject"] == "Delayed Mail (still being retried)"
    assert notice["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.test>"
    (block,) = recipient_blocks(notice)
    assert block["Final-Recipient"] == "rfc822; someone@dead.test"
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"  # the refused connection, still temporary
    assert "Cannot connect" in block["Diagnostic-Code"]
    retry_until = parsedate_to_datetime(block["Will-Retry-Until"])
    assert retry_until == (entry.created_at + SCHEDULE.expire_after).replace(microsecond=0)

    for minutes in (20, 60, 600):  # later failures: no second notice
        clock.now = entry.created_at + timedelta(minutes=minutes)
        assert await attempt(queue, store, entry.id) is not None
    assert len(await inbox(store, alice)) == 1

    clock.now = entry.created_at + timedelta(days=1)  # expiry: the failure DSN, entry removed
    assert await attempt(queue, store, entry.id) is None
    notice, bounce = await inbox(store, alice)
    assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
    (block,) = recipient_blocks(bounce)
    assert (block["Action"], block["Status"]) == ("failed", "5.4.1")
    assert block["Will-Retry-Until"] is None


@pytest.mark.parametrize(
    ("sender", "notify", "authenticated", "wanted"),
    [
        (ALICE, (), True, True),  # our own user: delay notices by default
        (ALICE, (), False, False),  # relayed for someone else without NOTIFY: failures only
        (ALICE, ("DELAY",), False, True),
        (ALICE, ("FAILURE", "DELAY"), True, True),
        (ALICE, ("FAILURE",), True, False),
        (ALICE, ("SUCCESS",), True, False),
        (ALICE, ("NEVER",), True, False),
        ("", (), True, False),  # never to the null sender (RFC 3461 §6.2)
        ("", ("DELAY",), False, False),
    ],
)
async def test_who_gets_a_delay_notice(
    store: SQLiteStore,
    alice: Account,
    tmp_path: Path,
    sender: str,
    notify: tuple[str, ...],
    authenticated: bool,
    wanted: bool,
) -> None:
    entry = await enqueue(
        store, [OutboundRecipient("x@flaky.test", notify=notify)], sender=sender, authenticated=authenticated
    )
    queue = runner(store, tmp_path, Clock(entry.created_at + timedelta(hours=1)))
    after = await attempt(queue, store, entry.id)
    assert after is not None and after.recipients[0].state is RecipientState.PENDING
    assert after.recipients[0].delay_notified is wanted
    notices = await inbox(store, alice)
    assert len(notices) == (1 if wanted else 0)
    if wanted:
        (block,) = recipient_blocks(notices[0])
        assert (block["Action"], block["Status"]) == ("delayed", "4.4.3")  # the DNS failure


async def test_one_notice_covers_every_recipient_due(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(
        store,
        [
            OutboundRecipient("a@flaky.test"),
            OutboundRecipient("b@dead.test", orcpt="rfc822;b+2Balias@dead.test"),
            OutboundRecipient("c@flaky.test", notify=("NEVER",)),
        ],
    )
    queue = runner(store, tmp_path, Clock(entry.created_at + timedelta(minutes=30)))
    after = await attempt(queue, store, entry.id)
    assert after is not None
    assert [r.delay_notified for r in after.recipients] == [True, True, False]
    (notice,) = await inbox(store, alice)
    blocks = recipient_blocks(notice)
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; a@flaky.test", "rfc822; b@dead.test"]
    assert blocks[1]["Original-Recipient"] == "rfc822; b+alias@dead.test"
    assert all(b["Action"] == "delayed" for b in blocks)


async def test_no_delay_notice_when_the_message_expires_instead(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@flaky.test")])
    queue = runner(store, tmp_path, Clock(entry.created_at + timedelta(days=2)))
    assert await attempt(queue, store, entry.id) is None
    (bounce,) = await inbox(store, alice)
    (block,) = recipient_blocks(bounce)
    assert block["Action"] == "failed"


async def test_delay_notified_is_stored_and_never_cleared(store: SQLiteStore, alice: Account) -> None:
    entry = await enqueue(store, [OutboundRecipient("a@dead.test"), OutboundRecipient("b@dead.test")])
    now = entry.created_at
    later = now + timedelta(minutes=1)
    number = await store.record_attempt(entry.id, now, None, later)
    updates = [
        RecipientUpdate(0, RecipientState.PENDING, "421 4.4.1 no", delay_notified=True),
        RecipientUpdate(1, RecipientState.PENDING, "421 4.4.1 no"),
    ]
    await store.finish_attempt(entry.id, number, "failed", updates, later)
    stored = await store.get_queue_entry(entry.id)
    assert stored is not None and [r.delay_notified for r in stored.recipients] == [True, False]
    number = await store.record_attempt(entry.id, later, None, later)
    await store.finish_attempt(
        entry.id, number, "failed", [RecipientUpdate(0, RecipientState.PENDING, "421 again")], later
    )
    stored = await store.get_queue_entry(entry.id)
    assert stored is not None
    assert stored.recipients[0].delay_notified and stored.recipients[0].last_reply == "421 again"


def test_migration_adds_delay_notified_to_existing_recipients(tmp_path: Path) -> None:
    conn = queue_database_at(tmp_path / "old.db", 2)
    try:
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
        assert conn.execute("SELECT delay_notified FROM queue_recipients").fetchall() == [(0,)]
    finally:
        conn.close()
