"""POP3 against the rest of the server: a POP3 expunge seen by a live IMAP session, and the autologout timer.

Mail arrives through the real SMTP listener, the IMAP side is the byte-exact raw client of
test_imap_basic.py (it shows untagged EXPUNGE during IDLE, which imaplib hides), the POP3 side is poplib.
"""

from __future__ import annotations

import inspect
import poplib
import re
import smtplib
import time

import pytest
from conftest import PASSWORD, USER, RunningServer
from test_imap_basic import SIMPLE, Raw, deliver

from surat.config import HostPort
from surat.net.listener import Listeners, ListenerSpec
from surat.pop3d.service import POP3Service

FIRST = b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: first\r\n\r\nOne.\r\n"
SECOND = b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: second\r\n\r\nTwo.\r\n"

# How long a live IMAP session may wait for a change made by another protocol. The change feed
# delivers in milliseconds; the margin is for a loaded CI machine.
NOTIFY_WITHIN = 2.0


def pop3s_login(server: RunningServer, port: int | None = None) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(
        "127.0.0.1", port or server.port("pop3s"), context=server.client_tls(), timeout=5
    )
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def send_by_smtp(server: RunningServer, *messages: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        for message in messages:
            assert smtp.sendmail("bob@example.net", [USER], message) == {}


def read_until(raw: Raw, wanted: bytes, within: float) -> list[bytes]:
    """Untagged lines until (and including) `wanted`; fails if it does not come within `within` seconds."""
    raw.sock.settimeout(within)
    lines: list[bytes] = []
    deadline = time.monotonic() + within
    try:
        while wanted not in lines:
            assert time.monotonic() < deadline, f"no {wanted!r} within {within}s, got {lines!r}"
            try:
                lines.append(raw.line())
            except TimeoutError:
                pytest.fail(f"no {wanted!r} within {within}s, got {lines!r}")
    finally:
        raw.sock.settimeout(10)
    return lines


# ------------------------------------------------------------------------------------------- issue 4


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "noop"])
def test_smtp_delivery_expunged_by_pop3_disappears_from_live_imap_session(
    server: RunningServer, idle: bool
) -> None:
    imap = Raw.logged_in(server)
    lines, done = imap.command("SELECT INBOX")
    assert b"* 0 EXISTS\r\n" in lines and done.startswith(b"t2 OK"), (lines, done)

    if idle:
        imap.send(b"i1 IDLE\r\n")
        assert imap.line() == b"+ idling\r\n"
        send_by_smtp(server, FIRST, SECOND)
        # RFC 2177: new mail is announced during IDLE; two deliveries may be reported as one EXISTS.
        read_until(imap, b"* 2 EXISTS\r\n", NOTIFY_WITHIN)
    else:
        send_by_smtp(server, FIRST, SECOND)
        # SMTP's 250 comes after the delivery is committed, so the next NOOP reports it.
        lines, done = imap.command("NOOP")
        assert b"* 2 EXISTS\r\n" in lines and done.endswith(b"OK NOOP completed\r\n"), (lines, done)

    pop = pop3s_login(server)
    assert pop.stat()[0] == 2
    _, retr, _ = pop.retr(1)
    assert b"Subject: first" in retr
    assert pop.dele(1).startswith(b"+OK")
    if not idle:
        # RFC 1939 §6: DELE only marks; nothing is removed before QUIT, so IMAP sees no change yet.
        lines, _ = imap.command("NOOP")
        assert not any(b"EXPUNGE" in line for line in lines), lines
    assert pop.quit().startswith(b"+OK")

    if idle:
        lines = read_until(imap, b"* 1 EXPUNGE\r\n", NOTIFY_WITHIN)
        assert b"* 2 EXPUNGE\r\n" not in lines, lines
        imap.send(b"DONE\r\n")
        lines, done = imap.until("i1")
        assert done == b"i1 OK IDLE terminated\r\n"
        assert not any(b"EXPUNGE" in line for line in lines), lines  # reported once only
    else:
        lines, _ = imap.command("NOOP")
        assert lines == [b"* 1 EXPUNGE\r\n"], lines

    # The session's view now matches the store: one message left, the second one, as number 1.
    lines, done = imap.command("SEARCH ALL")
    assert lines == [b"* SEARCH 1\r\n"] and b"OK" in done, (lines, done)
    lines, _ = imap.command("UID SEARCH ALL")
    assert lines == [b"* SEARCH 2\r\n"], lines
    lines, _ = imap.command("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert len(lines) == 1, lines
    assert re.match(rb"\* 1 FETCH \(UID 2 BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}\r\n", lines[0]), lines
    assert b"Subject: second" in lines[0] and b"first" not in lines[0]
    lines, done = imap.command("UID FETCH 1 (FLAGS)")
    assert lines == [] and b"OK" in done, (lines, done)

    # A second IMAP session, opened afterwards, agrees.
    other = Raw.logged_in(server)
    lines, _ = other.command("EXAMINE INBOX")
    assert b"* 1 EXISTS\r\n" in lines, lines
    other.command("LOGOUT")
    other.close()
    imap.command("LOGOUT")
    imap.close()


# ------------------------------------------------------------------------------------------- RFC 1939 §3


def test_pop3_idle_timeout_closes_without_deleting(server: RunningServer) -> None:
    # RFC 1939 §3: the production autologout timer is at least 10 minutes.
    default = inspect.signature(POP3Service.__init__).parameters["idle_timeout"].default
    assert isinstance(default, float | int) and default >= 600

    deliver(server, [SIMPLE])
    tls = server.server.tls
    assert tls is not None
    service = POP3Service(server.config, server.store, tls, idle_timeout=0.5)
    listeners = Listeners()
    spec = ListenerSpec(
        role="pop3s",
        addresses=(HostPort("127.0.0.1", 0),),
        handler=service.handler("pop3s"),
        implicit_tls=tls,
    )
    server.call(listeners.start(spec))
    try:
        port = listeners.bound("pop3s")[0][1]
        pop = pop3s_login(server, port)
        assert pop.stat()[0] == 1
        assert pop.dele(1).startswith(b"+OK")
        silent_since = time.monotonic()
        # Go silent: the server must end the session by itself. (If it never does, the 5 s
        # client timeout fails the read.)
        rest = b""
        try:
            while chunk := pop.sock.recv(4096):
                rest += chunk
        except TimeoutError:
            pytest.fail("the server did not close an idle POP3 session")
        except ConnectionResetError:
            pass  # closed, less politely: still closed
        elapsed = time.monotonic() - silent_since
        assert 0.4 <= elapsed < 4, elapsed
        assert not rest.startswith(b"+OK"), rest  # nothing that looks like an UPDATE-state QUIT
        pop.close()

        # A timeout is not a QUIT (RFC 1939 §3, §6): the message marked deleted is still there,
        # and the maildrop lock was released with the session.
        again = pop3s_login(server, port)
        assert again.stat()[0] == 1
        assert again.quit().startswith(b"+OK")
        imap = Raw.logged_in(server)
        lines, _ = imap.command("EXAMINE INBOX")
        assert b"* 1 EXISTS\r\n" in lines, lines
        imap.close()
    finally:
        server.call(listeners.stop())
