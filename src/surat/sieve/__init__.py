"""Sieve (RFC 5228) mail filtering: a pure parser to a typed AST and a sans-IO evaluator to actions.

Pure like `surat.proto`: no I/O, no asyncio, no store. `parse_script(text)` checks a script when it is
uploaded (errors name the line); `evaluate(script, message, ...)` runs it for one delivery and returns
the actions to take. Every limit is a constant in `limits`, enforced where it is written.
"""

from surat.sieve.actions import (
    Action,
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    Vacation,
)
from surat.sieve.errors import SieveRuntimeError, SieveSyntaxError
from surat.sieve.evaluator import IncludeResolver, MessageContext, SieveResult, evaluate
from surat.sieve.nodes import Command, Script, StringList, Tag, Test
from surat.sieve.parser import SUPPORTED_CAPABILITIES, parse_script

__all__ = [
    "SUPPORTED_CAPABILITIES",
    "Action",
    "Command",
    "Discard",
    "FileInto",
    "IncludeResolver",
    "Keep",
    "MessageContext",
    "Redirect",
    "Reject",
    "Script",
    "SieveResult",
    "SieveRuntimeError",
    "SieveSyntaxError",
    "StringList",
    "Tag",
    "Test",
    "Vacation",
    "evaluate",
    "parse_script",
]
