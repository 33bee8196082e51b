"""Reading the delivery status notifications (RFC 3464) the tests receive; shared by the unit and
integration tests (`pythonpath` in pyproject)."""

from __future__ import annotations

import email
from email.message import Message


def dsn_parts(report: bytes | Message) -> tuple[Message, list[Message]]:
    """The multipart/report, and the blocks of its message/delivery-status part: the per-message
    block first, then one per recipient (RFC 3464 §2.1)."""
    if isinstance(report, bytes):
        report = email.message_from_bytes(report)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1
    payload = status[0].get_payload()
    assert isinstance(payload, list)
    blocks = [block for block in payload if isinstance(block, Message)]
    assert len(blocks) == len(payload)
    return report, blocks


def recipient_blocks(report: bytes | Message) -> list[Message]:
    """The per-recipient blocks of a DSN."""
    return dsn_parts(report)[1][1:]
