"""POP3 server shell (asyncio) over the store: see service.py."""

from surat.pop3d.locks import InProcessMaildropLocks, MaildropLease, MaildropLocks
from surat.pop3d.service import POP3Service, POP3Session, pop3_handlers

__all__ = [
    "InProcessMaildropLocks",
    "MaildropLease",
    "MaildropLocks",
    "POP3Service",
    "POP3Session",
    "pop3_handlers",
]
