"""`surat import`, `surat export` and `surat store verify`, run as the real `surat` program over real
files, on both store backends (PostgreSQL in the tests' private cluster). What was stored is read back
through the Store Protocol: message bytes, flags, keywords and internal dates, compared with what the
input files say."""

from __future__ import annotations

import asyncio
import mailbox
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from test_store_init import postgresql_config, surat, write_config

from pg_cluster import PostgresCluster
from surat.config import load_config
from surat.mailfiles import maildir
from surat.store.blobs import FileBlobStore
from surat.store.setup import configured_store
from surat.store.sqlite import BLOB_DIR, INDEX_FILE
from surat.store.transfer import ORPHAN_MIN_AGE

DOMAIN = "example.test"
ALICE, BOB, CAROL = (f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol"))
EPOCH_2020 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()

# mailbox -> sorted [(message octets, flags, internal date as epoch seconds)]
Snapshot = dict[str, list[tuple[bytes, frozenset[str], int]]]


def run_ok(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = surat(config, *args, stdin=stdin)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A configured store with the domain and alice, bob and carol in it."""
    if request.param == "sqlite":
        path = write_config(tmp_path / "server")
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        path = postgresql_config(tmp_path / "server", cluster, request.getfixturevalue("pg_database"))
        run_ok(path, "store", "init")
    run_ok(path, "domain", "add", DOMAIN)
    for address in (ALICE, BOB, CAROL):
        result = surat(path, "user", "add", address, "--password-stdin", stdin="long enough password\n")
        assert result.returncode == 0, result.stderr
    yield path


def snapshot(config: Path, address: str) -> Snapshot:
    async def read() -> Snapshot:
        store = configured_store(load_config(config))
        await store.open(recover=False)
        try:
            account = await store.get_account(address)
            assert account is not None
            found: Snapshot = {}
            for box in await store.list_mailboxes(account.id):
                blobs = {b.uid: b.blob_id for b in await store.list_message_blobs(box.id)}
                messages = [
                    (await store.blobs.read(blobs[m.uid]), m.flags, int(m.internal_date.timestamp()))
                    for m in await store.list_messages(box.id)
                ]
                if messages:
                    found[box.name] = sorted(messages, key=lambda m: (m[2], m[0]))
            return found
        finally:
            await store.close()

    return asyncio.run(read())


def message(n: int, extra: str = "") -> bytes:
    """A message with the lines an mbox must escape and a non-ASCII header, CRLF (as stored)."""
    return (
        f"From: sender{n}@example.net\r\nTo: {ALICE}\r\nSubject: message {n} \u00fcber\r\n"
        f"Date: Mon, 5 Jan 2015 10:0{n % 10}:00 +0100\r\nMessage-ID: <{n}@example.net>\r\n{extra}\r\n"
        f"line one of {n}\r\nFrom the middle of a line start\r\n>From already quoted\r\n\r\n"
        f"From a@b Sat Jan  3 01:05:34 1996\r\nlast\r\n"
    ).encode()


def lf(octets: bytes) -> bytes:
    return octets.replace(b"\r\n", b"\n")


def escaped(octets: bytes) -> bytes:
    """mboxrd: one more ">" on every ">*From " line."""
    return b"".join(
        b">" + line if line.lstrip(b">").startswith(b"From ") else line
        for line in octets.splitlines(keepends=True)
    )


MBOX_MESSAGES = [
    # (message, Status, X-Status, X-Keywords, flags, separator date)
    (
        message(1),
        "RO",
        "AF",
        "$Label1 work",
        {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "work"},
        1_000_000_000,
    ),
    (message(2), "O", "", "", set(), 1_100_000_000),
    (message(3), "RO", "TD", "", {"\\Seen", "\\Draft", "\\Deleted"}, 1_200_000_000),
]


def write_mbox(path: Path) -> None:
    """An mbox as mutt or Dovecot leave it: LF lines, mboxrd escaping, flags in Status/X-Status/X-Keywords."""
    with path.open("wb") as file:
        for octets, status, x_status, x_keywords, _, when in MBOX_MESSAGES:
            moment = datetime.fromtimestamp(when, UTC)
            file.write(f"From someone@example.net {moment:%a %b %e %H:%M:%S %Y}\n".encode())
            header, _, body = lf(octets).partition(b"\n\n")
            flags = f"Status: {status}\n" + (f"X-Status: {x_status}\n" if x_status else "")
            flags += f"X-Keywords: {x_keywords}\n" if x_keywords else ""
            file.write(header + b"\n" + flags.encode() + b"\n" + escaped(body) + b"\n")


MAILDIR_MESSAGES = [
    # (folder, subdirectory, file name, message, flags, mtime)
    ("", "cur", "1600000000.M1.old:2,FS", message(11), {"\\Flagged", "\\Seen"}, EPOCH_2020),
    ("", "new", "1600000001.M2.old", message(12), set(), EPOCH_2020 + 60),
    ("", "cur", "1600000002.M3.old:2,PRab", message(13), {"$Forwarded", "\\Answered", "todo", "$Label2"}, EPOCH_2020 + 120),
    (".Projects.2026", "cur", "1600000003.M4.old:2,T", message(14), {"\\Deleted"}, EPOCH_2020 + 180),
    (".Entw&APw-rfe", "cur", "1600000004.M5.old:2,", message(15), set(), EPOCH_2020 + 240),
]  # fmt: skip
MAILDIR_MAILBOXES = {"": "INBOX", ".Projects.2026": "Projects/2026", ".Entw&APw-rfe": "Entwürfe"}


def write_maildir(root: Path) -> None:
    for folder in MAILDIR_MAILBOXES:
        for sub in ("cur", "new", "tmp"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
    (root / maildir.KEYWORDS_FILE).write_text("0 todo\n1 $Label2\n")
    for folder, sub, name, octets, _, mtime in MAILDIR_MESSAGES:
        path = root / folder / sub / name
        path.write_bytes(lf(octets))
        os.utime(path, (mtime, mtime))


def expected_alice() -> Snapshot:
    expected: Snapshot = {}
    for octets, *_, flags, when in MBOX_MESSAGES:
        expected.setdefault("Old", []).append((octets, frozenset(flags), when))
    for folder, _, _, octets, flags, mtime in MAILDIR_MESSAGES:
        expected.setdefault(MAILDIR_MAILBOXES[folder], []).append((octets, frozenset(flags), int(mtime)))
    return {name: sorted(messages, key=lambda m: (m[2], m[0])) for name, messages in expected.items()}


def import_both(config: Path, tmp_path: Path) -> None:
    write_mbox(tmp_path / "old.mbox")
    write_maildir(tmp_path / "Maildir")
    result = run_ok(config, "import", ALICE, str(tmp_path / "old.mbox"), "--mailbox", "Old")
    assert result.stdout.splitlines() == [
        "  Old: 3",
        f"imported 3 message(s) (0.0 MB) into {ALICE} in " + result.stdout.split(" in ")[1].split("\n")[0],
    ]
    assert result.stderr == ""
    result = run_ok(config, "import", ALICE, str(tmp_path / "Maildir"))
    assert result.stdout.splitlines()[:3] == ["  Entwürfe: 1", "  INBOX: 3", "  Projects/2026: 1"]


def test_import_mbox_and_maildir_keeps_bytes_flags_keywords_and_dates(config: Path, tmp_path: Path) -> None:
    import_both(config, tmp_path)
    assert snapshot(config, ALICE) == expected_alice()


def test_a_second_run_imports_nothing_and_a_grown_source_only_what_is_new(
    config: Path, tmp_path: Path
) -> None:
    import_both(config, tmp_path)
    again = run_ok(config, "import", ALICE, str(tmp_path / "old.mbox"), "--mailbox", "Old")
    assert again.stdout.endswith("; 3 already imported, 0 skipped as broken\n")
    assert again.stdout.startswith("imported 0 message(s)")
    with (tmp_path / "old.mbox").open("ab") as file:
        file.write(b"From x Sat Jan  3 01:05:34 2004\n" + escaped(lf(message(4))) + b"\n")
    grown = run_ok(config, "import", ALICE, str(tmp_path / "old.mbox"), "--mailbox", "Old")
    assert grown.stdout.startswith("  Old: 1\nimported 1 message(s)")
    assert grown.stdout.endswith("; 3 already imported, 0 skipped as broken\n")
    assert len(snapshot(config, ALICE)["Old"]) == 4


def test_round_trip_through_maildir_and_mbox_exports(config: Path, tmp_path: Path) -> None:
    import_both(config, tmp_path)
    alice = snapshot(config, ALICE)
    result = run_ok(config, "export", ALICE, str(tmp_path / "out-maildir"))
    assert (
        result.stdout
        == f"exported 8 message(s) (0.0 MB) in 10 mailbox(es) of {ALICE} to {tmp_path / 'out-maildir'} (maildir)\n"
    )
    run_ok(config, "export", ALICE, str(tmp_path / "out-mbox"), "--format", "mbox")
    run_ok(config, "import", BOB, str(tmp_path / "out-maildir"))
    run_ok(config, "import", CAROL, str(tmp_path / "out-mbox"))
    assert snapshot(config, BOB) == alice
    assert snapshot(config, CAROL) == alice


def test_exports_are_read_by_python_mailbox(config: Path, tmp_path: Path) -> None:
    """Other tools' view (the standard library's readers, as mutt and Dovecot): counts and flags."""
    import_both(config, tmp_path)
    run_ok(config, "export", ALICE, str(tmp_path / "md"))
    run_ok(config, "export", ALICE, str(tmp_path / "mb"), "--format", "mbox")
    box = mailbox.mbox(tmp_path / "mb" / "Old.mbox")
    # UIDs follow the source's order only within the appends in flight together (importer.py): by date
    in_order = sorted(box, key=lambda m: m["Message-ID"])
    assert ["".join(sorted(m.get_flags())) for m in in_order] == ["AFOR", "O", "DORT"]
    assert [m.get_from() for m in in_order] == [
        f"MAILER-DAEMON {datetime.fromtimestamp(when, UTC):%a %b %e %H:%M:%S %Y}"
        for *_, when in MBOX_MESSAGES
    ]
    assert in_order[0].get_from() == "MAILER-DAEMON Sun Sep  9 01:46:40 2001"
    # Python's reader is an mboxo one: it shows the escaping (mutt and Dovecot's mboxrd undo it)
    assert in_order[0].get_payload() == (
        "line one of 1\n>From the middle of a line start\n>>From already quoted\n\n"
        ">From a@b Sat Jan  3 01:05:34 1996\nlast\n"
    )
    tree = mailbox.Maildir(tmp_path / "md", factory=None)
    assert sorted(tree.list_folders()) == [
        "Archive", "Drafts", "Entw&APw-rfe", "Junk", "Old", "Projects", "Projects.2026", "Sent", "Trash",
    ]  # fmt: skip
    assert sorted(m.get_flags() for m in tree) == ["", "FS", "PRab"]
    assert [m.get_flags() for m in tree.get_folder("Projects.2026")] == ["T"]
    assert (tmp_path / "md" / maildir.KEYWORDS_FILE).read_text() == "0 $Label2\n1 todo\n"
    dates = sorted(int(m.get_date()) for m in tree)
    assert dates == [int(EPOCH_2020), int(EPOCH_2020) + 60, int(EPOCH_2020) + 120]


# ----------------------------------------------------------------------------------------- broken input


def sqlite_server(tmp_path: Path, extra: str = "") -> Path:
    """A SQLite store with the domain and alice (for what does not depend on the backend)."""
    config = write_config(tmp_path / "server", extra)
    run_ok(config, "domain", "add", DOMAIN)
    run_ok(config, "user", "add", ALICE, "--password-stdin", stdin="long enough password\n")
    return config


def test_broken_messages_are_reported_with_their_position_and_skipped(tmp_path: Path) -> None:
    config = sqlite_server(tmp_path, "[limits]\nmessage_size = 1024\n")
    big = b"Subject: big\n\n" + (b"y" * 60 + b"\n") * 17  # 1 052 octets with CRLF: over the limit
    source = tmp_path / "in.mbox"
    first = b"From a Sat Jan  3 01:05:34 1996\nSubject: fine\n\nok\n\n"
    second = b"From b Sat Jan  3 01:05:35 1996\n" + big + b"\n"
    third = b"From c Sat Jan  3 01:05:36 1996\n\n"  # empty
    fourth = b"From d Sat Jan  3 01:05:37 1996\nSubject: also fine\n\nok\n"
    source.write_bytes(first + second + third + fourth)
    result = surat(config, "import", ALICE, str(source))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"skipped {source}: message 2 at byte {len(first)}: larger than the message size limit (1024 bytes)\n"
        f"skipped {source}: message 3 at byte {len(first + second)}: empty message\n"
    )
    assert result.stdout.startswith("  INBOX: 2\nimported 2 message(s)")
    assert result.stdout.endswith("; 0 already imported, 2 skipped as broken\n")
    assert sorted(m[0] for m in snapshot(config, ALICE)["INBOX"]) == [
        b"Subject: also fine\r\n\r\nok\r\n",
        b"Subject: fine\r\n\r\nok\r\n",
    ]


def test_the_quota_stops_the_run_cleanly_and_a_rerun_goes_on(tmp_path: Path) -> None:
    config = sqlite_server(tmp_path)
    write_mbox(tmp_path / "old.mbox")
    size = len(MBOX_MESSAGES[0][0])
    run_ok(config, "user", "quota", ALICE, str(size + size // 2))  # room for one message
    result = surat(config, "import", ALICE, str(tmp_path / "old.mbox"))
    assert result.returncode == 1
    assert result.stdout.startswith("  INBOX: 1\nimported 1 message(s)")
    assert result.stderr.startswith(f"surat: import stopped at {tmp_path / 'old.mbox'}: message ")
    assert result.stderr.endswith("; run it again once there is room\n")
    run_ok(config, "user", "quota", ALICE, "none")
    again = run_ok(config, "import", ALICE, str(tmp_path / "old.mbox"))
    assert again.stdout.startswith("  INBOX: 2\nimported 2 message(s)")
    assert again.stdout.endswith("; 1 already imported, 0 skipped as broken\n")
    assert sorted(m[0] for m in snapshot(config, ALICE)["INBOX"]) == sorted(m[0] for m in MBOX_MESSAGES)


def test_a_directory_of_eml_files_with_lf_lines(tmp_path: Path) -> None:
    config = sqlite_server(tmp_path)
    emls = tmp_path / "emls"
    (emls / "sub").mkdir(parents=True)
    (emls / "a.eml").write_bytes(b"Subject: a\nDate: Tue, 1 Jul 2003 10:52:37 +0200\n\nbody\n")
    (emls / "sub" / "b.eml").write_bytes(b"Subject: b\n\nbody\n")
    (emls / "notes.txt").write_bytes(b"not mail\n")
    os.utime(emls / "a.eml", (EPOCH_2020, EPOCH_2020))
    os.utime(emls / "sub" / "b.eml", (EPOCH_2020 + 1, EPOCH_2020 + 1))
    result = run_ok(config, "import", ALICE, str(emls), "--mailbox", "Saved")
    assert result.stdout.startswith("  Saved: 1\n  Saved/sub: 1\nimported 2 message(s)")
    assert snapshot(config, ALICE) == {
        "Saved": [
            (
                b"Subject: a\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nbody\r\n",
                frozenset(),
                int(EPOCH_2020),
            )
        ],
        "Saved/sub": [(b"Subject: b\r\n\r\nbody\r\n", frozenset(), int(EPOCH_2020) + 1)],
    }


# ----------------------------------------------------------------------------------------- store verify


def message_rows(config: Path, address: str) -> list[tuple[str, int, str, int]]:
    """(mailbox, uid, blob id, size) of every message of the account."""

    async def read() -> list[tuple[str, int, str, int]]:
        store = configured_store(load_config(config))
        await store.open(recover=False)
        try:
            account = await store.get_account(address)
            assert account is not None
            rows = []
            for box in await store.list_mailboxes(account.id):
                rows += [(box.name, b.uid, b.blob_id, b.size) for b in await store.list_message_blobs(box.id)]
            return sorted(rows)
        finally:
            await store.close()

    return asyncio.run(read())


ORPHAN = "00000000000000000000000000"


def corrupt(config: Path, grown: str, gone: str, changed: str) -> None:
    """One body a byte longer, one body gone, one changed in place; alice's usage off by 1000; an old
    orphan body."""
    loaded = load_config(config)
    if loaded.store.backend == "sqlite":
        blobs = FileBlobStore(loaded.data_dir / BLOB_DIR, loaded.data_dir / "tmp")
        with blobs.path(grown).open("ab") as file:
            file.write(b"x")
        blobs.path(gone).unlink()
        octets = bytearray(blobs.path(changed).read_bytes())
        octets[5] ^= 0x20
        blobs.path(changed).write_bytes(bytes(octets))
        orphan = loaded.data_dir / BLOB_DIR / "00" / ORPHAN
        orphan.write_bytes(b"left behind")
        old = time.time() - ORPHAN_MIN_AGE - 60
        os.utime(orphan, (old, old))
        with sqlite3.connect(loaded.data_dir / INDEX_FILE) as conn:
            conn.execute("UPDATE accounts SET used_bytes = used_bytes + 1000 WHERE address = ?", (ALICE,))
        return
    assert loaded.store.dsn is not None
    with psycopg.connect(loaded.store.dsn, password=loaded.store.dsn_password, autocommit=True) as conn:
        conn.execute("UPDATE blob_chunks SET data = data || 'x' WHERE blob_id = %s", (grown,))
        conn.execute("DELETE FROM blob_chunks WHERE blob_id = %s", (gone,))
        conn.execute(
            "UPDATE blob_chunks SET data = overlay(data PLACING 'X' FROM 6 FOR 1) WHERE blob_id = %s",
            (changed,),
        )
        conn.execute(
            "INSERT INTO blobs (id, size, created_at) VALUES (%s, 0, now() - make_interval(secs => %s))",
            (ORPHAN, ORPHAN_MIN_AGE + 60),
        )
        conn.execute("UPDATE accounts SET used_bytes = used_bytes + 1000 WHERE address = %s", (ALICE,))


def test_verify_finds_damaged_bodies_usage_and_orphans_and_repair_fixes_what_is_safe(
    config: Path, tmp_path: Path
) -> None:
    import_both(config, tmp_path)
    clean = run_ok(config, "store", "verify")
    assert (
        clean.stdout == "store verify: 8 message(s), 8 bodies (0.0 MB), 8 checked by SHA-256; 0 problem(s)\n"
    )
    rows = message_rows(config, ALICE)
    (box1, uid1, grown, size1), (box2, uid2, gone, size2), (box3, uid3, changed, _) = rows[:3]
    corrupt(config, grown, gone, changed)
    usage = sum(row[3] for row in rows)
    sqlite = load_config(config).store.backend == "sqlite"
    body_lines = [
        f"problem: {ALICE} {box1} uid {uid1}: body {grown} "
        + (
            f"holds {size1 + 1} bytes, the message {size1}"
            if sqlite
            else f"has {size1 + 1} bytes in its chunks, its record says {size1}"
        ),
        f"problem: {ALICE} {box2} uid {uid2}: body {gone} "
        + ("is missing" if sqlite else f"has 0 bytes in its chunks, its record says {size2}"),
        f"problem: {ALICE} {box3} uid {uid3}: body {changed} differs from what was imported (SHA-256)",
    ]
    found = surat(config, "store", "verify")
    assert found.returncode == 1
    lines = found.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted([
        *body_lines,
        f"problem: {ALICE}: quota usage {usage + 1000} bytes recorded, its messages hold {usage}",
        f"problem: body {ORPHAN} is not referenced by any message",
    ])  # fmt: skip
    assert lines[-1].endswith("; 5 problem(s)")
    repaired = run_ok(config, "store", "verify", "--repair")
    assert [line for line in repaired.stdout.splitlines() if line.startswith("repaired: ")] == [
        f"repaired: {ALICE}: quota usage set to {usage} bytes",
        f"repaired: removed body {ORPHAN}",
    ]
    after = surat(config, "store", "verify")
    assert after.returncode == 1
    assert sorted(after.stdout.splitlines()[:-1]) == sorted(body_lines)  # messages are never removed
    assert len(message_rows(config, ALICE)) == 8
