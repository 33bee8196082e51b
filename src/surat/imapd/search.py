"""IMAP SEARCH evaluation (RFC 9051 §6.4.4, RFC 7162 §3.1.5 MODSEQ, RFC 5182 `$`).

A search runs in up to three rounds, each over fewer messages than the one before:

1. every candidate against what the session already holds (flags, sizes, internal dates, MODSEQs,
   sequence numbers and UIDs); keys that need more are "unknown" (three-valued logic), so
   `UNSEEN SUBJECT x` only looks further at unseen messages;
2. the still-undecided ones, fetched from the store in batches of ``BATCH`` UIDs, against the header
   values decoded at delivery (`MessageInfo`: Subject, From, To, Cc, Bcc, Date);
3. what is still undecided against the message file: arbitrary HEADER fields (only the header bytes are
   read) and BODY/TEXT, streamed part by part from the store's `BlobReader` with transfer encodings and
   charsets decoded, yielding to the event loop after every chunk so it keeps serving other sessions.

Memory stays bounded on mailboxes of 100 000 messages: one batch of records at a time, one 64 KiB chunk
of a message at a time. Sequence numbers and UIDs: index ``i`` in the view is sequence number ``i + 1``.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import contextlib
import datetime
import email.errors
import email.header
import email.utils
import unicodedata
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from surat.message.encoded_words import decode_encoded_words
from surat.message.headers import read_header, unfold
from surat.message.info import MessageInfo
from surat.message.mime import BodyPart
from surat.message.transfer import transfer_decoder
from surat.proto.imap.commands import (
    DateField,
    DateOp,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSeq,
    SearchSize,
    SearchText,
    SearchUid,
)
from surat.proto.imap.parser import SEARCH_CHARSETS
from surat.proto.imap.seqset import SequenceSet
from surat.store.base import BlobReader, BlobStore, MessageRecord, MessageSummary, NotFound

__all__ = [
    "BATCH",
    "RECENT",
    "RECORD_SLICE",
    "SUPPORTED_CHARSETS",
    "BadCharset",
    "MessageFacts",
    "MessageSource",
    "SearchView",
    "SimpleView",
    "check_charset",
    "decode_header_value",
    "fold",
    "iter_records",
    "matching_indexes",
    "search",
    "sent_date",
]

BATCH: Final = 500  # UIDs per get_messages call
SUPPORTED_CHARSETS: Final = SEARCH_CHARSETS  # RFC 9051 §6.4.4: both MUST be supported; the parser checks
_CHUNK: Final = 64 * 1024
_MAX_HEADER: Final = 256 * 1024  # octets of a header block read for HEADER/TEXT (as MessageInfo keeps)
_YIELD_EVERY: Final = 2048  # messages evaluated against the session's state between two returns to the loop
# Records (MessageInfo decoded, keys evaluated) handled on the event loop between two returns to it: about
# 5 ms of work (decoding one record's header values costs ~50 µs), so a SEARCH/SORT/THREAD over 100 000
# messages never holds the loop longer than that at a stretch (measured: bench/search_stall.py).
RECORD_SLICE: Final = 100
RECENT: Final = "\\Recent"  # the parser's spelling of the RECENT/NEW/OLD keys' flag


class BadCharset(Exception):
    """SEARCH/SORT/THREAD with a charset we do not search in: `NO [BADCHARSET (UTF-8 US-ASCII)]`."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"unsupported charset {charset}")
        self.charset = charset
        self.supported = SUPPORTED_CHARSETS


def check_charset(charset: str | None) -> None:
    if charset is not None and charset.upper() not in SUPPORTED_CHARSETS:
        raise BadCharset(charset)


# ------------------------------------------------------------------------------------------- boundary


class MessageFacts(Protocol):
    """What a session knows of one message without asking the store (``MessageSummary`` fits)."""

    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def modseq(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def internal_date(self) -> datetime.datetime: ...


class SearchView(Protocol):
    """The session's selected mailbox: ``uids`` in sequence order (ascending), ``state`` per UID, and
    the RFC 5182 saved result (UIDs; None when nothing was saved, and then `$` matches nothing)."""

    @property
    def uids(self) -> Sequence[int]: ...
    @property
    def state(self) -> Mapping[int, MessageFacts]: ...
    @property
    def saved(self) -> Collection[int] | None: ...
    @property
    def recent(self) -> Collection[int]:
        """UIDs this session shows with \\Recent (RFC 3501 §2.3.2); empty for IMAP4rev2."""
        ...


class MessageSource(Protocol):
    """The part of ``surat.store.base.Store`` that searching uses."""

    @property
    def blobs(self) -> BlobStore: ...

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]: ...


@dataclass(frozen=True, slots=True)
class SimpleView:
    """A ``SearchView`` over a list of summaries (tests, and callers without a session)."""

    uids: Sequence[int]
    state: Mapping[int, MessageSummary]
    saved: Collection[int] | None = None
    recent: Collection[int] = frozenset()

    @classmethod
    def of(
        cls,
        messages: Iterable[MessageSummary],
        saved: Collection[int] | None = None,
        recent: Collection[int] = frozenset(),
    ) -> SimpleView:
        ordered = sorted(messages, key=lambda m: m.uid)
        return cls([m.uid for m in ordered], {m.uid: m for m in ordered}, saved, recent)


# ------------------------------------------------------------------------------------------- text


def fold(text: str) -> str:
    """RFC 9051 §6.4.4: string matching ignores case; NFC so composed and decomposed accents agree."""
    return unicodedata.normalize("NFC", text).casefold()


def _bytes_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        # Unlabelled 8-bit header octets that are not UTF-8: most often Latin-1 or CP1252.
        return value.decode("cp1252", "replace")


def decode_header_value(value: str | bytes) -> str:
    """An unfolded header value with RFC 2047 encoded words decoded and whitespace runs collapsed."""
    text = _bytes_text(value) if isinstance(value, bytes) else value
    if "=?" in text:
        text = decode_encoded_words(text)  # total: an undecodable word stays as written (RFC 2047 §6.3)
    return " ".join(text.split())


def _parse_header(raw: bytes) -> list[tuple[str, bytes]]:
    """(lower-cased name, unfolded raw value) of each field, in order, as surat.message reads them (the
    fields the ENVELOPE and SORT values came from)."""
    header = read_header(raw)
    return [(key.decode("ascii"), unfold(value)) for key, value in zip(header.keys, header.raws, strict=True)]


class _Finder:
    """Case-insensitive substring search over a stream of text, across chunk boundaries."""

    def __init__(self, needles: Collection[str]) -> None:
        self.remaining = set(needles)
        self.found: set[str] = set()
        self._keep = max((len(n) for n in needles), default=1) - 1
        self._tail = ""

    @property
    def done(self) -> bool:
        return not self.remaining

    def feed(self, text: str) -> None:
        if not self.remaining or not text:
            return
        window = self._tail + fold(text)
        hits = {n for n in self.remaining if n in window}
        if hits:
            self.remaining -= hits
            self.found |= hits
        self._tail = window[-self._keep :] if self._keep else ""


# ------------------------------------------------------------------------------------------- bodies


def _charset_decoder(part: BodyPart) -> codecs.IncrementalDecoder:
    label = dict(part.params).get("charset", "").strip().strip('"').lower()
    name = "utf-8"
    if label and label not in ("us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968"):
        try:
            name = codecs.lookup(label).name
        except LookupError:
            name = "utf-8"
    # US-ASCII parts very often carry UTF-8 anyway; decoding as UTF-8 is a superset.
    return codecs.getincrementaldecoder(name)("replace")


async def _read_range(reader: BlobReader, start: int, end: int) -> AsyncIterator[bytes]:
    position = start
    while position < end:
        chunk = await reader.read(position, min(_CHUNK, end - position))
        if not chunk:
            return
        position += len(chunk)
        yield chunk
        # The scan runs on the event loop: one _CHUNK of reading and matching at a time, then others
        # get their turn (the file backend's reads of this size do not suspend by themselves).
        await asyncio.sleep(0)


async def _read_all(reader: BlobReader, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in _read_range(reader, start, end)])


async def _header_text(reader: BlobReader, start: int, end: int) -> str:
    """A header block as "name: decoded value" lines, for TEXT and message/rfc822 headers."""
    raw = await _read_all(reader, start, min(end, start + _MAX_HEADER))
    return "\n".join(f"{name}: {decode_header_value(value)}" for name, value in _parse_header(raw))


async def _scan_body(reader: BlobReader, part: BodyPart, finder: _Finder) -> None:
    transfer = transfer_decoder(part.encoding)  # the decoders BINARY uses (RFC 2045 §6.7, §6.8)
    chars = _charset_decoder(part)
    async for chunk in _read_range(reader, part.body_start, part.end):
        finder.feed(chars.decode(transfer.feed(chunk)))
        if finder.done:
            return
    finder.feed(chars.decode(transfer.flush(), final=True))


@dataclass(slots=True)
class _BlobFacts:
    """What round 3 learned from the message file."""

    headers: dict[str, list[str]] = field(default_factory=dict)  # folded values of the asked fields
    text_found: set[str] = field(default_factory=set)  # TEXT needles found (header or body)
    body_found: set[str] = field(default_factory=set)  # BODY needles found in the body


@dataclass(frozen=True, slots=True)
class _BlobPlan:
    header_names: frozenset[str]
    text_needles: frozenset[str]  # folded
    body_needles: frozenset[str]  # folded


async def _scan_message(blobs: BlobStore, record: MessageRecord, plan: _BlobPlan) -> _BlobFacts:
    facts = _BlobFacts()
    root = record.info.body
    reader = await blobs.open(record.blob_id)
    with contextlib.closing(reader):
        if plan.header_names or plan.text_needles:
            raw = await _read_all(reader, 0, min(root.body_start, _MAX_HEADER))
            fields = _parse_header(raw)
            for name, value in fields:
                if name in plan.header_names:
                    facts.headers.setdefault(name, []).append(fold(decode_header_value(value)))
            if plan.text_needles:
                head = _Finder(plan.text_needles)
                head.feed("\n".join(f"{name}: {decode_header_value(value)}" for name, value in fields))
                facts.text_found |= head.found
        text_left = plan.text_needles - facts.text_found
        if not text_left and not plan.body_needles:
            return facts
        # RFC 9051 §6.4.4: BODY is the body; TEXT also the header "including MIME header fields".
        body = _Finder(text_left | plan.body_needles)
        mime = _Finder(text_left)
        # (entity, what its header is): "mime" for part headers, "content" for the header of an
        # embedded message/rfc822 (which is body text of the outer message), None for the top level.
        stack: list[tuple[BodyPart, str | None]] = [(root, None)]
        while stack and not (text_left <= body.found | mime.found and plan.body_needles <= body.found):
            part, header = stack.pop()
            if header == "mime" and not mime.done:
                mime.feed(await _header_text(reader, part.header_start, part.body_start))
            elif header == "content":
                body.feed(await _header_text(reader, part.header_start, part.body_start))
            if part.is_multipart:
                stack.extend((child, "mime") for child in reversed(part.parts))
            elif part.message is not None:
                stack.append((part.message, "content"))
            elif part.type == "text":
                await _scan_body(reader, part, body)
    facts.text_found |= (body.found | mime.found) & plan.text_needles
    facts.body_found = body.found & plan.body_needles
    return facts


async def _scan_batch(
    blobs: BlobStore, records: Sequence[MessageRecord], plan: _BlobPlan
) -> list[_BlobFacts | None]:
    out: list[_BlobFacts | None] = []
    for record in records:
        try:
            out.append(await _scan_message(blobs, record, plan))
        except (OSError, NotFound):
            out.append(None)  # the file went away with an expunge meanwhile: no match
    return out


# ------------------------------------------------------------------------------------------- dates


def sent_date(info: MessageInfo) -> datetime.date | None:
    """The day of the Date: field as written, "disregarding time and timezone" (RFC 9051 §6.4.4)."""
    raw = info.envelope.date
    if raw:
        try:
            parsed = email.utils.parsedate_tz(raw)
            if parsed is not None:
                return datetime.date(parsed[0], parsed[1], parsed[2])
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    if info.date is not None:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            return datetime.datetime.fromtimestamp(info.date, datetime.UTC).date()
    return None


def _date_test(op: DateOp, day: datetime.date) -> Callable[[datetime.date], bool]:
    if op is DateOp.BEFORE:
        return lambda d: d < day
    if op is DateOp.ON:
        return lambda d: d == day
    return lambda d: d >= day


# ------------------------------------------------------------------------------------------- compiling

# A compiled key: (index, uid, facts, record or None, blob facts or None) -> True, False, or None when
# it cannot tell without the record (round 1) or the message file (round 2).
_Pred = Callable[[int, int, MessageFacts, MessageRecord | None, _BlobFacts | None], bool | None]

_SUMMARY, _RECORD, _BLOB = 0, 1, 2  # what a key needs, cheapest first
_INFO_HEADERS: Final = frozenset({"subject", "from", "to", "cc", "bcc"})


def _info_value(info: MessageInfo, name: str) -> str | None:
    if name == "subject":
        return info.subject
    if name == "from":
        return info.from_
    if name == "to":
        return info.to
    if name == "cc":
        return info.cc
    return info.bcc


def _ranges_test(ranges: Sequence[tuple[int, int]]) -> Callable[[int], bool]:
    starts = [lo for lo, _ in ranges]

    def test(n: int) -> bool:
        k = bisect.bisect_right(starts, n) - 1
        return k >= 0 and n <= ranges[k][1]

    return test


class _Compiler:
    def __init__(self, view: SearchView) -> None:
        self.view = view
        self.header_names: set[str] = set()
        self.text_needles: set[str] = set()
        self.body_needles: set[str] = set()

    def plan(self) -> _BlobPlan:
        return _BlobPlan(
            frozenset(self.header_names), frozenset(self.text_needles), frozenset(self.body_needles)
        )

    def _saved(self) -> frozenset[int]:
        return frozenset(self.view.saved or ())

    def compile(self, key: SearchKey) -> tuple[_Pred, int]:
        match key:
            case SearchAll():
                return (lambda i, u, m, r, b: True), _SUMMARY
            case SearchFlag(flag=flag, present=present):
                return self._flag(flag, present), _SUMMARY
            case SearchSize(larger=larger, size=size):
                if larger:
                    return (lambda i, u, m, r, b: m.size > size), _SUMMARY
                return (lambda i, u, m, r, b: m.size < size), _SUMMARY
            case SearchModSeq(modseq=modseq):
                # RFC 7162 §3.1.5: a MODSEQ equal to or greater than the one given. Flags have no
                # MODSEQ of their own here, so the entry name does not narrow anything.
                return (lambda i, u, m, r, b: m.modseq >= modseq), _SUMMARY
            case SearchSeq(seqset=seqset):
                return self._seq(seqset), _SUMMARY
            case SearchUid(uids=uids):
                return self._uid(uids), _SUMMARY
            case SearchDate():
                return self._date(key)
            case SearchHeader(name=name, value=value):
                return self._header(name, fold(value))
            case SearchText(value=value, body_only=body_only):
                return self._text(fold(value), body_only)
            case SearchNot(key=inner):
                pred, level = self.compile(inner)

                def negate(
                    i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
                ) -> bool | None:
                    result = pred(i, u, m, r, b)
                    return None if result is None else not result

                return negate, level
            case SearchOr(left=left, right=right):
                (first, lf), (second, rt) = sorted(
                    (self.compile(left), self.compile(right)), key=lambda c: c[1]
                )

                def either(
                    i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
                ) -> bool | None:
                    a = first(i, u, m, r, b)
                    if a:
                        return True
                    c = second(i, u, m, r, b)
                    if c:
                        return True
                    return None if a is None or c is None else False

                return either, max(lf, rt)
            case SearchAnd(keys=keys):
                compiled = sorted((self.compile(k) for k in keys), key=lambda c: c[1])
                preds = tuple(p for p, _ in compiled)

                def every(
                    i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
                ) -> bool | None:
                    unknown = False
                    for p in preds:
                        result = p(i, u, m, r, b)
                        if result is False:
                            return False
                        if result is None:
                            unknown = True
                    return None if unknown else True

                return every, max((lv for _, lv in compiled), default=_SUMMARY)
        raise TypeError(f"unknown search key {key!r}")

    def _flag(self, flag: str, present: bool) -> _Pred:
        if flag == RECENT:
            # RFC 3501 §6.4.4: RECENT, and NEW (RECENT UNSEEN) and OLD (NOT RECENT) built on it, test the
            # session's own claim, not a stored flag. An IMAP4rev2 session has none (RFC 9051 Appendix E),
            # so for it RECENT and NEW match nothing and OLD everything.
            recent = frozenset(self.view.recent)
            if present:
                return lambda i, u, m, r, b: u in recent
            return lambda i, u, m, r, b: u not in recent
        if flag.startswith("\\"):
            # System flags are case-normalised by the parser and the store.
            if present:
                return lambda i, u, m, r, b: flag in m.flags
            return lambda i, u, m, r, b: flag not in m.flags
        lower = flag.lower()

        def has(m: MessageFacts) -> bool:
            # Keywords compare case-insensitively (RFC 9051 §2.3.2 flags are atoms).
            return flag in m.flags or any(f.lower() == lower for f in m.flags)

        if present:
            return lambda i, u, m, r, b: has(m)
        return lambda i, u, m, r, b: not has(m)

    def _seq(self, seqset: SequenceSet) -> _Pred:
        if seqset.saved:
            # RFC 5182 §2.1: `$` is the saved UIDs, in a sequence-number context as well.
            saved = self._saved()
            return lambda i, u, m, r, b: u in saved
        test = _ranges_test(seqset.resolve_seq(len(self.view.uids)))
        return lambda i, u, m, r, b: test(i + 1)

    def _uid(self, uids: SequenceSet) -> _Pred:
        if uids.saved:
            saved = self._saved()
            return lambda i, u, m, r, b: u in saved
        all_uids = self.view.uids
        if not all_uids:
            return lambda i, u, m, r, b: False
        # RFC 9051 §6.4.4 / §9: `*` is the highest UID in the mailbox.
        test = _ranges_test(uids.normalized(all_uids[-1]))
        return lambda i, u, m, r, b: test(u)

    def _date(self, key: SearchDate) -> tuple[_Pred, int]:
        test = _date_test(key.op, key.date)
        if key.field is DateField.INTERNAL:
            # RFC 9051 §6.4.4: the internal date "disregarding time and timezone".
            return (lambda i, u, m, r, b: test(m.internal_date.date())), _SUMMARY

        def sent(
            i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
        ) -> bool | None:
            if r is None:
                return None
            day = sent_date(r.info)
            return day is not None and test(day)  # no usable Date: field matches no SENT* key

        return sent, _RECORD

    def _header(self, name: str, needle: str) -> tuple[_Pred, int]:
        if name in _INFO_HEADERS:

            def known(
                i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
            ) -> bool | None:
                if r is None:
                    return None
                value = _info_value(r.info, name)
                # RFC 9051 §6.4.4: an empty string matches every message that has the field.
                return value is not None and needle in fold(value)

            return known, _RECORD
        self.header_names.add(name)

        def other(
            i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
        ) -> bool | None:
            if b is None:
                return None
            return any(needle in value for value in b.headers.get(name, ()))

        return other, _BLOB

    def _text(self, needle: str, body_only: bool) -> tuple[_Pred, int]:
        if not needle:
            return (lambda i, u, m, r, b: True), _SUMMARY
        if body_only:
            self.body_needles.add(needle)

            def body(
                i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
            ) -> bool | None:
                return None if b is None else needle in b.body_found

            return body, _BLOB
        self.text_needles.add(needle)

        def text(
            i: int, u: int, m: MessageFacts, r: MessageRecord | None, b: _BlobFacts | None
        ) -> bool | None:
            return None if b is None else needle in b.text_found

        return text, _BLOB


def _narrow(key: SearchKey, view: SearchView) -> Iterable[int] | None:
    """Indexes a top-level sequence or UID set allows, found by bisection instead of a full scan."""
    uids = view.uids
    if isinstance(key, SearchSeq) and not key.seqset.saved:
        return (n - 1 for lo, hi in key.seqset.resolve_seq(len(uids)) for n in range(lo, hi + 1))
    if isinstance(key, SearchUid) and not key.uids.saved:
        return (i for start, stop in key.uids.resolve_uids(uids) for i in range(start, stop))
    if isinstance(key, SearchAnd):
        for child in key.keys:
            narrowed = _narrow(child, view)
            if narrowed is not None:
                return narrowed
    return None


def _system_flag_scan(key: SearchKey, view: SearchView) -> list[int] | None:
    """A lone system-flag key (UNSEEN, SEEN, FLAGGED, DELETED, ANSWERED, DRAFT and their UN- forms), the
    searches clients send most, in one pass without the predicate machinery; None for any other key."""
    if not isinstance(key, SearchFlag) or not key.flag.startswith("\\") or key.flag == RECENT:
        return None
    flag, state = key.flag, view.state
    if key.present:
        return [i for i, u in enumerate(view.uids) if flag in state[u].flags]
    return [i for i, u in enumerate(view.uids) if flag not in state[u].flags]


# ------------------------------------------------------------------------------------------- running


async def iter_records(
    source: MessageSource, mailbox_id: int, uids: Sequence[int]
) -> AsyncIterator[list[MessageRecord]]:
    """The records of ``uids`` from the store (missing ones are left out), read ``BATCH`` at a time and
    handed out ``RECORD_SLICE`` at a time, with a return to the event loop before each further slice."""
    for start in range(0, len(uids), BATCH):
        records = await source.get_messages(mailbox_id, uids[start : start + BATCH])
        for k in range(0, len(records), RECORD_SLICE):
            if k:
                await asyncio.sleep(0)  # the caller's work on the slice before ran on the loop
            yield records[k : k + RECORD_SLICE]


async def matching_indexes(
    source: MessageSource, mailbox_id: int, view: SearchView, key: SearchKey
) -> list[int]:
    """Indexes into ``view.uids`` (sequence number - 1) of the messages matching ``key``, ascending."""
    fast = _system_flag_scan(key, view)
    if fast is not None:
        return fast
    compiler = _Compiler(view)
    pred, level = compiler.compile(key)
    uids = view.uids
    state = view.state
    narrowed = _narrow(key, view)
    candidates: Iterable[int] = range(len(uids)) if narrowed is None else narrowed
    matched: list[int] = []
    pending: list[int] = []
    for count, i in enumerate(candidates, 1):
        uid = uids[i]
        result = pred(i, uid, state[uid], None, None)
        if result:
            matched.append(i)
        elif result is None:
            pending.append(i)
        if count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a 100 000-message scan must not starve other sessions
    if not pending:
        return matched
    plan = compiler.plan()
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        records = await source.get_messages(mailbox_id, [uids[i] for i in batch])
        by_uid = {r.uid: r for r in records}
        undecided: list[tuple[int, MessageRecord]] = []
        for count, i in enumerate(batch, 1):
            if count % RECORD_SLICE == 0:
                await asyncio.sleep(0)  # decoding header values is the costly part: bounded per stretch
            uid = uids[i]
            record = by_uid.get(uid)
            if record is None:
                continue  # expunged by another session meanwhile: nothing left to match
            result = pred(i, uid, state[uid], record, None)
            if result:
                matched.append(i)
            elif result is None:
                undecided.append((i, record))
        if undecided and level >= _BLOB:
            facts = await _scan_batch(source.blobs, [r for _, r in undecided], plan)
            for (i, record), blob in zip(undecided, facts, strict=True):
                uid = uids[i]
                if blob is not None and pred(i, uid, state[uid], record, blob):
                    matched.append(i)
    matched.sort()
    return matched


async def search(
    store: MessageSource, mailbox_id: int, view: SearchView, key: SearchKey, *, charset: str | None
) -> list[int]:
    """UIDs of the messages of ``view`` matching ``key``, ascending (RFC 9051 §6.4.4).

    Raises ``BadCharset`` for a charset other than US-ASCII and UTF-8 (the search strings in ``key``
    are already Unicode: the parser decoded them)."""
    check_charset(charset)
    uids = view.uids
    return [uids[i] for i in await matching_indexes(store, mailbox_id, view, key)]
