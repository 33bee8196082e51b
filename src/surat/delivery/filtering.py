"""Sieve at final delivery (issue 14): run each local recipient's active script and turn its actions
into what the store and the queue do.

Called by smtpd at the end of DATA, once per local account after alias expansion, for mail from port
25 and from submission alike. The interpreter (surat.sieve) only decides; this module:
- loads the account's scripts (one store read) and parses each once per version (`ScriptCache`);
- evaluates with the message and header the end of DATA already read;
- maps the actions to mailbox targets (keep, fileinto with `:create` and imap4flags flags), local or
  remote redirects (with loop prevention), a vacation reply (RFC 5230 §4.5 and §5), or a reject.
A failing script (a runtime error, a limit, a script that no longer parses) is the implicit keep
(RFC 5228 §2.10.6): the message is never lost.
"""

from __future__ import annotations

import email.utils
import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header as EncodedHeader

from surat.delivery.local import base_address, owned_addresses
from surat.delivery.local import resolve as resolve_local
from surat.log import fields
from surat.message.address import parse_address_list
from surat.message.encoded_words import decode_encoded_words
from surat.message.headers import Header
from surat.sieve import (
    Discard,
    FileInto,
    Keep,
    MessageContext,
    Redirect,
    Reject,
    Script,
    SieveSyntaxError,
    Vacation,
    evaluate,
    parse_script,
)
from surat.store.base import (
    AlreadyExists,
    InvalidName,
    MailboxTarget,
    SieveScript,
    Store,
)

log = logging.getLogger(__name__)

# Parsed scripts kept per process, by (account id, name, version): parsing costs milliseconds,
# evaluating a fraction of one. Bounded (least recently used out) so that many accounts cannot grow it.
MAX_CACHED_SCRIPTS = 2000
# RFC 5321 §6.3: a message that has passed this many MTAs (Received fields) is looping; we do not
# redirect it again (Postfix refuses at 50 hops; a redirect chain never needs this many).
MAX_FORWARD_HOPS = 30
# RFC 5230 §4.6 / RFC 3834 §2: senders that are programs, never sent an auto-reply.
# (and "owner-*", "*-request" local parts)
_AUTOMATIC_LOCALPARTS = ("mailer-daemon", "listserv", "majordomo")
# RFC 5230 §5: header fields that mark list or bulk mail (RFC 2369 List-*, RFC 2919 List-Id).
_LIST_FIELDS = (
    b"list-id",
    b"list-help",
    b"list-unsubscribe",
    b"list-subscribe",
    b"list-post",
    b"list-owner",
    b"list-archive",
)
# RFC 5230 §4.5: where the user's addresses must appear for a reply to go.
_RECIPIENT_FIELDS = (b"to", b"cc", b"bcc", b"resent-to", b"resent-cc", b"resent-bcc")
# An auto-reply quotes at most this much of the original's Message-ID/References (RFC 5322 §3.6.4).
MAX_REFERENCES = 2000


class ScriptCache:
    """Parsed scripts by (account id, name, version); a version never repeats (store.common)."""

    def __init__(self, size: int = MAX_CACHED_SCRIPTS) -> None:
        self._size = size
        self._parsed: OrderedDict[tuple[int, str, int], Script] = OrderedDict()

    def parsed(self, account_id: int, script: SieveScript) -> Script:
        """The script's AST; SieveSyntaxError for a text that no longer parses (stored by another
        version of Surat)."""
        key = (account_id, script.name, script.version)
        found = self._parsed.get(key)
        if found is not None:
            self._parsed.move_to_end(key)
            return found
        found = parse_script(script.text)
        self._parsed[key] = found
        if len(self._parsed) > self._size:
            self._parsed.popitem(last=False)
        return found


@dataclass(frozen=True, slots=True)
class AutoReply:
    """A vacation reply that the script asked for and the RFC 5230 conditions allow; sent once the
    delivery is durable, if the vacation memory agrees (`claim_vacation_reply`)."""

    account_id: int
    recipient: str  # the original's envelope sender
    handle: str
    seconds: int
    message: bytes  # the whole reply, CRLF line endings


@dataclass(slots=True)
class Plan:
    """What one account's script decided for one message."""

    targets: list[MailboxTarget] = field(default_factory=list)  # copies in this account
    forwarded_local: list[MailboxTarget] = field(default_factory=list)  # redirects to local users
    forwarded_remote: list[str] = field(default_factory=list)  # redirects to remote addresses
    reply: AutoReply | None = None
    reject: Reject | None = None
    log: list[str] = field(default_factory=list)  # for the delivery's log line
    address: str = ""  # the account's address (its Delivered-To on a forwarded copy)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One local account receiving the message, as smtpd resolved it."""

    account_id: int
    address: str  # the account's own address
    rcpt: str  # the RCPT TO address that led here (maybe an alias or user+tag)
    target: MailboxTarget  # where the implicit keep goes (INBOX, or Junk under DMARC quarantine)


def forward_sender(original_sender: str) -> str:
    """The envelope sender of a message a Sieve `redirect` forwards to a remote address.

    The one place where it is chosen: for now the original sender, kept as it was (RFC 5228 §4.2).
    SRS (issue 14, next step) rewrites it here so that the final server's SPF check passes."""
    return original_sender


class SieveFilter:
    """Runs the active scripts at delivery. One per server (its cache is shared by sessions)."""

    def __init__(self, store: Store, hostname: str) -> None:
        self.store = store
        self.hostname = hostname
        self.cache = ScriptCache()

    async def plan(
        self,
        recipient: Recipient,
        message: bytes,
        header: Header | None,
        envelope_from: str,
        now: datetime,
    ) -> Plan:
        """The actions of `recipient`'s active script for `message` (the whole message as it will be
        stored; `header` its header section, already read), or the implicit keep without a script."""
        plan = Plan(address=recipient.address)
        scripts = {
            script.name: script for script in await self.store.list_sieve_scripts(recipient.account_id)
        }
        active = next((script for script in scripts.values() if script.active), None)
        if active is None:
            plan.targets.append(recipient.target)
            return plan
        try:
            parsed = self.cache.parsed(recipient.account_id, active)
        except SieveSyntaxError as exc:
            plan.targets.append(recipient.target)
            plan.log.append(f"script {active.name} does not parse ({exc}): implicit keep")
            return plan
        # The account's mailbox names: read before the run only when a `mailboxexists` test may ask
        # (the callback is synchronous), else at the first fileinto.
        mailboxes: set[str] | None = None
        if {"mailbox", "include"} & parsed.capabilities:
            mailboxes = await self._mailbox_names(recipient.account_id)

        def include(name: str, location: str) -> Script | None:
            # RFC 6609 §3.2: :personal names another script of the same account; there are no
            # :global scripts in Surat (an :optional include of one is skipped, others fail the run).
            found = scripts.get(name) if location == "personal" else None
            return self.cache.parsed(recipient.account_id, found) if found is not None else None

        context = MessageContext(message, envelope_from, recipient.rcpt, now, header)
        # The run is bounded by surat.sieve.limits (MAX_STEPS, MAX_MATCH_WORK: ~10-20 ms at worst).
        result = evaluate(
            parsed,
            context,
            include_resolver=include,
            mailbox_exists=mailboxes.__contains__ if mailboxes is not None else None,
        )
        plan.log.extend(result.log)
        for error in result.errors:
            log.warning(
                "sieve.runtime_error",
                extra=fields(account=recipient.address, script=active.name, error=error),
            )
        for action in result.actions:
            match action:
                case Keep():
                    self._add(plan, recipient, recipient.target.mailbox, action.flags)
                case FileInto():
                    if mailboxes is None:
                        mailboxes = await self._mailbox_names(recipient.account_id)
                    mailbox = await self._mailbox_for(plan, recipient, action, mailboxes)
                    self._add(plan, recipient, mailbox, action.flags)
                case Discard():
                    pass
                case Redirect():
                    await self._redirect(plan, recipient, action, context)
                case Vacation():
                    plan.reply = await self._vacation(plan, recipient, action, context)
                case Reject():
                    plan.reject = action
        return plan

    async def _mailbox_names(self, account_id: int) -> set[str]:
        return {mailbox.name for mailbox in await self.store.list_mailboxes(account_id)}

    @staticmethod
    def _add(plan: Plan, recipient: Recipient, mailbox: str, flags: Sequence[str]) -> None:
        target = MailboxTarget(recipient.account_id, mailbox, frozenset(flags) | recipient.target.flags)
        if all(existing.mailbox != mailbox for existing in plan.targets):
            plan.targets.append(target)

    async def _mailbox_for(
        self, plan: Plan, recipient: Recipient, action: FileInto, mailboxes: set[str]
    ) -> str:
        name = action.mailbox
        if name.upper() == "INBOX":
            return recipient.target.mailbox
        if name in mailboxes:
            return name
        if action.create:
            # RFC 5490 §3.2: :create makes the mailbox when it is missing.
            try:
                await self.store.create_mailbox(recipient.account_id, name)
            except AlreadyExists:
                pass  # made meanwhile by another delivery or an IMAP CREATE
            except InvalidName as exc:
                plan.log.append(f"fileinto {name!r}: {exc}; to {recipient.target.mailbox}")
                return recipient.target.mailbox
            mailboxes.add(name)
            return name
        # RFC 5228 §4.1: a missing mailbox is an error; we keep the message where the implicit keep
        # would put it, and say so on the log line.
        plan.log.append(f"fileinto {name!r}: no such mailbox; to {recipient.target.mailbox}")
        return recipient.target.mailbox

    async def _redirect(
        self, plan: Plan, recipient: Recipient, action: Redirect, context: MessageContext
    ) -> None:
        header = _header(context)
        # Loop prevention: a message that already went through this account (our Delivered-To, or
        # another MTA's) or through too many hops stays here instead (kept, so nothing is lost).
        delivered_to = {
            spec.lower() for value in header.values(b"delivered-to") for spec in _addr_specs(value)
        }
        hops = len(header.values(b"received"))
        if recipient.address in delivered_to or hops >= MAX_FORWARD_HOPS:
            why = "Delivered-To is this account" if recipient.address in delivered_to else f"{hops} hops"
            plan.log.append(f"redirect {action.address}: loop ({why}); kept instead")
            self._add(plan, recipient, recipient.target.mailbox, ())
            return
        domain = action.address.rpartition("@")[2]
        if await self.store.is_local_domain(domain):
            # A local user: delivered directly (to INBOX; their own script does not run again).
            resolution = await resolve_local(self.store, action.address, domain_is_local=True)
            if not resolution.found:
                plan.log.append(f"redirect {action.address}: no such local user; kept instead")
                self._add(plan, recipient, recipient.target.mailbox, ())
                return
            plan.forwarded_local.extend(resolution.local)
            plan.forwarded_remote.extend(resolution.remote)
        else:
            plan.forwarded_remote.append(action.address)

    async def _vacation(
        self, plan: Plan, recipient: Recipient, action: Vacation, context: MessageContext
    ) -> AutoReply | None:
        header = _header(context)
        sender = context.envelope_from
        refusal = _automatic_or_list(sender, header)
        if refusal is None:
            own = await owned_addresses(self.store, recipient.address)
            refusal = _own_or_not_addressed(sender, header, own, action.addresses)
        if refusal is not None:
            plan.log.append(f"vacation: no reply ({refusal})")
            return None
        return AutoReply(
            recipient.account_id,
            sender,
            action.handle,
            action.seconds,
            self._compose(recipient, action, header, sender, context.now),
        )

    def _compose(
        self, recipient: Recipient, action: Vacation, header: Header, sender: str, now: datetime
    ) -> bytes:
        """RFC 5230 §5 / RFC 3834 §3: the reply's fields."""
        original_subject = decode_encoded_words((header.first(b"subject") or b"").decode("utf-8", "replace"))
        subject = action.subject if action.subject is not None else f"Auto: {original_subject}".strip()
        author = action.from_address or recipient.address
        lines = [
            f"From: {_encoded(author)}",
            f"To: <{sender}>",
            f"Subject: {_encoded(subject)}",
            f"Date: {email.utils.format_datetime(now)}",
            f"Message-ID: <{secrets.token_hex(16)}@{self.hostname}>",
            "Auto-Submitted: auto-replied (vacation)",  # RFC 3834 §5, RFC 5230 §5
        ]
        message_id = (header.first(b"message-id") or b"").decode("ascii", "replace").strip()
        if message_id and len(message_id) <= MAX_REFERENCES:
            # RFC 5230 §5.2 / RFC 5322 §3.6.4: threads with the original; References keeps the
            # newest ids that fit in MAX_REFERENCES.
            chain = [*(header.first(b"references") or b"").decode("ascii", "replace").split(), message_id]
            while len(" ".join(chain)) > MAX_REFERENCES:
                chain.pop(0)
            lines += [f"In-Reply-To: {message_id}", f"References: {' '.join(chain)}"]
        lines.append("MIME-Version: 1.0")
        if action.mime:
            # RFC 5230 §4.8: the reason is a MIME entity, its own header fields first.
            body = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
            return ("\r\n".join(lines) + "\r\n" + body).encode("utf-8")
        lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        if not body.endswith("\r\n"):
            body += "\r\n"
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def _header(context: MessageContext) -> Header:
    assert context.header is not None  # the caller hands on the header read at the end of DATA
    return context.header


def _addr_specs(value: bytes) -> list[str]:
    return [
        f"{address.mailbox}@{address.host}"
        for address in parse_address_list(value)
        if address.mailbox is not None and address.host is not None
    ]


def _encoded(text: str) -> str:
    """RFC 2047 for a non-ASCII header value; ASCII as it is (one line: CR/LF removed)."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text if text.isascii() else EncodedHeader(text, "utf-8").encode()


def _automatic_or_list(sender: str, header: Header) -> str | None:
    """Why RFC 5230 §4.6/§5 forbid a vacation reply to this message (the checks that need no store
    read), or None."""
    if not sender:
        return "null sender"  # RFC 5230 §4.6: never to <>
    local = sender.lower().rpartition("@")[0]
    if local in _AUTOMATIC_LOCALPARTS or local.startswith("owner-") or local.endswith("-request"):
        return "automatic sender"
    auto = header.first(b"auto-submitted")
    if auto is not None and auto.split(b";")[0].strip().lower() != b"no":
        return "Auto-Submitted"  # RFC 3834 §2, RFC 5230 §5
    precedence = (header.first(b"precedence") or b"").strip().lower()
    if precedence in (b"bulk", b"list", b"junk"):
        return "Precedence"
    if any(key in header.keys for key in _LIST_FIELDS):
        return "mailing list"
    return None


def _own_or_not_addressed(
    sender: str, header: Header, own: set[str], extra_addresses: Sequence[str]
) -> str | None:
    """Why no reply goes, given the user's own addresses (the account and its aliases), or None."""
    lowered = sender.lower()
    if lowered in own or base_address(lowered) in own:
        return "own address"  # RFC 5230 §4.6
    addressed = {
        spec.lower()
        for key in _RECIPIENT_FIELDS
        for value in header.values(key)
        for spec in _addr_specs(value)
    }
    mine = own | {address.lower() for address in extra_addresses}
    if not any(address in mine or base_address(address) in mine for address in addressed):
        return "not addressed in To/Cc"  # RFC 5230 §4.5
    return None
