"""A clock the test sets by hand, for code that takes a `clock: Callable[[], float]`."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # epoch seconds (2027): a real time, as stored records hold

    def __call__(self) -> float:
        return self.now
