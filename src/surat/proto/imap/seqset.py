"""IMAP sequence sets (RFC 9051 §9 `sequence-set`), kept as ranges and never expanded.

A set is a tuple of ranges as written by the client; `*` is stored as ``STAR`` and resolved late, against
the message count (sequence numbers) or the sorted UID list of the selected mailbox. Resolution works on
ranges and bisection, so `1:*` over 100 000 messages costs a handful of operations.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["STAR", "SequenceSet", "SequenceSetError", "format_ranges", "parse_sequence_set"]

STAR: Final = 0
"""Stands for `*` in a range bound (0 is never a valid sequence number or UID: RFC 9051 §9 nz-number)."""

_MAX_NUMBER: Final = 0xFFFFFFFF  # RFC 9051 §9: nz-number is a 32-bit unsigned value


class SequenceSetError(ValueError):
    """Malformed sequence set."""


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed `sequence-set`. ``saved`` is RFC 5182 `$` (the result of the last SEARCH ... SAVE)."""

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """A compact set covering exactly ``numbers`` (which need not be sorted or unique)."""
        ranges: list[tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if n < 1:
                raise SequenceSetError(f"{n} is not a valid message number")
            if ranges and ranges[-1][1] + 1 == n:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    @property
    def uses_star(self) -> bool:
        return any(STAR in r for r in self.ranges)

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return format_ranges(self.ranges)

    def normalized(self, star: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive (lo, hi) ranges with `*` replaced by ``star``.

        RFC 9051 §9: a range's bounds may come in either order (`5:2` is `2:5`), and `*` is the
        largest number in use, so `UID 900:*` with a highest UID of 500 means `500:900`.
        """
        if self.saved:
            raise SequenceSetError("'$' must be replaced by the saved result before use")
        spans = []
        for lo, hi in self.ranges:
            a = star if lo == STAR else lo
            b = star if hi == STAR else hi
            if a > b:
                a, b = b, a
            spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def max_explicit(self) -> int:
        """The largest number written literally (not `*`); 0 if none. Lets the shell reject sequence
        numbers beyond the mailbox size (RFC 9051 §9 notes a BAD for those)."""
        return max((n for r in self.ranges for n in r if n != STAR), default=0)

    def resolve_seq(self, count: int) -> list[tuple[int, int]]:
        """Ranges of message sequence numbers in 1..count, sorted and merged; out-of-range parts dropped."""
        if count <= 0:
            return []
        out = []
        for lo, hi in self.normalized(count):
            a, b = max(lo, 1), min(hi, count)
            if a <= b:
                out.append((a, b))
        return out

    def iter_seq(self, count: int) -> Iterator[int]:
        for a, b in self.resolve_seq(count):
            yield from range(a, b + 1)

    def resolve_uids(self, uids: Sequence[int]) -> list[tuple[int, int]]:
        """Index ranges [start, stop) into ``uids`` (sorted ascending) of the UIDs in the set.

        Index ``i`` is message sequence number ``i + 1``. UIDs in the set that do not exist are ignored
        (RFC 9051 §6.4.9). `*` is the highest UID in use; with no messages nothing matches.
        """
        if not uids:
            return []
        out: list[tuple[int, int]] = []
        for a, b in self.normalized(uids[-1]):
            start = bisect.bisect_left(uids, a)
            stop = bisect.bisect_right(uids, b, lo=start)
            if start < stop:
                if out and out[-1][1] >= start:
                    out[-1] = (out[-1][0], max(stop, out[-1][1]))
                else:
                    out.append((start, stop))
        return out

    def iter_uid_indexes(self, uids: Sequence[int]) -> Iterator[int]:
        for start, stop in self.resolve_uids(uids):
            yield from range(start, stop)

    def contains(self, n: int, star: int) -> bool:
        """Whether ``n`` is in the set when `*` means ``star``."""
        for lo, hi in self.ranges:
            a = star if lo == STAR else lo
            b = star if hi == STAR else hi
            if min(a, b) <= n <= max(a, b):
                return True
        return False


def format_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    """`1:3,5,9:*` from (lo, hi) pairs; STAR is written `*`."""
    parts = []
    for lo, hi in ranges:
        a = "*" if lo == STAR else str(lo)
        if lo == hi:
            parts.append(a)
        else:
            parts.append(f"{a}:{'*' if hi == STAR else hi}")
    return ",".join(parts)


def _number(text: str) -> int:
    if text == "*":
        return STAR
    # RFC 9051 §9: nz-number = digit-nz *DIGIT, so no sign, no leading zero, no empty string.
    if not text or not text.isascii() or not text.isdigit() or text[0] == "0":
        raise SequenceSetError(f"invalid number {text!r} in sequence set")
    value = int(text)
    if value > _MAX_NUMBER:
        raise SequenceSetError(f"number {text} in sequence set is too large")
    return value


def parse_sequence_set(text: str, *, allow_saved: bool = True) -> SequenceSet:
    """Parse RFC 9051 §9 `sequence-set`, or `$` (RFC 5182 §2) when ``allow_saved``."""
    if text == "$":
        if not allow_saved:
            raise SequenceSetError("'$' is not allowed here")
        return SequenceSet(saved=True)
    if not text:
        raise SequenceSetError("empty sequence set")
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        a = _number(lo)
        b = _number(hi) if sep else a
        ranges.append((a, b))
    return SequenceSet(tuple(ranges))
