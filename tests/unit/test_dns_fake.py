"""The dict-backed FakeResolver behaves like the DNS the Resolver contract describes."""

from __future__ import annotations

import pytest

from surat.dns.base import DNSError, DNSErrorKind, MXRecord, Resolver
from surat.dns.fake import FakeResolver


def fake() -> FakeResolver:
    return FakeResolver(
        {
            ("Example.COM.", "MX"): [MXRecord(20, "MX2.example.com."), MXRecord(10, "mx1.example.com")],
            ("example.com", "TXT"): ["v=spf1 -all"],
            ("mx1.example.com", "A"): ["192.0.2.1"],
            ("www.example.com", "CNAME"): "example.com",
            ("alias.example.com", "CNAME"): "www.example.com",
            ("loop.example", "CNAME"): "loop.example",
            ("broken.example", "MX"): DNSErrorKind.TEMPORARY,
            ("gone.example", "A"): DNSErrorKind.NXDOMAIN,
            ("192.0.2.1", "PTR"): ["mx1.example.com"],
            ("single.example", "A"): "192.0.2.9",
        }
    )


async def test_answers() -> None:
    resolver: Resolver = fake()
    # sorted by preference, normalised as the Resolver contract says
    assert await resolver.mx("example.com") == [
        MXRecord(10, "mx1.example.com"),
        MXRecord(20, "mx2.example.com"),
    ]
    assert await resolver.txt("EXAMPLE.com.") == ["v=spf1 -all"]
    assert await resolver.a("mx1.example.com") == ["192.0.2.1"]
    assert await resolver.ptr("192.0.2.1") == ["mx1.example.com"]
    assert await resolver.a("single.example") == ["192.0.2.9"]


async def test_nodata_and_nxdomain() -> None:
    resolver = fake()
    assert await resolver.aaaa("mx1.example.com") == []  # the name exists: NODATA
    with pytest.raises(DNSError) as info:
        await resolver.a("nothere.example")
    assert info.value.kind is DNSErrorKind.NXDOMAIN


async def test_errors_and_cnames() -> None:
    resolver = fake()
    with pytest.raises(DNSError) as info:
        await resolver.mx("broken.example")
    assert info.value.kind is DNSErrorKind.TEMPORARY
    with pytest.raises(DNSError) as info:
        await resolver.a("gone.example")
    assert info.value.kind is DNSErrorKind.NXDOMAIN
    assert await resolver.txt("alias.example.com") == ["v=spf1 -all"]  # two CNAMEs followed
    with pytest.raises(DNSError) as info:
        await resolver.a("loop.example")
    assert info.value.kind is DNSErrorKind.TEMPORARY
    assert resolver.queries[0] == ("broken.example", "MX")


async def test_mutation_and_validation() -> None:
    resolver = fake()
    resolver.set("new.example", "aaaa", ["2001:db8::5"])
    assert await resolver.aaaa("new.example") == ["2001:db8::5"]
    (await resolver.a("mx1.example.com")).append("x")
    assert await resolver.a("mx1.example.com") == ["192.0.2.1"]
    with pytest.raises(ValueError):
        resolver.set("x.example", "SRV", ["x"])
    with pytest.raises(ValueError):
        resolver.set("x.example", "CNAME", ["a", "b"])
    resolver.set("bad.example", "MX", ["not an MXRecord"])
    with pytest.raises(TypeError):
        await resolver.mx("bad.example")
