"""Fuzz: TLS-RPT TXT records (RFC 8460 §3) parse to a record, None, or PolicyError; nothing else.
What parses keeps the promises the report sender relies on (addresses safe in a To: field)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.mailauth.mtasts import PolicyError
from surat.mailauth.tlsrpt import MAX_RUA, parse_record

pytestmark = pytest.mark.fuzz

VALID = "v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x; ext=1"

_PIECES = st.sampled_from(
    [
        "v=TLSRPTv1", ";", " ", "\t", "rua=", "mailto:", "https:", "//", "a@b.example", "@", ",", "=",
        "%40", "%0d%0a", "%ff", "%", "?x=y", "!", "<", ">", "\x00", "é", "ext", "_", "-", ".", "x" * 300,
    ]
)  # fmt: skip


def _check(texts: list[str]) -> None:
    try:
        record = parse_record(texts)
    except PolicyError:
        return
    if record is None:
        return
    assert len(record.mailto) + len(record.https) <= MAX_RUA
    for address in record.mailto:
        assert "@" in address
        assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in address)
        assert "<" not in address and ">" not in address
    for url in record.https:
        assert url.lower().startswith("https:")


@fuzz_settings()
@given(st.lists(_PIECES, max_size=30).map("".join), st.lists(st.text(max_size=40), max_size=3))
def test_pieces(record: str, others: list[str]) -> None:
    _check([record, *others])


@fuzz_settings()
@given(st.data())
def test_mutated_valid_record(data: st.DataObject) -> None:
    text = VALID
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.text(max_size=3))
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    _check([text])


@fuzz_settings()
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check([text, "v=TLSRPTv1;" + text])
