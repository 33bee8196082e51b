"""The typed AST of a Sieve script (RFC 5228 §8.2 grammar), frozen so scripts can be cached and shared.

The parser checks every command and test against its signature (`grammar`) and stores the result here:
`tags` holds the tagged arguments by name (":comparator" -> its string, ":copy" -> None), `positional`
the positional ones in order. Identifiers and tag names are lower-cased (RFC 5228 §2.3: identifiers
are case-insensitive).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Argument", "Command", "Number", "Script", "StringList", "Tag", "Test"]


@dataclass(frozen=True, slots=True)
class StringList:
    """A string or a string list (RFC 5228 §2.4.2); `is_list` says whether it was written in brackets."""

    values: tuple[str, ...]
    is_list: bool
    line: int


@dataclass(frozen=True, slots=True)
class Number:
    """A number with its K/M/G quantifier applied (RFC 5228 §2.4.1)."""

    value: int
    line: int


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged argument's tag (RFC 5228 §2.6.2), without the colon, lower-cased."""

    name: str
    line: int


Argument = StringList | Number | Tag


class _Node:
    """What commands and tests share: positional arguments, read by index."""

    __slots__ = ()
    positional: tuple[Argument, ...]

    def string_list(self, index: int) -> tuple[str, ...]:
        """The strings of positional argument `index` (the signature made sure it is a string list)."""
        argument = self.positional[index]
        assert isinstance(argument, StringList)
        return argument.values


@dataclass(frozen=True, slots=True)
class Test(_Node):
    name: str
    tags: dict[str, Argument | None]
    positional: tuple[Argument, ...]
    tests: tuple[Test, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Command(_Node):
    name: str
    tags: dict[str, Argument | None]
    positional: tuple[Argument, ...]
    test: Test | None  # the condition of if/elsif
    block: tuple[Command, ...] | None
    line: int


@dataclass(frozen=True, slots=True)
class Script:
    commands: tuple[Command, ...]
    capabilities: frozenset[str]  # what the script's `require` commands named
