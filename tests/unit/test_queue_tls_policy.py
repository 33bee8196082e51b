"""The queue runner under an MTA-STS policy in enforce mode, without sockets: a host the policy does not
allow is never contacted; the mail waits with the reason and bounces with it at expiry (RFC 8461 §5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dsn_reports import recipient_blocks
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.delivery.schedule import RetrySchedule
from surat.dns.base import MXRecord
from surat.dns.fake import FakeResolver
from surat.mailauth.mtasts import StsMode, StsPolicy
from surat.store.base import Account, OutboundRecipient, RecipientState
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
