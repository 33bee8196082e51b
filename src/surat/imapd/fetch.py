"""FETCH (RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 CHANGEDSINCE/VANISHED/MODSEQ).

Flags, sizes, dates, UIDs and MODSEQs come from the session's view; ENVELOPE and BODYSTRUCTURE from the
``MessageInfo`` computed at delivery; body sections are byte ranges of the message's blob (read through
the store's `BlobReader`), streamed in chunks when large, so a 50 MiB BODY[] never sits in memory whole.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from surat.imapd.errors import CommandError, UserError
from surat.imapd.messages import EXPUNGE_ISSUED, resolve
from surat.imapd.sections import (
    MAX_HEADER_READ,
    ByteRange,
    HeaderFields,
    binary_part,
    filter_header,
    locate,
)
from surat.imapd.state import Done
from surat.imapd.view import MessageState
from surat.message.transfer import UnknownEncoding, decode_transfer_encoding
from surat.proto.imap import commands as c
from surat.proto.imap.seqset import SequenceSet
from surat.proto.imap.structure import body_structure, envelope
from surat.proto.imap.writer import Code, format_date_time, literal, literal8, quoted, vanished
from surat.store.base import BlobReader, BlobStore, FlagMode, MessageRecord, NotFound

if TYPE_CHECKING:
    from surat.imapd.session import Session

__all__ = ["FetchCache", "fetch_cmd"]

K = TypeVar("K")

BATCH = 200  # records fetched from the store at a time
STREAM_THRESHOLD = 64 * 1024  # body values larger than this are streamed from the blob

_A = c.FetchAttr
# These need the message's record only when FetchCache.structures does not hold their value.
_STRUCTURES = frozenset({_A.ENVELOPE, _A.BODY, _A.BODYSTRUCTURE})
_NEEDS_RECORD = frozenset({_A.RFC822, _A.RFC822_HEADER, _A.RFC822_TEXT})
_SETS_SEEN = frozenset({_A.RFC822, _A.RFC822_TEXT})
_UID = c.FetchSimple(_A.UID)
_MODSEQ = c.FetchSimple(_A.MODSEQ)


@dataclass(frozen=True, slots=True)
class _Stream:
    """Bytes of the message sent as the store's reader hands them over (its chunks are bounded)."""

    reader: BlobReader
    range: ByteRange


class _Gone(Exception):
    """The message's blob was removed with its message since the records were read."""


class _Blob:
    """The message's blob, opened on first use: header sections often come from the header cache."""

    __slots__ = ("_blobs", "_reader", "blob_id")

    def __init__(self, blobs: BlobStore, blob_id: str) -> None:
        self._blobs = blobs
        self.blob_id = blob_id
        self._reader: BlobReader | None = None

    async def reader(self) -> BlobReader:
        if self._reader is None:
            try:
                self._reader = await self._blobs.open(self.blob_id)
            except (OSError, NotFound):
                raise _Gone from None
        return self._reader

    async def read(self, rng: ByteRange, limit: int | None = None) -> bytes:
        """The octets of `rng` (at most `limit`), into memory: callers bound the range."""
        size = rng.size if limit is None else min(rng.size, limit)
        if size <= 0:
            return b""
        reader = await self.reader()
        return await reader.read(rng.start, size)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _ByteLRU(Generic[K]):
    """A least-recently-used map to bytes, bounded by the bytes it holds (plus ``overhead`` per entry)."""

    def __init__(self, max_bytes: int, max_entry: int, overhead: int = 0) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.overhead = overhead
        self.size = 0
        self._items: OrderedDict[K, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: bytes) -> None:
        if len(value) > self.max_entry or key in self._items:
            return
        self._items[key] = value
        self.size += len(value) + self.overhead
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old) + self.overhead


# (mailbox id, UIDVALIDITY, UID, FETCH item, UTF-8 session)
StructureKey = tuple[int, int, int, c.FetchAttr, bool]


class FetchCache:
    """Header blocks and serialised ENVELOPE/BODY/BODYSTRUCTURE values of recently fetched messages,
    shared by all sessions of a server.

    Clients list a mailbox by fetching a few header fields of its newest messages, over and over, from
    every device: those blocks are served from memory instead of opening a file per message (Dovecot
    keeps the same in its index cache file). A new client's first sync asks for the ENVELOPE (or
    BODYSTRUCTURE) of every message: served from here, neither the store row nor the MessageInfo is
    read. Messages never change, so entries never go stale: a header block is keyed by its message
    file, a structure by (mailbox, UIDVALIDITY, UID), which names one message for good (RFC 9051
    §2.3.1.1). The least recently used go first once a budget is reached."""

    def __init__(
        self,
        max_bytes: int = 4 * 1024 * 1024,
        max_entry: int = 32 * 1024,
        structure_bytes: int = 16 * 1024 * 1024,
        structure_entry: int = 16 * 1024,
    ) -> None:
        self._blocks: _ByteLRU[tuple[str, int, int]] = _ByteLRU(max_bytes, max_entry)
        # An entry's key and dict slot take about 200 bytes besides the value (a 10 000-message
        # mailbox's ENVELOPEs, ~400 bytes each, then fit in ~6 MiB).
        self.structures: _ByteLRU[StructureKey] = _ByteLRU(structure_bytes, structure_entry, overhead=200)

    @property
    def max_bytes(self) -> int:
        return self._blocks.max_bytes

    @property
    def max_entry(self) -> int:
        return self._blocks.max_entry

    @property
    def size(self) -> int:
        return self._blocks.size

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, blob_id: str, rng: ByteRange) -> bytes | None:
        return self._blocks.get((blob_id, rng.start, rng.end))

    def put(self, blob_id: str, rng: ByteRange, block: bytes) -> None:
        self._blocks.put((blob_id, rng.start, rng.end), block)


async def _header_block(s: Session, blob: _Blob, rng: ByteRange) -> bytes:
    if rng.size <= 0:
        return b""  # a part that does not exist
    cache = s.service.fetch_cache
    block = cache.get(blob.blob_id, rng)
    if block is None:
        block = await blob.read(rng, MAX_HEADER_READ)
        cache.put(blob.blob_id, rng, block)
    return block


def _needs_record(item: c.FetchItem) -> bool:
    return isinstance(item, c.FetchBody) or item.attr in _NEEDS_RECORD


def _sets_seen(item: c.FetchItem) -> bool:
    if isinstance(item, c.FetchBody):
        return not item.peek and not item.size_only
    return item.attr in _SETS_SEEN


async def fetch_cmd(s: Session, cmd: c.Fetch) -> Done:
    view = s.require_view()
    pairs = resolve(s, cmd.seqset, uid=cmd.uid)
    items = list(cmd.items)
    if cmd.uid and _UID not in items:
        items.insert(0, _UID)  # RFC 9051 §6.4.9: UID FETCH always returns the UID
    if cmd.changedsince is not None and _MODSEQ not in items:
        items.append(_MODSEQ)  # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ
    if _MODSEQ in items:
        s.enable_condstore()
    if cmd.vanished:
        if not s.qresync:
            raise CommandError("VANISHED needs ENABLE QRESYNC")  # RFC 7162 §3.2.6
        assert cmd.changedsince is not None
        await _send_vanished(s, cmd.seqset, cmd.changedsince)
    if cmd.changedsince is not None:
        since = cmd.changedsince
        pairs = [(seq, uid) for seq, uid in pairs if view.state[uid].modseq > since]
    # A message expunged by another session keeps its number until the client is told (RFC 9051 §7.5.1):
    # what the view holds (UID, FLAGS, sizes, dates, cached structures) is still answered, as RFC 2180
    # §4.1.1 allows; a message whose contents are needed and gone is skipped, and the tagged OK carries
    # EXPUNGEISSUED (RFC 9051 §7.1), as Dovecot answers. Never BAD: the number is valid for the client.
    gone = view.expunged
    skipped = False
    structures = [i.attr for i in items if isinstance(i, c.FetchSimple) and i.attr in _STRUCTURES]
    needs_record = any(_needs_record(i) for i in items)
    seen_now: set[int] = set()
    if not view.read_only and any(_sets_seen(i) for i in items):
        # RFC 9051 §6.4.5: a non-PEEK body fetch sets \Seen; the FETCH response then carries FLAGS.
        unseen = [uid for _, uid in pairs if "\\Seen" not in view.state[uid].flags and uid not in gone]
        if unseen:
            result = await s.store.store_flags(view.mailbox_id, unseen, FlagMode.ADD, frozenset({"\\Seen"}))
            for update in result.updated:
                view.set_flags(update.uid, update.flags, update.modseq)
                seen_now.add(update.uid)
    cache = s.service.fetch_cache.structures
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        # Cached values are taken now: another session may evict them while this one waits to send.
        known: dict[tuple[int, c.FetchAttr], bytes] = {}
        wanted = [u for _, u in chunk] if needs_record else []
        if structures and not needs_record:
            for _, uid in chunk:
                values = [cache.get((view.mailbox_id, view.uidvalidity, uid, a, s.utf8)) for a in structures]
                if None in values:
                    wanted.append(uid)
                    continue
                for attr, value in zip(structures, values, strict=True):
                    assert value is not None
                    known[uid, attr] = value
        wanted = [u for u in wanted if u not in gone]
        records: dict[int, MessageRecord] = {}
        if wanted:
            records = {r.uid: r for r in await s.store.get_messages(view.mailbox_id, wanted)}
        for seq, uid in chunk:
            st = view.state.get(uid)
            if st is None:
                continue
            record = records.get(uid)
            if record is None and (needs_record or (structures and (uid, structures[0]) not in known)):
                skipped = True  # expunged by another session: its EXPUNGE comes when it may
                continue
            add_flags = uid in seen_now and c.FetchSimple(_A.FLAGS) not in items
            if not await _fetch_one(s, seq, uid, st, record, items, add_flags, known):
                skipped = True
            await s.maybe_flush()
    return EXPUNGE_ISSUED if skipped else Done()


async def _send_vanished(s: Session, seqset: SequenceSet, since: int) -> None:
    view = s.require_view()
    changes = await s.store.changes_since(view.mailbox_id, since)
    top = max(view.uids[-1] if view.uids else 0, max(changes.vanished, default=0))
    gone = [u for u in changes.vanished if u not in view.state and (seqset.saved or seqset.contains(u, top))]
    if gone:
        s.send(vanished(SequenceSet.from_numbers(gone), earlier=True))


def _partial(r: ByteRange, partial: tuple[int, int] | None) -> ByteRange:
    if partial is None:
        return r
    offset, length = partial
    start = min(r.start + offset, r.end)
    return ByteRange(start, min(start + length, r.end))


def _slice(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    offset, length = partial
    return data[offset : offset + length]


async def _fetch_one(
    s: Session,
    seq: int,
    uid: int,
    st: MessageState,
    record: MessageRecord | None,
    items: Sequence[c.FetchItem],
    add_flags: bool,
    known: dict[tuple[int, c.FetchAttr], bytes],
) -> bool:
    """Send one message's FETCH response; False when its file went with its message meanwhile."""
    blob = _Blob(s.store.blobs, record.blob_id) if record is not None else None
    try:
        try:
            parts = await _fetch_parts(s, seq, uid, st, record, blob, items, add_flags, known)
        except _Gone:
            return False  # its EXPUNGE comes when it may (RFC 9051 §7.5.1)
        for part in parts:
            if isinstance(part, bytes):
                s.send(part)
            else:
                await _stream(s, part)
        return True
    finally:
        if blob is not None:
            blob.close()


async def _fetch_parts(
    s: Session,
    seq: int,
    uid: int,
    st: MessageState,
    record: MessageRecord | None,
    blob: _Blob | None,
    items: Sequence[c.FetchItem],
    add_flags: bool,
    known: dict[tuple[int, c.FetchAttr], bytes],
) -> list[bytes | _Stream]:
    """The pieces of one `* n FETCH (...)` response, literals that are streamed kept apart."""
    parts: list[bytes | _Stream] = [b"* %d FETCH (" % seq]
    first = True

    def add(name: str, value: bytes | _Stream) -> None:
        nonlocal first
        prefix = b"" if first else b" "
        first = False
        if isinstance(value, _Stream):
            parts.append(prefix + name.encode("ascii") + b" {%d}\r\n" % value.range.size)
            parts.append(value)
        else:
            parts.append(prefix + name.encode("ascii") + b" " + value)

    for item in items:
        if isinstance(item, c.FetchBody):
            assert record is not None and blob is not None
            add(item.response_name(), await _body_value(s, blob, record, item))
            continue
        attr = item.attr
        if attr is _A.UID:
            add("UID", b"%d" % uid)
        elif attr is _A.FLAGS:
            add("FLAGS", s.shown_flags(uid, st.flags))
        elif attr is _A.INTERNALDATE:
            add("INTERNALDATE", quoted(format_date_time(st.internal_date)))
        elif attr is _A.RFC822_SIZE:
            add("RFC822.SIZE", b"%d" % st.size)
        elif attr is _A.MODSEQ:
            add("MODSEQ", b"(%d)" % st.modseq)
        elif attr in _STRUCTURES:
            add(attr.value, _structure(s, uid, attr, record, known))
        else:
            assert record is not None and blob is not None
            # RFC 3501 §6.4.5: RFC822 = BODY[], RFC822.HEADER = BODY.PEEK[HEADER], RFC822.TEXT = BODY[TEXT].
            text = {_A.RFC822: None, _A.RFC822_HEADER: "HEADER", _A.RFC822_TEXT: "TEXT"}[attr]
            body = c.FetchBody(c.Section((), text), peek=True)
            add(attr.value, await _body_value(s, blob, record, body))
    if add_flags:
        add("FLAGS", s.shown_flags(uid, st.flags))
    parts.append(b")\r\n")
    return parts


def _structure(
    s: Session,
    uid: int,
    attr: c.FetchAttr,
    record: MessageRecord | None,
    known: dict[tuple[int, c.FetchAttr], bytes],
) -> bytes:
    """ENVELOPE, BODY or BODYSTRUCTURE: from the cache, else serialised from the MessageInfo and kept."""
    value = known.get((uid, attr))
    if value is not None:
        return value
    view = s.require_view()
    cache = s.service.fetch_cache.structures
    key = (view.mailbox_id, view.uidvalidity, uid, attr, s.utf8)
    value = cache.get(key)
    if value is not None:
        return value
    assert record is not None  # fetch_cmd reads the record of every message whose values are not known
    info = record.info
    if attr is _A.ENVELOPE:
        value = envelope(info.envelope, utf8=s.utf8)
    else:
        value = body_structure(info.body, extensible=attr is _A.BODYSTRUCTURE, utf8=s.utf8)
    cache.put(key, value)
    return value


async def _stream(s: Session, stream: _Stream) -> None:
    await s.flush()
    position, end = stream.range.start, stream.range.end
    async for data in stream.reader.stream(position, end - position):
        position += len(data)
        s.send(data)
        await s.flush()
    if position < end:
        # The blob is shorter than recorded (damaged): pad so the literal keeps its announced size.
        s.send(b" " * (end - position))
        await s.flush()


async def _body_value(s: Session, blob: _Blob, record: MessageRecord, item: c.FetchBody) -> bytes | _Stream:
    info = record.info
    if item.binary:
        located = binary_part(info, item.section.part)
        # A part that does not exist is empty, as in BODY[] (see sections.locate).
        rng, encoding = located if located is not None else (ByteRange(0, 0), "BINARY")

        raw = await blob.read(rng)

        def decode() -> bytes:
            # Bounded: the part is at most the message (limits.message_size) and decoding never grows it;
            # a large one is decoded in a worker thread, in DECODE_CHUNK pieces that never hold the GIL long.
            return decode_transfer_encoding(raw, encoding)

        try:
            data = await asyncio.to_thread(decode) if rng.size > STREAM_THRESHOLD else decode()
        except UnknownEncoding:
            raise UserError(f"cannot decode Content-Transfer-Encoding {encoding}", Code.UNKNOWN_CTE) from None
        if item.size_only:
            return b"%d" % len(data)
        data = _slice(data, item.partial)
        # RFC 3516 §4.3: literal8 when the content holds NUL.
        return literal8(data) if b"\x00" in data else literal(data)
    where = locate(info, item.section)
    if isinstance(where, HeaderFields):
        block = await _header_block(s, blob, where.header)
        return literal(_slice(filter_header(block, where.fields, exclude=where.exclude), item.partial))
    if item.section.text == "HEADER" and where.size <= STREAM_THRESHOLD:
        return literal(_slice(await _header_block(s, blob, where), item.partial))
    rng = _partial(where, item.partial)
    if rng.size > STREAM_THRESHOLD:
        return _Stream(await blob.reader(), rng)
    return literal(await blob.read(rng))
