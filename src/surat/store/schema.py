"""SQLite schema migrations for the embedded store, applied in order at `SQLiteStore.open()`.

`PRAGMA user_version` holds the number of migrations applied. Never edit a released migration:
append a new one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE domains (
        name TEXT PRIMARY KEY
    ) WITHOUT ROWID;

    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL UNIQUE,
        domain TEXT NOT NULL REFERENCES domains(name),
        password_hash TEXT NOT NULL,
        scram_salt BLOB,
        scram_iterations INTEGER,
        scram_stored_key BLOB,
        scram_server_key BLOB,
        quota_bytes INTEGER,
        used_bytes INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX accounts_domain ON accounts(domain);

    CREATE TABLE aliases (
        source TEXT NOT NULL,
        target TEXT NOT NULL,
        domain TEXT NOT NULL REFERENCES domains(name),
        PRIMARY KEY (source, target)
    ) WITHOUT ROWID;
    CREATE INDEX aliases_target ON aliases(target);
    CREATE INDEX aliases_domain ON aliases(domain);

    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        highestmodseq INTEGER NOT NULL DEFAULT 1,
        special_use TEXT,
        subscribed INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account_id, name)
    );

    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        seen INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        internal_date REAL NOT NULL,
        internal_tz INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL,
        blob_id TEXT NOT NULL,
        info TEXT NOT NULL,
        UNIQUE (mailbox_id, uid)
    );
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE INDEX messages_blob ON messages(blob_id);

    CREATE TABLE expunged (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID;
    CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);

    CREATE TABLE queue (
        id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        size INTEGER NOT NULL,
        blob_id TEXT NOT NULL,
        body_offset INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        envid TEXT,
        ret TEXT,
        smtputf8 INTEGER NOT NULL DEFAULT 0,
        eight_bit INTEGER NOT NULL DEFAULT 0,
        authenticated_user TEXT
    );
    CREATE INDEX queue_due ON queue(next_attempt_at);
    CREATE INDEX queue_blob ON queue(blob_id);

    CREATE TABLE queue_recipients (
        queue_id TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        notify TEXT NOT NULL DEFAULT '',
        orcpt TEXT,
        last_reply TEXT,
        PRIMARY KEY (queue_id, position)
    );

    CREATE TABLE queue_attempts (
        queue_id TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        host TEXT,
        result TEXT,
        PRIMARY KEY (queue_id, number)
    );
    """,
    # 2: whether a message's last line ends with CRLF, recorded at delivery so that a POP3 login
    # (whose sizes count the CRLF RETR adds otherwise, RFC 1939 §3) reads no message file. NULL
    # for rows stored before: SQLiteStore.list_message_blobs computes and records those once.
    """
    ALTER TABLE messages ADD COLUMN ends_crlf INTEGER
    """,
    # 3: whether a recipient's delay notice (RFC 3464 Action: delayed) went out, so the runner
    # sends it once per recipient however many attempts fail after the threshold.
    """
    ALTER TABLE queue_recipients ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0
    """,
    # 4: subscriptions are names, not a mailbox property: RFC 9051 §6.3.7 says the server MUST NOT
    # remove a name from the subscription list when its mailbox goes away, and LIST (SUBSCRIBED)
    # reports such names as \NonExistent \Subscribed (RFC 5258 §3.1). Existing subscriptions move over.
    """
    CREATE TABLE subscriptions (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (account_id, name)
    ) WITHOUT ROWID;
    INSERT INTO subscriptions (account_id, name) SELECT account_id, name FROM mailboxes WHERE subscribed = 1;
    ALTER TABLE mailboxes DROP COLUMN subscribed
    """,
    # 5: the login-failure limiter's records (surat.authlimit), in the store so that every process
    # shares them and `surat blocks` can list and lift blocks while the server runs. `failures` is
    # the recent failure times, space-separated epoch seconds (at most the policy's max_failures).
    """
    CREATE TABLE auth_clients (
        key TEXT PRIMARY KEY,
        ip TEXT NOT NULL,
        failures TEXT NOT NULL DEFAULT '',
        blocked_until REAL NOT NULL DEFAULT 0,
        strikes INTEGER NOT NULL DEFAULT 0,
        last_failure REAL NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX auth_clients_last_failure ON auth_clients(last_failure);
    CREATE INDEX auth_clients_blocked_until ON auth_clients(blocked_until)
    """,
    # 6: the DKIM-Signature fields made when the message was queued (issue 18: signed once, not
    # at every attempt). NULL: not signed when queued (entries from before, DSNs, mail from the
    # MX port); the runner then signs at the first attempt if the sender is local, and stores it.
    """
    ALTER TABLE queue ADD COLUMN dkim_signature BLOB
    """,
    # 7: the first UID no session has yet claimed as \Recent (RFC 3501 §2.3.2: only one session is
    # notified of a message as recent). Messages with uid >= recent_uid are recent for the next
    # read-write SELECT. Existing mailboxes start with nothing recent rather than everything.
    """
    ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1;
    UPDATE mailboxes SET recent_uid = uidnext
    """,
    # 8: the per-user sending limiter's record (surat.smtpd.ratelimit), one row per message accepted
    # on submission, in the store so that every process and node counts the same hour (ARCHITECTURE
    # decision 10). Rows older than the limiter's window are deleted as new ones are written.
    """
    CREATE TABLE sent_messages (
        user TEXT NOT NULL,
        sent_at REAL NOT NULL,
        recipients INTEGER NOT NULL
    );
    CREATE INDEX sent_messages_user ON sent_messages(user, sent_at);
    CREATE INDEX sent_messages_sent_at ON sent_messages(sent_at)
    """,
    # 9: the MTA-STS policy cache (RFC 8461 §5.1, surat.delivery.stspolicies): one row per policy
    # domain, replaced on refetch, in the store so that a policy outlives restarts.
    """
    CREATE TABLE sts_policies (
        domain TEXT PRIMARY KEY,
        policy_id TEXT NOT NULL,
        policy TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sts_policies_expires_at ON sts_policies(expires_at)
    """,
    # 10: administrators (issue 13): accounts that may log into the admin console (`surat user admin`).
    """
    ALTER TABLE accounts ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0
    """,
    # 11: Sieve (issue 14): each account's named scripts, at most one active (the partial unique
    # index), and the vacation memory: when a reply last went to a sender for a :handle (RFC 5230 §4.2).
    # Rows older than the longest period are pruned as new ones are written.
    """
    CREATE TABLE sieve_scripts (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        text TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts(account_id) WHERE active;

    CREATE TABLE vacation_replies (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        sender TEXT NOT NULL,
        handle TEXT NOT NULL,
        replied_at REAL NOT NULL,
        PRIMARY KEY (account_id, sender, handle)
    ) WITHOUT ROWID;
    CREATE INDEX vacation_replies_replied_at ON vacation_replies(replied_at)
    """,
    # 12 (issue 16): what `surat import` brought into a mailbox, by the SHA-256 of
    # the message as stored (CRLF line endings), so that a second run skips what the first imported.
    # The uid is the message it became: `surat store verify` checks that body against the digest. Rows
    # stay when the message is expunged (a re-run must not bring back what the user deleted); they go
    # with the mailbox.
    """
    CREATE TABLE imported_messages (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        digest BLOB NOT NULL,
        uid INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, digest)
    ) WITHOUT ROWID
    """,
    # 13: TLS-RPT (RFC 8460, surat.delivery.tlsrpt): session counts per policy domain, day, policy and
    # failure details (the key of the §4.4 aggregation), and one claim per (domain, day) report so that
    # only one process or node sends it. Days older than a week are deleted as reports are claimed.
    """
    CREATE TABLE tls_results (
        day TEXT NOT NULL,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        policy_string TEXT NOT NULL,
        mx_host TEXT NOT NULL,
        result_type TEXT NOT NULL,
        sending_mta_ip TEXT NOT NULL,
        receiving_mx_hostname TEXT NOT NULL,
        receiving_ip TEXT NOT NULL,
        failure_reason_code TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, result_type,
                     sending_mta_ip, receiving_mx_hostname, receiving_ip, failure_reason_code)
    ) WITHOUT ROWID;
    CREATE TABLE tls_reports (
        policy_domain TEXT NOT NULL,
        day TEXT NOT NULL,
        PRIMARY KEY (policy_domain, day)
    ) WITHOUT ROWID
    """,
    # 14: REQUIRETLS (RFC 8689 §4.1): the MAIL FROM parameter, kept with the queue entry, so that the
    # relay honours it at every attempt.
    """
    ALTER TABLE queue ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0
    """,
    # 15: app passwords (issue 13): named per-account secrets for IMAP/POP3/SMTP, never the web login.
    # `digest` is SHA-256 of a server-generated password (surat.apppasswords explains why no Argon2);
    # times are epoch seconds.
    """
    CREATE TABLE app_passwords (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used REAL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX app_passwords_digest ON app_passwords(digest)
    """,
)


class SchemaTooNew(Exception):
    """The database was written by a newer Surat than this one."""


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Apply pending migrations up to version `target` (default: all), each in its own transaction;
    returns the resulting version. A smaller `target` builds an older schema, for migration tests."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise SchemaTooNew(f"database schema version {version} is newer than this Surat ({len(MIGRATIONS)})")
    end = len(MIGRATIONS) if target is None else target
    for number in range(version, end):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return max(version, end)


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; split so that a migration is one transaction.
    return [s.strip() for s in script.split(";") if s.strip()]
