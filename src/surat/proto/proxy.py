"""The HAProxy PROXY protocol header, versions 1 and 2, sans-IO.

A load balancer in front of Surat opens its own TCP connection to us and, before anything else,
sends one header saying whose connection it relays (haproxy doc/proxy-protocol.txt, "the spec"
below). ``ProxyHeaderParser`` is fed the first octets of such a connection in chunks of any size and
answers ``NEED_DATA``, a ``ProxyHeader`` (which says how many octets of the last chunk were header,
so the rest can be handed on untouched: it is the client's first command or TLS ClientHello), or
raises ``ProxyHeaderError``. Every input is decided within ``MAX_HEADER`` octets.

The parser never asks for more than the header: once it has a result, the octets after it belong to
the protocol behind it, and the spec (§2.1, §2.2) says any deviation from the format must abort the
connection, so there is no "perhaps it was not a header" fallback here.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "MAX_HEADER",
    "MAX_V1_LINE",
    "MAX_V2_PAYLOAD",
    "NEED_DATA",
    "V2_SIGNATURE",
    "NeedData",
    "ProxiedAddresses",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderParser",
]

V1_PREFIX = b"PROXY "
# §2.1: "the receiver should declare the line invalid" if no CRLF within the first 107 characters
# (the worst case, "PROXY UNKNOWN" with two full IPv6 addresses and ports, CRLF included).
MAX_V1_LINE = 107
# §2.2: 12 octets of signature (with a NUL in 5th place: never a C string), then version/command,
# family/transport, and a 16-bit length of what follows.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# Our bound on the v2 length field (addresses + TLVs), which may say up to 65535: the largest
# address block is 216 octets (AF_UNIX), and HAProxy's TLVs (ALPN, authority, SSL details, unique
# id) fit well below this. A longer header is refused rather than skipped, so a peer cannot make
# us read 64 KiB before the first command.
MAX_V2_PAYLOAD = 4096
MAX_HEADER = max(MAX_V1_LINE, V2_FIXED + MAX_V2_PAYLOAD)


class ProxyHeaderError(Exception):
    """Not a valid PROXY header; the message says why, for the log. The connection must be closed."""


class NeedData(Enum):
    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ProxiedAddresses:
    """The relayed connection's endpoints, as the proxy saw them."""

    source_host: str
    source_port: int
    dest_host: str
    dest_port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    # None: use the socket's own addresses (v1 UNKNOWN; v2 LOCAL, e.g. a health check; v2 UNSPEC,
    # AF_UNIX or datagram families, which the spec lets a receiver treat as UNSPEC, §2.2).
    addresses: ProxiedAddresses | None
    # How many octets of the chunk that completed the header were header; the rest is the client's.
    consumed: int


# §2.2, 14th octet: family (high nibble) and transport (low nibble). Anything else "must be rejected".
_FAMILY_UNSPEC, _FAMILY_INET, _FAMILY_INET6, _FAMILY_UNIX = 0, 1, 2, 3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM, _TRANSPORT_DGRAM = 0, 1, 2
_ADDRESS_BLOCK = {_FAMILY_UNSPEC: 0, _FAMILY_INET: 12, _FAMILY_INET6: 36, _FAMILY_UNIX: 216}
_COMMAND_LOCAL, _COMMAND_PROXY = 0, 1
# §2.2: source address, destination address, source port, destination port, in network byte order.
_INET_BLOCKS: dict[int, tuple[str, type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]]] = {
    _FAMILY_INET: ("!4s4sHH", ipaddress.IPv4Address),
    _FAMILY_INET6: ("!16s16sHH", ipaddress.IPv6Address),
}


class ProxyHeaderParser:
    """Feed the first octets of a connection with ``feed`` until it returns a ``ProxyHeader``.

    Work is linear in the input and stops at ``MAX_HEADER`` octets; after the header is complete
    the parser takes nothing more (``feed`` raises ``RuntimeError``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> ProxyHeader | NeedData:
        if self._done:
            raise RuntimeError("the PROXY header is already complete")
        before = len(self._buffer)
        # Never hold more than the longest header we accept: the rest of a chunk is not ours.
        self._buffer += data[: MAX_HEADER - before]
        result = self._parse()
        if result is NEED_DATA:
            return NEED_DATA
        version, addresses, length = result
        self._done = True
        return ProxyHeader(version, addresses, consumed=length - before)

    def _parse(self) -> tuple[int, ProxiedAddresses | None, int] | NeedData:
        buffer = self._buffer  # not copied: at most MAX_HEADER octets, scanned within fixed windows
        if not buffer:
            return NEED_DATA
        # §2.2 "identifying the protocol version": the v2 signature, else "PROXY"; checked on every
        # prefix so that anything else fails at its first wrong octet, not after a timeout.
        if buffer[0] == V2_SIGNATURE[0]:
            return self._parse_v2(buffer)
        return self._parse_v1(buffer)

    def _parse_v1(self, buffer: bytearray) -> tuple[int, ProxiedAddresses | None, int] | NeedData:
        prefix = buffer[: len(V1_PREFIX)]
        if not V1_PREFIX.startswith(prefix):
            raise ProxyHeaderError("not a PROXY header")
        end = buffer.find(b"\r\n", 0, MAX_V1_LINE)
        if end < 0:
            # §2.1: a lone CR or LF must not end the line, and neither may appear inside it. With no
            # CRLF in the window, an LF is lone, and so is a CR that is not the last octet so far.
            window = buffer[:MAX_V1_LINE]
            if b"\n" in window or b"\r" in window[:-1]:
                raise ProxyHeaderError("PROXY v1 line with a bare CR or LF")
            if len(buffer) >= MAX_V1_LINE:
                raise ProxyHeaderError(f"PROXY v1 line without CRLF in its first {MAX_V1_LINE} octets")
            return NEED_DATA
        line = bytes(buffer[len(V1_PREFIX) : end])
        if b"\r" in line or b"\n" in line:
            raise ProxyHeaderError("PROXY v1 line with a bare CR or LF")
        return 1, _v1_addresses(line), end + 2

    def _parse_v2(self, buffer: bytearray) -> tuple[int, ProxiedAddresses | None, int] | NeedData:
        if not V2_SIGNATURE.startswith(buffer[: len(V2_SIGNATURE)]):
            raise ProxyHeaderError("not a PROXY header")
        if len(buffer) > len(V2_SIGNATURE):
            version, command = buffer[12] >> 4, buffer[12] & 0x0F
            if version != 2:  # §2.2: "the receiver must only accept this value"
                raise ProxyHeaderError(f"PROXY v2 header with version {version}")
            if command not in (_COMMAND_LOCAL, _COMMAND_PROXY):  # "must drop connections"
                raise ProxyHeaderError(f"PROXY v2 header with unknown command {command}")
        if len(buffer) > 13:
            family, transport = buffer[13] >> 4, buffer[13] & 0x0F
            if family not in _ADDRESS_BLOCK or transport > _TRANSPORT_DGRAM:
                raise ProxyHeaderError(f"PROXY v2 header with unknown family/transport {buffer[13]:#04x}")
        if len(buffer) < V2_FIXED:
            return NEED_DATA
        (payload_length,) = struct.unpack_from("!H", buffer, 14)
        if payload_length > MAX_V2_PAYLOAD:
            raise ProxyHeaderError(f"PROXY v2 header of {payload_length} octets, over {MAX_V2_PAYLOAD}")
        command, family, transport = buffer[12] & 0x0F, buffer[13] >> 4, buffer[13] & 0x0F
        if command == _COMMAND_PROXY and payload_length < _ADDRESS_BLOCK[family]:
            raise ProxyHeaderError(
                f"PROXY v2 address block of {payload_length} octets, too short for its family"
            )
        total = V2_FIXED + payload_length
        if len(buffer) < total:
            return NEED_DATA
        # LOCAL: "must use the real connection endpoints and discard the protocol block including
        # the family". UNSPEC, AF_UNIX and datagrams: a receiver that does not implement them falls
        # back to UNSPEC, i.e. the real endpoints. Anything past the addresses is TLVs, which "a
        # receiver may choose to skip over and ignore": we do, having bounded them above.
        if command == _COMMAND_LOCAL or transport != _TRANSPORT_STREAM:
            return 2, None, total
        if family not in _INET_BLOCKS:
            return 2, None, total
        layout, parse = _INET_BLOCKS[family]
        source, dest, source_port, dest_port = struct.unpack_from(layout, buffer, V2_FIXED)
        return 2, _addresses(parse(source), parse(dest), source_port, dest_port), total


def _addresses(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dest: ipaddress.IPv4Address | ipaddress.IPv6Address,
    source_port: int,
    dest_port: int,
) -> ProxiedAddresses:
    return ProxiedAddresses(_host(source), source_port, _host(dest), dest_port)


def _host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # An IPv4-mapped IPv6 source is an IPv4 client (a dual-stack proxy): log and limit it as one.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _v1_addresses(line: bytes) -> ProxiedAddresses | None:
    """The part of a v1 line after "PROXY " and before CRLF (§2.1)."""
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        # "the receiver must ignore anything presented before the CRLF is found" and use the real
        # connection's parameters.
        return None
    fields = line.split(b" ")
    if len(fields) != 5:
        raise ProxyHeaderError("PROXY v1 line is not PROTOCOL SRC DST SRCPORT DSTPORT")
    protocol, source, dest, source_port, dest_port = fields
    if protocol == b"TCP4":
        parse: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = ipaddress.IPv4Address
    elif protocol == b"TCP6":
        parse = ipaddress.IPv6Address
    else:
        raise ProxyHeaderError("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")
    return _addresses(
        _v1_address(source, parse), _v1_address(dest, parse), _v1_port(source_port), _v1_port(dest_port)
    )


def _v1_address(
    text: bytes, parse: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # ipaddress refuses heading zeroes in IPv4 (as §2.1 asks) but takes an IPv6 zone ("%eth0"),
    # which is no address of a remote client.
    try:
        if b"%" in text or not text.isascii():
            raise ValueError
        return parse(text.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 line with a bad address {text[:45]!r}") from None


def _v1_port(text: bytes) -> int:
    # §2.1: decimal in [0..65535], "heading zeroes are not permitted".
    if not (text.isdigit() and text.isascii()) or len(text) > 5 or (len(text) > 1 and text[0:1] == b"0"):
        raise ProxyHeaderError(f"PROXY v1 line with a bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 line with a bad port {text[:8]!r}")
    return port
