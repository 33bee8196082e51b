"""The PostgreSQL store's import ledger and `verify` (surat.store.transfer.TransferStore).

Bodies are `blobs` rows with their `blob_chunks`: a body is whole when its chunks are numbered 0..n-1
and their lengths add up to the `blobs.size` and to the size its messages record. Orphans are `blobs`
rows no message or queue entry refers to; a body is written in the transaction that inserts its
message (blobs.py), so a committed orphan is never a delivery in flight, but verify still spares
those younger than transfer.ORPHAN_MIN_AGE, like the SQLite store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from surat.store import transfer
from surat.store.base import Change
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.transfer import BodyCheck, VerifyProgress, VerifyReport

# Bodies whose chunks are summed per query of `verify` (the digests are read one body at a time).
_VERIFY_SLICE = 500

_BODY_ROWS_SQL = b"""
    SELECT m.blob_id, m.size, i.digest, a.address, mb.name, m.uid
    FROM messages m
    JOIN mailboxes mb ON mb.id = m.mailbox_id
    JOIN accounts a ON a.id = mb.account_id
    LEFT JOIN imported_messages i ON i.mailbox_id = m.mailbox_id AND i.uid = m.uid
    ORDER BY m.blob_id
"""
# Per body: the recorded size, the sum of its chunks, and whether they are numbered 0..n-1.
_CHUNK_SUMS_SQL = b"""
    SELECT b.id, b.size, coalesce(sum(octet_length(c.data)), 0),
           count(c.position) = coalesce(max(c.position) + 1, 0)
    FROM blobs b LEFT JOIN blob_chunks c ON c.blob_id = b.id
    WHERE b.id = ANY(%s)
    GROUP BY b.id, b.size
"""
_ORPHANS_SQL = b"""
    SELECT b.id FROM blobs b
    WHERE b.created_at < now() - make_interval(secs => %s)
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)
      AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob_id = b.id)
    ORDER BY b.id
"""


class TransferStore(PooledStore):
    async def imported_digests(self, mailbox_id: int) -> set[bytes]:
        rows = await self._fetchall(
            "SELECT digest FROM imported_messages WHERE mailbox_id = %s", (mailbox_id,)
        )
        return {bytes(row[0]) for row in rows}

    async def record_imported(self, mailbox_id: int, imported: Sequence[tuple[bytes, int]]) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    b"INSERT INTO imported_messages (mailbox_id, digest, uid) VALUES (%s, %s, %s)"
                    b" ON CONFLICT DO NOTHING",
                    [(mailbox_id, digest, uid) for digest, uid in imported],
                )
            return None, []

        await self._transaction(fn)

    async def verify(self, *, repair: bool = False, progress: VerifyProgress | None = None) -> VerifyReport:
        report = VerifyReport()
        rows = await self._fetchall(_BODY_ROWS_SQL.decode())
        report.messages = len(rows)
        bodies: dict[str, BodyCheck] = {}
        for blob_id, recorded_size, digest, address, mailbox, uid in rows:
            bodies.setdefault(
                blob_id,
                BodyCheck(
                    blob_id,
                    recorded_size,
                    bytes(digest) if digest else None,
                    f"{address} {mailbox} uid {uid}",
                ),
            )
        report.bodies = len(bodies)
        report.problems += [
            transfer.mailbox_counter_problem(*row)
            for row in await self._fetchall(transfer.MAILBOX_COUNTERS_SQL)
        ]
        checks = list(bodies.values())
        for start in range(0, len(checks), _VERIFY_SLICE):
            part = checks[start : start + _VERIFY_SLICE]
            sums = {
                row[0]: row
                for row in await self._fetchall(_CHUNK_SUMS_SQL.decode(), ([c.blob_id for c in part],))
            }
            for check in part:
                found = sums.get(check.blob_id)
                size: int | None = None
                matches = True
                if found is not None:
                    _, recorded, chunked, numbered = found
                    report.body_bytes += chunked
                    # A body whose chunks do not add up to its blobs row is as good as missing a part.
                    size = chunked if numbered and chunked == recorded else None
                    if size is None:
                        report.problems.append(
                            f"{check.where}: body {check.blob_id} has {chunked} bytes in its chunks,"
                            f" its record says {recorded}"
                        )
                        continue
                    if check.digest is not None and size == check.size:
                        matches = await self._digest_of(check.blob_id) == check.digest
                        report.digests_checked += 1
                line = transfer.body_problem(check, size, matches)
                if line is not None:
                    report.problems.append(line)
            if progress is not None:
                progress(min(start + _VERIFY_SLICE, len(checks)), len(checks))
        usage = await self._fetchall(transfer.ACCOUNT_USAGE_SQL)
        report.problems += [transfer.usage_problem(row[1], row[2], row[3]) for row in usage]
        orphans = [row[0] for row in await self._fetchall(_ORPHANS_SQL.decode(), (transfer.ORPHAN_MIN_AGE,))]
        report.orphans = len(orphans)
        report.problems += [f"body {blob_id} is not referenced by any message" for blob_id in orphans]
        if repair:
            report.repaired += await self._repair([int(row[0]) for row in usage], orphans)
        return report

    async def _digest_of(self, blob_id: str) -> bytes:
        """SHA-256 of a body, read chunk by chunk (one chunk in memory at a time)."""
        digest = hashlib.sha256()

        async def fn(conn: Connection) -> None:
            async with conn.cursor(name="surat_verify_digest") as cursor, conn.transaction():
                await cursor.execute(
                    b"SELECT data FROM blob_chunks WHERE blob_id = %s ORDER BY position", (blob_id,)
                )
                async for (data,) in cursor:
                    digest.update(data)

        await self.with_connection(fn)
        return digest.digest()

    async def _repair(self, accounts: list[int], orphans: list[str]) -> list[str]:
        async def fn(conn: Connection) -> tuple[list[str], list[Change]]:
            lines = []
            for account_id in accounts:
                # Recounted inside this transaction, the account row locked: deliveries that commit
                # meanwhile wait for it, and are counted by their own update after.
                await conn.execute(b"SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
                cursor = await conn.execute(
                    transfer.RECOUNTED_USAGE_SQL.format(mark="%s").encode(), (account_id,)
                )
                row = await cursor.fetchone()
                used = int(row[0]) if row is not None else 0
                cursor = await conn.execute(
                    b"UPDATE accounts SET used_bytes = %s WHERE id = %s RETURNING address", (used, account_id)
                )
                updated = await cursor.fetchone()
                if updated is not None:
                    lines.append(f"{updated[0]}: quota usage set to {used} bytes")
            cursor = await conn.execute(
                b"DELETE FROM blobs b WHERE b.id = ANY(%s)"
                b" AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)"
                b" AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob_id = b.id) RETURNING b.id",
                (orphans,),
            )
            lines += [f"removed body {row[0]}" for row in await cursor.fetchall()]
            return lines, []

        return await self._transaction(fn)
