"""DMARC (surat.mailauth.dmarc): discovery, alignment, policy, pct, From handling."""

from __future__ import annotations

import pytest

from surat.dns.base import DNSErrorKind
from surat.dns.fake import FakeResolver
from surat.mailauth.dkim_canon import parse_message
from surat.mailauth.dkim_verify import DKIMResult, DKIMStatus
from surat.mailauth.dmarc import (
    MAX_FROM_DOMAINS,
    DMARCRecordError,
    DMARCStatus,
    Policy,
    aligned,
    check_dmarc,
    from_domains,
    organizational_domain,
    parse_record,
)
from surat.mailauth.spf import SPFResult, SPFStatus


def spf_result(domain: str, status: SPFStatus = SPFStatus.PASS) -> SPFResult:
    return SPFResult(status, domain, "mailfrom", f"bounce@{domain}", "test")


def dkim_result(domain: str, status: DKIMStatus = DKIMStatus.PASS) -> DKIMResult:
    return DKIMResult(status, domain, "sel", "")


def policy_zone(**records: str) -> FakeResolver:
    """_dmarc TXT records by domain (keyword names use '_' for '.')."""
    return FakeResolver({(f"_dmarc.{name.replace('_', '.')}", "TXT"): [txt] for name, txt in records.items()})


def never_sampled_out() -> float:
    return 0.0


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("mail.example.com", "example.com"),
        ("a.b.c.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
        ("com", "com"),
        ("Mail.Example.COM.", "example.com"),
        (
            "foo.github.io",
            "foo.github.io",
        ),  # private-section suffixes count (RFC 7489 §3.2 uses the whole PSL)
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identity", "author", "strict", "expected"),
    [
        ("example.com", "example.com", True, True),
        ("mail.example.com", "example.com", True, False),
        ("mail.example.com", "example.com", False, True),
        ("example.com", "news.example.com", False, True),
        ("a.example.com", "b.example.com", False, True),
        ("example.net", "example.com", False, False),
        ("example.co.uk", "other.co.uk", False, False),
        ("EXAMPLE.com.", "example.COM", True, True),
        ("", "example.com", False, False),
    ],
)
def test_alignment(identity: str, author: str, strict: bool, expected: bool) -> None:
    assert aligned(identity, author, strict=strict) is expected


def test_parse_record() -> None:
    record = parse_record(
        "v=DMARC1; p=quarantine; sp=reject; pct=30; adkim=s; aspf=s; rua=mailto:d@example.com,bad; t=n"
    )
    assert record.policy is Policy.QUARANTINE
    assert record.subdomain_policy is Policy.REJECT
    assert (record.pct, record.adkim_strict, record.aspf_strict, record.testing) == (30, True, True, False)
    assert record.rua == ("mailto:d@example.com",)


@pytest.mark.parametrize(
    ("txt", "policy", "pct"),
    [
        ("v=DMARC1; p=reject", Policy.REJECT, 100),
        ("v=DMARC1;p=NONE;", Policy.NONE, 100),
        ("v = DMARC1 ; p = quarantine ; pct = 5", Policy.QUARANTINE, 5),
        ("v=DMARC1; p=reject; pct=abc", Policy.REJECT, 100),  # invalid optional values → defaults
        ("v=DMARC1; p=reject; pct=250", Policy.REJECT, 100),
        ("v=DMARC1; p=reject; unknown=tag", Policy.REJECT, 100),
        ("v=DMARC1; p=bogus; rua=mailto:agg@example.com", Policy.NONE, 100),  # RFC 7489 §6.6.3 step 6
        ("v=DMARC1; rua=mailto:agg@example.com", Policy.NONE, 100),
    ],
)
def test_parse_record_values(txt: str, policy: Policy, pct: int) -> None:
    record = parse_record(txt)
    assert (record.policy, record.pct) == (policy, pct)


@pytest.mark.parametrize(
    "txt",
    ["v=DMARC1", "v=DMARC1; p=bogus", "v=DMARC1; p=reject; =x", "p=reject; v=DMARC1", "v=DMARC2; p=reject"],
)
def test_parse_record_errors(txt: str) -> None:
    with pytest.raises(DMARCRecordError):
        parse_record(txt)


# --- policy outcomes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "spf", "dkim", "status", "policy"),
    [
        # aligned identities pass whatever the policy
        ("reject", spf_result("example.com"), [], DMARCStatus.PASS, Policy.NONE),
        ("reject", None, [dkim_result("example.com")], DMARCStatus.PASS, Policy.NONE),
        ("reject", spf_result("bounces.example.com"), [], DMARCStatus.PASS, Policy.NONE),  # relaxed
        ("reject", None, [dkim_result("mail.example.com")], DMARCStatus.PASS, Policy.NONE),
        # unaligned or failing identities fail with the requested policy
        ("reject", spf_result("example.net"), [dkim_result("example.net")], DMARCStatus.FAIL, Policy.REJECT),
        ("quarantine", spf_result("example.net"), [], DMARCStatus.FAIL, Policy.QUARANTINE),
        ("none", spf_result("example.net"), [], DMARCStatus.FAIL, Policy.NONE),
        ("reject", spf_result("example.com", SPFStatus.SOFTFAIL), [], DMARCStatus.FAIL, Policy.REJECT),
        ("reject", spf_result("example.com", SPFStatus.NEUTRAL), [], DMARCStatus.FAIL, Policy.REJECT),
        ("reject", None, [dkim_result("example.com", DKIMStatus.FAIL)], DMARCStatus.FAIL, Policy.REJECT),
        ("reject", None, [dkim_result("example.com", DKIMStatus.TEMPERROR)], DMARCStatus.FAIL, Policy.REJECT),
        (
            "reject",
            None,
            [dkim_result("example.com", DKIMStatus.FAIL), dkim_result("example.com")],
            DMARCStatus.PASS,
            Policy.NONE,
        ),
        ("reject", None, [], DMARCStatus.FAIL, Policy.REJECT),
    ],
)
async def test_policy(
    p: str, spf: SPFResult | None, dkim: list[DKIMResult], status: DMARCStatus, policy: Policy
) -> None:
    resolver = policy_zone(example_com=f"v=DMARC1; p={p}")
    result = await check_dmarc(resolver, ["example.com"], spf, dkim, rng=never_sampled_out)
    assert (result.status, result.policy) == (status, policy), result.reason
    assert result.from_domain == "example.com"
    assert result.record_domain == "example.com"


async def test_strict_alignment() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=reject; adkim=s; aspf=s")
    sub_spf = spf_result("bounces.example.com")
    sub_dkim = [dkim_result("mail.example.com")]
    result = await check_dmarc(resolver, ["example.com"], sub_spf, sub_dkim, rng=never_sampled_out)
    assert (result.status, result.policy) == (DMARCStatus.FAIL, Policy.REJECT)
    exact = await check_dmarc(resolver, ["example.com"], spf_result("example.com"), [], rng=never_sampled_out)
    assert exact.status is DMARCStatus.PASS
    assert exact.spf_aligned and not exact.dkim_aligned


async def test_aligned_flags_and_domain() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=reject")
    result = await check_dmarc(
        resolver,
        ["example.com"],
        spf_result("example.net"),
        [dkim_result("example.net"), dkim_result("news.example.com")],
        rng=never_sampled_out,
    )
    assert result.status is DMARCStatus.PASS
    assert (result.spf_aligned, result.dkim_aligned, result.dkim_domain) == (False, True, "news.example.com")


# --- discovery ----------------------------------------------------------------------------------------------


async def test_subdomain_uses_org_record_and_sp() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=none; sp=reject")
    result = await check_dmarc(resolver, ["news.example.com"], None, [], rng=never_sampled_out)
    assert (result.status, result.policy, result.record_domain) == (
        DMARCStatus.FAIL,
        Policy.REJECT,
        "example.com",
    )
    assert resolver.queries == [("_dmarc.news.example.com", "TXT"), ("_dmarc.example.com", "TXT")]
    # the organizational domain itself gets p, not sp
    result = await check_dmarc(resolver, ["example.com"], None, [], rng=never_sampled_out)
    assert result.policy is Policy.NONE


async def test_subdomain_without_sp_gets_p() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=quarantine; sp=bogus")
    result = await check_dmarc(resolver, ["a.b.example.com"], None, [], rng=never_sampled_out)
    assert result.policy is Policy.QUARANTINE


async def test_subdomain_own_record_wins() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=reject", news_example_com="v=DMARC1; p=none")
    result = await check_dmarc(resolver, ["news.example.com"], None, [], rng=never_sampled_out)
    assert (result.policy, result.record_domain) == (Policy.NONE, "news.example.com")


async def test_no_record_is_none() -> None:
    resolver = FakeResolver({("_dmarc.example.com", "TXT"): ["v=spf1 -all", "something else"]})
    result = await check_dmarc(resolver, ["mail.example.com"], None, [], rng=never_sampled_out)
    assert (result.status, result.policy) == (DMARCStatus.NONE, Policy.NONE)


async def test_no_record_at_a_public_suffix_asks_once() -> None:
    resolver = FakeResolver()
    result = await check_dmarc(resolver, ["co.uk"], None, [], rng=never_sampled_out)
    assert result.status is DMARCStatus.NONE
    assert resolver.queries == [("_dmarc.co.uk", "TXT")]


@pytest.mark.parametrize(
    "records",
    [
        ["v=DMARC1; p=bogus"],
        ["v=DMARC1; p=reject", "v=DMARC1; p=none"],  # RFC 7489 §6.6.3 step 5
    ],
)
async def test_invalid_records_are_permerror_without_policy(records: list[str]) -> None:
    resolver = FakeResolver({("_dmarc.example.com", "TXT"): records})
    result = await check_dmarc(resolver, ["example.com"], None, [], rng=never_sampled_out)
    assert (result.status, result.policy) == (DMARCStatus.PERMERROR, Policy.NONE)


async def test_temporary_dns_failure_is_temperror() -> None:
    resolver = FakeResolver({("_dmarc.example.com", "TXT"): DNSErrorKind.TEMPORARY})
    result = await check_dmarc(resolver, ["mail.example.com"], None, [], rng=never_sampled_out)
    assert (result.status, result.policy) == (DMARCStatus.TEMPERROR, Policy.NONE)


# --- pct and t= ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "sample", "policy"),
    [
        ("v=DMARC1; p=reject; pct=30", 0.29, Policy.REJECT),
        ("v=DMARC1; p=reject; pct=30", 0.30, Policy.QUARANTINE),  # outside the sample: one step milder
        ("v=DMARC1; p=quarantine; pct=30", 0.99, Policy.NONE),
        ("v=DMARC1; p=quarantine; pct=30", 0.0, Policy.QUARANTINE),
        ("v=DMARC1; p=reject; pct=0", 0.0, Policy.QUARANTINE),
        ("v=DMARC1; p=reject; pct=100", 0.999, Policy.REJECT),
        ("v=DMARC1; p=reject; t=y", 0.0, Policy.QUARANTINE),
        ("v=DMARC1; p=quarantine; t=y", 0.0, Policy.NONE),
    ],
)
async def test_sampling(record: str, sample: float, policy: Policy) -> None:
    resolver = policy_zone(example_com=record)
    result = await check_dmarc(resolver, ["example.com"], None, [], rng=lambda: sample)
    assert result.status is DMARCStatus.FAIL
    assert result.policy is policy
    assert result.requested_policy is parse_record(record).policy


async def test_pct_sampling_rate() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=reject; pct=25")
    samples = iter(n / 200 for n in range(200))
    applied = [
        (await check_dmarc(resolver, ["example.com"], None, [], rng=lambda: next(samples))).policy
        for _ in range(200)
    ]
    assert applied.count(Policy.REJECT) == 50
    assert applied.count(Policy.QUARANTINE) == 150


# --- From addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "domains"),
    [
        (b"From: Alice <alice@Example.COM>\r\n\r\nbody", ["example.com"]),
        (b"From: a@example.com, b@example.net\r\n\r\n", ["example.com", "example.net"]),
        (b"From: a@example.com\r\nFrom: c@example.org\r\n\r\n", ["example.com", "example.org"]),
        (b'From: "Team, Sales"\r\n <sales@example.com>\r\nTo: x@y.example\r\n\r\n', ["example.com"]),
        (b"from:a@example.com,A <a@EXAMPLE.com>\n\nbody From: x@evil.example", ["example.com"]),
        (b"To: x@example.com\r\n\r\n", []),
        (b"From: undisclosed\r\n\r\n", []),
        ("From: a@bücher.example\r\n\r\n".encode(), ["xn--bcher-kva.example"]),
        (b"From: <bench@Sender.Test>\r\n\r\n", ["sender.test"]),
        (b"From: Plain Name <a@example.com.>\r\n\r\n", ["example.com"]),
        (b"From: x@a.example (comment <y@b.example>)\r\n\r\n", ["a.example"]),
        (b'From: "a@evil.example" <a@good.example>\r\n\r\n', ["good.example"]),
        (b"From: Name <a@one.example> <b@two.example>\r\n\r\n", ["one.example", "two.example"]),
    ],
)
def test_from_domains(header: bytes, domains: list[str]) -> None:
    assert from_domains(header) == domains
    # the header section split once for DKIM gives the same answer (and the plain forms skip the full parser)
    assert from_domains(header, parse_message(header)) == domains


async def test_multiple_from_domains_take_the_most_severe() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=none", example_net="v=DMARC1; p=reject")
    dkim = [dkim_result("example.com")]
    result = await check_dmarc(resolver, ["example.com", "example.net"], None, dkim, rng=never_sampled_out)
    assert (result.status, result.policy, result.from_domain) == (
        DMARCStatus.FAIL,
        Policy.REJECT,
        "example.net",
    )
    both = [dkim_result("example.com"), dkim_result("example.net")]
    result = await check_dmarc(resolver, ["example.com", "example.net"], None, both, rng=never_sampled_out)
    assert result.status is DMARCStatus.PASS


async def test_same_domain_twice_is_one_evaluation() -> None:
    resolver = policy_zone(example_com="v=DMARC1; p=reject")
    result = await check_dmarc(resolver, ["example.com", "EXAMPLE.com."], None, [], rng=never_sampled_out)
    assert result.status is DMARCStatus.FAIL
    assert resolver.queries == [("_dmarc.example.com", "TXT")]


async def test_no_from_domain_is_permerror() -> None:
    result = await check_dmarc(FakeResolver(), [], None, [], rng=never_sampled_out)
    assert result.status is DMARCStatus.PERMERROR


async def test_from_with_too_many_domains_is_refused_without_asking_dns() -> None:
    # RFC 7489 §6.6.1: a receiver may reject mail whose author it cannot establish; asking DNS about
    # every domain of a From field naming thousands is what an attacker would want
    resolver = policy_zone(example_com="v=DMARC1; p=none")
    domains = [f"d{n}.example" for n in range(MAX_FROM_DOMAINS)] + ["example.com"]
    result = await check_dmarc(resolver, domains, None, [], rng=never_sampled_out)
    assert (result.status, result.policy) == (DMARCStatus.FAIL, Policy.REJECT)
    assert "more than" in result.reason
    assert resolver.queries == []
    # up to the limit, every domain is evaluated
    result = await check_dmarc(resolver, domains[1:], None, [], rng=never_sampled_out)
    assert (result.status, result.policy, result.from_domain) == (
        DMARCStatus.FAIL,
        Policy.NONE,
        "example.com",
    )
    assert len(resolver.queries) >= MAX_FROM_DOMAINS
