"""LIST pattern matching (RFC 9051 §6.3.9) and the attributes of LIST responses (RFC 5258, RFC 6154)."""

from __future__ import annotations

import pytest

from surat.imapd.listing import Matcher, list_entries
from surat.store.base import Mailbox

NAMES = ["INBOX", "INBOX/Lists", "Sent", "Work", "Work/2024", "Work/2024/Q1", "Caf\u00e9"]


@pytest.mark.parametrize(
    ("reference", "pattern", "expected"),
    [
        ("", "*", NAMES),
        ("", "%", ["INBOX", "Sent", "Work", "Caf\u00e9"]),
        ("", "Work/%", ["Work/2024"]),
        ("", "Work/*", ["Work/2024", "Work/2024/Q1"]),
        ("Work/", "%", ["Work/2024"]),
        ("", "inbox", ["INBOX"]),  # RFC 9051 §5.1: INBOX in any case
        ("", "Inbox/*", ["INBOX/Lists"]),
        ("", "W%/2024", ["Work/2024"]),
        ("", "work", []),  # other names are case-sensitive
        ("", "*2024*", ["Work/2024", "Work/2024/Q1"]),
        ("", "Caf\u00e9", ["Caf\u00e9"]),
        ("", "a.b", []),  # regex characters are literal
    ],
)
def test_matcher(reference: str, pattern: str, expected: list[str]) -> None:
    matcher = Matcher(reference, pattern)
    assert [n for n in NAMES if matcher.matches(n)] == expected


def box(name: str, *, subscribed: bool = True, use: str | None = None) -> Mailbox:
    return Mailbox(hash(name) & 0xFFFF, 1, name, 1, 1, 1, use, subscribed)


def test_attributes_children_special_use_and_subscribed() -> None:
    boxes = [box("Work/2024"), box("Work", subscribed=False), box("Sent", use="\\Sent"), box("INBOX")]
    entries = list_entries(boxes, [Matcher("", "*")], return_subscribed=True)
    assert [(e.name, e.attributes) for e in entries] == [
        ("INBOX", ("\\HasNoChildren", "\\Subscribed")),
        ("Sent", ("\\HasNoChildren", "\\Subscribed", "\\Sent")),
        ("Work", ("\\HasChildren",)),
        ("Work/2024", ("\\HasNoChildren", "\\Subscribed")),
    ]
    special = list_entries(boxes, [Matcher("", "*")], special_use_only=True)
    assert [e.name for e in special] == ["Sent"]


def test_subscribed_recursivematch_childinfo() -> None:
    boxes = [box("Work/2024"), box("Work", subscribed=False), box("Old", subscribed=False)]
    plain = list_entries(boxes, [Matcher("", "%")], subscribed_only=True)
    assert plain == []
    recursive = list_entries(boxes, [Matcher("", "%")], subscribed_only=True, recursive=True)
    assert [(e.name, e.child_subscribed, e.attributes) for e in recursive] == [
        ("Work", True, ("\\HasChildren",))
    ]
