"""LIST/LSUB pattern matching (RFC 9051 §6.3.9) and mailbox attributes (RFC 5258, RFC 6154)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from surat.store.base import HIERARCHY_DELIMITER, Mailbox

__all__ = ["ListEntry", "Matcher", "list_entries"]


class Matcher:
    """Matches mailbox names against a LIST pattern: `*` matches anything, `%` anything but the delimiter.

    The reference is prefixed to the pattern (RFC 9051 §6.3.9 leaves the joining to the server; plain
    concatenation is what clients expect). INBOX is case-insensitive (RFC 9051 §5.1): a pattern whose
    first component spells it in any case is matched as "INBOX".
    """

    def __init__(self, reference: str, pattern: str) -> None:
        full = reference + pattern
        if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in HIERARCHY_DELIMITER + "*%"):
            full = "INBOX" + full[5:]
        parts = []
        for ch in full:
            if ch == "*":
                parts.append(".*")
            elif ch == "%":
                parts.append(f"[^{re.escape(HIERARCHY_DELIMITER)}]*")
            else:
                parts.append(re.escape(ch))
        self._regex = re.compile("".join(parts), re.DOTALL)

    def matches(self, name: str) -> bool:
        return self._regex.fullmatch(name) is not None


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
