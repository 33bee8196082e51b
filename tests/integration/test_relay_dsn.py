"""Delivery status notifications end to end: delay notices from the running server against a
closed port, NOTIFY passed on to a peer that announces DSN (a second Surat, and a recording peer),
and a real Postfix refusing an unknown user with 550. Helpers and the second Surat come from
test_relay.py; no public address is touched."""

from __future__ import annotations

import smtplib
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from conftest import PASSWORD, free_port, inbox, queue
from postfix_instance import postfix_peer
from test_relay import (
    ALICE,
    BOB,
    Peer,
    remote,
    start_sender,
    submit,
    wait_for,
)

from dsn_reports import dsn_parts

__all__ = ["remote"]  # the fixture, imported so that pytest finds it here


def send_with_dsn(sender: Peer, recipients: list[str], notify: str, subject: str) -> None:
    """Submit as alice with NOTIFY/ORCPT per recipient and RET/ENVID on MAIL (RFC 3461)."""
    context = ssl.create_default_context(cafile=str(sender.ca_file))
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", sender.port("submission"), timeout=10) as client:
        client.starttls(context=context)
        client.ehlo()
        client.login(ALICE, PASSWORD)
        body = f"From: {ALICE}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
        refused = client.sendmail(
            ALICE,
            recipients,
            body,
            mail_options=["RET=HDRS", "ENVID=env-42"],
            rcpt_options=[f"NOTIFY={notify}", f"ORCPT=rfc822;{recipients[0]}"],
        )
        assert refused == {}


def test_dead_peer_gets_one_delay_notice_then_the_failure(tmp_path: Path) -> None:
    """Port closed: retried every 0.2 s; after the notice threshold one "delayed" DSN (alice is
    authenticated, so she gets it without NOTIFY), then at expiry the "failed" one."""
    sender = start_sender(tmp_path, {"dead.test": f"127.0.0.1:{free_port()}"}, expire_after=4)
    try:
        runner = sender.server.queue
        assert runner is not None
        schedule = replace(runner.settings.schedule, delay_notice_after=timedelta(seconds=1))
        runner.settings = replace(runner.settings, schedule=schedule)
        submit(sender, ["someone@dead.test"], subject="slow one")
        wait_for(lambda: len(inbox(sender, ALICE)) >= 2, timeout=30)
        wait_for(lambda: not queue(sender))
        time.sleep(0.5)  # several poll intervals: nothing else may arrive
        notice, bounce = inbox(sender, ALICE)  # ~15 failed attempts, one notice
    finally:
        sender.stop()
    report, blocks = dsn_parts(notice.split(b"\r\n", 1)[1])
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert report["To"] == ALICE
    (block,) = blocks[1:]
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; someone@dead.test",
        "delayed",
        "4.4.1",
    )
    assert "Cannot connect" in block["Diagnostic-Code"]
    arrival = parsedate_to_datetime(blocks[0]["Arrival-Date"])
    # Not before the threshold (the attempts in the first second said nothing) ...
    assert parsedate_to_datetime(block["Last-Attempt-Date"]) - arrival >= timedelta(seconds=1)
    # ... and the promise is the expiry (expire_after = 4; the dates have whole seconds).
    until = parsedate_to_datetime(block["Will-Retry-Until"])
    assert timedelta(seconds=3) <= until - arrival <= timedelta(seconds=5)
    report, blocks = dsn_parts(bounce.split(b"\r\n", 1)[1])
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    (block,) = blocks[1:]
    assert (block["Action"], block["Status"]) == ("failed", "5.4.1")
    assert block["Will-Retry-Until"] is None


def test_notify_success_is_passed_on_to_a_surat_peer(tmp_path: Path, remote: Peer) -> None:
    """B (Surat's MX) announces DSN: A hands NOTIFY on and sends no "relayed" notice itself."""
    sender = start_sender(tmp_path, {"remote.test": f"127.0.0.1:{remote.port('smtp')}"})
    try:
        send_with_dsn(sender, [BOB], "SUCCESS,FAILURE", "passed on")
        (received,) = wait_for(lambda: inbox(remote, BOB))
        wait_for(lambda: not queue(sender))
        time.sleep(0.5)  # several poll intervals: a DSN from A would have arrived by now
        assert inbox(sender, ALICE) == []
    finally:
        sender.stop()
    assert b"Subject: passed on" in received


class RecordingPeer(socketserver.ThreadingTCPServer):
    """An SMTP peer announcing DSN (RFC 3461 §4) that records the MAIL and RCPT lines it gets."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class _RecordingHandler(socketserver.StreamRequestHandler):
    server: RecordingPeer

    def handle(self) -> None:
        peer = self.server
        self.wfile.write(b"220 dsn.test ESMTP\r\n")
        while line := self.rfile.readline(4096):
            verb = line[:4].upper()
            if verb in (b"MAIL", b"RCPT"):
                with peer.lock:
                    peer.commands.append(line.rstrip(b"\r\n"))
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-dsn.test\r\n250-8BITMIME\r\n250 DSN\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while (chunk := self.rfile.readline(65536)) not in (b".\r\n", b""):
                    data += chunk
                with peer.lock:
                    peer.messages.append(data)
                self.wfile.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 bye\r\n")
                return
            else:
                self.wfile.write(b"250 2.0.0 OK\r\n")


@pytest.fixture
def recording_peer() -> Iterator[RecordingPeer]:
    peer = RecordingPeer()
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    try:
        yield peer
    finally:
        peer.shutdown()
        peer.server_close()


def test_dsn_parameters_reach_a_peer_that_supports_dsn(tmp_path: Path, recording_peer: RecordingPeer) -> None:
    sender = start_sender(tmp_path, {"dsn.test": f"127.0.0.1:{recording_peer.port}"})
    try:
        send_with_dsn(sender, ["user@dsn.test"], "SUCCESS", "with dsn")
        wait_for(lambda: recording_peer.messages)
        wait_for(lambda: not queue(sender))
        time.sleep(0.5)
        assert inbox(sender, ALICE) == []  # the peer reports success, not us (RFC 3461 §6.2.1)
    finally:
        sender.stop()
    mail, rcpt = recording_peer.commands
    assert mail.upper().startswith(b"MAIL FROM:<ALICE@EXAMPLE.TEST>")
    assert b"RET=HDRS" in mail and b"ENVID=env-42" in mail
    assert rcpt.startswith(b"RCPT TO:<user@dsn.test>")
    assert b"NOTIFY=SUCCESS" in rcpt and b"ORCPT=rfc822;user@dsn.test" in rcpt


def test_postfix_550_for_an_unknown_user_bounces_to_the_sender(tmp_path: Path) -> None:
    with postfix_peer("remote.test") as (port, root):
        # The peer always has a catch-all: drop it, so that only listed users exist and
        # smtpd refuses the others at RCPT time (550 5.1.1, "User unknown in virtual mailbox table").
        vmailbox = root / "etc" / "vmailbox"
        lines = vmailbox.read_text().splitlines()
        vmailbox.write_text("".join(f"{line}\n" for line in lines if not line.startswith("@")))
        etc = str(root / "etc")
        for command in (
            ["postconf", "-c", etc, "-e", "smtpd_reject_unlisted_recipient = yes"],
            ["postfix", "-c", etc, "reload"],
        ):
            done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        sender = start_sender(tmp_path, {"remote.test": f"127.0.0.1:{port}"})
        try:
            submit(sender, ["test@remote.test", "nobody@remote.test"], subject="half known")
            new = root / "mail" / "test" / "Maildir" / "new"
            (path,) = wait_for(lambda: list(new.glob("*")) if new.is_dir() else [])
            (bounce,) = wait_for(lambda: inbox(sender, ALICE))
            wait_for(lambda: not queue(sender))
        finally:
            sender.stop()
        delivered = path.read_bytes()
        caught = list((root / "mail" / "catchall").glob("Maildir/*/*"))
    assert b"Subject: half known" in delivered
    assert caught == []  # refused at RCPT, not swallowed by a catch-all
    assert bounce.startswith(b"Return-Path: <>\r\n")
    report, blocks = dsn_parts(bounce.split(b"\r\n", 1)[1])
    assert report["To"] == ALICE
    (block,) = blocks[1:]  # test@ was delivered: only nobody@ is reported
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (
        "rfc822; nobody@remote.test",
        "failed",
        "5.1.1",
    )
    assert block["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert "User unknown" in block["Diagnostic-Code"]
    assert block["Remote-MTA"] == "dns; 127.0.0.1"
