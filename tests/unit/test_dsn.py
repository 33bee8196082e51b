"""DSN composition (RFC 3464 / RFC 6533), checked by parsing the output back with `email`."""

from __future__ import annotations

import email
import email.policy
import quopri
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from io import BytesIO

import pytest

from surat.delivery.dsn import (
    Action,
    Dsn,
    DsnReport,
    ReportedRecipient,
    Ret,
    build_dsn,
    should_send_dsn,
    status_from_reply,
)
from surat.proto.smtp.address import UnsafeText

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ARRIVED = NOW - timedelta(hours=5)
HOST = "mail.example.com"

ORIGINAL_HEADERS = (
    b"Return-Path: <alice@example.com>\r\n"
    b"Received: from client by mail.example.com;\r\n"
    b"\tThu, 26 Nov 2026 07:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <q1@example.com>\r\n"
)
ORIGINAL_BODY = b"Hello Bob,\r\n\r\nthe numbers are fine.\r\n"
ORIGINAL = ORIGINAL_HEADERS + b"\r\n" + ORIGINAL_BODY

BOB_FAILED = ReportedRecipient(
    address="bob@example.org",
    orcpt="rfc822;bob+2Bnumbers@example.org",
    action=Action.FAILED,
    status="5.1.1",
    remote_mta="mx.example.org",
    diagnostic="550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",
    last_attempt=NOW,
)


def _report(*recipients: ReportedRecipient, **overrides: object) -> DsnReport:
    values: dict[str, object] = {
        "reporting_mta": HOST,
        "sender": "alice@example.com",
        "recipients": recipients or (BOB_FAILED,),
        "arrival_date": ARRIVED,
    }
    values.update(overrides)
    return DsnReport(**values)  # type: ignore[arg-type]


def _build(report: DsnReport, original: bytes = ORIGINAL, **kwargs: object) -> Dsn:
    return build_dsn(report, BytesIO(original), now=NOW, **kwargs)  # type: ignore[arg-type]


def _parse(dsn: Dsn) -> EmailMessage:
    policy = email.policy.SMTPUTF8 if dsn.smtputf8 else email.policy.SMTP
    message = email.message_from_bytes(dsn.message, policy=policy)
    assert isinstance(message, EmailMessage)
    return message


def _subparts(part: Message) -> list[Message]:
    """A multipart's parts, message/rfc822's message, or message/delivery-status's field blocks."""
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [item for item in payload if isinstance(item, Message)]


def _parts(message: EmailMessage) -> list[Message]:
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = _subparts(message)
    assert len(parts) == 3
    return parts


def _decoded(part: Message) -> bytes:
    body = part.get_payload(decode=True)
    assert isinstance(body, bytes)
    return body


def _raw_part_body(dsn: Dsn, index: int) -> bytes:
    """The bytes of part `index` after its header section, exactly as written."""
    match = re.search(rb'boundary="([^"]+)"', dsn.message)
    assert match is not None
    delimiter = b"\r\n--" + match.group(1)
    chunks = dsn.message.split(delimiter)
    part = chunks[index + 1]  # chunk 0 is the header and preamble
    assert part.startswith(b"\r\n")
    return part[2:].split(b"\r\n\r\n", 1)[1]


def _status_blocks(text: str) -> list[dict[str, str]]:
    """RFC 3464 §2.1: blocks of fields separated by blank lines; folded lines unfolded."""
    blocks = []
    for raw in re.split(r"\r\n\r\n", text.strip("\r\n")):
        unfolded = re.sub(r"\r\n[ \t]+", " ", raw)
        fields: dict[str, str] = {}
        for line in unfolded.split("\r\n"):
            name, _, value = line.partition(":")
            assert name not in fields, f"duplicate {name}"
            fields[name] = value.strip()
        blocks.append(fields)
    return blocks


def _assert_wire_clean(dsn: Dsn) -> None:
    data = dsn.message
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert all(len(line) <= 998 for line in data.split(b"\r\n")), "line over 998 octets"
    assert data.endswith(b"\r\n")
    assert b"\x00" not in data
    if not dsn.eight_bit and not dsn.smtputf8:
        assert data.isascii(), "a 7-bit DSN must be ASCII"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() or dsn.smtputf8, "UTF-8 in the header needs SMTPUTF8"


# ----------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("sender", "notify", "action", "authenticated", "expected"),
    [
        ("alice@example.com", (), Action.FAILED, False, True),
        ("alice@example.com", ("FAILURE",), Action.FAILED, False, True),
        ("alice@example.com", ("SUCCESS",), Action.FAILED, False, False),
        ("alice@example.com", ("DELAY",), Action.FAILED, False, False),
        ("alice@example.com", ("NEVER",), Action.FAILED, True, False),
        ("", (), Action.FAILED, True, False),
        ("<>", ("FAILURE",), Action.FAILED, False, False),
        ("alice@example.com", (), Action.DELAYED, False, False),
        ("alice@example.com", (), Action.DELAYED, True, True),
        ("alice@example.com", ("delay",), Action.DELAYED, False, True),
        ("alice@example.com", ("FAILURE",), Action.DELAYED, True, False),
        ("", ("DELAY",), Action.DELAYED, True, False),
        ("alice@example.com", (), Action.DELIVERED, True, False),
        ("alice@example.com", ("SUCCESS",), Action.DELIVERED, False, True),
        ("alice@example.com", ("SUCCESS", "FAILURE"), Action.RELAYED, False, True),
        ("alice@example.com", ("FAILURE",), Action.RELAYED, False, False),
        ("alice@example.com", ("SUCCESS",), Action.EXPANDED, False, True),
        ("", ("SUCCESS",), Action.DELIVERED, False, False),
    ],
)
def test_should_send_dsn(
    sender: str, notify: tuple[str, ...], action: Action, authenticated: bool, expected: bool
) -> None:
    assert should_send_dsn(sender, notify, action, authenticated=authenticated) is expected


@pytest.mark.parametrize(
    ("reply", "permanent", "status"),
    [
        ("550 5.1.1 no such user", None, "5.1.1"),
        ("452-4.2.2 mailbox full\r\n452 4.2.2 try later", None, "4.2.2"),
        ("550 no such user", None, "5.0.0"),
        ("421 closing", None, "4.0.0"),
        ("550 4.1.1 classes disagree", None, "5.0.0"),
        ("connection refused", None, "4.0.0"),
        ("451 4.4.1 no answer", True, "5.4.1"),
        ("550 5.7.1 spam", False, "4.7.1"),
        ("250 2.0.0 ok", None, "2.0.0"),
    ],
)
def test_status_from_reply(reply: str, permanent: bool | None, status: str) -> None:
    assert status_from_reply(reply, permanent=permanent) == status


@pytest.mark.parametrize("status", ["5.1", "6.1.1", "5.1.1 ", "x", "5.1.1000"])
def test_bad_status_rejected(status: str) -> None:
    with pytest.raises(ValueError):
        ReportedRecipient("bob@example.org", None, Action.FAILED, status)


def test_empty_report_and_naive_dates_rejected() -> None:
    with pytest.raises(ValueError):
        _build(DsnReport(HOST, "alice@example.com", (), ARRIVED))
    with pytest.raises(ValueError):
        _build(_report(arrival_date=datetime(2026, 11, 26)))


# ----------------------------------------------------------------------------------------- failure


def test_failure_dsn_with_headers_only() -> None:
    stream = BytesIO(ORIGINAL)
    dsn = build_dsn(_report(envid="q1+2Bretry"), stream, now=NOW, message_id="<dsn1@mail.example.com>")
    # RET=HDRS reads the header section and no further.
    assert stream.tell() == len(ORIGINAL_HEADERS) + 2
    assert (dsn.sender, dsn.recipient, dsn.smtputf8, dsn.eight_bit) == ("", "alice@example.com", False, False)
    _assert_wire_clean(dsn)

    message = _parse(dsn)
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert message["To"] == "alice@example.com"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message["Message-ID"] == "<dsn1@mail.example.com>"
    assert "undelivered" in message["Subject"].lower()
    assert parsedate_to_datetime(message["Date"]) == NOW

    text, status, returned = _parts(message)
    assert text.get_content_type() == "text/plain"
    body = _decoded(text)
    human = body.decode()
    assert "<bob@example.org>" in human
    assert "5.1.1" in human
    assert "mx.example.org" in human
    assert "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown" in human

    assert status.get_content_type() == "message/delivery-status"
    blocks = _subparts(status)
    assert len(blocks) == 2
    per_message, per_recipient = blocks
    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert per_message["Original-Envelope-Id"] == "q1+retry"  # xtext-decoded
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVED
    assert per_recipient["Original-Recipient"] == "rfc822; bob+numbers@example.org"
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.org"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.example.org"
    assert per_recipient["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
    )
    assert parsedate_to_datetime(per_recipient["Last-Attempt-Date"]) == NOW
    assert per_recipient["Will-Retry-Until"] is None

    assert returned.get_content_type() == "text/rfc822-headers"
    assert _raw_part_body(dsn, 2) == ORIGINAL_HEADERS  # byte for byte, folding kept
    assert ORIGINAL_BODY not in dsn.message


def test_header_fields_come_in_a_readable_order() -> None:
    head = _build(_report()).message.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if not line.startswith((" ", "\t"))]
    assert names == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "MIME-Version",
        "Content-Type",
    ]


def test_several_recipients_and_optional_fields() -> None:
    carol = ReportedRecipient("carol@example.net", None, Action.FAILED, "5.4.4")
    dsn = _build(_report(BOB_FAILED, carol))
    _assert_wire_clean(dsn)
    blocks = _status_blocks(_raw_part_body(dsn, 1).decode("ascii"))
    assert [block.get("Final-Recipient") for block in blocks] == [
        None,
        "rfc822; bob@example.org",
        "rfc822; carol@example.net",
    ]
    assert blocks[2] == {
        "Final-Recipient": "rfc822; carol@example.net",
        "Action": "failed",
        "Status": "5.4.4",
    }
    assert "Original-Envelope-Id" not in blocks[0]


def test_multiline_and_hostile_diagnostics_stay_one_field() -> None:
    hostile = ReportedRecipient(
        "bob@example.org",
        None,
        Action.FAILED,
        "5.7.1",
        "mx.example.org",
        "550-5.7.1 first line\r\n550 5.7.1 second\r\nX-Injected: yes " + "A" * 3000,
    )
    dsn = _build(_report(hostile))
    _assert_wire_clean(dsn)
    blocks = _status_blocks(_raw_part_body(dsn, 1).decode("ascii"))
    assert "X-Injected" not in blocks[1]
    diagnostic = blocks[1]["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550-5.7.1 first line 550 5.7.1 second X-Injected: yes AAAA")
    assert len(diagnostic) < 3200
    human = _decoded(_parts(_parse(dsn))[0])
    assert all(len(line) <= 78 for line in human.splitlines())


def test_line_endings_of_the_original_are_normalised() -> None:
    lf_original = ORIGINAL.replace(b"\r\n", b"\n")
    for ret in (Ret.HDRS, Ret.FULL):
        dsn = _build(_report(ret=ret), lf_original)
        _assert_wire_clean(dsn)
        expected = ORIGINAL_HEADERS if ret is Ret.HDRS else ORIGINAL
        assert _raw_part_body(dsn, 2) == expected


def test_empty_or_headerless_original() -> None:
    for original in (b"", b"\r\nbody only\r\n"):
        dsn = _build(_report(), original)
        _assert_wire_clean(dsn)
        assert _raw_part_body(dsn, 2) == b""


def test_oversized_header_section_is_cut_at_a_line() -> None:
    many = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 60) for i in range(6000))  # ~460 KiB
    dsn = _build(_report(), many + b"\r\nbody\r\n")
    _assert_wire_clean(dsn)
    returned = _raw_part_body(dsn, 2)
    assert 200 * 1024 < len(returned) <= 256 * 1024
    assert many.startswith(returned)
    assert returned.endswith(b"\r\n")


# ----------------------------------------------------------------------------------------- RET=FULL


def test_full_return_embeds_the_original_byte_for_byte() -> None:
    dsn = _build(_report(ret=Ret.FULL))
    _assert_wire_clean(dsn)
    assert not dsn.eight_bit
    returned = _parts(_parse(dsn))[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned["Content-Transfer-Encoding"] == "7bit"
    inner = _subparts(returned)[0]
    assert inner["Subject"] == "Quarterly numbers"
    assert inner.get_payload() == ORIGINAL_BODY.decode()
    assert _raw_part_body(dsn, 2) == ORIGINAL


def test_full_return_of_8bit_message_is_marked_8bit() -> None:
    original = ORIGINAL_HEADERS + b"Content-Type: text/plain; charset=latin-1\r\n\r\nZ\xfcrich\r\n"
    dsn = _build(_report(ret=Ret.FULL), original)
    _assert_wire_clean(dsn)
    assert dsn.eight_bit and not dsn.smtputf8
    returned = _parts(_parse(dsn))[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert _raw_part_body(dsn, 2) == original


def test_full_return_over_the_limit_falls_back_to_headers() -> None:
    big = ORIGINAL_HEADERS + b"\r\n" + b"x" * 5000 + b"\r\n"
    stream = BytesIO(big)
    dsn = build_dsn(_report(ret=Ret.FULL), stream, now=NOW, full_limit=1000)
    assert stream.tell() == 1001  # bounded read
    _assert_wire_clean(dsn)
    text, _, returned = _parts(_parse(dsn))
    assert returned.get_content_type() == "text/rfc822-headers"
    assert _raw_part_body(dsn, 2) == ORIGINAL_HEADERS
    human = _decoded(text)
    assert b"larger than 1000 bytes" in human


# ----------------------------------------------------------------------------------------- delay / success


def test_delay_dsn() -> None:
    until = ARRIVED + timedelta(days=5)
    delayed = ReportedRecipient(
        "bob@example.org",
        None,
        Action.DELAYED,
        "4.4.1",
        "mx.example.org",
        "421 4.4.1 try again later",
        NOW,
        until,
    )
    dsn = _build(_report(delayed))
    _assert_wire_clean(dsn)
    message = _parse(dsn)
    assert "delayed" in message["Subject"].lower()
    text, status, _ = _parts(message)
    recipient = _subparts(status)[1]
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.4.1"
    assert parsedate_to_datetime(recipient["Will-Retry-Until"]) == until
    human = _decoded(text)
    assert b"keeps trying" in human


def test_will_retry_until_only_for_delayed() -> None:
    failed = ReportedRecipient("bob@example.org", None, Action.FAILED, "4.4.7", will_retry_until=NOW)
    blocks = _status_blocks(_raw_part_body(_build(_report(failed)), 1).decode())
    assert "Will-Retry-Until" not in blocks[1]


@pytest.mark.parametrize("action", [Action.DELIVERED, Action.RELAYED, Action.EXPANDED])
def test_success_dsn(action: Action) -> None:
    ok = ReportedRecipient("bob@example.org", "rfc822;bob@example.org", action, "2.0.0", "mx.example.org")
    dsn = _build(_report(ok))
    _assert_wire_clean(dsn)
    message = _parse(dsn)
    assert "success" in message["Subject"].lower()
    recipient = _subparts(_parts(message)[1])[1]
    assert recipient["Action"] == action.value
    assert recipient["Status"] == "2.0.0"


def test_mixed_report_is_a_failure_report() -> None:
    ok = ReportedRecipient("carol@example.org", None, Action.DELIVERED, "2.0.0")
    delayed = ReportedRecipient("dave@example.org", None, Action.DELAYED, "4.0.0")
    assert "undelivered" in _parse(_build(_report(ok, BOB_FAILED)))["Subject"].lower()
    assert "delayed" in _parse(_build(_report(ok, delayed)))["Subject"].lower()


# ----------------------------------------------------------------------------------------- internationalisation


UTF8_HEADERS = "From: Jöran <jöran@exämple.com>\r\nTo: Bøb <bøb@example.org>\r\nSubject: Grüße\r\n".encode()


def test_smtputf8_message_uses_the_global_types() -> None:
    failed = ReportedRecipient(
        "bøb@example.org",
        "utf-8;b\\x{F8}b@example.org",
        Action.FAILED,
        "5.1.1",
        "mx.example.org",
        "550 5.1.1 nö",
    )
    dsn = _build(_report(failed, sender="jöran@exämple.com", smtputf8=True), UTF8_HEADERS + b"\r\nHallo\r\n")
    _assert_wire_clean(dsn)
    assert dsn.smtputf8 and dsn.eight_bit
    assert dsn.recipient == "jöran@exämple.com"
    message = _parse(dsn)
    assert message["To"] == "jöran@exämple.com"
    text, status, returned = _parts(message)
    assert status.get_content_type() == "message/global-delivery-status"
    assert returned.get_content_type() == "message/global-headers"
    assert _raw_part_body(dsn, 2) == UTF8_HEADERS
    blocks = _status_blocks(_raw_part_body(dsn, 1).decode("utf-8"))
    assert blocks[1]["Original-Recipient"] == "utf-8; bøb@example.org"
    assert blocks[1]["Final-Recipient"] == "utf-8; bøb@example.org"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 nö"
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    human = _decoded(text)
    assert "<bøb@example.org>" in human.decode("utf-8")


def test_smtputf8_full_return_is_message_global() -> None:
    original = UTF8_HEADERS + b"\r\nHallo\r\n"
    dsn = _build(_report(ret=Ret.FULL, smtputf8=True), original)
    _assert_wire_clean(dsn)
    assert dsn.eight_bit and not dsn.smtputf8  # ASCII sender: 8BITMIME is enough
    _, status, returned = _parts(_parse(dsn))
    assert returned.get_content_type() == "message/global"
    assert status.get_content_type() == "message/delivery-status"  # all its fields are ASCII
    assert _raw_part_body(dsn, 2) == original


def test_smtputf8_flag_with_ascii_content_keeps_the_classic_types() -> None:
    dsn = _build(_report(smtputf8=True))
    _assert_wire_clean(dsn)
    assert not dsn.eight_bit and not dsn.smtputf8
    _, status, returned = _parts(_parse(dsn))
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "text/rfc822-headers"


def test_utf8_address_without_smtputf8_is_escaped_in_the_classic_type() -> None:
    failed = ReportedRecipient("bøb+x@example.org", None, Action.FAILED, "5.1.1")
    dsn = _build(_report(failed))
    _assert_wire_clean(dsn)
    blocks = _status_blocks(_raw_part_body(dsn, 1).decode("ascii"))
    # RFC 6533 §3 utf-8-addr-xtext: non-ASCII and "+" as \x{HEX}
    assert blocks[1]["Final-Recipient"] == "utf-8; b\\x{F8}b\\x{2B}x@example.org"


def test_8bit_headers_without_smtputf8_are_returned_quoted_printable() -> None:
    latin = b"From: alice@example.com\r\nSubject: Z\xfcrich\r\n"
    dsn = _build(_report(), latin + b"\r\nbody\r\n")
    _assert_wire_clean(dsn)
    assert not dsn.eight_bit
    returned = _parts(_parse(dsn))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned["Content-Transfer-Encoding"] == "quoted-printable"
    decoded = quopri.decodestring(_raw_part_body(dsn, 2).replace(b"\r\n", b"\n"))
    assert decoded.replace(b"\n", b"\r\n") == latin


def test_a_sender_with_a_line_break_is_never_written_into_to() -> None:
    # RFC 5322 §2.2: a CR in the To: value would end the field and start a forged one
    with pytest.raises(UnsafeText, match="DSN To"):
        _build(_report(sender="a@[IPv6:::1]\r\nBcc: victim@example.org"))
    with pytest.raises(UnsafeText, match="DSN From"):
        _build(_report(reporting_mta="mx.example.org\rX-Evil: 1"))
