"""Outbound relay end to end: server A's queue delivers to a second in-process Surat (B, remote.test)
or to scripted peers, all on 127.0.0.1 through `[delivery] routes`; no public address is touched."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, ROLES, RunningServer, dev_certificates, free_port, inbox, queue
from postfix_instance import postfix_peer

from dkim_keys import count_signatures, data_dir_keys, ensure_data_dir_keys, save_data_dir_keys
from dsn_reports import dsn_parts
from surat.app import SuratServer
from surat.config import Config, parse_config
from surat.delivery import dkim
from surat.dns.fake import FakeResolver
from surat.mailauth.dkim_canon import parse_message
from surat.mailauth.dkim_verify import DKIMStatus, verify_dkim
from surat.store.base import RecipientState
from surat.store.sqlite import SQLiteStore

ALICE = "alice@example.test"
BOB = "bob@remote.test"


class Peer(RunningServer):
    """RunningServer with its own host name and an injected resolver (no system DNS in tests)."""

    def __init__(self, config: Config, resolver: FakeResolver) -> None:
        self.config = config
        self.fake_dns = resolver
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="surat-relay-peer", daemon=True)
        self._thread.start()
        self.server = SuratServer(config, resolver=resolver)
        self.call(self.server.start())


def peer_config(base: Path, hostname: str, **sections: dict[str, Any]) -> Config:
    tls = dev_certificates(base.parent)
    data: dict[str, Any] = {
        "hostname": hostname,
        "data_dir": "data",
        "tls": {"cert": str(tls.cert), "key": str(tls.key), "ca": str(tls.ca)},
        "listen": {role: ["127.0.0.1:0"] for role in ROLES},
        "limits": {"auth_failure_delay": 0.05},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, base_dir=base)


def fast_delivery(routes: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "routes": routes,
        "retry_delays": [0.2],
        "expire_after": 60,
        "queue_poll_interval": 0.1,
        "connect_timeout": 2,
        **extra,
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def submit(
    server: RunningServer, recipients: list[str], subject: str = "hello", extra: dict[str, str] | None = None
) -> None:
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content("Hi there.\n")
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.check_hostname = False
    with smtplib.SMTP(
        "127.0.0.1", server.port("submission"), local_hostname="client.test", timeout=10
    ) as client:
        client.starttls(context=context)
        client.ehlo()
        client.login(ALICE, PASSWORD)
        assert client.send_message(msg, ALICE, recipients) == {}


def start_sender(tmp_path: Path, routes: dict[str, str], **extra: Any) -> Peer:
    sender = restart_sender(tmp_path, routes, **extra)
    sender.add_domain("example.test")
    sender.add_user(ALICE)
    return sender


def restart_sender(tmp_path: Path, routes: dict[str, str], **extra: Any) -> Peer:
    """The sending server on `tmp_path`'s data directory (`start_sender` adds its domain and user)."""
    config = peer_config(tmp_path / "a", "mail.example.test", delivery=fast_delivery(routes, **extra))
    return Peer(config, FakeResolver())


@contextlib.contextmanager
def remote_peer(config: Config) -> Iterator[Peer]:
    """Server B: remote.test with bob, resolving through a fake DNS that will carry A's DKIM keys."""
    running = Peer(config, FakeResolver({("remote.test", "MX"): []}))
    try:
        running.add_domain("remote.test")
        running.add_user(BOB)
        yield running
    finally:
        running.stop()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Peer]:
    with remote_peer(peer_config(tmp_path / "b", "mx.remote.test")) as running:
        yield running


def publish_dkim_keys(sender: Peer, resolver: FakeResolver) -> None:
    keys = ensure_data_dir_keys(sender.config.data_dir, "example.test", datetime.now(UTC))
    for key in keys:
        resolver.set(key.record_name, "TXT", ["".join(key.txt_strings)])


def test_mail_to_a_remote_surat_arrives_signed_over_tls(tmp_path: Path, remote: Peer) -> None:
    sender = start_sender(tmp_path, {"remote.test": f"127.0.0.1:{remote.port('smtp')}"})
    try:
        publish_dkim_keys(sender, remote.fake_dns)
        submit(sender, [BOB])
        (received,) = wait_for(lambda: inbox(remote, BOB))
        wait_for(lambda: not queue(sender))
    finally:
        sender.stop()
    head = received.split(b"\r\n\r\n", 1)[0]
    assert received.startswith(b"Return-Path: <alice@example.test>\r\n")
    assert b"Subject: hello" in head and b"Hi there." in received
    # Opportunistic STARTTLS happened: B's Received field names the TLS version.
    assert b"by mx.remote.test" in head and b"version=TLSv1." in head
    assert head.count(b"DKIM-Signature:") == 2
    results = asyncio.run(verify_dkim(remote.fake_dns, received))
    assert sorted(r.algorithm for r in results) == ["ed25519-sha256", "rsa-sha256"]
    assert all(r.status is DKIMStatus.PASS and r.domain == "example.test" for r in results), results
    # B's inbound checks saw the same signatures pass.
    assert b"dkim=pass" in head


def test_unknown_remote_user_bounces_to_the_local_sender(tmp_path: Path, remote: Peer) -> None:
    sender = start_sender(tmp_path, {"remote.test": f"127.0.0.1:{remote.port('smtp')}"})
    try:
        submit(sender, ["nobody@remote.test", BOB])
        wait_for(lambda: inbox(remote, BOB))
        (bounce,) = wait_for(lambda: inbox(sender, ALICE))
        wait_for(lambda: not queue(sender))
    finally:
        sender.stop()
    assert bounce.startswith(b"Return-Path: <>\r\n")
    report, blocks = dsn_parts(bounce.split(b"\r\n", 1)[1])
    assert report["To"] == ALICE
    per_recipient = blocks[1:]
    assert len(per_recipient) == 1  # bob was delivered: only nobody is reported
    (block,) = per_recipient
    assert block["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert "mx.remote.test" in block["Remote-MTA"] or "127.0.0.1" in block["Remote-MTA"]
    assert block["Diagnostic-Code"].startswith("smtp; 550")


def test_dead_peer_is_retried_then_bounced(tmp_path: Path) -> None:
    sender = start_sender(tmp_path, {"dead.test": f"127.0.0.1:{free_port()}"}, expire_after=1.5)
    try:
        submit(sender, ["someone@dead.test"])
        attempts = wait_for(lambda: [len(e.attempts) for e in queue(sender) if len(e.attempts) >= 2])
        assert attempts
        (bounce,) = wait_for(lambda: inbox(sender, ALICE))
        # The bounce is delivered before the attempt's result (the entry's removal) commits.
        assert wait_for(lambda: queue(sender) == [])
    finally:
        sender.stop()
    _, blocks = dsn_parts(bounce.split(b"\r\n", 1)[1])
    (block,) = blocks[1:]
    assert block["Final-Recipient"] == "rfc822; someone@dead.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.4.1"  # the connection failure's 4.4.1, made permanent by expiry
    assert "Cannot connect" in block["Diagnostic-Code"]


class ScriptedPeer(socketserver.ThreadingTCPServer):
    """A scripted SMTP peer (one thread per session), no PIPELINING, so every command is a line.

    `greylist`: the RCPT of the first `greylist` sessions gets 451, later sessions accept. `broken_tls`: STARTTLS is
    offered and answered 220, then the connection is dropped (a failed handshake). `greeting_delay`
    holds each session open a while, so concurrent sessions overlap and can be counted. `data_delay`
    (changeable while serving) holds the reply to the final dot of each message, which is recorded
    when its dot arrives and listed in `unanswered` until its reply is sent: the client is then
    mid-transaction, and the peer has the message the client does not know it delivered.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, greylist: int = 0, broken_tls: bool = False, greeting_delay: float = 0) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.greylist = greylist
        self.broken_tls = broken_tls
        self.greeting_delay = greeting_delay
        self.data_delay = 0.0
        self.unanswered: list[bytes] = []
        self.sessions = 0
        self.active = 0
        self.max_active = 0
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    def __enter__(self) -> ScriptedPeer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class _ScriptedHandler(socketserver.StreamRequestHandler):
    server: ScriptedPeer

    def handle(self) -> None:
        peer = self.server
        with peer.lock:
            peer.sessions += 1
            session = peer.sessions
            peer.active += 1
            peer.max_active = max(peer.max_active, peer.active)
        try:
            time.sleep(peer.greeting_delay)
            self.session(session)
        finally:
            with peer.lock:
                peer.active -= 1

    def session(self, number: int) -> None:
        peer = self.server
        self.wfile.write(b"220 peer.test ESMTP\r\n")
        while line := self.rfile.readline(4096):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                starttls = b"250-STARTTLS\r\n" if peer.broken_tls else b""
                self.wfile.write(b"250-peer.test\r\n" + starttls + b"250 8BITMIME\r\n")
            elif verb == b"STAR":
                self.wfile.write(b"220 2.0.0 go ahead\r\n")
                return  # no handshake: the client's TLS setup fails
            elif verb == b"RCPT":
                greylisted = number <= peer.greylist
                self.wfile.write(
                    b"451 4.7.1 Greylisted, try again\r\n" if greylisted else b"250 2.1.5 OK\r\n"
                )
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while (chunk := self.rfile.readline(65536)) not in (b".\r\n", b""):
                    data += chunk
                with peer.lock:
                    peer.messages.append(data)
                    peer.unanswered.append(data)
                started = time.monotonic()
                while time.monotonic() - started < peer.data_delay:
                    time.sleep(0.05)
                with peer.lock:
                    peer.unanswered.remove(data)
                self.wfile.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 bye\r\n")
                return
            else:  # MAIL, RSET, NOOP
                self.wfile.write(b"250 2.0.0 OK\r\n")


def test_temporary_failure_then_success_delivers_exactly_once(tmp_path: Path) -> None:
    with ScriptedPeer(greylist=1) as peer:
        sender = start_sender(tmp_path, {"grey.test": f"127.0.0.1:{peer.port}"})
        try:
            submit(sender, ["user@grey.test"], subject="greylisted")
            wait_for(lambda: peer.messages)
            wait_for(lambda: not queue(sender))
            time.sleep(0.5)  # several poll intervals: nothing else may arrive
            assert peer.sessions == 2
            assert len(peer.messages) == 1
            assert b"Subject: greylisted" in peer.messages[0]
            assert inbox(sender, ALICE) == []  # no bounce
        finally:
            sender.stop()


def dkim_fields(message: bytes) -> list[bytes]:
    parsed = parse_message(message)
    return [name + b":" + value for name, value in parsed.fields if name.lower() == b"dkim-signature"]


def test_a_message_deferred_many_times_is_signed_once_when_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: signed before the 250, stored with the queue entry, the same fields at every attempt."""
    calls = count_signatures(monkeypatch)
    with ScriptedPeer(greylist=3) as peer:
        sender = start_sender(tmp_path, {"grey.test": f"127.0.0.1:{peer.port}"})
        try:
            before = int(time.time())
            submit(sender, ["user@grey.test"], subject="deferred thrice")
            after = int(time.time())
            assert calls == ["example.test"]  # at submission, before any attempt
            (delivered,) = wait_for(lambda: peer.messages)
            wait_for(lambda: not queue(sender))
            keys = data_dir_keys(sender.config.data_dir, "example.test")
        finally:
            sender.stop()
    assert peer.sessions == 4  # three deferrals, then the delivery
    assert calls == ["example.test"]  # one signature for four attempts
    fields = dkim_fields(delivered)
    assert [b"a=rsa-sha256" in f for f in fields] == [True, False]
    stamps = {int(f.split(b"t=")[1].split(b";")[0]) for f in fields}
    assert len(stamps) == 1 and before <= stamps.pop() <= after  # t= is the submission time
    resolver = FakeResolver()
    for key in keys:
        resolver.set(key.record_name, "TXT", ["".join(key.txt_strings)])
    results = asyncio.run(verify_dkim(resolver, delivered))
    assert [r.status for r in results] == [DKIMStatus.PASS, DKIMStatus.PASS]


def test_a_key_rotated_while_the_message_waits_does_not_resign_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ScriptedPeer(greylist=1000) as refusing:
        sender = start_sender(tmp_path, {"grey.test": f"127.0.0.1:{refusing.port}"})
        try:
            submit(sender, ["user@grey.test"], subject="rotated")
            wait_for(lambda: refusing.sessions >= 1)
            (entry,) = queue(sender)
            old_selectors = [key.selector for key in data_dir_keys(sender.config.data_dir, "example.test")]
        finally:
            sender.stop()
    # The operator rotates: newer keys are what `load_keys` (and so a restarted server) signs with.
    data_dir = sender.config.data_dir
    rotated = datetime(2099, 1, 1, tzinfo=UTC)
    save_data_dir_keys(data_dir, dkim.generate_keys("example.test", rotated), rotated)
    assert [k.selector for k in data_dir_keys(data_dir, "example.test")] == ["s20990101r", "s20990101e"]
    assert (data_dir / "dkim" / "example.test" / "s20990101e.pem").is_file()  # files where they were
    calls = count_signatures(monkeypatch)
    with ScriptedPeer() as peer:
        restarted = restart_sender(tmp_path, {"grey.test": f"127.0.0.1:{peer.port}"})
        try:
            (delivered,) = wait_for(lambda: peer.messages, timeout=10)
            wait_for(lambda: not queue(restarted))
        finally:
            restarted.stop()
    assert calls == []
    fields = dkim_fields(delivered)
    assert entry.dkim_signature == b"".join(fields)
    assert [f.split(b"s=")[1].split(b";")[0].decode() for f in fields] == old_selectors


def test_failed_starttls_is_retried_once_in_clear(tmp_path: Path) -> None:
    with ScriptedPeer(broken_tls=True) as peer:
        sender = start_sender(tmp_path, {"tls.test": f"127.0.0.1:{peer.port}"})
        try:
            submit(sender, ["user@tls.test"], subject="in clear")
            wait_for(lambda: peer.messages)
            wait_for(lambda: not queue(sender))
        finally:
            sender.stop()
    assert peer.sessions == 2  # the failed handshake, then the same host without STARTTLS
    assert len(peer.messages) == 1 and b"Subject: in clear" in peer.messages[0]


def test_connections_per_domain_are_limited(tmp_path: Path) -> None:
    with ScriptedPeer(greeting_delay=0.5) as peer:
        sender = start_sender(tmp_path, {"busy.test": f"127.0.0.1:{peer.port}"}, max_connections_per_domain=2)
        try:
            for n in range(5):
                submit(sender, [f"user{n}@busy.test"], subject=f"busy {n}")
            wait_for(lambda: len(peer.messages) == 5)
            wait_for(lambda: not queue(sender))
        finally:
            sender.stop()
    # The three entries that waited for a slot go over the two sessions kept open (RFC 5321 §3.3).
    assert peer.sessions == 2
    assert peer.max_active == 2


def test_notify_success_to_a_peer_without_dsn_is_reported_as_relayed(tmp_path: Path) -> None:
    with ScriptedPeer() as peer:  # announces no DSN: we owe the success notice ourselves
        sender = start_sender(tmp_path, {"plain.test": f"127.0.0.1:{peer.port}"})
        try:
            context = ssl.create_default_context(cafile=str(sender.ca_file))
            context.check_hostname = False
            with smtplib.SMTP("127.0.0.1", sender.port("submission"), timeout=10) as client:
                client.starttls(context=context)
                client.ehlo()
                client.login(ALICE, PASSWORD)
                body = b"From: alice@example.test\r\nSubject: tell me\r\n\r\nhi\r\n"
                client.sendmail(ALICE, ["user@plain.test"], body, rcpt_options=["NOTIFY=SUCCESS"])
            (notice,) = wait_for(lambda: inbox(sender, ALICE))
            wait_for(lambda: not queue(sender))
        finally:
            sender.stop()
    assert len(peer.messages) == 1
    _, blocks = dsn_parts(notice.split(b"\r\n", 1)[1])
    (block,) = blocks[1:]
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; user@plain.test",
        "relayed",
        "2.0.0",
    )


def test_flush_by_another_process_is_seen_by_polling(tmp_path: Path) -> None:
    """`surat queue flush` opens the store itself: its change never reaches the server's feed."""
    sender = start_sender(
        tmp_path, {"dead.test": f"127.0.0.1:{free_port()}"}, retry_delays=[3600], expire_after=7200
    )
    try:
        submit(sender, ["someone@dead.test"])
        wait_for(lambda: [e for e in queue(sender) if e.attempts and e.attempts[-1].result])

        async def flush() -> int:
            other = SQLiteStore(sender.config.data_dir)
            await other.open()
            try:
                return await other.flush_queue(datetime.now(UTC))
            finally:
                await other.close()

        assert asyncio.run(flush()) == 1
        (entry,) = wait_for(
            lambda: [e for e in queue(sender) if len(e.attempts) == 2 and e.attempts[-1].result]
        )
        assert entry.next_attempt_at > datetime.now(UTC) + timedelta(minutes=50)
    finally:
        sender.stop()


def test_an_attempt_cut_short_is_resumed_after_a_restart(tmp_path: Path) -> None:
    """The server stops while a session hangs (like a crash, the attempt has no result): the next
    start makes the entry due at once instead of waiting for the claim's lease to run out."""
    with ScriptedPeer(greeting_delay=30) as hanging:
        sender = start_sender(tmp_path, {"slow.test": f"127.0.0.1:{hanging.port}"})
        try:
            submit(sender, ["user@slow.test"], subject="resumed")
            wait_for(lambda: [e for e in queue(sender) if e.attempts and e.attempts[-1].result is None])
        finally:
            sender.stop()
    with ScriptedPeer() as peer:
        restarted = restart_sender(tmp_path, {"slow.test": f"127.0.0.1:{peer.port}"})
        try:
            wait_for(lambda: peer.messages, timeout=10)
            wait_for(lambda: not queue(restarted))
        finally:
            restarted.stop()
    assert len(peer.messages) == 1 and b"Subject: resumed" in peer.messages[0]


def start_smarthost_client(tmp_path: Path, smarthost: Peer) -> Peer:
    """Server A relaying everything through B's submission port, as alice@example.test on B."""
    password_file = tmp_path / "smarthost.password"
    password_file.write_text(PASSWORD + "\n")
    delivery = fast_delivery(
        {},
        smarthost=f"127.0.0.1:{smarthost.port('submission')}",
        smarthost_user=ALICE,
        smarthost_password_file=str(password_file),
    )
    return start_sender(tmp_path, {}, **{k: v for k, v in delivery.items() if k != "routes"})


def test_smarthost_gets_auth_over_verified_tls(tmp_path: Path, remote: Peer) -> None:
    remote.add_domain("example.test")
    remote.add_user(ALICE)  # the account A logs in with at the smarthost
    sender = start_smarthost_client(tmp_path, remote)
    try:
        # The dev CA signed B's certificate for mail.example.test, not for 127.0.0.1: check the chain only.
        trusted = ssl.create_default_context(cafile=str(remote.ca_file))
        trusted.check_hostname = False
        assert sender.server.queue is not None
        sender.server.queue.smarthost_tls_context = trusted
        submit(sender, [BOB], subject="via smarthost")
        (received,) = wait_for(lambda: inbox(remote, BOB))
        wait_for(lambda: not queue(sender))
    finally:
        sender.stop()
    head = received.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: via smarthost" in head
    assert b"with ESMTPSA" in head and b"(authenticated as alice@example.test)" in head


def test_smarthost_with_an_untrusted_certificate_gets_no_credentials(tmp_path: Path, remote: Peer) -> None:
    remote.add_domain("example.test")
    remote.add_user(ALICE)
    sender = start_smarthost_client(tmp_path, remote)  # the system trust store: the dev CA is unknown
    try:
        submit(sender, [BOB], subject="kept")
        (entry,) = wait_for(lambda: [e for e in queue(sender) if e.recipients[0].last_reply])
        time.sleep(0.5)
        assert inbox(remote, BOB) == []
    finally:
        sender.stop()
    assert entry.recipients[0].state is RecipientState.PENDING
    assert entry.recipients[0].last_reply.startswith("451 4.7.5")  # TLS failed, and no retry in clear


def test_mail_to_postfix_arrives_in_its_maildir(tmp_path: Path) -> None:
    with postfix_peer("remote.test") as (port, root):
        sender = start_sender(tmp_path, {"remote.test": f"127.0.0.1:{port}"})
        try:
            submit(sender, ["test@remote.test"], subject="to postfix")
            new = root / "mail" / "test" / "Maildir" / "new"
            (path,) = wait_for(lambda: list(new.glob("*")) if new.is_dir() else [])
            wait_for(lambda: not queue(sender))
            delivered = path.read_bytes()
        finally:
            sender.stop()
    assert b"Subject: to postfix" in delivered
    assert delivered.count(b"DKIM-Signature:") == 2
    assert b"by peers-postfix.remote.test" in delivered  # Postfix's Received field
