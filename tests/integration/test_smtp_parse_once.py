"""The end of DATA reads the message once and hands the MessageInfo on (issue 11 item 7): what the SMTP
service gives the store must be exactly what scanning the stored bytes (trace fields first) gives."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import USER, Raw, RunningServer, inbox
from test_smtp_server import submission

from surat.message.info import compute_message_info
from surat.smtpd.message import Spool
from surat.store.base import Delivery

MULTIPART = (
    b"From: a@remote.example\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\none\r\n"
    b'--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
    b"--b2\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b2--\r\n"
    b"--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\nSubject: inner\r\n\r\nin\r\n"
    b"--b1--\r\nepilogue\r\n"
)
MESSAGES = {
    "plain": b"From: a@remote.example\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n",
    "multipart": MULTIPART,
    "8bit": "From: a@remote.example\r\nSubject: ünïcode\r\n\r\nbödy\r\n".encode(),
    "no body": b"From: a@remote.example\r\nSubject: empty\r\n\r\n",
    "header only": b"From: a@remote.example\r\nSubject: no empty line\r\n",
    "no header": b"\r\njust a body\r\n",
    "not a header": b"just text, no header\r\n",
    "bare LF": b"From: a@remote.example\nSubject: lf\n\nline one\nline two\n",
    "folded": b"From: a@remote.example\r\nSubject: folded\r\n\tsubject\r\n\r\nx\r\n",
}
# Over Spool.MEMORY_LIMIT (1 MiB): staged in the store's blob area during DATA, so the info handed on
# is computed from the staged bytes, not from memory. A multipart with a base64 attachment of 76-octet
# lines (RFC 2045 §6.8) and a text part after it.
STAGED = MULTIPART.replace(
    b"--b1--\r\n",
    b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + (b"QUJD" * 19 + b"\r\n") * 15_000
    + b"--b1\r\nContent-Type: text/plain\r\n\r\nlast\r\n--b1--\r\n",
)


@pytest.fixture
def handed_on(server: RunningServer) -> Iterator[list[Delivery]]:
    """Every delivery the SMTP service hands the store."""
    store = server.store
    seen: list[Delivery] = []
    deliver = store.deliver

    async def recording(delivery: Delivery) -> Any:
        seen.append(delivery)
        return await deliver(delivery)

    store.deliver = recording
    try:
        yield seen
    finally:
        del store.deliver


def dot_stuffed(message: bytes) -> bytes:
    lines = message.split(b"\n")
    return b"\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_mx_hands_on_the_info_of_the_stored_bytes(
    server: RunningServer, raw: Raw, handed_on: list[Delivery], name: str
) -> None:
    raw.envelope()
    assert raw.command(b"DATA\r\n").startswith(b"354")
    message = MESSAGES[name]
    ending = b"" if message.endswith(b"\r\n") else b"\r\n"
    assert raw.command(dot_stuffed(message) + ending + b".\r\n").startswith(b"250 ")
    (stored,) = inbox(server, USER)
    (delivery,) = handed_on
    assert delivery.staged is None  # small: in memory
    assert delivery.info is not None  # computed at the end of DATA, not by the store
    assert delivery.info == compute_message_info(io.BytesIO(stored))
    assert delivery.info.size == len(stored)


def test_mx_hands_on_the_info_of_a_staged_message(
    server: RunningServer, raw: Raw, handed_on: list[Delivery]
) -> None:
    raw.envelope()
    assert raw.command(b"DATA\r\n").startswith(b"354")
    assert raw.command(STAGED + b".\r\n").startswith(b"250 ")
    (stored,) = inbox(server, USER)
    assert len(stored) > Spool.MEMORY_LIMIT
    (delivery,) = handed_on
    assert delivery.staged is not None and delivery.content is None
    assert delivery.info is not None
    assert delivery.info == compute_message_info(io.BytesIO(stored))
    assert delivery.info.size == len(stored)
    assert [part.type for part in delivery.info.body.parts] == [
        "text",
        "multipart",
        "message",
        "application",
        "text",
    ]


@pytest.mark.parametrize("name", ["plain", "multipart", "8bit", "no body", "staged"])
def test_submission_hands_on_the_info_with_added_fields(
    server: RunningServer, handed_on: list[Delivery], name: str
) -> None:
    # To ourselves: the stored copy has Return-Path, Received, then the Date and Message-ID we add.
    message = STAGED if name == "staged" else MESSAGES[name]
    message = message.replace(b"a@remote.example", USER.encode())
    with submission(server) as client:
        client.sendmail(USER, [USER], message)
    (stored,) = inbox(server, USER)
    assert b"\r\nDate: " in stored and b"\r\nMessage-ID: <" in stored
    (delivery,) = handed_on
    assert (delivery.staged is not None) == (name == "staged")
    assert delivery.info is not None
    assert delivery.info == compute_message_info(io.BytesIO(stored))
