"""Delivery status notifications (RFC 3464, RFC 3461 §6; internationalised per RFC 6533).

`build_dsn` composes the report with the standard library's `email` package:

    multipart/report; report-type=delivery-status          (RFC 6522)
      text/plain                      what happened, for people
      message/delivery-status         per-message and per-recipient fields, for programs
      text/rfc822-headers | message/rfc822                  RET=HDRS (default) | RET=FULL

For SMTPUTF8 messages whose addresses or headers are not ASCII, the machine part becomes
message/global-delivery-status and the original message/global(-headers) (RFC 6533 §6).

The DSN itself is sent from the null reverse-path (RFC 3461 §6.2, RFC 5321 §4.5.5) to the
original envelope sender; `should_send_dsn` says when one is owed at all.
"""

from __future__ import annotations

import enum
import quopri
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import charset as email_charset
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from io import BytesIO
from typing import BinaryIO

from surat.delivery.schedule import delay_notice_wanted
from surat.proto.smtp.address import header_safe, xtext_decode

# RET=FULL returns at most this much of the original; a larger message is returned as headers
# only, so one huge bounce cannot double the load on the sender's mailbox (Postfix caps at 50 KiB
# of body by default; we are more generous because RET=FULL was explicitly asked for).
FULL_LIMIT = 10 * 1024 * 1024
# A header section larger than this is cut at a line boundary (smtpd limits headers far below).
HEADER_LIMIT = 256 * 1024
_FOLD_WIDTH = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
_WORD_MAX = 900  # ... and MUST be at most 998
_DIAGNOSTIC_MAX = 4096  # a remote reply beyond this is cut: nobody reads more, and it bounds the DSN

_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_REPLY_STATUS_RE = re.compile(r"^([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_REPLY_CODE_RE = re.compile(r"^([245])\d\d(?:[ -]|$)")
_NEWLINES_RE = re.compile(rb"\r\n|\r|\n")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# RFC 6533 §3 QCHAR: printable ASCII except "+", "=", "\" (which need \x{..} like non-ASCII).
_QCHAR = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"+", "=", "\\"}


class Action(enum.Enum):
    """RFC 3464 §2.3.3."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


class Ret(enum.Enum):
    """RFC 3461 §4.3: what of the original message comes back with the DSN."""

    HDRS = "HDRS"
    FULL = "FULL"


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    address: str  # the recipient as we tried it (Final-Recipient)
    orcpt: str | None  # RFC 3461 ORCPT as received: "rfc822;" + xtext
    action: Action
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    remote_mta: str | None = None  # host name of the server that answered
    diagnostic: str | None = None  # its reply, e.g. "550 5.1.1 <bob@example.org>: no such user"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # only reported for Action.DELAYED (RFC 3464 §2.3.9)

    def __post_init__(self) -> None:
        if not _STATUS_RE.match(self.status):
            raise ValueError(f"not an RFC 3463 status code: {self.status!r}")


@dataclass(frozen=True, slots=True)
class DsnReport:
    """What the queue knows about the original message and the recipients to report on."""

    reporting_mta: str  # our host name (the config's `hostname`)
    sender: str  # the original envelope sender: the DSN goes to it
    recipients: tuple[ReportedRecipient, ...]
    arrival_date: datetime
    envid: str | None = None  # RFC 3461 ENVID, xtext-encoded as received
    ret: Ret | None = None  # None: the default, headers only
    smtputf8: bool = False  # the original was sent with SMTPUTF8 (RFC 6531)


@dataclass(frozen=True, slots=True)
class Dsn:
    """A composed DSN, ready to queue or deliver locally."""

    sender: str  # always "": DSNs go out from <>
    recipient: str
    message: bytes  # CRLF line endings throughout
    smtputf8: bool  # must be sent with SMTPUTF8 (the recipient address is not ASCII)
    eight_bit: bool  # has 8bit parts: send with BODY=8BITMIME (RFC 6152)


def should_send_dsn(
    sender: str, notify: Sequence[str], action: Action, *, authenticated: bool = False
) -> bool:
    """Whether a DSN with `action` is owed for a recipient with these NOTIFY values (RFC 3461 §4.1).

    Never to the null sender: that is how bounce loops are avoided (RFC 3461 §6.2, RFC 5321
    §4.5.5). Without NOTIFY, failures are reported; delays only to authenticated senders; success
    never. RELAYED and EXPANDED count as success (RFC 3461 §6.2.1, §6.2.2).
    """
    if not sender or sender == "<>":
        return False
    requested = {item.upper() for item in notify}
    if "NEVER" in requested:
        return False
    if action is Action.FAILED:
        return not requested or "FAILURE" in requested
    if action is Action.DELAYED:
        return delay_notice_wanted(notify, authenticated)
    return "SUCCESS" in requested


def status_from_reply(reply: str, *, permanent: bool | None = None) -> str:
    """The RFC 3463 status for an SMTP reply: its enhanced code, else one derived from the class.

    `permanent` overrides the class for local decisions (e.g. a 4xx that expired is reported with
    its own 4.x.x code, but a caller may want 5.x.x).
    """
    text = reply.strip()
    match = _REPLY_STATUS_RE.match(text)
    if match and match.group(1) == match.group(2)[0]:  # RFC 3463 §2: the classes must agree
        status = match.group(2)
    else:
        code = _REPLY_CODE_RE.match(text)
        status = f"{code.group(1)}.0.0" if code else "4.0.0"
    if permanent is True and status[0] == "4":
        status = "5" + status[1:]
    elif permanent is False and status[0] == "5":
        status = "4" + status[1:]
    return status


# ----------------------------------------------------------------------------------------- reading


def _crlf(data: bytes) -> bytes:
    return _NEWLINES_RE.sub(b"\r\n", data)


def _read_headers(stream: BinaryIO, limit: int = HEADER_LIMIT) -> bytes:
    """The header section, without the blank line that ends it, cut at a line boundary."""
    lines: list[bytes] = []
    total = 0
    while total < limit:
        line = stream.readline(limit - total + 1)
        if not line or line in (b"\r\n", b"\n"):
            break
        if total + len(line) > limit:
            break
        lines.append(line)
        total += len(line)
    data = _crlf(b"".join(lines))
    return data if not data or data.endswith(b"\r\n") else data + b"\r\n"


def _split_headers(data: bytes) -> bytes:
    """The header section of `data` (a prefix of a message), cut at a line boundary."""
    if data.startswith((b"\r\n", b"\n")):
        return b""
    match = re.search(rb"\r?\n\r?\n", data)
    head = data[: data.rfind(b"\n") + 1] if match is None else data[: match.start()]
    head = _crlf(head)
    return head + b"\r\n" if head and not head.endswith(b"\r\n") else head


# ----------------------------------------------------------------------------------------- fields


def _clean(text: str, utf8: bool) -> str:
    """A field value on one line: control characters (a multi-line reply's CRLFs) become spaces."""
    value = " ".join(_CONTROL_RE.sub(" ", text).split())
    if not utf8:
        value = value.encode("ascii", "replace").decode("ascii")
    return value


def _utf8_addr(address: str, unitext: bool) -> str:
    """RFC 6533 §3 utf-8-addr-xtext (or -unitext): \\x{HEX} for what may not appear literally."""
    return "".join(
        char if char in _QCHAR or (unitext and ord(char) > 0x7F) else f"\\x{{{ord(char):X}}}"
        for char in address
    )


_EMBEDDED_RE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _unembed(match: re.Match[str]) -> str:
    point = int(match.group(1), 16)
    # Only real scalar values: no surrogates, nothing past U+10FFFF.
    return chr(point) if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF else match.group(0)


def _diagnostic(text: str) -> str:
    return text if len(text) <= _DIAGNOSTIC_MAX else text[:_DIAGNOSTIC_MAX] + " [...]"


def _address_field(address: str, utf8: bool) -> str:
    """An address-type; generic-address value (RFC 3464 §2.3.2, RFC 6533 §3)."""
    if address.isascii() and not _CONTROL_RE.search(address):
        return f"rfc822; {address}"
    return f"utf-8; {_utf8_addr(_CONTROL_RE.sub('', address), unitext=utf8)}"


def _orcpt_field(orcpt: str, utf8: bool) -> str:
    """RFC 3464 §2.3.1: the ORCPT value, decoded from xtext."""
    addr_type, _, encoded = orcpt.partition(";")
    addr_type = addr_type.strip().lower() or "rfc822"
    try:
        address = xtext_decode(encoded.strip())
    except (ValueError, UnicodeDecodeError):
        return f"{_clean(addr_type, False)}; {_clean(encoded, False)}"
    if addr_type == "utf-8":
        # RFC 6533 §3: the value is utf-8-addr-xtext; unitext is only for the global type.
        address = _EMBEDDED_RE.sub(_unembed, address)
        return f"utf-8; {_utf8_addr(_CONTROL_RE.sub('', address), unitext=utf8)}"
    if not address.isascii():
        return f"utf-8; {_utf8_addr(_CONTROL_RE.sub('', address), unitext=utf8)}"
    return f"{addr_type}; {_clean(address, False)}"


def _envid(envid: str, utf8: bool) -> str:
    try:
        decoded = xtext_decode(envid)
    except (ValueError, UnicodeDecodeError):
        decoded = envid
    return _clean(decoded, utf8)


def _chunks(word: str, size: int) -> list[str]:
    return [word[i : i + size] for i in range(0, len(word), size)] or [word]


def _fold(name: str, value: str) -> str:
    """Fold a field value at spaces (RFC 5322 §2.2.3), for the delivery-status fields."""
    # A word longer than a line can only be split; no real reply has one, a hostile peer might,
    # and RFC 5322 §2.1.1 caps lines at 998 octets.
    words = [chunk for word in value.split(" ") for chunk in _chunks(word, _WORD_MAX)]
    lines: list[str] = []
    current = ""
    width = len(name) + 2
    for word in words:
        if current and width + len(current) + 1 + len(word) > _FOLD_WIDTH:
            lines.append(current)
            current, width = word, 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def _date(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("DSN dates must be timezone-aware")
    return format_datetime(when)


def _status_blocks(report: DsnReport, utf8: bool) -> list[list[tuple[str, str]]]:
    per_message = [("Reporting-MTA", f"dns; {report.reporting_mta}")]
    if report.envid:
        per_message.append(("Original-Envelope-Id", _envid(report.envid, utf8)))
    per_message.append(("Arrival-Date", _date(report.arrival_date)))
    blocks = [per_message]
    for rcpt in report.recipients:
        fields: list[tuple[str, str]] = []
        if rcpt.orcpt:
            fields.append(("Original-Recipient", _orcpt_field(rcpt.orcpt, utf8)))
        fields.append(("Final-Recipient", _address_field(rcpt.address, utf8)))
        fields.append(("Action", rcpt.action.value))
        fields.append(("Status", rcpt.status))
        if rcpt.remote_mta:
            fields.append(("Remote-MTA", f"dns; {_clean(rcpt.remote_mta, utf8)}"))
        if rcpt.diagnostic:
            fields.append(("Diagnostic-Code", f"smtp; {_clean(_diagnostic(rcpt.diagnostic), utf8)}"))
        if rcpt.last_attempt:
            fields.append(("Last-Attempt-Date", _date(rcpt.last_attempt)))
        if rcpt.action is Action.DELAYED and rcpt.will_retry_until:
            fields.append(("Will-Retry-Until", _date(rcpt.will_retry_until)))
        blocks.append(fields)
    return blocks


# ----------------------------------------------------------------------------------------- text


class _Kind(enum.Enum):
    FAILURE = "failure"
    DELAY = "delay"
    SUCCESS = "success"


_SUBJECTS = {
    _Kind.FAILURE: "Undelivered Mail Returned to Sender",
    _Kind.DELAY: "Delayed Mail (still being retried)",
    _Kind.SUCCESS: "Successful Mail Delivery Report",
}

_INTROS = {
    _Kind.FAILURE: (
        "Your message could not be delivered to one or more of its recipients.\n"
        "The details are below; delivery to these recipients will not be tried again."
    ),
    _Kind.DELAY: (
        "Your message has not been delivered yet to one or more of its recipients.\n"
        "The mail system keeps trying; you do not need to send it again.\n"
        "You will be told if delivery finally fails."
    ),
    _Kind.SUCCESS: "Your message was delivered as you asked to be told (delivery status notification).",
}

_OUTCOMES = {
    Action.FAILED: "delivery failed",
    Action.DELAYED: "delivery delayed, still trying",
    Action.DELIVERED: "delivered to the recipient's mailbox",
    Action.RELAYED: "relayed to a server that does not report on delivery",
    Action.EXPANDED: "delivered to an alias and forwarded to its members",
}


def _kind(recipients: Sequence[ReportedRecipient]) -> _Kind:
    actions = {rcpt.action for rcpt in recipients}
    if Action.FAILED in actions:
        return _Kind.FAILURE
    if Action.DELAYED in actions:
        return _Kind.DELAY
    return _Kind.SUCCESS


def _human_text(report: DsnReport, kind: _Kind, returned: str) -> str:
    lines = [f"This is the mail system at {report.reporting_mta}.", "", _INTROS[kind], ""]
    for rcpt in report.recipients:
        lines.append(f"<{_clean(rcpt.address, True)}>: {_OUTCOMES[rcpt.action]} ({rcpt.status})")
        if rcpt.diagnostic:
            server = (
                f"The mail server {_clean(rcpt.remote_mta, True)}" if rcpt.remote_mta else "The mail server"
            )
            lines.append(f"    {server} answered:")
            for part in _diagnostic(rcpt.diagnostic).splitlines():
                if part.strip():
                    lines.extend(
                        textwrap.wrap(
                            _clean(part, True), 76, initial_indent="    ", subsequent_indent="      "
                        )
                    )
        elif rcpt.remote_mta:
            lines.append(f"    Mail server: {_clean(rcpt.remote_mta, True)}")
        if rcpt.action is Action.DELAYED and rcpt.will_retry_until:
            lines.append(f"    Delivery will be tried until {_date(rcpt.will_retry_until)}.")
        lines.append("")
    lines.append(f"The message was received at {_date(report.arrival_date)}.")
    lines.append(returned)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- building


class _Generator(BytesGenerator):
    """BytesGenerator that writes a message/* part given as raw (surrogate-escaped) text as is.

    The stock one encodes such payloads as strict ASCII, although it writes every other part's
    8-bit content back byte for byte; the returned message must come back unchanged, 8-bit or not.
    """

    def _encode(self, s: str) -> bytes:
        return s.encode("ascii", "surrogateescape")


def _raw_part(content_type: str, payload: bytes, cte: str) -> Message:
    """A part whose body the generator writes as given (payload kept as surrogate-escaped str)."""
    part = Message()
    part["Content-Type"] = content_type
    part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload.decode("ascii", "surrogateescape"))
    return part


def _original_part(headers: bytes, full: bytes | None, smtputf8: bool) -> tuple[Message, bool]:
    """The returned message part and whether it carries 8-bit data."""
    if full is not None:
        eight_bit = not full.isascii()
        if smtputf8 and eight_bit:
            return _raw_part("message/global", full, "8bit"), True  # RFC 6533 §6.3
        return _raw_part("message/rfc822", full, "8bit" if eight_bit else "7bit"), eight_bit
    if headers.isascii():
        return _raw_part("text/rfc822-headers", headers, "7bit"), False
    if smtputf8:
        return _raw_part("message/global-headers", headers, "8bit"), True  # RFC 6533 §6.4
    # 8-bit headers without SMTPUTF8 are broken, but still worth returning: quoted-printable keeps
    # the DSN 7-bit so it reaches senders whose servers lack 8BITMIME (RFC 3462 is a text type).
    encoded = quopri.encodestring(headers.replace(b"\r\n", b"\n"))
    return _raw_part("text/rfc822-headers", encoded, "quoted-printable"), False


def _delivery_status_part(blocks: list[list[tuple[str, str]]], utf8: bool) -> Message:
    if not utf8:
        # The email package writes message/delivery-status from a list of field blocks.
        part = Message()
        part["Content-Type"] = "message/delivery-status"
        part["Content-Transfer-Encoding"] = "7bit"
        for fields in blocks:
            block = Message()
            for name, value in fields:
                block[name] = _fold(name, value)
            part.attach(block)
        return part
    text = "\r\n".join(
        "".join(f"{name}: {_fold(name, value)}\r\n" for name, value in fields) for fields in blocks
    )
    return _raw_part("message/global-delivery-status", text.encode("utf-8"), "8bit")


def build_dsn(
    report: DsnReport,
    original: BinaryIO,
    *,
    now: datetime,
    message_id: str | None = None,
    full_limit: int = FULL_LIMIT,
) -> Dsn:
    """Compose the DSN for `report`. `original` is the message as queued, positioned at its start.

    For RET=HDRS (and by default) only the header section is read; for RET=FULL at most
    `full_limit` bytes, and a larger message comes back as headers only, which the text says.
    """
    if not report.recipients:
        raise ValueError("a DSN needs at least one recipient")
    full: bytes | None = None
    returned = "Its header fields are attached."
    if report.ret is Ret.FULL:
        data = original.read(full_limit + 1)
        if len(data) <= full_limit:
            full = _crlf(data)
            headers = _split_headers(data)
            returned = "The message is attached."
        else:
            headers = _split_headers(data[:HEADER_LIMIT])
            returned = (
                f"The message was larger than {full_limit} bytes, so only its header fields are attached."
            )
    else:
        headers = _read_headers(original)

    # RFC 6533 §6.2: the global type only when a field really needs UTF-8; older DSN parsers
    # understand message/delivery-status only.
    unitext_blocks = _status_blocks(report, utf8=True)
    status_utf8 = report.smtputf8 and not all(
        value.isascii() for fields in unitext_blocks for _, value in fields
    )
    blocks = unitext_blocks if status_utf8 else _status_blocks(report, utf8=False)
    kind = _kind(report.recipients)
    recipient_utf8 = not report.sender.isascii()

    human = _human_text(report, kind, returned)
    if human.isascii():
        text_part = MIMEText(human, "plain", "us-ascii")
    else:
        charset = email_charset.Charset("utf-8")
        charset.body_encoding = email_charset.QP  # readable in any client, and 7-bit
        text_part = MIMEText(human, "plain", charset)  # type: ignore[arg-type]  # typeshed: str only
    del text_part["MIME-Version"]  # RFC 2045 §4: only the top level carries it

    original_part, original_8bit = _original_part(headers, full, report.smtputf8)
    status_part = _delivery_status_part(blocks, status_utf8)

    # RFC 6522: the report; the first part is for people, the second for programs.
    dsn = MIMEMultipart("report", report_type="delivery-status")
    content_type = dsn["Content-Type"]
    del dsn["Content-Type"], dsn["MIME-Version"]  # re-added below, after the addressing fields
    dsn["From"] = f"Mail Delivery System <MAILER-DAEMON@{header_safe(report.reporting_mta, 'DSN From')}>"
    dsn["To"] = header_safe(report.sender, "DSN To")  # no CRLF injection through the envelope sender
    dsn["Subject"] = _SUBJECTS[kind]
    dsn["Date"] = format_datetime(now)
    dsn["Message-ID"] = message_id or make_msgid(domain=report.reporting_mta)
    dsn["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5: no auto-responder answers this
    dsn["MIME-Version"] = "1.0"
    dsn["Content-Type"] = content_type
    dsn.preamble = "This is a MIME-encapsulated delivery status notification (RFC 3464)."
    for part in (text_part, status_part, original_part):
        dsn.attach(part)

    # refold_source="none": the returned headers are written exactly as they were received.
    policy = email_policy.SMTP.clone(refold_source="none", utf8=recipient_utf8, cte_type="8bit")
    out = BytesIO()
    _Generator(out, mangle_from_=False, policy=policy).flatten(dsn)
    return Dsn(
        sender="",
        recipient=report.sender,
        message=out.getvalue(),
        smtputf8=recipient_utf8,
        eight_bit=original_8bit or status_utf8,
    )
