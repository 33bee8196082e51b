"""Multi-device sync over IMAP: two sessions seeing each other's changes, IDLE fed by the change feed
(deliveries through the store and through SMTP), CONDSTORE and QRESYNC resynchronisation."""

from __future__ import annotations

import re
import smtplib
import time

from conftest import PASSWORD, USER, RunningServer
from imapclient import IMAPClient
from test_imap_basic import MULTIPART, SIMPLE, Raw, deliver


def client(server: RunningServer) -> IMAPClient:
    c = IMAPClient(
        "127.0.0.1", port=server.port("imaps"), ssl=True, ssl_context=server.client_tls(), timeout=10
    )
    c.login(USER, PASSWORD)
    return c


def test_two_sessions_see_each_others_changes(server: RunningServer) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    a = Raw.logged_in(server)
    b = Raw.logged_in(server)
    a.command("SELECT INBOX")
    b.command("SELECT INBOX")
    b.command("STORE 1 +FLAGS (\\Flagged)")
    lines, _ = a.command("NOOP")
    # a selected first, so the messages are \Recent for it (RFC 3501 §2.3.2), and so is the new one.
    assert lines == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"]
    deliver(server, [MULTIPART])
    lines, _ = a.command("NOOP")
    assert lines == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]
    b.command("NOOP")
    b.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.command("EXPUNGE")
    # RFC 9051 §7.5.1: no EXPUNGE during FETCH by sequence number; numbers stay as the client knows them.
    lines, _ = a.command("FETCH 3 (UID)")
    assert lines == [b"* 3 FETCH (UID 3)\r\n"]
    lines, _ = a.command("NOOP")
    assert lines == [b"* 1 EXPUNGE\r\n"]
    lines, _ = a.command("FETCH 1:* (UID)")
    assert lines == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 3)\r\n"]
    # A session that enabled CONDSTORE gets MODSEQ with every flag update.
    lines, _ = a.command("FETCH 1 (MODSEQ)")
    # RFC 7162 §3.1: the first CONDSTORE-enabling command with a mailbox selected reports HIGHESTMODSEQ.
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] CONDSTORE enabled\r\n", lines[0])
    assert re.fullmatch(rb"\* 1 FETCH \(MODSEQ \(\d+\)\)\r\n", lines[1])
    b.command("STORE 2 +FLAGS ($Later)")
    lines, _ = a.command("NOOP")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)\r\n" in lines
    assert any(
        re.fullmatch(rb"\* 2 FETCH \(FLAGS \(\$Later \\Recent\) MODSEQ \(\d+\)\)\r\n", x) for x in lines
    ), lines
    a.close()
    b.close()


def test_idle_receives_store_delivery_and_other_sessions(server: RunningServer) -> None:
    deliver(server, [SIMPLE])
    watcher = client(server)
    watcher.select_folder("INBOX")
    other = client(server)
    other.select_folder("INBOX")
    watcher.idle()
    started = time.monotonic()
    deliver(server, [SIMPLE])
    responses = watcher.idle_check(timeout=5)
    assert (2, b"EXISTS") in responses
    assert time.monotonic() - started < 1.0  # RFC 2177: immediately, well within a second
    other.add_flags([1], [b"\\Seen"])
    responses = watcher.idle_check(timeout=5)
    assert any(r[0] == 1 and r[1] == b"FETCH" for r in responses), responses
    other.delete_messages([1])
    other.expunge()
    responses = watcher.idle_check(timeout=5)
    while (1, b"EXPUNGE") not in responses:
        responses = watcher.idle_check(timeout=5)
        assert responses, "no EXPUNGE during IDLE"
    watcher.idle_done()
    assert watcher.search("ALL") == [2]  # imapclient uses UIDs
    watcher.logout()
    other.logout()


def test_idle_receives_mail_sent_by_smtp(server: RunningServer) -> None:
    watcher = client(server)
    watcher.select_folder("INBOX")
    watcher.idle()
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        smtp.sendmail("bob@example.net", [USER], SIMPLE)
    responses = watcher.idle_check(timeout=5)
    assert (1, b"EXISTS") in responses
    assert time.monotonic() - started < 1.0
    watcher.idle_done()
    fetched = watcher.fetch([1], ["ENVELOPE"])
    assert fetched[1][b"ENVELOPE"].subject == b"hello"
    watcher.logout()


def test_qresync_after_offline_expunges(server: RunningServer) -> None:
    deliver(server, [SIMPLE] * 5)
    first = client(server)
    assert first.enable("QRESYNC") == [b"QRESYNC"]
    info = first.select_folder("INBOX")
    uidvalidity = info[b"UIDVALIDITY"]
    modseq = info[b"HIGHESTMODSEQ"]
    first.logout()
    # While the first device is offline another one expunges two messages and flags one.
    other = client(server)
    other.select_folder("INBOX")
    other.delete_messages([2, 4])
    other.expunge()
    other.add_flags([5], [b"\\Answered"])
    other.logout()
    raw = Raw.logged_in(server)
    raw.command("ENABLE QRESYNC")
    lines, done = raw.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5))")
    assert done.endswith(b"OK [READ-WRITE] SELECT completed\r\n")
    assert b"* VANISHED (EARLIER) 2,4\r\n" in lines
    flag_lines = [x for x in lines if b"FETCH" in x]
    assert len(flag_lines) == 1
    assert re.fullmatch(rb"\* 3 FETCH \(UID 5 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)\r\n", flag_lines[0])
    # Expunges seen later under QRESYNC are VANISHED, not EXPUNGE.
    raw.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    lines, _ = raw.command("EXPUNGE")
    assert lines == [b"* VANISHED 1\r\n"]
    # UID FETCH ... (CHANGEDSINCE m VANISHED) reports what went away since m.
    lines, _ = raw.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 1:2,4\r\n"
    assert len(lines) == 2 and b"UID 5 " in lines[1]
    raw.close()


def test_condstore_unchangedsince_and_changedsince(server: RunningServer) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    c = client(server)
    info = c.select_folder("INBOX")
    modseq = info[b"HIGHESTMODSEQ"]
    c.add_flags([1], [b"\\Seen"])
    changed = c.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
    assert list(changed) == [1]
    raw = Raw.logged_in(server)
    raw.command("SELECT INBOX")
    _, done = raw.command(f"STORE 1:2 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)")
    assert b"OK [MODIFIED 1]" in done
    c.logout()
    raw.close()


def test_esearch_searchres_sort_thread(server: RunningServer) -> None:
    messages = [
        b"Subject: b topic\r\nFrom: z@example.net\r\nMessage-ID: <1@x>\r\n\r\nx\r\n",
        b"Subject: Re: b topic\r\nFrom: a@example.net\r\nMessage-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\ny\r\n",
        b"Subject: a topic\r\nFrom: m@example.net\r\nMessage-ID: <3@x>\r\n\r\nz\r\n",
    ]
    deliver(server, messages)
    raw = Raw.logged_in(server)
    raw.command("SELECT INBOX")
    lines, _ = raw.command("SEARCH RETURN (MIN MAX COUNT) ALL")
    assert lines == [b'* ESEARCH (TAG "t3") MIN 1 MAX 3 COUNT 3\r\n']
    lines, _ = raw.command("UID SEARCH RETURN (SAVE) SUBJECT topic NOT FROM m@")
    assert lines == []
    lines, _ = raw.command("UID FETCH $ (UID)")
    assert lines == [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n"]
    # Base subjects "a topic" < "b topic" = "b topic"; the tie goes to REVERSE FROM (z before a).
    lines, _ = raw.command("SORT (SUBJECT REVERSE FROM) UTF-8 ALL")
    assert lines == [b"* SORT 3 1 2\r\n"]
    lines, _ = raw.command("THREAD REFERENCES UTF-8 ALL")
    assert lines == [b"* THREAD (1 2)(3)\r\n"]
    _, done = raw.command("ENABLE IMAP4rev2")
    assert b" BAD " in done  # RFC 5161 §3.1: only before a mailbox is selected
    raw.command("UNSELECT")
    raw.command("ENABLE IMAP4rev2")
    raw.command("SELECT INBOX")
    lines, _ = raw.command("UID SEARCH SUBJECT b")
    assert lines == [b'* ESEARCH (TAG "t12") UID ALL 1:2\r\n']  # RFC 9051 §6.4.4: rev2 gets ESEARCH
    raw.close()
