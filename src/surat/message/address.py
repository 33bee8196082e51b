"""THE address-list parser (RFC 5322 §3.4), for the IMAP ENVELOPE, From-ownership and DMARC alike.

Lenient like Dovecot and mox: any text yields addresses (a missing local part or domain is spelt
MISSING_MAILBOX / MISSING_DOMAIN, as IMAP shows it). Callers that must not guess (submission's From
check, DMARC's Author Domain) ask `mailboxes()`, which also says whether the field parsed cleanly.

Names and local parts stay raw (not RFC 2047 decoded). Work is linear in the value: one tokenizing
pass, one parsing pass over the tokens.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

__all__ = [
    "GROUP_END",
    "MAX_AUTHOR_FIELD",
    "MISSING_DOMAIN",
    "MISSING_MAILBOX",
    "Address",
    "Mailboxes",
    "mailboxes",
    "parse_address_list",
]

# Dovecot's spelling for an address whose domain or local part is missing: a NIL host would read
# as the start of a group in an IMAP ENVELOPE (RFC 9051 §7.5.2).
MISSING_DOMAIN = "MISSING_DOMAIN"
MISSING_MAILBOX = "MISSING_MAILBOX"


@dataclass(frozen=True, slots=True)
class Address:
    """One ENVELOPE address: (name, adl, mailbox, host), raw (RFC 9051 §7.5.2).

    Group syntax (RFC 5322 §3.4): the start is (None, None, group-name, None), the end is
    (None, None, None, None).
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None


GROUP_END = Address(None, None, None, None)


# Runs of white space and of atom characters, matched with one regex call each (the tokenizer is linear in
# the value either way; these make long runs cost C time, not a Python step per character).
_SPACE_RUN = re.compile(r"[ \t\r\n]+")
_ATOM_RUN = re.compile(r'[^()<>\[\]:;@\\," \t\r\n]*')


def _run_end(pattern: re.Pattern[str], text: str, start: int) -> int:
    match = pattern.match(text, start)
    return match.end() if match is not None else start


def _tokenize_addresses(text: str) -> tuple[list[tuple[str, str, str]], bool]:
    """(kind, raw, value) tokens: atom, qs (quoted string), comment, dlit, or a special char; and False
    when a quoted string, comment or domain literal was not closed (read to the end of the text)."""
    tokens: list[tuple[str, str, str]] = []
    closed = True
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i = _run_end(_SPACE_RUN, text, i)
        elif ch == '"':
            j = i + 1
            chars: list[str] = []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(text[j])
                j += 1
            closed = closed and j < n
            tokens.append(("qs", text[i : j + 1], "".join(chars)))
            i = j + 1
        elif ch == "(":
            depth = 0
            j = i
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "(":
                    depth += 1
                elif text[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            closed = closed and j < n
            tokens.append(("comment", text[i : j + 1], text[i + 1 : j].strip()))
            i = j + 1
        elif ch == "[":
            j = text.find("]", i)
            closed = closed and j >= 0
            j = n - 1 if j < 0 else j
            tokens.append(("dlit", text[i : j + 1], text[i : j + 1]))
            i = j + 1
        elif ch in "<>:;@,":
            tokens.append((ch, ch, ch))
            i += 1
        else:
            j = _run_end(_ATOM_RUN, text, i)
            if j == i:  # a lone ")", "]" or "\\"
                j = i + 1
            tokens.append(("atom", text[i:j], text[i:j]))
            i = j
    return tokens, closed


class _AddressParser:
    """RFC 5322 §3.4 address-list, leniently; names and local parts stay raw (not RFC 2047 decoded)."""

    def __init__(self, text: str) -> None:
        self.tokens, closed = _tokenize_addresses(text)
        self.i = 0
        # False once anything had to be guessed: an unclosed quote, comment, literal, "<" or group, or a
        # stray token skipped. The addresses are still returned (IMAP shows them); `mailboxes` refuses.
        self.clean = closed

    def _peek(self) -> str | None:
        while self.i < len(self.tokens) and self.tokens[self.i][0] == "comment":
            self.i += 1
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def parse(self) -> tuple[Address, ...]:
        out: list[Address] = []
        while self._peek() is not None:
            self._address(out, in_group=False)
            kind = self._peek()
            if kind in (",", ";", ">"):
                self.clean = self.clean and kind == ","
                self.i += 1
            elif kind is not None:
                self.clean = False  # two addresses without a comma between them
        return tuple(out)

    def _words(self, stops: str) -> tuple[list[tuple[str, str, str]], str | None]:
        """Tokens up to a stop character; also the text of the last comment seen."""
        words: list[tuple[str, str, str]] = []
        comment: str | None = None
        while self.i < len(self.tokens):
            token = self.tokens[self.i]
            if token[0] == "comment":
                comment = token[2] or comment
            elif token[0] in stops:
                break
            else:
                words.append(token)
            self.i += 1
        return words, comment

    @staticmethod
    def _phrase(words: list[tuple[str, str, str]]) -> str | None:
        text = " ".join(w[2] for w in words if w[0] in ("atom", "qs", "dlit"))
        return text or None

    @staticmethod
    def _joined(words: list[tuple[str, str, str]]) -> str:
        return "".join(w[1] for w in words)

    def _spec_part(self, words: list[tuple[str, str, str]]) -> str:
        """A local part or domain, joined; two words not separated by a "." (RFC 5322 §3.4.1, §4.4
        obs-local-part/obs-domain allow CFWS around the dots only) are a guess, not a clean parse."""
        for before, after in itertools.pairwise(words):
            if not (before[1].endswith(".") or after[1].startswith(".")):
                self.clean = False
        return self._joined(words)

    def _address(self, out: list[Address], in_group: bool) -> None:
        words, comment = self._words("<:;@,>" if not in_group else "<;@,>")
        kind = self._peek()
        if kind == "<":
            self.i += 1
            out.append(self._angle(self._phrase(words)))
        elif kind == ":" and not in_group:
            self.i += 1
            # RFC 5322 §3.4 group: display-name ":" [group-list] ";"
            out.append(Address(None, None, self._phrase(words) or "", None))
            while self._peek() not in (";", None):
                if self._peek() == ",":
                    self.i += 1
                    continue
                before = self.i
                self._address(out, in_group=True)
                if self.i == before:
                    self.i += 1
            if self._peek() == ";":
                self.i += 1
            else:
                self.clean = False
            out.append(GROUP_END)
        elif kind == "@":
            self.i += 1
            domain, comment2 = self._words(",;<>")
            local = self._spec_part(words) or MISSING_MAILBOX
            host = self._spec_part(domain) or MISSING_DOMAIN
            # "user@host (Name)": the comment serves as the name, as Dovecot does.
            out.append(Address(comment2 or comment, None, local, host))
        elif words:
            out.append(Address(comment, None, self._joined(words), MISSING_DOMAIN))

    def _angle(self, name: str | None) -> Address:
        adl: str | None = None
        if self._peek() == "@":
            # RFC 5322 §4.4 obsolete route: "@a,@b:" before the addr-spec.
            route, _ = self._words(":>")
            if self._peek() == ":":
                self.i += 1
                adl = self._joined(route) or None
        local_words, _ = self._words("@>")
        host_words: list[tuple[str, str, str]] = []
        if self._peek() == "@":
            self.i += 1
            host_words, _ = self._words(">")
        if self._peek() == ">":
            self.i += 1
        else:
            self.clean = False
        local = self._spec_part(local_words)
        host = self._spec_part(host_words)
        if not local and not host:
            return Address(name, adl, "", "")  # "<>", the null address
        return Address(name, adl, local or MISSING_MAILBOX, host or MISSING_DOMAIN)


def parse_address_list(value: bytes | str | None) -> tuple[Address, ...]:
    """The addresses of an address-list field value (unfolded; bytes are read as UTF-8, RFC 6532)."""
    if value is None:
        return ()
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    return _AddressParser(text).parse()


# RFC 5322 §3.2.3 atext (RFC 6532 §3.2: and any non-ASCII UTF-8), §3.4.1 dot-atom-text, quoted-string and
# domain-literal. atext excludes "." so each pattern has one way to match: linear.
_ATEXT = r"[^\x00-\x20()<>\[\]:;@\\,.\"\x7f]+"
_DOT_ATOM = _ATEXT + r"(?:\." + _ATEXT + r")*"
_LOCAL_PART = re.compile(_DOT_ATOM + r'|"(?:[^"\\\r\n]|\\.)*"')
_DOMAIN = re.compile(_DOT_ATOM + r"|\[[^\[\]\\\s]*\]")


# Octets of a From (or Sender) value that `mailboxes` and DMARC parse. RFC 5322 §2.1.1 limits a line to
# 998 octets; a longer author field is folded over many lines, and one of 8 KiB names about 300 people.
# Parsing is linear but a Python step per token (about 10 µs per address): this bounds it at ~20 ms on
# the event loop, where a 256 KiB From of 50 000 addresses took 0.5 s.
MAX_AUTHOR_FIELD = 8 * 1024


@dataclass(frozen=True, slots=True)
class Mailboxes:
    """The addr-specs of a From-like field (RFC 5322 §3.6.2 mailbox-list) and whether it parsed cleanly.

    `clean` is False when anything had to be guessed: an address without a local part or a domain, a
    local part or domain that is not RFC 5322 syntax, a group (not allowed in a mailbox-list), or no
    address at all. A field that is not clean names no author one may trust.
    """

    addr_specs: tuple[str, ...]  # "local@domain" as written (domain case kept)
    clean: bool

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(spec.rpartition("@")[2] for spec in self.addr_specs)


def mailboxes(value: bytes | str) -> Mailboxes:
    """RFC 5322 §3.6.2: the mailbox-list of a From (or Sender, Reply-To) field value."""
    if len(value) > MAX_AUTHOR_FIELD:
        return Mailboxes((), clean=False)  # not parsed: see MAX_AUTHOR_FIELD
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    parser = _AddressParser(text)
    addresses = parser.parse()
    specs: list[str] = []
    clean = parser.clean
    for address in addresses:
        mailbox, host = address.mailbox, address.host
        if mailbox is None or host is None:
            clean = False  # a group's start or end
            continue
        if (
            mailbox == MISSING_MAILBOX
            or host == MISSING_DOMAIN
            or _LOCAL_PART.fullmatch(mailbox) is None
            or _DOMAIN.fullmatch(host) is None
        ):
            clean = False
            continue
        specs.append(f"{mailbox}@{host}")
    return Mailboxes(tuple(specs), clean and bool(specs))
