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
    mailbox: (
        Mailbox | None
    )  # None for a \NonExistent name (a subscription, or a parent named for RECURSIVEMATCH)
    # RFC 5258 §3.5 CHILDINFO: the selection options a descendant outside the pattern meets ("SUBSCRIBED")
    childinfo: tuple[str, ...] = ()
    selected: bool = True  # False: listed only because of a descendant (LSUB shows it as \Noselect)


def _ancestors(name: str) -> list[str]:
    # Linear in the name's length per ancestor; names are at most MAX_MAILBOX_NAME_OCTETS long.
    out = []
    index = name.find(HIERARCHY_DELIMITER)
    while index > 0:
        out.append(name[:index])
        index = name.find(HIERARCHY_DELIMITER, index + 1)
    return out


def list_entries(
    mailboxes: Iterable[Mailbox],
    matchers: list[Matcher],
    *,
    subscriptions: Iterable[str] = (),
    subscribed_only: bool = False,
    special_use_only: bool = False,
    recursive: bool = False,
    return_subscribed: bool = False,
    return_special_use: bool = True,
) -> list[ListEntry]:
    """The LIST answer, in name order (INBOX first).

    RFC 5258 §3 selection options choose the names, return options add attributes. With SUBSCRIBED the
    candidates are the subscribed names, existing or not (\\NonExistent, RFC 5258 §3.1); with
    RECURSIVEMATCH a name matching the pattern is also listed, with CHILDINFO, when a descendant meets
    the selection criteria but does not match the pattern itself (RFC 5258 §3.3 rule 2B; §3.5: redundant
    CHILDINFO is suppressed). \\HasChildren/\\HasNoChildren are always given for existing mailboxes
    (RFC 9051 §7.3.1 lets a server send them unasked, and rev2 clients expect them).
    """
    existing = {m.name: m for m in mailboxes}
    # `subscriptions` adds the subscribed names that have no mailbox (only SUBSCRIBED selection lists them).
    subscribed = set(subscriptions) | {m.name for m in existing.values() if m.subscribed}
    has_children: set[str] = set()
    for name in existing:
        has_children.update(_ancestors(name))
    candidates = (existing.keys() | subscribed) if subscribed_only else existing.keys()

    def meets_criteria(name: str) -> bool:
        if subscribed_only and name not in subscribed:
            return False
        if special_use_only:
            mailbox = existing.get(name)
            return mailbox is not None and mailbox.special_use is not None
        return True

    matched: dict[str, bool] = {}

    def matches(name: str) -> bool:
        if name not in matched:
            matched[name] = any(matcher.matches(name) for matcher in matchers)
        return matched[name]

    selected = {name for name in candidates if meets_criteria(name)}
    with_childinfo: set[str] = set()
    if recursive:
        for name in selected:
            if not matches(name):
                with_childinfo.update(_ancestors(name))
    criteria = tuple(
        option
        for option, given in (("SUBSCRIBED", subscribed_only), ("SPECIAL-USE", special_use_only))
        if given
    )
    names = sorted((n for n in selected | with_childinfo if matches(n)), key=lambda n: (n != "INBOX", n))
    out: list[ListEntry] = []
    for name in names:
        mailbox = existing.get(name)
        attrs: list[str] = []
        if mailbox is None:
            attrs.append("\\NonExistent")  # RFC 5258 §3: implies \Noselect
        else:
            attrs.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
        if name in subscribed and (subscribed_only or return_subscribed):
            attrs.append("\\Subscribed")
        if (
            mailbox is not None
            and mailbox.special_use is not None
            and (return_special_use or special_use_only)
        ):
            attrs.append(mailbox.special_use)
        childinfo = criteria if name in with_childinfo else ()
        out.append(ListEntry(name, tuple(attrs), mailbox, childinfo, name in selected))
    return out
