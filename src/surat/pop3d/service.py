"""The POP3 shell: an asyncio loop around `surat.proto.pop3`, serving each account's INBOX.

RFC 1939 semantics on top of the store:
- the maildrop is a snapshot taken at login (messages arriving later wait for the next session);
- DELE only marks; QUIT in the UPDATE state expunges the marked messages durably (the store's
  expunge commits before it returns and publishes the change, so IMAP sessions see it);
- a connection that drops or idles out without QUIT deletes nothing;
- one session per maildrop (`MaildropLocks`), a second login gets [IN-USE] (RFC 2449 §8.1.2);
- UIDL is "<uidvalidity>.<uid>": stable for the life of the message and unique in the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from surat import metrics
from surat.apppasswords import authenticate_mail
from surat.authlimit import AuthLimiter, BlockPolicy, StoreAuthLimiter
from surat.config import Config
from surat.log import fields
from surat.net.connection import OUTPUT_HIGH_WATER, Connection, ConnectionTimeout
from surat.net.deadline import SessionClock
from surat.net.listener import Handler
from surat.net.tlscontexts import TlsContexts
from surat.pop3d.locks import InProcessMaildropLocks, MaildropLease, MaildropLocks
from surat.proto import sasl
from surat.proto.pop3 import (
    NEED_DATA,
    Auth,
    AuthCancelled,
    AuthResponse,
    Capa,
    Close,
    Command,
    Dele,
    List,
    Noop,
    Pass,
    POP3ServerEngine,
    POP3Settings,
    Quit,
    RespCode,
    Retr,
    Rset,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    retr_size,
)
from surat.store.base import Account, Mailbox, NotFound, Store, StoreError

log = logging.getLogger(__name__)

# RFC 1939 §3: an inactivity autologout timer must be at least 10 minutes.
IDLE_TIMEOUT = 600.0
# Advertised strongest first; LOGIN is left out: POP3 clients use USER/PASS for that.
POP3_MECHANISMS = ("SCRAM-SHA-256", "PLAIN")


@dataclass(slots=True)
class _Message:
    uid: int
    blob_id: str
    stored: int  # octets in the store
    size: int  # as RETR sends them, see retr_size


class POP3Service:
    """Builds the connection handlers for the `pop3` (STLS) and `pop3s` (implicit TLS) listeners."""

    def __init__(
        self,
        config: Config,
        store: Store,
        tls: TlsContexts | None,
        *,
        locks: MaildropLocks | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        scram_secret: bytes | None = None,
        auth_limiter: AuthLimiter | None = None,
    ) -> None:
        self.config = config
        self.auth_limiter: AuthLimiter = auth_limiter or StoreAuthLimiter(
            store, BlockPolicy.from_config(config.limits)
        )
        self.store = store
        self.tls = tls  # read at each STARTTLS: a reload applies to the next one
        self.locks: MaildropLocks = locks if locks is not None else InProcessMaildropLocks()
        self.idle_timeout = idle_timeout
        self.scram_secret = scram_secret

    def handler(self, role: str) -> Handler:
        if role not in ("pop3", "pop3s"):
            raise ValueError(f"not a POP3 role: {role}")
        implicit = role == "pop3s"

        async def handle(conn: Connection) -> None:
            await POP3Session(self, conn, implicit_tls=implicit).run()

        return handle


class POP3Session:
    def __init__(self, service: POP3Service, conn: Connection, implicit_tls: bool) -> None:
        self.service = service
        self.store = service.store
        self.conn = conn
        self.engine = POP3ServerEngine(
            POP3Settings(
                implicit_tls=implicit_tls,
                stls_available=not implicit_tls and service.tls is not None,
                sasl_mechanisms=POP3_MECHANISMS,
                max_errors=service.config.limits.bad_commands,
                max_junk_commands=service.config.limits.junk_commands,
            )
        )
        self._mechanism: sasl.Mechanism | None = None
        self._auth_success: sasl.Success | None = None  # sent its final data, awaiting ""
        self._account: Account | None = None
        self._lease: MaildropLease | None = None
        self._mailbox: Mailbox | None = None
        self._messages: list[_Message] = []
        self._deleted: set[int] = set()  # message numbers, 1-based
        self._failures = 0

    # ----------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        log.info("pop3.connect", extra=fields(peer=self.conn.peer_host, role=self.conn.role))
        try:
            self.engine.greet("Surat POP3 server ready")
            await self._serve()
        finally:
            if self._lease is not None:
                await self._lease.release()

    def _flush(self) -> None:
        self.conn.write(self.engine.data_to_send())

    async def _serve(self) -> None:
        engine = self.engine
        # RFC 1939 §3: the autologout timer; it restarts when a command completes, not at every octet
        # (surat.net.deadline), and the session ends at its deadline however active.
        clock = SessionClock(self.service.idle_timeout, self.service.config.limits.pop3_session_deadline)
        while True:
            self._flush()
            await self.conn.drain()
            try:
                data = await self.conn.read(clock.before_read(engine.buffered_octets))
            except ConnectionTimeout:
                # Closes without entering UPDATE: nothing marked is deleted.
                if clock.deadline_passed:
                    engine.shutdown("session time limit reached", RespCode.SYS_TEMP)
                    self._flush()
                    log.info("pop3.deadline", extra=fields(user=self._user_for_log()))
                else:
                    log.info("pop3.timeout", extra=fields(user=self._user_for_log()))
                return
            if not data:
                log.info("pop3.disconnect", extra=fields(user=self._user_for_log(), state=engine.state.value))
                return
            engine.receive_data(data)
            clock.fed(engine.buffered_octets)
            while True:
                event = engine.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Close):
                    self._flush()
                    log.info("pop3.close", extra=fields(user=self._user_for_log(), reason=event.reason))
                    return
                await self._handle(event)
                if engine.tls_pending and not await self._start_tls():
                    return
                if engine.pending_output >= OUTPUT_HIGH_WATER:
                    # Pipelined RETRs of a message smaller than a read used to pile up here without
                    # bound (4 000 x 61 KB = 244 MB); wait for the client to read instead.
                    self._flush()
                    await self.conn.drain()

    async def _start_tls(self) -> bool:
        assert self.service.tls is not None
        context = self.service.tls.current
        self.conn.stop_reading()  # before the +OK: nothing sent after STLS is read as plaintext (RFC 2595 §4)
        self._flush()
        try:
            await self.conn.start_tls(context)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("pop3.tls_failed", extra=fields(reason=str(exc)))
            return False
        self.engine.tls_started()
        return True

    def _user_for_log(self) -> str:
        return self._account.address if self._account is not None else "-"

    # ----------------------------------------------------------------------------- commands

    async def _handle(self, event: Command) -> None:
        engine = self.engine
        match event:
            case User():
                # No lookup here: USER must not reveal which accounts exist.
                engine.ok()
            case Pass() | Auth() if await self._auth_blocked():
                pass
            case Pass(user=user, password=password):
                account = await self._check_password(user, password)
                if account is None:
                    await self._login_failed(user)
                else:
                    await self._login(account, "USER")
            case Auth(mechanism=name, initial_response=initial):
                mechanism = sasl.server_mechanism(
                    name,
                    secret=self.service.scram_secret,
                    scram_iterations=self.service.config.auth.scram_iterations,
                )
                if mechanism is None:  # the engine only lets configured mechanisms through
                    engine.err("unsupported authentication mechanism")
                    return
                self._mechanism = mechanism
                self._auth_success = None
                await self._sasl_step(mechanism.start(initial))
            case AuthResponse(data=data):
                await self._auth_response(data)
            case AuthCancelled(reason=reason):
                self._mechanism = None
                self._auth_success = None
                engine.err(reason)
            case Stls():
                engine.ok("Begin TLS negotiation")
            case Capa():
                engine.capabilities()
            case Utf8():
                engine.ok("UTF8 enabled")
            case Quit():
                await self._quit()
            case _:
                await self._transaction(event)

    async def _transaction(self, event: Command) -> None:
        engine = self.engine
        match event:
            case Stat():
                count, octets = self._totals()
                engine.stat(count, octets)
            case List(msg=None):
                engine.scan_listing((n, m.size) for n, m in self._live())
            case Uidl(msg=None):
                engine.unique_id_listing((n, self._uid(m)) for n, m in self._live())
            case List(msg=int(n)) | Uidl(msg=int(n)) | Retr(msg=n) | Top(msg=n) | Dele(msg=n) if (
                self._get(n) is None
            ):
                # RFC 1939 §5: a message marked deleted may not be referenced.
                engine.err("message already deleted" if n in self._deleted else "no such message")
            case List(msg=int(n)):
                engine.scan(n, self._messages[n - 1].size)
            case Uidl(msg=int(n)):
                engine.unique_id(n, self._uid(self._messages[n - 1]))
            case Retr(msg=n) | Top(msg=n):
                await self._send_message(self._messages[n - 1])
            case Dele(msg=n):
                self._deleted.add(n)
                engine.ok(f"message {n} deleted")
            case Rset():
                self._deleted.clear()
                count, octets = self._totals()
                engine.ok(f"maildrop has {count} messages ({octets} octets)")
            case Noop():
                engine.ok()
            case _:
                raise AssertionError(f"unexpected POP3 event {event!r}")

    # ----------------------------------------------------------------------------- authentication

    async def _check_password(self, address: str, password: str) -> Account | None:
        return await authenticate_mail(
            self.store, address, password, scram_iterations=self.service.config.auth.scram_iterations
        )

    async def _sasl_step(self, step: sasl.Step) -> None:
        mechanism = self._mechanism
        assert mechanism is not None
        while True:
            match step:
                case sasl.Challenge(data=data):
                    self.engine.auth_challenge(data)
                    return
                case sasl.VerifyPassword(authcid=authcid, password=password):
                    account = await self._check_password(authcid, password)
                    step = mechanism.password_result(account is not None)
                case sasl.NeedScram(authcid=authcid):
                    found = await self.store.get_credentials(authcid)
                    step = mechanism.scram_credentials(found[1].scram_sha256 if found else None)
                case sasl.Success(final_data=final) if final is not None:
                    # RFC 5034 §4: additional data with success goes out as one more challenge;
                    # the client answers with an empty line.
                    self._auth_success = step
                    self.engine.auth_challenge(final)
                    return
                case sasl.Success(authcid=authcid):
                    await self._sasl_success(authcid)
                    return
                case sasl.Failure(reason=reason):
                    self._mechanism = None
                    log.info("pop3.auth_failed", extra=fields(mechanism=mechanism.name, reason=reason))
                    await self._login_failed(None)
                    return

    async def _auth_response(self, data: bytes) -> None:
        mechanism = self._mechanism
        success = self._auth_success
        if success is not None:
            self._auth_success = None
            if data == b"":
                await self._sasl_success(success.authcid)
            else:
                self._mechanism = None
                await self._login_failed(success.authcid)
            return
        if mechanism is None:  # cannot happen: the engine only sends responses during AUTH
            self.engine.err("no authentication in progress")
            return
        try:
            step = mechanism.respond(data)
        except sasl.SASLStateError:
            step = sasl.Failure("mechanism out of step")
        await self._sasl_step(step)

    async def _sasl_success(self, authcid: str) -> None:
        self._mechanism = None
        account = await self.store.get_account(authcid)
        if account is None:
            await self._login_failed(authcid)
            return
        await self._login(account, "AUTH")

    async def _auth_blocked(self) -> bool:
        """Too many failures from this address (surat.authlimit): refuse without checking."""
        if await self.service.auth_limiter.retry_after(self.conn.peer_host) <= 0:
            return False
        metrics.auth_attempt("pop3", "blocked")
        self.engine.login_failed("too many failed logins from your address, try later", RespCode.SYS_TEMP)
        return True

    async def _login_failed(self, user: str | None) -> None:
        metrics.auth_attempt("pop3", "failed")
        await self.service.auth_limiter.failure(self.conn.peer_host, user, "pop3")
        self._failures += 1
        log.info("pop3.login_failed", extra=fields(user=user or "-", failures=self._failures))
        # Slow down guessing: the delay grows with each failure on this connection (and the
        # engine's error budget closes the connection after a few).
        delay = self.service.config.limits.auth_failure_delay * min(self._failures, 5)
        await asyncio.sleep(delay)
        self.engine.login_failed()

    async def _login(self, account: Account, method: str) -> None:
        metrics.auth_attempt("pop3", "ok")  # the credentials are right (a busy maildrop is another matter)
        engine = self.engine
        mailbox = await self.store.get_mailbox(account.id, "INBOX")
        if mailbox is None:
            engine.err("no INBOX for this account", RespCode.SYS_PERM)
            return
        try:
            lease = await self.service.locks.acquire(account.id)
        except StoreError as exc:  # the lock's database connection cannot be made
            log.warning("pop3.lock_unavailable", extra=fields(user=account.address, error=str(exc)))
            engine.err("maildrop cannot be locked now, try again later", RespCode.SYS_TEMP)
            return
        if lease is None:
            log.info("pop3.in_use", extra=fields(user=account.address))
            engine.err("maildrop is in use by another session", RespCode.IN_USE)
            return
        try:
            # One indexed query; no message file is read (the store recorded at delivery whether
            # each message ends with CRLF, which the sizes depend on).
            messages = [
                _Message(b.uid, b.blob_id, b.size, retr_size(b.size, b.ends_with_crlf))
                for b in await self.store.list_message_blobs(mailbox.id)
            ]
        except BaseException:
            await lease.release()
            raise
        self._lease = lease
        lease.on_lost(self._maildrop_lock_lost)
        self._account = account
        self._mailbox = mailbox
        self._messages = messages
        count, octets = self._totals()
        log.info("pop3.login", extra=fields(user=account.address, method=method, messages=count))
        engine.ok(f"maildrop has {count} messages ({octets} octets)")

    def _maildrop_lock_lost(self) -> None:
        """The maildrop lock went away under this session (its database connection failed): another
        session, on any node, may lock the maildrop now. RFC 1939 §8 allows one session per maildrop,
        so this one ends, without entering UPDATE: nothing marked is deleted."""
        log.warning("pop3.lock_lost", extra=fields(user=self._user_for_log()))
        self.conn.writer.close()  # the pending read returns end of stream; the loop ends the session

    # ----------------------------------------------------------------------------- the maildrop

    def _live(self) -> list[tuple[int, _Message]]:
        return [(n, m) for n, m in enumerate(self._messages, 1) if n not in self._deleted]

    def _totals(self) -> tuple[int, int]:
        live = self._live()
        return len(live), sum(m.size for _, m in live)

    def _get(self, n: int) -> _Message | None:
        if 1 <= n <= len(self._messages) and n not in self._deleted:
            return self._messages[n - 1]
        return None

    def _uid(self, message: _Message) -> str:
        assert self._mailbox is not None
        return f"{self._mailbox.uidvalidity}.{message.uid}"

    async def _send_message(self, message: _Message) -> None:
        engine = self.engine
        try:
            reader = await self.store.blobs.open(message.blob_id)
        except (OSError, NotFound):
            # expunged by IMAP since the snapshot
            engine.err("message is no longer available")
            return
        with contextlib.closing(reader):
            engine.message_start(f"{message.size} octets")
            # The store's chunks are bounded (STREAM_CHUNK of the file backend, read from the page
            # cache in the common case); writing each chunk then draining keeps memory bounded. The
            # status line, the message and the terminator of a message that fits in one chunk
            # leave in one write (one TLS record, one syscall).
            sent = 0
            async for chunk in reader.stream(0, message.stored):
                sent += len(chunk)
                if not engine.message_data(chunk) or sent >= message.stored:
                    break
                self._flush()
                await self.conn.drain()
            engine.message_end()

    async def _quit(self) -> None:
        engine = self.engine
        if engine.state is not State.UPDATE:
            engine.ok("bye")
            return
        # RFC 1939 §6: in UPDATE, remove the messages marked deleted, then reply.
        assert self._mailbox is not None
        assert self._lease is not None
        if self._deleted and not await self._lease.held():
            # §8: deletions only under the exclusive lock; lost, another session may be reading.
            log.warning("pop3.lock_lost", extra=fields(user=self._user_for_log()))
            engine.err("maildrop lock lost, nothing deleted", RespCode.SYS_TEMP)
            return
        uids = [self._messages[n - 1].uid for n in sorted(self._deleted)]
        try:
            # Committed is durable (RFC 1939 §6): the reply need not wait for the files to be
            # unlinked, which costs ~0.1 ms each on ext4 (100 ms for a 1 000-message maildrop).
            removed = (
                await self.store.expunge(self._mailbox.id, uids, files_in_background=True) if uids else []
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pop3.expunge_failed", extra=fields(user=self._user_for_log()))
            engine.err("some deleted messages not removed", RespCode.SYS_TEMP)
            return
        log.info("pop3.quit", extra=fields(user=self._user_for_log(), deleted=len(removed)))
        left = len(self._messages) - len(self._deleted)
        engine.ok(f"bye ({left} messages left)")


def pop3_handlers(config: Config, store: Store, tls: TlsContexts | None) -> dict[str, Callable[[], Handler]]:
    """The handler factories for app.py, by listener role."""
    service = POP3Service(config, store, tls)
    return {"pop3": lambda: service.handler("pop3"), "pop3s": lambda: service.handler("pop3s")}
