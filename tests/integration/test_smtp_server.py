"""The SMTP listeners of a real in-process server, driven by smtplib, raw sockets and swaks."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import os
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import DOMAIN, PASSWORD, USER, Raw, RunningServer, inbox, make_config, queue, require_tool

BOB = "bob@example.test"


def tls_context(server: RunningServer) -> ssl.SSLContext:
    """Verifies the dev CA; the tests connect to 127.0.0.1, so the name is not checked."""
    context = server.client_tls()
    context.check_hostname = False
    return context


def message(sender: str, to: str, subject: str = "hello", body: str = "Hi there.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def mx(server: RunningServer) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10)


def submission(server: RunningServer, login: bool = True) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port("submission"), local_hostname="client.example", timeout=10)
    client.starttls(context=tls_context(server))
    client.ehlo()  # RFC 3207 §4.2: the session starts over under TLS
    if login:
        client.login(USER, PASSWORD)
    return client


# ------------------------------------------------------------------------------------------ MX


def test_mx_delivers_to_an_account_with_trace_headers(server: RunningServer) -> None:
    with mx(server) as client:
        client.send_message(message("someone@remote.example", USER), "someone@remote.example", [USER])
    (stored,) = inbox(server, USER)
    assert stored.startswith(
        b"Return-Path: <someone@remote.example>\r\nReceived: from client.example ([127.0.0.1])"
    )
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert b"with ESMTP id " in head
    assert b"for <alice@example.test>;" in head
    assert b"\r\nSubject: hello\r\n" in head
    assert b"Message-ID" not in head  # only submission adds it
    assert stored.endswith(b"Hi there.\r\n")
    assert queue(server) == []


def test_mx_alias_catch_all_and_plus_addressing(server: RunningServer) -> None:
    server.add_user(BOB)
    server.add_alias("sales@example.test", USER)
    server.add_alias("sales@example.test", BOB)
    server.add_alias("@example.test", BOB)
    with mx(server) as client:
        client.sendmail("x@remote.example", ["sales@example.test"], b"Subject: 1\r\n\r\nto alias\r\n")
        client.sendmail("x@remote.example", ["nobody-here@example.test"], b"Subject: 2\r\n\r\ncatch-all\r\n")
        client.sendmail("x@remote.example", ["alice+lists@Example.TEST"], b"Subject: 3\r\n\r\nplus\r\n")
        client.sendmail("x@remote.example", ["sales+x@example.test"], b"Subject: 4\r\n\r\nalias plus\r\n")
    alice = [m.split(b"\r\n\r\n")[1] for m in inbox(server, USER)]
    bob = [m.split(b"\r\n\r\n")[1] for m in inbox(server, BOB)]
    assert alice == [b"to alias\r\n", b"plus\r\n", b"alias plus\r\n"]
    assert bob == [b"to alias\r\n", b"catch-all\r\n", b"alias plus\r\n"]


def test_mx_alias_loop_is_a_temporary_configuration_error(server: RunningServer) -> None:
    # `surat alias add` refuses cycles; one that slipped in (here written to the store directly) is
    # reported as a routing loop (RFC 3463 X.4.6) the sender retries, not as an unknown user, and the
    # catch-all does not swallow it.
    server.add_alias("a@example.test", "b@example.test")
    server.add_alias("b@example.test", "a@example.test")
    server.add_alias("@example.test", USER)
    with mx(server) as client:
        client.ehlo()
        client.mail("x@remote.example")
        assert client.rcpt("a@example.test") == (451, b"4.4.6 Alias loop for this address, try again later")
        assert client.rcpt("nobody@example.test")[0] == 250
    assert inbox(server, USER) == []


def test_mx_alias_to_a_remote_address_is_queued(server: RunningServer) -> None:
    server.add_alias("fwd@example.test", "friend@remote.example")
    with mx(server) as client:
        client.sendmail("x@elsewhere.example", ["fwd@example.test"], b"Subject: fwd\r\n\r\nforward me\r\n")
    (entry,) = queue(server)
    assert [r.address for r in entry.recipients] == ["friend@remote.example"]
    assert entry.recipients[0].orcpt == "rfc822;fwd@example.test"
    assert entry.sender == "x@elsewhere.example"


def test_mx_unknown_user(server: RunningServer) -> None:
    with mx(server) as client:
        client.ehlo()
        client.mail("x@remote.example")
        assert client.rcpt("nobody@example.test")[0] == 550
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")


def test_mx_over_quota_is_a_temporary_failure(server: RunningServer) -> None:
    server.call(server.store.set_quota(USER, 1000))
    big = message("x@remote.example", USER, body="y" * 2000 + "\n")
    with mx(server) as client:
        client.ehlo()
        client.mail("x@remote.example")
        assert client.rcpt(USER)[0] == 250
        code, text = client.data(big.as_bytes())
        assert (code, text[:5]) == (452, b"4.2.2")  # the sender retries once the user made room
    assert inbox(server, USER) == []


def test_mx_relay_denied(server: RunningServer) -> None:
    with mx(server) as client:
        client.ehlo()
        client.mail("x@remote.example")
        code, text = client.rcpt("victim@other.example")
        assert (code, text[:5]) == (554, b"5.7.1")


def test_mx_has_no_auth(server: RunningServer) -> None:
    with mx(server) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.has_extn("starttls")
        client.starttls(context=tls_context(server))
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")[0] == 502


def test_mx_postmaster_without_domain(server: RunningServer) -> None:
    server.add_alias("postmaster@example.test", USER)
    with mx(server) as client:
        client.ehlo()
        client.mail("x@remote.example")
        assert client.docmd("RCPT", "TO:<Postmaster>")[0] == 250
        assert client.data(b"Subject: pm\r\n\r\nhi\r\n")[0] == 250
    assert len(inbox(server, USER)) == 1


# ------------------------------------------------------------------------------------------ submission


def test_submission_starttls_auth_local_and_remote(server: RunningServer) -> None:
    with submission(server) as client:
        msg = message(USER, "bob@remote.example, alice@example.test")
        refused = client.send_message(msg, USER, [USER, "bob@remote.example"])
        assert refused == {}
    (stored,) = inbox(server, USER)
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert b"with ESMTPSA id" in head
    assert b"(authenticated as alice@example.test)" in head
    assert b"version=TLSv1.3" in head or b"version=TLSv1.2" in head
    assert b"\r\nMessage-ID: <" in head  # RFC 6409 §8
    assert b"\r\nDate: " in head
    (entry,) = queue(server)
    assert [r.address for r in entry.recipients] == ["bob@remote.example"]
    assert entry.authenticated_user == USER
    assert entry.body_offset == len(b"Return-Path: <alice@example.test>\r\n")


def test_submission_keeps_existing_message_id(server: RunningServer) -> None:
    with submission(server) as client:
        msg = message(USER, USER)
        msg["Message-ID"] = "<mine@example.test>"
        msg["Date"] = "Mon, 1 Jan 2024 00:00:00 +0000"
        client.send_message(msg)
    (stored,) = inbox(server, USER)
    assert stored.count(b"Message-ID:") == 1 and b"<mine@example.test>" in stored
    assert stored.count(b"\r\nDate:") == 1


def test_submissions_implicit_tls(server: RunningServer) -> None:
    port = server.port("submissions")
    with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_context(server), timeout=10) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN", "SCRAM-SHA-256"}
        client.login(USER, PASSWORD)
        client.sendmail(USER, [USER], b"From: alice@example.test\r\nSubject: tls\r\n\r\nimplicit\r\n")
    (stored,) = inbox(server, USER)
    assert stored.endswith(b"\r\n\r\nimplicit\r\n")


def test_auth_login_mechanism(server: RunningServer) -> None:
    client = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10)
    with client:
        client.starttls(context=tls_context(server))
        client.ehlo()
        client.user, client.password = USER, PASSWORD
        assert client.auth("LOGIN", client.auth_login)[0] == 235


def test_auth_scram_sha_256(server: RunningServer) -> None:
    """A hand-written RFC 5802 client, since smtplib has no SCRAM."""
    client = submission(server, login=False)
    with client:
        client.ehlo()
        nonce = "rOprNGfwEbeRWgbNEkqO"
        first_bare = f"n={USER},r={nonce}"
        code, challenge = client.docmd(
            "AUTH", "SCRAM-SHA-256 " + base64.b64encode(b"n,," + first_bare.encode()).decode()
        )
        assert code == 334
        server_first = base64.b64decode(challenge).decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        assert attrs["r"].startswith(nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
        code, final = client.docmd(base64.b64encode(f"{without_proof},p={proof}".encode()).decode())
        assert code == 334
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
        assert base64.b64decode(final).decode() == f"v={expected}"
        assert client.docmd("")[0] == 235
        client.ehlo()
        assert client.mail(USER)[0] == 250


def test_auth_before_tls_refused(server: RunningServer) -> None:
    client = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10)
    with client:
        client.ehlo()
        assert not client.has_extn("auth")
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, text = client.docmd("AUTH", "PLAIN " + plain)
        assert (code, text[:5]) == (530, b"5.7.0")
        code, text = client.mail(USER)
        assert (code, text[:5]) == (530, b"5.7.0")


def test_wrong_password(server: RunningServer) -> None:
    client = submission(server, login=False)
    with client:
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(USER, "wrong password")  # smtplib tries PLAIN, then LOGIN: two failures
        assert info.value.smtp_code == 535
        error = info.value.smtp_error
        assert (error if isinstance(error, bytes) else error.encode()).startswith(b"5.7.8")
        assert time.monotonic() - started >= 2 * server.config.limits.auth_failure_delay
        client.login(USER, PASSWORD)


def test_three_auth_failures_close_the_connection(server: RunningServer) -> None:
    client = submission(server, login=False)
    with client:
        for user in ("nobody@example.test", USER):
            plain = base64.b64encode(f"\0{user}\0wrong".encode()).decode()
            code, text = client.docmd("AUTH", "PLAIN " + plain)
            assert (code, text[:5]) == (535, b"5.7.8")  # the same answer for unknown users
        code, text = client.docmd("AUTH", "PLAIN " + plain)
        assert (code, text[:5]) == (421, b"4.7.0")


def test_mail_before_auth_refused(server: RunningServer) -> None:
    with submission(server, login=False) as client:
        code, text = client.mail(USER)
        assert (code, text[:5]) == (530, b"5.7.0")


def test_sender_not_owned(server: RunningServer) -> None:
    server.add_user(BOB)
    server.add_alias("info@example.test", USER)
    with submission(server) as client:
        code, text = client.mail(BOB)
        assert (code, text[:5]) == (553, b"5.7.1")
        code, _ = client.mail("<>")
        assert code == 553
        assert client.mail("info@example.test")[0] == 250  # an alias pointing to alice
        client.rset()
        assert client.mail("alice+tag@example.test")[0] == 250
        client.rcpt(BOB)
        code, text = client.data(b"From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nx\r\n")
        assert (code, text[:5]) == (550, b"5.7.1")
        client.mail(USER)
        client.rcpt(BOB)
        assert client.data(b"From: Info <info@example.test>\r\nSubject: ok\r\n\r\nx\r\n")[0] == 250
    assert len(inbox(server, BOB)) == 1


def test_submission_accepts_any_recipient_but_unknown_local_users(server: RunningServer) -> None:
    with submission(server) as client:
        client.mail(USER)
        assert client.rcpt("anyone@anywhere.example")[0] == 250
        assert client.rcpt("nobody@example.test")[0] == 550


# ------------------------------------------------------------------------------------------ limits


@pytest.fixture
def small_server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path, limits={"message_size": 4096, "smtp_idle_timeout": 1, "auth_failure_delay": 0}
    )
    running = RunningServer(config)
    try:
        running.add_domain(DOMAIN)
        running.add_user(USER)
        yield running
    finally:
        running.stop()


def test_oversize(small_server: RunningServer) -> None:
    with mx(small_server) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "4096"
        code, text = client.mail("x@remote.example", ["SIZE=5000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.mail("x@remote.example")[0] == 250
        assert client.rcpt(USER)[0] == 250
        code, text = client.data(b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 400)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250
    assert inbox(small_server, USER) == []
    assert list(small_server.store.spool_dir.iterdir()) == []


def test_idle_timeout(small_server: RunningServer) -> None:
    client = Raw(small_server)
    try:
        assert client.reply().startswith(b"421 4.4.2")
    finally:
        client.close()


def test_bad_commands_close_the_connection(raw: Raw) -> None:
    for _ in range(9):
        assert raw.command(b"BOGUS\r\n").startswith(b"500 5.5.1")
    assert raw.command(b"BOGUS\r\n").startswith(b"421 4.7.0")
    assert raw.file.readline() == b""


# ------------------------------------------------------------------------------------------ byte-exact


def test_bdat(server: RunningServer, raw: Raw) -> None:
    raw.envelope()
    first = b"Subject: chunks\r\n\r\nfirst part, "
    assert raw.command(b"BDAT %d\r\n" % len(first) + first).startswith(b"250 2.0.0")
    last = b"second part.\r\n"
    assert raw.command(b"BDAT %d LAST\r\n" % len(last) + last).startswith(b"250 2.0.0")
    (stored,) = inbox(server, USER)
    assert stored.endswith(b"\r\n\r\nfirst part, second part.\r\n")


def test_pipelined_transaction(server: RunningServer, raw: Raw) -> None:
    raw.send(
        b"EHLO client.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
        b"RCPT TO:<nobody@example.test>\r\nDATA\r\n"
    )
    replies = [raw.reply()[:9] for _ in range(5)]
    assert replies[1:] == [b"250 2.1.0", b"250 2.1.5", b"550 5.1.1", b"354 End d"]
    assert raw.command(b"Subject: p\r\n\r\n..dot\r\n.\r\n").startswith(b"250 2.0.0")
    (stored,) = inbox(server, USER)
    assert stored.endswith(b"\r\n\r\n.dot\r\n")


def test_smuggling_attempt(server: RunningServer, raw: Raw) -> None:
    server.add_user(BOB)
    raw.envelope()
    assert raw.command(b"DATA\r\n").startswith(b"354")
    raw.send(
        b"Subject: innocent\r\n\r\nhello\n.\n"
        b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nforged\r\n.\r\n"
    )
    assert raw.reply().startswith(b"250 2.0.0")
    assert raw.command(b"QUIT\r\n").startswith(b"221")
    (stored,) = inbox(server, USER)
    assert b"hello\r\n.\r\nMAIL FROM:<ceo@example.test>\r\n" in stored
    assert inbox(server, BOB) == []


def test_dropped_connection_delivers_nothing(server: RunningServer, raw: Raw) -> None:
    raw.envelope()
    assert raw.command(b"DATA\r\n").startswith(b"354")
    raw.send(b"Subject: half\r\n\r\n" + b"x" * 100000)
    raw.close()
    bdat = Raw(server)
    bdat.envelope()
    bdat.send(b"BDAT 1000 LAST\r\n" + b"y" * 500)
    bdat.close()
    deadline = time.monotonic() + 5
    while list(server.store.spool_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(server.store.spool_dir.iterdir()) == []
    assert inbox(server, USER) == []


def test_starttls_discards_pipelined_plaintext(server: RunningServer, raw: Raw) -> None:
    assert raw.command(b"EHLO client.example\r\n").startswith(b"250")
    raw.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\n")
    assert raw.reply().startswith(b"220 2.0.0")
    tls = tls_context(server).wrap_socket(raw.sock, server_hostname="mail.example.test")
    tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
    answer = tls.recv(1000)
    assert answer.startswith(b"503 5.5.1")  # no MAIL was accepted: the pipelined one was dropped
    tls.close()


# ------------------------------------------------------------------------------------------ swaks


def swaks_with_tls() -> str:
    swaks = require_tool("swaks")
    probe = subprocess.run([swaks, "--support"], capture_output=True, timeout=30, check=False)
    if b"=== TLS supported" not in probe.stdout + probe.stderr:
        message = "swaks lacks TLS support (Debian package libnet-ssleay-perl)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return swaks


def test_swaks_submission(server: RunningServer) -> None:
    swaks = swaks_with_tls()
    result = subprocess.run(
        [
            swaks,
            "--server", "127.0.0.1",
            "--port", str(server.port("submission")),
            "--tls",
            "--auth", "PLAIN",
            "--auth-user", USER,
            "--auth-password", PASSWORD,
            "--from", USER,
            "--to", USER,
            "--header", f"From: {USER}",
            "--body", "sent by swaks",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    (stored,) = inbox(server, USER)
    assert b"sent by swaks" in stored


def test_swaks_mx_pipelining_and_chunking(server: RunningServer) -> None:
    swaks = require_tool("swaks")
    result = subprocess.run(
        [
            swaks,
            "--server", "127.0.0.1",
            "--port", str(server.port("smtp")),
            "--pipeline",
            "--from", "someone@remote.example",
            "--to", USER,
            "--body", "via swaks",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    (stored,) = inbox(server, USER)
    assert b"via swaks" in stored


def test_notify_success_for_a_local_mailbox_sends_a_delivered_dsn(server: RunningServer) -> None:
    # RFC 3461 §6.2.2: the final MTA reports a successful delivery when NOTIFY=SUCCESS asks for it.
    server.add_user("bob@example.test")
    msg = message(USER, "bob@example.test", subject="track me")
    with mx(server) as client:
        client.ehlo()
        refused = client.sendmail(
            USER,
            ["bob@example.test"],
            msg.as_bytes(),
            mail_options=["RET=HDRS", "ENVID=track-1"],
            rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@example.test"],
        )
        assert refused == {}
    assert len(inbox(server, "bob@example.test")) == 1
    (dsn_bytes,) = inbox(server, USER)
    dsn = email.message_from_bytes(dsn_bytes)
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_content_type() == "multipart/report"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Action: delivered" in text and "Status: 2.0.0" in text
    assert "Original-Envelope-Id: track-1" in text
    assert "Original-Recipient: rfc822; bob@example.test" in text
    quoted = next(p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers")
    assert "Subject: track me" in quoted.as_string()


def test_no_success_dsn_unless_asked_or_to_the_null_sender(server: RunningServer) -> None:
    server.add_user("bob@example.test")
    with mx(server) as client:
        client.ehlo()
        client.sendmail(USER, ["bob@example.test"], message(USER, "bob@example.test").as_bytes())
        client.sendmail(
            "", ["bob@example.test"], b"Subject: bounce\r\n\r\nx\r\n", rcpt_options=["NOTIFY=SUCCESS"]
        )
    assert len(inbox(server, "bob@example.test")) == 2
    assert inbox(server, USER) == []
