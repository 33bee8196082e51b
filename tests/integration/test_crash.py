"""Durability: SIGKILL a server under load; every message that got a 250 must be there exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, serve_in_subprocess, serving, wait_listening

from surat.passwords import make_credentials
from surat.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

SESSIONS = 8
MESSAGE_ID = re.compile(rb"^Message-ID: <(crash-\d+-\d+)@test>", re.MULTILINE | re.IGNORECASE)


def _write_config(base: Path, port: int) -> Path:
    config = base / "surat.toml"
    config.write_text(
        f'hostname = "mail.example.test"\ndata_dir = "data"\n'
        f'[listen]\nsmtp = ["127.0.0.1:{port}"]\nsubmission = []\nsubmissions = []\n'
        "imap = []\nimaps = []\npop3 = []\npop3s = []\n"
        # No DNS here: the durability test is about the store, not SPF/DKIM/DMARC.
        "[limits]\nmail_auth = false\n"
    )
    return config


async def _prepare_store(data_dir: Path) -> None:
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("example.test")
    await store.add_account("crash@example.test", make_credentials("crash-password"))
    await store.close()


async def _stored_message_ids(data_dir: Path) -> list[str]:
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        account = await store.get_account("crash@example.test")
        assert account is not None
        mailbox = await store.get_mailbox(account.id, "INBOX")
        assert mailbox is not None
        ids: list[str] = []
        for summary in await store.list_messages(mailbox.id):
            (record,) = await store.get_messages(mailbox.id, [summary.uid])
            content = await store.blobs.read(record.blob_id)
            assert len(content) == record.size
            match = MESSAGE_ID.search(content)
            assert match is not None, "a stored message lost its headers"
            ids.append(match.group(1).decode())
        return ids
    finally:
        await store.close()


def _sender(port: int, session: int, acknowledged: list[str], stop: threading.Event) -> None:
    """One SMTP session sending messages until the server dies; records each id that got a 250."""
    counter = 0
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        reader = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = reader.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return line

        assert reply().startswith(b"220")
        sock.sendall(b"EHLO crash.test\r\n")
        assert reply().startswith(b"250")
        while not stop.is_set():
            counter += 1
            message_id = f"crash-{session}-{counter}"
            sock.sendall(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<crash@example.test>\r\nDATA\r\n")
            for expected in (b"250", b"250", b"354"):
                if not reply().startswith(expected):
                    return
            body = f"Message-ID: <{message_id}@test>\r\nSubject: crash\r\n\r\n" + "x" * 2000 + "\r\n.\r\n"
            sock.sendall(body.encode())
            if reply().startswith(b"250"):
                acknowledged.append(message_id)
    except (OSError, AssertionError):
        return


def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    port = free_port()
    config = _write_config(tmp_path, port)
    asyncio.run(_prepare_store(tmp_path / "data"))

    for round_number in range(2):
        proc = serve_in_subprocess(config)
        wait_listening(port, proc, config)
        acknowledged: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_sender, args=(port, round_number * 100 + i, acknowledged, stop))
            for i in range(SESSIONS)
        ]
        for thread in threads:
            thread.start()
        # Let acknowledgements accumulate, then kill without warning in the middle of the load.
        deadline = time.monotonic() + 20
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) >= 150, "the load did not get going"

        stored = asyncio.run(_stored_message_ids(tmp_path / "data"))
        missing = set(acknowledged) - set(stored)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        duplicates = {m for m in stored if stored.count(m) > 1}
        assert not duplicates, f"stored twice: {sorted(duplicates)[:5]}"

    # The store is still usable after the kills: the server starts and answers.
    with serving(config, port):
        pass
