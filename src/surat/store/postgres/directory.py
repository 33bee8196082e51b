"""The PostgreSQL store's directory: domains, accounts (password hashes, SCRAM keys, quotas), aliases,
credential lookups, and the two tables every node shares for abuse limits: `auth_clients` (the
login-failure limiter) and `sent_messages` (per-user sending limits). Names are normalised exactly as
the SQLite store does (surat.store.common), so both backends accept and refuse the same names."""

# ruff: noqa: S608 -- SQL text is built only from constant column lists and "%s" placeholders.

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import errors

from surat.store.base import (
    DEFAULT_MAILBOXES,
    MAX_APP_PASSWORDS,
    MAX_LOOKUP_CANDIDATES,
    Account,
    Alias,
    AlreadyExists,
    AppPassword,
    AuthClientState,
    CachedStsPolicy,
    Change,
    ChangeKind,
    Credentials,
    InvalidName,
    LimitReached,
    NotFound,
    RecipientLookup,
    ScramCredentials,
    StoreError,
    TlsResultCount,
)
from surat.store.common import (
    ADD_TLS_RESULT,
    CLAIM_TLS_REPORT,
    FORGET_TLS_RESULTS,
    SELECT_TLS_RESULTS,
    normalize_address,
    normalize_domain,
    postgres_placeholders,
    tls_result_count,
    tls_result_row,
)
from surat.store.postgres.mailboxes import insert_mailbox
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.postgres.rows import delete_unreferenced_blobs

_ACCOUNT_COLUMNS = "id, address, quota_bytes, is_admin"
_AUTH_COLUMNS = "key, ip, failures, blocked_until, strikes, last_failure"
# Advisory lock keys of update_auth_client live in their own 32-bit class (the two-key form of
# pg_advisory_xact_lock), apart from the schema migration's 64-bit key.
_AUTH_LOCK_CLASS = 0x53754175  # "SuAu"


def _account(row: tuple[Any, ...]) -> Account:
    return Account(id=row[0], address=row[1], quota_bytes=row[2], is_admin=bool(row[3]))


_APP_PASSWORD_COLUMNS = "id, account_id, name, created_at, last_used"  # noqa: S105


def _app_password(row: tuple[Any, ...]) -> AppPassword:
    return AppPassword(id=row[0], account_id=row[1], name=row[2], created_at=row[3], last_used=row[4])


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _auth_client(row: tuple[Any, ...]) -> AuthClientState:
    return AuthClientState(
        key=row[0],
        ip=row[1],
        failures=tuple(moment.timestamp() for moment in row[2]),
        blocked_until=row[3].timestamp(),
        strikes=row[4],
        last_failure=row[5].timestamp(),
    )


def _scram_values(credentials: Credentials) -> tuple[Any, ...]:
    scram = credentials.scram_sha256
    if scram is None:
        return (credentials.password_hash, None, None, None, None)
    return (credentials.password_hash, scram.salt, scram.iterations, scram.stored_key, scram.server_key)


class DirectoryStore(PooledStore):
    # ------------------------------------------------------------------------------ domains

    async def add_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            try:
                await conn.execute(b"INSERT INTO domains (name) VALUES (%s)", (domain,))
            except errors.UniqueViolation:
                raise AlreadyExists(f"domain {domain}") from None
            return None, []

        await self._transaction(fn)

    async def delete_domain(self, name: str) -> None:
        domain = normalize_domain(name)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            # FOR UPDATE: an account added concurrently waits (its foreign key locks the domain row).
            cursor = await conn.execute(b"SELECT 1 FROM domains WHERE name = %s FOR UPDATE", (domain,))
            if await cursor.fetchone() is None:
                raise NotFound(f"domain {domain}")
            cursor = await conn.execute(b"SELECT count(*) FROM accounts WHERE domain = %s", (domain,))
            row = await cursor.fetchone()
            accounts = row[0] if row is not None else 0
            if accounts:
                raise StoreError(f"domain {domain} still has {accounts} account(s)")
            await conn.execute(b"DELETE FROM aliases WHERE domain = %s", (domain,))
            await conn.execute(b"DELETE FROM domains WHERE name = %s", (domain,))
            return None, []

        await self._transaction(fn)

    async def list_domains(self) -> list[str]:
        return [row[0] for row in await self._fetchall("SELECT name FROM domains ORDER BY name")]

    async def is_local_domain(self, name: str) -> bool:
        try:
            domain = normalize_domain(name)
        except InvalidName:
            return False
        return await self._fetchone("SELECT 1 FROM domains WHERE name = %s", (domain,)) is not None

    # ------------------------------------------------------------------------------ accounts

    async def add_account(self, address: str, credentials: Credentials) -> Account:
        addr = normalize_address(address)
        domain = addr.rpartition("@")[2]

        async def fn(conn: Connection) -> tuple[Account, list[Change]]:
            try:
                cursor = await conn.execute(
                    b"INSERT INTO accounts (address, domain, password_hash, scram_salt, scram_iterations,"
                    b" scram_stored_key, scram_server_key) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (addr, domain, *_scram_values(credentials)),
                )
            except errors.UniqueViolation:
                raise AlreadyExists(f"account {addr}") from None
            except errors.ForeignKeyViolation:
                raise NotFound(f"domain {domain} is not a local domain") from None
            row = await cursor.fetchone()
            assert row is not None
            account_id = int(row[0])
            changes = []
            for name, special_use in DEFAULT_MAILBOXES:
                mailbox = await insert_mailbox(conn, account_id, name, special_use)
                changes.append(Change(ChangeKind.MAILBOX_CREATED, account_id, mailbox.id))
            return Account(account_id, addr, None), changes

        return await self._transaction(fn)

    async def delete_account(self, address: str) -> None:
        addr = normalize_address(address)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(b"SELECT id FROM accounts WHERE address = %s", (addr,))
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"account {addr}")
            # The account's mailboxes first, in the store's lock order (rows.py), so that no delivery
            # into one of them is half-way when the rows go.
            cursor = await conn.execute(
                b"SELECT id FROM mailboxes WHERE account_id = %s ORDER BY id FOR UPDATE", (row[0],)
            )
            await cursor.fetchall()
            cursor = await conn.execute(
                b"SELECT DISTINCT m.blob_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                b" WHERE b.account_id = %s",
                (row[0],),
            )
            blob_ids = [r[0] for r in await cursor.fetchall()]
            await conn.execute(b"DELETE FROM accounts WHERE id = %s", (row[0],))  # cascades to mailboxes
            await delete_unreferenced_blobs(conn, blob_ids)
            return None, []

        await self._transaction(fn)

    async def get_account(self, address: str) -> Account | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = await self._fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE address = %s", (addr,))
        return _account(row) if row is not None else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        row = await self._fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = %s", (account_id,))
        return _account(row) if row is not None else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain is None:
            rows = await self._fetchall(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY address")
        else:
            rows = await self._fetchall(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE domain = %s ORDER BY address",
                (normalize_domain(domain),),
            )
        return [_account(row) for row in rows]

    async def get_credentials(self, address: str) -> tuple[Account, Credentials] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = await self._fetchone(
            "SELECT id, address, quota_bytes, is_admin, password_hash, scram_salt, scram_iterations,"
            " scram_stored_key, scram_server_key FROM accounts WHERE address = %s",
            (addr,),
        )
        if row is None:
            return None
        scram = None
        if row[5] is not None:
            scram = ScramCredentials(
                salt=bytes(row[5]), iterations=row[6], stored_key=bytes(row[7]), server_key=bytes(row[8])
            )
        return _account(row), Credentials(password_hash=row[4], scram_sha256=scram)

    async def set_credentials(self, address: str, credentials: Credentials) -> None:
        addr = normalize_address(address)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"UPDATE accounts SET password_hash = %s, scram_salt = %s, scram_iterations = %s,"
                b" scram_stored_key = %s, scram_server_key = %s WHERE address = %s",
                (*_scram_values(credentials), addr),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, []

        await self._transaction(fn)

    async def set_admin(self, address: str, is_admin: bool) -> None:
        addr = normalize_address(address)

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"UPDATE accounts SET is_admin = %s WHERE address = %s", (is_admin, addr)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, []

        await self._transaction(fn)

    async def set_quota(self, address: str, quota_bytes: int | None) -> None:
        addr = normalize_address(address)
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError("quota must be >= 0")

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"UPDATE accounts SET quota_bytes = %s WHERE address = %s", (quota_bytes, addr)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"account {addr}")
            return None, []

        await self._transaction(fn)

    async def account_usage(self, account_id: int) -> int:
        row = await self._fetchone("SELECT used_bytes FROM accounts WHERE id = %s", (account_id,))
        if row is None:
            raise NotFound(f"account {account_id}")
        return int(row[0])

    # ------------------------------------------------------------------------------ app passwords

    async def add_app_password(self, account_id: int, name: str, digest: str) -> AppPassword:
        async def fn(conn: Connection) -> tuple[AppPassword, list[Change]]:
            # The account row locked: two nodes adding at once cannot both pass the count.
            cursor = await conn.execute(b"SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
            if await cursor.fetchone() is None:
                raise NotFound(f"account {account_id}")
            cursor = await conn.execute(
                b"SELECT count(*) FROM app_passwords WHERE account_id = %s", (account_id,)
            )
            count = await cursor.fetchone()
            if count is not None and count[0] >= MAX_APP_PASSWORDS:
                raise LimitReached(f"at most {MAX_APP_PASSWORDS} app passwords per account")
            try:
                cursor = await conn.execute(
                    b"INSERT INTO app_passwords (account_id, name, digest, created_at)"
                    b" VALUES (%s, %s, %s, now()) RETURNING " + _APP_PASSWORD_COLUMNS.encode(),
                    (account_id, name, digest),
                )
            except errors.UniqueViolation:
                raise AlreadyExists(f"app password {name}") from None
            row = await cursor.fetchone()
            assert row is not None
            return _app_password(row), []

        return await self._transaction(fn)

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        rows = await self._fetchall(
            f"SELECT {_APP_PASSWORD_COLUMNS} FROM app_passwords WHERE account_id = %s ORDER BY name",
            (account_id,),
        )
        return [_app_password(row) for row in rows]

    async def delete_app_password(self, account_id: int, name: str) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            cursor = await conn.execute(
                b"DELETE FROM app_passwords WHERE account_id = %s AND name = %s", (account_id, name)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"app password {name}")
            return None, []

        await self._transaction(fn)

    async def find_app_password(self, address: str, digest: str) -> tuple[Account, AppPassword] | None:
        try:
            addr = normalize_address(address)
        except InvalidName:
            return None
        row = await self._fetchone(
            "SELECT a.id, a.address, a.quota_bytes, a.is_admin, p.id, p.account_id, p.name, p.created_at,"
            " p.last_used FROM app_passwords p JOIN accounts a ON a.id = p.account_id"
            " WHERE p.digest = %s AND a.address = %s",
            (digest, addr),
        )
        return (_account(row[:4]), _app_password(row[4:])) if row else None

    async def app_password_used(self, app_password_id: int, when: datetime) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            await conn.execute(
                b"UPDATE app_passwords SET last_used = %s WHERE id = %s", (when, app_password_id)
            )
            return None, []

        await self._transaction(fn)

    # ------------------------------------------------------------------------------ login failures

    async def get_auth_client(self, key: str) -> AuthClientState | None:
        row = await self._fetchone(f"SELECT {_AUTH_COLUMNS} FROM auth_clients WHERE key = %s", (key,))
        return _auth_client(row) if row is not None else None

    async def update_auth_client(
        self,
        key: str,
        update: Callable[[AuthClientState | None], AuthClientState | None],
        *,
        forget_before: float,
    ) -> AuthClientState | None:
        # The key's record is read and replaced under a transaction-level advisory lock on the key: two
        # nodes counting failures of one client at once must not both read 4 and both write 5. (A row
        # lock cannot serve: the first failure has no row to lock yet.) crc32 spreads keys over the
        # lock space; two keys sharing a lock only wait for each other.
        lock_key = zlib.crc32(key.encode("utf-8", "surrogatepass")) - 2**31  # a signed int4

        async def fn(conn: Connection) -> tuple[AuthClientState | None, list[Change]]:
            await conn.execute(b"SELECT pg_advisory_xact_lock(%s, %s)", (_AUTH_LOCK_CLASS, lock_key))
            cursor = await conn.execute(
                f"SELECT {_AUTH_COLUMNS} FROM auth_clients WHERE key = %s".encode(), (key,)
            )
            row = await cursor.fetchone()
            state = update(_auth_client(row) if row is not None else None)
            if state is None:
                await conn.execute(b"DELETE FROM auth_clients WHERE key = %s", (key,))
            else:
                await conn.execute(
                    f"INSERT INTO auth_clients ({_AUTH_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET ip = EXCLUDED.ip, failures = EXCLUDED.failures,"
                    " blocked_until = EXCLUDED.blocked_until, strikes = EXCLUDED.strikes,"
                    " last_failure = EXCLUDED.last_failure".encode(),
                    (
                        key,
                        state.ip,
                        [_moment(t) for t in state.failures],
                        _moment(state.blocked_until),
                        state.strikes,
                        _moment(state.last_failure),
                    ),
                )
            forget = _moment(forget_before)
            await conn.execute(
                b"DELETE FROM auth_clients WHERE last_failure < %s AND blocked_until < %s", (forget, forget)
            )
            return state, []

        return await self._transaction(fn)

    async def list_auth_clients(self, blocked_after: float) -> list[AuthClientState]:
        rows = await self._fetchall(
            f"SELECT {_AUTH_COLUMNS} FROM auth_clients WHERE blocked_until > %s"
            " ORDER BY blocked_until DESC, key",
            (_moment(blocked_after),),
        )
        return [_auth_client(row) for row in rows]

    # ------------------------------------------------------------------------------ sending limits

    async def sending_totals(self, user: str, since: float) -> tuple[int, int]:
        # An index range: at most the user's messages of one window (the limiter refuses more).
        row = await self._fetchone(
            'SELECT count(*), coalesce(sum(recipients), 0) FROM sent_messages WHERE "user" = %s'
            " AND sent_at > %s",
            (user, _moment(since)),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def record_sending(self, user: str, at: float, recipients: int, *, forget_before: float) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            await conn.execute(
                b'INSERT INTO sent_messages ("user", sent_at, recipients) VALUES (%s, %s, %s)',
                (user, _moment(at), recipients),
            )
            # Bounds the table by one window's messages of all users.
            await conn.execute(b"DELETE FROM sent_messages WHERE sent_at < %s", (_moment(forget_before),))
            return None, []

        await self._transaction(fn)

    # ------------------------------------------------------------------------------ MTA-STS cache

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        row = await self._fetchone(
            "SELECT domain, policy_id, policy, fetched_at, expires_at FROM sts_policies WHERE domain = %s",
            (domain.lower(),),
        )
        if row is None:
            return None
        return CachedStsPolicy(row[0], row[1], row[2], row[3].timestamp(), row[4].timestamp())

    async def put_sts_policy(self, policy: CachedStsPolicy, *, forget_before: float) -> None:
        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            await conn.execute(
                b"INSERT INTO sts_policies (domain, policy_id, policy, fetched_at, expires_at)"
                b" VALUES (%s, %s, %s, %s, %s) ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id,"
                b" policy = excluded.policy, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at",
                (
                    policy.domain.lower(),
                    policy.policy_id,
                    policy.policy,
                    _moment(policy.fetched_at),
                    _moment(policy.expires_at),
                ),
            )
            # Bounds the table by the domains mailed within one max_age (a year at most).
            await conn.execute(b"DELETE FROM sts_policies WHERE expires_at < %s", (_moment(forget_before),))
            return None, []

        await self._transaction(fn)

    # ------------------------------------------------------------------------------ TLS-RPT

    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        rows = [tls_result_row(count) for count in counts]

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            async with conn.cursor() as cursor:
                await cursor.executemany(postgres_placeholders(ADD_TLS_RESULT), rows)
            return None, []

        if rows:
            await self._transaction(fn)

    async def tls_results(self, day: str) -> list[TlsResultCount]:
        rows = await self._fetchall(postgres_placeholders(SELECT_TLS_RESULTS).decode(), (day,))
        return [tls_result_count(row) for row in rows]

    async def claim_tls_report(self, policy_domain: str, day: str, *, forget_before: str) -> bool:
        async def fn(conn: Connection) -> tuple[bool, list[Change]]:
            for statement in FORGET_TLS_RESULTS:
                await conn.execute(postgres_placeholders(statement), (forget_before,))
            cursor = await conn.execute(postgres_placeholders(CLAIM_TLS_REPORT), (policy_domain.lower(), day))
            return cursor.rowcount == 1, []

        return await self._transaction(fn)

    # ------------------------------------------------------------------------------ aliases

    async def add_alias(self, source: str, target: str) -> None:
        src = normalize_address(source, allow_catchall=True)
        dst = normalize_address(target)
        domain = src.rpartition("@")[2]

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            try:
                await conn.execute(
                    b"INSERT INTO aliases (source, target, domain) VALUES (%s, %s, %s)", (src, dst, domain)
                )
            except errors.UniqueViolation:
                raise AlreadyExists(f"alias {src} -> {dst}") from None
            except errors.ForeignKeyViolation:
                raise NotFound(f"domain {domain} is not a local domain") from None
            return None, []

        await self._transaction(fn)

    async def delete_alias(self, source: str, target: str | None = None) -> None:
        src = normalize_address(source, allow_catchall=True)
        dst = normalize_address(target) if target is not None else None

        async def fn(conn: Connection) -> tuple[None, list[Change]]:
            if dst is None:
                cursor = await conn.execute(b"DELETE FROM aliases WHERE source = %s", (src,))
            else:
                cursor = await conn.execute(
                    b"DELETE FROM aliases WHERE source = %s AND target = %s", (src, dst)
                )
            if cursor.rowcount == 0:
                raise NotFound(f"alias {src}" + (f" -> {dst}" if dst else ""))
            return None, []

        await self._transaction(fn)

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        if domain is None:
            rows = await self._fetchall("SELECT source, target FROM aliases ORDER BY source, target")
        else:
            rows = await self._fetchall(
                "SELECT source, target FROM aliases WHERE domain = %s ORDER BY source, target",
                (normalize_domain(domain),),
            )
        return [Alias(row[0], row[1]) for row in rows]

    async def alias_targets(self, source: str) -> list[str]:
        try:
            src = normalize_address(source, allow_catchall=True)
        except InvalidName:
            return []
        rows = await self._fetchall("SELECT target FROM aliases WHERE source = %s ORDER BY target", (src,))
        return [row[0] for row in rows]

    async def lookup_recipient(self, domain: str, candidates: Sequence[str]) -> RecipientLookup:
        if len(candidates) > MAX_LOOKUP_CANDIDATES:
            raise ValueError(f"at most {MAX_LOOKUP_CANDIDATES} candidates")
        try:
            wanted_domain = normalize_domain(domain)
        except InvalidName:
            return RecipientLookup(domain_is_local=False)
        spelled: dict[str, str] = {}  # stored form -> as the caller spelled it
        for candidate in candidates:
            with contextlib.suppress(InvalidName):
                spelled.setdefault(normalize_address(candidate, allow_catchall=True), candidate)
        # One statement, one round trip (issue 12: RCPT read the domain, the aliases and the account
        # in three): kind 0 the domain, 1 an alias target, 2 an account.
        rows = await self._fetchall(
            "SELECT 0, NULL, NULL, NULL::bigint, NULL::text, NULL::bigint, NULL::boolean FROM domains"
            " WHERE name = %s UNION ALL SELECT 1, source, target, NULL, NULL, NULL, NULL FROM aliases"
            f" WHERE source = ANY(%s) UNION ALL SELECT 2, address, NULL, {_ACCOUNT_COLUMNS} FROM accounts"
            " WHERE address = ANY(%s) ORDER BY 1, 2, 3",
            (wanted_domain, list(spelled), list(spelled)),
        )
        if not rows or rows[0][0] != 0:
            return RecipientLookup(domain_is_local=False)
        found = RecipientLookup(domain_is_local=True)
        for kind, key, target, *account in rows[1:]:
            if kind == 1:
                found.alias_targets.setdefault(spelled[key], []).append(target)
            else:
                found.accounts[spelled[key]] = _account(tuple(account))
        return found

    async def aliases_of(self, target: str) -> list[str]:
        try:
            dst = normalize_address(target)
        except InvalidName:
            return []
        rows = await self._fetchall("SELECT source FROM aliases WHERE target = %s ORDER BY source", (dst,))
        return [row[0] for row in rows]
