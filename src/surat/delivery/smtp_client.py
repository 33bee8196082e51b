"""The asyncio shell around the sans-IO SMTP client engine.

`Session` is one connection carrying any number of transactions (the queue keeps idle ones for
reuse); `send_transaction` connects to one target, runs one transaction and QUITs. Both run the
engine's loop (see the module docstring of `surat.proto.smtp.client`) and answer with a `SessionOutcome`: per-recipient results when a
transaction took place, else the reason the session failed. Nothing here raises for network
trouble; every failure becomes a locally generated reply the queue can record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace

from surat.delivery.mx import Target
from surat.delivery.tlspolicy import (
    STARTTLS_NOT_SUPPORTED,
    VALIDATION_FAILURE,
    classify_tls_error,
    describe_tls_error,
)
from surat.log import fields
from surat.proto.smtp import replies as R
from surat.proto.smtp.client import (
    NEED_DATA,
    ClientSettings,
    Closed,
    Envelope,
    Phase,
    Ready,
    RecipientResult,
    SendMessage,
    SessionFailed,
    SMTPClientEngine,
    StartTLS,
    TransactionDone,
)
from surat.proto.smtp.replies import Reply

log = logging.getLogger(__name__)

# Checks the server's certificate (DER) after the handshake: None if accepted, else the reason.
TlsCheck = Callable[[bytes], str | None]

READ_SIZE = 65536
WRITE_CHUNK = 256 * 1024  # message text is written in pieces so each gets the data-block timeout


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    target: Target
    results: tuple[RecipientResult, ...] | None  # None: no transaction (see `failure`)
    failure: Reply | None  # why there was no transaction (connect, greeting, EHLO, TLS, AUTH...)
    tls: bool
    tls_failed: bool = False  # the STARTTLS handshake failed: the caller may retry without TLS
    dsn_passed: bool = False  # the peer took NOTIFY/ORCPT: it sends the DSNs from here on
    # Why TLS did not come up, as an RFC 8460 §4.3 result type (surat.delivery.tlspolicy), when the
    # session failed for it: the handshake (or certificate check) failed, or STARTTLS was missing or
    # refused while TLS was required. None otherwise.
    tls_failure: str | None = None
    # This end's address of the connection (TLS-RPT's sending-mta-ip, RFC 8460 §4.4); None before
    # a connection was made.
    local_address: str | None = None

    @property
    def describe(self) -> str:
        return f"{self.target.host}[{self.target.address}]:{self.target.port}"


def connect_failure(target: Target, exc: BaseException) -> Reply:
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return R.cannot_connect(f"{target.host}[{target.address}]:{target.port}", text)


async def send_transaction(
    target: Target,
    envelope: Envelope,
    message: bytes,
    settings: ClientSettings,
    *,
    tls_context: ssl.SSLContext | None,
    connect_timeout: float,
    implicit_tls: bool = False,
) -> SessionOutcome:
    """Deliver `message` to the recipients of `envelope` through one SMTP session with `target`.

    `implicit_tls`: TLS from the first byte (port 465, RFC 8314), with `tls_context`."""
    session = Session(
        target, settings, tls_context=tls_context, connect_timeout=connect_timeout, implicit_tls=implicit_tls
    )
    try:
        failure = await session.open()
        if failure is not None:
            return session.failed(failure)
        return await session.send(envelope, message)
    finally:
        await session.close()


class Session:
    """One SMTP connection that carries any number of transactions, one after the other.

    RFC 5321 §3.3: after a completed transaction the client may start the next with MAIL (the
    engine sends RSET first when one is needed), so several queue entries for one destination
    share the connection setup (TCP, greeting, EHLO, STARTTLS) as Postfix's connection cache does.
    `open()` runs to the first Ready, `send()` runs one transaction, `close()` QUITs.
    """

    def __init__(
        self,
        target: Target,
        settings: ClientSettings,
        *,
        tls_context: ssl.SSLContext | None,
        connect_timeout: float,
        implicit_tls: bool = False,
        tls_check: TlsCheck | None = None,
    ) -> None:
        """`tls_check`: called with the server's certificate (DER) once STARTTLS is up; a reason
        (str) fails the session as a failed handshake would (DANE, RFC 7672 §3)."""
        if tls_context is None:
            settings = replace(settings, starttls=False)
        self.target = target
        self.settings = settings
        self.tls_context = tls_context
        self.connect_timeout = connect_timeout
        self.implicit_tls = implicit_tls
        self.tls_check = tls_check
        self.engine = SMTPClientEngine(settings)
        self.transactions = 0  # completed with the peer's replies
        self.tls_failed = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._failure: Reply | None = None
        self._results: tuple[RecipientResult, ...] | None = None
        self._dsn_passed = False
        self._received = 0  # bytes read from the peer since the current transaction began
        self._tls_failure: str | None = None
        self.local_address: str | None = None

    @property
    def usable(self) -> bool:
        """Ready for another transaction: set up, not closed by either side, nothing buffered."""
        reader, writer = self._reader, self._writer
        return (
            reader is not None
            and writer is not None
            and not self.engine.closed
            and self.engine.phase is Phase.READY
            and not writer.is_closing()
            and not reader.at_eof()
        )

    @property
    def idle_drop(self) -> bool:
        """The last transaction failed before the peer said anything: a connection that went stale
        while idle (peer timeout, 421 on close). The message cannot have been accepted, so the
        caller may send it again over a new connection."""
        if self._received or not self.engine.closed:
            return False
        return self._results is None or not any(r.remote for r in self._results)

    def failed(self, failure: Reply) -> SessionOutcome:
        return SessionOutcome(
            self.target,
            None,
            failure,
            tls=self.engine.tls,
            tls_failed=self.tls_failed,
            tls_failure=self._tls_failure,
            local_address=self.local_address,
        )

    async def open(self) -> Reply | None:
        """Connect and run the session up to the first Ready; the failure reply, or None."""
        target = self.target
        try:
            if self.implicit_tls:
                assert self.tls_context is not None
                connection = asyncio.open_connection(
                    target.address, target.port, ssl=self.tls_context, server_hostname=target.host
                )
            else:
                connection = asyncio.open_connection(target.address, target.port)
            self._reader, self._writer = await asyncio.wait_for(connection, self.connect_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return connect_failure(target, exc)
        sockname = self._writer.get_extra_info("sockname") if self._writer is not None else None
        self.local_address = str(sockname[0]) if isinstance(sockname, tuple) and sockname else None
        await self._pump(None, b"")
        if self.engine.phase is Phase.READY and not self.engine.closed:
            return None
        return self._failure or R.CLOSED_BEFORE_TRANSACTION

    async def send(self, envelope: Envelope, message: bytes) -> SessionOutcome:
        """One transaction on an open session (after `open()` returned None, or a previous send)."""
        self._results = None
        self._failure = None
        self._dsn_passed = False
        self._received = 0
        if self.usable:
            self.engine.send_mail(envelope)
            await self._pump(envelope, message)
        if self._results is None and self._failure is None:
            self._failure = R.CLOSED_BEFORE_TRANSACTION
        if self._results is not None and self._received:
            self.transactions += 1
        return SessionOutcome(
            self.target,
            self._results,
            None if self._results is not None else self._failure,
            tls=self.engine.tls,
            tls_failed=self.tls_failed,
            dsn_passed=self._dsn_passed,
            tls_failure=self._tls_failure,
            local_address=self.local_address,
        )

    async def close(self, quit_timeout: float | None = None) -> None:
        """QUIT when the session is still up, then close the socket. `quit_timeout` bounds the wait
        for the 221 below the engine's own QUIT timeout (closing idle sessions, shutting down)."""
        writer = self._writer
        if writer is None:
            return
        try:
            if self.usable:
                self.engine.quit()
                async with asyncio.timeout(quit_timeout):
                    await self._pump(None, b"")
        except (OSError, TimeoutError):
            pass
        finally:
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _pump(self, envelope: Envelope | None, message: bytes) -> None:
        """Run the engine until it is Ready (no `envelope`), a transaction is done, or it closed."""
        engine, reader, writer = self.engine, self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            while True:
                # Handling a reply may queue commands: they go out before we wait for the next one.
                event = engine.next_event()
                await _flush(writer, engine, engine.data_to_send())
                if event is NEED_DATA:
                    try:
                        # asyncio.timeout, not wait_for: no task per read (3.11 wraps one).
                        async with asyncio.timeout(engine.timeout):
                            data = await reader.read(READ_SIZE)
                    except TimeoutError:
                        engine.timed_out()
                        continue
                    except OSError:
                        engine.connection_lost()
                        continue
                    if data:
                        self._received += len(data)
                        engine.receive_data(data)
                    else:
                        engine.connection_lost()
                elif isinstance(event, StartTLS):
                    await self._start_tls(writer)
                elif isinstance(event, Ready):
                    return  # set up: `send()` starts transactions
                elif isinstance(event, SendMessage):
                    for start in range(0, len(message), WRITE_CHUNK):
                        engine.send_message_data(message[start : start + WRITE_CHUNK])
                        if start + WRITE_CHUNK < len(message):
                            await _flush(writer, engine, engine.data_to_send())
                    engine.end_message()  # the last piece goes out with the end of data: one write
                elif isinstance(event, TransactionDone):
                    self._results = event.result.recipients
                    self._dsn_passed = event.result.dsn_passed
                    if envelope is not None and not engine.closed:
                        return
                elif isinstance(event, SessionFailed):
                    self._failure = event.reply
                    if event.phase is Phase.STARTTLS and self._tls_failure is None:
                        self._tls_failure = STARTTLS_NOT_SUPPORTED  # missing or refused, TLS required
                elif isinstance(event, Closed):
                    return
        except OSError as exc:
            if self._results is None and self._failure is None:
                self._failure = R.connection_lost(exc.strerror or type(exc).__name__)
            with contextlib.suppress(OSError):
                engine.connection_lost()

    async def _start_tls(self, writer: asyncio.StreamWriter) -> None:
        assert self.tls_context is not None
        target = self.target
        try:
            # RFC 3207 §4: the context decides whether the certificate is verified: not for
            # opportunistic TLS, against the MX host name under MTA-STS (RFC 8461 §4.2).
            await asyncio.wait_for(
                writer.start_tls(self.tls_context, server_hostname=target.host),
                self.settings.timeouts.starttls,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info(
                "queue.tls_failed",
                extra=fields(target=f"{target.host}:{target.port}", error=str(exc)),
            )
            self.tls_failed = True
            self._tls_failure = classify_tls_error(exc)
            self.engine.tls_failed(R.tls_failed_because(describe_tls_error(exc)))
            return
        if self.tls_check is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            reason = self.tls_check(certificate or b"")
            if reason is not None:
                log.info(
                    "queue.tls_failed", extra=fields(target=f"{target.host}:{target.port}", error=reason)
                )
                self.tls_failed = True
                self._tls_failure = VALIDATION_FAILURE
                self.engine.tls_failed(R.tls_failed_because(reason))
                return
        self.engine.tls_started()


async def _flush(writer: asyncio.StreamWriter, engine: SMTPClientEngine, data: bytes) -> None:
    if not data:
        return
    writer.write(data)
    if not writer.transport.get_write_buffer_size():
        return  # the kernel took it all: nothing to wait for (and no timer to arm per command)
    try:
        async with asyncio.timeout(engine.timeout or engine.settings.timeouts.data_block):
            await writer.drain()
    except TimeoutError:
        engine.timed_out()
