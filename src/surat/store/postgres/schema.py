"""PostgreSQL schema migrations, applied by `surat store init`.

The table `schema_version` holds one row per applied migration; the schema's version is the highest.
Version 1 is the whole schema of the SQLite store at its migration 7 (src/surat/store/schema.py), in
PostgreSQL types, plus what several nodes on one database need: queue leases and node ids. Version 2
adds the installation secret and the DKIM keys, files in a SQLite store's data directory. Never edit
a released migration: append a new one.

Types: UIDs are 32-bit unsigned (RFC 9051 §2.3.1.1) and UIDVALIDITY too (§2.3.1.1), so both are
`bigint` with a range check; MODSEQs are positive 63-bit integers (RFC 7162 §7, mod-sequence-value),
exactly `bigint`'s positive range. Times are `timestamptz`. Message and queue bodies live in
`blob_chunks` as `bytea` pieces of at most BLOB_CHUNK_SIZE octets, so that a body is written and
streamed piece by piece rather than held whole in memory.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from surat.store.schema import SchemaTooNew

# The largest `blob_chunks.data`; the writer cuts bodies into pieces of this size (the CHECK enforces
# it), so reading one row never costs more memory than this.
BLOB_CHUNK_SIZE = 256 * 1024

# Two `surat store init` (or two nodes) upgrading at once: the second waits on this transaction-level
# advisory lock, then sees the first's version and does nothing. Any fixed 64-bit key will do.
MIGRATION_LOCK_KEY = 0x5375726174_01  # "Surat", 1

MIGRATIONS: tuple[str, ...] = (
    # 1: the full schema (the SQLite schema at its version 8, plus leases and nodes)
    f"""
    CREATE TABLE meta (
        key text PRIMARY KEY,
        value bigint NOT NULL
    );

    -- Each Surat process that serves from this database; a node id names the owner of a queue lease.
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        hostname text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        seen_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE domains (
        name text PRIMARY KEY
    );

    CREATE TABLE accounts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        address text NOT NULL UNIQUE,
        domain text NOT NULL REFERENCES domains(name),
        password_hash text NOT NULL,
        scram_salt bytea,
        scram_iterations integer,
        scram_stored_key bytea,
        scram_server_key bytea,
        quota_bytes bigint CHECK (quota_bytes >= 0),
        used_bytes bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX accounts_domain ON accounts(domain);

    CREATE TABLE aliases (
        source text NOT NULL,
        target text NOT NULL,
        domain text NOT NULL REFERENCES domains(name),
        PRIMARY KEY (source, target)
    );
    CREATE INDEX aliases_target ON aliases(target);
    CREATE INDEX aliases_domain ON aliases(domain);

    -- uidnext and highestmodseq are allocated by a row-locked UPDATE of the mailbox inside the
    -- delivering transaction (never a sequence), so UIDs appear in commit order on every node.
    CREATE TABLE mailboxes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name text NOT NULL,
        uidvalidity bigint NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
        uidnext bigint NOT NULL DEFAULT 1 CHECK (uidnext BETWEEN 1 AND 4294967296),
        highestmodseq bigint NOT NULL DEFAULT 1 CHECK (highestmodseq >= 1),
        special_use text,
        -- RFC 3501 §2.3.2: the first UID no session has claimed as \\Recent yet
        recent_uid bigint NOT NULL DEFAULT 1,
        UNIQUE (account_id, name)
    );

    -- The subscription list holds names, not mailboxes (RFC 9051 §6.3.7).
    CREATE TABLE subscriptions (
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name text NOT NULL,
        PRIMARY KEY (account_id, name)
    );

    CREATE TABLE blobs (
        id text PRIMARY KEY,
        size bigint NOT NULL CHECK (size >= 0),
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE blob_chunks (
        blob_id text NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
        position integer NOT NULL CHECK (position >= 0),
        data bytea NOT NULL CHECK (octet_length(data) <= {BLOB_CHUNK_SIZE}),
        PRIMARY KEY (blob_id, position)
    );

    CREATE TABLE messages (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid bigint NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
        modseq bigint NOT NULL CHECK (modseq >= 1),
        -- keywords and system flags, space-separated in sorted order, the SQLite store's spelling
        flags text NOT NULL DEFAULT '',
        seen boolean NOT NULL DEFAULT false,
        deleted boolean NOT NULL DEFAULT false,
        internal_date timestamptz NOT NULL,
        internal_tz integer NOT NULL DEFAULT 0,  -- the INTERNALDATE zone, minutes east of UTC
        size bigint NOT NULL CHECK (size >= 0),
        blob_id text NOT NULL REFERENCES blobs(id),
        -- MessageInfo.to_json() as written: text, not jsonb, which would reorder and re-space it
        info text NOT NULL,
        -- whether the last line ends with CRLF (POP3 sizes, RFC 1939 §3); NULL: not computed yet
        ends_crlf boolean,
        UNIQUE (mailbox_id, uid)
    );
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE INDEX messages_blob ON messages(blob_id);

    -- Expunged UIDs with their MODSEQ, for QRESYNC's VANISHED (RFC 7162 §3.2.10).
    CREATE TABLE expunged (
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);

    -- A runner claims due entries with SELECT ... FOR UPDATE SKIP LOCKED and records a lease (its
    -- node id and an expiry) before it delivers; another node takes an entry over only once the
    -- lease has expired, so an entry is never delivered by two nodes at once.
    CREATE TABLE queue (
        id text PRIMARY KEY,
        sender text NOT NULL,
        size bigint NOT NULL CHECK (size >= 0),
        blob_id text NOT NULL REFERENCES blobs(id),
        body_offset bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL,
        next_attempt_at timestamptz NOT NULL,
        envid text,
        ret text,
        smtputf8 boolean NOT NULL DEFAULT false,
        eight_bit boolean NOT NULL DEFAULT false,
        authenticated_user text,
        dkim_signature bytea,
        lease_owner text,
        lease_expires_at timestamptz,
        CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
    );
    CREATE INDEX queue_due ON queue(next_attempt_at);
    CREATE INDEX queue_blob ON queue(blob_id);
    CREATE INDEX queue_lease_owner ON queue(lease_owner) WHERE lease_owner IS NOT NULL;

    CREATE TABLE queue_recipients (
        queue_id text NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        position integer NOT NULL,
        address text NOT NULL,
        state text NOT NULL,
        notify text NOT NULL DEFAULT '',
        orcpt text,
        last_reply text,
        -- RFC 3464 Action: delayed sent for this recipient (once)
        delay_notified boolean NOT NULL DEFAULT false,
        PRIMARY KEY (queue_id, position)
    );

    CREATE TABLE queue_attempts (
        queue_id text NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        number integer NOT NULL,
        started_at timestamptz NOT NULL,
        node_id text,  -- who made it: start-up recovery interrupts only its own node's attempts
        host text,
        result text,
        PRIMARY KEY (queue_id, number)
    );

    -- The login-failure limiter (surat.authlimit), shared by every node.
    CREATE TABLE auth_clients (
        key text PRIMARY KEY,
        ip text NOT NULL,
        failures timestamptz[] NOT NULL DEFAULT '{{}}',
        blocked_until timestamptz NOT NULL DEFAULT 'epoch',
        strikes integer NOT NULL DEFAULT 0,
        last_failure timestamptz NOT NULL DEFAULT 'epoch'
    );
    CREATE INDEX auth_clients_last_failure ON auth_clients(last_failure);
    CREATE INDEX auth_clients_blocked_until ON auth_clients(blocked_until);

    -- Per-user sending counts (SQLite migration 8), shared by every node.
    CREATE TABLE sent_messages (
        "user" text NOT NULL,
        sent_at timestamptz NOT NULL,
        recipients integer NOT NULL CHECK (recipients >= 0)
    );
    CREATE INDEX sent_messages_user ON sent_messages("user", sent_at);
    CREATE INDEX sent_messages_sent_at ON sent_messages(sent_at)
    """,
    # 2: what every node must hold alike (issue 12), which the SQLite store keeps as files in the data
    # directory: the installation secret and the DKIM signing keys (postgres/keys.py). Whoever reads
    # these tables reads the private keys, as with the password hashes in `accounts`.
    """
    CREATE TABLE shared_secrets (
        name text PRIMARY KEY,
        value bytea NOT NULL CHECK (octet_length(value) >= 32)
    );

    -- No reference to `domains`: a deleted domain's keys stay (re-adding it signs with the key DNS
    -- may still publish, and a private key is the operator's to destroy).
    CREATE TABLE dkim_keys (
        domain text NOT NULL,
        selector text NOT NULL,
        algorithm text NOT NULL CHECK (algorithm IN ('rsa', 'ed25519')),
        private_pem bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (domain, selector)
    )
    """,
    # 3: the MTA-STS policy cache (RFC 8461 §5.1; SQLite migration 9), shared by every node so that a
    # policy fetched by one node is enforced by all (delivery/stspolicies.py).
    """
    CREATE TABLE sts_policies (
        domain text PRIMARY KEY,
        policy_id text NOT NULL,
        policy text NOT NULL,
        fetched_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX sts_policies_expires_at ON sts_policies(expires_at)
    """,
    # 4: administrators (SQLite migration 10, issue 13): accounts that may log into the admin console.
    """
    ALTER TABLE accounts ADD COLUMN is_admin boolean NOT NULL DEFAULT false
    """,
    # 5: Sieve (issue 14; SQLite migration 11): each account's named scripts, at most one active, and the
    # vacation memory per (account, sender, :handle) (RFC 5230 §4.2), pruned as rows are written.
    """
    CREATE TABLE sieve_scripts (
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name text NOT NULL,
        text text NOT NULL,
        active boolean NOT NULL DEFAULT false,
        version bigint NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts(account_id) WHERE active;

    CREATE TABLE vacation_replies (
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        sender text NOT NULL,
        handle text NOT NULL,
        replied_at timestamptz NOT NULL,
        PRIMARY KEY (account_id, sender, handle)
    );
    CREATE INDEX vacation_replies_replied_at ON vacation_replies(replied_at)
    """,
    # 6 (issue 16; SQLite migration 12): what `surat import` brought into a
    # mailbox, by the SHA-256 of the message as stored, and the uid it became (store verify checks
    # the body against it). Kept when the message is expunged, removed with the mailbox.
    """
    CREATE TABLE imported_messages (
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        digest bytea NOT NULL CHECK (octet_length(digest) = 32),
        uid bigint NOT NULL,
        PRIMARY KEY (mailbox_id, digest)
    )
    """,
    # 7: TLS-RPT counts and report claims (SQLite migration 13, surat.delivery.tlsrpt): every node adds
    # to the same counts, and the (policy_domain, day) key lets one node only send a day's report.
    """
    CREATE TABLE tls_results (
        day text NOT NULL,
        policy_domain text NOT NULL,
        policy_type text NOT NULL,
        policy_string text NOT NULL,
        mx_host text NOT NULL,
        result_type text NOT NULL,
        sending_mta_ip text NOT NULL,
        receiving_mx_hostname text NOT NULL,
        receiving_ip text NOT NULL,
        failure_reason_code text NOT NULL,
        sessions bigint NOT NULL,
        PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, result_type,
                     sending_mta_ip, receiving_mx_hostname, receiving_ip, failure_reason_code)
    );
    CREATE TABLE tls_reports (
        policy_domain text NOT NULL,
        day text NOT NULL,
        PRIMARY KEY (policy_domain, day)
    )
    """,
    # 8: REQUIRETLS (RFC 8689 §4.1) kept with the queue entry (SQLite migration 14).
    """
    ALTER TABLE queue ADD COLUMN requiretls boolean NOT NULL DEFAULT false
    """,
    # 9: app passwords (SQLite migration 15, issue 13): named per-account secrets for IMAP/POP3/SMTP,
    # never the web login; `digest` is SHA-256 of a server-generated password (surat.apppasswords).
    """
    CREATE TABLE app_passwords (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name text NOT NULL,
        digest text NOT NULL,
        created_at timestamptz NOT NULL,
        last_used timestamptz,
        UNIQUE (account_id, name)
    );
    CREATE INDEX app_passwords_digest ON app_passwords(digest)
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


async def schema_version(conn: psycopg.AsyncConnection[TupleRow]) -> int:
    """The version of the schema in the database: 0 when nothing is there yet."""
    cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    exists = await cursor.fetchone()
    if exists is None or not exists[0]:
        return 0
    cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


def check_not_too_new(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"database schema version {version} is newer than this Surat ({SCHEMA_VERSION})")


async def migrate(conn: psycopg.AsyncConnection[TupleRow], target: int | None = None) -> int:
    """Apply pending migrations up to version `target` (default: all), each in its own transaction
    under the migration lock; returns the resulting version. `conn` must be in autocommit mode."""
    end = SCHEMA_VERSION if target is None else target
    version = await schema_version(conn)
    check_not_too_new(version)
    while version < end:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute(_CREATE_VERSION_TABLE)
            # Read again under the lock: another process may have migrated meanwhile.
            version = await schema_version(conn)
            check_not_too_new(version)
            if version >= end:
                break
            # No parameters: psycopg sends the script as one simple query, all statements in this
            # transaction.
            await conn.execute(MIGRATIONS[version].encode())
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version + 1,))
            version += 1
    return version
