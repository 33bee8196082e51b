"""Fuzz: MTA-STS policies and TXT records parse or raise PolicyError, and a parsed policy renders
to text that parses back to itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.mtasts import PolicyError, parse_policy, parse_sts_record, render_policy

pytestmark = pytest.mark.fuzz

_PIECES = st.sampled_from(
    ["version", "mode", "mx", "max_age", ":", " ", "\t", "\r", "\n", "STSv1", "testing", "enforce", "none",
     "*.", "mail.example", "-", ".", "604800", "99999999999", "=", ";", "x_y", "\x00", "é"]
)  # fmt: skip


@fuzz_settings()
@given(st.lists(_PIECES, max_size=80).map("".join))
def test_policies_parse_or_raise_their_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert parse_policy(render_policy(policy)) == policy


@fuzz_settings()
@given(
    st.lists(st.sampled_from(["v=STSv1", ";", " ", "id=", "abc", "=", "x", "\t", "é"]), max_size=30).map(
        "".join
    )
)
def test_sts_records_parse_or_raise_their_error(text: str) -> None:
    try:
        record = parse_sts_record(text)
    except PolicyError:
        return
    assert 1 <= len(record.id) <= 32 and record.id.isalnum()
