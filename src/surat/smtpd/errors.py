"""The one place where exceptions become SMTP replies (ARCHITECTURE.md decision 2)."""

from __future__ import annotations

import errno
import logging

from surat.log import fields
from surat.proto.smtp import replies as R
from surat.proto.smtp.replies import Reply
from surat.store.base import InvalidName, NotFound, QuotaExceeded, StoreError

log = logging.getLogger(__name__)


class SMTPPolicyError(Exception):
    """A refusal decided by policy; carries its reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def reply_for(exc: BaseException, where: str) -> Reply:
    """Map an exception raised while handling `where` (an event name) to the reply to send.

    Store errors carry a meaning the client can act on; anything unexpected is our bug or an
    outage: a temporary failure (so the client retries), logged with its traceback.
    """
    match exc:
        case SMTPPolicyError():
            return exc.reply
        case QuotaExceeded():
            return R.MAILBOX_FULL  # RFC 3463 X.2.2
        case NotFound() | InvalidName():
            return R.NO_SUCH_USER
        case OSError() if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("smtp.storage_full", extra=fields(where=where, error=str(exc)))
            return R.INSUFFICIENT_STORAGE  # RFC 3463 X.3.1
        case StoreError():
            log.error("smtp.store_error", exc_info=exc, extra=fields(where=where))
            return R.LOCAL_ERROR
    log.error("smtp.internal_error", exc_info=exc, extra=fields(where=where))
    return R.LOCAL_ERROR
