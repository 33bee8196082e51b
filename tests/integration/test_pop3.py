"""The POP3 listeners of a real in-process server, driven by poplib, a raw socket client, curl and fetchmail.

Messages go into the mailbox through `Store.deliver`, the way SMTP puts them there.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import poplib
import re
import secrets
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, RunningServer, require_tool

from staging import staged
from surat.store.base import Change, ChangeFeed, ChangeKind, Delivery, MailboxTarget, Subscription
from surat.store.sqlite import INDEX_FILE

MESSAGES = [
    b"From: a@example.net\r\nSubject: one\r\n\r\nHello.\r\n",
    # Lines beginning with "." must be stuffed on the wire and come back unchanged (RFC 1939 §3).
    b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n.",
    b"Subject: three\r\nX-Long: " + b"x" * 300 + b"\r\n\r\nline 1\r\nline 2\r\nline 3\r\nline 4\r\n",
]


# ------------------------------------------------------------------------------------------- helpers


def deliver(server: RunningServer, messages: Sequence[bytes], address: str = USER) -> list[int]:
    """Deliver messages to the account's INBOX through the store; returns their UIDs."""

    async def run() -> list[int]:
        store = server.store
        account = await store.get_account(address)
        assert account is not None

        async def one(raw: bytes) -> int:
            delivery = Delivery(
                await staged(store.blobs, raw),
                len(raw),
                datetime.now(UTC),
                local=(MailboxTarget(account.id),),
            )
            result = await store.deliver(delivery)
            return int(result.local[0][2])

        return list(await asyncio.gather(*(one(m) for m in messages)))

    return server.call(run())


def inbox_uids(server: RunningServer, address: str = USER) -> list[int]:
    async def run() -> list[int]:
        store = server.store
        account = await store.get_account(address)
        mailbox = await store.get_mailbox(account.id, "INBOX")
        return [m.uid for m in await store.list_messages(mailbox.id)]

    return server.call(run())


def committed_uids(server: RunningServer, address: str = USER) -> list[int]:
    """The INBOX UIDs as a separate read-only SQLite connection sees them: what is committed."""
    path = server.config.data_dir / INDEX_FILE
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT m.uid FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN accounts a ON a.id = b.account_id WHERE a.address = ? AND b.name = 'INBOX' ORDER BY m.uid",
            (address,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def tls(server: RunningServer) -> ssl.SSLContext:
    # 127.0.0.1 is among the dev certificate's names, so the name is checked too.
    return server.client_tls()


def pop3s(server: RunningServer) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=tls(server), timeout=10)


def login(server: RunningServer, user: str = USER, password: str = PASSWORD) -> poplib.POP3_SSL:
    client = pop3s(server)
    client.user(user)
    client.pass_(password)
    return client


def wait_for_unlock(server: RunningServer, timeout: float = 5) -> None:
    """Wait until a dropped session has ended (its maildrop lock is released)."""
    deadline = time.monotonic() + timeout
    while True:
        client = pop3s(server)
        client.user(USER)
        try:
            client.pass_(PASSWORD)
        except poplib.error_proto as exc:
            client.close()
            assert b"[IN-USE]" in exc.args[0]
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        client.quit()
        return


class Raw:
    """A byte-exact POP3 client: shows what is on the wire, which poplib hides."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.line()

    @classmethod
    def connect(cls, server: RunningServer, role: str = "pop3s") -> Raw:
        sock = socket.create_connection(("127.0.0.1", server.port(role)), timeout=10)
        if role == "pop3s":
            sock = tls(server).wrap_socket(sock, server_hostname="127.0.0.1")
        return cls(sock)

    def line(self) -> bytes:
        return self.file.readline(100_000)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, text: str | bytes) -> bytes:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def multiline(self) -> bytes:
        """The body of a multi-line response, un-stuffed, exactly as sent."""
        out = bytearray()
        while True:
            line = self.line()
            assert line, "connection closed inside a multi-line response"
            if line == b".\r\n":
                return bytes(out)
            out += line[1:] if line.startswith(b".") else line

    def login(self, user: str = USER, password: str = PASSWORD) -> None:
        assert self.command(f"USER {user}").startswith(b"+OK")
        reply = self.command(f"PASS {password}")
        assert reply.startswith(b"+OK"), reply

    def closed(self) -> bool:
        try:
            return self.file.read(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def as_sent(message: bytes) -> bytes:
    """The octets RETR carries for a stored message: a CRLF ends an unterminated last line."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"


@pytest.fixture
def filled(server: RunningServer) -> Iterator[RunningServer]:
    deliver(server, MESSAGES[:1])
    deliver(server, MESSAGES[1:2])
    deliver(server, MESSAGES[2:])
    yield server


# ------------------------------------------------------------------------------------------- TLS


def test_stls_is_required_before_credentials(filled: RunningServer) -> None:
    client = poplib.POP3("127.0.0.1", filled.port("pop3"), timeout=10)
    try:
        caps = client.capa()
        assert "STLS" in caps
        assert "USER" not in caps and "SASL" not in caps
        # RFC 2595 §2.3 and RFC 3206 §5: cleartext credentials refused with [AUTH].
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_(PASSWORD)
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client._shortcmd(f"AUTH PLAIN {plain}")  # type: ignore[attr-defined]
        client.stls(tls(filled))
        caps = client.capa()
        assert "STLS" not in caps
        assert "USER" in caps
        assert caps["SASL"] == ["SCRAM-SHA-256", "PLAIN"]
        client.user(USER)
        client.pass_(PASSWORD)
        assert client.stat() == (3, sum(len(as_sent(m)) for m in MESSAGES))
        client.quit()
    finally:
        client.close()


def test_stls_twice_and_on_pop3s_is_refused(filled: RunningServer) -> None:
    raw = Raw.connect(filled, "pop3")
    assert raw.command("STLS").startswith(b"+OK")
    raw.sock = tls(filled).wrap_socket(raw.sock, server_hostname="127.0.0.1")
    raw.file = raw.sock.makefile("rb")
    assert raw.command("STLS").startswith(b"-ERR")
    raw.login()
    raw.close()
    secure = Raw.connect(filled)
    assert secure.command("STLS").startswith(b"-ERR")
    secure.close()


def test_implicit_tls(filled: RunningServer) -> None:
    client = pop3s(filled)
    assert client.getwelcome().startswith(b"+OK")
    caps = client.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL"):
        assert cap in caps
    assert caps["EXPIRE"] == ["NEVER"]
    assert "STLS" not in caps
    client.user(USER)
    client.pass_(PASSWORD)
    assert client.stat()[0] == 3
    client.quit()


# ------------------------------------------------------------------------------------------- maildrop


def test_sizes_equal_retr_octets_and_dots_round_trip(filled: RunningServer) -> None:
    raw = Raw.connect(filled)
    raw.login()
    stat = raw.command("STAT").split()
    assert raw.command("LIST").startswith(b"+OK")
    listing = [tuple(map(int, line.split())) for line in raw.multiline().splitlines()]
    assert [n for n, _ in listing] == [1, 2, 3]
    assert int(stat[1]) == 3 and int(stat[2]) == sum(size for _, size in listing)
    for (n, size), message in zip(listing, MESSAGES, strict=True):
        assert raw.command(f"LIST {n}") == f"+OK {n} {size}\r\n".encode()
        assert raw.command(f"RETR {n}").startswith(b"+OK")
        body = raw.multiline()
        assert body == as_sent(message)
        assert len(body) == size
    raw.close()


def test_retr_stuffs_dots_on_the_wire(filled: RunningServer) -> None:
    raw = Raw.connect(filled)
    raw.login()
    assert raw.command("RETR 2").startswith(b"+OK")
    wire = b""
    while not wire.endswith(b"\r\n.\r\n"):
        wire += raw.line()
    assert wire == (
        b"Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nafter a lone dot\r\n..\r\n.\r\n"
    )
    raw.close()


def test_top(filled: RunningServer) -> None:
    client = login(filled)
    _, lines, _ = client.top(3, 0)
    header = MESSAGES[2].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert lines == [*header, b""]
    _, lines, _ = client.top(3, 2)
    assert lines == [*header, b"", b"line 1", b"line 2"]
    _, lines, _ = client.top(3, 100)
    assert lines == MESSAGES[2].split(b"\r\n")[:-1]
    # poplib un-stuffs: the lone "." line of message 2 arrives as "".
    _, lines, _ = client.top(2, 3)
    assert lines == [b"Subject: dots", b"", b".leading dot", b"..two dots", b"."]
    with pytest.raises(poplib.error_proto):
        client.top(4, 0)
    client.quit()


def test_uidl_is_stable_and_unique(filled: RunningServer) -> None:
    def listing() -> list[str]:
        client = login(filled)
        _, lines, _ = client.uidl()
        single = client.uidl(1).split()
        uids = [line.split()[1].decode() for line in lines]
        assert single[:2] == [b"+OK", b"1"]
        assert single[2].decode() == uids[0]
        client.quit()
        return uids

    first = listing()
    assert len(set(first)) == 3
    assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", uid) for uid in first)
    assert listing() == first
    client = login(filled)
    client.dele(1)
    client.quit()
    deliver(filled, [b"Subject: new\r\n\r\nnew\r\n"])
    after = listing()
    assert after[:2] == first[1:]
    assert after[2] not in first  # never reused, not even the deleted message's


def test_dele_quit_removes_durably_and_publishes(filled: RunningServer) -> None:
    uids = inbox_uids(filled)
    account = filled.call(filled.store.get_account(USER))

    async def subscribe() -> Subscription:
        feed: ChangeFeed = filled.store.changes
        return feed.subscribe(account.id)

    subscription = filled.call(subscribe())
    client = login(filled)
    client.dele(1)
    client.dele(3)
    with pytest.raises(poplib.error_proto, match="deleted"):
        client.retr(1)
    assert client.stat()[0] == 1
    reply = client.quit()
    assert reply.startswith(b"+OK")
    # Acknowledged means committed: a separate connection sees it at once.
    assert committed_uids(filled) == [uids[1]]
    assert inbox_uids(filled) == [uids[1]]

    async def changes() -> list[Change]:
        pending = subscription.pending()
        subscription.close()
        return pending

    expunged = [c for c in filled.call(changes()) if c.kind is ChangeKind.MESSAGES_EXPUNGED]
    assert [c.uids for c in expunged] == [(uids[0], uids[2])]


def test_dele_then_dropped_connection_deletes_nothing(filled: RunningServer) -> None:
    uids = inbox_uids(filled)
    client = login(filled)
    for n in (1, 2, 3):
        client.dele(n)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    wait_for_unlock(filled)
    assert committed_uids(filled) == uids


def test_rset_unmarks(filled: RunningServer) -> None:
    client = login(filled)
    client.dele(2)
    assert client.stat()[0] == 2
    with pytest.raises(poplib.error_proto):
        client.dele(2)
    client.rset()
    assert client.stat()[0] == 3
    assert client.retr(2)[1][0] == b"Subject: dots"
    client.noop()
    client.quit()
    assert len(committed_uids(filled)) == 3


def test_second_login_is_in_use(filled: RunningServer) -> None:
    first = login(filled)
    second = pop3s(filled)
    second.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    second.close()
    assert first.stat()[0] == 3
    first.quit()
    login(filled).quit()


def test_snapshot_taken_at_login(filled: RunningServer) -> None:
    client = login(filled)
    before = client.stat()
    deliver(filled, [b"Subject: late\r\n\r\nlate\r\n"])
    assert client.stat() == before
    assert len(client.list()[1]) == 3
    assert len(client.uidl()[1]) == 3
    with pytest.raises(poplib.error_proto):
        client.retr(4)
    client.quit()
    client = login(filled)
    assert client.stat()[0] == 4
    assert client.retr(4)[1][-1] == b"late"
    client.quit()


def test_message_expunged_elsewhere_during_the_session(filled: RunningServer) -> None:
    uids = inbox_uids(filled)

    async def expunge_first() -> list[int]:
        store = filled.store
        account = await store.get_account(USER)
        mailbox = await store.get_mailbox(account.id, "INBOX")
        removed: list[int] = await store.expunge(mailbox.id, [uids[0]])
        return removed

    client = login(filled)
    assert filled.call(expunge_first()) == [uids[0]]  # as an IMAP EXPUNGE would
    with pytest.raises(poplib.error_proto, match="no longer available"):
        client.retr(1)
    assert client.retr(2)[1][0] == b"Subject: dots"  # the session goes on
    client.dele(1)
    client.dele(2)
    client.quit()
    assert committed_uids(filled) == [uids[2]]


# ------------------------------------------------------------------------------------------- authentication


def test_wrong_password_is_delayed_auth_error(filled: RunningServer) -> None:
    delay = filled.config.limits.auth_failure_delay
    client = pop3s(filled)
    for user in (USER, "nobody@example.test"):
        client.user(user)
        start = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
            client.pass_("wrong password")
        assert time.monotonic() - start >= delay
    # PASS is only valid right after USER (RFC 1939 §7).
    with pytest.raises(poplib.error_proto):
        client.pass_(PASSWORD)
    client.user(USER)
    client.pass_(PASSWORD)
    assert client.stat()[0] == 3
    client.quit()


def test_auth_plain(filled: RunningServer) -> None:
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    raw = Raw.connect(filled)
    assert raw.command(b"AUTH PLAIN " + token).startswith(b"+OK")
    assert raw.command("STAT").startswith(b"+OK 3 ")
    raw.close()
    # Without an initial response: an empty challenge first (RFC 5034 §4).
    raw = Raw.connect(filled)
    assert raw.command("AUTH PLAIN") == b"+ \r\n"
    assert raw.command(token).startswith(b"+OK")
    raw.close()
    raw = Raw.connect(filled)
    bad = base64.b64encode(f"\0{USER}\0nope".encode())
    assert raw.command(b"AUTH PLAIN " + bad).startswith(b"-ERR [AUTH]")
    assert raw.command("AUTH PLAIN") == b"+ \r\n"
    assert raw.command("*").startswith(b"-ERR")  # cancelled
    raw.close()


def _scram_escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_login(raw: Raw, user: str, password: str) -> bytes:
    """RFC 5802 client side of SCRAM-SHA-256 over POP3 AUTH (RFC 5034); returns the final reply."""
    client_nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={_scram_escape(user)},r={client_nonce}"
    reply = raw.command(b"AUTH SCRAM-SHA-256 " + base64.b64encode(f"n,,{first_bare}".encode()))
    assert reply.startswith(b"+ "), reply
    server_first = base64.b64decode(reply[2:].strip()).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    assert attrs["r"].startswith(client_nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{final_bare},p={base64.b64encode(proof).decode()}"
    reply = raw.command(base64.b64encode(final.encode()))
    if not reply.startswith(b"+ "):
        return reply
    server_final = base64.b64decode(reply[2:].strip()).decode()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
    assert server_final == f"v={expected}"  # the server proved it knows the keys too
    return raw.command(b"")


def test_auth_scram_sha256(filled: RunningServer) -> None:
    raw = Raw.connect(filled)
    assert scram_login(raw, USER, PASSWORD).startswith(b"+OK")
    assert raw.command("STAT").startswith(b"+OK 3 ")
    assert raw.command("QUIT").startswith(b"+OK")
    raw.close()
    raw = Raw.connect(filled)
    assert scram_login(raw, USER, "not the password").startswith(b"-ERR [AUTH]")
    assert scram_login(raw, "nobody@example.test", PASSWORD).startswith(b"-ERR [AUTH]")
    raw.close()


# ------------------------------------------------------------------------------------------- abuse


def test_long_lines_are_refused_then_the_connection_closed(filled: RunningServer) -> None:
    raw = Raw.connect(filled)
    # RFC 2449 §4: 255 octets per command line; the buffer stays bounded however long the line.
    assert raw.command(b"NOOP " + b"x" * 100_000).startswith(b"-ERR")
    assert raw.command("CAPA").startswith(b"+OK")
    raw.multiline()
    raw.login()
    assert raw.command("STAT").startswith(b"+OK 3 ")
    budget = filled.config.limits.bad_commands
    errors = 1
    while errors <= budget:
        try:
            reply = raw.command(b"LIST " + b"1" * 300)
        except (ConnectionError, ssl.SSLError):
            break
        if not reply:
            break
        assert reply.startswith(b"-ERR"), reply
        errors += 1
    # Closed once the error budget is spent (the last -ERR says so), not before.
    assert errors >= budget
    assert raw.closed()
    raw.close()
    # Dropped, not QUIT: nothing was deleted, and the maildrop is free again.
    wait_for_unlock(filled)


def test_pipelined_commands(filled: RunningServer) -> None:
    raw = Raw.connect(filled)
    raw.send(
        f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nDELE 1\r\nNOOP\r\nLIST 1\r\nRSET\r\nQUIT\r\n".encode()
    )
    replies = [raw.line() for _ in range(8)]
    assert [r[:3] for r in replies] == [b"+OK", b"+OK", b"+OK", b"+OK", b"+OK", b"-ER", b"+OK", b"+OK"]
    assert raw.closed()
    raw.close()
    assert len(committed_uids(filled)) == 3


# ------------------------------------------------------------------------------------------- third-party clients


def test_curl_lists_and_retrieves(filled: RunningServer) -> None:
    curl = require_tool("curl")
    base = f"pop3s://127.0.0.1:{filled.port('pop3s')}"
    common = [curl, "--silent", "--show-error", "--max-time", "20", "--cacert", str(filled.ca_file)]
    common += ["--user", f"{USER}:{PASSWORD}"]
    listing = subprocess.run([*common, f"{base}/"], capture_output=True, check=True, timeout=30).stdout
    sizes = [len(as_sent(m)) for m in MESSAGES]
    assert listing.split(b"\r\n")[:-1] == [f"{n} {s}".encode() for n, s in enumerate(sizes, 1)]
    got = subprocess.run([*common, f"{base}/2"], capture_output=True, check=True, timeout=30).stdout
    assert got == as_sent(MESSAGES[1])
    # STLS on the plain port, required by --ssl-reqd.
    plain = f"pop3://127.0.0.1:{filled.port('pop3')}/1"
    got = subprocess.run([*common, "--ssl-reqd", plain], capture_output=True, check=True, timeout=30).stdout
    assert got == MESSAGES[0]
    assert len(committed_uids(filled)) == 3  # curl leaves the mail on the server


FETCH_COUNT = 1000


def test_fetchmail_downloads_and_deletes_a_large_mailbox(server: RunningServer, tmp_path: Path) -> None:
    fetchmail = require_tool("fetchmail")
    messages = [
        f"From: sender@example.net\r\nSubject: message {i}\r\nMessage-ID: <fm-{i}@test>\r\n\r\n"
        f"body of message {i}\r\n.dot line\r\n".encode()
        for i in range(FETCH_COUNT)
    ]
    deliver(server, messages)
    assert len(inbox_uids(server)) == FETCH_COUNT
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "bsmtp.out"
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 with proto POP3 service {server.port('pop3s')} auth password\n"
        f'  user "{USER}" there with password "{PASSWORD}" is "fetch" here\n'
        f"  ssl sslcertck sslcertfile {server.ca_file} sslcommonname localhost\n"
        f"  bsmtp {out} fetchall\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    result = subprocess.run(
        [fetchmail, "--nosyslog", "-f", str(rc), "--pidfile", str(home / "pid")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = out.read_bytes()
    ids = re.findall(rb"^Message-ID: <fm-(\d+)@test>\r?$", data, re.MULTILINE)
    assert sorted(int(i) for i in ids) == list(range(FETCH_COUNT))
    assert committed_uids(server) == []
