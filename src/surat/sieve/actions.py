"""The actions a script asks for (RFC 5228 §4 and the extensions), as frozen values the delivery
carries out. The evaluator never performs them: it only decides."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Action", "Discard", "FileInto", "Keep", "Redirect", "Reject", "Vacation"]


@dataclass(frozen=True, slots=True)
class Keep:
    """Store in the default mailbox (RFC 5228 §4.3) with these IMAP flags (RFC 5232 §5).
    `implicit` is True for the implicit keep (§2.10.2), taken because nothing cancelled it."""

    flags: tuple[str, ...] = ()
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class Discard:
    """Silently throw the message away (RFC 5228 §4.4): only the cancelled implicit keep is recorded."""


@dataclass(frozen=True, slots=True)
class FileInto:
    """Store in `mailbox` (RFC 5228 §4.1); `create` it when missing (RFC 5490 §3.2); `copy` (RFC 3894)
    says it did not cancel the implicit keep."""

    mailbox: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the message on, unchanged, to `address` (RFC 5228 §4.2); `copy` as for FileInto."""

    address: str
    copy: bool = False


@dataclass(frozen=True, slots=True)
class Vacation:
    """An auto-reply, if the delivery's vacation memory allows one (RFC 5230 §4, RFC 6131).

    `seconds` is the period in seconds whatever the script said (:days N is N * 86400, RFC 5230 §4.1
    default 7 days); `handle` is the script's :handle or, when absent, one computed from the reply's
    parameters (RFC 5230 §4.2: two vacations differing in reason are different replies)."""

    reason: str
    handle: str
    seconds: int
    subject: str | None = None
    from_address: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message with `reason` (RFC 5429): `extended` is ereject (§2.2: at SMTP time only)."""

    reason: str
    extended: bool = False


Action = Keep | Discard | FileInto | Redirect | Vacation | Reject
