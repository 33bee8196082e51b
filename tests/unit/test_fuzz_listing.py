"""Fuzz: the LIST/LSUB wildcard matcher (RFC 9051 §6.3.9) gives the answer of a plain reference matcher."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.imapd.listing import Matcher

pytestmark = pytest.mark.fuzz

# A small alphabet so that random patterns and names actually share characters and delimiters.
_NAME = st.text(alphabet="ab/", max_size=12)
_PATTERN = st.text(alphabet="ab/*%", max_size=10)


def reference_matches(pattern: str, name: str) -> bool:
    """The definition, written as directly as possible: exponential, so only for small inputs."""

    @cache
    def match(p: int, n: int) -> bool:
        if p == len(pattern):
            return n == len(name)
        token = pattern[p]
        if token == "*":
            return any(match(p + 1, k) for k in range(n, len(name) + 1))
        if token == "%":
            end = name.find("/", n)
            stop = len(name) if end < 0 else end
            return any(match(p + 1, k) for k in range(n, stop + 1))
        return n < len(name) and name[n] == token and match(p + 1, n + 1)

    return match(0, 0)


@fuzz_settings()
@given(_PATTERN, _NAME)
def test_matcher_agrees_with_the_reference(pattern: str, name: str) -> None:
    assert Matcher("", pattern).matches(name) == reference_matches(pattern, name)


@fuzz_settings()
@given(_PATTERN, _PATTERN, _NAME)
def test_reference_is_prefixed_to_the_pattern(reference: str, pattern: str, name: str) -> None:
    assert Matcher(reference, pattern).matches(name) == Matcher("", reference + pattern).matches(name)
