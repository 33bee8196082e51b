"""The queue runner under an MTA-STS policy in enforce mode, without sockets: a host the policy does not
allow is never contacted; the mail waits with the reason and bounces with it at expiry (RFC 8461 §5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dsn_reports import recipient_blocks
from surat.delivery.dane import DaneHost
from surat.delivery.mx import Host, Route, RouteKind
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.delivery.schedule import RetrySchedule
from surat.delivery.tlspolicy import REQUIRE_TLS, TlsPolicy, TlsPolicyKind, from_sts
from surat.dns.base import MXRecord, TLSARecord
from surat.dns.fake import FakeResolver
from surat.mailauth.mtasts import StsMode, StsPolicy
from surat.store.base import Account, Delivery, OutboundMessage, OutboundRecipient, QueueEntry, RecipientState
from surat.store.sqlite import SQLiteStore

from .test_queue_runner import Clock, enqueue, inbox

SCHEDULE = RetrySchedule(delays=(timedelta(minutes=1),), expire_after=timedelta(days=1))
REASON = "451 4.7.5 MTA-STS policy (enforce) of sts.test not satisfied by mx.sts.test: MX host not listed in the policy"


class FixedPolicies:
    """Stands in for StsPolicies: every domain has the same policy."""

    def __init__(self, policy: StsPolicy) -> None:
        self.policy = policy
        self.asked: list[str] = []

    async def policy_for(self, domain: str) -> StsPolicy | None:
        self.asked.append(domain)
        return self.policy


def sts_runner(store: SQLiteStore, tmp_path: Path, clock: Clock, policies: FixedPolicies) -> QueueRunner:
    resolver = FakeResolver(
        {("sts.test", "MX"): [MXRecord(10, "mx.sts.test")], ("mx.sts.test", "A"): ["127.0.0.1"]}
    )
    settings = RunnerSettings(
        hostname="mail.example.test", schedule=SCHEDULE, allow_private_destinations=True
    )
    return QueueRunner(
        store,
        resolver,
        settings,
        data_dir=tmp_path / "data",
        clock=clock,
        sts_policies=policies,  # type: ignore[arg-type]
    )


async def test_unlisted_mx_waits_then_bounces_with_the_reason(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    policies = FixedPolicies(StsPolicy(StsMode.ENFORCE, 86400, ("*.elsewhere.test",)))
    entry = await enqueue(store, [OutboundRecipient("x@sts.test")])
    await sts_runner(store, tmp_path, Clock(datetime.now(UTC)), policies).process(entry)
    waiting = await store.get_queue_entry(entry.id)
    assert waiting is not None
    (recipient,) = waiting.recipients
    assert (recipient.state, recipient.last_reply) == (RecipientState.PENDING, REASON)
    assert policies.asked == ["sts.test"]

    await sts_runner(store, tmp_path, Clock(datetime.now(UTC) + timedelta(days=2)), policies).process(waiting)
    assert await store.get_queue_entry(entry.id) is None
    (dsn,) = await inbox(store, alice)
    (block,) = recipient_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "5.7.5")
    assert "MX host not listed in the policy" in " ".join(block["Diagnostic-Code"].split())


async def test_mode_none_is_no_policy(store: SQLiteStore, alice: Account, tmp_path: Path) -> None:
    # Mode none (RFC 8461 §5): delivered as without a policy; here nothing listens, so the failure is
    # a connection failure, not a policy one.
    policies = FixedPolicies(StsPolicy(StsMode.NONE, 86400, ()))
    entry = await enqueue(store, [OutboundRecipient("x@sts.test")])
    runner = sts_runner(store, tmp_path, Clock(datetime.now(UTC)), policies)
    runner.settings = RunnerSettings(
        hostname="mail.example.test",
        schedule=SCHEDULE,
        allow_private_destinations=True,
        mx_port=1,
        connect_timeout=2,
    )
    await runner.process(entry)
    waiting = await store.get_queue_entry(entry.id)
    assert waiting is not None
    reply = waiting.recipients[0].last_reply or ""
    assert reply.startswith("451 4.4.1 Cannot connect to mx.sts.test[127.0.0.1]:1")


async def _enqueue_requiretls(store: SQLiteStore, sender: str, recipient: str) -> QueueEntry:
    prefix = f"Return-Path: <{sender}>\r\n".encode()
    content = prefix + b"From: alice@example.test\r\nTLS-Required: No\r\nSubject: s\r\n\r\nbody\r\n"
    remote = OutboundMessage(
        sender=sender,
        recipients=(OutboundRecipient(recipient),),
        body_offset=len(prefix),
        requiretls=True,
        ret="FULL",
    )
    result = await store.deliver(
        Delivery(None, len(content), datetime.now(UTC), remote=remote, content=content)
    )
    assert result.queue_id is not None
    entry = await store.get_queue_entry(result.queue_id)
    assert entry is not None and entry.requiretls
    return entry


async def test_requiretls_without_dnssec_or_mta_sts_bounces_at_once(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    """RFC 8689 §4.2.1: no DNSSEC-validated MX and no MTA-STS policy: returned with 5.7.30, not
    retried; "TLS-Required: No" does not weaken REQUIRETLS (§4.1)."""
    entry = await _enqueue_requiretls(store, "alice@example.test", "x@sts.test")
    policies = FixedPolicies(StsPolicy(StsMode.NONE, 86400, ()))
    await sts_runner(store, tmp_path, Clock(datetime.now(UTC)), policies).process(entry)
    assert await store.get_queue_entry(entry.id) is None
    (dsn,) = await inbox(store, alice)
    (block,) = recipient_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "5.7.30")
    assert " ".join(block["Diagnostic-Code"].split()) == (
        "smtp; 550 5.7.30 REQUIRETLS support required: sts.test: no DNSSEC-validated MX records and no MTA-STS policy"
    )
    assert b"\r\n\r\nbody\r\n" not in dsn  # RFC 8689 §4.3: the header only, although RET=FULL


async def test_requiretls_dsn_to_a_remote_sender_goes_with_requiretls(
    store: SQLiteStore, tmp_path: Path
) -> None:
    entry = await _enqueue_requiretls(store, "someone@elsewhere.test", "x@sts.test")
    policies = FixedPolicies(StsPolicy(StsMode.NONE, 86400, ()))
    await sts_runner(store, tmp_path, Clock(datetime.now(UTC)), policies).process(entry)
    (dsn_entry,) = await store.list_queue()
    assert (dsn_entry.sender, dsn_entry.recipients[0].address) == ("", "someone@elsewhere.test")
    assert dsn_entry.requiretls  # RFC 8689 §4.3


async def test_requiretls_enforces_an_mta_sts_policy_in_testing_mode(
    store: SQLiteStore, alice: Account, tmp_path: Path
) -> None:
    """Testing mode would deliver to an unlisted MX; a REQUIRETLS message waits instead."""
    entry = await _enqueue_requiretls(store, "alice@example.test", "x@sts.test")
    policies = FixedPolicies(StsPolicy(StsMode.TESTING, 86400, ("*.elsewhere.test",)))
    await sts_runner(store, tmp_path, Clock(datetime.now(UTC)), policies).process(entry)
    waiting = await store.get_queue_entry(entry.id)
    assert waiting is not None
    assert waiting.recipients[0].state is RecipientState.PENDING
    assert waiting.recipients[0].last_reply == REASON


async def test_requiretls_under_dane_never_settles_for_unauthenticated_tls(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """RFC 8689 §4.2.1: a host whose TLSA records are all unusable would get TLS without
    authentication under DANE; for REQUIRETLS it gets the fallback, a verified name, enforced."""
    runner = sts_runner(
        store, tmp_path, Clock(datetime.now(UTC)), FixedPolicies(StsPolicy(StsMode.NONE, 1, ()))
    )
    route = Route("sts.test", RouteKind.MX, (Host("mx.sts.test", 25, ("127.0.0.1",)),))
    usable = DaneHost((TLSARecord(3, 1, 1, bytes(32)),))
    dane = TlsPolicy(
        TlsPolicyKind.DANE,
        enforce=True,
        dane={"a.sts.test": usable, "b.sts.test": DaneHost(())},
        fallback=None,
    )
    policy = await runner._requiretls_policy("sts.test", route, dane)
    assert isinstance(policy, TlsPolicy)
    assert policy.for_host("a.sts.test") is policy  # DANE-EE pins the key
    assert policy.for_host("b.sts.test") == REQUIRE_TLS  # not "TLS without authentication"
    assert policy.for_host("c.sts.test") == REQUIRE_TLS  # no TLSA: the MX is authentic, verify the name
    testing = from_sts(StsPolicy(StsMode.TESTING, 1, ("*.sts.test",)))
    assert testing is not None
    assert await runner._requiretls_policy("sts.test", route, testing) == replace(testing, enforce=True)
