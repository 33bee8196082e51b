"""Fuzz: modified UTF-7 mailbox names (RFC 3501 §5.1.3) round-trip, and any input decodes or raises MUTF7Error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.imap import mutf7

pytestmark = pytest.mark.fuzz

# Shift characters, the modified BASE64 alphabet's edges, printable ASCII and a few non-ASCII characters.
_PIECES = st.sampled_from(
    [*"&-&-,+/AZaz09 ~\x00\x7f\u00e9\u53f0", "&-", "&AOk-", "&2D3eAA-", "&2D0-", "&AGE-"]
)


@fuzz_settings()
@given(st.text(max_size=40))
def test_encode_then_decode_is_the_identity(name: str) -> None:
    encoded = mutf7.encode(name)
    assert encoded.isascii() and all(" " <= ch <= "~" for ch in encoded)
    assert mutf7.decode(encoded) == name


@fuzz_settings()
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_mutated_names_decode_canonically_or_raise(text: str) -> None:
    try:
        decoded = mutf7.decode(text)
    except mutf7.MUTF7Error:
        return
    # Strict decoding: a name has exactly one encoded form, so what decodes re-encodes to the input.
    assert mutf7.encode(decoded) == text


@fuzz_settings()
@given(st.binary(max_size=60))
def test_random_bytes_decode_or_raise_the_documented_error(data: bytes) -> None:
    text = data.decode("latin-1")  # every byte value as one character, as a client's astring could carry
    try:
        decoded = mutf7.decode(text)
    except mutf7.MUTF7Error:
        return
    assert mutf7.encode(decoded) == text
