"""The asyncio SMTP shell: MX and submission policy around the sans-IO engine.

One `_Session` per connection runs the loop: read, feed the engine, handle its events, write. The
engine owns syntax, order and limits; this module owns policy (who may send what to whom), SASL,
spooling and the hand-over to the store. A message is acknowledged only after `Store.deliver`
returned, i.e. after it is on stable storage (ARCHITECTURE.md decision 4).
"""

from __future__ import annotations

import asyncio
import enum
import io
import ipaddress
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from surat import metrics
from surat.apppasswords import authenticate_mail
from surat.authlimit import AuthLimiter, BlockPolicy, StoreAuthLimiter
from surat.config import Config
from surat.delivery.dkim import DkimError, SigningKeys
from surat.delivery.dsn import FULL_LIMIT, HEADER_LIMIT, Action, DsnReport, ReportedRecipient, Ret, build_dsn
from surat.delivery.filtering import Plan, Recipient, SieveFilter, forward_sender
from surat.delivery.local import owns, resolve_recipient
from surat.delivery.notify import submit_dsn, submit_from_null
from surat.dns.base import Resolver
from surat.log import connection_id, fields
from surat.message.address import mailboxes
from surat.message.headers import read_header
from surat.net.connection import OUTPUT_HIGH_WATER, Connection, ConnectionTimeout
from surat.net.deadline import SessionClock
from surat.net.tlscontexts import TlsContexts
from surat.proto import sasl
from surat.proto.smtp import replies as R
from surat.proto.smtp.address import MailParams, xtext_encode
from surat.proto.smtp.replies import Reply
from surat.proto.smtp.server import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    BdatStart,
    ChunkEnd,
    Close,
    DataStart,
    Event,
    Hello,
    MailFrom,
    MessageData,
    MessageEnd,
    Quit,
    RcptTo,
    Reset,
    ServerSettings,
    SMTPServerEngine,
    StartTLS,
    State,
)
from surat.sieve import Reject
from surat.smtpd.dnsbl import listing_zone
from surat.smtpd.errors import SMTPPolicyError, reply_for
from surat.smtpd.inbound import Disposition, InboundChecks, PendingSPF
from surat.smtpd.message import Spool, protocol_name, received_header, return_path
from surat.smtpd.ratelimit import SendingLimiter, StoreSendingLimiter
from surat.store.base import (
    Account,
    Credentials,
    Delivery,
    DeliveryResult,
    InvalidName,
    MailboxTarget,
    OutboundMessage,
    OutboundRecipient,
    Store,
)

log = logging.getLogger(__name__)

MAX_AUTH_FAILURES = 3  # per connection, then 421
TLS_HANDSHAKE_TIMEOUT = 30.0


class Role(enum.Enum):
    MX = "smtp"  # port 25: local recipients only, no AUTH
    SUBMISSION = "submission"  # port 587: STARTTLS, then AUTH required (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS, AUTH required (RFC 8314)


Handler = Callable[[Connection], Awaitable[None]]


PREGREET_TTL = 24 * 3600.0
PREGREET_CACHE_SIZE = 100_000


def _is_loopback(address: str) -> bool:
    """Local clients (scripts, a webmail on the same host) are not spambots: no greeting pause."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class SMTPService:
    """Shared by every SMTP connection of a server: config, store, TLS context, SCRAM secret."""

    def __init__(
        self,
        config: Config,
        store: Store,
        tls: TlsContexts | None,
        *,
        scram_secret: bytes | None = None,
        resolver: Resolver | None = None,
        trusted_arc_sealers: Sequence[str] = (),
        auth_limiter: AuthLimiter | None = None,
        sending_limiter: SendingLimiter | None = None,
        signing_keys: SigningKeys | None = None,
    ) -> None:
        """Without a `resolver` the MX runs no SPF/DKIM/DMARC checks and adds no Authentication-Results.
        `signing_keys` is shared with the queue runner (one parsed copy of each DKIM key)."""
        self.config = config
        self.store = store
        self.tls = tls  # read at each STARTTLS: a reload applies to the next one
        # Stable across restarts when the app passes its installation secret (see proto.sasl).
        self.scram_secret = scram_secret
        self.resolver = resolver
        self.pregreet_passed: dict[str, float] = {}  # peer address -> until when it need not wait
        self.inbound = (
            InboundChecks(resolver, config.hostname, trusted_sealers=trusted_arc_sealers)
            if resolver is not None and config.limits.mail_auth
            else None
        )
        # The app shares one auth limiter between SMTP, IMAP and POP3.
        self.auth_limiter: AuthLimiter = auth_limiter or StoreAuthLimiter(
            store, BlockPolicy.from_config(config.limits)
        )
        self.sending_limiter: SendingLimiter = sending_limiter or StoreSendingLimiter.from_config(
            store, config.limits
        )
        self.signing_keys = signing_keys or SigningKeys(store.keys)
        self.sieve = SieveFilter(store, config.hostname)  # one script cache for every session

    def settings(self, role: Role) -> ServerSettings:
        limits = self.config.limits
        submission = role is not Role.MX
        return ServerSettings(
            hostname=self.config.hostname,
            max_message_size=limits.message_size,
            max_recipients=limits.recipients,
            max_bad_commands=limits.bad_commands,
            max_junk_commands=limits.junk_commands,
            starttls=self.tls is not None and role is not Role.SUBMISSIONS,
            tls_active=role is Role.SUBMISSIONS,
            auth_mechanisms=sasl.MECHANISMS if submission else (),
            auth_requires_tls=True,
            auth_required=submission,
            requiretls=self.config.tls.requiretls,
        )

    def handler(self, role: str | Role) -> Handler:
        """A listener handler (surat.net.listener) for the role named as in [listen]."""
        resolved = Role(role)

        async def handle(conn: Connection) -> None:
            await self.handle(conn, resolved)

        return handle

    async def handle(self, conn: Connection, role: Role) -> None:
        await _Session(self, conn, role).run()


@dataclass
class _Transaction:
    sender: str  # "" for the null reverse-path
    params: MailParams
    recipients: list[str] = field(default_factory=list)
    local: dict[int, MailboxTarget] = field(default_factory=dict)
    rcpt_of: dict[int, str] = field(default_factory=dict)  # account id -> the first RCPT that led to it
    remote: dict[str, OutboundRecipient] = field(default_factory=dict)
    spool: Spool | None = None
    failure: Reply | None = None  # a local error while spooling, answered at the end
    size: int = 0  # of the spooled message, for the log line
    received: bytes = b""  # our Received: field
    spf: PendingSPF | None = None  # MX: started at MAIL FROM, awaited at the end of DATA
    auth_log: dict[str, str] = field(default_factory=dict)  # the checks' results, for the log line
    sieve_log: dict[str, str] = field(default_factory=dict)  # the Sieve actions taken, for the log line
    filtered_header: bytes = b""  # the header section the scripts saw, quoted by a rejection notice
    # Local recipients that asked for NOTIFY=SUCCESS: (address, ORCPT) for the "delivered" DSN.
    success_notices: list[tuple[str, str | None]] = field(default_factory=list)


class _Session:
    def __init__(self, service: SMTPService, conn: Connection, role: Role) -> None:
        self.service = service
        self.store = service.store
        self.config = service.config
        self.conn = conn
        self.role = role
        self.engine = SMTPServerEngine(service.settings(role))
        self.helo = ""
        self.user: str | None = None  # the account address, once authenticated
        self.txn: _Transaction | None = None
        self.transactions = 0
        self.sasl: sasl.Mechanism | None = None
        self.sasl_account: str | None = None
        self.sasl_success: sasl.Success | None = None
        self.auth_failures = 0
        self.auth_failures_counted: set[str] = set()  # user names whose failure the per-IP block has counted
        self.sasl_authcid: str | None = None  # the name the client tried, for the failure log
        self.unknown_recipients = 0

    # ----------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        engine = self.engine
        conn = self.conn
        started = time.monotonic()
        result = "quit"
        try:
            refused = await self._screen() if self.role is Role.MX else None
            if refused is not None:
                engine.send(refused[0])
                result = refused[1]
                return
            engine.send(engine.greeting())
            limits = self.config.limits
            # RFC 5321 §4.5.3.2.7: at least 5 minutes awaiting the next command; counted from the last
            # input the engine consumed, so a line that never ends times out too (surat.net.deadline).
            clock = SessionClock(limits.smtp_idle_timeout, limits.smtp_session_deadline)
            while True:
                event = engine.next_event()
                if event is NEED_DATA:
                    conn.write(engine.data_to_send())
                    await conn.drain()
                    try:
                        data = await conn.read(clock.before_read(engine.buffered))
                    except ConnectionTimeout:
                        if clock.deadline_passed:
                            engine.send(R.SESSION_TOO_LONG)
                            result = "deadline"
                        else:
                            engine.send(R.IDLE_TIMEOUT)
                            result = "timeout"
                        break
                    if not data:
                        result = "dropped"
                        break
                    engine.receive_data(data)
                    clock.fed(engine.buffered)
                    continue
                reply = await self._dispatch(event)
                if engine.awaiting_reply:
                    engine.respond(reply or R.LOCAL_ERROR)
                tls_wanted = isinstance(event, StartTLS) and engine.state is State.STARTTLS
                if tls_wanted and not await self._start_tls():
                    result = "tls_failed"
                    break
                if isinstance(event, Close):
                    result = "errors"
                if engine.closed:
                    break
                if engine.pending_output >= OUTPUT_HIGH_WATER:
                    # RFC 2920 pipelining: a client that sends commands and reads no replies is made
                    # to wait, not buffered for (each EHLO's reply is 20 times its command).
                    conn.write(engine.data_to_send())
                    await conn.drain()
        except asyncio.CancelledError:
            engine.send(R.SHUTTING_DOWN)
            result = "shutdown"
            raise
        finally:
            conn.write(engine.data_to_send())
            self._abort_transaction()
            tls = conn.tls
            log.info(
                "smtp.connection",
                extra=fields(
                    role=self.role.value,
                    peer=conn.peer_host,
                    tls=tls.version if tls else "no",
                    user=self.user or "-",
                    transactions=self.transactions,
                    result=result,
                    seconds=round(time.monotonic() - started, 3),
                ),
            )

    async def _screen(self) -> tuple[Reply, str] | None:
        """Port 25 before the greeting: the early-talker pause and DNSBL lookups, side by side."""
        zones = self.config.limits.dnsbl
        resolver = self.service.resolver
        peer = self.conn.peer_host
        lookup = None
        if zones and resolver is not None:
            lookup = asyncio.create_task(listing_zone(resolver, peer, zones), name="dnsbl")
        try:
            if await self._talks_before_greeting():
                return R.EARLY_TALKER, "early_talker"
            zone = await lookup if lookup is not None else None
        finally:
            if lookup is not None and not lookup.done():
                lookup.cancel()
        if zone is None:
            return None
        log.info("smtp.dnsbl_listed", extra=fields(peer=peer, zone=zone))
        # RFC 5321 §3.1: 554 instead of the greeting; the text names the list, as Postfix does
        return R.dnsbl_listed(peer, zone), "dnsbl"

    async def _talks_before_greeting(self) -> bool:
        """Pause before the greeting; a client that sends anything meanwhile does not wait for replies,
        as spam software often does not (Postfix's postscreen "pregreet" test)."""
        pause = self.config.limits.greet_pause
        peer = self.conn.peer_host
        if pause <= 0 or _is_loopback(peer) or self.service.pregreet_passed.get(peer, 0.0) > time.monotonic():
            return False
        try:
            data = await self.conn.read(pause)
        except ConnectionTimeout:
            # Like postscreen's cache: a client that waited once is not made to wait again for a
            # day, so a real MTA pays the pause once, not on every connection.
            passed = self.service.pregreet_passed
            if len(passed) >= PREGREET_CACHE_SIZE:
                passed.pop(next(iter(passed)))  # the oldest entry (dicts keep insertion order)
            passed.pop(peer, None)
            passed[peer] = time.monotonic() + PREGREET_TTL
            return False
        if data:
            log.info("smtp.early_talker", extra=fields(peer=self.conn.peer_host))
        return True  # data, or the client already went away

    async def _start_tls(self) -> bool:
        assert self.service.tls is not None  # the engine offers STARTTLS only with certificates
        context = self.service.tls.current
        self.conn.stop_reading()  # before the 220: nothing sent after STARTTLS is read as plaintext
        self.conn.write(self.engine.data_to_send())
        try:
            await self.conn.start_tls(context, TLS_HANDSHAKE_TIMEOUT)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("smtp.starttls_failed", extra=fields(peer=self.conn.peer_host, error=str(exc)))
            return False
        self.engine.tls_started()
        self.helo = ""
        self._abort_transaction()
        return True

    async def _dispatch(self, event: Event) -> Reply | None:
        try:
            return await self._handle(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the one place where errors become replies: smtpd.errors
            reply = reply_for(exc, type(event).__name__)
            if isinstance(event, MessageData | BdatStart) and self.txn is not None:
                self.txn.failure = self.txn.failure or reply  # answered at the end of the message
                return None
            if isinstance(event, MessageEnd | ChunkEnd):
                self._discard_spool()
            return reply

    async def _handle(self, event: Event) -> Reply | None:
        match event:
            case MessageData():
                txn = self.txn
                if txn is not None and txn.spool is not None and txn.failure is None:
                    await txn.spool.write(event.chunk)
                return None
            case Hello():
                if not valid_helo(event.domain):
                    return R.INVALID_HELO
                self.helo = event.domain
                self._abort_transaction()  # RFC 5321 §4.1.4
                return self.engine.ehlo_reply(event)
            case MailFrom():
                return await self._mail(event)
            case RcptTo():
                return await self._rcpt(event)
            case DataStart():
                self._open_spool()
                return R.START_DATA
            case BdatStart():
                if event.first:
                    self._open_spool()
                return None
            case ChunkEnd():
                problem = event.problem or (self.txn.failure if self.txn else None)
                if problem is not None:
                    self._discard_spool()
                    return problem
                return R.chunk_received(event.size)
            case MessageEnd():
                return await self._message_end(event.problem)
            case StartTLS():
                return R.READY_FOR_TLS
            case AuthStart():
                return await self._auth_start(event)
            case AuthResponse():
                return await self._auth_response(event)
            case Reset():
                self._abort_transaction()
                return None
            case Quit() | Close():
                return None

    # ----------------------------------------------------------------------------- envelope

    async def _mail(self, event: MailFrom) -> Reply:
        self._abort_transaction()
        sender = "" if event.path is None else str(event.path)
        if self.role is not Role.MX:
            # RFC 6409 §6.1: the MSA checks the submitter may use this address (issue 2: own
            # address or an alias pointing to it).
            assert self.user is not None  # the engine requires AUTH before MAIL here
            if not sender or not await owns(self.store, self.user, sender):
                return R.SENDER_NOT_OWNED
            if not await self.service.sending_limiter.may_send(self.user):
                log.warning("smtp.sending_limit", extra=fields(user=self.user, limit="messages"))
                return R.SENDING_LIMIT_MESSAGES
        self.txn = _Transaction(sender, event.params)
        inbound = self.service.inbound
        if self.role is Role.MX and inbound is not None:
            self.txn.spf = inbound.start_spf(self.conn.peer_host, self.helo, sender)
        return R.SENDER_OK

    async def _rcpt(self, event: RcptTo) -> Reply:
        txn = self.txn
        assert txn is not None  # the engine allows RCPT only after an accepted MAIL
        path = event.path
        if path.domain:
            address = str(path)
            domain = path.domain
        else:
            postmaster = await self._postmaster()
            if postmaster is None:
                return R.NO_SUCH_USER
            address, domain = postmaster, postmaster.rpartition("@")[2]
        notify, orcpt = event.params.notify, event.params.orcpt
        if self.user is not None and not await self.service.sending_limiter.may_add_recipients(
            self.user, len(txn.recipients) + 1
        ):
            log.warning("smtp.sending_limit", extra=fields(user=self.user, limit="recipients"))
            return R.SENDING_LIMIT_RECIPIENTS
        # A local domain's recipient: domain, aliases and account in one read (issue 12).
        resolution = None if domain.startswith("[") else await resolve_recipient(self.store, address)
        if resolution is not None:
            if not resolution.found:
                if resolution.loop:
                    log.error(
                        "smtp.alias_loop", extra=fields(rcpt=address, cycle=" -> ".join(resolution.loop))
                    )
                    return R.ALIAS_LOOP
                return self._unknown_recipient(address)
            for target in resolution.local:
                txn.local.setdefault(target.account_id, target)
                txn.rcpt_of.setdefault(target.account_id, address)
            if resolution.local and "SUCCESS" in notify:
                txn.success_notices.append((address, orcpt))
            for remote in resolution.remote:
                # Forwarded through an alias: the original recipient is what a DSN should name.
                original = orcpt or f"rfc822;{xtext_encode(address)}"
                txn.remote.setdefault(remote.lower(), OutboundRecipient(remote, notify, original))
        elif self.user is None:
            return R.RELAY_DENIED  # RFC 5321 §3.6.2: no open relay
        else:
            txn.remote.setdefault(address.lower(), OutboundRecipient(address, notify, orcpt))
        txn.recipients.append(address)
        return R.RECIPIENT_OK

    def _unknown_recipient(self, address: str) -> Reply:
        self.unknown_recipients += 1
        if self.role is Role.MX and self.unknown_recipients >= self.config.limits.unknown_recipients:
            # Directory harvesting: guessing which addresses exist. The 421 ends the session.
            log.warning(
                "smtp.harvesting",
                extra=fields(peer=self.conn.peer_host, unknown=self.unknown_recipients, last=address),
            )
            return R.HARVESTING
        return R.NO_SUCH_USER

    async def _postmaster(self) -> str | None:
        """RFC 5321 §4.1.1.3 <Postmaster>: our host name's domain, or the nearest parent we serve."""
        labels = self.config.hostname.split(".")
        for start in range(len(labels) - 1):
            domain = ".".join(labels[start:])
            if await self.store.is_local_domain(domain):
                return f"postmaster@{domain}"
        return None

    # ----------------------------------------------------------------------------- message

    def _open_spool(self) -> None:
        txn = self.txn
        assert txn is not None
        self._discard_spool()
        tls = self.conn.tls
        self.transactions += 1
        received = received_header(
            helo=self.helo,
            peer_ip=self.conn.peer_host,
            hostname=self.config.hostname,
            protocol=protocol_name(
                extended=self.engine.extended,
                tls=self.engine.tls,
                authenticated=self.user is not None,
                smtputf8=txn.params.smtputf8,
            ),
            transaction_id=f"{connection_id.get()}.{self.transactions}",
            tls=(tls.version, tls.cipher) if tls else None,
            auth_user=self.user,
            recipient=txn.recipients[0] if len(txn.recipients) == 1 else None,
            when=datetime.now(UTC).astimezone(),
        )
        txn.received = received
        txn.spool = Spool(
            self.store.blobs,
            return_path(txn.sender) + received,
            add_missing_for=self.config.hostname if self.role is not Role.MX else None,
        )

    async def _message_end(self, problem: Reply | None) -> Reply:
        txn = self.txn
        assert txn is not None
        try:
            reply = await self._deliver(txn, problem)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reply = reply_for(exc, "MessageEnd")
        self._discard_spool()
        if txn.spf is not None:  # the message failed before the checks ran
            txn.spf.cancel()
        log.info(
            "smtp.transaction",
            extra=fields(
                role=self.role.value,
                peer=self.conn.peer_host,
                user=self.user or "-",
                sender=txn.sender or "<>",
                rcpts=",".join(txn.recipients),
                size=txn.size,
                result=f"{reply.code} {reply.enhanced or ''}".strip(),
                **txn.auth_log,
                **txn.sieve_log,
            ),
        )
        metrics.smtp_transaction(self.role.value, reply.code)
        if reply.is_positive and self.user is not None:
            await self.service.sending_limiter.sent(self.user, len(txn.recipients))
        self.txn = None
        return reply

    async def _deliver(self, txn: _Transaction, problem: Reply | None) -> Reply:
        spool = txn.spool
        if problem is not None or txn.failure is not None or spool is None:
            return problem or txn.failure or R.LOCAL_ERROR
        await spool.finish()
        txn.size = spool.size
        if self.role is not Role.MX:
            assert self.user is not None
            refusal = await self._check_from(spool)
            if refusal is not None:
                return refusal
        if not txn.local and not txn.remote:
            raise SMTPPolicyError(R.NO_VALID_RECIPIENTS)
        if self.role is Role.MX and self.service.inbound is not None:
            disposition = await self._authenticate_message(txn, spool)
            if disposition is Disposition.REJECT:
                return R.DMARC_REJECT  # RFC 7489 §6.6.4 / §10.3: refuse in the SMTP session
            if disposition is Disposition.QUARANTINE:
                txn.local = {
                    key: MailboxTarget(target.account_id, "Junk", target.flags)
                    for key, target in txn.local.items()
                }
        local_targets = tuple(txn.local.values())
        plans = await self._filter(txn, spool) if txn.local else {}
        rejecting = [plan.reject for plan in plans.values() if plan.reject is not None]
        if rejecting and len(rejecting) == len(plans) and not txn.remote:
            # RFC 5429 §2.1/§2.2: refused while the session is open, with the (first) script's reason.
            return R.sieve_rejected(rejecting[0].reason)
        forwards = _forwarded_remote(txn, plans)
        if forwards:
            # Loop prevention: the copy that leaves carries the forwarding accounts' Delivered-To; a
            # message that comes back with it is kept, not forwarded again (surat.delivery.filtering).
            marks = "".join(f"Delivered-To: {address}\r\n" for address in _forwarding_accounts(plans))
            await spool.add_trace_fields(marks.encode("utf-8"))
            txn.size = spool.size
        if plans:
            local_targets = _filtered_targets(plans)
        relayed = dict(txn.remote)
        sender = txn.sender
        separate_forwards: dict[str, OutboundRecipient] = {}
        if forwards and relayed and forward_sender(txn.sender) != txn.sender:
            separate_forwards = forwards  # another envelope sender: a queue entry of its own
        elif forwards:
            # The same envelope sender: one queue entry, in the delivery's own transaction.
            sender = txn.sender if relayed else forward_sender(txn.sender)
            for address, recipient in forwards.items():
                relayed.setdefault(address, recipient)
        remote = None
        if relayed:
            signature = (
                await self._dkim_signature(txn, spool) if txn.remote and self.role is not Role.MX else None
            )
            remote = OutboundMessage(
                sender=sender,
                recipients=tuple(relayed.values()),
                envid=txn.params.envid,
                ret=txn.params.ret,
                smtputf8=txn.params.smtputf8,
                eight_bit=txn.params.body == "8BITMIME",
                authenticated_user=self.user,
                body_offset=len(return_path(txn.sender)),
                dkim_signature=signature,
                requiretls=txn.params.requiretls,  # RFC 8689 §4.1: the message is tagged
            )
        delivery = Delivery(
            staged=spool.staged,
            content=spool.content,
            size=spool.size,
            internal_date=datetime.now(UTC),
            local=local_targets,
            remote=remote,
            # the store computes info only for messages that come another way (APPEND, imports)
            info=await spool.message_info() if local_targets else None,
        )
        if separate_forwards:
            # Queued before the delivery: once the 250 goes, every copy is durable. A crash between
            # the two commits means no 250, so the client sends again (a duplicate, never a loss).
            await self._queue_forwards(txn, separate_forwards, await spool.stored())
        # From here the staged blob belongs to the store, whatever happens (even cancellation).
        txn.spool = None
        result = await self.store.deliver(delivery)
        metrics.deliveries("local", "delivered", len(txn.local))
        if plans:
            await self._after_filters(txn, plans, delivery.internal_date)
        if txn.success_notices and txn.sender and result.local:
            await self._notify_success(txn, delivery, result)
        if result.queue_id:
            return R.queued_as(result.queue_id)
        return R.QUEUED

    async def _filter(self, txn: _Transaction, spool: Spool) -> dict[int, Plan]:
        """Each local account's Sieve script, run on the message as it will be stored (issue 14).
        A failure of the filtering itself (not of a script: those are the evaluator's implicit keep)
        keeps the message where it would have gone without a script, and is logged."""
        content = await spool.stored()
        header = spool.stored_header() or read_header(content)
        txn.filtered_header = content[len(return_path(txn.sender)) : header.body_start]
        now = datetime.now(UTC).astimezone()  # scripts' `currentdate` reads the server's zone
        plans: dict[int, Plan] = {}
        for account_id, target in txn.local.items():
            account = await self.store.get_account_by_id(account_id)
            if account is None:
                plans[account_id] = Plan(targets=[target])  # deleted meanwhile: the store says so
                continue
            recipient = Recipient(
                account_id, account.address, txn.rcpt_of.get(account_id, account.address), target
            )
            try:
                plans[account_id] = await self.service.sieve.plan(recipient, content, header, txn.sender, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("smtp.sieve_failed", extra=fields(account=account.address))
                plans[account_id] = Plan(targets=[target], log=["filtering failed: implicit keep"])
            if plans[account_id].log:
                txn.sieve_log[f"sieve.{account.address}"] = "; ".join(plans[account_id].log)
        return plans

    async def _queue_forwards(
        self, txn: _Transaction, forwards: dict[str, OutboundRecipient], content: bytes
    ) -> None:
        """Redirected copies whose envelope sender differs from the transaction's (forward_sender)."""
        outbound = OutboundMessage(
            sender=forward_sender(txn.sender),
            recipients=tuple(forwards.values()),
            smtputf8=txn.params.smtputf8,
            eight_bit=txn.params.body == "8BITMIME",
            body_offset=len(return_path(txn.sender)),
        )
        await self.store.deliver(
            Delivery(None, len(content), datetime.now(UTC), remote=outbound, content=content)
        )

    async def _after_filters(self, txn: _Transaction, plans: dict[int, Plan], arrival: datetime) -> None:
        """Once the delivery is durable: vacation replies (RFC 5230, at most one per period per sender
        and handle, remembered in the store) and rejection notices for the recipients whose script
        rejected a message others accepted (RFC 5429 §2.1: a DSN, RFC 3464). Sent from <> before the
        250; a failure here is logged and loses no mail (the message itself is stored)."""
        now = datetime.now(UTC)
        for plan in plans.values():
            reply = plan.reply
            if reply is None:
                continue
            try:
                if not await self.store.claim_vacation_reply(
                    reply.account_id, reply.recipient.lower(), reply.handle, now.timestamp(), reply.seconds
                ):
                    txn.sieve_log[f"vacation.{reply.account_id}"] = "already replied in this period"
                    continue
                await submit_from_null(
                    self.store,
                    reply.recipient,
                    reply.message,
                    now,
                    smtputf8=not reply.recipient.isascii(),
                    eight_bit=not reply.message.isascii(),
                )
                txn.sieve_log[f"vacation.{reply.account_id}"] = f"replied to {reply.recipient}"
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("smtp.vacation_failed", extra=fields(to=reply.recipient))
        rejected = [
            (account_id, plan.reject) for account_id, plan in plans.items() if plan.reject is not None
        ]
        if rejected and txn.sender:
            await self._notify_rejected(txn, rejected, arrival)

    async def _notify_rejected(
        self, txn: _Transaction, rejected: list[tuple[int, Reject]], arrival: datetime
    ) -> None:
        now = datetime.now(UTC)
        try:
            report = self._dsn_report(
                txn,
                [
                    ReportedRecipient(
                        address=txn.rcpt_of.get(account_id, ""),
                        orcpt=None,
                        action=Action.FAILED,
                        status="5.7.1",
                        diagnostic=str(R.sieve_rejected(reject.reason)),
                        last_attempt=now,
                    )
                    for account_id, reject in rejected
                ],
                arrival,
            )
            dsn = build_dsn(report, io.BytesIO(txn.filtered_header), now=now)
            await submit_dsn(self.store, dsn, now, requiretls=txn.params.requiretls)
            txn.sieve_log["rejected"] = ",".join(
                txn.rcpt_of.get(account_id, "") for account_id, _ in rejected
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("smtp.reject_notice_failed")

    async def _check_from(self, spool: Spool) -> Reply | None:
        """Submission: the author must be the authenticated user (issue 2), read as every other part of
        Surat reads it (issue 11 item 7), so what we check is what IMAP shows and DKIM signs."""
        assert self.user is not None
        header = spool.header
        if header is None or header.truncated:
            return R.FROM_MISSING  # a header section too long to read: its From cannot be checked
        values = header.values(b"from")
        if len(values) != 1:
            # RFC 5322 §3.6: exactly one From field. With two, readers disagree on the author.
            return R.FROM_MISSING if not values else R.FROM_NOT_SINGLE
        author = mailboxes(values[0])
        if not author.clean:
            return R.FROM_UNREADABLE  # guessing the author of a field we cannot parse would let one forge it
        for address in author.addr_specs:
            if not await owns(self.store, self.user, address.lower()):
                return R.FROM_NOT_OWNED  # issue 2: 550 5.7.1 at the end of DATA
        return None

    async def _dkim_signature(self, txn: _Transaction, spool: Spool) -> bytes:
        """DKIM-Signature fields for the queue entry, made once here, before the 250 (issue 18):
        every attempt and every recipient domain reuses them, t= is the submission time, and a key
        rotated while the message waits does not re-sign it. b"" (sent unsigned, logged) when
        signing fails: the message is not refused for it."""
        # the sender was checked at MAIL to be the user's own address or alias: a local domain
        domain = txn.sender.rpartition("@")[2].lower()
        message = await spool.message()
        try:
            return await self.service.signing_keys.sign(
                message, domain, datetime.now(UTC), spool.sent_header()
            )
        except (DkimError, OSError):
            log.exception("smtp.dkim_failed", extra=fields(domain=domain))
            return b""

    def _dsn_report(
        self,
        txn: _Transaction,
        recipients: list[ReportedRecipient],
        arrival: datetime,
        *,
        ret: Ret | None = None,
    ) -> DsnReport:
        """A DSN about this transaction's message (RFC 3464), to its envelope sender."""
        return DsnReport(
            reporting_mta=self.config.hostname,
            sender=txn.sender,
            recipients=tuple(recipients),
            arrival_date=arrival,
            envid=txn.params.envid,
            ret=ret,
            smtputf8=txn.params.smtputf8,
        )

    async def _notify_success(self, txn: _Transaction, delivery: Delivery, result: DeliveryResult) -> None:
        """RFC 3461 §6.2.2: the final MTA reports a successful delivery when NOTIFY=SUCCESS asked for it.

        The message is already delivered and acknowledged next: a failure here is logged, never
        turned into an error reply."""
        now = datetime.now(UTC)
        try:
            report = self._dsn_report(
                txn,
                [
                    ReportedRecipient(
                        address=address,
                        orcpt=orcpt,
                        action=Action.DELIVERED,
                        status="2.0.0",
                        diagnostic="250 2.0.0 delivered to mailbox",
                        last_attempt=now,
                    )
                    for address, orcpt in txn.success_notices
                ],
                delivery.internal_date,
                # RFC 8689 §4.3: a report on a REQUIRETLS message quotes its header only
                ret=Ret.FULL
                if (txn.params.ret or "").upper() == "FULL" and not txn.params.requiretls
                else None,
            )
            # The stored copy starts with our Return-Path; the DSN quotes the message as received.
            skip = len(return_path(txn.sender))
            if delivery.content is not None:
                dsn = build_dsn(report, io.BytesIO(delivery.content[skip:]), now=now)
            else:
                _, mailbox_id, uid = result.local[0]
                (record,) = await self.store.get_messages(mailbox_id, [uid])
                # What build_dsn reads at most: FULL_LIMIT + 1 octets for RET=FULL, else the header.
                limit = FULL_LIMIT + 1 if report.ret is Ret.FULL else HEADER_LIMIT
                quoted = await self.store.blobs.read(record.blob_id, skip, limit)
                dsn = build_dsn(report, io.BytesIO(quoted), now=now)
            await submit_dsn(self.store, dsn, now, requiretls=txn.params.requiretls)
            log.info("smtp.success_dsn", extra=fields(to=dsn.recipient, recipients=len(txn.success_notices)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("smtp.success_dsn_failed")

    async def _authenticate_message(self, txn: _Transaction, spool: Spool) -> Disposition:
        """SPF/DKIM/ARC/DMARC; prepends Authentication-Results (ours only) to the spooled message."""
        inbound = self.service.inbound
        assert inbound is not None
        message = await spool.message()
        spf, txn.spf = txn.spf, None
        header = spool.sent_header()
        verdict = await inbound.evaluate(spf, message, header)
        txn.auth_log = verdict.log_fields
        if verdict.disposition is not Disposition.REJECT:
            # RFC 8601 §5: remove fields claiming our authserv-id, then add ours on top of the
            # message as received (under our own Received:, where Postfix puts milter results too)
            prefix = return_path(txn.sender) + txn.received + verdict.header
            cleaned = inbound.strip_forged(message)
            # a field removed: the header read at the end of DATA is no longer the message's
            kept_header = header if cleaned is message else None
            await spool.rewrite(prefix, cleaned, kept_header)
            txn.size = spool.size
        return verdict.disposition

    def _discard_spool(self) -> None:
        txn = self.txn
        if txn is not None and txn.spool is not None:
            txn.spool.discard()
            txn.spool = None

    def _abort_transaction(self) -> None:
        if self.txn is not None and self.txn.spool is not None:
            self._discard_spool()
        if self.txn is not None and self.txn.spf is not None:
            self.txn.spf.cancel()
        self.txn = None

    # ----------------------------------------------------------------------------- AUTH

    async def _auth_start(self, event: AuthStart) -> Reply:
        if await self.service.auth_limiter.retry_after(self.conn.peer_host) > 0:
            log.info("smtp.auth", extra=fields(peer=self.conn.peer_host, result="blocked"))
            metrics.auth_attempt(self.role.value, "blocked")
            return R.AUTH_BLOCKED
        self.sasl = sasl.server_mechanism(
            event.mechanism,
            secret=self.service.scram_secret,
            scram_iterations=self.service.config.auth.scram_iterations,
        )
        self.sasl_account = None
        self.sasl_authcid = None
        self.sasl_success = None
        if self.sasl is None:
            return R.UNKNOWN_MECHANISM
        return await self._auth_step(self.sasl.start(event.initial_response))

    async def _auth_response(self, event: AuthResponse) -> Reply:
        mechanism = self.sasl
        if event.data is None or mechanism is None:
            self.sasl = None
            return R.AUTH_CANCELLED  # RFC 4954 §4
        if self.sasl_success is not None:
            # The client's answer to our final SCRAM data must be empty (RFC 4954 §4).
            success, self.sasl_success = self.sasl_success, None
            if event.data == b"":
                return self._authenticated(success)
            return await self._auth_failed("non-empty answer to the final server data")
        return await self._auth_step(mechanism.respond(event.data))

    async def _auth_step(self, step: sasl.Step) -> Reply:
        mechanism = self.sasl
        assert mechanism is not None
        while True:
            match step:
                case sasl.Challenge():
                    return R.auth_challenge(step.data)
                case sasl.VerifyPassword():
                    self.sasl_authcid = step.authcid
                    account = await authenticate_mail(
                        self.store,
                        step.authcid,
                        step.password,
                        scram_iterations=self.service.config.auth.scram_iterations,
                    )
                    if account is not None:
                        self.sasl_account = account.address
                    step = mechanism.password_result(account is not None)
                case sasl.NeedScram():
                    self.sasl_authcid = step.authcid
                    found = await self._credentials(step.authcid)
                    if found is not None:
                        self.sasl_account = found[0].address
                    step = mechanism.scram_credentials(found[1].scram_sha256 if found else None)
                case sasl.Success():
                    if step.final_data is not None:
                        self.sasl_success = step
                        return R.auth_challenge(step.final_data)
                    return self._authenticated(step)
                case sasl.Failure():
                    return await self._auth_failed(step.reason)

    async def _credentials(self, authcid: str) -> tuple[Account, Credentials] | None:
        try:
            return await self.store.get_credentials(authcid)
        except InvalidName:
            return None

    def _authenticated(self, success: sasl.Success) -> Reply:
        self.user = self.sasl_account or success.authcid.lower()
        self.sasl = None
        log.info("smtp.auth", extra=fields(peer=self.conn.peer_host, user=self.user, result="ok"))
        metrics.auth_attempt(self.role.value, "ok")
        return R.AUTH_OK

    async def _auth_failed(self, reason: str) -> Reply:
        self.sasl = None
        self.auth_failures += 1
        metrics.auth_attempt(self.role.value, "failed")
        user = self.sasl_account or self.sasl_authcid
        log.info(
            "smtp.auth",
            extra=fields(peer=self.conn.peer_host, user=user or "-", result="failed", reason=reason),
        )
        counted = (user or "").lower()
        if counted not in self.auth_failures_counted:
            # A client that fails one password with PLAIN and then with LOGIN (Python's smtplib does)
            # is one guess, not two: the per-IP block counts a session's failures once per user name.
            # Repeated guessing in one session is bounded by MAX_AUTH_FAILURES instead.
            self.auth_failures_counted.add(counted)
            await self.service.auth_limiter.failure(self.conn.peer_host, user, self.role.value)
        # RFC 4954 §4 leaves the delay to us: slow down password guessing.
        await asyncio.sleep(self.config.limits.auth_failure_delay)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            return R.TOO_MANY_AUTH_FAILURES
        return R.AUTH_FAILED


_HELO_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def valid_helo(domain: str) -> bool:
    """RFC 5321 §4.1.1.1: EHLO/HELO take a Domain or an address-literal.

    Syntax only (§4.1.4: a server must not refuse a name because it does not match the client's
    address). Lenient where real clients are sloppy: a single label and "_" are accepted, and
    internationalized names are checked in their A-label form (RFC 6531 §3.3).
    """
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal[:5].lower() == "ipv6:":
            literal = literal[5:]
            try:
                ipaddress.IPv6Address(literal)
            except ValueError:
                return False
            return True
        try:
            ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    name = domain.removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    if not name or len(name) > 255:
        return False
    return all(_HELO_LABEL.fullmatch(label) for label in name.split("."))


def _forwarded_remote(txn: _Transaction, plans: dict[int, Plan]) -> dict[str, OutboundRecipient]:
    """The remote addresses the scripts redirect to, as queue recipients; ORCPT names the recipient
    whose script forwarded (RFC 3461 §4.2), for a DSN that comes back."""
    forwards: dict[str, OutboundRecipient] = {}
    for account_id, plan in plans.items():
        original = f"rfc822;{xtext_encode(txn.rcpt_of.get(account_id, ''))}"
        for address in plan.forwarded_remote:
            forwards.setdefault(address.lower(), OutboundRecipient(address, (), original))
    return forwards


def _forwarding_accounts(plans: dict[int, Plan]) -> list[str]:
    return [plan.address for plan in plans.values() if plan.forwarded_remote and plan.address]


def _filtered_targets(plans: dict[int, Plan]) -> tuple[MailboxTarget, ...]:
    """Every local copy the scripts asked for, one per (account, mailbox)."""
    targets: dict[tuple[int, str], MailboxTarget] = {}
    for plan in plans.values():
        for target in (*plan.targets, *plan.forwarded_local):
            targets.setdefault((target.account_id, target.mailbox), target)
    return tuple(targets.values())
