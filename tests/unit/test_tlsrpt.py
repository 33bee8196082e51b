"""TLS-RPT (RFC 8460): the TXT record parser (§3), the report's JSON shape (§4.4, its example),
the report mail (§5.3) and the counting reporter's aggregation."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from surat.delivery.dane import DaneHost
from surat.delivery.tlspolicy import REQUIRE_TLS, TlsFailure, TlsPolicy, TlsPolicyKind, from_sts
from surat.delivery.tlsrpt import (
    ReportSettings,
    StoreTlsReporter,
    build_report,
    compose_message,
    gzip_report,
    policy_key,
    report_filename,
    report_settings,
)
from surat.dns.base import TLSARecord
from surat.mailauth.mtasts import PolicyError, StsMode, StsPolicy
from surat.mailauth.tlsrpt import TlsRptRecord, parse_record
from surat.store.base import TlsResultCount, TlsResultKey

# ------------------------------------------------------------------------------------ TXT record

VALID_RECORDS = [
    # RFC 8460 §3.1 examples
    ("v=TLSRPTv1;rua=mailto:reports@example.com", TlsRptRecord(("reports@example.com",), ())),
    (
        "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
        TlsRptRecord((), ("https://reporting.example.com/v1/tlsrpt",)),
    ),
    (
        "v=TLSRPTv1; rua=mailto:reports@example.com,https://reporting.example.com/v1/tlsrpt",
        TlsRptRecord(("reports@example.com",), ("https://reporting.example.com/v1/tlsrpt",)),
    ),
    # field-delim = *WSP ";" *WSP; an optional trailing delimiter; unknown extensions ignored
    ("v=TLSRPTv1 ;\trua=mailto:a@b.example ;", TlsRptRecord(("a@b.example",), ())),
    (
        "v=TLSRPTv1; ext_1=value; rua=mailto:a@b.example , mailto:c%2Bd@e.example",
        TlsRptRecord(("a@b.example", "c+d@e.example"), ()),
    ),
    # other schemes are not ours to use, but are URIs
    ("v=TLSRPTv1; rua=ftp://example.com/x,mailto:r@example.com", TlsRptRecord(("r@example.com",), ())),
]


@pytest.mark.parametrize(("text", "expected"), VALID_RECORDS)
def test_valid_records(text: str, expected: TlsRptRecord) -> None:
    assert parse_record([text]) == expected
    # records of other kinds beside it are discarded (§3)
    assert parse_record(["v=spf1 -all", text, "v=TLSRPTv10; rua=mailto:x@y.example"]) == expected


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv1;",  # no rua
        "v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example",  # rua twice (Note 1)
        "v=TLSRPTv1; rua=",  # empty URI
        "v=TLSRPTv1; rua=mailto:",  # no address
        "v=TLSRPTv1; rua=reports@example.com",  # not a URI
        "v=TLSRPTv1; rua=mailto:a@b.example?subject=x",  # header fields in mailto
        "v=TLSRPTv1; rua=mailto:a!b@example.com",  # "!" must be encoded (§3)
        "v=TLSRPTv1; rua=mailto:a b@example.com",  # space
        "v=TLSRPTv1; rua=mailto:a@b.example; bad field",  # no "="
        "v=TLSRPTv1; rua=mailto:a@b.example; _x=1",  # extension name must start alphanumeric
        "v=TLSRPTv1; rua=mailto:a@b.example; x=a=b",  # "=" in a value
        "v=TLSRPTv1; rua=mailto:é@example.com",  # not a URI character
        "v=TLSRPTv1; rua=mailto:c%40d@e.example",  # decodes to an address with two "@"
        "v=TLSRPTv1; rua=mailto:%ff@e.example",  # not UTF-8 once decoded
        "v=TLSRPTv1; rua=mailto:a%0D%0ABcc:x@y.example",  # no header injection through To:
        "v=TLSRPTv1; rua=mailto:%3Ca%3E@b.example",  # "<a>" is no local part
        "v=TLSRPTv1; rua=" + ",".join(["mailto:a@b.example"] * 11),  # more than MAX_RUA
    ],
)
def test_malformed_records(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_record([text])


def test_no_record_and_several_records() -> None:
    assert parse_record([]) is None
    assert parse_record(["v=spf1 -all", "v=TLSRPTv1x; rua=mailto:a@b.example"]) is None
    assert parse_record(["v=TLSRPTv1 x; rua=mailto:a@b.example"]) is None  # not "v=TLSRPTv1" then ";"
    with pytest.raises(PolicyError, match="2 v=TLSRPTv1"):
        parse_record(["v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@d.example"])


# ------------------------------------------------------------------------------------ the report

SETTINGS = ReportSettings(
    submitter="company-x.example",
    sender="noreply-smtp-tls-reporting@company-x.example",
    organization="Company-X",
    contact="sts-reporting@company-x.example",
)
STS_LINES = "version: STSv1\nmode: testing\nmx: *.mail.company-y.example\nmax_age: 86400"
STS = TlsResultKey("2016-04-01", "company-y.example", "sts", STS_LINES, "*.mail.company-y.example")


def _failure(**details: str) -> TlsResultKey:
    return replace(STS, **details)


def test_report_has_the_shape_of_the_rfc_example() -> None:
    """RFC 8460 §4.4's example report, from counts (additional-information, a URI, is never made:
    the failure text goes to failure-reason-code)."""
    counts = [
        TlsResultCount(STS, 5326),
        TlsResultCount(
            _failure(
                result_type="certificate-expired",
                sending_mta_ip="2001:db8:abcd:0012::1",
                receiving_mx_hostname="mx1.mail.company-y.example",
            ),
            100,
        ),
        TlsResultCount(
            _failure(
                result_type="starttls-not-supported",
                sending_mta_ip="2001:db8:abcd:0013::1",
                receiving_mx_hostname="mx2.mail.company-y.example",
                receiving_ip="203.0.113.56",
            ),
            200,
        ),
        TlsResultCount(
            _failure(
                result_type="validation-failure",
                sending_mta_ip="198.51.100.62",
                receiving_mx_hostname="mx-backup.mail.company-y.example",
                receiving_ip="203.0.113.58",
                failure_reason_code="X509_V_ERR_PROOF_OF_POSSESSION",
            ),
            3,
        ),
        # another domain's count and another day's are not in this report
        TlsResultCount(TlsResultKey("2016-04-01", "other.example", "no-policy-found", "", ""), 7),
        TlsResultCount(TlsResultKey("2016-04-02", "company-y.example", "sts", STS_LINES, "x"), 7),
    ]
    report = build_report(
        "company-y.example", "2016-04-01", counts, SETTINGS, "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    )
    assert report == {
        "organization-name": "Company-X",
        "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
        "contact-info": "sts-reporting@company-x.example",
        "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1",
                        "mode: testing",
                        "mx: *.mail.company-y.example",
                        "max_age: 86400",
                    ],
                    "policy-domain": "company-y.example",
                    "mx-host": ["*.mail.company-y.example"],
                },
                "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": "2001:db8:abcd:0012::1",
                        "receiving-mx-hostname": "mx1.mail.company-y.example",
                        "failed-session-count": 100,
                    },
                    {
                        "result-type": "starttls-not-supported",
                        "sending-mta-ip": "2001:db8:abcd:0013::1",
                        "receiving-mx-hostname": "mx2.mail.company-y.example",
                        "receiving-ip": "203.0.113.56",
                        "failed-session-count": 200,
                    },
                    {
                        "result-type": "validation-failure",
                        "sending-mta-ip": "198.51.100.62",
                        "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                        "receiving-ip": "203.0.113.58",
                        "failed-session-count": 3,
                        "failure-reason-code": "X509_V_ERR_PROOF_OF_POSSESSION",
                    },
                ],
            }
        ],
    }
    assert json.loads(gzip.decompress(gzip_report(report))) == report


def test_policy_without_failures_has_no_failure_details() -> None:
    key = TlsResultKey("2016-04-01", "y.example", "no-policy-found", "", "")
    report = build_report("y.example", "2016-04-01", [TlsResultCount(key, 2)], SETTINGS, "r")
    assert report["policies"] == [
        {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "y.example"},
            "summary": {"total-successful-session-count": 2, "total-failure-session-count": 0},
        }
    ]


def test_filename_and_settings() -> None:
    # RFC 8460 §5.3: sender!policy-domain!begin!end!unique-id.json.gz, epoch seconds (a whole UTC day)
    assert report_filename("company-x.example", "company-y.example", "2016-04-01", "001") == (
        "company-x.example!company-y.example!1459468800!1459555199!001.json.gz"
    )
    assert report_settings("mail.example.com", None, None, None) == ReportSettings(
        "example.com",
        "noreply-smtp-tls-reporting@example.com",
        "example.com",
        "noreply-smtp-tls-reporting@example.com",
    )
    assert report_settings("example.com", "Org", "ops@example.com", "tls@example.org") == ReportSettings(
        "example.org", "tls@example.org", "Org", "ops@example.com"
    )


def test_report_mail() -> None:
    payload = gzip_report({"a": 1})
    message = compose_message(
        "company-y.example",
        "id1@company-x.example",
        payload,
        "f.json.gz",
        ["tlsrpt@company-y.example"],
        SETTINGS,
        datetime(2016, 4, 2, 0, 30, tzinfo=UTC),
    )
    assert b"\n" not in message.replace(b"\r\n", b"")  # CRLF only
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert (
        parsed["Subject"]
        == "Report Domain: company-y.example Submitter: company-x.example Report-ID: <id1@company-x.example>"
    )
    assert parsed["TLS-Report-Domain"] == "company-y.example"
    assert parsed["TLS-Report-Submitter"] == "company-x.example"
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    assert parts[1].get_filename() == "f.json.gz"
    assert parts[1].get_content() == payload
    assert base64.b64decode(str(parts[1].get_payload())) == payload


# ------------------------------------------------------------------------------------ counting


class _Store:
    def __init__(self) -> None:
        self.added: list[list[TlsResultCount]] = []

    async def add_tls_results(self, counts: list[TlsResultCount]) -> None:
        self.added.append(list(counts))


def _sts_policy() -> TlsPolicy:
    policy = from_sts(StsPolicy(StsMode.ENFORCE, 86400, ("mx.example.net", "*.example.net")))
    assert policy is not None
    return policy


async def test_reporter_aggregates_equal_sessions_per_day() -> None:
    store = _Store()
    now = [datetime(2026, 12, 7, 23, 59, tzinfo=UTC)]
    reporter = StoreTlsReporter(store, lambda: now[0])  # type: ignore[arg-type]
    sts = _sts_policy()
    reporter.success("Example.NET", sts, "mx.example.net")
    reporter.success("example.net", sts, "mx.example.net")
    for _ in range(3):
        reporter.failure(
            "example.net",
            sts,
            TlsFailure("MX.example.net", "certificate-host-mismatch", "x" * 1000, "192.0.2.1", "192.0.2.9"),
        )
    reporter.failure("example.net", REQUIRE_TLS, TlsFailure("mx.example.net", "starttls-not-supported", "no"))
    now[0] = datetime(2026, 12, 8, 0, 1, tzinfo=UTC)  # the next UTC day: a new key
    reporter.success("example.net", sts, "mx.example.net")
    await reporter.flush()
    await reporter.flush()  # nothing more to write: no second write
    assert len(store.added) == 1
    got = {(c.key.day, c.key.policy_type, c.key.result_type): c for c in store.added[0]}
    lines = "version: STSv1\nmode: enforce\nmx: mx.example.net\nmx: *.example.net\nmax_age: 86400"
    success = TlsResultKey("2026-12-07", "example.net", "sts", lines, "mx.example.net\n*.example.net")
    assert got[("2026-12-07", "sts", "")] == TlsResultCount(success, 2)
    failure = got[("2026-12-07", "sts", "certificate-host-mismatch")]
    assert failure.sessions == 3
    assert (failure.key.receiving_mx_hostname, failure.key.receiving_ip, failure.key.sending_mta_ip) == (
        "mx.example.net", "192.0.2.1", "192.0.2.9",
    )  # fmt: skip
    assert len(failure.key.failure_reason_code) == 300  # MAX_REASON
    assert got[("2026-12-07", "no-policy-found", "starttls-not-supported")].key.policy_string == ""
    assert got[("2026-12-08", "sts", "")].sessions == 1


def test_tlsa_policy_key_lists_the_hosts_records() -> None:
    record = TLSARecord(3, 1, 1, bytes(range(32)))
    policy = TlsPolicy(TlsPolicyKind.DANE, enforce=True, dane={"mx.example.net": DaneHost((record,))})
    key = policy_key("2026-12-07", "example.net", policy, "mx.example.net")
    assert (key.policy_type, key.policy_string, key.mx_host) == (
        "tlsa",
        "3 1 1 " + bytes(range(32)).hex(),
        "mx.example.net",
    )
