"""LIST pattern matching (RFC 9051 §6.3.9) and the attributes of LIST responses (RFC 5258, RFC 6154)."""

from __future__ import annotations

import time

import pytest

from surat.imapd.listing import MAX_PATTERN_LENGTH, Matcher, PatternTooLong, list_entries
from surat.store.base import MAX_MAILBOX_NAME_OCTETS, Mailbox

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
    subscriptions = ["Work/2024"]
    plain = list_entries(boxes, [Matcher("", "%")], subscriptions=subscriptions, subscribed_only=True)
    assert plain == []
    recursive = list_entries(
        boxes, [Matcher("", "%")], subscriptions=subscriptions, subscribed_only=True, recursive=True
    )
    assert [(e.name, e.childinfo, e.attributes, e.selected) for e in recursive] == [
        ("Work", ("SUBSCRIBED",), ("\\HasChildren",), False)
    ]


# RFC 5258 §5 example 9: the hierarchy and subscriptions of D01/D02 ("qux2" does not exist).
_EXAMPLE_9 = ["INBOX", "foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22", "baz2/bar222"]
_EXAMPLE_9 += ["eps2", "eps2/mamba", "qux2/bar2"]
_EXAMPLE_9_SUBSCRIBED = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2"]
_EXAMPLE_9_SUBSCRIBED += ["eps2/mamba", "qux2/bar2"]


def test_rfc5258_example_9_childinfo_only_for_children_outside_the_pattern() -> None:
    boxes = [box(n, subscribed=False) for n in _EXAMPLE_9]
    entries = list_entries(
        boxes,
        [Matcher("", "*2")],
        subscriptions=_EXAMPLE_9_SUBSCRIBED,
        subscribed_only=True,
        recursive=True,
    )
    # D03: foo2 and eps2 carry CHILDINFO (a subscribed child does not match "*2"); baz2 and qux2 would
    # be redundant (RFC 5258 §3.5 SHOULD suppress them).
    assert [(e.name, e.childinfo) for e in entries] == [
        ("baz2/bar2", ()),
        ("baz2/bar22", ()),
        ("baz2/bar222", ()),
        ("eps2", ("SUBSCRIBED",)),
        ("foo2", ("SUBSCRIBED",)),
        ("foo2/bar2", ()),
        ("qux2/bar2", ()),
    ]


def test_subscribed_name_without_mailbox_is_nonexistent() -> None:
    # RFC 5258 §5 example 10 (a2): "foo/bar" is subscribed but does not exist.
    boxes = [box("foo", subscribed=False)]
    entries = list_entries(boxes, [Matcher("", "foo/*")], subscriptions=["foo/bar"], subscribed_only=True)
    assert [(e.name, e.attributes, e.mailbox) for e in entries] == [
        ("foo/bar", ("\\NonExistent", "\\Subscribed"), None)
    ]
    # a3: the parent, with CHILDINFO although it has no (existing) children.
    entries = list_entries(
        boxes, [Matcher("", "foo")], subscriptions=["foo/bar"], subscribed_only=True, recursive=True
    )
    assert [(e.name, e.attributes, e.childinfo) for e in entries] == [
        ("foo", ("\\HasNoChildren",), ("SUBSCRIBED",))
    ]
    # A return option never adds names (RFC 5258 §3): RETURN (SUBSCRIBED) lists what exists.
    entries = list_entries(boxes, [Matcher("", "*")], subscriptions=["foo/bar"], return_subscribed=True)
    assert [(e.name, e.attributes) for e in entries] == [("foo", ("\\HasNoChildren",))]


def test_special_use_recursivematch() -> None:
    boxes = [box("Archive"), box("Archive/2024", use="\\Archive"), box("Other")]
    entries = list_entries(boxes, [Matcher("", "%")], special_use_only=True, recursive=True)
    assert [(e.name, e.childinfo) for e in entries] == [("Archive", ("SPECIAL-USE",))]


# --- the matcher is linear (issue 11 item 2): no backtracking on hostile patterns -----------------


def _worst_case_match_seconds(name: str, pattern: str) -> float:
    matcher = Matcher("", pattern)
    start = time.perf_counter()
    matcher.matches(name)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        # The reported probe: 5 x `*a` then `b` against a long run of "a" (26 s with the old regex).
        ("a" * 200, "*a*a*a*a*ab"),
        # Maximum sizes: the longest stored name against the longest accepted pattern, built so that
        # the prefix/suffix filters pass and every automaton state stays live to the end.
        ("a" * MAX_MAILBOX_NAME_OCTETS, ("*a" * MAX_PATTERN_LENGTH)[: MAX_PATTERN_LENGTH - 1] + "*"),
        (
            "a" * (MAX_MAILBOX_NAME_OCTETS - 1) + "b",
            ("*a" * MAX_PATTERN_LENGTH)[: MAX_PATTERN_LENGTH - 2] + "*b",
        ),
        ("a/" * (MAX_MAILBOX_NAME_OCTETS // 2), ("%a/" * MAX_PATTERN_LENGTH)[:MAX_PATTERN_LENGTH]),
        ("a" * MAX_MAILBOX_NAME_OCTETS, "*" + "a" * (MAX_PATTERN_LENGTH - 3) + "*b"),
    ],
)
def test_worst_case_match_is_fast(name: str, pattern: str) -> None:
    assert len(pattern) <= MAX_PATTERN_LENGTH and len(name.encode()) <= MAX_MAILBOX_NAME_OCTETS
    assert _worst_case_match_seconds(name, pattern) < 0.050


def test_pattern_longer_than_the_limit_is_refused() -> None:
    Matcher("", "a" * MAX_PATTERN_LENGTH)
    with pytest.raises(PatternTooLong):
        Matcher("a", "a" * MAX_PATTERN_LENGTH)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "", True),
        ("%", "a/b", False),
        ("%/%", "a/b", True),
        ("%*", "a/b", True),  # a run with a `*` matches what `*` matches
        ("%%", "a/b", False),
        ("*a*a*ab", "aaab", True),
        ("*a*a*ab", "aab", False),
        ("a%b", "ab", True),
        ("a%b", "a/b", False),
        ("a*b", "a/b", True),
        ("Work/%", "Work/", True),
        ("Work/%", "Work", False),
    ],
)
def test_matcher_wildcards(pattern: str, name: str, expected: bool) -> None:
    assert Matcher("", pattern).matches(name) is expected
