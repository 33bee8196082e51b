"""The data directory and everything in it are owner-only whatever the umask (issue 11 item 12)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.passwords import make_credentials
from surat.smtpd.message import Spool
from surat.store.base import Delivery, MailboxTarget, OutboundMessage, OutboundRecipient
from surat.store.filemodes import loose_modes
from surat.store.sqlite import INDEX_FILE, SQLiteStore

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: without explicit modes, everything would come out world-readable (and writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
async def test_store_creates_everything_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "data"
    store = SQLiteStore(data)
    await store.open()
    try:
        await store.add_domain("example.test")
        account = await store.add_account(
            "alice@example.test", make_credentials("pencil", scram_iterations=4096)
        )
        small = b"Subject: small\r\n\r\nhi\r\n"
        await store.deliver(
            Delivery(None, len(small), WHEN, local=(MailboxTarget(account.id),), content=small)
        )
        # a large message goes through a staged file, then is moved into the blob area
        spool = Spool(store.blobs, b"")
        await spool.write(b"Subject: large\r\n\r\n" + b"x" * (Spool.MEMORY_LIMIT + 10) + b"\r\n")
        await spool.finish()
        staged = list(store.spool_dir.iterdir())
        assert spool.staged is not None and len(staged) == 1
        assert mode(staged[0]) == 0o600
        outbound = OutboundMessage(
            sender="alice@example.test", recipients=(OutboundRecipient("b@remote.example"),)
        )
        await store.deliver(
            Delivery(spool.staged, spool.size, WHEN, local=(MailboxTarget(account.id),), remote=outbound)
        )
        await store.keys.installation_secret()
        index = data / INDEX_FILE
        wal, shm = (index.with_name(index.name + suffix) for suffix in ("-wal", "-shm"))
        assert wal.exists() and shm.exists()
        assert mode(data) == 0o700
        assert mode(index) == mode(wal) == mode(shm) == mode(data / "server.secret") == 0o600
        blobs = [path for path in (data / "blobs").rglob("*") if path.is_file()]
        assert len(blobs) == 2
        assert list(loose_modes(data)) == []
    finally:
        await store.close()


def test_loose_modes_lists_each_problem(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "blobs" / "0a").mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    (data / "blobs").chmod(0o700)
    (data / "surat.db").write_bytes(b"")
    (data / "surat.db").chmod(0o600)
    (data / "blobs" / "0a" / "blob").write_bytes(b"")
    (data / "blobs" / "0a" / "blob").chmod(0o640)
    (data / "blobs" / "0a").chmod(0o750)
    (data / "link").symlink_to("/etc/passwd")  # not followed, not reported
    assert list(loose_modes(data)) == [
        (data / "blobs" / "0a", 0o750),
        (data / "blobs" / "0a" / "blob", 0o640),
    ]
