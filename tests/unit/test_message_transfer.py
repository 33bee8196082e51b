"""surat.message.transfer's streaming decoders: what SEARCH feeds them piece by piece decodes as BINARY
decodes the whole part (RFC 2045 §6.7, §6.8), and a long run of blanks is read once."""

from __future__ import annotations

import pytest

from surat.message.transfer import (
    Base64Decoder,
    IdentityDecoder,
    QuotedPrintableDecoder,
    decode_quoted_printable,
    transfer_decoder,
)

CASES = [
    b"soft= \r\nbreak",  # rule 5 with transport padding after the "="
    b"trailing \t \r\nline\r\n",  # rule 3: blanks before a line end are deleted
    b"kept  blanks inside\r\n",
    b"==41 =ZZ =4",  # notes (2), (3): bad "=" kept as written
    b"caf=e9 cr=E8me",
    b"end with blanks   ",
    b"end with soft break=",
    b"cr split =\r",
]


@pytest.mark.parametrize("data", CASES)
def test_quoted_printable_split_at_every_offset(data: bytes) -> None:
    whole = decode_quoted_printable(data)
    for cut in range(len(data) + 1):
        decoder = QuotedPrintableDecoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.flush() == whole, cut


@pytest.mark.parametrize("tail", [b"\r\nnext", b"x", b""])
def test_a_long_run_of_blanks_fed_in_pieces_is_read_once(tail: bytes) -> None:
    """8 MiB of blanks after an "=" in 64 KiB pieces: decided once its end arrives (deleted with the
    soft break before a line end or at the end, else kept), in linear time (the run is kept in pieces and joined once)."""
    run = b" " * (8 * 1024 * 1024)
    data = b"a=" + run + tail
    decoder = QuotedPrintableDecoder()
    decoded = []
    for i in range(0, len(data), 65536):
        decoded.append(decoder.feed(data[i : i + 65536]))
        # the waiting run is kept in pieces, not re-copied into one buffer with every piece
        assert len(decoder._rest) <= 65536 + 2
    out = b"".join(decoded) + decoder.flush()
    assert out == decode_quoted_printable(data)
    assert out == (b"a" + tail[2:] if tail.startswith(b"\r\n") else b"a" if not tail else b"a=" + run + tail)


def test_transfer_decoder_by_encoding() -> None:
    assert isinstance(transfer_decoder("BASE64"), Base64Decoder)
    assert isinstance(transfer_decoder("quoted-printable"), QuotedPrintableDecoder)
    assert isinstance(transfer_decoder("X-UUENCODE"), IdentityDecoder)
    decoder = transfer_decoder("8BIT")
    assert decoder.feed(b"as is=41") + decoder.flush() == b"as is=41"
