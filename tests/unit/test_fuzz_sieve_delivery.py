"""Fuzz: what Sieve at delivery makes from user-controlled text: the SMTP reply quoting a reject reason,
and the scripts `surat user vacation/forward` generate from a subject, a body and script names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto.smtp import replies as R
from surat.sieve import parse_script
from surat.sieve.generated import forward_script, next_script, relink, vacation_script

pytestmark = pytest.mark.fuzz

_TEXT = st.lists(
    st.sampled_from([*'ab .\\"\r\n\t;{}', "é", "\x00", "\u2028", "text:", "include", "\n.\n", "*/"]),
    max_size=40,
).map("".join)
_NAME = st.text(
    st.sampled_from(
        [*'ab-"\\ é'],
    ),
    min_size=1,
    max_size=20,
)


@fuzz_settings()
@given(st.text(max_size=400))
def test_a_reject_reason_becomes_one_bounded_line_of_printable_ascii(reason: str) -> None:
    reply = R.sieve_rejected(reason)
    wire = reply.to_bytes()
    assert wire.startswith(b"550 5.7.1 Rejected by the recipient's filter")
    assert wire.endswith(b"\r\n") and wire.count(b"\r\n") == 1
    assert all(0x20 <= octet < 0x7F for octet in wire[:-2])
    assert len(wire) <= len("550 5.7.1 Rejected by the recipient's filter: \r\n") + R.MAX_REJECT_REASON


@fuzz_settings()
@given(_TEXT, st.integers(1, 365), _TEXT.filter(lambda body: body.strip() != ""), st.none() | _NAME, _NAME)
def test_generated_vacation_scripts_parse_and_name_their_next_script(
    subject: str, days: int, body: str, then: str | None, other: str
) -> None:
    text = vacation_script(subject, days, body, then)
    parse_script(text)
    assert next_script(text) == then
    relinked = relink(text, other)
    parse_script(relinked)
    assert next_script(relinked) == other
    assert next_script(relink(relinked, None)) is None


@fuzz_settings()
@given(st.sampled_from(["a@example.net", 'we"ird\\@example.net']), st.booleans(), st.none() | _NAME)
def test_generated_forward_scripts_parse(target: str, keep: bool, then: str | None) -> None:
    text = forward_script(target, keep, then)
    parse_script(text)
    assert next_script(text) == then
