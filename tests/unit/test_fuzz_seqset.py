"""Fuzz: IMAP sequence sets (RFC 9051 §9 `sequence-set`) parse or raise their documented error."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.imap.seqset import SequenceSetError, parse_sequence_set

pytestmark = pytest.mark.fuzz

_ALPHABET = st.sampled_from([*list("0123456789:,*$ \x00ÿ-"), "4294967295", "4294967296", "99999999999"])


@fuzz_settings()
@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_random_sequence_sets_parse_or_raise_their_error(text: str) -> None:
    try:
        parsed = parse_sequence_set(text)
    except SequenceSetError:
        return
    if parsed.saved:
        return
    # A parsed set normalises against any mailbox size to sorted, disjoint, positive ranges.
    spans = parsed.normalized(50)
    assert all(1 <= lo <= hi for lo, hi in spans)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(spans))
