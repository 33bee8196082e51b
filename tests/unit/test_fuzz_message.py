"""Fuzz: surat.message's header reader and address parser, and compute_message_info, on random and
mutated messages: a result (with the documented defect flags), never another exception, within the
per-input deadline."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.message.address import Mailboxes, mailboxes, parse_address_list
from surat.message.headers import MAX_HEADER_SECTION, _by_lines, field_key, read_header, with_fields_above
from surat.message.info import MessageInfo, compute_message_info
from surat.message.mime import BodyPart

pytestmark = pytest.mark.fuzz

_HEADER_PIECES = st.sampled_from(
    [
        b"From",
        b"From ",
        b"Subject",
        b"X-A",
        b":",
        b" : ",
        b" ",
        b"\t",
        b"\r\n",
        b"\n",
        b"\r",
        b"\r\n\r\n",
        b"\r\n ",
        b"a@b.example",
        b"<",
        b">",
        b"(",
        b'"',
        b"\x00",
        b"\xff",
        "ü".encode(),
        b"=?utf-8?q?x?=",
        b"--b\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
    ]
)
_MESSAGES = st.lists(_HEADER_PIECES, max_size=40).map(b"".join) | st.binary(max_size=300)


def _check_header(message: bytes) -> None:
    header = read_header(message)
    assert 0 <= header.body_start <= len(message)
    assert len(header.names) == len(header.keys) == len(header.raws)
    for name, key, raw in zip(header.names, header.keys, header.raws, strict=True):
        assert field_key(name + b":" + raw.split(b"\r\n")[0]) == (key, len(name) + 1)
    if b"\n" not in message.replace(b"\r\n", b""):
        # the one rule: the CRLF fast path and the line path agree on every input
        slow = _by_lines(message, MAX_HEADER_SECTION)
        assert (header.names, header.keys, header.raws, header.body_start) == (
            slow.names,
            slow.keys,
            slow.raws,
            slow.body_start,
        )
    spanned = read_header(message, spans=True)
    assert spanned.keys == header.keys and len(spanned.spans) == len(header.keys)
    for (start, end), name in zip(spanned.spans, spanned.names, strict=True):
        assert message[start:end].startswith(name + b":")


@fuzz_settings()
@given(_MESSAGES)
def test_random_header_sections_read(message: bytes) -> None:
    _check_header(message)


def _mutate(
    data: st.DataObject,
    message: bytearray,
    pieces: st.SearchStrategy[bytes],
    edits: st.SearchStrategy[int],
    *,
    line_ends: bool = False,
) -> None:
    """Insert, delete or replace `pieces` at random places in `message`; with `line_ends`, also drop
    the CR, or the CR LF, of a line end."""
    actions = ["insert", "delete", "replace", *(["drop line end"] if line_ends else [])]
    for _ in range(data.draw(edits)):
        pos = data.draw(st.integers(0, len(message)))
        action = data.draw(st.sampled_from(actions))
        if action == "drop line end":
            at = message.find(b"\r\n", pos)
            if at >= 0:
                del message[at : at + data.draw(st.sampled_from([1, 2]))]
            continue
        octets = data.draw(pieces)
        if action == "insert":
            message[pos:pos] = octets
        elif action == "delete":
            del message[pos : pos + len(octets)]
        else:
            message[pos : pos + len(octets)] = octets


@fuzz_settings()
@given(st.data())
def test_mutated_messages_read(data: st.DataObject) -> None:
    message = bytearray(
        b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\nFrom : A <a@example.test>\r\n"
        b"Subject: =?utf-8?q?hi?=\r\n folded\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\n\r\ninner\r\n--b--\r\n"
    )
    _mutate(data, message, st.binary(min_size=1, max_size=4) | _HEADER_PIECES, st.integers(0, 8))
    _check_header(bytes(message))
    info = compute_message_info(io.BytesIO(bytes(message)))
    assert info.body.end == len(message)
    assert MessageInfo.from_json(info.to_json()) == info
    _check_header_handed_on(bytes(message), info)


@fuzz_settings()
@given(_MESSAGES)
def test_random_messages_give_message_info(message: bytes) -> None:
    info = compute_message_info(io.BytesIO(message))
    assert info.body.end == len(message)
    assert MessageInfo.from_json(info.to_json()) == info
    _check_header_handed_on(message, info)


_TRACE = b"Return-Path: <a@b.example>\r\nReceived: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"


def _check_header_handed_on(message: bytes, info: MessageInfo) -> None:
    """The end of DATA hands its header on: the MessageInfo must be the same as from reading the bytes,
    for the message and for the stored copy with our trace fields on top."""
    header = read_header(message)
    assert compute_message_info(io.BytesIO(message), header) == info
    stored = with_fields_above(_TRACE, header)
    if stored is not None:
        assert stored == read_header(_TRACE + message)
        assert compute_message_info(io.BytesIO(_TRACE + message), stored) == compute_message_info(
            io.BytesIO(_TRACE + message)
        )


_ADDRESS_PIECES = st.sampled_from(
    [*'<>()[]:;@,."\\ \t', "a", "bob", "example.test", "Name", "=?utf-8?q?x?=", "ü", "\r\n ", "\x00"]
)


@fuzz_settings()
@given(st.lists(_ADDRESS_PIECES, max_size=40).map("".join) | st.text(max_size=80))
def test_random_address_lists_parse(value: str) -> None:
    parse_address_list(value)  # lenient: some addresses, never an exception
    parsed = mailboxes(value)
    assert isinstance(parsed, Mailboxes)
    if parsed.clean:
        # a clean parse is stable: its addr-specs, written out as a list, read back the same and clean
        assert parsed.addr_specs
        assert all("@" in spec for spec in parsed.addr_specs)
        assert mailboxes(", ".join(parsed.addr_specs)) == parsed


_NESTED = (
    b'From: a@example.test\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
    b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
    b"--inner\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+\r\n--inner--\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\nContent-Type: multipart/mixed; boundary=deep\r\n"
    b"\r\n--deep\r\n\r\ndeep part\r\n--deep--\r\n"
    b"--outer\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\r\n--outer--\r\nepilogue\r\n"
)
_MIME_PIECES = st.sampled_from(
    [b"--outer", b"--outer--", b"--inner", b"--inner--", b"--deep", b"--", b"-", b"\r\n", b"\n", b"\r", b"\r\n\r\n",
     b"Content-Type: multipart/mixed; boundary=outer\r\n", b"boundary=", b'"', b"message/rfc822", b" ", b"\t"]
)  # fmt: skip


def _check_part(part: BodyPart, start: int, end: int) -> None:
    """Every part lies inside its parent, its header before its body, children in order."""
    assert start <= part.header_start <= part.body_start <= part.end <= end
    assert part.size == part.end - part.body_start and part.lines >= 0
    previous = part.body_start
    for child in part.parts:
        _check_part(child, previous, part.end)
        previous = child.end
    if part.message is not None:
        _check_part(part.message, part.body_start, part.end)


@fuzz_settings()
@given(st.data())
def test_mutated_multiparts_give_message_info(data: st.DataObject) -> None:
    """Boundaries cut, duplicated or misplaced, CRLFs lost or bare, nesting broken: a MessageInfo whose
    parts lie where the message is, never an exception, within the per-input deadline."""
    message = bytearray(_NESTED)
    _mutate(
        data, message, _MIME_PIECES | st.binary(min_size=1, max_size=3), st.integers(1, 10), line_ends=True
    )
    raw = bytes(message)
    info = compute_message_info(io.BytesIO(raw))
    assert info.body.end == len(raw)
    _check_part(info.body, 0, len(raw))
    assert MessageInfo.from_json(info.to_json()) == info
    _check_header_handed_on(raw, info)
