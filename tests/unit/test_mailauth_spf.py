"""SPF (surat.mailauth.spf) over a dict-backed resolver: RFC 7208 appendix examples, macros, limits."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from surat.dns.base import DNSError, DNSErrorKind, MXRecord
from surat.mailauth.spf import (
    MacroValues,
    SPFStatus,
    SPFSyntaxError,
    check_host,
    check_spf,
    expand_macros,
    parse_record,
)

Answer = list[str] | list[MXRecord] | DNSErrorKind


class DictResolver:
    """Answers from a dict {(name, type): answer}; a name with no entry of any type is NXDOMAIN."""

    def __init__(self, zone: dict[tuple[str, str], Answer], *, delay: float = 0.0) -> None:
        self.zone = {(name.lower().rstrip("."), rtype): answer for (name, rtype), answer in zone.items()}
        self.queries: list[tuple[str, str]] = []
        self.delay = delay

    async def _lookup(self, name: str, rtype: str) -> list[str] | list[MXRecord]:
        name = name.lower().rstrip(".")
        self.queries.append((name, rtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.zone.get((name, rtype))
        if isinstance(answer, DNSErrorKind):
            raise DNSError(answer, name)
        if answer is None:
            if any(known == name for known, _ in self.zone):
                return []
            raise DNSError(DNSErrorKind.NXDOMAIN, name)
        return answer

    async def mx(self, name: str) -> list[MXRecord]:
        answer = await self._lookup(name, "MX")
        return [r for r in answer if isinstance(r, MXRecord)]

    async def a(self, name: str) -> list[str]:
        return [str(r) for r in await self._lookup(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(r) for r in await self._lookup(name, "AAAA")]

    async def txt(self, name: str) -> list[str]:
        return [str(r) for r in await self._lookup(name, "TXT")]

    async def ptr(self, address: str) -> list[str]:
        reverse = ipaddress.ip_address(address).reverse_pointer
        return [str(r) for r in await self._lookup(reverse, "PTR")]


# RFC 7208 Appendix A: the example zone
APPENDIX_A: dict[tuple[str, str], Answer] = {
    ("example.com", "A"): ["192.0.2.10", "192.0.2.11"],
    ("amy.example.com", "A"): ["192.0.2.65"],
    ("bob.example.com", "A"): ["192.0.2.66"],
    ("mail-a.example.com", "A"): ["192.0.2.129"],
    ("mail-b.example.com", "A"): ["192.0.2.130"],
    ("mail-c.example.org", "A"): ["192.0.2.140"],
    ("example.com", "MX"): [MXRecord(10, "mail-a.example.com"), MXRecord(20, "mail-b.example.com")],
    ("example.org", "MX"): [MXRecord(10, "mail-c.example.org")],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["example.com"],
    ("11.2.0.192.in-addr.arpa", "PTR"): ["example.com"],
    ("65.2.0.192.in-addr.arpa", "PTR"): ["amy.example.com"],
    ("66.2.0.192.in-addr.arpa", "PTR"): ["bob.example.com"],
    ("129.2.0.192.in-addr.arpa", "PTR"): ["mail-a.example.com"],
    ("130.2.0.192.in-addr.arpa", "PTR"): ["mail-b.example.com"],
    ("140.2.0.192.in-addr.arpa", "PTR"): ["mail-c.example.org"],
    ("10.0.0.10.in-addr.arpa", "PTR"): ["mail.example.com"],
}

PROBES = ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130", "192.0.2.140"]


@pytest.mark.parametrize(
    ("record", "passing"),
    [
        # RFC 7208 Appendix A.1
        ("v=spf1 +all", set(PROBES)),
        ("v=spf1 a -all", {"192.0.2.10", "192.0.2.11"}),
        ("v=spf1 a:example.org -all", set()),
        ("v=spf1 mx -all", {"192.0.2.129", "192.0.2.130"}),
        ("v=spf1 mx:example.org -all", {"192.0.2.140"}),
        ("v=spf1 mx mx:example.org -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
        ("v=spf1 mx/30 mx:example.org/30 -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
        (
            "v=spf1 ptr -all",
            {"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130"},
        ),
        ("v=spf1 ip4:192.0.2.128/28 -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
        ("v=spf1 a/26 -all", {"192.0.2.10", "192.0.2.11"}),  # 192.0.2.0/26
        ("v=spf1 a:amy.example.com a:bob.example.com -all", {"192.0.2.65", "192.0.2.66"}),
    ],
)
async def test_appendix_a_mechanisms(record: str, passing: set[str]) -> None:
    resolver = DictResolver({**APPENDIX_A, ("example.com", "TXT"): [record]})
    for ip in PROBES:
        status, reason, _ = await check_host(resolver, ip, "example.com", "user@example.com")
        expected = SPFStatus.PASS if ip in passing else SPFStatus.FAIL
        assert status is expected, (ip, reason)


def zone(**records: str) -> dict[tuple[str, str], Answer]:
    """TXT records by domain, with '_' for '.' in keyword names: zone(example_net='v=spf1 ...')."""
    return {(name.replace("_", "."), "TXT"): [text] for name, text in records.items()}


async def spf(
    records: dict[tuple[str, str], Answer], ip: str = "192.0.2.1", domain: str = "example.org"
) -> SPFStatus:
    status, _reason, _exp = await check_host(DictResolver(records), ip, domain, f"user@{domain}")
    return status


@pytest.mark.parametrize(
    ("records", "ip", "expected"),
    [
        # qualifiers → results (RFC 7208 §4.6.2)
        (zone(example_org="v=spf1 ip4:192.0.2.1 -all"), "192.0.2.1", SPFStatus.PASS),
        (zone(example_org="v=spf1 ip4:192.0.2.1 -all"), "192.0.2.2", SPFStatus.FAIL),
        (zone(example_org="v=spf1 ip4:192.0.2.1 ~all"), "192.0.2.2", SPFStatus.SOFTFAIL),
        (zone(example_org="v=spf1 ip4:192.0.2.1 ?all"), "192.0.2.2", SPFStatus.NEUTRAL),
        (zone(example_org="v=spf1 -ip4:192.0.2.0/24 +all"), "192.0.2.2", SPFStatus.FAIL),
        (zone(example_org="v=spf1 ip4:192.0.2.1"), "192.0.2.2", SPFStatus.NEUTRAL),  # §4.7 default
        (zone(example_org="V=SPF1 IP4:192.0.2.1 -ALL"), "192.0.2.1", SPFStatus.PASS),  # case-insensitive
        (zone(example_org="v=spf1   ip4:192.0.2.1   -all  "), "192.0.2.1", SPFStatus.PASS),
        # ip6 and family separation (§5.6)
        (zone(example_org="v=spf1 ip6:2001:db8::/32 -all"), "2001:db8::5", SPFStatus.PASS),
        (zone(example_org="v=spf1 ip6:2001:db8::/32 -all"), "2001:db9::5", SPFStatus.FAIL),
        (zone(example_org="v=spf1 ip4:0.0.0.0/0 -all"), "2001:db8::5", SPFStatus.FAIL),
        (zone(example_org="v=spf1 ip6:::/0 -all"), "192.0.2.1", SPFStatus.FAIL),
        (zone(example_org="v=spf1 ip4:192.0.2.1 -all"), "::ffff:192.0.2.1", SPFStatus.PASS),  # v4-mapped
        # no record / not SPF / multiple (§4.5)
        ({}, "192.0.2.1", SPFStatus.NONE),
        (zone(example_org="some other text"), "192.0.2.1", SPFStatus.NONE),
        (zone(example_org="v=spf10 -all"), "192.0.2.1", SPFStatus.NONE),
        (
            {("example.org", "TXT"): ["v=spf1 -all", "v=spf1 +all"]},
            "192.0.2.1",
            SPFStatus.PERMERROR,
        ),
        ({("example.org", "TXT"): ["unrelated", "v=spf1 +all"]}, "192.0.2.1", SPFStatus.PASS),
        # syntax errors anywhere are permerror, even after a matching term (§4.6)
        (zone(example_org="v=spf1 +all foo"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 +all ip4:192.0.2.300"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 ip4:192.0.2.1/33 -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 ip4:192.0.2.1/08 -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 ip6:2001:db8::/129 -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 a:example.org/33 -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 include -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 redirect=a.example redirect=b.example"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 a:%{z}.example.org -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 a:example.123 -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 all:x"), "192.0.2.1", SPFStatus.PERMERROR),
        (zone(example_org="v=spf1 unknown-mod=%{d}foo +all"), "192.0.2.1", SPFStatus.PASS),  # §6 ignored
        (zone(example_org="v=spf1 unknown-mod=%{z} +all"), "192.0.2.1", SPFStatus.PERMERROR),
        # include (§5.2)
        (
            {
                **zone(
                    example_org="v=spf1 include:spf.example.net -all",
                    spf_example_net="v=spf1 ip4:192.0.2.1 -all",
                )
            },
            "192.0.2.1",
            SPFStatus.PASS,
        ),
        (
            {**zone(example_org="v=spf1 include:spf.example.net ~all", spf_example_net="v=spf1 -all")},
            "192.0.2.1",
            SPFStatus.SOFTFAIL,  # the included fail is just "no match"
        ),
        (zone(example_org="v=spf1 include:nospf.example.net -all"), "192.0.2.1", SPFStatus.PERMERROR),
        (
            {**zone(example_org="v=spf1 include:bad.example.net -all", bad_example_net="v=spf1 bogus")},
            "192.0.2.1",
            SPFStatus.PERMERROR,
        ),
        (
            {
                ("example.org", "TXT"): ["v=spf1 include:tmp.example.net -all"],
                ("tmp.example.net", "TXT"): DNSErrorKind.TEMPORARY,
            },
            "192.0.2.1",
            SPFStatus.TEMPERROR,
        ),
        # redirect (§6.1)
        (
            {**zone(example_org="v=spf1 redirect=example.net", example_net="v=spf1 ip4:192.0.2.1 -all")},
            "192.0.2.1",
            SPFStatus.PASS,
        ),
        (
            {**zone(example_org="v=spf1 redirect=example.net", example_net="v=spf1 ip4:192.0.2.1 -all")},
            "192.0.2.9",
            SPFStatus.FAIL,
        ),
        (
            {**zone(example_org="v=spf1 ip4:192.0.2.9 redirect=example.net", example_net="v=spf1 -all")},
            "192.0.2.9",
            SPFStatus.PASS,  # redirect is used only when nothing matched
        ),
        (
            {**zone(example_org="v=spf1 ?all redirect=example.net", example_net="v=spf1 -all")},
            "192.0.2.9",
            SPFStatus.NEUTRAL,  # "all" matched first, so redirect is ignored
        ),
        (zone(example_org="v=spf1 redirect=nospf.example.net"), "192.0.2.1", SPFStatus.PERMERROR),
        # exists (§5.7), always an A query
        (
            {
                **zone(example_org="v=spf1 exists:%{ir}.allow.example.net -all"),
                ("1.2.0.192.allow.example.net", "A"): ["127.0.0.2"],
            },
            "192.0.2.1",
            SPFStatus.PASS,
        ),
        (
            {
                **zone(example_org="v=spf1 exists:%{ir}.allow.example.net -all"),
                ("1.2.0.192.allow.example.net", "A"): ["127.0.0.2"],
            },
            "192.0.2.2",
            SPFStatus.FAIL,
        ),
        # temporary DNS failures (§5)
        ({("example.org", "TXT"): DNSErrorKind.TEMPORARY}, "192.0.2.1", SPFStatus.TEMPERROR),
        (
            {
                **zone(example_org="v=spf1 a:a.example.net -all"),
                ("a.example.net", "A"): DNSErrorKind.TEMPORARY,
            },
            "192.0.2.1",
            SPFStatus.TEMPERROR,
        ),
        (
            {**zone(example_org="v=spf1 mx -all"), ("example.org", "MX"): DNSErrorKind.TEMPORARY},
            "192.0.2.1",
            SPFStatus.TEMPERROR,
        ),
        # aaaa for IPv6 clients with a dual CIDR (§5.3)
        (
            {**zone(example_org="v=spf1 a//64 -all"), ("example.org", "AAAA"): ["2001:db8:1:2::1"]},
            "2001:db8:1:2::77",
            SPFStatus.PASS,
        ),
        (
            {
                **zone(example_org="v=spf1 a/24//64 -all"),
                ("example.org", "A"): ["192.0.2.200"],
                ("example.org", "AAAA"): ["2001:db8:1:2::1"],
            },
            "192.0.2.7",
            SPFStatus.PASS,
        ),
        (
            {**zone(example_org="v=spf1 a -all"), ("example.org", "A"): ["192.0.2.1"]},
            "2001:db8::1",
            SPFStatus.FAIL,
        ),
        # null MX names no host
        (
            {**zone(example_org="v=spf1 mx ip4:192.0.2.1 -all"), ("example.org", "MX"): [MXRecord(0, "")]},
            "192.0.2.1",
            SPFStatus.PASS,
        ),
    ],
)
async def test_results(records: dict[tuple[str, str], Answer], ip: str, expected: SPFStatus) -> None:
    assert await spf(records, ip) is expected


@pytest.mark.parametrize(
    "domain",
    ["localhost", "", "a..example", "x" * 64 + ".example", "[192.0.2.1]", "192.0.2.1", "a b.example"],
)
async def test_malformed_domain_is_none(domain: str) -> None:
    resolver = DictResolver({})
    status, _, _ = await check_host(resolver, "192.0.2.1", domain, "user@example.org")
    assert status is SPFStatus.NONE
    assert resolver.queries == []


# --- lookup limits (RFC 7208 §4.6.4) ---------------------------------------------------------------------


async def test_ten_includes_are_allowed_eleven_are_not() -> None:
    def chain(count: int) -> dict[tuple[str, str], Answer]:
        includes = " ".join(f"include:i{n}.example.net" for n in range(count))
        records: dict[tuple[str, str], Answer] = {
            ("example.org", "TXT"): [f"v=spf1 {includes} ip4:192.0.2.1 -all"]
        }
        for n in range(count):
            records[(f"i{n}.example.net", "TXT")] = ["v=spf1 ip4:198.51.100.1 -all"]
        return records

    assert await spf(chain(10)) is SPFStatus.PASS
    assert await spf(chain(11)) is SPFStatus.PERMERROR


async def test_lookup_limit_is_shared_across_recursion() -> None:
    # 1 redirect + 5 a + nested include with 5 a = 11 terms that query DNS
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 redirect=r.example.net"],
        ("r.example.net", "TXT"): ["v=spf1 a a a a include:inner.example.net -all"],
        ("inner.example.net", "TXT"): ["v=spf1 a a a a a a -all"],
        ("r.example.net", "A"): ["198.51.100.1"],
        ("inner.example.net", "A"): ["198.51.100.2"],
    }
    status, reason, _ = await check_host(DictResolver(records), "192.0.2.1", "example.org", "u@example.org")
    assert status is SPFStatus.PERMERROR
    assert "more than 10 DNS lookups" in reason


async def test_mechanisms_without_dns_do_not_count() -> None:
    terms = " ".join(f"ip4:198.51.100.{n}" for n in range(30))
    includes = " ".join(f"include:i{n}.example.net" for n in range(10))
    records: dict[tuple[str, str], Answer] = {("example.org", "TXT"): [f"v=spf1 {terms} {includes} all"]}
    for n in range(10):
        records[(f"i{n}.example.net", "TXT")] = ["v=spf1 -all"]
    assert await spf(records) is SPFStatus.PASS


@pytest.mark.parametrize(
    "record",
    ["v=spf1 include:example.org -all", "v=spf1 redirect=example.org"],
)
async def test_loops_end_in_permerror(record: str) -> None:
    resolver = DictResolver({("example.org", "TXT"): [record]})
    status, reason, _ = await check_host(resolver, "192.0.2.1", "example.org", "u@example.org")
    assert status is SPFStatus.PERMERROR
    assert "more than 10 DNS lookups" in reason
    assert len(resolver.queries) <= 11


async def test_mutual_include_loop() -> None:
    records = zone(
        example_org="v=spf1 include:example.net -all", example_net="v=spf1 include:example.org -all"
    )
    assert await spf(records) is SPFStatus.PERMERROR


async def test_void_lookup_limit() -> None:
    two = zone(example_org="v=spf1 a:v1.example.net exists:v2.example.net ip4:192.0.2.1 -all")
    three = zone(
        example_org="v=spf1 a:v1.example.net exists:v2.example.net mx:v3.example.net ip4:192.0.2.1 -all"
    )
    assert await spf(two) is SPFStatus.PASS
    status, reason, _ = await check_host(DictResolver(three), "192.0.2.1", "example.org", "u@example.org")
    assert status is SPFStatus.PERMERROR
    assert "void" in reason


async def test_nodata_is_a_void_lookup_too() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 a:n.example.net a:n.example.net a:n.example.net ip4:192.0.2.1 -all"],
        ("n.example.net", "TXT"): ["not spf"],  # exists, but has no A records
    }
    assert await spf(records) is SPFStatus.PERMERROR


async def test_more_than_ten_mx_names_is_permerror() -> None:
    def mx_zone(count: int) -> dict[tuple[str, str], Answer]:
        records: dict[tuple[str, str], Answer] = {
            ("example.org", "TXT"): ["v=spf1 mx -all"],
            ("example.org", "MX"): [MXRecord(n, f"mx{n}.example.org") for n in range(count)],
        }
        for n in range(count):
            records[(f"mx{n}.example.org", "A")] = [f"198.51.100.{n}"]
        records[(f"mx{count - 1}.example.org", "A")] = ["192.0.2.1"]
        return records

    assert await spf(mx_zone(10)) is SPFStatus.PASS
    assert await spf(mx_zone(11)) is SPFStatus.PERMERROR


async def test_ptr_considers_at_most_ten_names() -> None:
    names = [f"h{n}.other.example" for n in range(10)] + ["mail.example.org"]
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 ptr -all"],
        ("1.2.0.192.in-addr.arpa", "PTR"): names,
        ("mail.example.org", "A"): ["192.0.2.1"],
    }
    assert await spf(records) is SPFStatus.FAIL
    records[("1.2.0.192.in-addr.arpa", "PTR")] = names[-1:]
    assert await spf(records) is SPFStatus.PASS


async def test_ptr_requires_forward_confirmation_and_errors_do_not_match() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 ptr ?all"],
        ("1.2.0.192.in-addr.arpa", "PTR"): ["mail.example.org"],
        ("mail.example.org", "A"): ["192.0.2.99"],  # forward lookup does not confirm
    }
    assert await spf(records) is SPFStatus.NEUTRAL
    records[("1.2.0.192.in-addr.arpa", "PTR")] = DNSErrorKind.TEMPORARY
    assert await spf(records) is SPFStatus.NEUTRAL


async def test_overall_timeout_is_temperror() -> None:
    resolver = DictResolver(zone(example_org="v=spf1 a -all"), delay=0.2)
    status, reason, _ = await check_host(resolver, "192.0.2.1", "example.org", "u@example.org", timeout=0.05)
    assert status is SPFStatus.TEMPERROR
    assert "longer than" in reason


# --- exp= (RFC 7208 §6.2) ---------------------------------------------------------------------------------


async def test_explanation_on_fail() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.1 -all exp=explain._spf.%{d}"],
        ("explain._spf.example.org", "TXT"): ["%{i} is not one of %{d}'s designated mail servers."],
    }
    resolver = DictResolver(records)
    status, _, explanation = await check_host(resolver, "192.0.2.9", "example.org", "u@example.org")
    assert status is SPFStatus.FAIL
    assert explanation == "192.0.2.9 is not one of example.org's designated mail servers."
    status, _, explanation = await check_host(resolver, "192.0.2.1", "example.org", "u@example.org")
    assert (status, explanation) == (SPFStatus.PASS, "")


async def test_explanation_trouble_means_no_explanation() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 -all exp=missing.example.org"],
    }
    status, _, explanation = await check_host(
        DictResolver(records), "192.0.2.9", "example.org", "u@example.org"
    )
    assert (status, explanation) == (SPFStatus.FAIL, "")


async def test_redirect_uses_the_target_explanation_not_the_original() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 exp=orig.example.org redirect=example.net"],
        ("example.net", "TXT"): ["v=spf1 -all exp=target.example.net"],
        ("orig.example.org", "TXT"): ["original"],
        ("target.example.net", "TXT"): ["from the target"],
    }
    _, _, explanation = await check_host(DictResolver(records), "192.0.2.9", "example.org", "u@example.org")
    assert explanation == "from the target"


# --- macros (RFC 7208 §7.4 examples) ----------------------------------------------------------------------

V4 = MacroValues(
    "strong-bad@email.example.com", "email.example.com", ipaddress.ip_address("192.0.2.3"), "mx.example.org"
)
V6 = MacroValues(
    "strong-bad@email.example.com",
    "email.example.com",
    ipaddress.ip_address("2001:db8::cb01"),
    "mx.example.org",
)


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ("%{h}", "mx.example.org"),
        ("%%%_%-", "% %20"),
        ("%{L}", "strong-bad"),
        ("%{S}", "strong-bad%40email.example.com"),  # upper case → URL-escaped
        ("%{p}", "unknown"),
    ],
)
def test_macro_examples_ipv4(macro: str, expansion: str) -> None:
    assert expand_macros(macro, V4) == expansion


def test_macro_example_ipv6() -> None:
    assert expand_macros("%{ir}.%{v}._spf.%{d2}", V6) == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


@pytest.mark.parametrize("bad", ["%", "%x", "%{", "%{d", "%{q}", "%{d0}", "%{c}", "%{r}", "%{t}", "a b"])
def test_macro_syntax_errors(bad: str) -> None:
    with pytest.raises(SPFSyntaxError):
        expand_macros(bad, V4)


def test_exp_only_letters_in_explanations() -> None:
    assert expand_macros("%{c} via %{r}", V4, exp=True) == "192.0.2.3 via unknown"
    assert expand_macros("%{t}", V4, exp=True).isdigit()


async def test_macro_in_include_target_and_long_names_are_truncated() -> None:
    long_local = ".".join(["abcdefghij"] * 30)  # expands beyond 253 characters
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 exists:%{l}.x.example.org -all"],
    }
    resolver = DictResolver(records)
    await check_host(resolver, "192.0.2.1", "example.org", f"{long_local}@example.org")
    queried = [name for name, rtype in resolver.queries if rtype == "A"]
    assert len(queried) == 1
    assert len(queried[0]) <= 253
    assert queried[0].endswith(".x.example.org")


# --- parser -------------------------------------------------------------------------------------------------


def test_parse_record_structure() -> None:
    record = parse_record(
        "v=spf1 mx/24//64 -a:%{d}.example.com ~include:_spf.example.net ip6:2001:db8::/32 redirect=x.example"
    )
    assert [m.text() for m in record.mechanisms] == [
        "mx/24//64",
        "-a:%{d}.example.com",
        "~include:_spf.example.net",
        "ip6:2001:db8::/32",
    ]
    assert record.redirect == "x.example"


# --- check_spf: MAIL FROM vs HELO ------------------------------------------------------------------------


async def test_check_spf_uses_mail_from() -> None:
    resolver = DictResolver(zone(example_org="v=spf1 ip4:192.0.2.1 -all", helo_example_net="v=spf1 -all"))
    result = await check_spf(resolver, "192.0.2.1", "example.org", "helo.example.net", sender="a@example.org")
    assert (result.result, result.domain, result.identity, result.sender) == (
        SPFStatus.PASS,
        "example.org",
        "mailfrom",
        "a@example.org",
    )
    assert "ip4:192.0.2.1" in result.reason


async def test_null_sender_checks_helo_with_postmaster() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("mail.example.net", "TXT"): ["v=spf1 exists:%{l}.%{o}.check.example -all"],
        ("postmaster.mail.example.net.check.example", "A"): ["127.0.0.1"],
    }
    result = await check_spf(DictResolver(records), "192.0.2.1", "", "mail.example.net", sender="")
    assert (result.result, result.identity, result.domain) == (SPFStatus.PASS, "helo", "mail.example.net")
    assert result.sender == "postmaster@mail.example.net"


async def test_null_sender_with_address_literal_helo_is_none() -> None:
    result = await check_spf(DictResolver({}), "192.0.2.1", "", "[192.0.2.1]", sender="")
    assert result.result is SPFStatus.NONE


async def test_fail_carries_explanation() -> None:
    records: dict[tuple[str, str], Answer] = {
        ("example.org", "TXT"): ["v=spf1 -all exp=e.example.org"],
        ("e.example.org", "TXT"): ["see https://example.org/spf for %{s}"],
    }
    result = await check_spf(
        DictResolver(records), "192.0.2.1", "example.org", "h.example", sender="x@example.org"
    )
    assert result.result is SPFStatus.FAIL
    assert result.explanation == "see https://example.org/spf for x@example.org"
