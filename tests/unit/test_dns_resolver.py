"""DnsResolver against a real DNS server: a small dnspython-based UDP+TCP server started by each
test on 127.0.0.1 (ephemeral port), serving a fixed zone plus SERVFAIL, dropped queries,
CNAME chains and answers too large for UDP (the resolver retries over TCP)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from surat.config import HostPort
from surat.dns.base import DNSError, DNSErrorKind, MXRecord
from surat.dns.resolver import DnsResolver

BIG_TXT = " ".join(f'"{chr(97 + i % 26) * 250}"' for i in range(8))  # ~2 KB: over 512 octets

RECORDS: dict[tuple[str, str], tuple[int, list[str]]] = {
    ("example.test.", "MX"): (300, ["20 MX2.Example.Test.", "10 mx1.example.test."]),
    ("example.test.", "A"): (300, ["192.0.2.10"]),
    ("example.test.", "TXT"): (300, ['"v=spf1 " "-all"', '"second record"']),
    ("mx1.example.test.", "A"): (60, ["192.0.2.1", "192.0.2.2"]),
    ("mx1.example.test.", "AAAA"): (60, ["2001:db8::1"]),
    ("nullmx.test.", "MX"): (300, ["0 ."]),
    ("www.example.test.", "CNAME"): (30, ["example.test."]),
    ("far.example.test.", "CNAME"): (30, ["mx1.example.test."]),  # answered without the target
    ("loop1.test.", "CNAME"): (30, ["loop2.test."]),
    ("loop2.test.", "CNAME"): (30, ["loop1.test."]),
    ("big.test.", "TXT"): (300, [BIG_TXT]),
    ("10.2.0.192.in-addr.arpa.", "PTR"): (300, ["Host.Example.Test."]),
    ("short.test.", "A"): (5, ["192.0.2.5"]),
}
NO_CHASE = {"far.example.test.", "loop1.test.", "loop2.test."}
SOA = "ns.test. hostmaster.test. 1 3600 600 86400 120"  # negative TTL: min(SOA TTL 300, 120)


@dataclass
class FakeDNSServer:
    servfail: set[str] = field(default_factory=lambda: {"servfail.test."})
    drop: set[str] = field(default_factory=lambda: {"silent.test."})
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, transport)
    port: int = 0

    def respond(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype, transport))
        if name in self.drop:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA | dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        current = name
        for _ in range(10):
            cname = RECORDS.get((current, "CNAME"))
            if cname is not None and rdtype != "CNAME":
                response.answer.append(dns.rrset.from_text(current, cname[0], "IN", "CNAME", *cname[1]))
                if current in NO_CHASE:
                    break
                current = cname[1][0].lower()
                continue
            found = RECORDS.get((current, rdtype))
            if found is not None:
                response.answer.append(dns.rrset.from_text(current, found[0], "IN", rdtype, *found[1]))
            else:
                if not any(key[0] == current for key in RECORDS):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(dns.rrset.from_text("test.", 300, "IN", "SOA", SOA))
            break
        limit = query.payload if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit if transport == "udp" else 65535)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC  # RFC 1035 §4.2.1: the client retries over TCP
            return truncated.to_wire()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.respond(data, "udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[FakeDNSServer]:
    server = FakeDNSServer()
    loop = asyncio.get_running_loop()

    async def handle_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = server.respond(await reader.readexactly(length), "tcp")
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    for _ in range(20):  # find a port free for both UDP and TCP
        udp, _proto = await loop.create_datagram_endpoint(lambda: _UDP(server), local_addr=("127.0.0.1", 0))
        server.port = udp.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(handle_tcp, "127.0.0.1", server.port)
        except OSError:
            udp.close()
            continue
        break
    else:
        raise RuntimeError("no free port")
    try:
        yield server
    finally:
        tcp.close()
        await tcp.wait_closed()
        udp.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(server: FakeDNSServer, **kwargs: object) -> DnsResolver:
    options: dict[str, object] = {"timeout": 2.0}
    options.update(kwargs)
    return DnsResolver([HostPort("127.0.0.1", server.port)], **options)  # type: ignore[arg-type]


async def test_mx_sorted_and_normalised(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server)
    assert await resolver.mx("example.test") == [
        MXRecord(10, "mx1.example.test"),
        MXRecord(20, "mx2.example.test"),
    ]
    assert await resolver.mx("nullmx.test.") == [MXRecord(0, "")]  # RFC 7505


async def test_addresses_txt_ptr(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server)
    assert sorted(await resolver.a("mx1.example.test")) == ["192.0.2.1", "192.0.2.2"]
    assert await resolver.aaaa("mx1.example.test") == ["2001:db8::1"]
    # RFC 7208 §3.3: the strings of one TXT record are joined
    assert sorted(await resolver.txt("example.test")) == ["second record", "v=spf1 -all"]
    assert await resolver.ptr("192.0.2.10") == ["host.example.test"]
    with pytest.raises(DNSError) as info:
        await resolver.ptr("not an address")
    assert info.value.kind is DNSErrorKind.NXDOMAIN


async def test_nodata_nxdomain_servfail_timeout(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server, timeout=0.5)
    assert await resolver.aaaa("example.test") == []  # NOERROR, no records of that type
    assert await resolver.mx("mx1.example.test") == []
    with pytest.raises(DNSError) as info:
        await resolver.mx("nothere.test")
    assert info.value.kind is DNSErrorKind.NXDOMAIN and info.value.name == "nothere.test"
    with pytest.raises(DNSError) as info:
        await resolver.mx("servfail.test")
    assert info.value.kind is DNSErrorKind.TEMPORARY
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DNSError) as info:
        await resolver.a("silent.test")
    assert info.value.kind is DNSErrorKind.TEMPORARY
    assert loop.time() - started < 3.0  # the timeout bounds the whole lookup


async def test_cname_followed(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server)
    assert await resolver.a("www.example.test") == ["192.0.2.10"]  # chain in one answer
    assert await resolver.mx("www.example.test") == [
        MXRecord(10, "mx1.example.test"),
        MXRecord(20, "mx2.example.test"),
    ]
    # the server answers with the CNAME only: the resolver asks for the target itself
    assert await resolver.aaaa("far.example.test") == ["2001:db8::1"]
    assert ("mx1.example.test.", "AAAA", "udp") in dns_server.queries
    with pytest.raises(DNSError) as info:
        await resolver.a("loop1.test")
    assert info.value.kind is DNSErrorKind.TEMPORARY


async def test_large_answer_over_tcp(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server)
    (record,) = await resolver.txt("big.test")
    assert len(record) == 2000 and record.startswith("a" * 250 + "b")
    assert ("big.test.", "TXT", "tcp") in dns_server.queries


async def test_cache_respects_ttl(dns_server: FakeDNSServer) -> None:
    clock = Clock()
    resolver = make(dns_server, clock=clock)
    assert await resolver.a("short.test") == ["192.0.2.5"]
    assert await resolver.a("SHORT.test.") == ["192.0.2.5"]
    assert dns_server.queries.count(("short.test.", "A", "udp")) == 1
    clock.now += 6  # TTL 5
    assert await resolver.a("short.test") == ["192.0.2.5"]
    assert dns_server.queries.count(("short.test.", "A", "udp")) == 2
    # a chain is cached for its shortest TTL (the CNAME's 30 s, not the A record's 300 s)
    await resolver.a("www.example.test")
    clock.now += 29
    await resolver.a("www.example.test")
    assert dns_server.queries.count(("www.example.test.", "A", "udp")) == 1
    clock.now += 2
    await resolver.a("www.example.test")
    assert dns_server.queries.count(("www.example.test.", "A", "udp")) == 2


async def test_concurrent_lookups_share_one_query(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server, clock=Clock())
    answers = await asyncio.gather(*(resolver.a("short.test") for _ in range(20)))
    assert answers == [["192.0.2.5"]] * 20
    assert dns_server.queries.count(("short.test.", "A", "udp")) == 1
    answers[0].append("mutated")  # every caller got its own list
    assert answers[1] == ["192.0.2.5"]
    failures = await asyncio.gather(*(resolver.a("nothere.test") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(f, DNSError) and f.kind is DNSErrorKind.NXDOMAIN for f in failures)


async def test_negative_answers_cached_failures_not(dns_server: FakeDNSServer) -> None:
    clock = Clock()
    resolver = make(dns_server, clock=clock)
    for _ in range(2):
        with pytest.raises(DNSError):
            await resolver.mx("nothere.test")
        assert await resolver.aaaa("example.test") == []
    assert dns_server.queries.count(("nothere.test.", "MX", "udp")) == 1
    assert dns_server.queries.count(("example.test.", "AAAA", "udp")) == 1
    clock.now += 121  # RFC 2308 §5: SOA minimum 120
    with pytest.raises(DNSError):
        await resolver.mx("nothere.test")
    assert dns_server.queries.count(("nothere.test.", "MX", "udp")) == 2
    for _ in range(2):
        with pytest.raises(DNSError):
            await resolver.mx("servfail.test")
    assert dns_server.queries.count(("servfail.test.", "MX", "udp")) == 2


async def test_cache_is_bounded(dns_server: FakeDNSServer) -> None:
    resolver = make(dns_server, cache_size=2)
    await resolver.a("mx1.example.test")
    await resolver.a("example.test")
    await resolver.a("short.test")  # evicts the least recently used: mx1
    await resolver.a("example.test")
    await resolver.a("mx1.example.test")
    assert dns_server.queries.count(("mx1.example.test.", "A", "udp")) == 2
    assert dns_server.queries.count(("example.test.", "A", "udp")) == 1
    cached = await resolver.a("mx1.example.test")
    cached.append("mutated")
    assert "mutated" not in await resolver.a("mx1.example.test")


def test_nameserver_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="IP address"):
        DnsResolver([HostPort("dns.example", 53)])
