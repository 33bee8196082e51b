"""The IMAP shell: one ``Session`` per connection, an asyncio loop around ``proto.imap.reader``.

The loop reads, feeds the reader, and dispatches each event; command handlers live in ``auth``,
``mailboxes``, ``messages`` and ``fetch`` and are chosen by the table in ``dispatch``. Before every tagged
reply the session reads the store's change feed and tells the client what other sessions and SMTP did
(``notify``); during IDLE it does so as soon as a change is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from surat import metrics
from surat.apppasswords import authenticate_mail
from surat.authlimit import AuthLimiter, BlockPolicy, StoreAuthLimiter
from surat.config import Config
from surat.imapd.compress import Deflate
from surat.imapd.dispatch import dispatch
from surat.imapd.errors import CommandError, Disconnect, UserError, error_reply
from surat.imapd.fetch import FetchCache
from surat.imapd.junk import JunkBudget
from surat.imapd.state import AUTHENTICATED_STATES, Done, State
from surat.imapd.transport import tune_transport
from surat.imapd.view import Announcements, SelectedView
from surat.log import fields
from surat.net.connection import OUTPUT_HIGH_WATER, Connection, ConnectionTimeout
from surat.net.deadline import SessionClock
from surat.net.listener import Handler
from surat.net.tlscontexts import TlsContexts
from surat.proto.imap import commands as c
from surat.proto.imap import mutf7
from surat.proto.imap.parser import SEARCH_CHARSETS
from surat.proto.imap.reader import (
    NEED_DATA,
    CommandReader,
    ContinuationLine,
    LiteralChunk,
    LiteralTooBig,
    NeedLiteral,
    ParseError,
    ReaderLimits,
)
from surat.proto.imap.seqset import SequenceSet
from surat.proto.imap.writer import (
    Code,
    ResponseCode,
    Status,
    continuation,
    exists,
    expunge,
    fetch,
    flag_list,
    flags,
    tagged,
    untagged,
    untagged_status,
    vanished,
)
from surat.store.base import Account, Change, ChangeKind, Mailbox, NotFound, StagedBlob, Store, Subscription

__all__ = ["AUTOLOGOUT", "IMAPService", "Session"]

log = logging.getLogger(__name__)

# RFC 9051 §5.4: an inactivity autologout timer must be at least 30 minutes.
AUTOLOGOUT = 30 * 60.0
PREAUTH_TIMEOUT = 120.0  # before login: clients log in at once, idle strangers need not be kept
FLUSH_THRESHOLD = OUTPUT_HIGH_WATER  # handed to the transport in pieces, so the client reads while we write
# Most plaintext one read inflates to under COMPRESS (RFC 4978): the rest of the input waits in the
# decompressor, so a deflate bomb costs this much memory per turn, not what it would inflate to.
DEFLATE_OUTPUT_BOUND = 64 * 1024

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# Every extension implemented, advertised after login. SEARCH-related ones are added by ``capabilities``.
EXTENSIONS = (
    "IDLE",
    "UIDPLUS",
    "MOVE",
    "NAMESPACE",
    "ID",
    "ENABLE",
    "LITERAL+",
    "SASL-IR",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "STATUS=SIZE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "SEARCHRES",
    "SORT",
    "SORT=DISPLAY",  # RFC 5957: DISPLAYFROM and DISPLAYTO sort keys
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "UTF8=ACCEPT",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "COMPRESS=DEFLATE",
    "BINARY",
    "MULTIAPPEND",
)
MECHANISMS = ("PLAIN", "SCRAM-SHA-256")


@dataclass(slots=True)
class _Spooled:
    staged: StagedBlob  # the literal, written into the store's staging as it arrives
    size: int  # as announced by the literal
    flags: frozenset[str]
    date: datetime


@dataclass(slots=True)
class AppendState:
    """An APPEND in progress (RFC 9051 §6.3.12, MULTIAPPEND RFC 3502): messages spooled so far."""

    tag: str
    mailbox: Mailbox | None
    error: bytes | None  # the reply owed instead of OK (set while refusing)
    error_bad: bool = False  # that reply is a BAD (counts against the error budget)
    spooled: list[_Spooled] = field(default_factory=list)
    current: _Spooled | None = None  # the message whose literal is arriving
    total: int = 0

    def discard(self) -> None:
        """Abort every staged message the store has not taken over (a failed or dropped APPEND
        leaves nothing behind; abort never blocks, so this is safe on cancellation too)."""
        for item in self.spooled + ([self.current] if self.current else []):
            item.staged.abort()
        self.spooled.clear()
        self.current = None


class IMAPService:
    """Builds the connection handlers for the `imap` (143, STARTTLS) and `imaps` (993) listeners."""

    def __init__(
        self,
        config: Config,
        store: Store,
        tls: TlsContexts | None,
        *,
        scram_secret: bytes | None = None,
        autologout: float = AUTOLOGOUT,
        auth_limiter: AuthLimiter | None = None,
    ) -> None:
        self.config = config
        self.auth_limiter: AuthLimiter = auth_limiter or StoreAuthLimiter(
            store, BlockPolicy.from_config(config.limits)
        )
        self.store = store
        self.tls = tls  # read at each STARTTLS: a reload applies to the next one
        self.scram_secret = scram_secret
        self.autologout = autologout
        self.fetch_cache = FetchCache()

    def handler(self, role: str) -> Handler:
        if role not in ("imap", "imaps"):
            raise ValueError(f"not an IMAP role: {role}")

        async def handle(conn: Connection) -> None:
            await Session(self, conn, implicit_tls=role == "imaps").run()

        return handle


class Session:
    def __init__(self, service: IMAPService, conn: Connection, *, implicit_tls: bool) -> None:
        self.service = service
        self.config = service.config
        self.store = service.store
        self.conn = conn
        self.tls = implicit_tls
        self.starttls_available = not implicit_tls and service.tls is not None
        self.state = State.NOT_AUTHENTICATED
        self.reader = self._new_reader()
        self.account: Account | None = None
        self.subscription: Subscription | None = None
        self.view: SelectedView | None = None
        self.enabled: set[str] = set()
        self.append: AppendState | None = None
        self.deflate: Deflate | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._bad_streak = 0
        self.auth_failures = 0
        self.clock = SessionClock(PREAUTH_TIMEOUT, self.config.limits.imap_session_deadline)
        self.junk = JunkBudget(self.config.limits.junk_commands)

    def _new_reader(self) -> CommandReader:
        return CommandReader(ReaderLimits(max_append_literal=self.config.limits.message_size))

    # ------------------------------------------------------------------------------ properties

    @property
    def utf8(self) -> bool:
        """Mailbox names and strings in UTF-8 (IMAP4rev2 or UTF8=ACCEPT, RFC 6855 §3)."""
        return "IMAP4REV2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def enable_condstore(self) -> None:
        """RFC 7162 §3.1: a CONDSTORE-enabling command was used; MODSEQ goes into FETCH responses from now on.

        The first one issued while a mailbox is selected (FETCH MODSEQ or CHANGEDSINCE, SEARCH MODSEQ, STORE
        UNCHANGEDSINCE, STATUS HIGHESTMODSEQ) is answered with `* OK [HIGHESTMODSEQ n]` (RFC 7162 §3.1), so
        the client knows from which mod-sequence on it is kept informed. SELECT/EXAMINE (CONDSTORE) call this
        before the new mailbox is selected and send HIGHESTMODSEQ themselves."""
        first = "CONDSTORE" not in self.enabled
        self.enabled.add("CONDSTORE")
        view = self.view
        if view is None:
            return
        view.condstore = True
        if first:
            highest = max([view.highestmodseq, *(st.modseq for st in view.state.values())])
            self.send(untagged_status(Status.OK, "CONDSTORE enabled", ResponseCode.highestmodseq(highest)))

    @property
    def user(self) -> str:
        return self.account.address if self.account is not None else "-"

    def require_account(self) -> Account:
        assert self.account is not None
        return self.account

    def require_view(self) -> SelectedView:
        if self.view is None:
            raise CommandError("no mailbox selected")
        return self.view

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if self.state is State.NOT_AUTHENTICATED:
            caps += ["ID", "ENABLE", "IDLE", "LITERAL+", "SASL-IR"]
            if not self.tls:
                if self.starttls_available:
                    caps.append("STARTTLS")
                caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3: no plaintext passwords before TLS
            else:
                caps += [f"AUTH={m}" for m in MECHANISMS]
            return caps
        caps += EXTENSIONS
        caps.append(f"APPENDLIMIT={self.config.limits.message_size}")
        return caps

    # ------------------------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def send_tagged(self, tag: str, status: Status, text: str, code: ResponseCode | None = None) -> None:
        self.send(tagged(tag, status, text, code))

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            if self.deflate is not None:
                data = self.deflate.compress(data)
            self.conn.write(data)
        await self.conn.drain()

    async def maybe_flush(self) -> None:
        """Bound the output buffer during long responses (a FETCH of 10 000 envelopes)."""
        if self._out_size >= FLUSH_THRESHOLD:
            await self.flush()

    # ------------------------------------------------------------------------------ input

    async def read(self) -> bytes:
        """The next input (decompressed), b"" at end of stream; ConnectionTimeout past the autologout
        (its text says which limit ended the session)."""
        data = await self._read_input()
        self.clock.fed(self.reader.buffered + len(data))  # the caller feeds it to the reader next
        return data

    async def _read_input(self) -> bytes:
        """With COMPRESS active, reads go on until some plaintext comes out: a client may send any number
        of empty or partial deflate blocks (10 000 empty blocks are 50 000 octets). A loop, not a
        recursive call, so no count of them reaches Python's recursion limit. Each turn inflates at most
        ``DEFLATE_OUTPUT_BOUND`` octets (RFC 4978 §4 leaves the size of a block to the sender; a block
        that inflates to gigabytes comes out piece by piece, one piece per turn of the command loop).
        """
        deflate = self.deflate
        if deflate is not None and deflate.has_pending_input:
            return deflate.decompress(b"", DEFLATE_OUTPUT_BOUND)
        while True:
            # RFC 9051 §5.4: the autologout timer (30 minutes at least once logged in) restarts when the
            # reader consumed input, not at every octet, so a line that never ends times out
            # (surat.net.deadline); IDLE ends and is re-issued within it (RFC 2177: every 29 minutes).
            self.clock.idle_timeout = (
                self.service.autologout
                if self.account is not None
                else min(PREAUTH_TIMEOUT, self.service.autologout)
            )
            try:
                data = await self.conn.read(self.clock.before_read(self.reader.buffered))
            except ConnectionTimeout:
                if self.clock.deadline_passed:
                    raise ConnectionTimeout("session time limit reached") from None
                raise ConnectionTimeout("autologout: idle for too long") from None
            if deflate is None or not data:
                return data
            try:
                data = deflate.decompress(data, DEFLATE_OUTPUT_BOUND)
            except zlib.error:
                log.info("imap.deflate_error", extra=fields(user=self.user))
                return b""
            if data:
                return data
            # Only an empty or partial deflate block so far: nothing to parse yet, read on.

    async def continuation_line(self) -> bytes:
        """The next line after a continuation request (AUTHENTICATE response, IDLE's DONE)."""
        self.reader.expect_line()
        while True:
            event = self.reader.next_event()
            if isinstance(event, ContinuationLine):
                return event.line
            if isinstance(event, ParseError):
                self.send(tagged(event.tag, Status.BAD, event.message))
                await self.bye("line too long")
            await self.flush()
            data = await self._read_or_bye()
            self.reader.receive_data(data)

    async def _read_or_bye(self) -> bytes:
        try:
            data = await self.read()
        except ConnectionTimeout as exc:
            await self.bye(str(exc))
        if not data:
            raise Disconnect
        return data

    async def bye(self, text: str, code: ResponseCode | None = None) -> None:
        self.send(untagged_status(Status.BYE, text, code))
        self.state = State.LOGOUT
        await self.flush()
        raise Disconnect

    # ------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        log.info("imap.connect", extra=fields(peer=self.conn.peer_host, role=self.conn.role))
        tune_transport(self.conn)
        greeting = untagged_status(
            Status.OK, "Surat IMAP server ready", ResponseCode.capability(self.capabilities())
        )
        self.send(greeting)
        try:
            await self._serve()
        except Disconnect:
            pass
        except ConnectionTimeout:
            pass
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self.append is not None:
            self.append.discard()
            self.append = None
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        with contextlib.suppress(Exception):
            await self.flush()
        log.info("imap.disconnect", extra=fields(user=self.user))

    async def _serve(self) -> None:
        while self.state is not State.LOGOUT:
            await self.flush()
            try:
                data = await self.read()
            except ConnectionTimeout as exc:
                # RFC 9051 §5.4 autologout, or the session deadline.
                await self.bye(str(exc))
            if not data:
                return
            self.reader.receive_data(data)
            await self.process_events()

    async def process_events(self) -> None:
        while self.state is not State.LOGOUT:
            event = self.reader.next_event()
            if event is NEED_DATA:
                return
            match event:
                case c.AppendMessage():
                    await self._append_message_or_refuse(event)
                case NeedLiteral(append=True):
                    await self._append_literal(event)
                case NeedLiteral(synchronizing=True):
                    self.reader.accept_literal()
                    self.send(continuation("Ready"))
                    await self.flush()
                case NeedLiteral():
                    pass
                case LiteralChunk(data=data):
                    await self._append_chunk(data)
                case ParseError():
                    await self._parse_error(event)
                case LiteralTooBig():
                    await self._literal_too_big(event)
                case ContinuationLine():
                    pass  # only after expect_line(), which the handlers consume themselves
                case c.Append():
                    await dispatch(self, event)
                case _:
                    await dispatch(self, event)
            # Pipelined commands (a thousand `FETCH 1:* BODY[]` in one read) produce output faster than
            # a client that is not reading takes it: wait for the client past the high-water mark.
            await self.maybe_flush()

    async def count_error(self, bad: bool) -> None:
        """Too many BADs in a row, or too many failed logins, end the connection (ARCHITECTURE decision 2)."""
        if bad:
            self._bad_streak += 1
        else:
            self._bad_streak = 0
        limit = self.config.limits.bad_commands
        if self._bad_streak >= limit:
            log.info("imap.too_many_errors", extra=fields(user=self.user, errors=self._bad_streak))
            await self.bye("too many errors")
        if self.auth_failures >= limit:
            await self.bye("too many failed logins")

    async def _parse_error(self, event: ParseError) -> None:
        if self.append is not None:
            self.append.discard()
            self.append = None
        if event.code == "BADCHARSET":
            # RFC 9051 §6.4.4: an unsupported charset is a NO with the charsets we do support.
            self.send(tagged(event.tag, Status.NO, event.message, ResponseCode.badcharset(SEARCH_CHARSETS)))
            await self.count_error(False)
        else:
            self.send(tagged(event.tag, Status.BAD, event.message))
            await self.count_error(True)
        if event.close:
            await self.bye("cannot find the next command")

    async def _literal_too_big(self, event: LiteralTooBig) -> None:
        if self.append is not None:
            self.append.discard()
            self.append = None
        text = f"literal of {event.size} octets is over the limit of {event.limit}"
        if event.synchronizing:
            # RFC 7889 §3 / RFC 9051 §7.1: TOOBIG before the client sends the data.
            self.send(tagged(event.tag, Status.NO, text, Code.TOOBIG))
            return
        # RFC 7888 §4: the bytes of a non-synchronizing literal are already on their way.
        self.send(tagged(event.tag, Status.BAD, text, Code.TOOBIG))
        await self.bye("literal too big")

    # ------------------------------------------------------------------------------ APPEND

    def mailbox_arg(self, name: str) -> str:
        """A mailbox name from the client as the store spells it (RFC 3501 §5.1.3 for rev1 clients).

        A name that is not canonical modified UTF-7 is well-formed IMAP syntax naming no mailbox this
        server can hold, so it is a NO [CANNOT] (RFC 5530 §3), not a BAD: the grammar (RFC 3501 §9
        `mailbox` = astring) accepts it, and a client must be able to recover without losing its
        error budget.
        """
        if self.utf8 or (name.isascii() and "&" not in name):
            return name
        try:
            return mutf7.decode(name)
        except mutf7.MUTF7Error as exc:
            raise UserError(f"invalid mailbox name (not modified UTF-7): {exc}", Code.CANNOT) from None

    async def _append_message_or_refuse(self, event: c.AppendMessage) -> None:
        """Start one message of an APPEND; a failure (a store error, a full disk) becomes the command's
        reply, sent once its literal is refused or read, and the connection goes on: the client is
        mid-command, and closing would lose what it sends next."""
        try:
            await self._append_message(event)
        except (asyncio.CancelledError, Disconnect):
            raise
        except Exception as exc:
            state = self.append
            if state is None or state.tag != event.tag:
                state = self.append = AppendState(event.tag, None, None)
            state.discard()  # the whole APPEND fails (RFC 3502 §6.3.11): nothing staged is kept
            reply = error_reply(event.tag, exc, command="APPEND")
            state.error, state.error_bad = reply.line, reply.bad

    async def _append_message(self, event: c.AppendMessage) -> None:
        state = self.append
        if event.index == 0 or state is None:
            if state is not None:
                state.discard()
            state = self.append = AppendState(event.tag, None, None)
            if self.state not in AUTHENTICATED_STATES:
                state.error = tagged(event.tag, Status.BAD, "APPEND not allowed in this state")
                state.error_bad = True
                return
            try:
                name = self.mailbox_arg(event.mailbox)
            except UserError as exc:
                state.error = tagged(event.tag, Status.NO, exc.text, exc.code)
                return
            mailbox = await self.store.get_mailbox(self.require_account().id, name)
            if mailbox is None:
                # RFC 9051 §6.3.12: TRYCREATE when the mailbox does not exist but could be created.
                state.error = tagged(event.tag, Status.NO, "no such mailbox", Code.TRYCREATE)
                return
            state.mailbox = mailbox
        if state.error is not None:
            return
        if state.current is not None:
            state.spooled.append(state.current)
            state.current = None
        state.total += event.size
        account = await self.store.get_account_by_id(self.require_account().id)
        if account is not None and account.quota_bytes is not None:
            used = await self.store.account_usage(account.id)
            if used + state.total > account.quota_bytes:
                # RFC 9208 §4.3: refuse before the data is sent.
                state.error = tagged(event.tag, Status.NO, "quota exceeded", Code.OVERQUOTA)
                return
        date = event.internal_date or datetime.now(UTC)
        flags_ = frozenset(f for f in event.flags if f != "\\Recent")
        state.current = _Spooled(self.store.blobs.stage(), event.size, flags_, date)

    async def _append_literal(self, event: NeedLiteral) -> None:
        state = self.append
        if state is None:  # cannot happen: AppendMessage comes first
            state = self.append = AppendState(
                event.tag, None, tagged(event.tag, Status.BAD, "unexpected literal"), True
            )
        if not event.synchronizing:
            return  # already on its way: spooled, or dropped if refused (the reply waits for the end)
        if state.error is not None:
            self.reader.reject_literal()
            self.send(state.error)
            state.discard()
            self.append = None
            await self.count_error(state.error_bad)
            return
        self.reader.accept_literal()
        self.send(continuation("Ready for literal data"))
        await self.flush()

    async def _append_chunk(self, data: bytes) -> None:
        state = self.append
        if state is not None and state.current is not None and state.error is None:
            await state.current.staged.write(data)

    def finish_append(self) -> AppendState:
        """Hand the APPEND's state, its last message included, to its handler."""
        state = self.append
        self.append = None
        if state is None:
            raise CommandError("APPEND without a message")
        if state.current is not None:
            state.spooled.append(state.current)
            state.current = None
        return state

    # ------------------------------------------------------------------------------ change notifications

    def fetch_flags_line(self, uid: int, *, with_uid: bool = False) -> bytes:
        """`* n FETCH (FLAGS (...) [UID u] [MODSEQ (m)])` for a change the client must hear about."""
        view = self.require_view()
        seq = view.seq_of(uid)
        assert seq is not None
        st = view.state[uid]
        items: list[tuple[str, bytes]] = []
        if with_uid or self.qresync:
            items.append(("UID", b"%d" % uid))  # RFC 7162 §3.2.4: QRESYNC needs the UID in every FETCH
        items.append(("FLAGS", self.shown_flags(uid, st.flags)))
        if self.condstore:
            items.append(("MODSEQ", b"(%d)" % st.modseq))
        return fetch(seq, items)

    def flags_line(self) -> bytes:
        view = self.require_view()
        return flags([*SYSTEM_FLAGS, *sorted(view.keywords)])

    def permanent_flags_line(self) -> bytes:
        view = self.require_view()
        if view.read_only:
            return untagged_status(Status.OK, "read-only mailbox", ResponseCode.permanentflags([]))
        names = [*SYSTEM_FLAGS, *sorted(view.keywords), "\\*"]
        return untagged_status(Status.OK, "flags permitted", ResponseCode.permanentflags(names))

    def announce_expunges(self) -> None:
        view = self.view
        if view is None:
            return
        pairs = view.take_expunged()
        if not pairs:
            return
        if self.qresync:
            # RFC 7162 §3.2.10: VANISHED instead of EXPUNGE once QRESYNC is enabled.
            self.send(vanished(SequenceSet.from_numbers(uid for _, uid in pairs)))
        else:
            for seq, _ in pairs:  # descending: each number is valid when the client applies it
                self.send(expunge(seq))

    async def sync_view(self, extra: list[Change] | None = None) -> Announcements | None:
        """Bring the view up to date with the store if the change feed says it moved; what the client is
        owed, or None when nothing relevant happened (or no mailbox is selected)."""
        changes = self.subscription.pending() if self.subscription is not None else []
        if extra:
            changes = extra + changes
        view = self.view
        if view is None:
            return None
        relevant = any(
            ch.kind is ChangeKind.OVERFLOW
            or (ch.mailbox_id == view.mailbox_id and ch.kind is not ChangeKind.MAILBOX_RENAMED)
            for ch in changes
        )
        if not relevant:
            return None
        try:
            mc = await self.store.changes_since(view.mailbox_id, view.highestmodseq)
        except NotFound:
            await self.bye("the selected mailbox was deleted", Code.UNAVAILABLE)
        return view.apply(mc)

    async def notify(self, *, allow_expunge: bool, extra: list[Change] | None = None) -> None:
        """Tell the client what changed in its selected mailbox since the last time (RFC 9051 §7.5.1)."""
        announcements = await self.sync_view(extra)
        view = self.view
        if view is None:
            return
        if allow_expunge:
            self.announce_expunges()
        if announcements is None:
            return
        if announcements.new_keywords:
            self.send(self.flags_line())
            self.send(self.permanent_flags_line())
        if announcements.new_messages:
            # Counted now, after the EXPUNGEs just sent: counted before them, the number would include
            # messages the client has just removed and the next EXISTS would look like a shrink.
            self.send(exists(view.exists))
            await self.claim_recent()
            if not self.rev2:
                # RFC 3501 §7.3.2: RECENT follows a change in the number of recent messages; it reports
                # this session's total, not the newcomers alone.
                self.send(untagged(b"%d RECENT" % len(view.recent)))
        for uid in announcements.flag_changes:
            if uid in view.state and uid not in view.expunged:
                self.send(self.fetch_flags_line(uid))

    async def claim_recent(self) -> None:
        """Take the \\Recent messages of the selected mailbox that no session has been told of yet.

        RFC 3501 §2.3.2: a message is recent for the first session notified of it, and for no other;
        the claim is in the store so that sessions in other processes agree. EXAMINE (RFC 3501 §6.3.2)
        sees them as recent without claiming them. IMAP4rev2 sessions (RFC 9051 Appendix E: \\Recent
        is gone) claim nothing, so an IMAP4rev1 client of the same account still sees its new mail as
        recent."""
        view = self.view
        if view is None or self.rev2:
            return
        try:
            first, last = await self.store.claim_recent(
                view.mailbox_id, view.highest_uid, peek=view.read_only
            )
        except NotFound:
            await self.bye("the selected mailbox was deleted", Code.UNAVAILABLE)
        view.mark_recent(first, last)

    def shown_flags(self, uid: int, stored: frozenset[str]) -> bytes:
        """A message's FLAGS value as this session shows it: the stored flags, and \\Recent for an
        IMAP4rev1 session that claimed it (RFC 3501 §2.3.2), never for IMAP4rev2 (RFC 9051 Appendix E)."""
        names = sorted(stored)
        view = self.view
        if view is not None and uid in view.recent and not self.rev2:
            names.append("\\Recent")
        return flag_list(names)

    async def wait_change(self, sub: Subscription) -> Change:
        iterator: AsyncIterator[Change] = aiter(sub)
        return await anext(iterator)

    # ------------------------------------------------------------------------------ authentication

    async def check_password(self, address: str, password: str) -> Account | None:
        return await authenticate_mail(
            self.store, address, password, scram_iterations=self.config.auth.scram_iterations
        )

    async def refuse_blocked(self) -> None:
        """Too many failures from this address (surat.authlimit): refuse without checking."""
        if await self.service.auth_limiter.retry_after(self.conn.peer_host) > 0:
            self.auth_failures += 1  # spends the connection's budget like a failed login
            metrics.auth_attempt("imap", "blocked")
            raise UserError("too many failed logins from your address, try later", Code.UNAVAILABLE)

    async def login_failed(self, user: str | None, mechanism: str) -> UserError:
        metrics.auth_attempt("imap", "failed")
        await self.service.auth_limiter.failure(self.conn.peer_host, user, "imap")
        self.auth_failures += 1
        log.info(
            "imap.login_failed",
            extra=fields(user=user or "-", mechanism=mechanism, failures=self.auth_failures),
        )
        # Slow down guessing: the delay grows with each failure on this connection, and the error
        # budget closes the connection after a few (as the SMTP and POP3 shells do).
        await asyncio.sleep(self.config.limits.auth_failure_delay * min(self.auth_failures, 5))
        return UserError("invalid credentials", Code.AUTHENTICATIONFAILED)

    async def logged_in(self, account: Account, method: str) -> Done:
        self.account = account
        self.state = State.AUTHENTICATED
        self.subscription = self.store.changes.subscribe(account.id)
        log.info("imap.login", extra=fields(user=account.address, method=method))
        metrics.auth_attempt("imap", "ok")
        return Done(f"{method} completed", ResponseCode.capability(self.capabilities()))

    def refuse_plaintext(self) -> None:
        if not self.tls:
            # RFC 9051 §6.2.3 / §7.1 PRIVACYREQUIRED: LOGINDISABLED is advertised until TLS is active.
            raise UserError("log in after STARTTLS", Code.PRIVACYREQUIRED)
