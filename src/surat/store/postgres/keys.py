"""The PostgreSQL store's `KeyStore`: the installation secret (`shared_secrets`) and the DKIM signing
keys (`dkim_keys`) in the database every node shares (schema migration 2), so that every node signs
with the one key a domain publishes and answers unknown SCRAM users alike (issue 12).

Whoever can read these tables can read the private keys, as with the password hashes in `accounts`:
database access and backups are as secret as the keys themselves.
"""

from __future__ import annotations

import secrets
from typing import Any

from psycopg import errors

from surat.store.base import (
    DKIM_SELECTOR_RE,
    INSTALLATION_SECRET_BYTES,
    AlreadyExists,
    Change,
    StoredDkimKey,
    StoreError,
)
from surat.store.common import normalize_domain
from surat.store.postgres.pool import Connection, PooledStore

INSTALLATION_SECRET_NAME = "installation"  # noqa: S105 - the name of its row in shared_secrets, not a secret
# Two-key advisory locks (pg_advisory_xact_lock(class, key)) on a domain's keys live in their own class,
# apart from the login limiter's and the migration's.
_DKIM_LOCK_CLASS = 0x5375446B  # "SuDk"


class PostgresKeyStore:
    """`KeyStore` over the PostgreSQL store's connections."""

    def __init__(self, store: PooledStore) -> None:
        self._store = store

    async def installation_secret(self) -> bytes:
        # Get-or-create in two statements: the INSERT of a node that loses the race waits for the
        # winner's commit and does nothing, and the SELECT, a statement of its own, then sees the
        # winner's row. One statement could not: its snapshot predates the winner's commit.
        candidate = secrets.token_bytes(INSTALLATION_SECRET_BYTES)

        async def get_or_create(conn: Connection) -> bytes:
            await conn.execute(
                b"INSERT INTO shared_secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (INSTALLATION_SECRET_NAME, candidate),
            )
            cursor = await conn.execute(
                b"SELECT value FROM shared_secrets WHERE name = %s", (INSTALLATION_SECRET_NAME,)
            )
            row = await cursor.fetchone()
            if row is None:  # deleted between the two statements by hand
                raise StoreError("the installation secret disappeared while it was read")
            return bytes(row[0])

        return await self._store.with_connection(get_or_create)

    async def dkim_keys(self, domain: str) -> list[StoredDkimKey]:
        name = normalize_domain(domain)

        async def read(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(
                b"SELECT selector, algorithm, private_pem, created_at FROM dkim_keys WHERE domain = %s"
                b" ORDER BY selector",
                (name,),
            )
            return await cursor.fetchall()

        rows = await self._store.with_connection(read)
        return [StoredDkimKey(name, row[0], row[1], bytes(row[2]), row[3]) for row in rows]

    async def add_dkim_key(self, key: StoredDkimKey, *, only_first_of_algorithm: bool = False) -> bool:
        domain = normalize_domain(key.domain)
        if not DKIM_SELECTOR_RE.match(key.selector):
            raise StoreError(f"DKIM selector {key.selector!r} is not one this store keeps (sYYYYMMDD[re][N])")

        async def add(conn: Connection) -> tuple[bool, list[Change]]:
            # Under read committed, two nodes could both find no key of the algorithm and both insert;
            # the lock on the domain's keys makes look-and-insert one step across nodes. It is held
            # until this transaction ends.
            await conn.execute(b"SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_DKIM_LOCK_CLASS, domain))
            if only_first_of_algorithm:
                cursor = await conn.execute(
                    b"SELECT 1 FROM dkim_keys WHERE domain = %s AND algorithm = %s LIMIT 1",
                    (domain, key.algorithm),
                )
                if await cursor.fetchone() is not None:
                    return False, []
            try:
                await conn.execute(
                    b"INSERT INTO dkim_keys (domain, selector, algorithm, private_pem, created_at)"
                    b" VALUES (%s, %s, %s, %s, %s)",
                    (domain, key.selector, key.algorithm, key.private_pem, key.created_at),
                )
            except errors.UniqueViolation:
                # never replaced: its public half may already be published
                raise AlreadyExists(f"DKIM key {key.selector} for {domain}") from None
            return True, []

        return await self._store._transaction(add)

    def dkim_location(self, domain: str) -> str:
        return f"the database (table dkim_keys, domain {normalize_domain(domain)})"
