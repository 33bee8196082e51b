"""Connection-level commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE, ENABLE, ID, NAMESPACE,
COMPRESS, IDLE (RFC 9051 §6.1, §6.2, §6.3.1, §6.3.10, §6.3.13; RFC 5161, RFC 2971, RFC 4978, RFC 4959)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

from surat import __version__
from surat.imapd.compress import Deflate
from surat.imapd.errors import CommandError, Disconnect, UserError
from surat.imapd.state import Done, State
from surat.imapd.transport import tune_transport
from surat.log import fields
from surat.net.connection import ConnectionTimeout
from surat.proto import sasl
from surat.proto.imap import commands as c
from surat.proto.imap.reader import ContinuationLine, ParseError
from surat.proto.imap.writer import (
    Code,
    Status,
    capability,
    continuation,
    continuation_base64,
    enabled,
    quoted,
    tagged,
    untagged,
    untagged_status,
)
from surat.store.base import Change

if TYPE_CHECKING:
    from surat.imapd.session import Session

log = logging.getLogger(__name__)

__all__ = [
    "authenticate",
    "capability_cmd",
    "check",
    "compress",
    "enable",
    "id_cmd",
    "idle",
    "login",
    "logout",
    "namespace",
    "noop",
    "starttls",
]


async def capability_cmd(s: Session, cmd: c.Capability) -> Done:
    s.send(capability(s.capabilities()))
    return Done()


async def noop(s: Session, cmd: c.Noop) -> Done:
    return Done()  # the dispatcher sends pending changes first (RFC 9051 §6.1.2)


async def check(s: Session, cmd: c.Check) -> Done:
    return Done()  # every change is durable when its command completes: nothing to checkpoint


async def logout(s: Session, cmd: c.Logout) -> Done:
    s.send(untagged_status(Status.BYE, "logging out"))

    async def after() -> None:
        s.state = State.LOGOUT

    return Done(after=after)


async def starttls(s: Session, cmd: c.StartTLS) -> Done:
    if s.tls or not s.starttls_available:
        raise CommandError("TLS is already active" if s.tls else "STARTTLS is not available")
    if s.deflate is not None:
        # Compressed input read before the handshake would be inflated after it, as if it had come over
        # TLS. COMPRESS is refused before login (see ``compress``), so this only guards that rule.
        raise CommandError("STARTTLS is not allowed while COMPRESS is active")
    assert s.service.tls is not None
    context = s.service.tls.current  # the certificates of this moment (a reload swaps them)
    # RFC 9051 §6.2.1: stop reading before the tagged OK, so that nothing sent after STARTTLS is read
    # as plaintext; ``start_tls`` discards what was already read.
    s.conn.stop_reading()

    async def after() -> None:
        # RFC 9051 §6.2.1: whatever the client sent after STARTTLS in plaintext is discarded (a fresh reader),
        # and the capabilities are asked for again over TLS.
        s.reader = s._new_reader()
        try:
            await s.conn.start_tls(context)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            s.state = State.LOGOUT
            raise Disconnect from exc
        s.tls = True
        tune_transport(s.conn)

    return Done("begin TLS negotiation now", after=after)


async def login(s: Session, cmd: c.Login) -> Done:
    s.refuse_plaintext()
    await s.refuse_blocked()
    account = await s.check_password(cmd.username, cmd.password)
    if account is None:
        raise await s.login_failed(cmd.username, "LOGIN")
    return await s.logged_in(account, "LOGIN")


async def authenticate(s: Session, cmd: c.Authenticate) -> Done:
    s.refuse_plaintext()
    await s.refuse_blocked()
    name = cmd.mechanism.upper()
    mechanism = (
        sasl.server_mechanism(
            name, secret=s.service.scram_secret, scram_iterations=s.config.auth.scram_iterations
        )
        if name in ("PLAIN", "SCRAM-SHA-256")
        else None
    )
    if mechanism is None:
        raise UserError(f"unsupported mechanism {name}", Code.CANNOT)
    step = mechanism.start(cmd.initial_response)  # RFC 4959 SASL-IR: None when the client sent none
    while True:
        match step:
            case sasl.Challenge(data=data):
                step = mechanism.respond(await _client_response(s, data))
            case sasl.VerifyPassword(authcid=authcid, password=password):
                account = await s.check_password(authcid, password)
                step = mechanism.password_result(account is not None)
            case sasl.NeedScram(authcid=authcid):
                found = await s.store.get_credentials(authcid)
                step = mechanism.scram_credentials(found[1].scram_sha256 if found else None)
            case sasl.Success(authcid=authcid, final_data=final):
                # IMAP cannot carry server data with the OK; it goes as one more challenge, which the
                # client answers with an empty line (RFC 9051 §6.2.2).
                if final is not None and await _client_response(s, final) != b"":
                    raise await s.login_failed(authcid, name)
                account = await s.store.get_account(authcid)
                if account is None:
                    raise await s.login_failed(authcid, name)
                return await s.logged_in(account, "AUTHENTICATE")
            case sasl.Failure():
                raise await s.login_failed(None, name)


async def _client_response(s: Session, challenge: bytes) -> bytes:
    s.send(continuation_base64(challenge))
    await s.flush()
    line = await s.continuation_line()
    try:
        data = sasl.decode_client_response(line)
    except sasl.SASLSyntaxError:
        raise CommandError("invalid base64 in authentication response") from None
    if data is None:
        raise CommandError("authentication cancelled")  # RFC 9051 §6.2.2: "*" cancels with BAD
    return data


_ENABLE_NAMES = {
    "CONDSTORE": "CONDSTORE",
    "QRESYNC": "QRESYNC",
    "UTF8=ACCEPT": "UTF8=ACCEPT",
    "IMAP4REV2": "IMAP4rev2",
}


async def enable(s: Session, cmd: c.Enable) -> Done:
    newly = []
    for name in cmd.capabilities:
        spelled = _ENABLE_NAMES.get(name.upper())
        if spelled is None or name.upper() in s.enabled:
            continue  # RFC 5161 §3.1: unknown names are ignored
        s.enabled.add(name.upper())
        newly.append(spelled)
        if name.upper() == "QRESYNC":
            s.enable_condstore()  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
    s.send(enabled(newly))
    return Done()


async def id_cmd(s: Session, cmd: c.Id) -> Done:
    # RFC 2971 §3.3: the server's own identification; what the client sent is only logged.
    if cmd.params:
        client = {k.lower(): v for k, v in cmd.params}
        s_name = client.get("name") or "-"
        log.info("imap.client_id", extra=fields(client=s_name, client_version=client.get("version") or "-"))
    s.send(
        untagged(
            b"ID",
            b"("
            + quoted("name")
            + b" "
            + quoted("Surat")
            + b" "
            + quoted("version")
            + b" "
            + quoted(__version__)
            + b")",
        )
    )
    return Done()


async def namespace(s: Session, cmd: c.Namespace) -> Done:
    # RFC 2342 / RFC 9051 §6.3.10: one personal namespace, no other users' or shared ones.
    s.send(untagged(b"NAMESPACE", b'(("" "/")) NIL NIL'))
    return Done()


async def compress(s: Session, cmd: c.Compress) -> Done:
    # RFC 4978 §5: COMPRESS is a command-auth, valid only in the authenticated or selected state (the
    # dispatch table); before login it would let compressed plaintext cross a later STARTTLS.
    if s.deflate is not None:
        # RFC 4978 §3: BAD when COMPRESS is already active (NO [COMPRESSIONACTIVE] is for compression
        # by another layer, such as TLS, which Surat never negotiates).
        raise CommandError("COMPRESS is already active")
    if cmd.mechanism != "DEFLATE":
        raise CommandError(f"unknown compression mechanism {cmd.mechanism}")

    async def after() -> None:
        s.deflate = Deflate()  # RFC 4978 §3: compression starts right after the tagged OK

    return Done("DEFLATE active", after=after)


async def idle(s: Session, cmd: c.Idle) -> Done:
    """RFC 2177 / RFC 9051 §6.3.13: changes are sent as they happen until the client sends DONE."""
    s.send(continuation("idling"))
    await s.notify(allow_expunge=True)
    await s.flush()
    reader = s.reader
    reader.expect_line()
    read_task: asyncio.Task[bytes] | None = None
    change_task: asyncio.Task[Change] | None = None
    try:
        while True:
            event = reader.next_event()
            if isinstance(event, ContinuationLine):
                if event.line.strip().upper() != b"DONE":
                    raise CommandError("expected DONE")
                return Done("IDLE terminated")
            if isinstance(event, ParseError):
                s.send(tagged(event.tag, Status.BAD, event.message))
                await s.bye("line too long")
            if read_task is None:
                read_task = asyncio.ensure_future(s.read())
            if change_task is None and s.subscription is not None:
                change_task = asyncio.ensure_future(s.wait_change(s.subscription))
            waiting: set[asyncio.Future[Any]] = {read_task}
            if change_task is not None:
                waiting.add(change_task)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if change_task is not None and change_task in done:
                change = change_task.result()
                change_task = None
                await s.notify(allow_expunge=True, extra=[change])
                await s.flush()
            if read_task in done:
                finished, read_task = read_task, None
                try:
                    data = finished.result()
                except ConnectionTimeout as exc:
                    await s.bye(str(exc))
                if not data:
                    raise Disconnect
                reader.receive_data(data)
    finally:
        pending: list[asyncio.Future[Any]] = [t for t in (read_task, change_task) if t is not None]
        for task in pending:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await task
