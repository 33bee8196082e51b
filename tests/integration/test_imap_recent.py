"""\\Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2): a message is recent for the first session told of it
and for no other; EXAMINE looks without claiming (§6.3.2); RECENT after SELECT's EXISTS (§6.3.1) and after
each EXISTS for new mail (§7.3.2); SEARCH RECENT/NEW/OLD (§6.4.4); STATUS RECENT (§6.3.10); a copy is
recent for the next session to select its mailbox (§6.4.7). IMAP4rev2 has no \\Recent (RFC 9051
Appendix E): such a session neither sees nor claims it. Transcripts are byte-exact."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest
from conftest import USER, RunningServer
from test_imap_basic import SIMPLE, Raw, deliver


@pytest.fixture
def session(server: RunningServer) -> Iterator[Callable[[], Raw]]:
    """Opens logged-in raw sessions, closed after the test."""
    opened: list[Raw] = []

    def open_one() -> Raw:
        raw = Raw.logged_in(server)
        opened.append(raw)
        return raw

    yield open_one
    for raw in opened:
        raw.close()


Opener = Callable[[], Raw]


def counts(lines: list[bytes]) -> list[bytes]:
    """The EXISTS and RECENT lines of a response, in order."""
    return [line for line in lines if line.endswith((b" EXISTS\r\n", b" RECENT\r\n"))]


def transcript(raw: Raw, steps: list[tuple[str, list[bytes]]]) -> None:
    """Each command, and the exact untagged lines it must get before its tagged OK."""
    for command, expected in steps:
        lines, done = raw.command(command)
        assert b" OK " in done, (command, done)
        assert lines == expected, command


def flags_of(raw: Raw, seqs: str) -> list[bytes]:
    lines, done = raw.command(f"FETCH {seqs} (FLAGS)")
    assert b" OK " in done, done
    return lines


def test_first_select_claims_and_the_next_sees_none(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    first, second = session(), session()
    lines, _ = first.command("SELECT INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    assert flags_of(first, "1:*") == [
        b"* 1 FETCH (FLAGS (\\Recent))\r\n",
        b"* 2 FETCH (FLAGS (\\Recent))\r\n",
    ]
    lines, _ = second.command("SELECT INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]
    assert flags_of(second, "1:*") == [b"* 1 FETCH (FLAGS ())\r\n", b"* 2 FETCH (FLAGS ())\r\n"]
    # Selecting again does not give back what this session was told of: the claim is gone with the view.
    lines, _ = first.command("SELECT INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]
    # \Recent cannot be stored (RFC 3501 §2.3.2): STORE leaves it out.
    transcript(second, [("STORE 1 +FLAGS (\\Recent \\Flagged)", [b"* 1 FETCH (FLAGS (\\Flagged))\r\n"])])


def test_examine_shows_recent_without_claiming(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    looker, selector = session(), session()
    lines, _ = looker.command("EXAMINE INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    assert flags_of(looker, "1") == [b"* 1 FETCH (FLAGS (\\Recent))\r\n"]
    lines, _ = selector.command("SELECT INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]  # EXAMINE left them to be claimed
    lines, _ = looker.command("EXAMINE INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]


def test_mail_arriving_during_idle_is_recent(server: RunningServer, session: Opener) -> None:
    watcher, other = session(), session()
    lines, _ = watcher.command("SELECT INBOX")
    assert counts(lines) == [b"* 0 EXISTS\r\n", b"* 0 RECENT\r\n"]
    other.command("SELECT INBOX")
    watcher.send(b"i IDLE\r\n")
    assert watcher.line() == b"+ idling\r\n"
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        smtp.sendmail("bob@example.net", [USER], SIMPLE)
        assert watcher.line() == b"* 1 EXISTS\r\n"
        assert watcher.line() == b"* 1 RECENT\r\n"
        smtp.sendmail("bob@example.net", [USER], SIMPLE)
        assert watcher.line() == b"* 2 EXISTS\r\n"
        assert watcher.line() == b"* 2 RECENT\r\n"  # the total this session holds (RFC 3501 §7.3.2)
    watcher.send(b"DONE\r\n")
    assert watcher.line() == b"i OK IDLE terminated\r\n"
    assert flags_of(watcher, "1:2") == [
        b"* 1 FETCH (FLAGS (\\Recent))\r\n",
        b"* 2 FETCH (FLAGS (\\Recent))\r\n",
    ]
    # The other session, told after the watcher, gets them without \Recent.
    lines, _ = other.command("NOOP")
    assert lines == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]
    assert flags_of(other, "2") == [b"* 2 FETCH (FLAGS ())\r\n"]


def test_search_recent_new_old(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE] * 3)
    a, b = session(), session()
    a.command("SELECT INBOX")
    a.command("STORE 1 +FLAGS.SILENT (\\Seen)")
    lines, _ = b.command("SELECT INBOX")
    assert counts(lines) == [b"* 3 EXISTS\r\n", b"* 0 RECENT\r\n"]
    deliver(server, [SIMPLE])
    lines, _ = b.command("NOOP")  # b is told of UID 4 first: it is b's
    assert lines == [b"* 4 EXISTS\r\n", b"* 1 RECENT\r\n"]
    lines, _ = a.command("NOOP")
    assert lines == [b"* 4 EXISTS\r\n", b"* 3 RECENT\r\n"]
    for raw, expected in (
        # RFC 3501 §6.4.4: NEW = RECENT UNSEEN, OLD = NOT RECENT.
        (a, {"RECENT": b"1 2 3", "NEW": b"2 3", "OLD": b"4", "NOT RECENT": b"4", "RECENT SEEN": b"1"}),
        (b, {"RECENT": b"4", "NEW": b"4", "OLD": b"1 2 3", "NOT RECENT": b"1 2 3", "RECENT SEEN": b""}),
    ):
        for key, numbers in expected.items():
            lines, _ = raw.command(f"SEARCH {key}")
            assert lines == [b"* SEARCH" + (b" " + numbers if numbers else b"") + b"\r\n"], key
    transcript(b, [("UID SEARCH RECENT", [b"* SEARCH 4\r\n"])])
    # Expunged messages leave the count (no RECENT is owed for it: only EXISTS changes trigger one).
    transcript(
        a,
        [
            ("STORE 2 +FLAGS.SILENT (\\Deleted)", []),
            ("EXPUNGE", [b"* 2 EXPUNGE\r\n"]),
            ("SEARCH RECENT", [b"* SEARCH 1 2\r\n"]),
        ],
    )


def test_status_recent_counts_what_no_session_claimed(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE, SIMPLE], mailbox="Archive")
    a, b = session(), session()
    transcript(a, [("STATUS Archive (RECENT MESSAGES)", [b"* STATUS Archive (RECENT 2 MESSAGES 2)\r\n"])])
    b.command("SELECT Archive")
    transcript(a, [("STATUS Archive (RECENT MESSAGES)", [b"* STATUS Archive (RECENT 0 MESSAGES 2)\r\n"])])
    # On its own selected mailbox a session counts what it claimed (RFC 3501 §6.3.10 is per session).
    transcript(b, [("STATUS Archive (RECENT)", [b"* STATUS Archive (RECENT 2)\r\n"])])


def test_copy_and_append_are_recent_for_the_next_selector(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    a, b = session(), session()
    a.command("SELECT INBOX")
    _, done = a.command("COPY 1:2 Archive")
    assert b" OK " in done, done
    transcript(a, [("STATUS Archive (RECENT)", [b"* STATUS Archive (RECENT 2)\r\n"])])
    lines, _ = b.command("SELECT Archive")
    assert counts(lines) == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    assert flags_of(b, "1:2") == [b"* 1 FETCH (FLAGS (\\Recent))\r\n", b"* 2 FETCH (FLAGS (\\Recent))\r\n"]
    # APPEND into the mailbox this session has selected: it is told of the message, and claims it.
    b.send(b"ap APPEND Archive {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n")
    lines, done = b.until("ap")
    assert done.startswith(b"ap OK [APPENDUID "), done
    assert counts(lines) == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]
    transcript(a, [("STATUS Archive (RECENT)", [b"* STATUS Archive (RECENT 0)\r\n"])])


def test_imap4rev2_session_neither_sees_nor_claims_recent(server: RunningServer, session: Opener) -> None:
    deliver(server, [SIMPLE, SIMPLE])
    rev2, rev1 = session(), session()
    transcript(rev2, [("ENABLE IMAP4rev2", [b"* ENABLED IMAP4rev2\r\n"])])
    lines, _ = rev2.command("SELECT INBOX")
    assert counts(lines) == [b"* 2 EXISTS\r\n"]  # RFC 9051 §6.3.2: no RECENT response
    assert flags_of(rev2, "1") == [b"* 1 FETCH (FLAGS ())\r\n"]
    transcript(
        rev2,
        [
            ("STATUS Archive (RECENT)", [b"* STATUS Archive (RECENT 0)\r\n"]),
            # The keys stay parsed (the server speaks IMAP4rev1 too) and match as if nothing were recent.
            ("SEARCH RECENT", [b'* ESEARCH (TAG "t6")\r\n']),
            ("SEARCH OLD", [b'* ESEARCH (TAG "t7") ALL 1:2\r\n']),
        ],
    )
    deliver(server, [SIMPLE])
    transcript(rev2, [("NOOP", [b"* 3 EXISTS\r\n"])])
    # Nothing was claimed: an IMAP4rev1 session still gets all three as recent.
    lines, _ = rev1.command("SELECT INBOX")
    assert counts(lines) == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]
