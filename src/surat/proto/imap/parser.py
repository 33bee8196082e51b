"""IMAP command grammar (RFC 9051 §9, plus RFC 3501 where rev1 differs, and the extensions' grammars).

``parse_command`` takes one complete command as it arrived on the wire, without the final CRLF, literals
included in place (`{5}\\r\\nhello`); the reader frames commands and enforces size limits before this
runs. Every rule is strict: one SP between tokens, no trailing spaces, keywords case-insensitive.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable
from typing import Final

from surat.proto.imap import commands as c
from surat.proto.imap.seqset import SequenceSet, SequenceSetError, parse_sequence_set

__all__ = [
    "SEARCH_CHARSETS",
    "CommandSyntaxError",
    "Scanner",
    "parse_command",
    "parse_date_time",
    "parse_tag",
]

MAX_NUMBER64: Final = 2**63 - 1  # RFC 9051 §9 number64
MAX_NUMBER: Final = 2**32 - 1  # RFC 9051 §9 number
_CTL = frozenset(range(0x20)) | {0x7F}
# RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | _CTL
_LIST_WILDCARDS = frozenset(b"%*")
_MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SYSTEM_FLAGS: Final = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_STATUS_ITEMS: Final = frozenset(
    # RFC 9051 §6.3.11, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ, RFC 7889 APPENDLIMIT, RFC 3501 RECENT
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "SIZE",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
        "RECENT",
    }
)
_SEARCH_RETURN: Final = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})  # RFC 9051 §6.4.4, RFC 5182
_SORT_KEYS: Final = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
_THREAD_ALGORITHMS: Final = frozenset({"ORDEREDSUBJECT", "REFERENCES"})
_LIST_SELECT: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_SELECT_BASE: Final = frozenset({"SUBSCRIBED", "SPECIAL-USE"})
_LIST_RETURN: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_USE_ATTRS: Final = {
    a.upper(): a for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}


class CommandSyntaxError(Exception):
    """A command the grammar rejects: the shell answers ``tag BAD message`` (``code``, if any, in brackets).

    ``tag`` is "*" when not even the tag could be read. ``code`` "BADCHARSET" asks for a NO (RFC 9051 §6.4.4).
    """

    def __init__(self, tag: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.code = code


class _Fail(Exception):
    """Internal: a grammar failure before the tag is attached."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(f"{what} is not valid UTF-8") from None


class Scanner:
    """A cursor over one command's bytes with the RFC 9051 §9 lexical rules."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- basics ------------------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def fail(self, message: str) -> _Fail:
        return _Fail(message)

    def expect(self, literal: bytes, what: str | None = None) -> None:
        if self.data[self.pos : self.pos + len(literal)] != literal:
            raise _Fail(f"expected {what or repr(literal.decode())} at offset {self.pos}")
        self.pos += len(literal)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def try_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def keyword(self, word: str) -> bool:
        """Consume ``word`` (case-insensitive) if it is next and is followed by a token boundary."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() == word.encode() and (
            end >= len(self.data) or self.data[end] in b" ()[]"
        ):
            self.pos = end
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise _Fail(f"unexpected characters at offset {self.pos}: {self._excerpt()}")

    def _excerpt(self) -> str:
        return repr(self.data[self.pos : self.pos + 20].decode("utf-8", "replace"))

    # -- tokens ------------------------------------------------------------------------------------

    def _run(self, allowed: Callable[[int], bool]) -> bytes:
        start = self.pos
        data = self.data
        n = len(data)
        while self.pos < n and allowed(data[self.pos]):
            self.pos += 1
        return data[start : self.pos]

    def atom(self, what: str = "an atom") -> str:
        """RFC 9051 §9 atom: 1*ATOM-CHAR (ASCII only)."""
        raw = self._run(lambda b: b not in _ATOM_SPECIALS and b < 0x80)
        if not raw:
            raise _Fail(f"expected {what} at offset {self.pos}")
        return raw.decode("ascii")

    def number(self, *, nonzero: bool = False, limit: int = MAX_NUMBER, what: str = "a number") -> int:
        raw = self._run(lambda b: 0x30 <= b <= 0x39)
        if not raw:
            raise _Fail(f"expected {what} at offset {self.pos}")
        value = int(raw)
        if value > limit:
            raise _Fail(f"{what} {value} is too large")
        if nonzero and (value == 0 or raw[0] == 0x30):
            raise _Fail(f"{what} must be a non-zero number")
        return value

    def number64(self, *, nonzero: bool = False, what: str = "a number") -> int:
        return self.number(nonzero=nonzero, limit=MAX_NUMBER64, what=what)

    def literal(self, *, allow_literal8: bool = False) -> tuple[bytes, bool]:
        """RFC 9051 §4.3 literal, RFC 7888 `{n+}`, RFC 3516 literal8 `~{n}`. Returns (bytes, is_literal8)."""
        binary = False
        if self.peek() == 0x7E:  # "~"
            if not allow_literal8:
                raise _Fail("literal8 is not allowed here")
            binary = True
            self.pos += 1
        self.expect(b"{")
        size = self.number64(what="literal size")
        if self.peek() == 0x2B:  # "+"
            self.pos += 1
        self.expect(b"}\r\n", "'}' CRLF after the literal size")
        if self.pos + size > len(self.data):
            raise _Fail("literal is shorter than announced")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        if not binary and b"\x00" in value:
            raise _Fail("NUL in a literal (RFC 9051 §4.3: use literal8)")
        return value, binary

    def quoted(self) -> bytes:
        """RFC 9051 §9 quoted: DQUOTE *QUOTED-CHAR DQUOTE; 8-bit octets must be UTF-8 (callers decode)."""
        self.expect(b'"')
        out = bytearray()
        data = self.data
        n = len(data)
        while True:
            if self.pos >= n:
                raise _Fail("unterminated quoted string")
            b = data[self.pos]
            self.pos += 1
            if b == 0x22:
                return bytes(out)
            if b == 0x5C:  # backslash escapes only quoted-specials
                if self.pos >= n or data[self.pos] not in b'"\\':
                    raise _Fail("invalid escape in quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif b in (0x0D, 0x0A, 0x00):
                raise _Fail("CR, LF or NUL in a quoted string")
            else:
                out.append(b)

    def string_bytes(self) -> bytes:
        b = self.peek()
        if b == 0x22:
            return self.quoted()
        if b == 0x7B:
            return self.literal()[0]
        raise _Fail(f"expected a string at offset {self.pos}")

    def string(self, what: str = "string") -> str:
        return _decode_utf8(self.string_bytes(), what)

    def astring_bytes(self) -> bytes:
        b = self.peek()
        if b in (0x22, 0x7B):
            return self.string_bytes()
        # ASTRING-CHAR = ATOM-CHAR / resp-specials ("]")
        raw = self._run(lambda x: (x not in _ATOM_SPECIALS or x == 0x5D) and x < 0x80)
        if not raw:
            raise _Fail(f"expected an atom or string at offset {self.pos}")
        return raw

    def astring(self, what: str = "string") -> str:
        return _decode_utf8(self.astring_bytes(), what)

    def nstring(self) -> str | None:
        if self.keyword("NIL"):
            return None
        return self.string()

    def mailbox(self) -> str:
        name = self.astring("mailbox name")
        # RFC 9051 §5.1: "INBOX" is case-insensitive; every other name is case-sensitive.
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """RFC 9051 §9 list-mailbox = 1*list-char / string (list-char adds % and * to ASTRING-CHAR)."""
        b = self.peek()
        if b in (0x22, 0x7B):
            return self.string("mailbox pattern")
        raw = self._run(lambda x: (x not in _ATOM_SPECIALS or x in _LIST_WILDCARDS or x == 0x5D) and x < 0x80)
        if not raw:
            raise _Fail(f"expected a mailbox pattern at offset {self.pos}")
        return raw.decode("ascii")

    def flag(self, *, allow_recent: bool = False) -> str:
        """RFC 9051 §9 flag: system flags case-normalised, keywords as given, `\\*` not allowed here."""
        if self.peek() == 0x5C:
            self.pos += 1
            name = "\\" + self.atom("a flag name")
            canonical = _SYSTEM_FLAGS.get(name.upper())
            if canonical is not None:
                return canonical
            if allow_recent and name.upper() == "\\RECENT":
                return "\\Recent"
            # RFC 9051 §9 flag-extension: other \atoms are reserved for future system flags; keep them.
            return name
        return self.atom("a flag keyword")

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        if self.peek() != 0x29:
            flags.append(self.flag())
            while self.try_sp():
                flags.append(self.flag())
        self.expect(b")")
        return tuple(flags)

    def sequence_set(self, *, allow_saved: bool = True) -> SequenceSet:
        raw = self._run(lambda b: (0x30 <= b <= 0x39) or b in b":,*$")
        try:
            return parse_sequence_set(raw.decode("ascii"), allow_saved=allow_saved)
        except SequenceSetError as exc:
            raise _Fail(str(exc)) from None

    def date(self) -> datetime.date:
        """RFC 9051 §9 date = date-text / DQUOTE date-text DQUOTE."""
        if self.peek() == 0x22:
            self.pos += 1
            value = self._date_text()
            self.expect(b'"')
            return value
        return self._date_text()

    def _date_text(self) -> datetime.date:
        day = self._run(lambda b: 0x30 <= b <= 0x39)
        if not 1 <= len(day) <= 2:
            raise _Fail("invalid date: expected day of month")
        self.expect(b"-", "'-' in date")
        month = self._month()
        self.expect(b"-", "'-' in date")
        year = self._run(lambda b: 0x30 <= b <= 0x39)
        if len(year) != 4:
            raise _Fail("invalid date: expected a 4-digit year")
        try:
            return datetime.date(int(year), month, int(day))
        except ValueError:
            raise _Fail("invalid date") from None

    def _month(self) -> int:
        name = self.data[self.pos : self.pos + 3].decode("ascii", "replace").upper()
        if name not in _MONTHS:
            raise _Fail(f"invalid month {name!r}")
        self.pos += 3
        return _MONTHS.index(name) + 1

    def date_time(self) -> datetime.datetime:
        """RFC 9051 §9 date-time (`"17-Jul-1996 02:44:25 -0700"`, quotes included)."""
        self.expect(b'"')
        if self.peek() == 0x20:  # date-day-fixed = (SP DIGIT) / 2DIGIT
            self.pos += 1
        day = self._run(lambda b: 0x30 <= b <= 0x39)
        if not 1 <= len(day) <= 2:
            raise _Fail("invalid date-time: day")
        self.expect(b"-", "'-' in date-time")
        month = self._month()
        self.expect(b"-", "'-' in date-time")
        rest = self.data[self.pos : self.pos + 20]
        # date-year SP time SP zone DQUOTE: "yyyy hh:mm:ss +zzzz\""
        if len(rest) < 20 or rest[4:5] != b" " or rest[13:14] != b" " or rest[19:20] != b'"':
            raise _Fail("invalid date-time")
        text = rest.decode("ascii", "replace")
        year, clock, zone = text[0:4], text[5:13], text[14:19]
        if not (
            year.isdigit()
            and clock[2] == ":"
            and clock[5] == ":"
            and (clock[0:2] + clock[3:5] + clock[6:8]).isdigit()
            and zone[0] in "+-"
            and zone[1:].isdigit()
        ):
            raise _Fail("invalid date-time")
        try:
            offset = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
            if zone[0] == "-":
                offset = -offset
            value = datetime.datetime(
                int(year),
                month,
                int(day),
                int(clock[0:2]),
                int(clock[3:5]),
                int(clock[6:8]),
                tzinfo=datetime.timezone(offset),
            )
        except ValueError:
            raise _Fail("invalid date-time") from None
        self.pos += 20
        return value

    def paren_list(self, item: Callable[[], str]) -> tuple[str, ...]:
        """ "(" item *(SP item) ")" with at least one item."""
        self.expect(b"(")
        items = [item()]
        while self.try_sp():
            items.append(item())
        self.expect(b")")
        return tuple(items)


def parse_date_time(text: str) -> datetime.datetime:
    """Parse a quoted RFC 9051 date-time (e.g. `"17-Jul-1996 02:44:25 -0700"`), raising ValueError."""
    s = Scanner(text.encode())
    try:
        value = s.date_time()
        s.end()
    except _Fail as exc:
        raise ValueError(exc.message) from None
    return value


def parse_tag(data: bytes) -> str | None:
    """The tag at the start of a command, or None if there is no valid one.

    RFC 9051 §9 tag = 1*<any ASTRING-CHAR except "+">.
    """
    end = 0
    n = len(data)
    while end < n:
        b = data[end]
        if b == 0x20:
            break
        if (b in _ATOM_SPECIALS and b != 0x5D) or b == 0x2B or b >= 0x80:
            return None
        end += 1
    if end == 0:
        return None
    return data[:end].decode("ascii")


# --- command parsers --------------------------------------------------------------------------------

_Parser = Callable[[Scanner, str, bool], c.Command]


def _no_args(cls: Callable[[str], c.Command]) -> _Parser:
    def parse(s: Scanner, tag: str, uid: bool) -> c.Command:
        return cls(tag)

    return parse


def _authenticate(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    mechanism = s.atom("a SASL mechanism").upper()
    initial: bytes | None = None
    if s.try_sp():
        # RFC 4959 §3: initial-response = base64 / "=" (empty response).
        raw = s._run(lambda b: b not in _ATOM_SPECIALS and b < 0x80)
        if raw == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise _Fail("invalid base64 in SASL initial response") from None
            if not raw:
                raise _Fail("empty SASL initial response (use '=')")
    return c.Authenticate(tag, mechanism, initial)


def _login(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    user = s.astring("user name")
    s.sp()
    password = s.astring("password")
    return c.Login(tag, user, password)


def _enable(s: Scanner, tag: str, uid: bool) -> c.Command:
    caps = []
    s.sp()  # RFC 5161 §4: command-any =/ "ENABLE" 1*(SP capability)
    caps.append(s.atom("a capability").upper())
    while s.try_sp():
        caps.append(s.atom("a capability").upper())
    return c.Enable(tag, tuple(caps))


def _compress(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    return c.Compress(tag, s.atom("a compression mechanism").upper())


def _id(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    if s.keyword("NIL"):
        return c.Id(tag, None)
    s.expect(b"(")
    params: list[tuple[str, str | None]] = []
    if s.peek() != 0x29:
        while True:
            key = s.string("ID field")
            s.sp()
            value = s.nstring()
            # RFC 2971 §3.3: at most 30 pairs, fields up to 30 octets, values up to 1024 octets.
            if len(key.encode()) > 30 or (value is not None and len(value.encode()) > 1024):
                raise _Fail("ID field or value too long")
            params.append((key, value))
            if len(params) > 30:
                raise _Fail("too many ID fields")
            if not s.try_sp():
                break
    s.expect(b")")
    return c.Id(tag, tuple(params))


def _qresync(s: Scanner) -> c.QResyncParams:
    # RFC 7162 §7: "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
    s.sp()
    s.expect(b"(")
    uidvalidity = s.number(nonzero=True, what="UIDVALIDITY")
    s.sp()
    modseq = s.number64(nonzero=True, what="mod-sequence value")
    known_uids: SequenceSet | None = None
    seqs: SequenceSet | None = None
    seq_uids: SequenceSet | None = None
    if s.try_sp():
        if s.peek() != 0x28:
            known_uids = s.sequence_set(allow_saved=False)
            if known_uids.uses_star:
                raise _Fail("'*' is not allowed in known-uids")
            has_match = s.try_sp()
        else:
            has_match = True
        if has_match:
            s.expect(b"(")
            seqs = s.sequence_set(allow_saved=False)
            s.sp()
            seq_uids = s.sequence_set(allow_saved=False)
            s.expect(b")")
    s.expect(b")")
    return c.QResyncParams(uidvalidity, modseq, known_uids, seqs, seq_uids)


def _select(examine: bool) -> _Parser:
    def parse(s: Scanner, tag: str, uid: bool) -> c.Command:
        s.sp()
        mailbox = s.mailbox()
        condstore = False
        qresync: c.QResyncParams | None = None
        if s.try_sp():
            s.expect(b"(")
            while True:
                if s.keyword("CONDSTORE") and not condstore:
                    condstore = True
                elif s.keyword("QRESYNC") and qresync is None:
                    qresync = _qresync(s)
                else:
                    raise _Fail(f"unknown or repeated SELECT parameter at offset {s.pos}")
                if not s.try_sp():
                    break
            s.expect(b")")
        if examine:
            return c.Examine(tag, mailbox, condstore, qresync)
        return c.Select(tag, mailbox, condstore, qresync)

    return parse


def _create(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    mailbox = s.mailbox()
    uses: list[str] = []
    if s.try_sp():
        # RFC 4466 §2.2 create-params; RFC 6154 §6 "USE" SP "(" [use-attr *(SP use-attr)] ")"
        s.expect(b"(")
        if not s.keyword("USE"):
            raise _Fail("unknown CREATE parameter")
        s.sp()
        s.expect(b"(")
        while s.peek() != 0x29:
            if uses:
                s.sp()
            attr = s.flag()
            canonical = _USE_ATTRS.get(attr.upper())
            if canonical is None:
                raise _Fail(f"unknown special-use attribute {attr}", "USEATTR")
            uses.append(canonical)
        s.expect(b")")
        s.expect(b")")
    return c.Create(tag, mailbox, tuple(uses))


def _one_mailbox(cls: Callable[[str, str], c.Command]) -> _Parser:
    def parse(s: Scanner, tag: str, uid: bool) -> c.Command:
        s.sp()
        return cls(tag, s.mailbox())

    return parse


def _rename(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    old = s.mailbox()
    s.sp()
    return c.Rename(tag, old, s.mailbox())


def _status_att(s: Scanner) -> str:
    item = s.atom("a STATUS item").upper()
    if item not in _STATUS_ITEMS:
        raise _Fail(f"unknown STATUS item {item}")
    return item


def _list(s: Scanner, tag: str, uid: bool) -> c.Command:
    # RFC 5258 §6: list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    s.sp()
    selection: set[str] = set()
    extended = False
    if s.peek() == 0x28:
        extended = True
        s.expect(b"(")
        while s.peek() != 0x29:
            if selection:
                s.sp()
            opt = s.atom("a selection option").upper()
            if opt not in _LIST_SELECT:
                raise _Fail(f"unknown LIST selection option {opt}")
            selection.add(opt)
        s.expect(b")")
        s.sp()
        # RFC 5258 §3.1 and §6 (list-select-opts): RECURSIVEMATCH is a list-select-mod-opt and needs a
        # list-select-base-opt beside it (SUBSCRIBED, or SPECIAL-USE from RFC 6154 §6); alone or with
        # only REMOTE the server MUST answer BAD.
        if "RECURSIVEMATCH" in selection and not selection & _LIST_SELECT_BASE:
            raise _Fail("RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE beside it (RFC 5258 §3.1)")
    reference = s.astring("reference name")
    s.sp()
    patterns: list[str] = []
    if s.peek() == 0x28:
        extended = True
        s.expect(b"(")
        patterns.append(s.list_mailbox())
        while s.try_sp():
            patterns.append(s.list_mailbox())
        s.expect(b")")
    else:
        patterns.append(s.list_mailbox())
    returns: set[str] = set()
    status: tuple[str, ...] | None = None
    if s.try_sp():
        extended = True
        if not s.keyword("RETURN"):
            raise _Fail("expected RETURN")
        s.sp()
        s.expect(b"(")
        first = True
        while s.peek() != 0x29:
            if not first:
                s.sp()
            first = False
            if s.keyword("STATUS"):
                # RFC 5819 §5: "STATUS" SP "(" status-att *(SP status-att) ")"
                s.sp()
                status = s.paren_list(lambda: _status_att(s))
                continue
            opt = s.atom("a return option").upper()
            if opt not in _LIST_RETURN:
                raise _Fail(f"unknown LIST return option {opt}")
            returns.add(opt)
        s.expect(b")")
    return c.List(tag, reference, tuple(patterns), frozenset(selection), frozenset(returns), status, extended)


def _lsub(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    reference = s.astring("reference name")
    s.sp()
    return c.Lsub(tag, reference, s.list_mailbox())


def _status(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    mailbox = s.mailbox()
    s.sp()
    return c.Status(tag, mailbox, s.paren_list(lambda: _status_att(s)))


# SEARCH ---------------------------------------------------------------------------------------------

_FLAG_KEYS: Final = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS: Final = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS: Final = {
    "BEFORE": (c.DateField.INTERNAL, c.DateOp.BEFORE),
    "ON": (c.DateField.INTERNAL, c.DateOp.ON),
    "SINCE": (c.DateField.INTERNAL, c.DateOp.SINCE),
    "SENTBEFORE": (c.DateField.SENT, c.DateOp.BEFORE),
    "SENTON": (c.DateField.SENT, c.DateOp.ON),
    "SENTSINCE": (c.DateField.SENT, c.DateOp.SINCE),
}
# RFC 9051 §6.4.4: US-ASCII and UTF-8 MUST be supported; they are all we search in. Search strings are
# decoded as UTF-8 under either (UTF-8 is a superset of US-ASCII).
SEARCH_CHARSETS: Final = ("UTF-8", "US-ASCII")
_CHARSET_ALIASES: Final = {"UTF-8": "UTF-8", "UTF8": "UTF-8", "US-ASCII": "US-ASCII", "ASCII": "US-ASCII"}
_MAX_SEARCH_DEPTH: Final = 32  # nesting bound so a crafted key cannot exhaust the stack


class _SearchParser:
    def __init__(self, s: Scanner) -> None:
        self.s = s

    def text(self) -> str:
        return _decode_utf8(self.s.astring_bytes(), "search string")

    def program(self) -> c.SearchKey:
        keys = [self.key(0)]
        while self.s.try_sp():
            keys.append(self.key(0))
        return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))

    def key(self, depth: int) -> c.SearchKey:
        if depth > _MAX_SEARCH_DEPTH:
            raise _Fail("search key nested too deeply")
        s = self.s
        b = s.peek()
        if b == 0x28:  # "(" search-key *(SP search-key) ")"
            s.pos += 1
            keys = [self.key(depth + 1)]
            while s.try_sp():
                keys.append(self.key(depth + 1))
            s.expect(b")")
            return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
        if (0x30 <= b <= 0x39) or b in (0x2A, 0x24):  # digit, "*" or "$" (peek() is -1 at the end)
            return c.SearchSeq(s.sequence_set())
        start = s.pos
        word = s.atom("a search key").upper()
        if word in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[word]
            return c.SearchFlag(flag, present)
        if word in _HEADER_KEYS:
            s.sp()
            return c.SearchHeader(word.lower(), self.text())
        if word in _DATE_KEYS:
            s.sp()
            field, op = _DATE_KEYS[word]
            return c.SearchDate(field, op, s.date())
        match word:
            case "ALL":
                return c.SearchAll()
            case "NEW":  # RFC 3501 §6.4.4: RECENT UNSEEN
                return c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchFlag("\\Seen", present=False)))
            case "OLD":
                return c.SearchFlag("\\Recent", present=False)
            case "KEYWORD" | "UNKEYWORD":
                s.sp()
                flag = s.atom("a keyword")
                return c.SearchFlag(flag, word == "KEYWORD")
            case "BODY" | "TEXT":
                s.sp()
                return c.SearchText(self.text(), body_only=word == "BODY")
            case "HEADER":
                s.sp()
                name = s.astring("header field name")
                s.sp()
                return c.SearchHeader(name.lower(), self.text())
            case "LARGER" | "SMALLER":
                s.sp()
                return c.SearchSize(word == "LARGER", s.number64(what="size"))
            case "NOT":
                s.sp()
                return c.SearchNot(self.key(depth + 1))
            case "OR":
                s.sp()
                left = self.key(depth + 1)
                s.sp()
                return c.SearchOr(left, self.key(depth + 1))
            case "UID":
                s.sp()
                return c.SearchUid(s.sequence_set())
            case "MODSEQ":
                # RFC 7162 §3.1.5: "MODSEQ" [search-modseq-ext] SP mod-sequence-valzer
                s.sp()
                entry: str | None = None
                entry_type: str | None = None
                if s.peek() == 0x22:
                    entry = s.string("entry name")
                    s.sp()
                    entry_type = s.atom("entry type").lower()
                    if entry_type not in ("priv", "shared", "all"):
                        raise _Fail("invalid MODSEQ entry type")
                    s.sp()
                return c.SearchModSeq(s.number64(what="mod-sequence value"), entry, entry_type)
        s.pos = start
        raise _Fail(f"unknown search key {word}")


def _charset(s: Scanner) -> str:
    """RFC 9051 §6.4.4: the CHARSET of SEARCH/SORT/THREAD. Only the charsets in ``SEARCH_CHARSETS`` are
    searched in; any other name (a real MIME charset or not) is `NO [BADCHARSET (...)]`. The name is never
    looked up as a Python codec: "rot13" or "hex" are codecs, not charsets."""
    name = s.string("charset") if s.peek() in (0x22, 0x7B) else s.atom("a charset")
    canonical = _CHARSET_ALIASES.get(name.upper())
    if canonical is None:
        raise _Fail(f"unsupported charset {name[:64]}", "BADCHARSET")
    return canonical


def _search(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    returns: tuple[str, ...] | None = None
    if s.keyword("RETURN"):
        # RFC 9051 §6.4.4 / RFC 4731 §3: search-return-opts; "RETURN ()" is RETURN (ALL).
        s.sp()
        s.expect(b"(")
        opts: list[str] = []
        while s.peek() != 0x29:
            if opts:
                s.sp()
            opt = s.atom("a search return option").upper()
            if opt not in _SEARCH_RETURN:
                raise _Fail(f"unknown SEARCH return option {opt}")
            if opt not in opts:
                opts.append(opt)
        s.expect(b")")
        s.sp()
        returns = tuple(opts) if opts else ("ALL",)
    charset: str | None = None
    if s.keyword("CHARSET"):
        s.sp()
        charset = _charset(s)
        s.sp()
    key = _SearchParser(s).program()
    return c.SearchCommand(tag, uid, key, charset, returns)


def _sort(s: Scanner, tag: str, uid: bool) -> c.Command:
    # RFC 5256 §5: sort = ["UID" SP] "SORT" SP sort-criteria SP search-criteria
    s.sp()
    s.expect(b"(")
    criteria: list[c.SortCriterion] = []
    while True:
        reverse = False
        if s.keyword("REVERSE"):
            reverse = True
            s.sp()
        key = s.atom("a sort key").upper()
        if key not in _SORT_KEYS:
            raise _Fail(f"unknown sort key {key}")
        criteria.append(c.SortCriterion(key, reverse))
        if not s.try_sp():
            break
    s.expect(b")")
    s.sp()
    charset = _charset(s)
    s.sp()
    key_tree = _SearchParser(s).program()
    return c.Sort(tag, uid, tuple(criteria), charset, key_tree)


def _thread(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    algorithm = s.atom("a thread algorithm").upper()
    if algorithm not in _THREAD_ALGORITHMS:
        raise _Fail(f"unknown thread algorithm {algorithm}")
    s.sp()
    charset = _charset(s)
    s.sp()
    key = _SearchParser(s).program()
    return c.Thread(tag, uid, algorithm, charset, key)


# FETCH ----------------------------------------------------------------------------------------------

_FETCH_MACROS: Final = {
    # RFC 9051 §6.4.5
    "ALL": (c.FetchAttr.FLAGS, c.FetchAttr.INTERNALDATE, c.FetchAttr.RFC822_SIZE, c.FetchAttr.ENVELOPE),
    "FAST": (c.FetchAttr.FLAGS, c.FetchAttr.INTERNALDATE, c.FetchAttr.RFC822_SIZE),
    "FULL": (
        c.FetchAttr.FLAGS,
        c.FetchAttr.INTERNALDATE,
        c.FetchAttr.RFC822_SIZE,
        c.FetchAttr.ENVELOPE,
        c.FetchAttr.BODY,
    ),
}
_SIMPLE_ATTRS: Final = {a.value: a for a in c.FetchAttr}


def _section_part(s: Scanner) -> tuple[int, ...]:
    parts = [s.number(nonzero=True, what="section part")]
    while s.peek() == 0x2E and 0x31 <= (s.data[s.pos + 1] if s.pos + 1 < len(s.data) else 0) <= 0x39:
        s.pos += 1
        parts.append(s.number(nonzero=True, what="section part"))
    return tuple(parts)


def _header_list(s: Scanner) -> tuple[str, ...]:
    s.sp()
    return s.paren_list(lambda: s.astring("header field name").upper())


def _section(s: Scanner, *, binary: bool) -> c.Section:
    s.expect(b"[")
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    if s.peek() != 0x5D:
        if 0x30 <= s.peek() <= 0x39:
            part = _section_part(s)
            if binary or s.peek() != 0x2E:
                s.expect(b"]")
                return c.Section(part)
            s.pos += 1
        elif binary:
            raise _Fail("BINARY section must be a part number")
        # RFC 9051 §9 section-msgtext / section-text
        if s.keyword("HEADER.FIELDS.NOT"):
            text = "HEADER.FIELDS.NOT"
            fields = _header_list(s)
        elif s.keyword("HEADER.FIELDS"):
            text = "HEADER.FIELDS"
            fields = _header_list(s)
        elif s.keyword("HEADER"):
            text = "HEADER"
        elif s.keyword("TEXT"):
            text = "TEXT"
        elif part and s.keyword("MIME"):
            text = "MIME"
        else:
            raise _Fail(f"invalid section at offset {s.pos}")
    s.expect(b"]")
    return c.Section(part, text, fields)


def _partial(s: Scanner) -> tuple[int, int] | None:
    if s.peek() != 0x3C:
        return None
    s.pos += 1
    start = s.number64(what="partial offset")
    s.expect(b".")
    length = s.number64(nonzero=True, what="partial length")
    s.expect(b">")
    return (start, length)


def _fetch_att(s: Scanner) -> c.FetchItem:
    raw = s._run(lambda b: (0x41 <= b <= 0x5A) or (0x61 <= b <= 0x7A) or (0x30 <= b <= 0x39) or b == 0x2E)
    name = raw.decode("ascii").upper()
    if s.peek() == 0x5B:  # "["
        match name:
            case "BODY" | "BODY.PEEK":
                section = _section(s, binary=False)
                return c.FetchBody(section, peek=name == "BODY.PEEK", partial=_partial(s))
            case "BINARY" | "BINARY.PEEK":  # RFC 3516 §4.2
                section = _section(s, binary=True)
                return c.FetchBody(section, peek=name == "BINARY.PEEK", partial=_partial(s), binary=True)
            case "BINARY.SIZE":
                return c.FetchBody(_section(s, binary=True), peek=True, binary=True, size_only=True)
        raise _Fail(f"unknown FETCH item {name}")
    attr = _SIMPLE_ATTRS.get(name)
    if attr is None:
        raise _Fail(f"unknown FETCH item {name or s._excerpt()}")
    return c.FetchSimple(attr)


def _fetch(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    seqset = s.sequence_set()
    s.sp()
    macro: str | None = None
    items: tuple[c.FetchItem, ...]
    if s.peek() == 0x28:
        s.pos += 1
        collected = [_fetch_att(s)]
        while s.try_sp():
            collected.append(_fetch_att(s))
        s.expect(b")")
        items = tuple(collected)
    else:
        for name, attrs in _FETCH_MACROS.items():
            if s.keyword(name):
                macro = name
                items = tuple(c.FetchSimple(a) for a in attrs)
                break
        else:
            items = (_fetch_att(s),)
    changedsince: int | None = None
    vanished = False
    if s.try_sp():
        # RFC 7162 §3.1.4.1 / §3.2.6: fetch-modifiers
        s.expect(b"(")
        while True:
            if s.keyword("CHANGEDSINCE") and changedsince is None:
                s.sp()
                changedsince = s.number64(nonzero=True, what="mod-sequence value")
            elif s.keyword("VANISHED") and not vanished:
                vanished = True
            else:
                raise _Fail(f"unknown or repeated FETCH modifier at offset {s.pos}")
            if not s.try_sp():
                break
        s.expect(b")")
    # RFC 7162 §3.2.6: VANISHED only in UID FETCH, and only together with CHANGEDSINCE.
    if vanished and (not uid or changedsince is None):
        raise _Fail("VANISHED requires UID FETCH with CHANGEDSINCE")
    return c.Fetch(tag, uid, seqset, items, changedsince, vanished, macro)


def _store(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    seqset = s.sequence_set()
    s.sp()
    unchangedsince: int | None = None
    if s.peek() == 0x28:
        # RFC 7162 §3.1.3: store-modifier = "UNCHANGEDSINCE" SP mod-sequence-valzer
        s.pos += 1
        if not s.keyword("UNCHANGEDSINCE"):
            raise _Fail("unknown STORE modifier")
        s.sp()
        unchangedsince = s.number64(what="mod-sequence value")
        s.expect(b")")
        s.sp()
    mode = c.StoreMode.REPLACE
    if s.peek() == 0x2B:
        mode = c.StoreMode.ADD
        s.pos += 1
    elif s.peek() == 0x2D:
        mode = c.StoreMode.REMOVE
        s.pos += 1
    silent = False
    if s.keyword("FLAGS.SILENT"):
        silent = True
    elif not s.keyword("FLAGS"):
        raise _Fail("expected FLAGS, +FLAGS or -FLAGS")
    s.sp()
    # RFC 9051 §9 store-att-flags: (flag-list / (flag *(SP flag)))
    if s.peek() == 0x28:
        flags = s.flag_list()
    else:
        collected = [s.flag()]
        while s.try_sp():
            collected.append(s.flag())
        flags = tuple(collected)
    return c.Store(tag, uid, seqset, mode, silent, flags, unchangedsince)


def _copy_or_move(cls: type[c.Copy] | type[c.Move]) -> _Parser:
    def parse(s: Scanner, tag: str, uid: bool) -> c.Command:
        s.sp()
        seqset = s.sequence_set()
        s.sp()
        return cls(tag, uid, seqset, s.mailbox())

    return parse


def _uid_expunge(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    return c.UidExpunge(tag, s.sequence_set())


def _getquota(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    return c.GetQuota(tag, s.astring("quota root"))


def _getquotaroot(s: Scanner, tag: str, uid: bool) -> c.Command:
    s.sp()
    return c.GetQuotaRoot(tag, s.mailbox())


def _setquota(s: Scanner, tag: str, uid: bool) -> c.Command:
    # RFC 9208 §4.1.3: "SETQUOTA" SP quota-root-name SP "(" [setquota-resource *(SP setquota-resource)] ")"
    s.sp()
    root = s.astring("quota root")
    s.sp()
    s.expect(b"(")
    limits: list[tuple[str, int]] = []
    while s.peek() != 0x29:
        if limits:
            s.sp()
        name = s.atom("a resource name").upper()
        s.sp()
        limits.append((name, s.number64(what="resource limit")))
    s.expect(b")")
    return c.SetQuota(tag, root, tuple(limits))


_COMMANDS: Final[dict[str, _Parser]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "COMPRESS": _compress,
    "ID": _id,
    "SELECT": _select(examine=False),
    "EXAMINE": _select(examine=True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(c.Namespace),
    "STATUS": _status,
    "IDLE": _no_args(c.Idle),
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _no_args(c.Expunge),
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_or_move(c.Copy),
    "MOVE": _copy_or_move(c.Move),
    "SORT": _sort,
    "THREAD": _thread,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _getquotaroot,
    "SETQUOTA": _setquota,
}
# RFC 9051 §6.4.9 (+ MOVE RFC 6851, SORT/THREAD RFC 5256, UID EXPUNGE RFC 4315)
_UID_COMMANDS: Final[dict[str, _Parser]] = {
    "COPY": _copy_or_move(c.Copy),
    "MOVE": _copy_or_move(c.Move),
    "FETCH": _fetch,
    "SEARCH": _search,
    "STORE": _store,
    "EXPUNGE": _uid_expunge,
    "SORT": _sort,
    "THREAD": _thread,
}

COMMAND_NAMES: Final = frozenset(_COMMANDS) | {"APPEND", "UID"}


def parse_command(data: bytes) -> c.Command:
    """Parse one complete command (no trailing CRLF). Raises CommandSyntaxError.

    APPEND is not parsed here: the reader streams it (see ``reader.CommandReader``).
    """
    tag = parse_tag(data)
    if tag is None:
        raise CommandSyntaxError("*", "invalid or missing tag")
    s = Scanner(data, len(tag))
    try:
        s.sp()
        name = s.atom("a command name").upper()
        uid = False
        table = _COMMANDS
        if name == "UID":
            s.sp()
            uid = True
            name = s.atom("a command name").upper()
            table = _UID_COMMANDS
        parser = table.get(name)
        if parser is None:
            raise _Fail(f"unknown command {'UID ' if uid else ''}{name}")
        command = parser(s, tag, uid)
        s.end()
    except _Fail as exc:
        raise CommandSyntaxError(tag, exc.message, exc.code) from None
    return command
