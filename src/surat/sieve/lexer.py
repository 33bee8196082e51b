"""The Sieve lexer (RFC 5228 §8.1): text in, tokens out, in one forward pass.

Linear in the script: every token is read by a loop or a regex whose classes leave one way to match,
and nothing is re-read. Line ends may be CRLF or bare LF (scripts uploaded from Unix editors).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from surat.sieve.errors import SieveSyntaxError
from surat.sieve.limits import MAX_NUMBER, MAX_SCRIPT_SIZE

__all__ = ["Kind", "Token", "tokenize"]


class Kind(enum.Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    PUNCT = "punctuation"  # one of []{}(),;
    END = "end of script"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # identifier/tag lower-cased (tag without ":"), string contents unescaped, punctuation char
    number: int
    line: int
    column: int


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_QUOTED_RUN = re.compile(r'[^"\\\n]*')  # quoted-safe characters up to a quote, backslash or line end
_BLANKS = re.compile(r"[ \t\r]*")
_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}  # RFC 5228 §2.4.1
_PUNCTUATION = frozenset("[](){},;")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.tokens: list[Token] = []

    def error(self, message: str, pos: int | None = None) -> SieveSyntaxError:
        at = self.pos if pos is None else pos
        return SieveSyntaxError(message, self.line, at - self.line_start + 1)

    def newline_at(self, pos: int) -> None:
        """Count the line end at `pos` (the position of its "\\n")."""
        self.line += 1
        self.line_start = pos + 1

    def run(self) -> list[Token]:
        text = self.text
        size = len(text)
        while True:
            self.skip_blanks_and_comments()
            if self.pos >= size:
                self.tokens.append(Token(Kind.END, "", 0, self.line, self.pos - self.line_start + 1))
                return self.tokens
            char = text[self.pos]
            column = self.pos - self.line_start + 1
            if char in _PUNCTUATION:
                self.tokens.append(Token(Kind.PUNCT, char, 0, self.line, column))
                self.pos += 1
            elif char == '"':
                line = self.line  # the string may span lines: its token is where it starts
                self.tokens.append(Token(Kind.STRING, self.quoted(), 0, line, column))
            elif char == ":":
                match = _IDENTIFIER.match(text, self.pos + 1)
                if match is None:
                    raise self.error('":" must start a tag such as ":is"')
                self.tokens.append(Token(Kind.TAG, match.group().lower(), 0, self.line, column))
                self.pos = match.end()
            elif char.isascii() and char.isdigit():
                self.tokens.append(Token(Kind.NUMBER, "", self.number(), self.line, column))
            elif (match := _IDENTIFIER.match(text, self.pos)) is not None:
                word = match.group().lower()
                self.pos = match.end()
                if word == "text" and text.startswith(":", self.pos):
                    line = self.line
                    self.pos += 1
                    self.tokens.append(Token(Kind.STRING, self.multiline(), 0, line, column))
                else:
                    self.tokens.append(Token(Kind.IDENTIFIER, word, 0, self.line, column))
            else:
                raise self.error(f"unexpected character {char!r}")

    def skip_blanks_and_comments(self) -> None:
        text = self.text
        size = len(text)
        while self.pos < size:
            char = text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char == "\n":
                self.newline_at(self.pos)
                self.pos += 1
            elif char == "#":  # RFC 5228 §2.3 hash-comment: to the end of the line
                end = text.find("\n", self.pos)
                self.pos = size if end < 0 else end
            elif text.startswith("/*", self.pos):  # bracket-comment: "/*" ... "*/", does not nest
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error('comment "/*" is not closed by "*/"')
                self.count_lines(self.pos, end)
                self.pos = end + 2
            else:
                return

    def count_lines(self, start: int, end: int) -> None:
        newline = self.text.rfind("\n", start, end)
        if newline >= 0:
            self.line += self.text.count("\n", start, end)
            self.line_start = newline + 1

    def number(self) -> int:
        start = self.pos
        match = _DIGITS.match(self.text, self.pos)
        assert match is not None
        digits = match.group()
        self.pos = match.end()
        if len(digits) > 19:  # MAX_NUMBER has 19 digits: refuse before converting a huge run
            raise self.error("number is too large", start)
        value = int(digits)
        if self.pos < len(self.text) and self.text[self.pos].lower() in _QUANTIFIERS:
            value *= _QUANTIFIERS[self.text[self.pos].lower()]
            self.pos += 1
        if value > MAX_NUMBER:
            raise self.error("number is too large", start)
        return value

    def quoted(self) -> str:
        """RFC 5228 §2.4.2: a quoted string; "\\\\" and "\\"" are the escapes, any other backslash
        is dropped ("\\a" is "a"). Line ends inside are allowed and kept."""
        text = self.text
        self.pos += 1
        parts: list[str] = []
        start_line, start_column = self.line, self.pos - self.line_start
        while True:
            match = _QUOTED_RUN.match(text, self.pos)
            assert match is not None
            parts.append(match.group())
            self.pos = match.end()
            if self.pos >= len(text):
                raise SieveSyntaxError("string is not closed by a quote", start_line, start_column)
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(parts)
            if char == "\n":
                parts.append("\n")
                self.newline_at(self.pos)
                self.pos += 1
            else:  # backslash
                if self.pos + 1 >= len(text):
                    raise SieveSyntaxError("string is not closed by a quote", start_line, start_column)
                escaped = text[self.pos + 1]
                parts.append(escaped)
                if escaped == "\n":
                    self.newline_at(self.pos + 1)
                self.pos += 2

    def multiline(self) -> str:
        """RFC 5228 §2.4.2 multi-line string: "text:", blanks, a comment or line end, then lines up to a
        line holding only "."; a line starting with "." has that dot removed (dot-stuffing)."""
        text = self.text
        blanks = _BLANKS.match(text, self.pos)
        assert blanks is not None
        self.pos = blanks.end()
        if text.startswith("#", self.pos):
            end = text.find("\n", self.pos)
            self.pos = len(text) if end < 0 else end
        if not text.startswith("\n", self.pos):
            raise self.error('"text:" must be followed by the end of the line')
        self.newline_at(self.pos)
        self.pos += 1
        lines: list[str] = []
        start_line = self.line
        while True:
            end = text.find("\n", self.pos)
            if end < 0:
                if text[self.pos :].removesuffix("\r") == ".":  # the final "." without a line end
                    self.pos = len(text)
                    return "".join(lines)
                raise SieveSyntaxError('multi-line string is not ended by a line holding "."', start_line)
            line = text[self.pos : end].removesuffix("\r")
            self.newline_at(end)
            self.pos = end + 1
            if line == ".":
                return "".join(lines)
            if line.startswith("."):
                line = line[1:]
            lines.append(line + "\r\n")  # the lines of a multi-line string end in CRLF (§2.4.2)


def tokenize(text: str) -> list[Token]:
    """The tokens of a script, ending with an END token; SieveSyntaxError for a lexical error."""
    if len(text) > MAX_SCRIPT_SIZE:  # the bound on all later work: lexing and parsing are linear
        raise SieveSyntaxError(f"script is longer than {MAX_SCRIPT_SIZE} characters", 1)
    return _Lexer(text).run()
