"""What each command and test accepts: the validator's table (RFC 5228 §§3-5 and each extension).

A signature lists the tagged arguments (with the value a tag takes, the group of tags that exclude
each other, and the capability that must be required to use the tag), the positional arguments, and
whether the command takes a test or a block. `check` applies one signature to the arguments as
written and returns them split into tags and positional arguments, or raises with the line.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from surat.sieve.errors import SieveSyntaxError
from surat.sieve.nodes import Argument, Number, StringList, Tag

__all__ = ["COMMANDS", "TESTS", "Arity", "Signature", "ValueKind", "check"]


class ValueKind(enum.Enum):
    STRING = "a string"
    STRING_LIST = "a string list"
    NUMBER = "a number"


class Arity(enum.Enum):
    NONE = 0
    ONE = 1  # not, if, elsif
    LIST = 2  # allof, anyof


@dataclass(frozen=True, slots=True)
class TagSpec:
    takes: ValueKind | None = None  # the argument after the tag, or None for a flag
    group: str = ""  # tags of one group exclude each other ("" = the tag's own name)
    capability: str | None = None  # must be required to use this tag


@dataclass(frozen=True, slots=True)
class Signature:
    positional: tuple[ValueKind, ...] = ()
    tags: Mapping[str, TagSpec] = field(default_factory=dict)
    capability: str | None = None
    optional_leading: int = 0  # leading positional arguments that may be left out (setflag's variable)
    tests: Arity = Arity.NONE
    block: bool = False
    required_group: str | None = None  # a tag group one member of which must be present (size)


S, L, N = ValueKind.STRING, ValueKind.STRING_LIST, ValueKind.NUMBER

# RFC 5228 §2.7.3 comparators, §2.7.1 match types (+ RFC 5231 relational), §2.7.4 address parts (+ RFC
# 5233 subaddress), RFC 5260 §6 index.
_COMPARATOR = {"comparator": TagSpec(S, "comparator")}
_MATCH_TYPE = {
    "is": TagSpec(None, "match"),
    "contains": TagSpec(None, "match"),
    "matches": TagSpec(None, "match"),
    "count": TagSpec(S, "match", "relational"),
    "value": TagSpec(S, "match", "relational"),
}
_ADDRESS_PART = {
    "all": TagSpec(None, "part"),
    "localpart": TagSpec(None, "part"),
    "domain": TagSpec(None, "part"),
    "user": TagSpec(None, "part", "subaddress"),
    "detail": TagSpec(None, "part", "subaddress"),
}
_INDEX = {"index": TagSpec(N, "index", "index"), "last": TagSpec(None, "last", "index")}
_ZONE = {"zone": TagSpec(S, "zone"), "originalzone": TagSpec(None, "zone")}
_FLAGS = {"flags": TagSpec(L, "flags", "imap4flags")}

COMMANDS: dict[str, Signature] = {
    # RFC 5228 §3 control commands, §4 actions
    "require": Signature((L,)),
    "if": Signature(tests=Arity.ONE, block=True),
    "elsif": Signature(tests=Arity.ONE, block=True),
    "else": Signature(block=True),
    "stop": Signature(),
    "keep": Signature(tags=_FLAGS),
    "discard": Signature(),
    "redirect": Signature((S,), {"copy": TagSpec(None, "copy", "copy")}),
    # RFC 5228 §4.1 + RFC 3894 :copy + RFC 5490 §3.2 :create + RFC 5232 §5 :flags
    "fileinto": Signature(
        (S,),
        {
            "copy": TagSpec(None, "copy", "copy"),
            "create": TagSpec(None, "create", "mailbox"),
            **_FLAGS,
        },
        "fileinto",
    ),
    # RFC 5429 §2.1, §2.2
    "reject": Signature((S,), capability="reject"),
    "ereject": Signature((S,), capability="ereject"),
    # RFC 5230 §4 + RFC 6131 :seconds
    "vacation": Signature(
        (S,),
        {
            "days": TagSpec(N, "period"),
            "seconds": TagSpec(N, "period", "vacation-seconds"),
            "subject": TagSpec(S, "subject"),
            "from": TagSpec(S, "from"),
            "addresses": TagSpec(L, "addresses"),
            "mime": TagSpec(None, "mime"),
            "handle": TagSpec(S, "handle"),
        },
        "vacation",
    ),
    # RFC 5229 §4: modifiers of one precedence exclude each other
    "set": Signature(
        (S, S),
        {
            "lower": TagSpec(None, "40"),
            "upper": TagSpec(None, "40"),
            "lowerfirst": TagSpec(None, "30"),
            "upperfirst": TagSpec(None, "30"),
            "quotewildcard": TagSpec(None, "20"),
            "length": TagSpec(None, "10"),
        },
        "variables",
    ),
    # RFC 5232 §3: [<variablename: string>] <list-of-flags: string-list>
    "setflag": Signature((S, L), capability="imap4flags", optional_leading=1),
    "addflag": Signature((S, L), capability="imap4flags", optional_leading=1),
    "removeflag": Signature((S, L), capability="imap4flags", optional_leading=1),
    # RFC 6609 §3.2-3.4
    "include": Signature(
        (S,),
        {
            "personal": TagSpec(None, "location"),
            "global": TagSpec(None, "location"),
            "once": TagSpec(None, "once"),
            "optional": TagSpec(None, "optional"),
        },
        "include",
    ),
    "return": Signature(capability="include"),
    "global": Signature((L,), capability="include"),
}

TESTS: dict[str, Signature] = {
    # RFC 5228 §5
    "address": Signature((L, L), {**_COMPARATOR, **_ADDRESS_PART, **_MATCH_TYPE, **_INDEX}),
    "allof": Signature(tests=Arity.LIST),
    "anyof": Signature(tests=Arity.LIST),
    "envelope": Signature((L, L), {**_COMPARATOR, **_ADDRESS_PART, **_MATCH_TYPE}, "envelope"),
    "exists": Signature((L,)),
    "false": Signature(),
    "header": Signature((L, L), {**_COMPARATOR, **_MATCH_TYPE, **_INDEX}),
    "not": Signature(tests=Arity.ONE),
    "size": Signature(
        (N,), {"over": TagSpec(None, "size"), "under": TagSpec(None, "size")}, required_group="size"
    ),
    "true": Signature(),
    # RFC 5229 §5
    "string": Signature((L, L), {**_COMPARATOR, **_MATCH_TYPE}, "variables"),
    # RFC 5173 §4
    "body": Signature(
        (L,),
        {
            **_COMPARATOR,
            **_MATCH_TYPE,
            "raw": TagSpec(None, "transform"),
            "content": TagSpec(L, "transform"),
            "text": TagSpec(None, "transform"),
        },
        "body",
    ),
    # RFC 5260 §4, §5
    "date": Signature((S, S, L), {**_COMPARATOR, **_MATCH_TYPE, **_ZONE, **_INDEX}, "date"),
    "currentdate": Signature((S, L), {**_COMPARATOR, **_MATCH_TYPE, "zone": TagSpec(S, "zone")}, "date"),
    # RFC 5490 §3.1
    "mailboxexists": Signature((L,), capability="mailbox"),
    # RFC 5232 §4: [MATCH-TYPE] [COMPARATOR] [<variable-list: string-list>] <list-of-flags>
    "hasflag": Signature((L, L), {**_COMPARATOR, **_MATCH_TYPE}, "imap4flags", optional_leading=1),
}


def _kind_of(argument: Argument) -> ValueKind | None:
    if isinstance(argument, Number):
        return ValueKind.NUMBER
    if isinstance(argument, StringList):
        return ValueKind.STRING_LIST if argument.is_list else ValueKind.STRING
    return None


def _fits(argument: Argument, kind: ValueKind) -> bool:
    found = _kind_of(argument)
    # A single string is a string list of one (RFC 5228 §2.4.2.1); a list is never a single string.
    return found == kind or (kind is ValueKind.STRING_LIST and found is ValueKind.STRING)


def check(
    what: str,
    name: str,
    signature: Signature,
    arguments: list[Argument],
    capabilities: frozenset[str],
    line: int,
) -> tuple[dict[str, Argument | None], tuple[Argument, ...]]:
    """Split `arguments` into tags and positional arguments per `signature`, or raise with the line."""
    tags: dict[str, Argument | None] = {}
    groups: dict[str, str] = {}
    positional: list[Argument] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if not isinstance(argument, Tag):
            positional.append(argument)
            continue
        if positional:
            # RFC 5228 §2.6.3: tagged arguments come before positional ones
            raise SieveSyntaxError(
                f'{what} "{name}": tag ":{argument.name}" after a positional argument', line
            )
        spec = signature.tags.get(argument.name)
        if spec is None:
            raise SieveSyntaxError(f'{what} "{name}" has no tag ":{argument.name}"', argument.line)
        if spec.capability is not None and spec.capability not in capabilities:
            raise SieveSyntaxError(f'tag ":{argument.name}" needs require "{spec.capability}"', argument.line)
        group = spec.group or argument.name
        if group in groups:
            earlier = groups[group]
            message = (
                f'tag ":{argument.name}" given twice'
                if earlier == argument.name
                else (f'tags ":{earlier}" and ":{argument.name}" exclude each other')
            )
            raise SieveSyntaxError(f'{what} "{name}": {message}', argument.line)
        groups[group] = argument.name
        value: Argument | None = None
        if spec.takes is not None:
            if index >= len(arguments) or not _fits(arguments[index], spec.takes):
                raise SieveSyntaxError(
                    f'tag ":{argument.name}" of {what} "{name}" must be followed by {spec.takes.value}',
                    argument.line,
                )
            value = arguments[index]
            index += 1
        tags[argument.name] = value
    if signature.required_group is not None and signature.required_group not in groups:
        choices = " or ".join(
            f":{t}" for t, s in signature.tags.items() if s.group == signature.required_group
        )
        raise SieveSyntaxError(f'{what} "{name}" needs {choices}', line)
    expected = signature.positional
    if signature.optional_leading and len(positional) == len(expected) - signature.optional_leading:
        expected = expected[signature.optional_leading :]
    if len(positional) != len(expected):
        count = len(signature.positional)
        wanted = (
            f"{count - signature.optional_leading} or {count}" if signature.optional_leading else str(count)
        )
        raise SieveSyntaxError(
            f'{what} "{name}" takes {wanted} positional argument(s), not {len(positional)}', line
        )
    for position, (argument, kind) in enumerate(zip(positional, expected, strict=True), start=1):
        if not _fits(argument, kind):
            raise SieveSyntaxError(f'argument {position} of {what} "{name}" must be {kind.value}', line)
    return tags, tuple(positional)
