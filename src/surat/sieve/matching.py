"""Comparators and match types (RFC 5228 §2.7, RFC 4790 §9, RFC 5231): how a value meets a key.

`:matches` is a glob ("*" any run, "?" one character, "\\" quotes the next): its segments between
stars are placed leftmost one after the other, never a backtracking regex over the whole pattern, so
the work is at most len(value) * len(pattern) character steps (in C), counted in a `Budget` the caller
bounds (MAX_MATCH_WORK per message).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from surat.sieve.errors import SieveRuntimeError
from surat.sieve.limits import MAX_MATCH_WORK

__all__ = ["Budget", "Comparator", "glob_match", "numeric_key", "relational"]

_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CASEMAP = str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())


class Comparator(enum.Enum):
    OCTET = "i;octet"
    ASCII_CASEMAP = "i;ascii-casemap"
    ASCII_NUMERIC = "i;ascii-numeric"

    def fold(self, text: str) -> str:
        """RFC 4790 §9.2: i;ascii-casemap maps only ASCII letters; i;octet compares as is."""
        return text.translate(_CASEMAP) if self is Comparator.ASCII_CASEMAP else text


@dataclass(slots=True)
class Budget:
    """Character steps spent comparing for one message (:matches searches at their worst case,
    :contains by the characters read); over MAX_MATCH_WORK is a runtime error."""

    spent: int = 0

    @property
    def remaining(self) -> int:
        return MAX_MATCH_WORK - self.spent

    def charge(self, steps: int) -> None:
        self.spent += steps
        if self.spent > MAX_MATCH_WORK:
            raise SieveRuntimeError(f"matching work for this message exceeds {MAX_MATCH_WORK} steps")


_ANY = object()  # "?" in a compiled segment


@dataclass(frozen=True, slots=True)
class _Segment:
    """The part of a pattern between two "*": literal characters and "?" (RFC 5228 §2.7.1)."""

    length: int
    literal: str | None  # the text when the segment has no "?": matched with str.find, in C
    regex: re.Pattern[str] | None  # otherwise: literals and "." (no quantifier, so no backtracking)
    anys: tuple[int, ...]  # offsets of the "?" in the segment


def _segments(pattern: str) -> list[_Segment]:
    """The pattern split at its "*" ("\\" quotes the next character), one segment more than stars."""
    segments: list[_Segment] = []
    current: list[object] = []
    escaped = False

    def close() -> None:
        anys = tuple(i for i, item in enumerate(current) if item is _ANY)
        if anys:
            source = "".join("." if item is _ANY else re.escape(str(item)) for item in current)
            segments.append(_Segment(len(current), None, re.compile(source, re.DOTALL), anys))
        else:
            segments.append(_Segment(len(current), "".join(map(str, current)), None, ()))
        current.clear()

    for char in pattern:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            close()
        elif char == "?":
            current.append(_ANY)
        else:
            current.append(char)
    close()
    return segments


def _at(segment: _Segment, text: str, position: int) -> bool:
    if segment.literal is not None:
        return text.startswith(segment.literal, position)
    assert segment.regex is not None
    return segment.regex.match(text, position, position + segment.length) is not None


def _find(segment: _Segment, text: str, start: int, end: int) -> int:
    """The leftmost place in [start, end) where the segment lies wholly inside, or -1."""
    if segment.literal is not None:
        return text.find(segment.literal, start, end)
    assert segment.regex is not None
    found = segment.regex.search(text, start, end)
    return -1 if found is None else found.start()


def glob_match(comparator: Comparator, value: str, pattern: str, budget: Budget) -> list[str] | None:
    """The texts each wildcard matched, in order (RFC 5229 §3.2 match variables ${1}...), or None.
    Characters are compared folded by the comparator; the texts returned are those of `value`.

    The pattern is cut at its "*" into segments: the first must lie at the start, the last at the end,
    and each one between is placed leftmost (str.find or a quantifier-free regex, both in C). Leftmost
    placement is right: if any placement matches, the leftmost does too, and it gives each "*" the
    fewest characters, as RFC 5229 §3.2's example wants ("[*] *" on "[a] [b] c" gives "a", "[b] c").
    A search costs at most (characters searched) x (segment length) steps; that bound is charged to
    the budget before each search, so a hostile pattern stops at MAX_MATCH_WORK.
    """
    text = comparator.fold(value)  # i;ascii-casemap maps one character to one: offsets stay
    segments = _segments(comparator.fold(pattern))
    first, last = segments[0], segments[-1]
    size = len(text)
    budget.charge(first.length + last.length + 1)
    if len(segments) == 1:
        return [value[i] for i in first.anys] if size == first.length and _at(first, text, 0) else None
    last_start = size - last.length
    if last_start < first.length or not _at(first, text, 0) or not _at(last, text, last_start):
        return None
    captures = [value[i] for i in first.anys]
    position = first.length
    for segment in segments[1:-1]:
        budget.charge((last_start - position + 1) * max(segment.length, 1))
        found = _find(segment, text, position, last_start)
        if found < 0:
            return None
        captures.append(value[position:found])  # the "*" before this segment
        captures += [value[found + i] for i in segment.anys]
        position = found + segment.length
    captures.append(value[position:last_start])  # the last "*"
    captures += [value[last_start + i] for i in last.anys]
    return captures


def numeric_key(text: str) -> int | None:
    """RFC 4790 §9.1.1 i;ascii-numeric: the number the leading digits spell; None (positive infinity)
    when the string does not start with a digit."""
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return int(text[:end]) if end else None


def _order(comparator: Comparator, value: str, key: str) -> int:
    """-1, 0 or 1: how `value` sorts against `key` under `comparator`."""
    if comparator is Comparator.ASCII_NUMERIC:
        a, b = numeric_key(value), numeric_key(key)
        if a is None or b is None:
            return 0 if a is b else (1 if a is None else -1)
        return (a > b) - (a < b)
    a_text, b_text = comparator.fold(value), comparator.fold(key)
    if comparator is Comparator.OCTET:
        a_bytes, b_bytes = a_text.encode("utf-8", "surrogatepass"), b_text.encode("utf-8", "surrogatepass")
        return (a_bytes > b_bytes) - (a_bytes < b_bytes)
    return (a_text > b_text) - (a_text < b_text)


def equals(comparator: Comparator, value: str, key: str) -> bool:
    return _order(comparator, value, key) == 0


def relational(comparator: Comparator, operator: str, value: str, key: str) -> bool:
    """RFC 5231 §5: `value` OP `key` under the comparator's ordering."""
    order = _order(comparator, value, key)
    return {
        "gt": order > 0,
        "ge": order >= 0,
        "lt": order < 0,
        "le": order <= 0,
        "eq": order == 0,
        "ne": order != 0,
    }[operator.lower()]
