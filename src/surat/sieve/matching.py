"""Comparators and match types (RFC 5228 §2.7, RFC 4790 §9, RFC 5231): how a value meets a key.

`:matches` is a glob ("*" any run, "?" one character, "\\" quotes the next) matched by the standard
two-pointer algorithm with one backtrack point (the last "*"), not a regex: it never backtracks
exponentially. Its work is at most len(value) * len(pattern) character steps, counted in a `Budget`
the caller bounds (MAX_MATCH_WORK per message).
"""

from __future__ import annotations

import enum
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
    """Character steps spent by :matches for one message; over MAX_MATCH_WORK is a runtime error."""

    spent: int = 0

    @property
    def remaining(self) -> int:
        return MAX_MATCH_WORK - self.spent

    def charge(self, steps: int) -> None:
        self.spent += steps
        if self.spent > MAX_MATCH_WORK:
            raise SieveRuntimeError(f":matches work for this message exceeds {MAX_MATCH_WORK} steps")


_STAR = -1
_ANY = -2


def _compile(pattern: str) -> list[int | str]:
    """The pattern as a list of literal characters, _STAR and _ANY (RFC 5228 §2.7.1: "\\" quotes)."""
    out: list[int | str] = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            out.append(_STAR)
        elif char == "?":
            out.append(_ANY)
        else:
            out.append(char)
    return out


def glob_match(comparator: Comparator, value: str, pattern: str, budget: Budget) -> list[str] | None:
    """The texts each wildcard matched, in order (RFC 5229 §3.2 match variables ${1}...), or None.
    Characters are compared folded by the comparator; the texts returned are those of `value`.

    Each "*" takes the fewest characters that let the rest match, scanning left to right; so in
    "[*] *" against "[a] [b] c" the first "*" is "a" and the last takes the rest (RFC 5229 §3.2 example).
    """
    folded = comparator.fold(value)  # i;ascii-casemap maps one character to one: offsets stay
    tokens = _compile(comparator.fold(pattern))
    wildcards = [i for i, token in enumerate(tokens) if token in (_STAR, _ANY)]
    spans: dict[int, tuple[int, int]] = {}
    size = len(value)
    p = t = 0
    star_p = -1  # pattern index of the last "*" passed, and where its text begins and now ends
    star_start = star_end = 0
    steps = 0
    allowance = budget.remaining  # checked in the loop: the bound holds inside one long match too
    while t < size:
        steps += 1
        if steps > allowance:
            budget.charge(steps)  # raises
        token = tokens[p] if p < len(tokens) else None
        if token == _STAR:
            star_p, star_start, star_end = p, t, t
            spans[p] = (t, t)
            p += 1
        elif token == _ANY:
            spans[p] = (t, t + 1)
            p += 1
            t += 1
        elif token is not None and token == folded[t]:
            p += 1
            t += 1
        elif star_p >= 0:
            # Backtrack: the last "*" takes one more character; everything after it is matched again.
            star_end += 1
            spans[star_p] = (star_start, star_end)
            p, t = star_p + 1, star_end
        else:
            budget.charge(steps)
            return None
    budget.charge(steps)
    while p < len(tokens) and tokens[p] == _STAR:
        spans[p] = (size, size)
        p += 1
    if p != len(tokens):
        return None
    return [value[spans[i][0] : spans[i][1]] for i in wildcards]


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
