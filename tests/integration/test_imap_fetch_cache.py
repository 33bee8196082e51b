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


def joined(data: list[object]) -> bytes:
    """imaplib's FETCH data as one byte string (lines and literals in order)."""
    out = b""
    for item in data:
        if isinstance(item, tuple):
            out += b"".join(x for x in item if isinstance(x, bytes))
        elif isinstance(item, bytes):
            out += item
    return out


STRUCTURES = "(ENVELOPE BODY BODYSTRUCTURE)"


def test_cached_envelopes_and_structures_name_the_right_message(server: RunningServer) -> None:
    """The ENVELOPE/BODY/BODYSTRUCTURE cache is keyed by mailbox, UIDVALIDITY and UID: UID 1 of another
    mailbox, or of a mailbox deleted and created again under the same name, is another message."""
    client = login(server)
    try:
        client.create("Other")
        deliver(server, [SIMPLE])
        deliver(server, [MULTIPART], mailbox="Other")
        client.select("INBOX")
        first = joined(fetch(client, "1", STRUCTURES)[1])
        assert b'"hello"' in first and b'BODY ("text" "plain" ' in first
        # BODY has no extension data, BODYSTRUCTURE has: two entries, not one.
        assert (
            b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)'
            in first
        )
        assert joined(fetch(client, "1", STRUCTURES)[1]) == first  # now from the cache
        client.select("Other")
        other = joined(fetch(client, "1", STRUCTURES)[1])
        assert b'"parts"' in other and b'"hello"' not in other and b'"mixed"' in other
        client.select("INBOX")
        client.delete("Other")
        client.create("Other")
        deliver(server, [NESTED], mailbox="Other")
        client.select("Other")
        again = joined(fetch(client, "1", STRUCTURES)[1])
        assert b'"forwarded"' in again and b'"parts"' not in again
        # Mixed with an item that needs the message file: the cached values and the header agree.
        mixed = joined(fetch(client, "1", "(ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1])
        assert b'"forwarded"' in mixed and b"Subject: forwarded\r\n" in mixed
    finally:
        client.logout()


def test_cached_envelope_follows_each_sessions_utf8_mode(server: RunningServer) -> None:
    """RFC 6855 §3: raw UTF-8 goes quoted only to a session that enabled UTF8=ACCEPT; a value cached
    for one kind of session is never served to the other."""
    deliver(server, [b"From: a@example.net\r\nSubject: caf\xc3\xa9\r\n\r\nbody\r\n"])
    plain, utf8 = login(server), login(server)
    try:
        utf8.enable("UTF8=ACCEPT")
        for _ in range(2):
            for client in (plain, utf8):
                client.select("INBOX")
            assert b"{5}caf\xc3\xa9" in joined(fetch(plain, "1", "(ENVELOPE)")[1])
            assert b'"caf\xc3\xa9"' in joined(fetch(utf8, "1", "(ENVELOPE)")[1])
    finally:
        for client in (plain, utf8):
            with contextlib.suppress(imaplib.IMAP4.error):
                client.logout()
