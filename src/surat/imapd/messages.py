"""Message commands other than FETCH: STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE, APPEND, SEARCH, SORT, THREAD
(RFC 9051 §6.3.12, §6.4; RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 7162 CONDSTORE, RFC 4731/5182 ESEARCH and
SEARCHRES, RFC 5256 SORT/THREAD, RFC 3502 MULTIAPPEND)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from surat.imapd.errors import CommandError, PreparedReply, UserError
from surat.imapd.search import RECENT, SUPPORTED_CHARSETS, BadCharset, check_charset, search
from surat.imapd.sorting import sort
from surat.imapd.state import Done
from surat.imapd.threading import format_threads, thread
from surat.proto.imap import commands as c
from surat.proto.imap.seqset import SequenceSet
from surat.proto.imap.writer import (
    Code,
    ResponseCode,
    Status,
    esearch,
    fetch,
    untagged,
    untagged_status,
)
from surat.proto.imap.writer import search as search_response
from surat.store.base import FlagMode

if TYPE_CHECKING:
    from surat.imapd.session import Session

__all__ = [
    "EXPUNGE_ISSUED",
    "append",
    "copy",
    "expunge",
    "move",
    "resolve",
    "search_cmd",
    "sort_cmd",
    "store",
    "thread_cmd",
    "uid_expunge",
]


def resolve(s: Session, seqset: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
    """(seq, uid) pairs a command's sequence set names, with `$` (RFC 5182) and range checks applied."""
    view = s.require_view()
    if seqset.saved:
        saved = set(view.saved or ())  # RFC 5182 §2.1: no saved result is the empty set
        return [(i + 1, u) for i, u in enumerate(view.uids) if u in saved]
    if not uid and seqset.max_explicit() > view.exists:
        # RFC 9051 §9 seq-number: a number above EXISTS is not a valid message sequence number.
        raise CommandError(f"message sequence number out of range (mailbox has {view.exists} messages)")
    return view.resolve(seqset, uid=uid)


def _writable(s: Session) -> None:
    if s.require_view().read_only:
        raise UserError("mailbox is read-only (EXAMINE)", Code.READ_ONLY)


_MODES = {
    c.StoreMode.REPLACE: FlagMode.SET,
    c.StoreMode.ADD: FlagMode.ADD,
    c.StoreMode.REMOVE: FlagMode.REMOVE,
}


async def store(s: Session, cmd: c.Store) -> Done:
    view = s.require_view()
    _writable(s)
    pairs = resolve(s, cmd.seqset, uid=cmd.uid)
    if cmd.unchangedsince is not None:
        s.enable_condstore()
    flags = frozenset(f for f in cmd.flags if f != "\\Recent")  # \Recent cannot be stored (RFC 3501 §2.3.2)
    live = [(seq, uid) for seq, uid in pairs if uid not in view.expunged]
    if not live:
        return _expunge_issued(pairs)
    before = {uid: view.state[uid].flags for _, uid in live}
    result = await s.store.store_flags(
        view.mailbox_id, [uid for _, uid in live], _MODES[cmd.mode], flags, cmd.unchangedsince
    )
    new_keyword = False
    for update in result.updated:
        if view.set_flags(update.uid, update.flags, update.modseq):
            new_keyword = True
    if new_keyword:
        s.send(s.flags_line())
        s.send(s.permanent_flags_line())
    for update in result.updated:
        seq = view.seq_of(update.uid)
        if seq is None:
            continue
        changed = before.get(update.uid) != update.flags
        if cmd.silent and not (changed and s.condstore):
            continue
        items: list[tuple[str, bytes]] = []
        if cmd.uid or s.qresync:
            items.append(("UID", b"%d" % update.uid))
        if not cmd.silent:
            items.append(("FLAGS", s.shown_flags(update.uid, update.flags)))
        if s.condstore:
            # RFC 7162 §3.1.3: MODSEQ in the FETCH response, even with .SILENT.
            items.append(("MODSEQ", b"(%d)" % update.modseq))
        s.send(fetch(seq, items))
        await s.maybe_flush()
    if result.modified:
        numbers = (
            result.modified if cmd.uid else [n for u in result.modified if (n := view.seq_of(u)) is not None]
        )
        return Done(
            "conditional STORE failed for some messages",
            ResponseCode.modified(SequenceSet.from_numbers(numbers)),
        )
    if len(result.updated) < len(pairs):
        # RFC 2180 §4.2.1: a STORE to a message expunged by another session may succeed for the others;
        # RFC 9051 §7.1 EXPUNGEISSUED tells the client why some got no FETCH (Dovecot answers FETCH so).
        return EXPUNGE_ISSUED
    return Done()


# The tagged OK of a FETCH or STORE that skipped messages another session expunged (RFC 9051 §7.1).
EXPUNGE_ISSUED = Done("some messages were already expunged", Code.EXPUNGEISSUED)


def _expunge_issued(pairs: list[tuple[int, int]]) -> Done:
    """The reply when every message a STORE names was expunged: OK [EXPUNGEISSUED], or OK if none named."""
    return EXPUNGE_ISSUED if pairs else Done()


def _live_uids(s: Session, pairs: list[tuple[int, int]]) -> list[int]:
    """The UIDs a COPY or MOVE can still act on. When every message it names was expunged by another
    session, the command fails as a whole (RFC 2180 §4.4.1 lets the server refuse such a COPY; the
    RFC 9051 §7.1 EXPUNGEISSUED code says why)."""
    view = s.require_view()
    uids = [uid for _, uid in pairs if uid not in view.expunged]
    if pairs and not uids:
        raise UserError("the messages were already expunged", Code.EXPUNGEISSUED)
    return uids


async def _destination(s: Session, name: str) -> int:
    mailbox = await s.store.get_mailbox(s.require_account().id, s.mailbox_arg(name))
    if mailbox is None:
        # RFC 9051 §6.4.7: TRYCREATE tells the client that creating the mailbox would help.
        raise UserError("no such mailbox", Code.TRYCREATE)
    return mailbox.id


async def copy(s: Session, cmd: c.Copy) -> Done:
    view = s.require_view()
    pairs = resolve(s, cmd.seqset, uid=cmd.uid)
    dest = await _destination(s, cmd.mailbox)
    uids = _live_uids(s, pairs)
    if not uids:
        return Done()
    result = await s.store.copy(view.mailbox_id, uids, dest)
    if not result.pairs:
        raise UserError("the messages were already expunged", Code.EXPUNGEISSUED)
    # RFC 4315 §3: COPYUID lists source and destination UIDs in corresponding order.
    code = ResponseCode.copyuid(
        result.uidvalidity,
        SequenceSet.from_numbers(p[0] for p in result.pairs),
        SequenceSet.from_numbers(p[1] for p in result.pairs),
    )
    return Done(code=code)


async def move(s: Session, cmd: c.Move) -> Done:
    view = s.require_view()
    _writable(s)
    pairs = resolve(s, cmd.seqset, uid=cmd.uid)
    dest = await _destination(s, cmd.mailbox)
    uids = _live_uids(s, pairs)
    if not uids:
        return Done()
    result = await s.store.move(view.mailbox_id, uids, dest)
    if not result.pairs:
        raise UserError("the messages were already expunged", Code.EXPUNGEISSUED)
    if result.pairs:
        # RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges.
        code = ResponseCode.copyuid(
            result.uidvalidity,
            SequenceSet.from_numbers(p[0] for p in result.pairs),
            SequenceSet.from_numbers(p[1] for p in result.pairs),
        )
        s.send(untagged_status(Status.OK, "moved", code))
    view.mark_expunged(p[0] for p in result.pairs)
    s.announce_expunges()
    return Done()


async def expunge(s: Session, cmd: c.Expunge | c.UidExpunge) -> Done:
    view = s.require_view()
    _writable(s)
    # RFC 9051 §6.4.3: the messages that have \Deleted now, not as this session last heard: another
    # session may have set or cleared it. The view is brought up to date first (EXPUNGE may announce
    # what happened meanwhile), and the store removes only those still flagged when it commits.
    await s.notify(allow_expunge=True)
    candidates = (
        [uid for _, uid in resolve(s, cmd.uids, uid=True)] if isinstance(cmd, c.UidExpunge) else view.uids
    )
    deleted = [u for u in candidates if u not in view.expunged and "\\Deleted" in view.state[u].flags]
    if deleted:
        removed = await s.store.expunge(view.mailbox_id, deleted, only_deleted=True)
        view.mark_expunged(removed)
    return Done()  # the dispatcher announces the expunges (EXPUNGE or VANISHED)


uid_expunge = expunge


async def append(s: Session, cmd: c.Append) -> Done:
    state = s.finish_append()
    try:
        if state.error is not None:
            # A refused non-synchronizing literal: its bytes were read and dropped; now the reply.
            raise PreparedReply(state.error, state.error_bad)
        mailbox = state.mailbox
        assert mailbox is not None
        account = s.require_account()
        uids: list[int] = []
        uidvalidity = mailbox.uidvalidity
        try:
            while state.spooled:
                # The store takes each staged message over (popped first: discard() must not abort it).
                item = state.spooled.pop(0)
                uidvalidity, uid = await s.store.append(
                    account.id, mailbox.id, item.staged, item.flags, item.date
                )
                uids.append(uid)
        except BaseException:
            # RFC 3502 §6.3.11: MULTIAPPEND is all or nothing.
            if uids:
                with contextlib.suppress(Exception):
                    await s.store.expunge(mailbox.id, uids)
            raise
    finally:
        state.discard()
    # RFC 4315 §3: APPENDUID uidvalidity uid-set.
    return Done(code=ResponseCode.appenduid(uidvalidity, SequenceSet.from_numbers(uids)))


def _bad_charset(exc: BadCharset) -> UserError:
    return UserError(str(exc), ResponseCode.badcharset(SUPPORTED_CHARSETS))


def _uses_modseq(key: c.SearchKey) -> bool:
    match key:
        case c.SearchModSeq():
            return True
        case c.SearchNot(key=inner):
            return _uses_modseq(inner)
        case c.SearchOr(left=left, right=right):
            return _uses_modseq(left) or _uses_modseq(right)
        case c.SearchAnd(keys=keys):
            return any(_uses_modseq(k) for k in keys)
    return False


def _min_max(uids: list[int], options: set[str]) -> list[int]:
    """The UIDs a MIN/MAX-only ESEARCH reports (``uids`` ascending)."""
    if not uids:
        return []
    return [*(uids[:1] if "MIN" in options else []), *(uids[-1:] if "MAX" in options else [])]


def _highest_modseq(s: Session, uids: list[int]) -> int | None:
    state = s.require_view().state
    return max((state[u].modseq for u in uids), default=None)


async def search_cmd(s: Session, cmd: c.SearchCommand) -> Done:
    # A sequence number beyond EXISTS names no message, so a search over it finds nothing: OK with an empty
    # result, never BAD (the client may have computed the set before the mailbox shrank; RFC 9051 §6.4.4
    # returns "messages that match", RFC 4731 §3.1 an ESEARCH without MIN/MAX/ALL data when none does).
    view = s.require_view()
    modseq_key = _uses_modseq(cmd.key)
    if modseq_key:
        s.enable_condstore()  # RFC 7162 §3.1: SEARCH MODSEQ is a CONDSTORE-enabling command
    try:
        check_charset(cmd.charset)
        if isinstance(cmd.key, c.SearchFlag) and cmd.key.flag.startswith("\\") and cmd.key.flag != RECENT:
            uids = view.uids_by_system_flag(cmd.key.flag, cmd.key.present)  # SEARCH UNSEEN and the like
        else:
            uids = await search(s.store, view.mailbox_id, view, cmd.key, charset=cmd.charset)
    except BadCharset as exc:
        raise _bad_charset(exc) from None
    uids = [u for u in uids if u in view.state]

    def number(uid: int) -> int:
        if cmd.uid:
            return uid
        seq = view.seq_of(uid)
        assert seq is not None
        return seq

    returns = cmd.returns
    if returns is None and s.rev2:
        returns = ("ALL",)  # RFC 9051 §6.4.4: IMAP4rev2 answers every SEARCH with ESEARCH
    if returns is None:
        # RFC 7162 §3.1.5: with a MODSEQ key, the highest mod-sequence of the returned messages (none
        # when nothing matched).
        modseq = _highest_modseq(s, uids) if modseq_key else None
        s.send(search_response((number(u) for u in uids), modseq=modseq))
        return Done()
    options = set(returns) or {"ALL"}
    if "SAVE" in options:
        # RFC 5182 §2.4: with MIN or MAX (and without ALL/COUNT) only those are saved.
        if options & {"MIN", "MAX"} and not options & {"ALL", "COUNT"}:
            view.saved = sorted(set(_min_max(uids, options)))
        else:
            view.saved = list(uids)
        options.discard("SAVE")
        if not options:
            return Done()  # RFC 5182 §2.2: SAVE alone returns no ESEARCH
    modseq = None
    if modseq_key:
        # RFC 4731 §3.2 (with CONDSTORE): the MODSEQ result is the highest mod-sequence of the messages
        # returned. With only MIN and/or MAX those are the one or two messages reported; with ALL or
        # COUNT, every matching message.
        returned = uids if options & {"ALL", "COUNT"} else _min_max(uids, options)
        modseq = _highest_modseq(s, returned)
    numbers = [number(u) for u in uids]
    s.send(
        esearch(
            cmd.tag,
            uid=cmd.uid,
            min_=numbers[0] if numbers and "MIN" in options else None,
            max_=numbers[-1] if numbers and "MAX" in options else None,
            all_=SequenceSet.from_numbers(numbers) if "ALL" in options else None,
            count=len(numbers) if "COUNT" in options else None,
            modseq=modseq,
        )
    )
    return Done()


async def sort_cmd(s: Session, cmd: c.Sort) -> Done:
    view = s.require_view()
    try:
        uids = await sort(s.store, view.mailbox_id, view, cmd.criteria, cmd.key, cmd.charset)
    except BadCharset as exc:
        raise _bad_charset(exc) from None
    numbers = [uid if cmd.uid else view.seq_of(uid) for uid in uids]
    s.send(untagged(b"SORT", *(b"%d" % n for n in numbers if n is not None)))
    return Done()


async def thread_cmd(s: Session, cmd: c.Thread) -> Done:
    view = s.require_view()
    try:
        roots = await thread(s.store, view.mailbox_id, view, cmd.algorithm, cmd.key, cmd.charset)
    except BadCharset as exc:
        raise _bad_charset(exc) from None

    def number(uid: int) -> int:
        if cmd.uid:
            return uid
        return view.seq_of(uid) or 0

    data = format_threads(roots, number)
    s.send(untagged(b"THREAD", data.encode("ascii")) if data else untagged(b"THREAD"))
    return Done()
