"""A message cut off mid-transfer leaves nothing in the data directory (issue 12: the blob boundary).

Each case first waits until the server has staged part of the message in the store's spool area
(so the staging path is really taken: messages over 1 MiB leave memory), then drops the connection,
and checks that every file in the data directory is as it was before, and that nothing was stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from conftest import USER, Raw, RunningServer, inbox
from test_imap_basic import Raw as RawIMAP

from surat.smtpd.message import Spool

BIG = Spool.MEMORY_LIMIT + 256 * 1024  # past what smtpd keeps in memory: staged in the store
CHUNK = b"0123456789abcdef" * 64  # 1 KiB of body text (lines are short enough for SMTP and IMAP)
LINE = CHUNK[:62] + b"\r\n"


def files(server: RunningServer) -> set[tuple[str, int]]:
    """Every regular file under the data directory but the index (whose -wal grows), with its size."""
    data_dir: Path = server.store.data_dir
    return {
        (str(path.relative_to(data_dir)), path.stat().st_size)
        for path in data_dir.rglob("*")
        if path.is_file() and not path.name.startswith("index.sqlite3")
    }


def staged(server: RunningServer) -> list[Path]:
    spool: Path = server.store.spool_dir
    return list(spool.iterdir()) if spool.exists() else []


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def body(size: int) -> bytes:
    return LINE * (size // len(LINE))


def cut_off(server: RunningServer, start: Callable[[], Raw | RawIMAP], staged_files: int = 1) -> None:
    """`start` begins a transfer and returns its client; once `staged_files` messages are staged, the
    connection drops, and the data directory must be as it was, with nothing delivered."""
    before = files(server)
    client = start()
    wait_for(lambda: len(staged(server)) == staged_files, "the message was never staged")
    client.close()
    wait_for(lambda: not staged(server), "a staged message was left behind")
    assert files(server) == before
    assert inbox(server, USER) == []


def test_smtp_data_cut_off_mid_message_leaves_no_file(server: RunningServer) -> None:
    def start() -> Raw:
        client = Raw(server)
        client.envelope()
        assert client.command(b"DATA\r\n").startswith(b"354")
        client.send(b"Subject: cut off\r\n\r\n" + body(BIG))
        return client

    cut_off(server, start)


def test_smtp_bdat_cut_off_mid_chunk_leaves_no_file(server: RunningServer) -> None:
    def start() -> Raw:
        client = Raw(server)
        client.envelope()
        first = b"Subject: chunks\r\n\r\n" + body(BIG)
        assert client.command(b"BDAT %d\r\n" % len(first) + first).startswith(b"250 2.0.0")
        client.send(b"BDAT 100000 LAST\r\n" + b"y" * 500)  # the last chunk never arrives whole
        return client

    cut_off(server, start)


def test_smtp_rset_after_a_staged_chunk_leaves_no_file(server: RunningServer) -> None:
    before = files(server)
    client = Raw(server)
    try:
        client.envelope()
        first = b"Subject: chunks\r\n\r\n" + body(BIG)
        assert client.command(b"BDAT %d\r\n" % len(first) + first).startswith(b"250 2.0.0")
        assert staged(server)
        assert client.command(b"RSET\r\n").startswith(b"250")  # RFC 3030 §3: RSET ends the transaction
        assert staged(server) == []
        assert files(server) == before
    finally:
        client.close()


def test_imap_append_cut_off_mid_literal_leaves_no_file(server: RunningServer) -> None:
    def start() -> RawIMAP:
        imap = RawIMAP.logged_in(server)
        message = b"Subject: cut off\r\n\r\n" + body(BIG)
        imap.send(b"t2 APPEND INBOX {%d}\r\n" % (len(message) + 1000))
        assert imap.line().startswith(b"+ ")
        imap.send(message)  # 1000 octets short
        return imap

    cut_off(server, start)


def test_imap_multiappend_cut_off_in_its_second_literal_keeps_nothing(server: RunningServer) -> None:
    def start() -> RawIMAP:
        imap = RawIMAP.logged_in(server)
        first = b"Subject: one\r\n\r\n" + body(4096)
        second = b"Subject: two\r\n\r\n" + body(BIG)
        # RFC 3502 MULTIAPPEND: the first message arrives whole, the second is cut off mid-literal.
        imap.send(b"t2 APPEND INBOX {%d}\r\n" % len(first))
        assert imap.line().startswith(b"+ ")
        imap.send(first + b" {%d}\r\n" % (len(second) + 1000))
        assert imap.line().startswith(b"+ ")
        imap.send(second)
        return imap

    cut_off(server, start, staged_files=2)
