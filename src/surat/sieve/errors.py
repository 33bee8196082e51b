"""The two errors of the Sieve package: a script refused when checked, a script failing at run time."""

from __future__ import annotations

__all__ = ["SieveRuntimeError", "SieveSyntaxError"]


class SieveSyntaxError(Exception):
    """A script that cannot be run: bad syntax, an unknown or missing `require`, a wrong argument, a
    limit exceeded. `line` and `column` (both from 1) say where; str() reads "line L, column C: why"."""

    def __init__(self, message: str, line: int, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}" if column else f"line {line}"
        super().__init__(f"{where}: {message}")


class SieveRuntimeError(Exception):
    """A script that failed for one message (RFC 5228 §2.10.6): a limit, conflicting actions, a missing
    included script. The delivery takes the implicit keep; nothing is lost."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)
