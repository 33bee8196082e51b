"""smtpd's spool file: trace headers in front, submission additions, header section found in any split."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.message.headers import MAX_HEADER_SECTION, read_header
from surat.message.info import compute_message_info
from surat.proto.smtp.address import UnsafeText
from surat.smtpd.message import Spool, protocol_name, received_header, return_path
from surat.store.base import StoreError
from surat.store.blobs import FileBlobStore

PREFIX = return_path("a@example.org") + b"Received: test\r\n"


async def spool_bytes(directory: Path, pieces: list[bytes], add: bool) -> tuple[bytes, Spool, bool]:
    """(content, spool, whether it was staged in the store rather than kept in memory)."""
    blobs = FileBlobStore(directory / "blobs", directory / "tmp")
    spool = Spool(blobs, PREFIX, add_missing_for="mail.example.test" if add else None)
    for piece in pieces:
        await spool.write(piece)
    await spool.finish()
    staged = spool.staged is not None
    if spool.staged is None:
        content = spool.content
        assert content is not None
    else:
        assert spool.content is None
        content = await spool.staged.read()
    assert len(content) == spool.size
    # The header read once at the end of DATA, handed on, gives what reading the bytes gives.
    assert await spool.message_info() == compute_message_info(io.BytesIO(content))
    sent = spool.sent_header()
    if sent is not None:
        assert sent == read_header(await spool.message())
    stored = spool.stored_header()
    if stored is not None:
        assert stored == read_header(content)
    spool.discard()
    assert not (directory / "tmp").exists() or list((directory / "tmp").iterdir()) == []
    return content, spool, staged


MESSAGE = b"From: Alice <Alice@Example.test>, bob@example.test\r\nSubject: x\r\n\r\nbody\r\n\r\nmore\r\n"


async def test_mx_spool_is_prefix_plus_message(tmp_path: Path) -> None:
    for cut in range(len(MESSAGE) + 1):
        content, spool, staged = await spool_bytes(tmp_path, [MESSAGE[:cut], MESSAGE[cut:]], add=False)
        assert content == PREFIX + MESSAGE
        assert spool.header is not None  # read once, for DKIM, DMARC and the MessageInfo
        assert spool.header.body_start == MESSAGE.index(b"\r\n\r\n") + 4
        assert spool.stored_header() is not None
        assert spool.added == []
        assert not staged  # small messages stay in memory


async def test_large_message_moves_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Spool, "MEMORY_LIMIT", 100)
    message = MESSAGE + b"z" * 150 + b"\r\n"
    for cut in (0, 10, len(message) - 1):
        content, _spool, staged = await spool_bytes(tmp_path, [message[:cut], message[cut:]], add=False)
        assert staged
        assert content == PREFIX + message
    assert list((tmp_path / "tmp").iterdir()) == []  # discard() removed every staged file


async def test_submission_adds_date_and_message_id(tmp_path: Path) -> None:
    for cut in range(len(MESSAGE) + 1):
        content, spool, _staged = await spool_bytes(tmp_path, [MESSAGE[:cut], MESSAGE[cut:]], add=True)
        assert spool.added == ["Date", "Message-ID"]
        assert spool.header is not None
        assert spool.header.values(b"from") == [b"Alice <Alice@Example.test>, bob@example.test"]
        assert content.startswith(PREFIX + b"Date: ")
        head, _, body = content.partition(b"\r\n\r\n")
        assert b"\r\nMessage-ID: <" in head and head.endswith(b"\r\nSubject: x")
        assert body == b"body\r\n\r\nmore\r\n"


async def test_present_fields_are_not_added(tmp_path: Path) -> None:
    message = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id: <a@b>\r\n\r\nx\r\n"
    content, spool, _staged = await spool_bytes(tmp_path, [message], add=True)
    assert spool.added == []
    assert content == PREFIX + message


@pytest.mark.parametrize("message", [b"", b"\r\nno headers\r\n", b"Subject: only headers\r\n"])
async def test_odd_messages(tmp_path: Path, message: bytes) -> None:
    content, spool, _staged = await spool_bytes(tmp_path, [message], add=True)
    assert content.endswith(message)
    assert spool.header is not None and spool.header.values(b"from") == []


async def test_huge_header_section_is_written_through(tmp_path: Path) -> None:
    big = b"X-Filler: " + b"y" * 900 + b"\r\n"
    message = big * (MAX_HEADER_SECTION // len(big) + 20) + b"\r\nbody\r\n"
    content, spool, _staged = await spool_bytes(
        tmp_path, [message[i : i + 4096] for i in range(0, len(message), 4096)], add=True
    )
    assert content == PREFIX + message
    assert spool.header is None


def test_received_header() -> None:
    header = received_header(
        helo="client(evil)\x00",
        peer_ip="192.0.2.1",
        hostname="mail.example.test",
        protocol=protocol_name(extended=True, tls=True, authenticated=True, smtputf8=False),
        transaction_id="abc.1",
        tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        auth_user="alice@example.test",
        recipient="bob@example.test",
        when=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert header == (
        b"Received: from client?evil?? ([192.0.2.1])\r\n"
        b"\tby mail.example.test (Surat) with ESMTPSA id abc.1\r\n"
        b"\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384)\r\n"
        b"\t(authenticated as alice@example.test)\r\n"
        b"\tfor <bob@example.test>;\r\n"
        b"\tTue, 02 Jan 2024 03:04:05 +0000\r\n"
    )
    assert protocol_name(extended=False, tls=False, authenticated=False, smtputf8=False) == "SMTP"
    assert protocol_name(extended=True, tls=False, authenticated=False, smtputf8=True) == "UTF8SMTP"


def test_trace_fields_refuse_control_characters() -> None:
    # the second check where the envelope is rendered (the engine refuses such commands first)
    with pytest.raises(UnsafeText, match="Return-Path"):
        return_path("a@[IPv6:::1%\rAuthentication-Results: x]")
    with pytest.raises(UnsafeText, match="Received"):
        received_header(
            helo="client",
            peer_ip="192.0.2.1",
            hostname="mail.example.test",
            protocol="ESMTP",
            transaction_id="abc.1",
            tls=None,
            auth_user=None,
            recipient="bob@example.test>\r\nX-Evil: 1",
            when=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        )


async def test_rewrite_of_a_staged_message_restages_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MX: Authentication-Results goes on top of a message that already left memory.
    monkeypatch.setattr(Spool, "MEMORY_LIMIT", 100)
    blobs = FileBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    message = MESSAGE + b"z" * 150 + b"\r\n"
    spool = Spool(blobs, PREFIX)
    await spool.write(message)
    await spool.finish()
    first = spool.staged
    assert first is not None and await spool.message() == message
    await spool.rewrite(b"Authentication-Results: x\r\n", message[:20])
    assert spool.staged is not None and spool.staged is not first
    assert await spool.staged.read() == b"Authentication-Results: x\r\n" + message[:20]
    assert spool.size == spool.staged.size and await spool.message() == message[:20]
    assert len(list((tmp_path / "tmp").iterdir())) == 1  # the first staged file was aborted
    with pytest.raises(StoreError):
        await first.write(b"late")
    spool.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
