"""The asyncio shell around the sans-IO SMTP client engine: one connection, one transaction.

`send_transaction` connects to one target, runs the engine's loop (see the module docstring of
`surat.proto.smtp.client`) and answers with a `SessionOutcome`: per-recipient results when a
transaction took place, else the reason the session failed. Nothing here raises for network
trouble; every failure becomes a locally generated reply the queue can record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, replace

from surat.delivery.mx import Target
from surat.log import fields
from surat.proto.smtp.client import (
    NEED_DATA,
    ClientSettings,
    Closed,
    Envelope,
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

    @property
    def describe(self) -> str:
        return f"{self.target.host}[{self.target.address}]:{self.target.port}"


def connect_failure(target: Target, exc: BaseException) -> Reply:
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return Reply(451, "4.4.1", f"Cannot connect to {target.host}[{target.address}]:{target.port}: {text}")


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
    if tls_context is None:
        settings = replace(settings, starttls=False)
    try:
        if implicit_tls:
            assert tls_context is not None
            connection = asyncio.open_connection(
                target.address, target.port, ssl=tls_context, server_hostname=target.host
            )
        else:
            connection = asyncio.open_connection(target.address, target.port)
        reader, writer = await asyncio.wait_for(connection, connect_timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return SessionOutcome(target, None, connect_failure(target, exc), tls=False)
    engine = SMTPClientEngine(settings)
    results: tuple[RecipientResult, ...] | None = None
    failure: Reply | None = None
    tls_failed = False
    sent = False
    dsn_passed = False
    try:
        while True:
            # Handling a reply may queue commands: they go out before we wait for the next one.
            event = engine.next_event()
            await _flush(writer, engine, engine.data_to_send())
            if event is NEED_DATA:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), engine.timeout)
                except TimeoutError:
                    engine.timed_out()
                    continue
                except OSError:
                    engine.connection_lost()
                    continue
                if data:
                    engine.receive_data(data)
                else:
                    engine.connection_lost()
            elif isinstance(event, StartTLS):
                assert tls_context is not None
                try:
                    # RFC 3207 §4: opportunistic; the peer's certificate is not verified here
                    # (the context decides), as by every MTA without MTA-STS or DANE.
                    await asyncio.wait_for(
                        writer.start_tls(tls_context, server_hostname=target.host),
                        settings.timeouts.starttls,
                    )
                except (OSError, ssl.SSLError, TimeoutError) as exc:
                    log.info(
                        "queue.tls_failed",
                        extra=fields(target=f"{target.host}:{target.port}", error=str(exc)),
                    )
                    tls_failed = True
                    engine.tls_failed()
                    continue
                engine.tls_started()
            elif isinstance(event, Ready):
                if sent:
                    engine.quit()
                else:
                    sent = True
                    engine.send_mail(envelope)
            elif isinstance(event, SendMessage):
                for start in range(0, len(message), WRITE_CHUNK):
                    engine.send_message_data(message[start : start + WRITE_CHUNK])
                    await _flush(writer, engine, engine.data_to_send())
                engine.end_message()
            elif isinstance(event, TransactionDone):
                results = event.result.recipients
                dsn_passed = event.result.dsn_passed
                engine.quit()
            elif isinstance(event, SessionFailed):
                failure = event.reply
            elif isinstance(event, Closed):
                break
    except OSError as exc:
        if results is None and failure is None:
            failure = Reply(451, "4.4.2", f"Connection lost: {exc.strerror or type(exc).__name__}")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)
    if results is None and failure is None:
        failure = Reply(451, "4.4.2", "Connection closed before the transaction")
    return SessionOutcome(
        target, results, failure, tls=engine.tls, tls_failed=tls_failed, dsn_passed=dsn_passed
    )


async def _flush(writer: asyncio.StreamWriter, engine: SMTPClientEngine, data: bytes) -> None:
    if not data:
        return
    writer.write(data)
    try:
        await asyncio.wait_for(writer.drain(), engine.timeout or engine.settings.timeouts.data_block)
    except TimeoutError:
        engine.timed_out()
