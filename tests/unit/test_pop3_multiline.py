"""Dot-stuffing, TOP truncation and RETR octet counts (RFC 1939 §3, §5, §7)."""

from __future__ import annotations

import pytest

from surat.proto.pop3.multiline import MessageEncoder, encode_message, retr_octets, retr_size, stuff_line

SAMPLES: list[bytes] = [
    b"",
    b".",
    b".\r\n",
    b"..\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\n.\r\n",
    b"Subject: x\r\n\r\nline\r\n.\r\nafter the fake end\r\n",
    b".starts with a dot\r\n\r\n.body\r\n..two\r\n.",
    b"From: a\r\nTo: b\r\n\r\none\r\ntwo\r\nthree\r\n.four\r\nfive",
    b"bare\nlf\n.line\n\n.x\n",
    b"no blank line at all\r\n.dot header\r\n",
    b"A: 1\r\n\r\n",
    b"A: 1\r\n\r\n\r\n\r\n.\r\n",
    b"A: 1\r\nB: 2\r\n\r\nend without crlf\r",
    b"\r\n\r\n.\r\n",
    b"x" * 50 + b"\r\n.\r\n" + b"y" * 50,
]


def reference_lines(message: bytes) -> list[bytes]:
    """The message split into lines at LF, terminators kept."""
    return message.splitlines(keepends=True) if b"\r" not in message else _split_lf(message)


def _split_lf(message: bytes) -> list[bytes]:
    lines: list[bytes] = []
    start = 0
    while start < len(message):
        nl = message.find(b"\n", start)
        end = len(message) if nl < 0 else nl + 1
        lines.append(message[start:end])
        start = end
    return lines


def reference_top(message: bytes, n: int) -> bytes:
    lines = _split_lf(message)
    for i, line in enumerate(lines):
        if line in (b"\n", b"\r\n"):
            return b"".join(lines[: i + 1 + n])
    return message


def reference_encode(message: bytes) -> bytes:
    """A line-at-a-time encoder written straight from RFC 1939 §3."""
    out = b"".join(b"." + line if line.startswith(b".") else line for line in _split_lf(message))
    if message and not message.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


def client_decode(response_body: bytes) -> bytes:
    """What a client recovers, reading lines up to LF like poplib and most clients do: lines up to
    the terminator, a leading dot removed from stuffed lines."""
    lines = _split_lf(response_body)
    assert lines[-1] == b".\r\n"
    content = lines[:-1]
    for line in content:
        assert line.rstrip(b"\r\n") != b".", "a content line reads as the terminator"
    # A client splitting at CRLF only must not see the terminator early either.
    assert b"\r\n.\r\n" not in b"\r\n" + b"".join(content)
    return b"".join(line[1:] if line.startswith(b"..") else line for line in content)


def feed_split(message: bytes, cuts: list[int], top: int | None = None) -> bytes:
    encoder = MessageEncoder(top)
    out = b""
    previous = 0
    for cut in [*cuts, len(message)]:
        out += encoder.feed(message[previous:cut])
        previous = cut
    return out + encoder.finish()


@pytest.mark.parametrize("message", SAMPLES)
def test_matches_reference_at_every_split(message: bytes) -> None:
    expected = reference_encode(message)
    assert encode_message(message) == expected
    for cut in range(len(message) + 1):
        assert feed_split(message, [cut]) == expected, cut
    assert feed_split(message, list(range(1, len(message)))) == expected  # one octet at a time


@pytest.mark.parametrize("message", [m for m in SAMPLES if len(m) <= 40])
def test_three_chunks_every_pair_of_offsets(message: bytes) -> None:
    expected = reference_encode(message)
    for a in range(len(message) + 1):
        for b in range(a, len(message) + 1):
            assert feed_split(message, [a, b]) == expected, (a, b)


@pytest.mark.parametrize("message", SAMPLES)
def test_retr_octets_equals_what_retr_sends_before_stuffing(message: bytes) -> None:
    encoded = encode_message(message)
    received = client_decode(encoded) if message else b""
    assert len(received) == retr_octets(len(message), message[-2:])
    # Round trip: the client gets the message back, with a CRLF added only when it lacked one.
    if message.endswith(b"\r\n") or not message:
        assert received == message
    else:
        assert received == message + b"\r\n"


@pytest.mark.parametrize("message", SAMPLES)
def test_retr_size_from_the_stored_flag_equals_what_retr_sends(message: bytes) -> None:
    received = client_decode(encode_message(message)) if message else b""
    ends_with_crlf = message.endswith(b"\r\n") or not message  # what the store records
    assert retr_size(len(message), ends_with_crlf) == len(received)


def test_retr_size_cases() -> None:
    assert retr_size(0, True) == 0
    assert retr_size(0, False) == 0  # nothing to terminate
    assert retr_size(10, True) == 10
    assert retr_size(10, False) == 12


def test_retr_octets_cases() -> None:
    assert retr_octets(0, b"") == 0
    assert retr_octets(10, b"\r\n") == 10
    assert retr_octets(10, b"x\n") == 12
    assert retr_octets(1, b"x") == 3
    assert retr_octets(10, b"\n\r") == 12


def test_stuffing_examples() -> None:
    assert encode_message(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"
    assert encode_message(b".\r\n") == b"..\r\n.\r\n"
    assert encode_message(b"") == b".\r\n"
    assert encode_message(b"x") == b"x\r\n.\r\n"
    # A dot in the middle of a line is not at a line start.
    assert encode_message(b"a.b\r\n") == b"a.b\r\n.\r\n"


def test_dot_after_chunk_ending_in_lf_is_stuffed() -> None:
    encoder = MessageEncoder()
    assert encoder.feed(b"a\r\n") == b"a\r\n"
    assert encoder.feed(b".b\r\n") == b"..b\r\n"
    assert encoder.feed(b"c") == b"c"
    assert encoder.feed(b".d\r\n") == b".d\r\n"  # not at a line start
    assert encoder.finish() == b".\r\n"


def test_output_bounded_by_twice_the_input() -> None:
    chunk = b".\n" * 1000
    encoder = MessageEncoder()
    out = encoder.feed(chunk)
    assert len(out) <= 2 * len(chunk)
    assert out == b"..\n" * 1000


def test_feed_after_finish_is_an_error() -> None:
    encoder = MessageEncoder()
    encoder.finish()
    with pytest.raises(ValueError):
        encoder.feed(b"x")
    with pytest.raises(ValueError):
        encoder.finish()


TOP_SAMPLES = [m for m in SAMPLES if m] + [
    b"H: 1\r\nH2: 2\r\n\r\nl1\r\nl2\r\nl3\r\n",
    b"H: 1\r\n\r\n.l1\r\n\r\n.l3\r\nl4",
]


@pytest.mark.parametrize("message", TOP_SAMPLES)
@pytest.mark.parametrize("lines", [0, 1, 2, 3, 10])
def test_top_at_every_split(message: bytes, lines: int) -> None:
    expected = reference_encode(reference_top(message, lines))
    for cut in range(len(message) + 1):
        assert feed_split(message, [cut], top=lines) == expected, cut
    assert feed_split(message, list(range(1, len(message))), top=lines) == expected


def test_top_exact_line_counts() -> None:
    message = b"Subject: s\r\nFrom: f\r\n\r\nb1\r\nb2\r\nb3\r\n"
    assert encode_message(message, 0) == b"Subject: s\r\nFrom: f\r\n\r\n.\r\n"
    assert encode_message(message, 2) == b"Subject: s\r\nFrom: f\r\n\r\nb1\r\nb2\r\n.\r\n"
    assert encode_message(message, 3) == message + b".\r\n"
    assert encode_message(message, 99) == message + b".\r\n"


def test_top_blank_line_split_between_cr_and_lf() -> None:
    encoder = MessageEncoder(1)
    out = encoder.feed(b"A: 1\r\n\r")
    assert encoder.wants_more
    out += encoder.feed(b"\nbody1\r\nbody2\r\n")
    assert not encoder.wants_more
    assert out + encoder.finish() == b"A: 1\r\n\r\nbody1\r\n.\r\n"


def test_top_header_line_of_only_cr_then_text_is_not_blank() -> None:
    # "\rX\r\n" is a header-section line with content, not the blank separator line.
    message = b"A: 1\r\n\rX\r\n\r\nbody\r\nmore\r\n"
    assert encode_message(message, 1) == b"A: 1\r\n\rX\r\n\r\nbody\r\n.\r\n"


def test_top_stops_wanting_data() -> None:
    encoder = MessageEncoder(1)
    assert encoder.feed(b"A: 1\r\n\r\nx\r\n") == b"A: 1\r\n\r\nx\r\n"
    assert not encoder.wants_more
    assert encoder.feed(b"ignored\r\n") == b""
    assert encoder.finish() == b".\r\n"
    assert not encoder.wants_more


def test_top_negative_is_rejected() -> None:
    with pytest.raises(ValueError):
        MessageEncoder(-1)


def test_stuff_line() -> None:
    assert stuff_line(b"TOP") == b"TOP\r\n"
    assert stuff_line(b".x") == b"..x\r\n"


def test_reference_helpers_agree() -> None:
    # Guard the test oracle itself against drift.
    assert reference_lines(b"a\nb") == [b"a\n", b"b"]
    assert reference_lines(b"a\r\nb\r\n") == [b"a\r\n", b"b\r\n"]
    assert client_decode(b"..a\r\nb\r\n.\r\n") == b".a\r\nb\r\n"
