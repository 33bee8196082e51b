"""Fuzz: the COMPRESS=DEFLATE decoder (RFC 4978, raw deflate RFC 1951) on random, mutated and split input.

Whatever arrives, ``Deflate.decompress`` returns plaintext or raises ``zlib.error`` (the documented
error: the shell ends the session), and no call returns more than its ``max_output`` bound
(``surat.imapd.session.DEFLATE_OUTPUT_BOUND``): a deflate bomb comes out piece by piece, each piece
bounded, with the rest of the input left compressed in the decoder.
"""

from __future__ import annotations

import contextlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.imapd.compress import Deflate
from surat.imapd.session import DEFLATE_OUTPUT_BOUND

pytestmark = pytest.mark.fuzz

BOUND = 4096  # a small bound in the fuzz tests, so that inputs cross it often
MAX_DRAIN_STEPS = 10_000  # 40 MB at BOUND a step: more than any input below inflates to


def _compressed(plain: bytes, flushes: list[int]) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = b""
    pos = 0
    for cut in [*sorted({min(c, len(plain)) for c in flushes}), len(plain)]:
        out += compressor.compress(plain[pos:cut]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        pos = cut
    return out


def _feed(deflate: Deflate, chunks: list[bytes]) -> bytes:
    """Everything the decoder gives for these chunks, each call checked against the bound."""
    out = b""
    for chunk in chunks:
        piece = deflate.decompress(chunk, BOUND)
        assert len(piece) <= BOUND
        out += piece
        steps = 0
        while deflate.has_pending_input:
            piece = deflate.decompress(b"", BOUND)
            assert 0 < len(piece) <= BOUND  # pending input always makes progress
            out += piece
            steps += 1
            assert steps < MAX_DRAIN_STEPS
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@fuzz_settings()
@given(
    st.binary(max_size=2000),
    st.lists(st.integers(0, 2000), max_size=8),
    st.lists(st.integers(0, 5000), max_size=6),
)
def test_valid_streams_split_anywhere_decode_to_the_plaintext(
    plain: bytes, flushes: list[int], cuts: list[int]
) -> None:
    data = _compressed(plain, flushes)
    assert _feed(Deflate(), _split(data, cuts)) == plain


@fuzz_settings()
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6))
def test_random_input_decodes_or_raises_zlib_error(data: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(zlib.error):  # the documented error: the session ends
        _feed(Deflate(), _split(data, cuts))


@fuzz_settings()
@given(
    st.binary(min_size=1, max_size=500),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=5),
    st.lists(st.integers(0, 5000), max_size=4),
)
def test_mutated_streams_decode_or_raise_zlib_error(
    plain: bytes, mutations: list[tuple[int, int]], cuts: list[int]
) -> None:
    data = bytearray(_compressed(plain * 3, [len(plain)]))
    for position, value in mutations:
        data[position % len(data)] = value
    with contextlib.suppress(zlib.error):
        _feed(Deflate(), _split(bytes(data), cuts))


@fuzz_settings(max_examples=20)
@given(st.integers(1_000_000, 20_000_000), st.sampled_from([b"\x00", b"A", b"ab"]))
def test_a_deflate_bomb_comes_out_in_bounded_pieces(size: int, unit: bytes) -> None:
    bomb = _compressed(unit * (size // len(unit)), [])
    assert len(bomb) < size // 100  # a real bomb: 100 times or more
    deflate = Deflate()
    total = len(deflate.decompress(bomb, DEFLATE_OUTPUT_BOUND))
    while deflate.has_pending_input:
        piece = deflate.decompress(b"", DEFLATE_OUTPUT_BOUND)
        assert 0 < len(piece) <= DEFLATE_OUTPUT_BOUND
        total += len(piece)
    assert total == len(unit) * (size // len(unit))


@fuzz_settings()
@given(st.integers(0, 20_000), st.lists(st.integers(0, 100_000), max_size=5))
def test_any_number_of_empty_blocks_decodes_to_nothing(blocks: int, cuts: list[int]) -> None:
    data = b"\x00\x00\x00\xff\xff" * blocks  # RFC 1951 §3.2.4: empty stored blocks
    assert _feed(Deflate(), _split(data, cuts)) == b""
