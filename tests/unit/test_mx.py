"""MX resolution (RFC 5321 §5.1, RFC 7505) and configured next hops, over the FakeResolver."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from surat.config import HostPort
from surat.delivery.mx import (
    Host,
    Route,
    RouteFailure,
    RouteKind,
    Target,
    is_public_address,
    refuse_private,
    resolve_targets,
)
from surat.dns.base import DNSErrorKind, MXRecord
from surat.dns.fake import FakeResolver, FakeValue
from surat.proto.smtp.replies import DNS_TEMPORARY, DOMAIN_NOT_FOUND, MAIL_LOOP, NO_ADDRESS, NULL_MX

T = DNSErrorKind.TEMPORARY
NX = DNSErrorKind.NXDOMAIN
LOCAL = ("mail.example.org",)

ZONE: dict[tuple[str, str], FakeValue] = {
    # two MX hosts, v4 and v6
    ("example.com", "MX"): [MXRecord(20, "mx2.example.com"), MXRecord(10, "mx1.example.com")],
    ("mx1.example.com", "AAAA"): ["2001:db8::1"],
    ("mx1.example.com", "A"): ["192.0.2.1", "192.0.2.11"],
    ("mx2.example.com", "A"): ["192.0.2.2"],
    # no MX: implicit MX
    ("implicit.example", "A"): ["192.0.2.3"],
    ("implicit.example", "TXT"): ["v=spf1 -all"],
    # no MX, no address
    ("txtonly.example", "TXT"): ["hello"],
    # null MX
    ("nullmx.example", "MX"): [MXRecord(0, "")],
    # a "." among real MX records is skipped
    ("mixed.example", "MX"): [MXRecord(0, ""), MXRecord(10, "mx1.example.com")],
    # DNS failures
    ("servfail.example", "MX"): T,
    ("nxdomain.example", "MX"): NX,
    # MX host whose address lookups fail
    ("flaky.example", "MX"): [MXRecord(10, "down.flaky.example"), MXRecord(20, "mx2.example.com")],
    ("down.flaky.example", "A"): T,
    ("down.flaky.example", "AAAA"): T,
    ("allflaky.example", "MX"): [MXRecord(10, "down.flaky.example")],
    ("ghost.example", "MX"): [MXRecord(10, "nothere.ghost.example")],
    # CNAME to the MX host (not allowed by RFC 5321 §5.1, followed anyway)
    ("alias.example", "MX"): [MXRecord(10, "mx.alias.example")],
    ("mx.alias.example", "CNAME"): "mx2.example.com",
    # loops: we are an MX
    ("loop.example", "MX"): [MXRecord(10, "mail.example.org")],
    ("backup.example", "MX"): [MXRecord(5, "mx1.example.com"), MXRecord(10, "MAIL.example.org.")],
    ("mail.example.org", "A"): ["192.0.2.99"],
    # a route target by name
    ("relay.internal", "A"): ["192.0.2.50"],
}


async def resolve(domain: str, **kwargs: object) -> Route | RouteFailure:
    options: dict[str, object] = {"local_hostnames": LOCAL, "rng": random.Random(1)}
    options.update(kwargs)
    return await resolve_targets(FakeResolver(ZONE), domain, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "kind", "hosts"),
    [
        (
            "example.com",
            RouteKind.MX,
            [
                ("mx1.example.com", ("2001:db8::1", "192.0.2.1", "192.0.2.11"), 10),
                ("mx2.example.com", ("192.0.2.2",), 20),
            ],
        ),
        ("EXAMPLE.com.", RouteKind.MX, None),  # same as above: names are normalised
        ("implicit.example", RouteKind.IMPLICIT_MX, [("implicit.example", ("192.0.2.3",), 0)]),
        (
            "mixed.example",
            RouteKind.MX,
            [("mx1.example.com", ("2001:db8::1", "192.0.2.1", "192.0.2.11"), 10)],
        ),
        ("flaky.example", RouteKind.MX, [("mx2.example.com", ("192.0.2.2",), 20)]),
        ("alias.example", RouteKind.MX, [("mx.alias.example", ("192.0.2.2",), 10)]),
        # RFC 5321 §5.1: we are the less preferred MX: only the better one is a candidate
        (
            "backup.example",
            RouteKind.MX,
            [("mx1.example.com", ("2001:db8::1", "192.0.2.1", "192.0.2.11"), 5)],
        ),
        ("[192.0.2.7]", RouteKind.LITERAL, [("192.0.2.7", ("192.0.2.7",), None)]),
        ("[IPv6:2001:db8::7]", RouteKind.LITERAL, [("2001:db8::7", ("2001:db8::7",), None)]),
    ],
)
async def test_routes(
    domain: str, kind: RouteKind, hosts: list[tuple[str, tuple[str, ...], int | None]] | None
) -> None:
    result = await resolve(domain)
    assert isinstance(result, Route), result
    assert result.kind is kind
    if hosts is None:
        assert result == await resolve("example.com")
        return
    assert result.hosts == tuple(Host(name, 25, addresses, pref) for name, addresses, pref in hosts)


@pytest.mark.parametrize(
    ("domain", "reply"),
    [
        ("nullmx.example", NULL_MX),  # RFC 7505: 556 5.1.10 at once
        ("nxdomain.example", DOMAIN_NOT_FOUND),  # 5.1.2
        ("no-such-name.example", DOMAIN_NOT_FOUND),
        ("servfail.example", DNS_TEMPORARY),  # 4.4.3, retried
        ("allflaky.example", DNS_TEMPORARY),
        ("ghost.example", NO_ADDRESS),  # the MX host does not exist: 5.4.4
        ("txtonly.example", NO_ADDRESS),
        ("loop.example", MAIL_LOOP),  # 5.4.6
        ("mail.example.org", MAIL_LOOP),  # implicit MX to ourselves
        ("[300.1.2.3]", None),
    ],
)
async def test_failures(domain: str, reply: object) -> None:
    result = await resolve(domain)
    assert isinstance(result, RouteFailure), result
    if reply is not None:
        assert result.reply == reply
    assert result.permanent == (result.reply.code >= 500)


async def test_failure_permanence() -> None:
    assert (await resolve("nullmx.example")).permanent  # type: ignore[union-attr]
    assert not (await resolve("servfail.example")).permanent  # type: ignore[union-attr]
    nx = await resolve("nxdomain.example")
    assert isinstance(nx, RouteFailure) and nx.reply.enhanced == "5.1.2"
    assert NULL_MX.code == 556 and NULL_MX.enhanced == "5.1.10"
    assert MAIL_LOOP.enhanced == "5.4.6" and DNS_TEMPORARY.enhanced == "4.4.3"


async def test_equal_preferences_are_shuffled_with_the_rng() -> None:
    zone: dict[tuple[str, str], FakeValue] = {
        ("many.example", "MX"): [MXRecord(10, f"mx{i}.many.example") for i in range(6)]
        + [MXRecord(5, "first.many.example")],
        ("first.many.example", "A"): ["192.0.2.100"],
    }
    for i in range(6):
        zone[(f"mx{i}.many.example", "A")] = [f"192.0.2.{i + 1}"]
    orders = set()
    for seed in range(20):
        result = await resolve_targets(
            FakeResolver(zone), "many.example", local_hostnames=(), rng=random.Random(seed), max_hosts=10
        )
        assert isinstance(result, Route)
        names = [h.name for h in result.hosts]
        assert names[0] == "first.many.example"  # lower preference always first
        assert sorted(names[1:]) == [f"mx{i}.many.example" for i in range(6)]
        orders.add(tuple(names))
        # the same seed gives the same order
        again = await resolve_targets(
            FakeResolver(zone), "many.example", local_hostnames=(), rng=random.Random(seed), max_hosts=10
        )
        assert again == result
    assert len(orders) > 5


async def test_limits_on_hosts_and_addresses() -> None:
    result = await resolve("example.com", max_hosts=1)
    assert isinstance(result, Route) and [h.name for h in result.hosts] == ["mx1.example.com"]
    result = await resolve("example.com", max_addresses=2)
    assert isinstance(result, Route)
    assert result.targets == (
        Target("mx1.example.com", "2001:db8::1", 25),
        Target("mx1.example.com", "192.0.2.1", 25),
    )
    result = await resolve("example.com", max_addresses=4)
    assert isinstance(result, Route) and len(result.targets) == 4
    assert result.targets[-1] == Target("mx2.example.com", "192.0.2.2", 25)


async def test_ipv4_only_and_port() -> None:
    resolver = FakeResolver(ZONE)
    result = await resolve_targets(resolver, "example.com", local_hostnames=(), ipv6=False, port=2525)
    assert isinstance(result, Route)
    assert result.targets[0] == Target("mx1.example.com", "192.0.2.1", 2525)
    assert all(q[1] != "AAAA" for q in resolver.queries)


@pytest.mark.parametrize(
    ("routes", "smarthost", "domain", "expected"),
    [
        # a route beats MX lookup, and beats the smarthost
        (
            {"example.com": HostPort("127.0.0.1", 2526)},
            None,
            "example.com",
            (RouteKind.ROUTE, "127.0.0.1", 2526),
        ),
        (
            {"example.com": HostPort("127.0.0.1", 2526)},
            HostPort("192.0.2.200", 587),
            "example.com",
            (RouteKind.ROUTE, "127.0.0.1", 2526),
        ),
        ({}, HostPort("192.0.2.200", 587), "example.com", (RouteKind.SMARTHOST, "192.0.2.200", 587)),
        # the smarthost is used even for domains that do not exist in our DNS
        ({}, HostPort("192.0.2.200", 465), "nxdomain.example", (RouteKind.SMARTHOST, "192.0.2.200", 465)),
        ({}, HostPort("relay.internal", 25), "example.com", (RouteKind.SMARTHOST, "192.0.2.50", 25)),
        ({"x.example": HostPort("::1", 25)}, None, "x.example", (RouteKind.ROUTE, "::1", 25)),
        # routes are not loop-checked: an operator may route to another local port on purpose
        (
            {"loop.example": HostPort("127.0.0.1", 2526)},
            None,
            "loop.example",
            (RouteKind.ROUTE, "127.0.0.1", 2526),
        ),
    ],
)
async def test_routes_and_smarthost(
    routes: Mapping[str, HostPort],
    smarthost: HostPort | None,
    domain: str,
    expected: tuple[RouteKind, str, int],
) -> None:
    resolver = FakeResolver(ZONE)
    result = await resolve_targets(
        resolver, domain, local_hostnames=LOCAL, routes=routes, smarthost=smarthost
    )
    assert isinstance(result, Route)
    kind, address, port = expected
    assert result.kind is kind
    assert result.targets[0].address == address and result.targets[0].port == port
    assert all(q[1] != "MX" for q in resolver.queries)  # no MX lookup when configured


async def test_broken_smarthost_name_is_temporary() -> None:
    result = await resolve("example.com", smarthost=HostPort("nothere.internal", 587))
    assert isinstance(result, RouteFailure) and not result.permanent
    result = await resolve("example.com", smarthost=HostPort("down.flaky.example", 587))
    assert isinstance(result, RouteFailure) and result.reply == DNS_TEMPORARY


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # RFC 6598 shared space
        ("169.254.1.1", False),
        ("fe80::1", False),
        ("fd00::1", False),  # RFC 4193 ULA
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:8.8.8.8", True),
        ("192.0.2.1", False),  # documentation space (TEST-NET-1)
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_own_addresses_are_refused() -> None:
    assert not is_public_address("8.8.8.8", {"8.8.8.8"})


def test_refuse_private_keeps_public_addresses_and_fails_permanently_without_any() -> None:
    mixed = Route(
        "example.org",
        RouteKind.MX,
        (Host("mx1.example.org", 25, ("10.0.0.1", "8.8.8.8"), 10), Host("mx2.example.org", 25, ("::1",), 20)),
    )
    assert refuse_private(mixed) == Route(
        "example.org", RouteKind.MX, (Host("mx1.example.org", 25, ("8.8.8.8",), 10),)
    )
    literal = Route("[127.0.0.1]", RouteKind.LITERAL, (Host("127.0.0.1", 25, ("127.0.0.1",)),))
    refused = refuse_private(literal)
    assert isinstance(refused, RouteFailure)
    assert refused.permanent
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.4.4")
    assert refused.detail == "refused destination 127.0.0.1"
    # configured next hops are the operator's choice: never filtered
    for kind in (RouteKind.ROUTE, RouteKind.SMARTHOST):
        configured = Route("example.org", kind, (Host("127.0.0.1", 2525, ("127.0.0.1",)),))
        assert refuse_private(configured) is configured
