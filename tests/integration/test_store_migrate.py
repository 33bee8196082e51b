"""`surat store migrate --to DSN`: a SQLite store filled the real way (SMTP deliveries, IMAP APPEND,
STORE, EXPUNGE, mailboxes and subscriptions, an alias, a deferred relay entry, a blocked client) is
copied by the real `surat` program into the tests' private PostgreSQL cluster, and the two stores are
compared through the Store Protocol: what clients see (UIDVALIDITY, UIDs, MODSEQs, flags, dates,
bodies, QRESYNC changes, POP3 UIDLs) must be the same."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import re
import smtplib
import sqlite3
import ssl
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import DOMAIN, PASSWORD, USER, RunningServer, dev_certificates, make_config
from test_store_init import SQLITE_VERSION, surat

from old_schema import account_database_at
from pg_cluster import SUPERUSER_PASSWORD, PostgresCluster
from surat import apppasswords
from surat.config import postgresql_store
from surat.passwords import make_credentials
from surat.store import migrate as migrate_module
from surat.store.base import Mailbox, Store
from surat.store.migrate import MigrationFailed, Progress, migrate_to_postgresql
from surat.store.postgres.schema import BLOB_CHUNK_SIZE
from surat.store.postgres.store import PostgresStore
from surat.store.sqlite import BLOB_DIR, INDEX_FILE, SQLiteStore

BOB = f"bob@{DOMAIN}"
ALIAS = f"postmaster@{DOMAIN}"


def message(subject: str, body: str = "hello\r\n", sender: str = "carol@sender.example") -> bytes:
    return f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}".encode()


def tls(server: RunningServer) -> ssl.SSLContext:
    context = server.client_tls()
    context.check_hostname = False
    return context


def imap(server: RunningServer) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=tls(server), timeout=10)
    client.login(USER, PASSWORD)
    return client


def ok(result: tuple[str, Any]) -> Any:
    assert result[0] == "OK", result
    return result[1]


@dataclass(frozen=True)
class Filled:
    data_dir: Path
    config: Path
    uidl: list[bytes]  # POP3 UIDL of alice's maildrop, from the SQLite server before the migrate


def fill(tmp_path: Path, factory: pytest.TempPathFactory) -> Filled:
    dev_certificates(factory.getbasetemp())
    # Three failed logins block the client's address (the fourth is refused).
    config = make_config(tmp_path, limits={"auth_max_failures": 3, "auth_failure_delay": 0})
    server = RunningServer(config)
    try:
        server.add_domain(DOMAIN)
        server.add_user(USER)
        server.add_user(BOB)
        server.add_alias(ALIAS, USER)
        alice = server.call(server.store.get_account(USER))
        _, app_password = server.call(apppasswords.create(server.store, alice, "phone"))
        server.call(apppasswords.create(server.store, alice, "never used"))
        with smtplib.SMTP(
            "127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10
        ) as smtp:
            for n in range(4):
                smtp.sendmail("carol@sender.example", [USER], message(f"delivered {n}"))
            smtp.sendmail("carol@sender.example", [ALIAS, BOB], message("to the alias and bob"))
        client = imap(server)
        ok(client.create("Projects/2026"))
        ok(client.subscribe("Projects/2026"))
        ok(client.create("Unsubscribed"))
        ok(client.unsubscribe("Unsubscribed"))
        ok(client.create("Gone"))
        ok(client.delete("Gone"))  # its name stays subscribed (RFC 9051 §6.3.7)
        ok(
            client.append(
                "Projects/2026", r"(\Flagged $Important)", '"07-Mar-2026 09:15:00 +0530"', message("appended")
            )
        )
        # Larger than one PostgreSQL chunk: the body spans three blob_chunks rows.
        big = message("big", "x" * 100 + "\r\n") * (2 * BLOB_CHUNK_SIZE // 150 + 10)
        ok(client.append("INBOX", r"(\Seen)", '"01-Feb-2026 23:59:59 -0800"', big))
        ok(client.select("INBOX"))
        ok(client.uid("STORE", "1", "+FLAGS", r"(\Seen \Answered)"))
        ok(client.uid("STORE", "2", "+FLAGS", r"(\Deleted)"))
        ok(client.uid("STORE", "3", "+FLAGS", r"($Label1)"))
        ok(client.expunge())
        ok(client.uid("STORE", "3", "-FLAGS", r"($Label1)"))
        ok(client.uid("COPY", "1", "Projects/2026"))  # two messages on one body
        client.logout()
        with smtplib.SMTP(
            "127.0.0.1", server.port("submission"), local_hostname="client.example", timeout=10
        ) as smtp:
            smtp.starttls(context=tls(server))
            smtp.login(USER, app_password)  # an app password, so that it has a last use to copy
            smtp.sendmail(USER, ["dave@remote.example"], message("to the relay", sender=USER))
        pop = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=tls(server), timeout=10)
        pop.user(USER)
        pop.pass_(PASSWORD)
        uidl = [line.split()[1] for line in pop.uidl()[1]]
        pop.quit()
        for _ in range(4):  # three failures, then the block refuses the fourth
            refused: imaplib.IMAP4_SSL | None = None
            with pytest.raises((imaplib.IMAP4.error, OSError)):
                refused = imaplib.IMAP4_SSL(
                    "127.0.0.1", server.port("imaps"), ssl_context=tls(server), timeout=10
                )
                refused.login(USER, "wrong password")
            if refused is not None:
                refused.shutdown()  # else the server's stop waits for the connection to time out
        wait_for_attempt(server)
        assert server.call(server.store.list_auth_clients(time.time())), "the client was not blocked"
        server.call(sieve_data(server.store))
    finally:
        server.stop()
    # The config `surat` reads: the server's data directory, nothing else needed by migrate.
    config_file = tmp_path / "surat.toml"
    config_file.write_text(f'hostname = "mail.example.test"\ndata_dir = "{config.data_dir}"\n')
    return Filled(config.data_dir, config_file, uidl)


VACATION_SENDER = "carol@sender.example"


async def sieve_data(store: Store) -> None:
    """A Sieve script (active) and a vacation reply remembered: made after the deliveries above, which
    they would otherwise change."""
    alice = await store.get_account(USER)
    assert alice is not None
    await store.put_sieve_script(alice.id, "filters", 'require "fileinto";\nfileinto "Projects";\n')
    await store.activate_sieve_script(alice.id, "filters")
    assert await store.claim_vacation_reply(alice.id, VACATION_SENDER, "away", time.time(), 86400)


def wait_for_attempt(server: RunningServer) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = server.call(server.store.list_queue())
        if entries and entries[0].attempts and entries[0].attempts[-1].result is not None:
            return
        time.sleep(0.1)
    raise AssertionError("the relay entry got no attempt")


async def pop3_uidls(store: Store, address: str) -> list[bytes]:
    """POP3's UIDLs of a maildrop (INBOX), as pop3d/service.py makes them: "<uidvalidity>.<uid>"."""
    account = await store.get_account(address)
    assert account is not None
    inbox = await store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    return [f"{inbox.uidvalidity}.{blob.uid}".encode() for blob in await store.list_message_blobs(inbox.id)]


def migrate(config: Path, cluster: PostgresCluster, database: str) -> subprocess.CompletedProcess[str]:
    """`surat store migrate` with the password in a file, as an operator would run it."""
    password_file = config.parent / "target.pw"
    password_file.write_text(SUPERUSER_PASSWORD + "\n")
    dsn = cluster.dsn(database, with_password=False)
    return surat(config, "store", "migrate", "--to", dsn, "--password-file", str(password_file))


async def snapshot(store: Store) -> dict[str, Any]:
    """Everything a client or an operator can read from a store through the Store Protocol."""
    out: dict[str, Any] = {
        "domains": await store.list_domains(),
        "accounts": await store.list_accounts(),
        "aliases": await store.list_aliases(),
        "queue": await store.list_queue(),
        # epoch seconds: PostgreSQL keeps microseconds (the SQLite store's datetimes have no more)
        "blocks": [
            (c.key, c.ip, [round(t, 6) for t in c.failures], round(c.blocked_until, 6), c.strikes)
            for c in await store.list_auth_clients(0)
        ],
        "sending": await store.sending_totals(USER, 0),
        # What every node shares (docs/shared-keys.md): files on SQLite, rows on PostgreSQL.
        "secret": await store.keys.installation_secret(),
    }
    for account in out["accounts"]:
        out[f"sieve {account.address}"] = await store.list_sieve_scripts(account.id)
        # False without a write when the reply is remembered (copied); a missing row would claim it.
        out[f"vacation {account.address}"] = await store.claim_vacation_reply(
            account.id, VACATION_SENDER, "away", time.time(), 10 * 366 * 86400
        )
    for domain in out["domains"]:
        out[f"dkim {domain}"] = await store.keys.dkim_keys(domain)
    for account in out["accounts"]:
        out[f"credentials {account.address}"] = await store.get_credentials(account.address)
        out[f"subscriptions {account.address}"] = await store.list_subscriptions(account.id)
        out[f"app passwords {account.address}"] = await store.list_app_passwords(account.id)
        out[f"usage {account.address}"] = await store.account_usage(account.id)
        out[f"uidl {account.address}"] = await pop3_uidls(store, account.address)
        for mailbox in await store.list_mailboxes(account.id):
            key = f"{account.address} {mailbox.name}"
            out[key] = mailbox
            out[f"{key} status"] = await store.mailbox_status(mailbox.id)
            summaries = await store.list_messages(mailbox.id)
            out[f"{key} summaries"] = summaries
            records = await store.get_messages(mailbox.id, [s.uid for s in summaries])
            out[f"{key} records"] = records
            out[f"{key} bodies"] = [await store.blobs.read(r.blob_id) for r in records]
            out[f"{key} blobs"] = await store.list_message_blobs(mailbox.id)
            for since in range(mailbox.highestmodseq + 1):  # QRESYNC from every point in its history
                out[f"{key} changes since {since}"] = await store.changes_since(mailbox.id, since)
    for entry in out["queue"]:
        out[f"queue body {entry.id}"] = await store.blobs.read(entry.blob_id)
    return out


async def snapshots(
    data_dir: Path, cluster: PostgresCluster, database: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    source, target = SQLiteStore(data_dir), PostgresStore(cluster.dsn(database))
    await source.open(recover=False)
    await target.open()
    try:
        return await snapshot(source), await snapshot(target)
    finally:
        await target.close()
        await source.close()


@pytest.fixture
def filled(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return fill(tmp_path, tmp_path_factory)


def target_rows(cluster: PostgresCluster, database: str) -> dict[str, int]:
    tables = ("domains", "accounts", "mailboxes", "messages", "blobs", "blob_chunks", "queue")
    with psycopg.connect(cluster.dsn(database)) as conn:
        query = " UNION ALL ".join(f"SELECT '{table}', count(*) FROM {table}" for table in tables)
        return {table: count for table, count in conn.execute(query).fetchall()}


def test_migrate_copies_everything_clients_see(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    result = migrate(filled.config, pg_cluster, pg_database)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    target = f"user=surat dbname={pg_database} host=127.0.0.1 port={pg_cluster.port}"
    counts = {
        "meta": 1,
        "domains": 1,
        "accounts": 2,
        "aliases": 1,
        "mailboxes": 15,  # six each, Projects, Projects/2026, Unsubscribed
        "subscriptions": 15,  # bob's six, alice's nine: Gone stays, Unsubscribed is not
        "app_passwords": 2,
        "blobs": 7,  # 4 + 1 delivered (one expunged, one shared by the alias and bob), 2 appended, 1 relayed; the copy shares
        "messages": 8,
        "expunged": 1,
        "queue": 1,
        "queue_recipients": 1,
        "queue_attempts": 1,
        "auth_clients": 1,
        "sent_messages": 1,
        "sieve_scripts": 1,
        "vacation_replies": 1,
        "imported_messages": 0,
        "shared_secrets": 1,
        "dkim_keys": 2,  # RSA and Ed25519, made when alice's submission was signed
    }
    assert lines[0] == f"store migrate: sqlite {filled.data_dir} -> postgresql {target}"
    assert lines[1:21] == [f"  {table:<17} {rows:>9} rows" for table, rows in counts.items()]
    assert lines[21] == "  message bodies            7 (0.6 MB), SHA-256 verified"
    assert re.fullmatch(r"copied and verified in \d+\.\d s: 8 messages, \d+ messages/s", lines[22])
    assert lines[23:] == [
        "next: stop surat (if it runs), set in the config",
        "  [store]",
        '  backend = "postgresql"',
        f'  dsn = "{target}"',
        f'  dsn_password_file = "{filled.config.parent / "target.pw"}"',
        "then start surat",
    ]

    source, target_view = asyncio.run(snapshots(filled.data_dir, pg_cluster, pg_database))
    assert source.keys() == target_view.keys()
    for key in source:
        assert target_view[key] == source[key], key
    # What the fill made is there (a comparison of two empty stores would pass too).
    assert [a.address for a in source["accounts"]] == [f"alice@{DOMAIN}", BOB]
    assert source["aliases"][0].source == ALIAS
    phone, never = sorted(source[f"app passwords {USER}"], key=lambda entry: entry.name != "phone")
    assert (phone.name, never.name, never.last_used) == ("phone", "never used", None)
    assert phone.last_used is not None
    assert len(source["secret"]) >= 32
    assert sorted(k.algorithm for k in source[f"dkim {DOMAIN}"]) == ["ed25519", "rsa"]
    assert source["blocks"] and source["blocks"][0][1] == "127.0.0.1"
    assert len(source["queue"]) == 1 and source["queue"][0].attempts
    assert source[f"uidl {USER}"] == filled.uidl and len(filled.uidl) == 5
    projects = source[f"{USER} Projects/2026 summaries"]
    assert [sorted(s.flags) for s in projects] == [["$Important", "\\Flagged"], ["\\Answered", "\\Seen"]]
    assert projects[0].internal_date.isoformat() == "2026-03-07T09:15:00+05:30"
    assert sorted(source[f"subscriptions {USER}"]) == [
        "Archive",
        "Drafts",
        "Gone",
        "INBOX",
        "Junk",
        "Projects",
        "Projects/2026",
        "Sent",
        "Trash",
    ]
    inbox_changes = source[f"{USER} INBOX changes since 0"]
    assert inbox_changes.vanished == [2]
    assert any(len(body) > 2 * BLOB_CHUNK_SIZE for body in source[f"{USER} INBOX bodies"])


def test_ids_and_uidvalidities_continue_after_the_copied_ones(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    assert migrate(filled.config, pg_cluster, pg_database).returncode == 0
    with sqlite3.connect(filled.data_dir / INDEX_FILE) as conn:
        max_account, max_mailbox, max_message, last_uidvalidity = conn.execute(
            "SELECT (SELECT max(id) FROM accounts), (SELECT max(id) FROM mailboxes),"
            " (SELECT max(id) FROM messages), (SELECT value FROM meta WHERE key = 'uidvalidity')"
        ).fetchone()

    async def add() -> tuple[int, Mailbox]:
        store = PostgresStore(pg_cluster.dsn(pg_database))
        await store.open()
        try:
            account = await store.add_account(f"erin@{DOMAIN}", make_credentials(PASSWORD))
            alice = await store.get_account(USER)
            assert alice is not None
            # A name alice had and deleted: RFC 9051 §2.3.1.1, it must not get an old UIDVALIDITY.
            recreated = await store.create_mailbox(alice.id, "Gone")
            staged = store.blobs.stage()
            await staged.write(message("after the move"))
            await store.append(alice.id, recreated.id, staged, frozenset(), datetime.now(UTC))
            return account.id, recreated
        finally:
            await store.close()

    account_id, recreated = asyncio.run(add())
    with psycopg.connect(pg_cluster.dsn(pg_database)) as target:
        assert target.execute("SELECT max(id) FROM messages").fetchone() == (max_message + 1,)
    assert account_id == max_account + 1
    assert recreated.id == max_mailbox + 1 + 6  # erin's six default mailboxes came first
    assert recreated.uidvalidity > last_uidvalidity


def test_a_target_with_data_is_refused_and_left_alone(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    assert migrate(filled.config, pg_cluster, pg_database).returncode == 0
    before = target_rows(pg_cluster, pg_database)
    again = migrate(filled.config, pg_cluster, pg_database)
    assert (again.returncode, again.stdout.count("\n")) == (1, 1)  # the first line says what and where
    assert again.stderr == (
        "surat: store migrate: the target database holds Surat data already (meta, domains, accounts, aliases,"
        " mailboxes, subscriptions, app_passwords, blobs, blob_chunks, messages, expunged, queue, queue_recipients,"
        " queue_attempts, auth_clients, sent_messages, sieve_scripts, vacation_replies, shared_secrets,"
        " dkim_keys); migrate copies into an empty"
        " database only, never into"
        " one in use\n"
    )
    assert target_rows(pg_cluster, pg_database) == before


def blob_path(data_dir: Path, blob_id: str) -> Path:
    return data_dir / BLOB_DIR / blob_id[10:12] / blob_id


def a_message_blob(data_dir: Path) -> tuple[str, int]:
    with sqlite3.connect(data_dir / INDEX_FILE) as conn:
        blob_id, size = conn.execute("SELECT blob_id, size FROM messages ORDER BY id LIMIT 1").fetchone()
    return blob_id, size


def assert_empty(cluster: PostgresCluster, database: str) -> None:
    assert set(target_rows(cluster, database).values()) == {0}


def test_a_truncated_body_fails_the_migrate_and_commits_nothing(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    blob_id, size = a_message_blob(filled.data_dir)
    path = blob_path(filled.data_dir, blob_id)
    path.write_bytes(path.read_bytes()[:-5])
    result = migrate(filled.config, pg_cluster, pg_database)
    assert result.returncode == 1
    assert result.stderr == (
        f"surat: store migrate: message body {blob_id}: the file has {size - 5} octets, the index says {size}\n"
    )
    assert_empty(pg_cluster, pg_database)


def test_a_missing_body_fails_the_migrate_and_commits_nothing(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    blob_id, _ = a_message_blob(filled.data_dir)
    blob_path(filled.data_dir, blob_id).unlink()
    result = migrate(filled.config, pg_cluster, pg_database)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"surat: store migrate: message body {blob_id}: cannot read its file: blob {blob_id}\n"
    )
    assert_empty(pg_cluster, pg_database)
    # The store is whole again: the same target now takes the copy (the failed run left it empty).
    blob_path(filled.data_dir, blob_id).write_bytes(b"")  # a body of the wrong size is refused too
    assert "the file has 0 octets" in migrate(filled.config, pg_cluster, pg_database).stderr
    assert_empty(pg_cluster, pg_database)


def test_a_body_that_changes_after_it_was_copied_fails_the_checksum(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    """Same size, other octets: only the SHA-256 comparison can see it. The body is changed in the
    target, inside the migrate's transaction, between the copy and the verification."""
    blob_id, _ = a_message_blob(filled.data_dir)
    target = postgresql_store(pg_cluster.dsn(pg_database), None)
    original_verify = migrate_module._verify

    async def tamper_then_verify(conn: Any, *args: Any) -> None:
        await conn.execute(
            "UPDATE blob_chunks SET data = overlay(data placing '\\x58'::bytea from 1) WHERE blob_id = %s",
            (blob_id,),
        )
        await original_verify(conn, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrate_module, "_verify", tamper_then_verify)
        with pytest.raises(MigrationFailed) as failure:
            asyncio.run(migrate_to_postgresql(filled.data_dir, target))
    assert (
        str(failure.value) == f"message body {blob_id}: its SHA-256 in the target differs from the source's"
    )
    assert_empty(pg_cluster, pg_database)


def test_a_store_written_during_the_migrate_fails_it(
    filled: Filled, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    """A server still running would deliver mail the copy does not hold: any commit to the source
    between the snapshot and the end of the copy fails the migrate, and nothing is committed."""
    target = postgresql_store(pg_cluster.dsn(pg_database), None)
    reports: list[Progress] = []

    def write_meanwhile(step: Progress) -> None:
        reports.append(step)
        with sqlite3.connect(filled.data_dir / INDEX_FILE) as conn:
            conn.execute("INSERT INTO domains (name) VALUES ('late.example')")

    with pytest.raises(MigrationFailed) as failure:
        asyncio.run(migrate_to_postgresql(filled.data_dir, target, progress=write_meanwhile))
    assert str(failure.value) == (
        "the store changed while it was copied (is surat still running?); nothing was committed: "
        "stop surat and run the migrate again"
    )
    assert reports == [Progress(7, 7, reports[0].bytes_done)]
    assert_empty(pg_cluster, pg_database)


def test_a_source_with_an_older_schema_is_refused(
    tmp_path: Path, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    account_database_at(data_dir / INDEX_FILE, 7).close()
    config = tmp_path / "surat.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "{data_dir}"\n')
    result = migrate(config, pg_cluster, pg_database)
    assert (result.returncode, result.stderr) == (
        1,
        f"surat: store migrate: store: schema version 7 is older than this Surat's ({SQLITE_VERSION}); run `surat --config {config}"
        " store init` to upgrade it\n",
    )
    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:  # refused before touching the target
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


def test_no_store_and_a_postgresql_config_are_refused(
    tmp_path: Path, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    config = tmp_path / "surat.toml"
    config.write_text('hostname = "mail.example.test"\ndata_dir = "data"\n')
    result = migrate(config, pg_cluster, pg_database)
    assert (result.returncode, result.stderr) == (
        1,
        f"surat: store migrate: no Surat store in {tmp_path / 'data'} (no {INDEX_FILE})\n",
    )
    config.write_text(
        f'hostname = "mail.example.test"\n[store]\nbackend = "postgresql"\ndsn = "{pg_cluster.dsn(pg_database)}"\n'
    )
    result = migrate(config, pg_cluster, pg_database)
    assert (result.returncode, result.stderr) == (
        1,
        "surat: store migrate: the configured store is postgresql already; it copies from sqlite\n",
    )

    config.write_text('hostname = "mail.example.test"\ndata_dir = "data"\n')
    bad = surat(config, "store", "migrate", "--to", "not a dsn")
    assert (bad.returncode, bad.stderr) == (
        2,
        "surat: store migrate: --to: not a libpq connection string (postgresql://user@host:port/database)\n",
    )
