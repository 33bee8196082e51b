"""COMPRESS=DEFLATE framing (RFC 4978) and the error -> reply mapping of the IMAP shell."""

from __future__ import annotations

import logging
import zlib

import pytest

from surat.imapd.compress import Deflate
from surat.imapd.errors import CommandError, PreparedReply, UserError, error_reply
from surat.proto.imap.writer import Code
from surat.store.base import AlreadyExists, InvalidName, NotFound, QuotaExceeded


def test_deflate_round_trip_with_sync_flush() -> None:
    ours = Deflate()
    peer_in = zlib.decompressobj(-15)
    # Each write can be decoded on its own: the client must not wait for more data (RFC 4978 §4).
    assert peer_in.decompress(ours.compress(b"* OK first\r\n")) == b"* OK first\r\n"
    assert peer_in.decompress(ours.compress(b"a OK second\r\n")) == b"a OK second\r\n"
    assert ours.compress(b"") == b""
    peer_out = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = peer_out.compress(b"a NOOP\r\n") + peer_out.flush(zlib.Z_SYNC_FLUSH)
    # Split at every offset: partial blocks decode to what is complete so far.
    for cut in range(len(data) + 1):
        d = Deflate()
        assert d.decompress(data[:cut]) + d.decompress(data[cut:]) == b"a NOOP\r\n"


def test_inflating_is_bounded() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"A" * 10_000_000) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 20_000
    d = Deflate()
    total = 0
    first = d.decompress(data, max_output=65536)
    assert len(first) == 65536 and d.has_pending_input
    total += len(first)
    while d.has_pending_input:
        piece = d.decompress(b"", max_output=65536)
        assert len(piece) <= 65536
        total += len(piece)
    assert total == 10_000_000


def test_corrupt_stream() -> None:
    with pytest.raises(zlib.error):
        Deflate().decompress(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("exc", "line", "bad"),
    [
        (CommandError("no such thing"), b"t BAD no such thing\r\n", True),
        (UserError("nope", Code.TRYCREATE), b"t NO [TRYCREATE] nope\r\n", False),
        (NotFound("mailbox x"), b"t NO [NONEXISTENT] no such mailbox\r\n", False),
        (AlreadyExists("x"), b"t NO [ALREADYEXISTS] mailbox already exists\r\n", False),
        (InvalidName("bad name"), b"t NO [CANNOT] bad name\r\n", False),
        (QuotaExceeded("over"), b"t NO [OVERQUOTA] quota exceeded\r\n", False),
        (PreparedReply(b"t NO [TRYCREATE] x\r\n", False), b"t NO [TRYCREATE] x\r\n", False),
    ],
)
def test_error_reply(exc: Exception, line: bytes, bad: bool) -> None:
    reply = error_reply("t", exc)
    assert (reply.line, reply.bad) == (line, bad)


def test_unexpected_error_is_serverbug_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        reply = error_reply("t", ZeroDivisionError("secret detail"), command="FETCH")
    assert reply.line == b"t NO [SERVERBUG] internal server error\r\n"
    assert not reply.bad
    assert "imap.server_bug" in caplog.text
    assert caplog.records[0].exc_info is not None
