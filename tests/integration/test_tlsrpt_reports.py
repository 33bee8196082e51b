"""TLS-RPT (RFC 8460) end to end: server A relays to remote.test under an enforced MTA-STS policy whose
first MX host shows a certificate for another name (a failure) and whose second is good (a success);
the counts reach the store, and a day later the daily report for "yesterday" goes to the rua of
_smtp._tls.remote.test (bob@remote.test on server B), gzipped JSON, DKIM-signed, once even when two
runners (two processes on one data directory) try."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim as dkimpy
import dns.message
import dns.query
import dns.rdatatype
from conftest import inbox, queue
from dns_server import DNSServer
from test_relay import BOB, Peer, submit, wait_for
from test_relay_mtasts import (
    DNSFactory,
    PolicyServer,
    dns_records,
    make_dns,
    mx,
    policy_server,
    start_sender,
    sts_tls,
)

from surat.certs import CertificatePaths
from surat.delivery.dkim import SigningKeys
from surat.delivery.tlsrpt import TlsReportSender, report_settings
from surat.store.sqlite import SQLiteStore

__all__ = ["make_dns", "mx", "policy_server", "sts_tls"]  # fixtures, imported so that pytest finds them

RUA = "v=TLSRPTv1; rua=mailto:bob@remote.test"


def _records() -> dict[tuple[str, str], list[str]]:
    records = dns_records(mx_host="other.remote.test")
    records[("remote.test.", "MX")] = ["10 other.remote.test.", "20 mx.remote.test."]
    records[("mx.remote.test.", "A")] = ["127.0.0.1"]
    records[("mx.remote.test.", "AAAA")] = []
    records[("_smtp._tls.remote.test.", "TXT")] = [f'"{RUA}"']
    return records


def _dns_lookup(dns_server: DNSServer) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc, asking the test's DNS server."""

    def lookup(name: bytes, timeout: float = 5, **_: object) -> bytes | None:
        query = dns.message.make_query(name.decode(), dns.rdatatype.TXT)
        response = dns.query.udp(query, "127.0.0.1", port=dns_server.port, timeout=timeout)
        for rrset in response.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return lookup


def test_daily_report_for_yesterday_is_sent_once_signed_and_complete(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    dns_server = make_dns(_records())
    sender = start_sender(tmp_path, dns_server, mx, policy_server, sts_tls)
    runner = sender.server.queue
    counter = sender.server.tls_reporter
    assert runner is not None and counter is not None
    runner.tls_reporter = counter  # Sender keeps results in memory; here they are counted in the store
    # The sessions count as yesterday's; the reports are made today (DKIM's t= must not be ahead).
    yesterday = datetime.now(UTC) - timedelta(days=1)
    counter.clock = lambda: yesterday
    other = SQLiteStore(sender.config.data_dir)  # a second process on the same data
    try:
        submit(sender, [BOB])
        wait_for(lambda: inbox(mx, BOB) and not queue(sender))
        sender.call(counter.flush())
        # Publish A's DKIM keys where dkimpy (and B) look them up.
        for signing in sender.call(SigningKeys(sender.store.keys).get("example.test", datetime.now(UTC))):
            dns_server.records[(signing.key.record_name, "TXT")] = [
                " ".join(f'"{part}"' for part in signing.key.txt_strings)
            ]
        sender.call(other.open())
        settings = report_settings(sender.config.hostname, "Example Org", "tls@example.test", None)
        daily = [
            TlsReportSender(
                store,
                sender.resolver,
                settings,
                SigningKeys(store.keys),
                clock=lambda: datetime.now(UTC),
                wake_queue=runner.wake,
            )
            for store in (sender.store, other)
        ]

        async def both() -> list[int]:
            return list(await asyncio.gather(*(each.send_due() for each in daily)))

        assert sorted(sender.call(both())) == [0, 1]  # one report, whichever runner claimed it
        wait_for(lambda: len(inbox(mx, BOB)) == 2 and not queue(sender))
        assert sender.call(both()) == [0, 0]  # claimed: never again
    finally:
        sender.call(other.close())
        sender.stop()
    report_mail = inbox(mx, BOB)[1]
    day = yesterday.date().isoformat()

    # RFC 8460 §5.3: DKIM-signed, by the submitter's domain
    assert dkimpy.verify(report_mail, dnsfunc=_dns_lookup(dns_server))
    parsed = email.message_from_bytes(report_mail, policy=email.policy.default)
    assert parsed["From"] == "noreply-smtp-tls-reporting@example.test"
    assert parsed["TLS-Report-Domain"] == "remote.test"
    assert parsed["TLS-Report-Submitter"] == "example.test"
    assert parsed.get_param("report-type") == "tlsrpt"
    attachment = next(p for p in parsed.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip")
    filename = attachment.get_filename()
    assert filename is not None
    submitter, domain, begin, end, unique = filename.removesuffix(".json.gz").split("!")
    assert (submitter, domain) == ("example.test", "remote.test")
    start_of_day = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    assert (int(begin), int(end)) == (int(start_of_day.timestamp()), int(start_of_day.timestamp()) + 86399)
    report = json.loads(gzip.decompress(attachment.get_content()))
    assert parsed["Subject"] == (
        f"Report Domain: remote.test Submitter: example.test Report-ID: <{report['report-id']}>"
    )
    assert report["report-id"].endswith(f".{unique}@example.test")
    assert report["organization-name"] == "Example Org"
    assert report["contact-info"] == "tls@example.test"
    assert report["date-range"] == {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"}
    assert len(report["policies"]) == 1
    policy = report["policies"][0]
    assert policy["policy"] == {
        "policy-type": "sts",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: *.remote.test", "max_age: 86400"],
        "policy-domain": "remote.test",
        "mx-host": ["*.remote.test"],
    }
    assert policy["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 1}
    [failure] = policy["failure-details"]
    reason = failure.pop("failure-reason-code")
    assert "Hostname mismatch" in reason
    assert failure == {
        "result-type": "certificate-host-mismatch",
        "sending-mta-ip": "127.0.0.1",
        "receiving-mx-hostname": "other.remote.test",
        "receiving-ip": "127.0.0.1",
        "failed-session-count": 1,
    }
