"""The command table: which handler runs each command, and in which states it is allowed (RFC 9051 §3, §6).

An explicit table, as in mox's imapserver: a command missing here cannot run, and the state check happens
once, before any handler code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from surat import metrics
from surat.imapd import auth, fetch, mailboxes, messages
from surat.imapd.errors import Disconnect, error_reply
from surat.imapd.state import ANY_STATE, AUTHENTICATED_STATES, SELECTED_ONLY, Done, State
from surat.proto.imap import commands as c
from surat.proto.imap.writer import Status, tagged

if TYPE_CHECKING:
    from surat.imapd.session import Session

__all__ = ["COMMANDS", "dispatch"]

Handler = Callable[["Session", Any], Awaitable[Done]]

_NOT_AUTHENTICATED: Final = frozenset({State.NOT_AUTHENTICATED})

COMMANDS: Final[dict[type, tuple[str, Handler, frozenset[State]]]] = {
    # RFC 9051 §6.1: any state
    c.Capability: ("CAPABILITY", auth.capability_cmd, ANY_STATE),
    c.Noop: ("NOOP", auth.noop, ANY_STATE),
    c.Logout: ("LOGOUT", auth.logout, ANY_STATE),
    c.Id: ("ID", auth.id_cmd, ANY_STATE),
    # §6.2: not authenticated
    c.StartTLS: ("STARTTLS", auth.starttls, _NOT_AUTHENTICATED),
    c.Authenticate: ("AUTHENTICATE", auth.authenticate, _NOT_AUTHENTICATED),
    c.Login: ("LOGIN", auth.login, _NOT_AUTHENTICATED),
    # §6.3: authenticated (and selected)
    c.Enable: ("ENABLE", auth.enable, frozenset({State.AUTHENTICATED})),  # RFC 5161 §3.1
    c.Select: ("SELECT", mailboxes.select, AUTHENTICATED_STATES),
    c.Examine: ("EXAMINE", mailboxes.select, AUTHENTICATED_STATES),
    c.Create: ("CREATE", mailboxes.create, AUTHENTICATED_STATES),
    c.Delete: ("DELETE", mailboxes.delete, AUTHENTICATED_STATES),
    c.Rename: ("RENAME", mailboxes.rename, AUTHENTICATED_STATES),
    c.Subscribe: ("SUBSCRIBE", mailboxes.subscribe, AUTHENTICATED_STATES),
    c.Unsubscribe: ("UNSUBSCRIBE", mailboxes.unsubscribe, AUTHENTICATED_STATES),
    c.List: ("LIST", mailboxes.list_cmd, AUTHENTICATED_STATES),
    c.Lsub: ("LSUB", mailboxes.lsub, AUTHENTICATED_STATES),
    c.Namespace: ("NAMESPACE", auth.namespace, AUTHENTICATED_STATES),
    c.Status: ("STATUS", mailboxes.status, AUTHENTICATED_STATES),
    c.Append: ("APPEND", messages.append, AUTHENTICATED_STATES),
    c.Idle: ("IDLE", auth.idle, AUTHENTICATED_STATES),
    c.Compress: ("COMPRESS", auth.compress, AUTHENTICATED_STATES),  # RFC 4978 §5: a command-auth
    c.GetQuota: ("GETQUOTA", mailboxes.getquota, AUTHENTICATED_STATES),
    c.GetQuotaRoot: ("GETQUOTAROOT", mailboxes.getquotaroot, AUTHENTICATED_STATES),
    c.SetQuota: ("SETQUOTA", mailboxes.setquota, AUTHENTICATED_STATES),
    # §6.4: selected
    c.Check: ("CHECK", auth.check, SELECTED_ONLY),
    c.Close: ("CLOSE", mailboxes.close, SELECTED_ONLY),
    c.Unselect: ("UNSELECT", mailboxes.unselect, SELECTED_ONLY),
    c.Expunge: ("EXPUNGE", messages.expunge, SELECTED_ONLY),
    c.UidExpunge: ("UID EXPUNGE", messages.uid_expunge, SELECTED_ONLY),
    c.SearchCommand: ("SEARCH", messages.search_cmd, SELECTED_ONLY),
    c.Fetch: ("FETCH", fetch.fetch_cmd, SELECTED_ONLY),
    c.Store: ("STORE", messages.store, SELECTED_ONLY),
    c.Copy: ("COPY", messages.copy, SELECTED_ONLY),
    c.Move: ("MOVE", messages.move, SELECTED_ONLY),
    c.Sort: ("SORT", messages.sort_cmd, SELECTED_ONLY),
    c.Thread: ("THREAD", messages.thread_cmd, SELECTED_ONLY),
}

# RFC 9051 §7.5.1 (RFC 3501 §7.4.1): no EXPUNGE while FETCH, STORE or SEARCH by sequence number runs, since
# the client could not tell which message a number in its response means. SORT and THREAD answer with
# sequence numbers too, and so does COPY's failure path (RFC 2180 §4.4: a COPY by sequence number must find
# the numbers as the client knows them). MOVE announces its own expunges (RFC 6851 §3.3), so it may
# announce others' as well. The UID forms may carry EXPUNGE: their responses name messages by UID.
_NO_EXPUNGE: Final = (c.Fetch, c.Store, c.SearchCommand, c.Sort, c.Thread, c.Copy)


# Commands that change nothing and move no mail: their budget is surat.imapd.junk.
_JUNK: Final = (c.Noop, c.Check, c.Capability, c.Id)


def _allow_expunge(cmd: object) -> bool:
    return not (isinstance(cmd, _NO_EXPUNGE) and not cmd.uid)


def _sends_updates(cmd: object) -> bool:
    """RFC 9051 §6.1.3: once LOGOUT is received, only the BYE and the tagged OK follow."""
    return not isinstance(cmd, c.Logout)


async def dispatch(s: Session, cmd: c.Command) -> None:
    """Run one command and send its tagged reply (after the untagged updates it owes)."""
    name, handler, states = COMMANDS[type(cmd)]
    uid = getattr(cmd, "uid", False) is True
    if uid and not name.startswith("UID "):
        name = "UID " + name
    tag = cmd.tag
    if isinstance(cmd, _JUNK) and not s.junk.spend():
        s.send(tagged(tag, Status.BAD, f"too many {name} commands, slow down"))  # see surat.imapd.junk
        await s.count_error(True)
        return
    if s.state not in states:
        if isinstance(cmd, c.Append) and s.append is not None:
            s.append.discard()  # its non-synchronizing literals were read and dropped
            s.append = None
        s.send(tagged(tag, Status.BAD, f"{name} is not allowed in this state"))
        await s.count_error(True)
        return
    if not isinstance(cmd, _JUNK):
        s.junk.refill()  # it does work, in a state that allows it: the NOOPs before it were no flood
    # `name` comes from COMMANDS, so the histogram's label set is bounded. IDLE lasts as long as the
    # client likes: its time would say nothing about the server.
    timing = metrics.imap_command(name) if not isinstance(cmd, c.Idle) else contextlib.nullcontext()
    try:
        with timing:
            done = await handler(s, cmd)
            if _sends_updates(cmd):
                await s.notify(allow_expunge=_allow_expunge(cmd))
    except (asyncio.CancelledError, Disconnect):
        raise
    except Exception as exc:
        reply = error_reply(tag, exc, command=name)
        s.send(reply.line)
        await s.count_error(reply.bad)
        return
    s.send(tagged(tag, Status.OK, done.text or f"{name} completed", done.code))
    await s.count_error(False)
    if done.after is not None:
        await s.flush()
        await done.after()
