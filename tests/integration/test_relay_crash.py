"""Relay crash safety (issue 5): kill -9 the sending server while its queue is delivering; after a
restart every queued message reaches the remote mailbox — at least once, and only a transaction
that was in flight at the kill may arrive twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, inbox, serve_in_subprocess, wait_listening
from test_relay import BOB, Peer, remote

from surat.passwords import make_credentials
from surat.store.sqlite import SQLiteStore

__all__ = ["remote"]  # the fixture, imported so that pytest finds it here
pytestmark = pytest.mark.slow

MESSAGES = 60
FORWARD = "fwd@sender.test"
MESSAGE_ID = re.compile(rb"^Message-ID: <(relay-crash-\d+)@test>", re.MULTILINE | re.IGNORECASE)


def _write_config(base: Path, port: int, remote_port: int) -> Path:
    config = base / "surat.toml"
    config.write_text(
        'hostname = "mail.sender.test"\ndata_dir = "data"\n'
        f'[listen]\nsmtp = ["127.0.0.1:{port}"]\nsubmission = []\nsubmissions = []\n'
        "imap = []\nimaps = []\npop3 = []\npop3s = []\n"
        "[limits]\nmail_auth = false\n"
        "[delivery]\n"
        f'routes = {{ "remote.test" = "127.0.0.1:{remote_port}" }}\n'
        "retry_delays = [0.5]\nqueue_poll_interval = 0.2\nconnect_timeout = 2\n"
    )
    return config


async def _prepare(data_dir: Path) -> None:
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("sender.test")
    await store.add_account("postmaster@sender.test", make_credentials("a-password-1"))
    await store.add_alias(FORWARD, BOB)  # mail to fwd@ is queued for remote.test
    await store.close()


async def _queue_length(data_dir: Path) -> int:
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        return len(await store.list_queue())
    finally:
        await store.close()


@pytest.fixture
def sender_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "sender"
    directory.mkdir()
    yield directory


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _message_ids(remote: Peer) -> list[str]:
    return [m.group(1).decode() for raw in inbox(remote, BOB) if (m := MESSAGE_ID.search(raw))]


def test_kill_during_relay_loses_nothing(sender_dir: Path, remote: Peer) -> None:
    port = free_port()
    asyncio.run(_prepare(sender_dir / "data"))

    # 1. The remote is unreachable: everything is acknowledged, queued, tried and rescheduled; kill.
    config = _write_config(sender_dir, port, free_port())
    proc = serve_in_subprocess(config)
    try:
        wait_listening(port, proc, config)
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
            for n in range(MESSAGES):
                body = f"Message-ID: <relay-crash-{n}@test>\r\nSubject: {n}\r\n\r\n" + "x" * 3000 + "\r\n"
                assert client.sendmail("someone@outside.test", [FORWARD], body.encode()) == {}
        time.sleep(1)  # attempts are recorded and fail
    finally:
        _kill(proc)
    assert asyncio.run(_queue_length(sender_dir / "data")) == MESSAGES

    # 2. The remote is reachable: kill again as soon as deliveries are under way.
    config = _write_config(sender_dir, port, remote.port("smtp"))
    proc = serve_in_subprocess(config)
    try:
        deadline = time.monotonic() + 30
        while not inbox(remote, BOB) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        _kill(proc)

    # 3. Restarted, the server delivers everything that is left.
    proc = serve_in_subprocess(config)
    try:
        wait_listening(port, proc, config)
        deadline = time.monotonic() + 60
        while len(set(_message_ids(remote))) < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = _message_ids(remote)
        assert set(ids) == {f"relay-crash-{n}" for n in range(MESSAGES)}, "a queued message was lost"
        duplicates = len(ids) - len(set(ids))
        # Only transactions whose results were not committed at the kill can be repeated; a
        # connection carries no other until they are: at most one per connection
        # (delivery.max_connections_per_domain, 10 by default).
        assert duplicates <= 10, f"{duplicates} messages arrived twice"
        deadline = time.monotonic() + 10
        while asyncio.run(_queue_length(sender_dir / "data")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert asyncio.run(_queue_length(sender_dir / "data")) == 0
    finally:
        proc.terminate()
        proc.wait(10)
