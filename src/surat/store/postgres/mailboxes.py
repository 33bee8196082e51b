"""The PostgreSQL store's mailboxes and subscriptions: create (with superiors), delete, rename (INBOX's
special rule), subscriptions that outlive their mailbox, LIST data and STATUS counts."""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

from psycopg import errors

from surat.store.base import (
    HIERARCHY_DELIMITER,
    AlreadyExists,
    Change,
    ChangeKind,
    InvalidName,
    Mailbox,
    MailboxStatus,
    NotFound,
)
from surat.store.common import mailbox_from_row, normalize_mailbox_name
from surat.store.postgres.messages import copy_rows, expunge_rows
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.postgres.rows import (
    MAILBOX_COLUMNS,
    delete_unreferenced_blobs,
    lock_mailboxes,
    mailbox_by_name,
)

_UIDVALIDITY_MAX = 2**32 - 1  # RFC 9051 §2.3.1.1: a non-zero 32-bit number


async def _next_uidvalidity(conn: Connection) -> int:
    """RFC 9051 §2.3.1.1: a recreated name must get a new UIDVALIDITY. The counter in `meta` is raised
    under its row lock (the upsert), so two nodes never hand out the same value; starting from the
    clock keeps values unique even if the database is ever rebuilt. Wraps within 32 bits."""
    cursor = await conn.execute(
        b"INSERT INTO meta (key, value) VALUES ('uidvalidity', greatest(extract(epoch FROM now())::bigint, 1))"
        b" ON CONFLICT (key) DO UPDATE SET value = CASE"
        b" WHEN greatest(meta.value + 1, EXCLUDED.value) <= %s THEN greatest(meta.value + 1, EXCLUDED.value)"
        b" ELSE meta.value %% %s + 1 END RETURNING value",
        (_UIDVALIDITY_MAX, _UIDVALIDITY_MAX),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _subscribe(conn: Connection, account_id: int, name: str) -> None:
    await conn.execute(
        b"INSERT INTO subscriptions (account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (account_id, name),
    )


async def insert_mailbox(
    conn: Connection, account_id: int, name: str, special_use: str | None, *, if_missing: bool = False
) -> Mailbox:
    """A new mailbox, subscribed (what clients that never SUBSCRIBE expect to see in LSUB).
    AlreadyExists if the name is taken; with `if_missing`, an existing one is returned instead."""
    uidvalidity = await _next_uidvalidity(conn)
    conflict = b" ON CONFLICT (account_id, name) DO NOTHING" if if_missing else b""
    try:
        cursor = await conn.execute(
            b"INSERT INTO mailboxes (account_id, name, uidvalidity, special_use) VALUES (%s, %s, %s, %s)"
            + conflict
            + b" RETURNING id",
            (account_id, name, uidvalidity, special_use),
        )
    except errors.UniqueViolation:
        raise AlreadyExists(f"mailbox {name}") from None
    except errors.ForeignKeyViolation:
        raise NotFound(f"account {account_id}") from None
    row = await cursor.fetchone()
    if row is None:  # if_missing, and it exists
        return await mailbox_by_name(conn, account_id, name)
    await _subscribe(conn, account_id, name)
    return Mailbox(int(row[0]), account_id, name, uidvalidity, 1, 1, special_use, True)


async def _ensure_parents(conn: Connection, account_id: int, name: str) -> list[Change]:
    # RFC 9051 §6.3.4: CREATE SHOULD create superior names that are needed. ON CONFLICT: a superior
    # that another session creates meanwhile is simply there.
    changes = []
    parts = name.split(HIERARCHY_DELIMITER)
    for i in range(1, len(parts)):
        parent = HIERARCHY_DELIMITER.join(parts[:i])
        cursor = await conn.execute(
            b"SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, parent)
        )
        if await cursor.fetchone() is None:
            mailbox = await insert_mailbox(conn, account_id, parent, None, if_missing=True)
            changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
    return changes


class MailboxesStore(PooledStore):
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        rows = await self._fetchall(
            f'SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = %s ORDER BY name COLLATE "C"',
            (account_id,),
        )
        return [mailbox_from_row(row) for row in rows]

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        try:
            normalized = normalize_mailbox_name(name)
        except InvalidName:
            return None
        row = await self._fetchone(
            f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = %s AND name = %s",
            (account_id, normalized),
        )
        return mailbox_from_row(row) if row is not None else None

    async def create_mailbox(self, account_id: int, name: str, special_use: str | None = None) -> Mailbox:
        normalized = normalize_mailbox_name(name)

        async def fn(conn: Connection) -> tuple[Mailbox, list[Change]]:
            cursor = await conn.execute(b"SELECT 1 FROM accounts WHERE id = %s", (account_id,))
            if await cursor.fetchone() is None:
                raise NotFound(f"account {account_id}")
            changes = await _ensure_parents(conn, account_id, normalized)
            mailbox = await insert_mailbox(conn, account_id, normalized, special_use)
            changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
            return mailbox, changes

        return await self._transaction(fn)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        normalized = normalize_mailbox_name(name)
        if normalized == "INBOX":
            raise InvalidName("INBOX cannot be deleted")  # RFC 9051 §6.3.5

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            found = await mailbox_by_name(conn, account_id, normalized)
            mailbox = (await lock_mailboxes(conn, [found.id]))[found.id]
            cursor = await conn.execute(
                b"SELECT DISTINCT blob_id FROM messages WHERE mailbox_id = %s", (mailbox.id,)
            )
            blob_ids = [row[0] for row in await cursor.fetchall()]
            await conn.execute(
                b"UPDATE accounts SET used_bytes = used_bytes -"
                b" (SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = %s) WHERE id = %s",
                (mailbox.id, account_id),
            )
            # Messages and expunged UIDs go with the mailbox (ON DELETE CASCADE); the subscription
            # stays (RFC 9051 §6.3.7: the subscription list holds names).
            await conn.execute(b"DELETE FROM mailboxes WHERE id = %s", (mailbox.id,))
            await delete_unreferenced_blobs(conn, blob_ids)
            return None, [Change(ChangeKind.MAILBOX_DELETED, account_id, mailbox.id)]

        await self._transaction(fn)

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        source = normalize_mailbox_name(old)
        target = normalize_mailbox_name(new)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            mailbox = await mailbox_by_name(conn, account_id, source)
            cursor = await conn.execute(
                b"SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, target)
            )
            if await cursor.fetchone() is not None:
                raise AlreadyExists(f"mailbox {target}")
            if target.startswith(source + HIERARCHY_DELIMITER):
                raise InvalidName("cannot rename a mailbox into itself")
            changes = await _ensure_parents(conn, account_id, target)
            if source == "INBOX":
                # RFC 9051 §6.3.6: renaming INBOX moves its messages to a new mailbox and leaves
                # INBOX (and its inferiors) in place, empty.
                created = await insert_mailbox(conn, account_id, target, None)
                changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, created.id))
                locked = await lock_mailboxes(conn, [mailbox.id, created.id])
                cursor = await conn.execute(b"SELECT uid FROM messages WHERE mailbox_id = %s", (mailbox.id,))
                uids = [row[0] for row in await cursor.fetchall()]
                if uids:
                    result, copy_changes = await copy_rows(
                        conn, locked[mailbox.id], uids, locked[created.id], check_quota=False
                    )
                    changes += copy_changes
                    changes += (await expunge_rows(conn, locked[mailbox.id], [p[0] for p in result.pairs]))[1]
                return None, changes
            prefix = source + HIERARCHY_DELIMITER
            cursor = await conn.execute(
                b"SELECT id, name FROM mailboxes WHERE account_id = %s AND left(name, %s) = %s ORDER BY id",
                (account_id, len(prefix), prefix),
            )
            children = await cursor.fetchall()
            renames = [(mailbox.id, source, target)] + [
                (child_id, child_name, target + child_name[len(source) :])
                for child_id, child_name in children
            ]
            for mailbox_id, old_name, new_name in renames:
                try:
                    async with conn.transaction():  # a savepoint: the error below leaves it alone
                        await conn.execute(
                            b"UPDATE mailboxes SET name = %s WHERE id = %s", (new_name, mailbox_id)
                        )
                except errors.UniqueViolation:
                    raise AlreadyExists(f"mailbox {new_name}") from None
                # The subscription follows the mailbox (a name left behind would list as \NonExistent).
                cursor = await conn.execute(
                    b"DELETE FROM subscriptions WHERE account_id = %s AND name = %s", (account_id, old_name)
                )
                if cursor.rowcount:
                    await _subscribe(conn, account_id, new_name)
                changes.append(Change(ChangeKind.MAILBOX_RENAMED, account_id, mailbox_id))
            return None, changes

        await self._transaction(fn)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        normalized = normalize_mailbox_name(name)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"SELECT 1 FROM mailboxes WHERE account_id = %s AND name = %s", (account_id, normalized)
            )
            exists = await cursor.fetchone() is not None
            if subscribed:
                if not exists:
                    raise NotFound(f"mailbox {normalized}")  # RFC 9051 §6.3.7: the server MAY check
                await _subscribe(conn, account_id, normalized)
                return None, []
            cursor = await conn.execute(
                b"DELETE FROM subscriptions WHERE account_id = %s AND name = %s", (account_id, normalized)
            )
            if not cursor.rowcount and not exists:
                raise NotFound(f"mailbox {normalized}")
            return None, []

        await self._transaction(fn)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = await self._fetchall(
            'SELECT name FROM subscriptions WHERE account_id = %s ORDER BY name COLLATE "C"', (account_id,)
        )
        return [row[0] for row in rows]

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
        # One statement, so one snapshot: the counts and the mailbox's numbers agree.
        row = await self._fetchone(
            f"SELECT {MAILBOX_COLUMNS}, c.messages, c.unseen, c.size, c.deleted, c.recent FROM mailboxes,"
            " LATERAL (SELECT count(*), count(*) FILTER (WHERE NOT seen), coalesce(sum(size), 0),"
            " count(*) FILTER (WHERE deleted), count(*) FILTER (WHERE uid >= mailboxes.recent_uid)"
            " FROM messages WHERE mailbox_id = mailboxes.id) AS c(messages, unseen, size, deleted, recent)"
            " WHERE mailboxes.id = %s",
            (mailbox_id,),
        )
        if row is None:
            raise NotFound(f"mailbox {mailbox_id}")
        return MailboxStatus(
            mailbox_from_row(row[:8]),
            messages=int(row[8]),
            unseen=int(row[9]),
            size=int(row[10]),
            deleted=int(row[11]),
            recent=int(row[12]),
        )
