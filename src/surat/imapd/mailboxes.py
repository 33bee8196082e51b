"""Mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS,
CLOSE, UNSELECT and QUOTA (RFC 9051 §6.3 and §6.4.2, RFC 5258, RFC 5819, RFC 6154, RFC 7162, RFC 9208)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from surat.imapd.errors import CommandError, UserError
from surat.imapd.listing import Matcher, PatternTooLong, list_entries
from surat.imapd.state import Done, State
from surat.imapd.view import SelectedView
from surat.proto.imap import commands as c
from surat.proto.imap.seqset import SequenceSet
from surat.proto.imap.writer import (
    Code,
    ResponseCode,
    Status,
    astring,
    exists,
    fetch,
    list_response,
    mailbox_name,
    status_response,
    untagged,
    untagged_status,
    vanished,
)
from surat.store.base import HIERARCHY_DELIMITER, AlreadyExists, Mailbox, MailboxStatus, NotFound

if TYPE_CHECKING:
    from surat.imapd.session import Session

__all__ = [
    "close",
    "create",
    "delete",
    "getquota",
    "getquotaroot",
    "list_cmd",
    "lsub",
    "rename",
    "select",
    "setquota",
    "status",
    "subscribe",
    "unselect",
    "unsubscribe",
]

# RFC 6154 §2 attributes a mailbox can carry here (\All and \Flagged would be virtual mailboxes).
_USABLE_SPECIAL_USE = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})


async def _mailbox(s: Session, name: str, *, missing: ResponseCode = Code.NONEXISTENT) -> Mailbox:
    mailbox = await s.store.get_mailbox(s.require_account().id, s.mailbox_arg(name))
    if mailbox is None:
        raise UserError("no such mailbox", missing)
    return mailbox


def _deselect(s: Session) -> None:
    if s.view is not None:
        s.view = None
        s.state = State.AUTHENTICATED


async def select(s: Session, cmd: c.Select | c.Examine) -> Done:
    read_only = isinstance(cmd, c.Examine)
    if cmd.qresync is not None and not s.qresync:
        raise CommandError("QRESYNC parameter without ENABLE QRESYNC")  # RFC 7162 §3.2.5
    if s.view is not None:
        # RFC 9051 §6.3.2 / RFC 7162 §3.2.11: the old mailbox is closed (without expunging), and said so.
        _deselect(s)
        s.send(untagged_status(Status.OK, "previous mailbox closed", Code.CLOSED))
    mailbox = await _mailbox(s, cmd.mailbox)
    if cmd.condstore or cmd.qresync is not None:
        s.enable_condstore()
    if s.subscription is not None:
        s.subscription.pending()  # what happened before this SELECT is in the listing below
    messages = await s.store.list_messages(mailbox.id)
    view = SelectedView(
        mailbox.id, mailbox.name, mailbox.uidvalidity, messages, mailbox.highestmodseq, read_only=read_only
    )
    view.condstore = s.condstore
    s.view = view
    s.state = State.SELECTED
    uidnext = max(mailbox.uidnext, (view.uids[-1] + 1) if view.uids else 1)
    highest = max([mailbox.highestmodseq, *(st.modseq for st in view.state.values())])
    s.send(s.flags_line())
    s.send(s.permanent_flags_line())
    s.send(exists(view.exists))
    # Claimed after the listing: a message delivered in between has a higher UID than any listed, so
    # it stays unclaimed until notify announces it (and claims it then).
    await s.claim_recent()
    if not s.rev2:
        # RFC 3501 §6.3.1: rev1 clients expect RECENT and the first unseen message.
        s.send(untagged(b"%d RECENT" % len(view.recent)))
        first = view.first_unseen()
        if first is not None:
            s.send(untagged_status(Status.OK, "first unseen", ResponseCode.unseen(first)))
    s.send(untagged_status(Status.OK, "UIDs valid", ResponseCode.uidvalidity(mailbox.uidvalidity)))
    s.send(untagged_status(Status.OK, "predicted next UID", ResponseCode.uidnext(uidnext)))
    # RFC 7162 §3.1.2.1: always sent, so that any client can start using CONDSTORE.
    s.send(untagged_status(Status.OK, "highest", ResponseCode.highestmodseq(highest)))
    if s.rev2:
        s.send(list_response((), HIERARCHY_DELIMITER, mailbox.name, utf8=s.utf8))
    if cmd.qresync is not None and cmd.qresync.uidvalidity == mailbox.uidvalidity:
        await _qresync(s, view, cmd.qresync)
    return Done(
        f"{'EXAMINE' if read_only else 'SELECT'} completed", Code.READ_ONLY if read_only else Code.READ_WRITE
    )


async def _qresync(s: Session, view: SelectedView, params: c.QResyncParams) -> None:
    """RFC 7162 §3.2.5: what was expunged (VANISHED (EARLIER)) and changed since the client's MODSEQ."""
    changes = await s.store.changes_since(view.mailbox_id, params.modseq)
    known = params.known_uids
    top = max(view.uids[-1] if view.uids else 0, max(changes.vanished, default=0))
    gone = [u for u in changes.vanished if u not in view.state and (known is None or known.contains(u, top))]
    if gone:
        s.send(vanished(SequenceSet.from_numbers(gone), earlier=True))
    for summary in changes.changed:
        st = view.state.get(summary.uid)
        seq = view.seq_of(summary.uid)
        if st is None or seq is None:
            continue
        if known is not None and not known.contains(summary.uid, top):
            continue
        s.send(
            fetch(
                seq,
                [
                    ("UID", b"%d" % summary.uid),
                    ("FLAGS", s.shown_flags(summary.uid, st.flags)),
                    ("MODSEQ", b"(%d)" % st.modseq),
                ],
            )
        )


async def close(s: Session, cmd: c.Close) -> Done:
    view = s.require_view()
    if not view.read_only:
        # RFC 9051 §6.4.1: CLOSE expunges \Deleted messages silently; those flagged now, as for EXPUNGE
        # (the view is brought up to date without announcing anything, since it is closed anyway).
        await s.sync_view()
        deleted = [u for u in view.uids if "\\Deleted" in view.state[u].flags and u not in view.expunged]
        if deleted:
            await s.store.expunge(view.mailbox_id, deleted, only_deleted=True)
    _deselect(s)
    return Done()


async def unselect(s: Session, cmd: c.Unselect) -> Done:
    s.require_view()
    _deselect(s)  # RFC 3691: like CLOSE without the expunge
    return Done()


def _strip_trailing_delimiter(name: str) -> str:
    # RFC 9051 §6.3.4: a trailing delimiter only says the client means to create inferiors.
    while name.endswith(HIERARCHY_DELIMITER) and len(name) > 1:
        name = name[:-1]
    return name


async def create(s: Session, cmd: c.Create) -> Done:
    name = _strip_trailing_delimiter(s.mailbox_arg(cmd.mailbox))
    use: str | None = None
    if cmd.special_use:
        # RFC 6154 §3: one mailbox, one role here; \All and \Flagged are virtual mailboxes we do not have.
        if len(cmd.special_use) > 1 or cmd.special_use[0] not in _USABLE_SPECIAL_USE:
            raise UserError("unsupported special-use attribute", Code.USEATTR)
        use = cmd.special_use[0]
    if name == "INBOX":
        raise UserError("INBOX always exists", Code.ALREADYEXISTS)
    await s.store.create_mailbox(s.require_account().id, name, use)
    return Done()


async def delete(s: Session, cmd: c.Delete) -> Done:
    account = s.require_account()
    name = s.mailbox_arg(cmd.mailbox)
    if name == "INBOX":
        raise UserError("INBOX cannot be deleted", Code.CANNOT)  # RFC 9051 §6.3.5
    mailbox = await _mailbox(s, cmd.mailbox)
    prefix = mailbox.name + HIERARCHY_DELIMITER
    if any(m.name.startswith(prefix) for m in await s.store.list_mailboxes(account.id)):
        # Mailboxes here are always selectable, so there is no \Noselect shell to leave behind.
        raise UserError("mailbox has inferiors; delete them first", Code.HASCHILDREN)
    await s.store.delete_mailbox(account.id, mailbox.name)
    if s.view is not None and s.view.mailbox_id == mailbox.id:
        _deselect(s)
        s.send(untagged_status(Status.OK, "selected mailbox deleted", Code.CLOSED))
    return Done()


async def rename(s: Session, cmd: c.Rename) -> Done:
    account = s.require_account()
    old = s.mailbox_arg(cmd.old)
    new = _strip_trailing_delimiter(s.mailbox_arg(cmd.new))
    if new == "INBOX":
        raise UserError("INBOX exists", Code.ALREADYEXISTS)
    try:
        await s.store.rename_mailbox(account.id, old, new)
    except NotFound:
        raise UserError("no such mailbox", Code.NONEXISTENT) from None
    except AlreadyExists:
        raise UserError("target mailbox exists", Code.ALREADYEXISTS) from None
    if s.view is not None and s.view.name == old and old != "INBOX":
        s.view.name = new
    return Done()


async def subscribe(s: Session, cmd: c.Subscribe) -> Done:
    mailbox = await _mailbox(s, cmd.mailbox)
    await s.store.set_subscribed(s.require_account().id, mailbox.name, True)
    return Done()


async def unsubscribe(s: Session, cmd: c.Unsubscribe) -> Done:
    # No existence check: a subscription outlives its mailbox (RFC 9051 §6.3.7), and the client must
    # be able to drop it (RFC 9051 §6.3.8).
    try:
        await s.store.set_subscribed(s.require_account().id, s.mailbox_arg(cmd.mailbox), False)
    except NotFound:
        raise UserError("no such mailbox or subscription", Code.NONEXISTENT) from None
    return Done()


def _pattern_arg(s: Session, pattern: str) -> str:
    """A LIST/LSUB reference or pattern as the store spells names; unusable ones are BAD, not NO.

    LIST has no "no such mailbox" outcome, so a pattern that is not modified UTF-7 (RFC 3501 §5.1.3)
    is a malformed argument.
    """
    try:
        return s.mailbox_arg(pattern) if pattern else ""
    except UserError as exc:
        raise CommandError(f"invalid mailbox pattern: {exc.text}") from None


def _matcher(reference: str, pattern: str) -> Matcher:
    try:
        return Matcher(reference, pattern)
    except PatternTooLong as exc:
        raise CommandError(str(exc)) from None


async def list_cmd(s: Session, cmd: c.List) -> Done:
    account = s.require_account()
    reference = _pattern_arg(s, cmd.reference)
    patterns = [_pattern_arg(s, p) for p in cmd.patterns]
    if patterns == [""] and not cmd.extended:
        # RFC 9051 §6.3.9: an empty pattern asks for the hierarchy delimiter and the root name.
        s.send(list_response(("\\Noselect",), HIERARCHY_DELIMITER, "", utf8=s.utf8))
        return Done()
    matchers = [_matcher(reference, p) for p in patterns if p]
    selection = cmd.selection
    entries = list_entries(
        await s.store.list_mailboxes(account.id),
        matchers,
        subscriptions=await s.store.list_subscriptions(account.id) if "SUBSCRIBED" in selection else (),
        subscribed_only="SUBSCRIBED" in selection,
        special_use_only="SPECIAL-USE" in selection,
        recursive="RECURSIVEMATCH" in selection,
        return_subscribed="SUBSCRIBED" in cmd.returns,
    )
    for entry in entries:
        extended = []
        if entry.childinfo:
            # RFC 5258 §6 childinfo-extended-item: the selection options, always quoted.
            extended.append(
                b'"CHILDINFO" (' + b" ".join(b'"%s"' % o.encode() for o in entry.childinfo) + b")"
            )
        s.send(
            list_response(entry.attributes, HIERARCHY_DELIMITER, entry.name, utf8=s.utf8, extended=extended)
        )
        if cmd.status is not None and entry.mailbox is not None:
            # RFC 5819 §2: STATUS follows the LIST response of each selectable mailbox.
            await _send_status(s, entry.mailbox, cmd.status)
        await s.maybe_flush()
    return Done()


async def lsub(s: Session, cmd: c.Lsub) -> Done:
    account = s.require_account()
    reference = _pattern_arg(s, cmd.reference)
    pattern = _pattern_arg(s, cmd.pattern)
    if not pattern:
        s.send(list_response(("\\Noselect",), HIERARCHY_DELIMITER, "", utf8=s.utf8, command="LSUB"))
        return Done()
    # RFC 3501 §6.3.9: when "foo/bar" is subscribed and "foo" is not, "%" returns foo flagged
    # \Noselect. That is the RECURSIVEMATCH rule (RFC 5258 §3.3 rule 2B) with \Noselect for CHILDINFO.
    entries = list_entries(
        await s.store.list_mailboxes(account.id),
        [_matcher(reference, pattern)],
        subscriptions=await s.store.list_subscriptions(account.id),
        subscribed_only=True,
        recursive=True,
    )
    for entry in entries:
        attributes = () if entry.selected else ("\\Noselect",)
        s.send(list_response(attributes, HIERARCHY_DELIMITER, entry.name, utf8=s.utf8, command="LSUB"))
        await s.maybe_flush()
    return Done()


async def _send_status(s: Session, mailbox: Mailbox, items: tuple[str, ...]) -> None:
    st = await s.store.mailbox_status(mailbox.id)
    values: dict[str, int] = {
        "MESSAGES": st.messages,
        "UIDNEXT": st.mailbox.uidnext,
        "UIDVALIDITY": st.mailbox.uidvalidity,
        "UNSEEN": st.unseen,
        "DELETED": st.deleted,
        "SIZE": st.size,  # RFC 8438
        "HIGHESTMODSEQ": st.mailbox.highestmodseq,  # RFC 7162 §3.1.10
        "APPENDLIMIT": s.config.limits.message_size,  # RFC 7889 §4
        # RFC 3501 §6.3.10: messages with \Recent (for the selected mailbox: those this session
        # claimed; elsewhere: those no session has claimed yet). RFC 9051 Appendix E removed \Recent:
        # an IMAP4rev2 session that asks anyway gets 0.
        "RECENT": _recent_count(s, st),
    }
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()
    out = [(item, values[item]) for item in items if item in values]
    s.send(status_response(mailbox.name, out, utf8=s.utf8))


def _recent_count(s: Session, st: MailboxStatus) -> int:
    if s.rev2:
        return 0
    view = s.view
    if view is not None and view.mailbox_id == st.mailbox.id:
        # EXAMINE claims nothing, so the unclaimed ones are all it sees as recent; SELECT adds those it
        # claimed to those it will claim when they are announced.
        return st.recent if view.read_only else len(view.recent) + st.recent
    return st.recent


async def status(s: Session, cmd: c.Status) -> Done:
    mailbox = await _mailbox(s, cmd.mailbox)
    await _send_status(s, mailbox, cmd.items)
    return Done()


# --- QUOTA (RFC 9208) ---------------------------------------------------------------------------------

_ROOT = ""  # one quota root per account, covering every mailbox


async def _quota_line(s: Session) -> bytes | None:
    account = await s.store.get_account_by_id(s.require_account().id)
    if account is None or account.quota_bytes is None:
        return None
    used = await s.store.account_usage(account.id)
    # RFC 9208 §5.1: STORAGE is counted in units of 1024 octets.
    kib_used = (used + 1023) // 1024
    kib_limit = account.quota_bytes // 1024
    return untagged(b"QUOTA", astring(_ROOT) if _ROOT else b'""', b"(STORAGE %d %d)" % (kib_used, kib_limit))


async def getquotaroot(s: Session, cmd: c.GetQuotaRoot) -> Done:
    mailbox = await _mailbox(s, cmd.mailbox)
    line = await _quota_line(s)
    name = mailbox_name(mailbox.name, utf8=s.utf8)
    if line is None:
        s.send(untagged(b"QUOTAROOT", name))  # no limit: no quota root applies
    else:
        s.send(untagged(b"QUOTAROOT", name, b'""'))
        s.send(line)
    return Done()


async def getquota(s: Session, cmd: c.GetQuota) -> Done:
    line = await _quota_line(s) if cmd.root == _ROOT else None
    if line is None:
        raise UserError("no such quota root", Code.NONEXISTENT)
    s.send(line)
    return Done()


async def setquota(s: Session, cmd: c.SetQuota) -> Done:
    raise UserError("quotas are set by the administrator (surat user quota)", Code.NOPERM)
