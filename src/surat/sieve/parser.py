"""The Sieve parser (RFC 5228 §8.2): tokens to a checked, typed AST, in one recursive-descent pass.

Checks made here, so that a script is refused when it is uploaded, not when mail arrives:
- `require` first (§3.2), every capability known (unknown -> error naming the line), every extension's
  command, test and tag required before use (§3.2: "MUST NOT" use an extension not required);
- each command and test against its signature (`grammar`), comparators and relational operators known,
  `elsif`/`else` only after `if`/`elsif` (§3.1);
- the limits MAX_NESTING and MAX_COMMANDS; the pass is linear in the tokens.
"""

from __future__ import annotations

import re

from surat.sieve.errors import SieveSyntaxError
from surat.sieve.grammar import COMMANDS, TESTS, Arity, Signature, check
from surat.sieve.lexer import Kind, Token, tokenize
from surat.sieve.limits import MAX_COMMANDS, MAX_NESTING, MAX_STRING_LIST
from surat.sieve.nodes import Argument, Command, Number, Script, StringList, Tag, Test

__all__ = ["DATE_PARTS", "RELATIONAL_OPERATORS", "SUPPORTED_CAPABILITIES", "parse_script"]

SUPPORTED_CAPABILITIES = frozenset(
    {
        "body",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
        "comparator-i;octet",
        "copy",
        "date",
        "encoded-character",
        "envelope",
        "ereject",
        "fileinto",
        "imap4flags",
        "include",
        "index",
        "mailbox",
        "reject",
        "relational",
        "subaddress",
        "vacation",
        "vacation-seconds",
        "variables",
    }
)
# RFC 5228 §2.7.3: i;octet and i;ascii-casemap are always available; others need "comparator-NAME".
_IMPLICIT_COMPARATORS = frozenset({"i;octet", "i;ascii-casemap"})
_KNOWN_COMPARATORS = frozenset({"i;octet", "i;ascii-casemap", "i;ascii-numeric"})
RELATIONAL_OPERATORS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})  # RFC 5231 §5
DATE_PARTS = frozenset(  # RFC 5260 §4.2
    {
        "year",
        "month",
        "day",
        "date",
        "julian",
        "hour",
        "minute",
        "second",
        "time",
        "iso8601",
        "std11",
        "zone",
        "weekday",
    }
)
# RFC 5229 §3 variable-name = (ALPHA / "_") *(ALPHA / DIGIT / "_")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 5228 §2.4.2.4 encoded-character: "${hex:" hex-pair-seq "}" / "${unicode:" unicode-hex-seq "}".
# The class holds neither "$" nor "}", so each run is scanned once: linear.
_ENCODED = re.compile(r"\$\{(hex|unicode):([ \t\r\n0-9A-Fa-f]*)\}", re.IGNORECASE)
# RFC 5228 §5.1: "Implementations MUST restrict the address test to headers that contain addresses";
# these are the RFC 5322 §3.6.2-3.6.7 address fields and common ones of later RFCs (RFC 8098 MDN, RFC
# 9228 Delivered-To, RFC 5536 Approved).
ADDRESS_HEADERS = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "bcc",
        "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc",
        "return-path", "disposition-notification-to", "delivered-to", "approved", "errors-to",
        "envelope-to", "x-original-to", "mail-followup-to", "mail-reply-to",
    }
)  # fmt: skip
_ZONE = re.compile(r"[+-][0-9]{4}")  # RFC 5260 §4.1 :zone "+hhmm" / "-hhmm"


def _decode_encoded(value: str, line: int) -> str:
    """RFC 5228 §2.4.2.4: `${hex:..}` and `${unicode:..}` replaced by what they encode."""
    if "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        words = match.group(2).split()
        if not words:
            return match.group()  # "${hex:}" is not an encoded-character: kept as written
        if match.group(1).lower() == "hex":
            if any(len(word) % 2 for word in words):
                return match.group()
            try:
                return bytes.fromhex("".join(words)).decode("utf-8")
            except UnicodeDecodeError:
                raise SieveSyntaxError("encoded-character ${hex:...} is not UTF-8", line) from None
        out = []
        for word in words:
            code = int(word[-8:], 16) if len(word.lstrip("0")) <= 6 else 0x110000
            # "It is an error for a script to use a hexadecimal value that isn't in either the range
            # 0 to D7FF or the range E000 to 10FFFF" (§2.4.2.4)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise SieveSyntaxError(f"encoded-character ${{unicode:{word}}} is not a character", line)
            out.append(chr(code))
        return "".join(out)

    return _ENCODED.sub(replace, value)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.capabilities: set[str] = set()
        self.nodes = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.END:
            self.index += 1
        return token

    def error(self, message: str, token: Token) -> SieveSyntaxError:
        return SieveSyntaxError(message, token.line, token.column)

    def is_punct(self, char: str) -> bool:
        token = self.peek()
        return token.kind is Kind.PUNCT and token.text == char

    def expect_punct(self, char: str, after: str) -> None:
        token = self.take()
        if token.kind is not Kind.PUNCT or token.text != char:
            raise self.error(f'expected "{char}" {after}, found {_describe(token)}', token)

    def count_node(self, token: Token) -> None:
        self.nodes += 1
        if self.nodes > MAX_COMMANDS:
            raise self.error(f"script has more than {MAX_COMMANDS} commands and tests", token)

    # --- commands
    def script(self) -> Script:
        commands = self.commands(depth=0, top=True)
        token = self.peek()
        if token.kind is not Kind.END:
            raise self.error(f"unexpected {_describe(token)}", token)
        return Script(tuple(commands), frozenset(self.capabilities))

    def commands(self, depth: int, top: bool) -> list[Command]:
        commands: list[Command] = []
        requires_allowed = top
        while True:
            token = self.peek()
            if token.kind is Kind.END or (token.kind is Kind.PUNCT and token.text == "}"):
                return commands
            if token.kind is not Kind.IDENTIFIER:
                raise self.error(f"expected a command, found {_describe(token)}", token)
            if token.text == "require" and not requires_allowed:
                # RFC 5228 §3.2: "require" MUST come before any other command
                raise self.error('"require" must come before any other command', token)
            if token.text in ("elsif", "else") and (not commands or commands[-1].name not in ("if", "elsif")):
                raise self.error(f'"{token.text}" must follow "if" or "elsif"', token)
            command = self.command(depth)
            if command.name != "require":
                requires_allowed = False
            commands.append(command)

    def command(self, depth: int) -> Command:
        token = self.take()
        name = token.text
        self.count_node(token)
        signature = COMMANDS.get(name)
        if signature is None:
            raise self.error(f'unknown command "{name}"', token)
        self.check_capability("command", name, signature, token)
        arguments = self.arguments()
        test: Test | None = None
        if signature.tests is Arity.ONE:
            test = self.test(1)  # tests nest in a count of their own, apart from blocks
        tags, positional = check(
            "command", name, signature, arguments, frozenset(self.capabilities), token.line
        )
        if name == "require":
            self.require(positional[0], token)
        block: tuple[Command, ...] | None = None
        if signature.block:
            if not self.is_punct("{"):
                raise self.error(
                    f'"{name}" needs a block "{{ ... }}", found {_describe(self.peek())}', self.peek()
                )
            if depth + 1 > MAX_NESTING:
                raise self.error(f"blocks nest deeper than {MAX_NESTING}", self.peek())
            self.take()
            block = tuple(self.commands(depth + 1, top=False))
            self.expect_punct("}", f'to close the block of "{name}"')
        else:
            after = self.take()
            if after.kind is not Kind.PUNCT or after.text != ";":
                opens = after.kind is Kind.IDENTIFIER or (after.kind is Kind.PUNCT and after.text in "{(")
                what = "a test or block" if opens else _describe(after)
                raise self.error(f'expected ";" after "{name}", found {what}', after)
        command = Command(name, tags, positional, test, block, token.line)
        self.check_command(command)
        return command

    def require(self, argument: Argument, token: Token) -> None:
        assert isinstance(argument, StringList)
        for capability in argument.values:
            if capability not in SUPPORTED_CAPABILITIES:
                raise self.error(f'unsupported capability "{capability}" in require', token)
            self.capabilities.add(capability)

    def check_capability(self, what: str, name: str, signature: Signature, token: Token) -> None:
        if signature.capability is not None and signature.capability not in self.capabilities:
            raise self.error(f'{what} "{name}" needs require "{signature.capability}"', token)

    # --- tests
    def test(self, depth: int) -> Test:
        token = self.take()
        if token.kind is not Kind.IDENTIFIER:
            raise self.error(f"expected a test, found {_describe(token)}", token)
        if depth > MAX_NESTING:
            raise self.error(f"tests nest deeper than {MAX_NESTING}", token)
        self.count_node(token)
        name = token.text
        signature = TESTS.get(name)
        if signature is None:
            raise self.error(f'unknown test "{name}"', token)
        self.check_capability("test", name, signature, token)
        arguments = self.arguments()
        tests: tuple[Test, ...] = ()
        if signature.tests is Arity.ONE:
            tests = (self.test(depth + 1),)
        elif signature.tests is Arity.LIST:
            self.expect_punct("(", f'after "{name}"')
            items = [self.test(depth + 1)]
            while self.is_punct(","):
                self.take()
                items.append(self.test(depth + 1))
            self.expect_punct(")", f'to close the tests of "{name}"')
            tests = tuple(items)
        tags, positional = check("test", name, signature, arguments, frozenset(self.capabilities), token.line)
        test = Test(name, tags, positional, tests, token.line)
        self.check_test(test)
        return test

    # --- arguments
    def arguments(self) -> list[Argument]:
        arguments: list[Argument] = []
        while True:
            token = self.peek()
            if token.kind is Kind.TAG:
                self.take()
                arguments.append(Tag(token.text, token.line))
            elif token.kind is Kind.NUMBER:
                self.take()
                arguments.append(Number(token.number, token.line))
            elif token.kind is Kind.STRING:
                self.take()
                arguments.append(StringList((self.string(token),), False, token.line))
            elif token.kind is Kind.PUNCT and token.text == "[":
                arguments.append(self.string_list())
            else:
                return arguments

    def string(self, token: Token) -> str:
        if "encoded-character" in self.capabilities:
            return _decode_encoded(token.text, token.line)
        return token.text

    def string_list(self) -> StringList:
        opening = self.take()
        values: list[str] = []
        while True:
            token = self.take()
            if token.kind is not Kind.STRING:
                raise self.error(f"expected a string in the list, found {_describe(token)}", token)
            values.append(self.string(token))
            if len(values) > MAX_STRING_LIST:
                raise self.error(f"string list has more than {MAX_STRING_LIST} strings", token)
            after = self.take()
            if after.kind is Kind.PUNCT and after.text == "]":
                return StringList(tuple(values), True, opening.line)
            if after.kind is not Kind.PUNCT or after.text != ",":
                raise self.error(f'expected "," or "]" in the string list, found {_describe(after)}', after)

    # --- checks beyond the signatures
    def check_command(self, command: Command) -> None:
        line = command.line
        if command.name == "set":
            name = command.string_list(0)[0]
            if not _is_variable_name(name):
                raise SieveSyntaxError(f'"set": "{name}" is not a variable name', line)
        elif command.name in ("setflag", "addflag", "removeflag") and len(command.positional) == 2:
            if "variables" not in self.capabilities:
                raise SieveSyntaxError(
                    f'"{command.name}" with a variable name needs require "variables"', line
                )
        elif command.name == "global":
            if "variables" not in self.capabilities:
                raise SieveSyntaxError('"global" needs require "variables"', line)
            for name in command.string_list(0):
                if not _is_variable_name(name):
                    raise SieveSyntaxError(f'"global": "{name}" is not a variable name', line)
        elif command.name == "vacation":
            period = command.tags.get("days") or command.tags.get("seconds")
            assert period is None or isinstance(period, Number)

    def check_test(self, test: Test) -> None:
        line = test.line
        comparator = test.tags.get("comparator")
        if isinstance(comparator, StringList):
            name = comparator.values[0]
            if name not in _KNOWN_COMPARATORS:
                raise SieveSyntaxError(f'unknown comparator "{name}"', line)
            if name not in _IMPLICIT_COMPARATORS and f"comparator-{name}" not in self.capabilities:
                raise SieveSyntaxError(f'comparator "{name}" needs require "comparator-{name}"', line)
            if name == "i;ascii-numeric" and ("contains" in test.tags or "matches" in test.tags):
                # RFC 4790 §9.1.1: i;ascii-numeric offers equality and ordering, not substrings
                raise SieveSyntaxError(
                    'comparator "i;ascii-numeric" cannot be used with :contains or :matches', line
                )
        for relational in ("count", "value"):
            operator = test.tags.get(relational)
            if isinstance(operator, StringList) and operator.values[0].lower() not in RELATIONAL_OPERATORS:
                raise SieveSyntaxError(f'":{relational}" needs one of gt, ge, lt, le, eq, ne', line)
        if "last" in test.tags and "index" not in test.tags:
            raise SieveSyntaxError('":last" needs ":index"', line)  # RFC 5260 §6
        index = test.tags.get("index")
        if isinstance(index, Number) and index.value < 1:
            raise SieveSyntaxError('":index" counts from 1', line)
        zone = test.tags.get("zone")
        if isinstance(zone, StringList) and _ZONE.fullmatch(zone.values[0]) is None:
            raise SieveSyntaxError(f'":zone" must be +hhmm or -hhmm, not "{zone.values[0]}"', line)
        if test.name in ("date", "currentdate"):
            part = test.string_list(1 if test.name == "date" else 0)[0]
            if part.lower() not in DATE_PARTS and "${" not in part:
                raise SieveSyntaxError(f'unknown date part "{part}"', line)
        if test.name == "hasflag" and len(test.positional) == 2 and "variables" not in self.capabilities:
            raise SieveSyntaxError('"hasflag" with variable names needs require "variables"', line)
        if test.name == "address":
            for name in test.string_list(0):
                if name.lower() not in ADDRESS_HEADERS and "${" not in name:
                    raise SieveSyntaxError(
                        f'"{name}" is not an address header: the address test cannot use it', line
                    )
        if test.name == "envelope":
            for part in test.string_list(0):
                if part.lower() not in ("from", "to") and "${" not in part:
                    raise SieveSyntaxError(f'unknown envelope part "{part}"', line)


def _is_variable_name(name: str) -> bool:
    return _VARIABLE_NAME.fullmatch(name) is not None


def _describe(token: Token) -> str:
    if token.kind is Kind.END:
        return "the end of the script"
    if token.kind is Kind.STRING:
        return "a string"
    if token.kind is Kind.NUMBER:
        return "a number"
    if token.kind is Kind.TAG:
        return f'":{token.text}"'
    return f'"{token.text}"'


def parse_script(text: str) -> Script:
    """The checked AST of a Sieve script, or SieveSyntaxError naming the line (and column)."""
    return _Parser(tokenize(text)).script()
