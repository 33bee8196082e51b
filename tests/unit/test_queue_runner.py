"""The queue runner's decisions without sockets: DNS outcomes from a FakeResolver, a settable clock,
the real SQLite store. What reaches a remote server is tested in tests/integration/test_relay.py."""

from __future__ import annotations

import asyncio
import email
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dkim_keys import count_signatures
from dsn_reports import recipient_blocks
from surat.config import HostPort, parse_config
from surat.delivery.queue import LOCAL_DOMAIN_TTL, QueueRunner, RunnerSettings
from surat.delivery.schedule import RetrySchedule
from surat.dns.base import DNSErrorKind, MXRecord
from surat.dns.fake import FakeResolver
from surat.store.base import (
    Account,
    Credentials,
    Delivery,
    OutboundMessage,
    OutboundRecipient,
    QueueEntry,
    RecipientState,
    Store,
)
from surat.store.sqlite import SQLiteStore

SCHEDULE = RetrySchedule(delays=(timedelta(minutes=1), timedelta(minutes=5)), expire_after=timedelta(days=1))
CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def dns() -> FakeResolver:
    return FakeResolver(
        {
            ("null.test", "MX"): [MXRecord(0, ".")],
            ("flaky.test", "MX"): DNSErrorKind.TEMPORARY,
            ("other.test", "MX"): DNSErrorKind.TEMPORARY,
        }
    )


def runner(store: Store, tmp_path: Path, clock: Clock, resolver: FakeResolver | None = None) -> QueueRunner:
    settings = RunnerSettings(hostname="mail.example.test", schedule=SCHEDULE)
    return QueueRunner(store, resolver or dns(), settings, data_dir=tmp_path / "data", clock=clock)


async def enqueue(
    store: Store,
    recipients: list[OutboundRecipient],
    sender: str = "alice@example.test",
    headers: bytes = b"",
) -> QueueEntry:
    prefix = f"Return-Path: <{sender}>\r\n".encode()
    content = prefix + headers + b"From: alice@example.test\r\nSubject: test\r\n\r\nbody\r\n"
    remote = OutboundMessage(sender=sender, recipients=tuple(recipients), body_offset=len(prefix))
    result = await store.deliver(
        Delivery(None, len(content), datetime.now(UTC), remote=remote, content=content)
    )
    assert result.queue_id is not None
    entry = await store.get_queue_entry(result.queue_id)
    assert entry is not None
    return entry


async def inbox(store: Store, account: Account) -> list[bytes]:
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    out = []
    for summary in await store.list_messages(mailbox.id):
        (record,) = await store.get_messages(mailbox.id, [summary.uid])
        out.append(await store.blobs.read(record.blob_id))
    return out


async def test_null_mx_bounces_at_once_to_the_local_sender(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@null.test")])
    await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    assert await store.get_queue_entry(entry.id) is None
    (dsn,) = await inbox(store, alice)
    assert dsn.startswith(b"Return-Path: <>\r\n")
    (block,) = recipient_blocks(dsn)
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; x@null.test",
        "failed",
        "5.1.10",
    )


async def test_every_attempt_log_line_names_the_reason(
    store: SQLiteStore, alice: Account, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@flaky.test"), OutboundRecipient("y@null.test")])
    with caplog.at_level(logging.INFO, logger="surat.delivery.queue"):
        await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    (attempt,) = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "queue.attempt"]
    assert (attempt["failed"], attempt["pending"]) == (1, 1)
    reason = attempt["reason"]
    assert reason.startswith("x@flaky.test: 4") and "; y@null.test: 5" in reason, reason
    again = await store.get_queue_entry(entry.id)
    assert again is not None and again.attempts[0].result is not None
    assert "x@flaky.test: 4" in again.attempts[0].result  # what `surat queue show` prints


async def test_temporary_dns_failure_is_retried_per_schedule(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@flaky.test")])
    clock = Clock(datetime.now(UTC))
    queue = runner(store, tmp_path, clock)
    await queue.process(entry)
    again = await store.get_queue_entry(entry.id)
    assert again is not None
    assert again.next_attempt_at == clock.now + timedelta(minutes=1)
    assert [(a.number, a.result is not None) for a in again.attempts] == [(1, True)]
    assert again.recipients[0].state is RecipientState.PENDING
    assert again.recipients[0].last_reply is not None and again.recipients[0].last_reply.startswith(
        "451 4.4.3"
    )
    clock.now += timedelta(minutes=1)
    await queue.process(again)
    third = await store.get_queue_entry(entry.id)
    assert third is not None and third.next_attempt_at == clock.now + timedelta(minutes=5)
    assert await inbox(store, alice) == []


async def test_expiry_bounces_the_pending_recipients(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@flaky.test")])
    await runner(store, tmp_path, Clock(datetime.now(UTC) + timedelta(days=2))).process(entry)
    assert await store.get_queue_entry(entry.id) is None
    (dsn,) = await inbox(store, alice)
    (block,) = recipient_blocks(dsn)
    assert block["Action"] == "failed"
    assert block["Status"] == "5.4.3"  # the temporary DNS failure's 4.4.3, final now


async def test_domains_are_decided_separately(store: SQLiteStore, alice: Account, tmp_path: Path) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@null.test"), OutboundRecipient("y@other.test")])
    await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    again = await store.get_queue_entry(entry.id)
    assert again is not None
    assert [r.state for r in again.recipients] == [RecipientState.FAILED, RecipientState.PENDING]
    (dsn,) = await inbox(store, alice)
    assert [b["Final-Recipient"] for b in recipient_blocks(dsn)] == ["rfc822; x@null.test"]


async def test_no_dsn_to_the_null_sender_or_with_notify_never(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    queue = runner(store, tmp_path, Clock(datetime.now(UTC)))
    bounce = await enqueue(store, [OutboundRecipient("x@null.test")], sender="")
    never = await enqueue(store, [OutboundRecipient("x@null.test", notify=("NEVER",))])
    await queue.process(bounce)
    await queue.process(never)
    assert await store.list_queue() == []
    assert await inbox(store, alice) == []


async def test_dsn_for_a_remote_sender_is_queued_from_the_null_sender(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    entry = await enqueue(store, [OutboundRecipient("x@null.test")], sender="someone@other.test")
    await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    (dsn,) = await store.list_queue()
    assert dsn.sender == ""
    assert [r.address for r in dsn.recipients] == ["someone@other.test"]
    report = email.message_from_bytes(await store.blobs.read(dsn.blob_id))
    assert report.get_content_type() == "multipart/report"
    assert report["To"] == "someone@other.test"
    (block,) = recipient_blocks(report.as_bytes())
    assert block["Status"] == "5.1.10"


async def test_local_domains_are_never_sent_out(store: SQLiteStore, alice: Account, tmp_path: Path) -> None:
    resolver = dns()
    entry = await enqueue(
        store, [OutboundRecipient("alice@example.test"), OutboundRecipient("ghost@example.test")]
    )
    await runner(store, tmp_path, Clock(datetime.now(UTC)), resolver).process(entry)
    assert resolver.queries == []  # no MX lookup for our own domain
    assert await store.get_queue_entry(entry.id) is None
    messages = await inbox(store, alice)
    assert len(messages) == 2
    delivered = next(m for m in messages if b"Subject: test" in m and b"delivery-status" not in m)
    assert delivered.startswith(b"Return-Path: <alice@example.test>\r\n")
    bounce = next(m for m in messages if b"delivery-status" in m)
    (block,) = recipient_blocks(bounce)
    assert (block["Final-Recipient"], block["Status"]) == ("rfc822; ghost@example.test", "5.1.1")


async def test_an_alias_loop_is_retried_not_bounced_as_unknown(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    await store.add_alias("a@example.test", "b@example.test")
    await store.add_alias("b@example.test", "a@example.test")
    entry = await enqueue(store, [OutboundRecipient("a@example.test")])
    await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    again = await store.get_queue_entry(entry.id)
    assert again is not None, "an alias loop is a configuration error the postmaster can fix"
    assert again.recipients[0].state is RecipientState.PENDING
    assert "4.4.6" in (again.recipients[0].last_reply or "")
    assert await inbox(store, alice) == []  # no bounce yet


async def test_too_many_received_fields_is_a_loop(store: SQLiteStore, alice: Account, tmp_path: Path) -> None:
    resolver = dns()
    headers = b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n" * 101
    entry = await enqueue(store, [OutboundRecipient("x@other.test")], headers=headers)
    await runner(store, tmp_path, Clock(datetime.now(UTC)), resolver).process(entry)
    assert resolver.queries == []
    (dsn,) = await inbox(store, alice)
    (block,) = recipient_blocks(dsn)
    assert block["Status"] == "5.4.6"


async def test_run_once_claims_each_due_entry_once(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    first = await enqueue(store, [OutboundRecipient("x@flaky.test")])
    second = await enqueue(store, [OutboundRecipient("y@flaky.test")])
    queue = runner(store, tmp_path, Clock(datetime.now(UTC) + timedelta(seconds=1)))
    assert await queue.run_once() == 2
    assert await queue.run_once() == 0  # in flight or claimed: not started twice
    await queue.idle()
    assert await queue.run_once() == 0  # rescheduled a minute ahead
    for queue_id in (first.id, second.id):
        entry = await store.get_queue_entry(queue_id)
        assert entry is not None and len(entry.attempts) == 1


async def test_the_run_loop_survives_any_error_of_a_claim(
    store: SQLiteStore, alice: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that fails with something other than StoreError (a database driver's error when
    PostgreSQL restarts) is logged and retried at the next poll; the loop must not die with it."""
    entry = await enqueue(store, [OutboundRecipient("x@null.test")])
    real = store.due_queue_entries
    calls = 0

    async def failing_once(now: datetime, limit: int, lease: timedelta | None = None) -> list[QueueEntry]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("server closed the connection unexpectedly")
        return await real(now, limit, lease)

    monkeypatch.setattr(store, "due_queue_entries", failing_once)
    settings = RunnerSettings(hostname="mail.example.test", schedule=SCHEDULE, poll_interval=0.05)
    queue = QueueRunner(store, dns(), settings, data_dir=tmp_path / "data")
    await queue.start()
    try:
        for _ in range(100):
            if await store.get_queue_entry(entry.id) is None:
                break
            await asyncio.sleep(0.02)
        assert await store.get_queue_entry(entry.id) is None  # bounced (null MX) by a later run
        assert calls >= 2
    finally:
        await queue.stop()


async def test_late_quota_failure_is_retried_then_bounced(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    # A local recipient over quota when the queue delivers (issue 5: a late local failure gets a DSN).
    bob = await store.add_account("bob@example.test", CREDS)
    await store.set_quota(bob.address, 10)
    entry = await enqueue(store, [OutboundRecipient("bob@example.test")])
    await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    again = await store.get_queue_entry(entry.id)
    assert again is not None, "a full mailbox is a temporary failure"
    assert again.recipients[0].state is RecipientState.PENDING
    assert "4.2.2" in (again.recipients[0].last_reply or "")
    assert await inbox(store, bob) == []
    await runner(store, tmp_path, Clock(datetime.now(UTC) + timedelta(days=6))).process(again)
    assert await store.get_queue_entry(entry.id) is None
    bounce = next(m for m in await inbox(store, alice) if b"delivery-status" in m)
    (block,) = recipient_blocks(bounce)
    assert (block["Action"], block["Status"]) == ("failed", "5.2.2")


async def test_a_domain_added_at_run_time_is_local_within_a_second(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    queue = runner(store, tmp_path, Clock(datetime.now(UTC)))
    assert await queue._is_local_domain("late.test") is False
    await store.add_domain("late.test")  # e.g. `surat domain add` in another process
    assert await queue._is_local_domain("late.test") is False  # remembered for LOCAL_DOMAIN_TTL
    await asyncio.sleep(LOCAL_DOMAIN_TTL + 0.05)
    assert await queue._is_local_domain("late.test") is True


def test_settings_refuse_our_own_listening_addresses(tmp_path: Path) -> None:
    config = parse_config(
        {
            "hostname": "mail.example.test",
            "listen": {"smtp": ["198.51.100.7:25", "0.0.0.0:2525"], "imap": [], "submission": []},
            "delivery": {"allow_private_destinations": True},
        },
        tmp_path,
    )
    settings = RunnerSettings.from_config(config)
    assert settings.allow_private_destinations is True
    assert settings.own_addresses == {"198.51.100.7", "0.0.0.0"}


async def test_a_bounce_to_a_sender_with_a_line_break_is_not_composed(
    store: SQLiteStore, alice: Account, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # issue 11 item 6: such a sender is refused at MAIL FROM; one already queued (older version, a
    # hand-made entry) must not turn into a DSN whose To: starts a forged header field
    entry = await enqueue(
        store, [OutboundRecipient("x@null.test")], sender="a@example.org\r\nBcc: x@example.org"
    )
    with caplog.at_level(logging.WARNING, logger="surat.delivery.queue"):
        await runner(store, tmp_path, Clock(datetime.now(UTC))).process(entry)
    assert await store.get_queue_entry(entry.id) is None  # the failure is final all the same
    assert await inbox(store, alice) == []
    assert [r.getMessage() for r in caplog.records] == ["queue.dsn_unaddressable"]


async def test_an_entry_queued_unsigned_is_signed_at_its_first_attempt_only(
    store: SQLiteStore, alice: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries from before schema 6 (or from the MX port) carry no signature: the first attempt
    signs (t= the queueing time) and stores it with the attempt record; later attempts reuse it."""
    calls = count_signatures(monkeypatch)
    with socket.socket() as unused:  # a port nobody listens on: every attempt is deferred
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = RunnerSettings(
        hostname="mail.example.test",
        schedule=SCHEDULE,
        routes={"remote.test": HostPort("127.0.0.1", port)},
        connect_timeout=2,
    )
    clock = Clock(datetime.now(UTC))
    queue = QueueRunner(store, dns(), settings, data_dir=tmp_path / "data", clock=clock)
    local = await enqueue(store, [OutboundRecipient("x@remote.test")])
    foreign = await enqueue(store, [OutboundRecipient("y@remote.test")], sender="carol@elsewhere.test")
    assert local.dkim_signature is None and foreign.dkim_signature is None
    stored: list[bytes | None] = []
    for _attempt in range(3):
        for entry_id in (local.id, foreign.id):
            entry = await store.get_queue_entry(entry_id)
            assert entry is not None
            await queue.process(entry)
        again = await store.get_queue_entry(local.id)
        assert again is not None and again.recipients[0].state is RecipientState.PENDING
        stored.append(again.dkim_signature)
        clock.now += timedelta(minutes=10)
    assert calls == ["example.test"]  # once for three attempts; never for a foreign sender
    signature = stored[0]
    assert signature is not None and signature.count(b"DKIM-Signature:") == 2
    assert stored == [signature] * 3
    assert f"t={int(local.created_at.timestamp())};".encode() in signature.replace(b"\r\n ", b" ")
    untouched = await store.get_queue_entry(foreign.id)
    assert untouched is not None and untouched.dkim_signature == b""  # decided: not ours to sign
