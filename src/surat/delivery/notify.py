"""Sending a composed DSN: the one path used by the queue runner (failures, delays, relays) and by
SMTP local delivery (NOTIFY=SUCCESS for a mailbox here)."""

from __future__ import annotations

import logging
from datetime import datetime

from surat.delivery.dsn import Dsn
from surat.delivery.local import resolve as resolve_local
from surat.log import fields
from surat.store.base import Delivery, OutboundMessage, OutboundRecipient, Store

log = logging.getLogger(__name__)

NULL_RETURN_PATH = b"Return-Path: <>\r\n"


async def submit_dsn(store: Store, dsn: Dsn, now: datetime, *, requiretls: bool = False) -> None:
    """RFC 3461 §6.2: a DSN goes out from the null reverse-path; local senders get it in their INBOX,
    others through the queue. A DSN that cannot be delivered is dropped, never bounced (no loops).
    `requiretls`: the DSN is about a REQUIRETLS message and is relayed with REQUIRETLS too
    (RFC 8689 §4.3)."""
    await submit_from_null(
        store,
        dsn.recipient,
        dsn.message,
        now,
        smtputf8=dsn.smtputf8,
        eight_bit=dsn.eight_bit,
        requiretls=requiretls,
    )


async def submit_from_null(
    store: Store,
    recipient: str,
    message: bytes,
    now: datetime,
    *,
    smtputf8: bool,
    eight_bit: bool,
    requiretls: bool = False,
) -> None:
    """Send a message we made (a DSN, a Sieve vacation reply or rejection notice) from the null
    reverse-path <>: to a local recipient's mailbox directly, else through the queue. Durable when
    this returns. Undeliverable locally: logged and dropped, never bounced (no loops)."""
    domain = recipient.rpartition("@")[2]
    if await store.is_local_domain(domain):
        resolution = await resolve_local(store, recipient)
        if not resolution.local and not resolution.remote:
            if resolution.loop:
                log.error("dsn.alias_loop", extra=fields(to=recipient, cycle=" -> ".join(resolution.loop)))
            else:
                log.warning("dsn.undeliverable", extra=fields(to=recipient, reason="no such local user"))
            return
        content = NULL_RETURN_PATH + message
        remote = None
        if resolution.remote:
            remote = OutboundMessage(
                sender="",
                recipients=tuple(OutboundRecipient(a) for a in resolution.remote),
                smtputf8=smtputf8,
                eight_bit=eight_bit,
                body_offset=len(NULL_RETURN_PATH),
                requiretls=requiretls,
            )
        await store.deliver(
            Delivery(None, len(content), now, local=resolution.local, remote=remote, content=content)
        )
        return
    outbound = OutboundMessage(
        sender="",
        recipients=(OutboundRecipient(recipient),),
        smtputf8=smtputf8,
        eight_bit=eight_bit,
        requiretls=requiretls,
    )
    await store.deliver(Delivery(None, len(message), now, remote=outbound, content=message))
