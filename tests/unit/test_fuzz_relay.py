"""Fuzz: lines on the workers' change relay (surat.workers.relay) decode or raise their documented error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.store.base import Change, ChangeKind
from surat.workers.relay import OVERFLOW, READY, RelayProtocolError, decode_line, encode_changes

pytestmark = pytest.mark.fuzz

_KIND = st.sampled_from([kind for kind in ChangeKind if kind is not ChangeKind.OVERFLOW])
_CHANGE = st.builds(
    Change,
    _KIND,
    st.integers(0, 2**63),
    st.none() | st.integers(0, 2**63),
    st.just(()),
    st.integers(0, 2**63),
)
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=30,
)


def _check(line: bytes) -> None:
    try:
        decoded = decode_line(line)
    except RelayProtocolError:
        return
    assert decoded in (READY, OVERFLOW) or (
        isinstance(decoded, list) and all(isinstance(change, Change) for change in decoded)
    )


@fuzz_settings()
@given(st.lists(_CHANGE, max_size=600))
def test_encoded_changes_decode_to_themselves(changes: list[Change]) -> None:
    decoded = [change for line in encode_changes(changes) for change in decode_line(line)]
    assert decoded == changes


@fuzz_settings()
@given(_VALUE)
def test_any_json_value_decodes_or_raises_the_protocol_error(value: object) -> None:
    _check(json.dumps(value).encode() + b"\n")


@fuzz_settings()
@given(st.lists(_CHANGE, min_size=1, max_size=5), st.data())
def test_mutated_lines_decode_or_raise_the_protocol_error(changes: list[Change], data: st.DataObject) -> None:
    line = bytearray(encode_changes(changes)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(line) - 1))
        line[position] = data.draw(st.integers(0, 255))
    _check(bytes(line))
