"""LIST/LSUB pattern matching (RFC 9051 §6.3.9) and mailbox attributes (RFC 5258, RFC 6154)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from surat.store.base import HIERARCHY_DELIMITER, Mailbox

__all__ = [
    "MAX_PATTERN_LENGTH",
    "ListEntry",
    "Matcher",
    "PatternTooLong",
    "list_entries",
]


# Longest LIST/LSUB pattern (reference and pattern joined) accepted, in characters. Mailbox names are
# at most MAX_MAILBOX_NAME_OCTETS (so at most as many characters), so a longer pattern is never needed;
# together the two bound one match to MAX_MAILBOX_NAME_OCTETS x MAX_PATTERN_LENGTH steps.
MAX_PATTERN_LENGTH: Final = 1024


class PatternTooLong(ValueError):
    """A LIST/LSUB pattern longer than MAX_PATTERN_LENGTH."""


class Matcher:
    """Matches mailbox names against a LIST pattern: `*` matches anything, `%` anything but the delimiter.

    The reference is prefixed to the pattern (RFC 9051 §6.3.9 leaves the joining to the server; plain
    concatenation is what clients expect). INBOX is case-insensitive (RFC 9051 §5.1): a pattern whose
    first component spells it in any case is matched as "INBOX".

    Client input never reaches a backtracking regex (ARCHITECTURE decision 9): the pattern is run as a
    non-deterministic automaton whose set of live states is one integer used as a bit set (state i =
    "the first i pattern tokens matched"). Each name character costs a fixed handful of integer
    operations on a MAX_PATTERN_LENGTH-bit number, so a match is O(len(name) x len(pattern) / 64)
    machine words at worst, whatever the pattern, and never more than MAX_MAILBOX_NAME_OCTETS steps
    for a stored name.
    """

    __slots__ = ("_accept", "_literal", "_prefix", "_star", "_suffix", "_wild")

    def __init__(self, reference: str, pattern: str) -> None:
        full = reference + pattern
        if len(full) > MAX_PATTERN_LENGTH:
            raise PatternTooLong(f"mailbox pattern longer than {MAX_PATTERN_LENGTH} characters")
        if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in HIERARCHY_DELIMITER + "*%"):
            full = "INBOX" + full[5:]
        tokens = _collapse_wildcards(full)
        # Cheap filters first: the literal text before the first and after the last wildcard.
        first = min((i for i, t in enumerate(tokens) if t in "*%"), default=len(tokens))
        last = max((i for i, t in enumerate(tokens) if t in "*%"), default=len(tokens))
        self._prefix = "".join(tokens[:first])
        self._suffix = "".join(tokens[last + 1 :]) if last < len(tokens) else ""
        literal: dict[str, int] = {}
        star = percent = 0
        for i, symbol in enumerate(tokens):
            if symbol == "*":
                star |= 1 << i
            elif symbol == "%":
                percent |= 1 << i
            else:
                literal[symbol] = literal.get(symbol, 0) | 1 << i
        self._literal = literal
        self._star = star
        self._wild = star | percent
        self._accept = 1 << len(tokens)

    def matches(self, name: str) -> bool:
        if not name.startswith(self._prefix) or not name.endswith(self._suffix):
            return False
        wild = self._wild
        # A wildcard also matches the empty string: from state i (a wildcard) state i+1 is live too.
        # Runs of wildcards were collapsed to one, so one shift closes the set.
        live = 1 | ((1 & wild) << 1)
        for ch in name:
            stay = self._star if ch == HIERARCHY_DELIMITER else self._wild
            live = ((live & self._literal.get(ch, 0)) << 1) | (live & stay)
            if not live:
                return False
            live |= (live & wild) << 1
        return bool(live & self._accept)


def _collapse_wildcards(pattern: str) -> list[str]:
    """The pattern as tokens, each run of wildcards as one: `*` if the run holds a `*`, else `%`.

    `%%` matches what `%` matches and any run with a `*` matches what `*` matches, so this changes no
    answer; it lets the matcher close its state set over empty wildcard matches with a single shift.
    """
    tokens: list[str] = []
    for ch in pattern:
        if ch in "*%" and tokens and tokens[-1] in "*%":
            if ch == "*":
                tokens[-1] = "*"
            continue
        tokens.append(ch)
    return tokens


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str
    attributes: tuple[str, ...]
    mailbox: Mailbox | None  # None for a \NonExistent parent listed for RECURSIVEMATCH
    child_subscribed: bool = False  # RFC 5258 CHILDINFO ("SUBSCRIBED")


def list_entries(
    mailboxes: Iterable[Mailbox],
    matchers: list[Matcher],
    *,
    subscribed_only: bool = False,
    special_use_only: bool = False,
    recursive: bool = False,
    return_subscribed: bool = False,
    return_special_use: bool = True,
) -> list[ListEntry]:
    """The LIST answer, in name order (INBOX first). RFC 5258 §3 selection options filter, return
    options add attributes; \\HasChildren/\\HasNoChildren are always given (RFC 9051 §7.3.1 lets a
    server send them unasked, and rev2 clients expect them)."""
    boxes = sorted(mailboxes, key=lambda m: (m.name != "INBOX", m.name))
    has_children: set[str] = set()
    subscribed_children: set[str] = set()
    for m in boxes:
        parts = m.name.split(HIERARCHY_DELIMITER)
        for i in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:i])
            has_children.add(parent)
            if m.subscribed:
                subscribed_children.add(parent)
    out: list[ListEntry] = []
    for m in boxes:
        if not any(matcher.matches(m.name) for matcher in matchers):
            continue
        child_subscribed = False
        if subscribed_only and not m.subscribed:
            # RFC 5258 §3.5: with RECURSIVEMATCH a parent of a subscribed mailbox is listed with CHILDINFO.
            if not (recursive and m.name in subscribed_children):
                continue
            child_subscribed = True
        if special_use_only and m.special_use is None:
            continue
        attrs: list[str] = ["\\HasChildren" if m.name in has_children else "\\HasNoChildren"]
        if m.subscribed and (subscribed_only or return_subscribed):
            attrs.append("\\Subscribed")
        if m.special_use is not None and (return_special_use or special_use_only):
            attrs.append(m.special_use)
        out.append(ListEntry(m.name, tuple(attrs), m, child_subscribed))
    return out
