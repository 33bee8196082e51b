"""COMPRESS=DEFLATE framing (RFC 4978) and the error -> reply mapping of the IMAP shell."""

from __future__ import annotations

import logging
import zlib
from types import SimpleNamespace

import pytest

from surat.imapd.auth import starttls
from surat.imapd.compress import Deflate
from surat.imapd.errors import CommandError, PreparedReply, UserError, error_reply
from surat.imapd.session import Session
from surat.net.deadline import SessionClock
from surat.proto.imap.commands import StartTLS
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


class _OneBlockPerRead:
    """A connection whose every read returns one empty deflate block, then a compressed command."""

    def __init__(self, blocks: int, then: bytes) -> None:
        self.blocks = blocks
        self.then = then

    async def read(self, timeout: float) -> bytes:
        if self.blocks:
            self.blocks -= 1
            return b"\x00\x00\x00\xff\xff"  # RFC 1951 §3.2.4: an empty stored block
        return self.then


async def test_ten_thousand_empty_blocks_in_as_many_reads_do_not_recurse() -> None:
    # The old Session.read called itself once per read that inflated to nothing: RecursionError at ~1 000.
    peer = zlib.compressobj(6, zlib.DEFLATED, -15)
    command = peer.compress(b"a NOOP\r\n") + peer.flush(zlib.Z_SYNC_FLUSH)
    session = Session.__new__(Session)
    session.deflate = Deflate()
    session.conn = _OneBlockPerRead(10_000, command)  # type: ignore[assignment]
    session.service = SimpleNamespace(autologout=60.0)  # type: ignore[assignment]
    session.account = None
    session.clock = SessionClock(60.0, 3600.0)
    session.reader = SimpleNamespace(buffered=0)  # type: ignore[assignment]
    assert await session.read() == b"a NOOP\r\n"


async def test_starttls_is_refused_while_compress_is_active() -> None:
    # Unreachable through the dispatch table (COMPRESS needs a login, STARTTLS comes before one); the
    # handler keeps the rule on its own.
    session = SimpleNamespace(tls=False, starttls_available=True, deflate=Deflate())
    with pytest.raises(CommandError, match="COMPRESS is active"):
        await starttls(session, StartTLS("a"))  # type: ignore[arg-type]
