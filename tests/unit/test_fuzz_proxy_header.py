"""Fuzz: the PROXY header parser yields NEED_DATA, a header, or ProxyHeaderError, and nothing else."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.proxy import (
    MAX_HEADER,
    NEED_DATA,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

pytestmark = pytest.mark.fuzz

_SEEDS = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(range(12)),
    V2_SIGNATURE + b"\x21\x21\x00\x24" + bytes(range(36)),
    V2_SIGNATURE + b"\x20\x00\x00\x00",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[position]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()) and len(data) >= 16 and data.startswith(V2_SIGNATURE):
        data[14:16] = struct.pack("!H", draw(st.integers(0, 65535)))
    return bytes(data) + draw(st.binary(max_size=40))


def _check(data: bytes, cuts: list[int]) -> None:
    parser = ProxyHeaderParser()
    offsets = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    try:
        for start, end in itertools.pairwise(offsets):
            result = parser.feed(data[start:end])
            if result is NEED_DATA:
                continue
            assert isinstance(result, ProxyHeader)
            header_end = start + result.consumed
            assert 0 <= result.consumed <= end - start
            assert header_end <= MAX_HEADER
            # The same header is found whole, at the same place.
            assert ProxyHeaderParser().feed(data) == ProxyHeader(
                result.version, result.addresses, consumed=header_end
            )
            return
    except ProxyHeaderError:
        # Refused in pieces, refused whole: no verdict depends on how the input was split.
        with pytest.raises(ProxyHeaderError):
            ProxyHeaderParser().feed(data)
        return
    # Still wanting data: never after the longest header we accept.
    assert len(data) < MAX_HEADER


@fuzz_settings()
@given(_mutated(), st.lists(st.integers(0, 200), max_size=5))
def test_mutated_headers_parse_or_raise_their_error(data: bytes, cuts: list[int]) -> None:
    _check(data, cuts)


@fuzz_settings()
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_random_bytes_parse_or_raise_their_error(data: bytes, cuts: list[int]) -> None:
    _check(data, cuts)
