"""InboundChecks without sockets: the SPF deadline kept at the end of DATA (RFC 7208 §4.6.4)."""

from __future__ import annotations

import asyncio

from surat.dns.fake import FakeResolver
from surat.mailauth.spf import SPFStatus
from surat.smtpd.inbound import InboundChecks

MESSAGE = b"From: <a@sender.example>\r\nSubject: x\r\n\r\nbody\r\n"


class SlowTXT(FakeResolver):
    """A resolver whose SPF record (TXT at sender.example) takes `delay` seconds to arrive."""

    def __init__(self, delay: float) -> None:
        super().__init__({("sender.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"]})
        self.delay = delay

    async def txt(self, name: str) -> list[str]:
        if name == "sender.example":
            await asyncio.sleep(self.delay)
        return await super().txt(name)


async def spf_of(
    resolver: FakeResolver, timeout: float, wait_before_data_end: float = 0.0
) -> tuple[str, str]:
    checks = InboundChecks(resolver, "mx.example.test", spf_timeout=timeout)
    pending = checks.start_spf("192.0.2.1", "client.example", "a@sender.example")
    await asyncio.sleep(wait_before_data_end)  # the message arriving
    verdict = await checks.evaluate(pending, MESSAGE)
    assert verdict.spf is not None
    return verdict.spf.result.value, verdict.spf.reason


def test_spf_finished_during_data_is_used() -> None:
    assert asyncio.run(spf_of(SlowTXT(0.0), timeout=5))[0] == SPFStatus.PASS.value


def test_spf_still_running_at_data_end_is_awaited_within_the_deadline() -> None:
    assert asyncio.run(spf_of(SlowTXT(0.05), timeout=5))[0] == SPFStatus.PASS.value


def test_spf_past_its_deadline_is_temperror_and_cancelled() -> None:
    async def run() -> tuple[tuple[str, str], int]:
        result = await spf_of(SlowTXT(30), timeout=0.1)
        await asyncio.sleep(0)
        # nothing of the abandoned check is left running
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return result, len(others)

    (status, reason), left = asyncio.run(run())
    assert status == SPFStatus.TEMPERROR.value and "longer than 0.1s" in reason
    assert left == 0


def test_deadline_counts_from_mail_from() -> None:
    # 0.15 s of DATA already used 0.15 of the 0.2 s: the lookup's 0.1 s more overruns
    status, _ = asyncio.run(spf_of(SlowTXT(0.25), timeout=0.2, wait_before_data_end=0.15))
    assert status == SPFStatus.TEMPERROR.value
