"""The one place where IMAP handler failures become replies (ARCHITECTURE decision 2).

Three kinds, as in mox's imapserver/error.go:
- ``UserError``: the client asked for something that cannot be done -> ``tag NO [CODE] text``;
- ``CommandError``: the command is wrong for the grammar or the state -> ``tag BAD text``;
- anything else is a server bug -> ``tag NO [SERVERBUG]`` and the traceback goes to the log.
Store errors are user errors with a known code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from surat.log import fields
from surat.proto.imap.writer import Code, ResponseCode, Status, tagged
from surat.store.base import AlreadyExists, InvalidName, NotFound, QuotaExceeded, StoreError

__all__ = ["CommandError", "Disconnect", "PreparedReply", "Reply", "UserError", "error_reply"]

log = logging.getLogger(__name__)


class Disconnect(Exception):
    """End the connection now (the peer went away, or the server said BYE)."""


class UserError(Exception):
    """``tag NO [code] text``."""

    def __init__(self, text: str, code: ResponseCode | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class CommandError(Exception):
    """``tag BAD text``: syntax the parser could not see (a sequence number out of range, `$` unset...)
    or a command in the wrong state. Counts against the error budget."""

    def __init__(self, text: str, code: ResponseCode | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class PreparedReply(Exception):
    """A reply already serialised: an APPEND refused while its non-synchronizing literal was arriving."""

    def __init__(self, line: bytes, bad: bool) -> None:
        super().__init__("prepared reply")
        self.line = line
        self.bad = bad


@dataclass(frozen=True, slots=True)
class Reply:
    line: bytes
    bad: bool  # a BAD: counts against the connection's error budget


def _store_error(exc: StoreError) -> tuple[str, ResponseCode | None]:
    if isinstance(exc, NotFound):
        return "no such mailbox", Code.NONEXISTENT
    if isinstance(exc, AlreadyExists):
        return "mailbox already exists", Code.ALREADYEXISTS
    if isinstance(exc, InvalidName):
        return str(exc) or "invalid mailbox name", Code.CANNOT
    if isinstance(exc, QuotaExceeded):
        return "quota exceeded", Code.OVERQUOTA
    return str(exc) or "operation failed", Code.UNAVAILABLE


def error_reply(tag: str, exc: Exception, *, command: str = "-") -> Reply:
    """The tagged reply for a handler that raised ``exc``; unexpected errors are logged here."""
    if isinstance(exc, PreparedReply):
        return Reply(exc.line, bad=exc.bad)
    if isinstance(exc, CommandError):
        return Reply(tagged(tag, Status.BAD, exc.text, exc.code), bad=True)
    if isinstance(exc, UserError):
        return Reply(tagged(tag, Status.NO, exc.text, exc.code), bad=False)
    if isinstance(exc, StoreError):
        text, code = _store_error(exc)
        return Reply(tagged(tag, Status.NO, text, code), bad=False)
    # RFC 5530 §3 SERVERBUG: our fault; the details stay in the log, not on the wire.
    log.error("imap.server_bug", extra=fields(command=command), exc_info=exc)
    return Reply(tagged(tag, Status.NO, "internal server error", Code.SERVERBUG), bad=False)
