"""`PostgresStore`: the `Store` Protocol over one PostgreSQL database that several Surat processes and
nodes share (issue 12). Split by role: pool.py (connections, transactions, retries), directory.py,
mailboxes.py, messages.py, blobs.py (message bodies in `blobs`/`blob_chunks`), rows.py (row helpers
and the lock order).

Implemented here: every Protocol method of the directory (domains, accounts, credentials, quotas,
aliases, auth_clients, sent_messages), Sieve scripts and vacation memory (sieve.py), the installation secret and DKIM keys (keys.py), mailboxes and
subscriptions, messages (deliver, append, list, get, flags, expunge, copy, move, changes_since,
claim_recent, mailbox_status), the import ledger and `store verify` (transfer.py), the blob store, and the outbound queue with node ids and leases (queue.py). The change feed crosses nodes with
LISTEN/NOTIFY (feed.py). `surat.store.setup.configured_store` builds it from `[store]`.

`open()` does not create or upgrade the schema: that is `surat store init` (docs/store.md). It
refuses a database without the schema, or with another version, with the one line setup.py words.
There is nothing to recover at open: a blob row exists only with the rows that refer to it (see
blobs.py), and the expunge that removes the last reference removes the blob in its transaction.
"""

from __future__ import annotations

import functools

import psycopg
from psycopg_pool import PoolTimeout

from surat.store.postgres import schema
from surat.store.postgres.blobs import PostgresBlobStore
from surat.store.postgres.directory import DirectoryStore
from surat.store.postgres.keys import PostgresKeyStore
from surat.store.postgres.mailboxes import MailboxesStore
from surat.store.postgres.messages import MessagesStore
from surat.store.postgres.pool import CONNECT_TIMEOUT
from surat.store.postgres.queue import QueueStore
from surat.store.postgres.sieve import SieveStore
from surat.store.postgres.transfer import TransferStore
from surat.store.setup import SchemaStatus, StoreUnavailable, first_line


class PostgresStore(TransferStore, SieveStore, QueueStore, MessagesStore, MailboxesStore, DirectoryStore):
    """`Store` over PostgreSQL. `await open()` before use, `await close()` after."""

    @functools.cached_property
    def blobs(self) -> PostgresBlobStore:
        return PostgresBlobStore(self)

    @functools.cached_property
    def keys(self) -> PostgresKeyStore:
        return PostgresKeyStore(self)

    async def open(self, *, recover: bool = True) -> None:
        """`recover` is accepted so that callers open either backend alike (store.setup): there is
        nothing to recover here (see the module docstring)."""
        if self._open:
            return
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout:
            await self._pool.close()
            raise StoreUnavailable("cannot connect to the PostgreSQL store") from None
        try:
            async with self._pool.connection() as conn:
                found = await schema.schema_version(conn)
        except BaseException:
            await self._pool.close()
            raise
        refusal = SchemaStatus("postgresql", found, schema.SCHEMA_VERSION).refusal("surat store init")
        if refusal is not None:
            await self._pool.close()
            raise StoreUnavailable(refusal)
        try:
            await self._listener.start()  # the change feed from the other nodes (feed.py)
        except (psycopg.Error, OSError) as exc:
            await self._pool.close()
            raise StoreUnavailable(f"cannot listen for changes: {first_line(exc)}") from None
        self._open = True
        await self.register_node()

    async def close(self) -> None:
        if not self._open:
            return
        await self.retire_node()  # its leases back to the other nodes at once (queue.py)
        self._open = False  # new calls fail at once; those running finish on their connections
        await self._writes.drain()  # deliveries and APPENDs accepted before: committed (or failed)
        await self._shared.drain()  # flag changes, \\Recent claims and expunges accepted before
        await self._listener.stop()
        await self._pool.close()
