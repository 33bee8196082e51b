"""`surat import`, `surat export` and `surat store verify`, run as the real `surat` program over real
files, on both store backends (PostgreSQL in the tests' private cluster). What was stored is read back
through the Store Protocol: message bytes, flags, keywords and internal dates, compared with what the
input files say."""

from __future__ import annotations

import asyncio
import mailbox
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_store_init import postgresql_config, surat, write_config

from pg_cluster import PostgresCluster
from surat.config import load_config
from surat.mailfiles import maildir
from surat.store.setup import configured_store

DOMAIN = "example.test"
ALICE, BOB, CAROL = (f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol"))
EPOCH_2020 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()

# mailbox -> sorted [(message octets, flags, internal date as epoch seconds)]
Snapshot = dict[str, list[tuple[bytes, frozenset[str], int]]]


def run_ok(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = surat(config, *args)
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
