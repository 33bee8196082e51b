"""The asyncio SMTP shell: MX and submission policy around the sans-IO engine.

One `_Session` per connection runs the loop: read, feed the engine, handle its events, write. The
engine owns syntax, order and limits; this module owns policy (who may send what to whom), SASL,
spooling and the hand-over to the store. A message is acknowledged only after `Store.deliver`
returned, i.e. after it is on stable storage (ARCHITECTURE.md decision 4).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from surat.config import Config
from surat.delivery.local import owns, resolve
from surat.log import connection_id, fields
from surat.net.connection import Connection, ConnectionTimeout
from surat.passwords import verify_nonexistent, verify_password
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
from surat.smtpd.errors import SMTPPolicyError, reply_for
from surat.smtpd.message import Spool, protocol_name, received_header, return_path
from surat.store.base import (
    Account,
    Credentials,
    Delivery,
    InvalidName,
    MailboxTarget,
    OutboundMessage,
    OutboundRecipient,
    Store,
)

log = logging.getLogger(__name__)

MAX_AUTH_FAILURES = 3  # per connection, then 421
TLS_HANDSHAKE_TIMEOUT = 30.0
FROM_MISSING = Reply(550, "5.7.1", "Message has no usable From: header")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures")


class Role(enum.Enum):
    MX = "smtp"  # port 25: local recipients only, no AUTH
    SUBMISSION = "submission"  # port 587: STARTTLS, then AUTH required (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS, AUTH required (RFC 8314)


Handler = Callable[[Connection], Awaitable[None]]


class SMTPService:
    """Shared by every SMTP connection of a server: config, store, TLS context, SCRAM secret."""

    def __init__(
        self,
        config: Config,
        store: Store,
        tls_context: ssl.SSLContext | None,
        *,
        scram_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.tls_context = tls_context
        # Stable across restarts when the app passes its installation secret (see proto.sasl).
        self.scram_secret = scram_secret

    def settings(self, role: Role) -> ServerSettings:
        limits = self.config.limits
        submission = role is not Role.MX
        return ServerSettings(
            hostname=self.config.hostname,
            max_message_size=limits.message_size,
            max_recipients=limits.recipients,
            max_bad_commands=limits.bad_commands,
            starttls=self.tls_context is not None and role is not Role.SUBMISSIONS,
            tls_active=role is Role.SUBMISSIONS,
            auth_mechanisms=sasl.MECHANISMS if submission else (),
            auth_requires_tls=True,
            auth_required=submission,
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
    remote: dict[str, OutboundRecipient] = field(default_factory=dict)
    spool: Spool | None = None
    failure: Reply | None = None  # a local error while spooling, answered at the end
    size: int = 0  # of the spooled message, for the log line


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

    # ----------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        engine = self.engine
        conn = self.conn
        started = time.monotonic()
        result = "quit"
        engine.send(engine.greeting())
        try:
            while True:
                event = engine.next_event()
                if event is NEED_DATA:
                    conn.write(engine.data_to_send())
                    await conn.drain()
                    try:
                        data = await conn.read(self.config.limits.smtp_idle_timeout)
                    except ConnectionTimeout:
                        engine.send(R.IDLE_TIMEOUT)  # RFC 5321 §4.5.3.2.7
                        result = "timeout"
                        break
                    if not data:
                        result = "dropped"
                        break
                    engine.receive_data(data)
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

    async def _start_tls(self) -> bool:
        context = self.service.tls_context
        assert context is not None  # the engine offers STARTTLS only with a context
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
                    txn.spool.write(event.chunk)
                return None
            case Hello():
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
                return Reply(250, "2.0.0", f"{event.size} octets received")
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
        self.txn = _Transaction(sender, event.params)
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
        if not domain.startswith("[") and await self.store.is_local_domain(domain):
            resolution = await resolve(self.store, address)
            if not resolution.found:
                return R.NO_SUCH_USER
            for target in resolution.local:
                txn.local.setdefault(target.account_id, target)
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
        txn.spool = Spool(
            self.store.spool_dir,
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
            ),
        )
        self.txn = None
        return reply

    async def _deliver(self, txn: _Transaction, problem: Reply | None) -> Reply:
        spool = txn.spool
        if problem is not None or txn.failure is not None or spool is None:
            return problem or txn.failure or R.LOCAL_ERROR
        spool.finish()
        txn.size = spool.size
        if self.role is not Role.MX:
            assert self.user is not None
            addresses = spool.from_addresses()
            if not addresses:
                return FROM_MISSING
            for address in addresses:
                if not await owns(self.store, self.user, address):
                    return R.FROM_NOT_OWNED  # issue 2: 550 5.7.1 at the end of DATA
        if not txn.local and not txn.remote:
            raise SMTPPolicyError(R.NO_VALID_RECIPIENTS)
        remote = None
        if txn.remote:
            remote = OutboundMessage(
                sender=txn.sender,
                recipients=tuple(txn.remote.values()),
                envid=txn.params.envid,
                ret=txn.params.ret,
                smtputf8=txn.params.smtputf8,
                eight_bit=txn.params.body == "8BITMIME",
                authenticated_user=self.user,
                body_offset=len(return_path(txn.sender)),
            )
        delivery = Delivery(
            spool_path=spool.path,
            content=spool.content,
            size=spool.size,
            internal_date=datetime.now(UTC),
            local=tuple(txn.local.values()),
            remote=remote,
        )
        # From here the file belongs to the store, whatever happens (even cancellation).
        txn.spool = None
        result = await self.store.deliver(delivery)
        if result.queue_id:
            return Reply(250, "2.0.0", f"Message accepted, queued as {result.queue_id}")
        return R.QUEUED

    def _discard_spool(self) -> None:
        txn = self.txn
        if txn is not None and txn.spool is not None:
            txn.spool.discard()
            txn.spool = None

    def _abort_transaction(self) -> None:
        if self.txn is not None and self.txn.spool is not None:
            self._discard_spool()
        self.txn = None

    # ----------------------------------------------------------------------------- AUTH

    async def _auth_start(self, event: AuthStart) -> Reply:
        self.sasl = sasl.server_mechanism(event.mechanism, secret=self.service.scram_secret)
        self.sasl_account = None
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
                    found = await self._credentials(step.authcid)
                    loop = asyncio.get_running_loop()
                    if found is None:
                        ok = await loop.run_in_executor(None, verify_nonexistent, step.password)
                    else:
                        self.sasl_account = found[0].address
                        ok = await loop.run_in_executor(None, verify_password, found[1], step.password)
                    step = mechanism.password_result(ok)
                case sasl.NeedScram():
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
        return R.AUTH_OK

    async def _auth_failed(self, reason: str) -> Reply:
        self.sasl = None
        self.auth_failures += 1
        log.info(
            "smtp.auth",
            extra=fields(
                peer=self.conn.peer_host, user=self.sasl_account or "-", result="failed", reason=reason
            ),
        )
        # RFC 4954 §4 leaves the delay to us: slow down password guessing.
        await asyncio.sleep(self.config.limits.auth_failure_delay)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            return TOO_MANY_AUTH_FAILURES
        return R.AUTH_FAILED
