"""IMAP commands as frozen dataclasses: what the parser produces and the shell dispatches on.

Mailbox names are given as sent (after literal/quoted decoding), with `INBOX` case-normalised
(RFC 9051 §5.1); converting modified UTF-7 for IMAP4rev1 sessions is the shell's job (it knows what the
client ENABLEd). Flags keep their spelling, except system flags which are case-normalised ("\\Seen").
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from surat.proto.imap.seqset import SequenceSet

__all__ = [
    "Append",
    "AppendMessage",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Compress",
    "Copy",
    "Create",
    "DateField",
    "DateOp",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttr",
    "FetchBody",
    "FetchItem",
    "FetchSimple",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "QResyncParams",
    "Rename",
    "SearchAll",
    "SearchAnd",
    "SearchCommand",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModSeq",
    "SearchNot",
    "SearchOr",
    "SearchSeq",
    "SearchSize",
    "SearchText",
    "SearchUid",
    "Section",
    "Select",
    "SetQuota",
    "Sort",
    "SortCriterion",
    "StartTLS",
    "Status",
    "Store",
    "StoreMode",
    "Subscribe",
    "Thread",
    "UidExpunge",
    "Unselect",
    "Unsubscribe",
]


# --- simple commands --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class StartTLS:
    tag: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Idle:
    """RFC 2177 / RFC 9051 §6.3.13. The shell answers `+ idling` and calls ``reader.expect_line()``."""

    tag: str


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    tag: str


@dataclass(frozen=True, slots=True)
class UidExpunge:
    """RFC 9051 §6.4.9 / RFC 4315 §2.1."""

    tag: str
    uids: SequenceSet


# --- authentication ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    """RFC 9051 §6.2.2; ``initial_response`` is SASL-IR (RFC 4959), decoded; `=` gives b""."""

    tag: str
    mechanism: str  # upper-cased
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"Login(tag={self.tag!r}, username={self.username!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class Enable:
    """RFC 5161; capability names upper-cased."""

    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compress:
    """RFC 4978; mechanism upper-cased (only DEFLATE exists)."""

    tag: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class Id:
    """RFC 2971; ``params`` None for `ID NIL`."""

    tag: str
    params: tuple[tuple[str, str | None], ...] | None


# --- mailboxes --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QResyncParams:
    """RFC 7162 §3.2.5.1 SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_seqs: SequenceSet | None = None  # seq-match-data: message sequence numbers ...
    known_seq_uids: SequenceSet | None = None  # ... and the UIDs the client believes they map to


@dataclass(frozen=True, slots=True)
class Select:
    tag: str
    mailbox: str
    condstore: bool = False  # RFC 7162 §3.1.8 (CONDSTORE) select parameter
    qresync: QResyncParams | None = None


@dataclass(frozen=True, slots=True)
class Examine:
    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResyncParams | None = None


@dataclass(frozen=True, slots=True)
class Create:
    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §3 CREATE ... (USE (\Sent))


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """RFC 9051 §6.3.9 with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154).

    ``selection``: upper-cased selection options (SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE).
    ``returns``: upper-cased return options other than STATUS (SUBSCRIBED, CHILDREN, SPECIAL-USE).
    ``status``: the STATUS items of `RETURN (STATUS (...))`, or None.
    ``extended``: the client used the extended syntax (selection or return options, or several patterns).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] | None = None
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub:
    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status:
    """Items upper-cased: MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT
    RECENT (rev1)."""

    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (RFC 9051 §6.3.12, MULTIAPPEND RFC 3502); emitted by the reader before
    the message's bytes, which follow as ``LiteralChunk`` events totalling ``size`` bytes.

    ``binary``: sent as literal8 (RFC 3516 §4.4); ``utf8``: the RFC 6855 §4 `UTF8 (~{n})` form.
    """

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime.datetime | None
    size: int
    binary: bool
    utf8: bool
    index: int  # 0 for the first message of the command


@dataclass(frozen=True, slots=True)
class Append:
    """The end of an APPEND command: all ``count`` messages were received; the shell commits them."""

    tag: str
    mailbox: str
    count: int


# --- quota (RFC 9208) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetQuota:
    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


# --- SEARCH key tree (RFC 9051 §6.4.4) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """Messages with (``present``) or without the flag; system flags carry their backslash."""

    flag: str
    present: bool = True


class DateField(enum.Enum):
    INTERNAL = "internal"  # BEFORE / ON / SINCE
    SENT = "sent"  # SENTBEFORE / SENTON / SENTSINCE (Date: header, timezone ignored)


class DateOp(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class SearchDate:
    field: DateField
    op: DateOp
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    larger: bool  # LARGER n (size > n) or SMALLER n (size < n)
    size: int


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER field string; FROM/TO/CC/BCC/SUBJECT are this with their field name (RFC 9051 §6.4.4).
    ``name`` is lower-cased. An empty value matches every message that has the field."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY (``body_only``) or TEXT (header and body)."""

    value: str
    body_only: bool


@dataclass(frozen=True, slots=True)
class SearchSeq:
    seqset: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchUid:
    uids: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """RFC 7162 §3.1.5 MODSEQ [entry-name entry-type-req] mod-sequence-valzer."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None  # "priv" / "shared" / "all"


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchDate
    | SearchSize
    | SearchHeader
    | SearchText
    | SearchSeq
    | SearchUid
    | SearchModSeq
    | SearchNot
    | SearchOr
    | SearchAnd
)


@dataclass(frozen=True, slots=True)
class SearchCommand:
    """SEARCH / UID SEARCH. ``returns`` is None for the classic form (untagged SEARCH), else the upper-cased
    ESEARCH return options (RFC 4731 / RFC 9051 §6.4.4: MIN MAX ALL COUNT SAVE); `RETURN ()` means ALL."""

    tag: str
    uid: bool
    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SortCriterion:
    """RFC 5256 §3: ARRIVAL CC DATE FROM SIZE SUBJECT TO (+ DISPLAYFROM/DISPLAYTO, RFC 5957)."""

    key: str
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort:
    tag: str
    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Thread:
    tag: str
    uid: bool
    algorithm: str  # ORDEREDSUBJECT or REFERENCES (RFC 5256 §3)
    charset: str
    key: SearchKey


# --- FETCH (RFC 9051 §6.4.5) ------------------------------------------------------------------------


class FetchAttr(enum.Enum):
    ENVELOPE = "ENVELOPE"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    BODY = "BODY"  # non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    MODSEQ = "MODSEQ"  # RFC 7162 §3.1.4.1
    RFC822 = "RFC822"  # rev1 only: BODY[] that sets \Seen
    RFC822_HEADER = "RFC822.HEADER"  # rev1 only: BODY.PEEK[HEADER]
    RFC822_TEXT = "RFC822.TEXT"  # rev1 only: BODY[TEXT]
    # BINARY.SIZE takes a section and is a FetchBody with size_only=True.


@dataclass(frozen=True, slots=True)
class FetchSimple:
    attr: FetchAttr


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 9051 §6.4.5 section-spec. ``part`` is the part path (1-based, () for the whole message);
    ``text`` is None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME; ``fields`` upper-cased."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section as echoed in the FETCH response (`1.2.HEADER.FIELDS (FROM TO)`)."""
        parts = [str(p) for p in self.part]
        if self.text is not None:
            text = self.text
            if self.fields:
                text += " (" + " ".join(self.fields) + ")"
            parts.append(text)
        return ".".join(parts)


@dataclass(frozen=True, slots=True)
class FetchBody:
    """BODY[section]<partial>, BODY.PEEK[...], BINARY[...] / BINARY.PEEK[...] and BINARY.SIZE[...]
    (RFC 3516). ``partial`` is (offset, length)."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None
    binary: bool = False
    size_only: bool = False

    def response_name(self) -> str:
        """The item name in the response: RFC 9051 §7.5.2 drops .PEEK and keeps only the origin octet."""
        if self.size_only:
            return f"BINARY.SIZE[{self.section.spec()}]"
        name = f"{'BINARY' if self.binary else 'BODY'}[{self.section.spec()}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        return name


FetchItem = FetchSimple | FetchBody


@dataclass(frozen=True, slots=True)
class Fetch:
    """``changedsince``/``vanished``: RFC 7162 §3.1.4.1 and §3.2.6 modifiers (CHANGEDSINCE implies MODSEQ in
    every response, which the shell adds). ``macro`` records ALL/FAST/FULL (already expanded into ``items``).
    The parser already rejects VANISHED without UID and CHANGEDSINCE."""

    tag: str
    uid: bool
    seqset: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False
    macro: str | None = None


class StoreMode(enum.Enum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True, slots=True)
class Store:
    tag: str
    uid: bool
    seqset: SequenceSet
    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    uid: bool
    seqset: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move:
    tag: str
    uid: bool
    seqset: SequenceSet
    mailbox: str


Command = (
    Capability
    | Noop
    | Logout
    | StartTLS
    | Authenticate
    | Login
    | Enable
    | Compress
    | Id
    | Select
    | Examine
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | UidExpunge
    | SearchCommand
    | Fetch
    | Store
    | Copy
    | Move
    | Sort
    | Thread
    | GetQuota
    | GetQuotaRoot
    | SetQuota
    | Append
)
