"""Fuzz: MTA-STS TXT records and policy files (RFC 8461 §3.1, §3.2) parse or raise PolicyError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.mailauth.mtasts import (
    MAX_MAX_AGE,
    PolicyError,
    StsMode,
    mx_pattern_matches,
    parse_policy,
    parse_record,
)

pytestmark = pytest.mark.fuzz

VALID = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"

_POLICY_PIECES = st.sampled_from(
    [
        b"version",
        b"mode",
        b"mx",
        b"max_age",
        b": ",
        b":",
        b"STSv1",
        b"enforce",
        b"testing",
        b"none",
        b"*.",
        b"example.com",
        b".",
        b"-",
        b"31557600",
        b"31557601",
        b"0",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b"\x00",
        b"\xff",
        b"\xc3\xa9",
        b"x_y",
    ]
)

_RECORD_PIECES = st.sampled_from(
    ["v=STSv1;", "v=STSv1", " ", ";", "id=", "id", "=", "abc", "Z9", "-", "\t", "é", "x" * 33]
)


def _check_policy(body: bytes) -> None:
    try:
        policy = parse_policy(body)
    except PolicyError:
        return
    assert isinstance(policy.mode, StsMode)
    assert 0 <= policy.max_age <= MAX_MAX_AGE
    assert policy.mx or policy.mode is StsMode.NONE
    for pattern in policy.mx:
        assert pattern == pattern.lower()
        # A pattern matches the name it names (with its wildcard label filled in).
        assert mx_pattern_matches(pattern, pattern.replace("*", "mx", 1))


@fuzz_settings()
@given(st.lists(_POLICY_PIECES, max_size=60).map(b"".join))
def test_random_policies_parse_or_raise_policy_error(body: bytes) -> None:
    _check_policy(body)


@fuzz_settings()
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(VALID)))
def test_mutated_policies_parse_or_raise_policy_error(noise: bytes, at: int) -> None:
    _check_policy(VALID[:at] + noise + VALID[at:])


@fuzz_settings()
@given(st.lists(st.lists(_RECORD_PIECES, max_size=20).map("".join), max_size=3))
def test_random_records_parse_or_raise_policy_error(texts: list[str]) -> None:
    try:
        record = parse_record(texts)
    except PolicyError:
        return
    if record is not None:
        assert 1 <= len(record.id) <= 32 and record.id.isalnum() and record.id.isascii()
