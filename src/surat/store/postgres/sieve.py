"""Sieve scripts and the vacation memory (issue 14) in PostgreSQL: the same promises as the SQLite
store's (surat.store.base `Store`), shared by every node."""

# ruff: noqa: S608 -- SQL text is built only from the constant column list and %s placeholders.

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from surat.store.base import MAX_VACATION_MEMORY_SECONDS, Change, NotFound, ScriptActive, SieveScript
from surat.store.common import check_sieve_script, new_script_version
from surat.store.postgres.pool import Connection, PooledStore

_COLUMNS = "name, text, active, version, created_at, updated_at"


def _script(row: tuple[Any, ...]) -> SieveScript:
    return SieveScript(row[0], row[1], bool(row[2]), int(row[3]), row[4], row[5])


class SieveStore(PooledStore):
    async def put_sieve_script(self, account_id: int, name: str, text: str) -> SieveScript:
        check_sieve_script(name, text)
        version = new_script_version()
        now = datetime.now(UTC)

        async def fn(conn: Connection) -> tuple[SieveScript, list[Change]]:
            cursor = await conn.execute(b"SELECT 1 FROM accounts WHERE id = %s", (account_id,))
            if await cursor.fetchone() is None:
                raise NotFound(f"account {account_id}")
            cursor = await conn.execute(
                f"INSERT INTO sieve_scripts (account_id, name, text, version, created_at, updated_at)"
                f" VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account_id, name) DO UPDATE"
                f" SET text = excluded.text, version = excluded.version, updated_at = excluded.updated_at"
                f" RETURNING {_COLUMNS}".encode(),
                (account_id, name, text, version, now, now),
            )
            row = await cursor.fetchone()
            assert row is not None
            return _script(row), []

        return await self._transaction(fn)

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None:
        row = await self._fetchone(
            f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = %s AND name = %s", (account_id, name)
        )
        return _script(row) if row else None

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        rows = await self._fetchall(
            f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = %s ORDER BY name", (account_id,)
        )
        return [_script(row) for row in rows]

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            # The account's row, locked: two activations at once take turns instead of both
            # clearing and one failing on the one-active index.
            cursor = await conn.execute(b"SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
            if await cursor.fetchone() is None:
                raise NotFound(f"account {account_id}")
            if name is not None:
                cursor = await conn.execute(
                    b"SELECT 1 FROM sieve_scripts WHERE account_id = %s AND name = %s", (account_id, name)
                )
                if await cursor.fetchone() is None:
                    raise NotFound(f"script {name}")
            # RFC 5804 §2.8: activating one script deactivates the one active before, in one step.
            await conn.execute(
                b"UPDATE sieve_scripts SET active = false WHERE account_id = %s AND active", (account_id,)
            )
            if name is not None:
                await conn.execute(
                    b"UPDATE sieve_scripts SET active = true WHERE account_id = %s AND name = %s",
                    (account_id, name),
                )
            return None, []

        await self._transaction(fn)

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"SELECT active FROM sieve_scripts WHERE account_id = %s AND name = %s FOR UPDATE",
                (account_id, name),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"script {name}")
            if row[0]:
                raise ScriptActive(f"script {name} is active")  # RFC 5804 §2.10
            await conn.execute(
                b"DELETE FROM sieve_scripts WHERE account_id = %s AND name = %s", (account_id, name)
            )
            return None, []

        await self._transaction(fn)

    async def claim_vacation_reply(
        self, account_id: int, sender: str, handle: str, now: float, period: float
    ) -> bool:
        moment = datetime.fromtimestamp(now, UTC)
        recent = await self._fetchone(
            "SELECT 1 FROM vacation_replies WHERE account_id = %s AND sender = %s AND handle = %s"
            " AND replied_at > %s",
            (account_id, sender, handle, moment - timedelta(seconds=period)),
        )
        if recent is not None:
            # Most messages to a user on vacation come from senders already answered: a read, no write.
            return False

        async def fn(conn: Connection) -> tuple[bool, list[Change]]:
            # One statement: the row is written only when no reply went within the period, so two
            # nodes delivering to the same user at once send one reply.
            cursor = await conn.execute(
                b"INSERT INTO vacation_replies (account_id, sender, handle, replied_at)"
                b" VALUES (%s, %s, %s, %s) ON CONFLICT (account_id, sender, handle) DO UPDATE"
                b" SET replied_at = excluded.replied_at WHERE vacation_replies.replied_at <= %s"
                b" RETURNING 1",
                (account_id, sender, handle, moment, moment - timedelta(seconds=period)),
            )
            claimed = await cursor.fetchone() is not None
            if claimed:
                # Bounds the table by one longest period's replies of all users.
                await conn.execute(
                    b"DELETE FROM vacation_replies WHERE replied_at < %s",
                    (moment - timedelta(seconds=MAX_VACATION_MEMORY_SECONDS),),
                )
            return claimed, []

        return await self._transaction(fn)
