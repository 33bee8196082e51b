"""Fuzz: mbox files (RFC 4155, mboxrd) and the import normaliser. Any input reads as messages without an
error; messages written with mboxrd escaping read back exactly; normalised output has CRLF line ends."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.mailfiles.importer import Normaliser
from surat.mailfiles.mbox import MboxReader, is_escaped_from, separator_date, separator_line

pytestmark = pytest.mark.fuzz

SEPARATOR = b"From x Sat Jan  3 01:05:34 1996\n"
_TOKENS = st.sampled_from(
    [b"From ", b">From ", b">>", b">", b"\n", b"\r\n", b"\r", b"a", b"Status: RO", b"Date: x", b" ", b":",
     b"\x00", b"\xff", b"Sat Jan  3 01:05:34 1996", SEPARATOR]
)  # fmt: skip
_LINE = st.lists(_TOKENS.filter(lambda t: b"\n" not in t), max_size=6).map(
    lambda parts: b"".join(parts) + b"\n"
)


def lf_lines(data: bytes) -> list[bytes]:
    """Lines as mbox readers see them: ended by LF only (a CR alone ends nothing)."""
    return [line + b"\n" for line in data.split(b"\n")[:-1]] + (
        [data.rpartition(b"\n")[2]] if not data.endswith(b"\n") else []
    )


def read_all(data: bytes) -> list[bytes]:
    reader = MboxReader(io.BytesIO(data))
    return [b"".join(reader.lines()) for _ in reader]


@fuzz_settings()
@given(st.lists(_TOKENS, max_size=80).map(b"".join))
def test_any_input_reads_as_messages_none_holding_a_separator(data: bytes) -> None:
    messages = read_all(data)
    assert sum(len(message) for message in messages) <= len(data)
    for message in messages:
        # a separator-shaped line starts the next message, unless it was escaped (mboxrd)
        assert all(separator_date(line) is None or b">" + line in data for line in lf_lines(message))


@fuzz_settings()
@given(st.lists(st.lists(_LINE, max_size=8).map(b"".join), max_size=5))
def test_messages_written_with_mboxrd_escaping_read_back_exactly(messages: list[bytes]) -> None:
    out = io.BytesIO()
    for message in messages:
        out.write(separator_line(datetime(2001, 2, 3, tzinfo=UTC)))
        for line in lf_lines(message):
            out.write(b">" + line if is_escaped_from(line) else line)
        out.write(b"\n")
    assert read_all(out.getvalue()) == messages


@fuzz_settings()
@given(st.lists(_LINE, max_size=12))
def test_normalised_lines_end_in_crlf_and_keep_their_content(lines: list[bytes]) -> None:
    normaliser = Normaliser(mbox_headers=False)
    out = b"".join(normaliser.feed(line) for line in lines) + normaliser.finish()
    assert out.count(b"\n") == out.count(b"\r\n") == len(lines)
    assert out.replace(b"\r\n", b"\n") == b"".join(
        line.removesuffix(b"\r\n") + b"\n" if line.endswith(b"\r\n") else line for line in lines
    )
    mbox = Normaliser(mbox_headers=True)
    dropped = b"".join(mbox.feed(line) for line in lines) + mbox.finish()
    assert dropped.count(b"\n") == dropped.count(b"\r\n")
    assert len(dropped) <= len(out)


@fuzz_settings()
@given(st.lists(_TOKENS, max_size=60).map(b"".join), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_the_normaliser_gives_the_same_however_its_input_is_cut(
    data: bytes, cuts: list[int], mbox: bool
) -> None:
    def run(parts: list[bytes]) -> tuple[bytes, frozenset[str]]:
        normaliser = Normaliser(mbox_headers=mbox)
        out = b"".join(normaliser.feed(part) for part in parts) + normaliser.finish()
        return out, normaliser.flags()

    points = sorted({min(cut, len(data)) for cut in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert run(parts) == run([data])
