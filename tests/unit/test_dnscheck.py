"""surat.dnscheck: expected records against what a (fake) DNS publishes, record type by type."""

from __future__ import annotations

import pytest

from surat.dns.base import DNSError, DNSErrorKind
from surat.dnscheck import CheckStatus, all_passed, check_record, check_records, format_checks
from surat.dnsrecords import DnsRecord, RecordSet


class Published:
    """A DNS that publishes `records` {(name, type): [presentation texts]}; names in `failing` time out."""

    def __init__(self, records: dict[tuple[str, str], list[str]], failing: tuple[str, ...] = ()) -> None:
        self.records = records
        self.failing = failing
        self.asked: list[tuple[str, str]] = []

    async def presentation(self, name: str, rdtype: str) -> list[str]:
        self.asked.append((name, rdtype))
        if name in self.failing:
            raise DNSError(DNSErrorKind.TEMPORARY, name, "timeout")
        if not any(known == name for known, _ in self.records):
            raise DNSError(DNSErrorKind.NXDOMAIN, name)
        return self.records.get((name, rdtype), [])


def _record(name: str, rtype: str, value: str, optional: bool = False) -> DnsRecord:
    return DnsRecord(name, rtype, value, "test", optional)


DMARC = _record("_dmarc.example.test.", "TXT", '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"')
SPF = _record("example.test.", "TXT", '"v=spf1 mx -all"')
MX = _record("example.test.", "MX", "10 mail.example.test.")
SRV = _record("_imaps._tcp.example.test.", "SRV", "0 1 993 mail.example.test.")
CNAME = _record("autoconfig.example.test.", "CNAME", "mail.example.test.")


@pytest.mark.parametrize(
    ("record", "published", "status"),
    [
        # tag-value lists: white space and a trailing ";" do not matter, values and order do
        (DMARC, ['"v=DMARC1;p=quarantine;rua=mailto:postmaster@example.test;"'], CheckStatus.OK),
        (DMARC, ['"v=DMARC1; p=quar" "antine; rua=mailto:postmaster@example.test"'], CheckStatus.OK),
        (DMARC, ['"v=DMARC1; p=none; rua=mailto:postmaster@example.test"'], CheckStatus.DIFFERENT),
        (DMARC, ['"unrelated text"'], CheckStatus.MISSING),
        (DMARC, [], CheckStatus.MISSING),
        # SPF beside other TXT records at the apex
        (SPF, ['"google-site-verification=x"', '"v=spf1 mx -all"'], CheckStatus.OK),
        (SPF, ['"google-site-verification=x"', '"v=spf1  mx  -all"'], CheckStatus.OK),
        (SPF, ['"google-site-verification=x"', '"V=SPF1 a -all"'], CheckStatus.DIFFERENT),
        (SPF, ['"google-site-verification=x"'], CheckStatus.MISSING),
        # host names compare without regard to case; another MX beside ours is fine
        (MX, ["10 MAIL.Example.TEST.", "20 backup.example.net."], CheckStatus.OK),
        (MX, ["20 mail.example.test."], CheckStatus.DIFFERENT),
        (SRV, ["0 1 993 mail.example.test."], CheckStatus.OK),
        (SRV, ["0 1 994 mail.example.test."], CheckStatus.DIFFERENT),
        (CNAME, ["Mail.Example.Test."], CheckStatus.OK),
        (CNAME, ["www.example.test."], CheckStatus.DIFFERENT),
    ],
)
async def test_comparison(record: DnsRecord, published: list[str], status: CheckStatus) -> None:
    dns = Published({(record.name, record.type): published, ("mail.example.test.", "A"): ["192.0.2.1"]})
    assert (await check_record(record, dns)).status is status


async def test_a_flattened_cname_is_ok_when_the_addresses_match() -> None:
    same = Published(
        {("autoconfig.example.test.", "A"): ["192.0.2.1"], ("mail.example.test.", "A"): ["192.0.2.1"]}
    )
    check = await check_record(CNAME, same)
    assert (check.status, check.published) == (CheckStatus.OK, ("A 192.0.2.1",))
    other = Published(
        {("autoconfig.example.test.", "A"): ["192.0.2.9"], ("mail.example.test.", "A"): ["192.0.2.1"]}
    )
    check = await check_record(CNAME, other)
    assert (check.status, check.published) == (CheckStatus.DIFFERENT, ("A 192.0.2.9",))
    assert (await check_record(CNAME, Published({}))).status is CheckStatus.MISSING


async def test_report_and_exit_status() -> None:
    sts = _record("_mta-sts.example.test.", "TXT", '"v=STSv1; id=abc"', optional=True)
    tlsrpt = _record(
        "_smtp._tls.example.test.", "TXT", '"v=TLSRPTv1; rua=mailto:postmaster@example.test"', True
    )
    records = RecordSet("example.test", "mail.example.test", (MX, SPF, DMARC, sts, tlsrpt, SRV), {})
    dns = Published(
        {
            ("example.test.", "MX"): ["10 mail.example.test."],
            ("example.test.", "TXT"): ['"v=spf1 a -all"'],
            ("_mta-sts.example.test.", "TXT"): ['"v=STSv1; id=abc"'],
        },
        failing=("_imaps._tcp.example.test.",),
    )
    checks = await check_records(records, dns)
    assert format_checks(checks) == (
        "ok                   MX    example.test.              10 mail.example.test.\n"
        'different            TXT   example.test.              "v=spf1 mx -all"  (published: "v=spf1 a -all")\n'
        "missing              TXT   _dmarc.example.test.       "
        '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"\n'
        'ok                   TXT   _mta-sts.example.test.     "v=STSv1; id=abc"\n'
        "missing (optional)   TXT   _smtp._tls.example.test.   "
        '"v=TLSRPTv1; rua=mailto:postmaster@example.test"\n'
        "error                SRV   _imaps._tcp.example.test.  0 1 993 mail.example.test."
        "  (temporary: _imaps._tcp.example.test.: timeout)\n"
    )
    assert [check.passed for check in checks] == [True, False, False, True, True, False]
    assert not all_passed(checks)
    assert all_passed([checks[0], checks[3], checks[4]])  # an optional record may be missing
    stale = Published({("_mta-sts.example.test.", "TXT"): ['"v=STSv1; id=old"']})
    assert not (await check_record(sts, stale)).passed  # but not published with another value
