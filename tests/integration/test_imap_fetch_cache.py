"""FETCH answers served from the caches (header blocks, decoded MessageInfo) are the same as the first time,
and a missing part's empty header never stands in for a real one."""

from __future__ import annotations

import contextlib
import imaplib

from conftest import RunningServer
from test_imap_basic import MULTIPART, SIMPLE, deliver, fetch, login

NESTED = (
    b"From: dave@example.net\r\nTo: alice@example.test\r\nSubject: forwarded\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=YY\r\n\r\n"
    b"--YY\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
    b"--YY\r\nContent-Type: message/rfc822\r\n\r\n" + SIMPLE + b"--YY--\r\n"
)


def literal(data: list[object], index: int = 0) -> bytes:
    item = data[index]
    assert isinstance(item, tuple)
    value = item[1]
    assert isinstance(value, bytes)
    return value


def test_header_sections_are_the_same_from_the_cache(server: RunningServer) -> None:
    deliver(server, [SIMPLE, MULTIPART, NESTED])
    client = login(server)
    try:
        client.select("INBOX")
        first = [
            literal(fetch(client, str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")[1]) for n in (1, 2, 3)
        ]
        assert first[0] == b"From: Bob <bob@example.net>\r\nSubject: hello\r\n\r\n"
        assert first[1] == b"From: carol@example.net\r\nSubject: parts\r\n\r\n"
        # Again, now from the cache; and the whole header, which is another range of the same message.
        for _ in range(2):
            again = [
                literal(fetch(client, str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")[1])
                for n in (1, 2, 3)
            ]
            assert again == first
        assert (
            literal(fetch(client, "1", "(BODY.PEEK[HEADER])")[1]) == SIMPLE[: SIMPLE.index(b"\r\n\r\n") + 4]
        )
        assert literal(fetch(client, "1", "(RFC822.HEADER)")[1]) == SIMPLE[: SIMPLE.index(b"\r\n\r\n") + 4]
        # The embedded message's header (part 2 of message 3), then the outer one: different blocks.
        inner = literal(fetch(client, "3", "(BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])")[1])
        assert inner == b"Subject: hello\r\n\r\n"
        outer = literal(fetch(client, "3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1])
        assert outer == b"Subject: forwarded\r\n\r\n"
    finally:
        client.logout()


def test_a_missing_parts_header_does_not_shadow_the_message_header(server: RunningServer) -> None:
    deliver(server, [MULTIPART])
    client = login(server)
    try:
        client.select("INBOX")
        # Part 1 is text/plain, not a message: its HEADER is empty (as Dovecot answers), cached or not.
        typ, data = fetch(client, "1", "(BODY.PEEK[1.HEADER] BODY.PEEK[1.HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        assert data[:2] == [(b"1 (BODY[1.HEADER] {0}", b""), (b" BODY[1.HEADER.FIELDS (SUBJECT)] {0}", b"")]
        subject = literal(fetch(client, "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1])
        assert subject == b"Subject: parts\r\n\r\n"
        header = literal(fetch(client, "1", "(BODY.PEEK[HEADER])")[1])
        assert header.startswith(b"From: carol@example.net\r\n") and header.endswith(b"\r\n\r\n")
    finally:
        client.logout()


def test_body_fetches_and_flags_across_sessions(server: RunningServer) -> None:
    """BODY[] (streamed from the file, sets \\Seen) and SEARCH UNSEEN seen by a second session."""
    deliver(server, [SIMPLE, MULTIPART])
    first, second = login(server), login(server)
    try:
        first.select("INBOX")
        second.select("INBOX")
        assert second.search(None, "UNSEEN") == ("OK", [b"1 2"])
        assert literal(fetch(first, "2", "(BODY[])")[1]) == MULTIPART
        second.noop()  # the view takes in other sessions' changes after each command (RFC 9051 §7.5.1)
        assert second.search(None, "UNSEEN") == ("OK", [b"1"])
        assert second.search(None, "SEEN") == ("OK", [b"2"])
        first.store("1", "+FLAGS", "(\\Seen)")
        second.noop()
        assert second.search(None, "UNSEEN") == ("OK", [b""])
    finally:
        for client in (first, second):
            with contextlib.suppress(imaplib.IMAP4.error):
                client.logout()
