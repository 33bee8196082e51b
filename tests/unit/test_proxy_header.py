"""The PROXY protocol header parser (haproxy doc/proxy-protocol.txt §2.1 v1, §2.2 v2), byte by byte."""

from __future__ import annotations

import struct

import pytest

from surat.proto.proxy import (
    MAX_V2_PAYLOAD,
    NEED_DATA,
    V2_SIGNATURE,
    ProxiedAddresses,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

AFTER = b"EHLO client.example\r\n"  # what the client sends next: never the parser's


def v2(command: int, family_transport: int, payload: bytes) -> bytes:
    return (
        V2_SIGNATURE + bytes([0x20 | command, family_transport]) + struct.pack("!H", len(payload)) + payload
    )


def v2_inet(source: str, dest: str, source_port: int, dest_port: int, tlvs: bytes = b"") -> bytes:
    def octets(text: str) -> bytes:
        return bytes(int(part) for part in text.split("."))

    return v2(1, 0x11, octets(source) + octets(dest) + struct.pack("!HH", source_port, dest_port) + tlvs)


V6_SOURCE = bytes.fromhex("20010db8000000000000000000000001")
V6_DEST = bytes.fromhex("20010db8000000000000000000000002")
V6_MAPPED = bytes.fromhex("00000000000000000000ffffc0000207")  # ::ffff:192.0.2.7

VALID = [
    # §2.1's example line
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxiedAddresses("192.168.0.1", 56324, "192.168.0.11", 443),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxiedAddresses("255.255.255.255", 65535, "255.255.255.255", 65535),
    ),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 0 25\r\n", ProxiedAddresses("2001:db8::1", 0, "2001:db8::2", 25)),
    (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        b" 65535 65535\r\n",
        ProxiedAddresses(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535
        ),
    ),
    # UNKNOWN: use the socket's addresses; anything up to CRLF is ignored (the 107-octet worst case)
    (b"PROXY UNKNOWN\r\n", None),
    (
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        b" 65535 65535\r\n",
        None,
    ),
    (v2_inet("203.0.113.9", "10.0.0.1", 40000, 587), ProxiedAddresses("203.0.113.9", 40000, "10.0.0.1", 587)),
    # TLVs after the addresses are skipped (an ALPN TLV and a NOOP TLV)
    (
        v2_inet("203.0.113.9", "10.0.0.1", 1, 2, tlvs=b"\x01\x00\x02h2\x04\x00\x00"),
        ProxiedAddresses("203.0.113.9", 1, "10.0.0.1", 2),
    ),
    (
        v2(1, 0x21, V6_SOURCE + V6_DEST + struct.pack("!HH", 1234, 993)),
        ProxiedAddresses("2001:db8::1", 1234, "2001:db8::2", 993),
    ),
    (
        v2(1, 0x21, V6_MAPPED + V6_DEST + struct.pack("!HH", 1234, 993)),
        ProxiedAddresses("192.0.2.7", 1234, "2001:db8::2", 993),
    ),
    # LOCAL (a health check): real endpoints, and the length is honoured even when not zero
    (v2(0, 0x00, b""), None),
    (v2(0, 0x11, b"\x00" * 12), None),
    # UNSPEC, AF_UNIX, and UDP fall back to the real endpoints
    (v2(1, 0x00, b""), None),
    (v2(1, 0x31, b"/tmp/a".ljust(108, b"\x00") + b"/tmp/b".ljust(108, b"\x00")), None),
    (v2(1, 0x12, b"\x01\x02\x03\x04" * 2 + b"\x00\x01\x00\x02"), None),
    (v2(1, 0x11, b"\x00" * MAX_V2_PAYLOAD), ProxiedAddresses("0.0.0.0", 0, "0.0.0.0", 0)),
]


def feed_all(chunks: list[bytes]) -> ProxyHeader:
    parser = ProxyHeaderParser()
    for index, chunk in enumerate(chunks):
        result = parser.feed(chunk)
        if result is not NEED_DATA:
            assert isinstance(result, ProxyHeader)
            assert index == len(chunks) - 1, "the header ended before its last octet"
            return result
    raise AssertionError("the parser still wants data")


@pytest.mark.parametrize(("header", "addresses"), VALID)
def test_valid_header_split_at_every_offset(header: bytes, addresses: ProxiedAddresses | None) -> None:
    version = 2 if header.startswith(V2_SIGNATURE) else 1
    whole = feed_all([header])
    assert whole == ProxyHeader(version, addresses, consumed=len(header))
    for offset in range(1, len(header)):
        # The client's own bytes follow in the same chunk: they are not consumed.
        result = feed_all([header[:offset], header[offset:] + AFTER])
        assert result == ProxyHeader(version, addresses, consumed=len(header) - offset)


@pytest.mark.parametrize(("header", "addresses"), VALID[:8])
def test_valid_header_one_octet_at_a_time(header: bytes, addresses: ProxiedAddresses | None) -> None:
    result = feed_all([header[i : i + 1] for i in range(len(header))])
    assert result.addresses == addresses
    assert result.consumed == 1


INVALID = [
    (b"EHLO x\r\n", "not a PROXY header"),
    (b"PROXY\r\n", "not a PROXY header"),  # exactly one space after PROXY
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not PROTOCOL SRC DST"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "not PROTOCOL SRC DST SRCPORT DSTPORT"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "not PROTOCOL SRC DST SRCPORT DSTPORT"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "not PROTOCOL SRC DST SRCPORT DSTPORT"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad address"),  # heading zeroes
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad address"),
    (b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "bad address"),  # family mismatch
    (b"PROXY TCP6 1.2.3.4 2001:db8::2 1 2\r\n", "bad address"),
    (b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n", "bad address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "bad port"),  # a non-ASCII digit
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare CR or LF"),
    (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "bare CR or LF"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "without CRLF in its first 107 octets"),  # 108 octets
    (V2_SIGNATURE[:5] + b"X", "not a PROXY header"),
    (V2_SIGNATURE + b"\x11\x11", "version 1"),
    (V2_SIGNATURE + b"\x22\x11", "unknown command 2"),
    (V2_SIGNATURE + b"\x21\x41", "unknown family/transport 0x41"),
    (V2_SIGNATURE + b"\x21\x13", "unknown family/transport 0x13"),
    (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_PAYLOAD + 1), "over 4096"),
    (v2(1, 0x11, b"\x00" * 11), "too short for its family"),
    (v2(1, 0x21, b"\x00" * 35), "too short for its family"),
    (v2(1, 0x31, b"\x00" * 215), "too short for its family"),
]


@pytest.mark.parametrize(("data", "reason"), INVALID)
def test_invalid_header_is_refused_at_every_split(data: bytes, reason: str) -> None:
    for offset in range(len(data) + 1):
        parser = ProxyHeaderParser()
        with pytest.raises(ProxyHeaderError, match=reason):
            for chunk in (data[:offset], data[offset:] + AFTER):
                assert parser.feed(chunk) is NEED_DATA


@pytest.mark.parametrize(
    "data", [b"P", b"PROXY TCP4 1.2.3.4", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", V2_SIGNATURE]
)
def test_incomplete_header_needs_data(data: bytes) -> None:
    assert ProxyHeaderParser().feed(data) is NEED_DATA


def test_wrong_first_octet_fails_at_once() -> None:
    # An SMTP client talking to a port that expects a header is refused at its first octet, not
    # after the header deadline.
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"E")
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"\x16")  # a TLS ClientHello


def test_parser_takes_nothing_after_the_header() -> None:
    parser = ProxyHeaderParser()
    assert isinstance(parser.feed(b"PROXY UNKNOWN\r\n"), ProxyHeader)
    with pytest.raises(RuntimeError):
        parser.feed(b"x")
