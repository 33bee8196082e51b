"""The PostgreSQL store's change feed across nodes (ARCHITECTURE decisions 6 and 10, issue 12 "Change
feed"): LISTEN/NOTIFY on one channel of the database.

Sending: every transaction that produced changes sends ONE notification, with `pg_notify` inside that
transaction (`notify_statement`; pool.py sends it in one round trip with the COMMIT, and a group
commit of many deliveries is one transaction, so one notification). PostgreSQL delivers a
notification when, and only when, its transaction commits, and notifications of different transactions in commit order
(PostgreSQL docs, NOTIFY): a listener that reads the store on a notification sees the commit.

Payload (text, ASCII): `<store id> SP <body>`, where the body is one line of the workers' relay
(surat.workers.relay) without its LF:
- `[[kind, account_id, mailbox_id, modseq], ...]`: the changes, at most CHANGES_PER_LINE of them;
- `"overflow"`: a summary that says only "something changed": every receiver publishes
  `ChangeKind.OVERFLOW` to all its subscribers, which re-read the store since their MODSEQ.
UIDs are never sent (subscribers re-read with `changes_since`), so changes that differ only in UIDs
or MODSEQ collapse into one (the highest MODSEQ kept) without losing anything a subscriber uses.
PostgreSQL refuses a payload of 8000 bytes or more (NOTIFY: "must be shorter than 8000 bytes" in
the default configuration); a transaction whose collapsed changes do not fit (e.g. a delivery to
hundreds of mailboxes) sends the `"overflow"` summary: receivers re-read, nothing is missed.

Receiving: `ChangeListener` holds one dedicated connection per store (not from the pool: a pooled
connection would be handed to transactions, and LISTEN belongs to one session), reads notifications
on the event loop with psycopg's async `notifies()`, skips those its own store sent (they were
published locally after COMMIT already) and publishes the others on the store's in-process feed.
When the connection drops (server restart, `pg_terminate_backend`, a network failure found by the
heartbeat), notifications sent meanwhile are lost for good (PostgreSQL keeps none for a session that
is not listening), so every subscriber gets OVERFLOW at once, the listener reconnects with a bounded
backoff, and every subscriber gets OVERFLOW again once it listens again: changes committed between
a subscriber's re-read and the new LISTEN are covered by that second re-read.

Bounds: a payload is under 8000 bytes and decodes into at most CHANGES_PER_LINE changes; each is
published at once on the in-process feed, whose subscriptions are bounded (surat.store.feed). psycopg
keeps notifications that arrive outside `notifies()` in a backlog; that happens only during the
heartbeat query (one round trip every HEARTBEAT_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from surat.log import fields
from surat.store.base import Change, ChangeKind
from surat.store.feed import InProcessChangeFeed
from surat.store.setup import first_line
from surat.workers.relay import OVERFLOW, READY, RelayProtocolError, decode_line, encode_changes

log = logging.getLogger(__name__)

# The channel, per database: two Surat installations in two databases of one cluster do not hear
# each other.
CHANNEL = "surat_changes"
# PostgreSQL's limit (NOTIFY): the payload must be shorter than 8000 bytes.
MAX_PAYLOAD = 7999
# Seconds between two reconnection attempts: doubled after each failure, from the first to the last.
RECONNECT_BACKOFF_FIRST = 0.1
RECONNECT_BACKOFF_LAST = 5.0
# The listening connection runs a query every HEARTBEAT_SECONDS: a server that vanished without
# closing the connection (no FIN, no RST) is found within HEARTBEAT_SECONDS + HEARTBEAT_TIMEOUT +
# PSYCOPG_CANCEL_BOUND (psycopg, interrupted, sends the server a cancel request and waits up to 5 s
# for it and 5 s more for the query's end before it gives the connection up).
HEARTBEAT_SECONDS = 30.0
HEARTBEAT_TIMEOUT = 10.0
PSYCOPG_CANCEL_BOUND = 10.0

_SUMMARY = OVERFLOW.rstrip(b"\n").decode()


class ChangeNotificationError(Exception):
    """A notification on CHANNEL that is not a Surat change payload."""


def new_store_id() -> str:
    """An id for one store instance, carried by its notifications so that it can skip its own."""
    return secrets.token_hex(8)


def encode_payload(store_id: str, changes: Iterable[Change]) -> str | None:
    """The one payload that carries `changes`: in full once they are collapsed (see the module
    docstring), else the `"overflow"` summary; None when there is nothing to send (a subscriber's
    own OVERFLOW marker is never sent)."""
    collapsed: dict[tuple[ChangeKind, int, int | None], Change] = {}
    for change in changes:
        if change.kind is ChangeKind.OVERFLOW:
            continue
        key = (change.kind, change.account_id, change.mailbox_id)
        seen = collapsed.get(key)
        if seen is None or change.modseq > seen.modseq:
            # The first position keeps the commit order of the kinds; the highest MODSEQ is kept.
            collapsed[key] = Change(change.kind, change.account_id, change.mailbox_id, (), change.modseq)
    if not collapsed:
        return None
    prefix = store_id + " "
    lines = encode_changes(list(collapsed.values()))
    if len(lines) == 1:
        payload = prefix + lines[0].rstrip(b"\n").decode()
        if len(payload) <= MAX_PAYLOAD:  # JSON of ints and ASCII kinds: one byte per character
            return payload
    return prefix + _SUMMARY


def decode_payload(payload: str) -> tuple[str, list[Change] | None]:
    """The sending store's id and its changes, or None for the "re-read everything" summary.
    ChangeNotificationError for anything else."""
    if len(payload) > MAX_PAYLOAD:
        raise ChangeNotificationError("payload too long")
    store_id, space, body = payload.partition(" ")
    if not space or not store_id or not store_id.isascii() or not store_id.isalnum():
        raise ChangeNotificationError("no store id")
    try:
        decoded = decode_line(body.encode() + b"\n")
    except RelayProtocolError as exc:
        raise ChangeNotificationError(str(exc)) from None
    except UnicodeEncodeError:  # a lone surrogate cannot come from PostgreSQL, but stay total
        raise ChangeNotificationError("not text") from None
    if decoded == READY:
        raise ChangeNotificationError("not a change payload")
    if decoded == OVERFLOW:
        return store_id, None
    assert isinstance(decoded, list)
    return store_id, decoded


def notify_statement(store_id: str, changes: Iterable[Change]) -> tuple[bytes, tuple[str, str]] | None:
    """The statement that sends `changes` to the other stores, for the caller's transaction (pool.py
    sends it with the COMMIT): delivered at its COMMIT, never if it rolls back (so a retried
    transaction notifies once). None when there is nothing to send."""
    payload = encode_payload(store_id, changes)
    if payload is None:
        return None
    return b"SELECT pg_notify(%s, %s)", (CHANNEL, payload)


class ChangeListener:
    """The dedicated LISTEN connection of one store: publishes on `feed` what the other stores and
    nodes on the database commit. `await start()` (connects; raises what connecting raises), then
    `await stop()`."""

    def __init__(
        self, dsn: str, connect_options: Mapping[str, Any], feed: InProcessChangeFeed, store_id: str
    ) -> None:
        self._dsn = dsn
        # application_name lets an operator tell the listener apart in pg_stat_activity.
        self._connect_options = {
            **connect_options,
            "autocommit": True,
            "application_name": f"surat-feed-{store_id}",
        }
        self._feed = feed
        self._store_id = store_id
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL server process of the LISTEN connection, None while disconnected."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def start(self) -> None:
        if self._task is not None:
            return
        self._conn = await self._listen()
        self._task = asyncio.create_task(self._run(), name="surat-postgres-change-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_connection()

    async def _listen(self) -> psycopg.AsyncConnection[TupleRow]:
        conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_options)
        try:
            await conn.execute(f"LISTEN {CHANNEL}".encode())  # a constant identifier, nothing to quote
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _run(self) -> None:
        while True:
            conn = self._conn
            if conn is not None:
                try:
                    await self._follow(conn)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("store.feed.disconnected", extra=fields(error=first_line(exc)))
                except Exception:
                    # A bug must not silence the feed for good: start over on a new connection.
                    log.exception("store.feed.failed")
                await self._close_connection()
                # What was notified while nobody listened is lost: subscribers re-read the store.
                self._feed.overflow_all()
            self._conn = await self._reconnect()
            # Changes committed after the re-reads above and before this LISTEN were not heard either.
            self._feed.overflow_all()
            log.info("store.feed.listening", extra=fields(backend_pid=self.backend_pid))

    async def _follow(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Publish what arrives, until the connection fails (raises)."""
        while True:
            async for notification in conn.notifies(timeout=HEARTBEAT_SECONDS):
                if notification.channel == CHANNEL:
                    self._receive(notification.payload)
            # Every HEARTBEAT_SECONDS: make sure the server is still there.
            async with asyncio.timeout(HEARTBEAT_TIMEOUT):
                await conn.execute(b"SELECT 1")

    def _receive(self, payload: str) -> None:
        try:
            store_id, changes = decode_payload(payload)
        except ChangeNotificationError as exc:
            # Someone else's notification on our channel, or a newer Surat's format: whatever it
            # said, re-reading the store loses nothing.
            log.warning("store.feed.bad_notification", extra=fields(error=str(exc)))
            self._feed.overflow_all()
            return
        if store_id == self._store_id:
            return  # published on this store's feed right after its COMMIT (pool.py)
        if changes is None:
            self._feed.overflow_all()
        else:
            self._feed.publish(changes)

    async def _reconnect(self) -> psycopg.AsyncConnection[TupleRow]:
        delay = RECONNECT_BACKOFF_FIRST
        attempt = 1
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._listen()
            except (psycopg.Error, OSError) as exc:
                log.warning(
                    "store.feed.reconnect_failed",
                    extra=fields(
                        attempt=attempt,
                        retry_in=min(delay * 2, RECONNECT_BACKOFF_LAST),
                        error=first_line(exc),
                    ),
                )
            delay = min(delay * 2, RECONNECT_BACKOFF_LAST)
            attempt += 1
