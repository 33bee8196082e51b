"""The IMAP listeners of a real in-process server, driven by imaplib and a byte-exact raw client.

Messages reach the mailbox through `Store.deliver`, the way SMTP puts them there. The helpers at the top
are shared with the other test_imap_*.py files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import imaplib
import re
import secrets
import socket
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import PASSWORD, USER, RunningServer

from staging import staged
from surat.store.base import Delivery, MailboxTarget

SIMPLE = (
    b"From: Bob <bob@example.net>\r\nTo: alice@example.test\r\nSubject: hello\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.net>\r\n\r\nHi there.\r\n"
)
MULTIPART = (
    b"From: carol@example.net\r\nTo: alice@example.test\r\nSubject: parts\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"\x00\x01binary\xff").replace(b"\n", b"\r\n")
    + b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 soft=\r\nbreak\r\n--XX--\r\n"
)


# ------------------------------------------------------------------------------------------- helpers


def deliver(server: RunningServer, messages: Sequence[bytes], mailbox: str = "INBOX") -> list[int]:
    """Deliver messages to alice's mailbox through the store, one after the other; returns their UIDs."""

    async def run() -> list[int]:
        store = server.store
        account = await store.get_account(USER)
        uids = []
        for raw in messages:
            delivery = Delivery(
                await staged(store.blobs, raw),
                len(raw),
                datetime.now(UTC),
                local=(MailboxTarget(account.id, mailbox),),
            )
            result = await store.deliver(delivery)
            uids.append(int(result.local[0][2]))
        return uids

    return server.call(run())


def fetch(client: imaplib.IMAP4, messages: str, items: str) -> tuple[str, list[Any]]:
    """imaplib's FETCH, typed loosely: its data mixes bytes and (header, literal) tuples."""
    typ, data = client.fetch(messages, items)
    return typ, list(data)


def imaps(server: RunningServer) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10)


def login(server: RunningServer) -> imaplib.IMAP4_SSL:
    client = imaps(server)
    client.login(USER, PASSWORD)
    return client


class Raw:
    """A byte-exact IMAP client: shows what is on the wire (literals inlined into their line)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.counter = 0
        self.greeting = self.line()

    @classmethod
    def connect(cls, server: RunningServer, role: str = "imaps") -> Raw:
        sock = socket.create_connection(("127.0.0.1", server.port(role)), timeout=10)
        if role == "imaps":
            sock = server.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")
        return cls(sock)

    @classmethod
    def logged_in(cls, server: RunningServer) -> Raw:
        raw = cls.connect(server)
        _, done = raw.command(f'LOGIN {USER} "{PASSWORD}"')
        assert done.startswith(b"t1 OK"), done
        return raw

    def line(self) -> bytes:
        """One response line; a literal's bytes are appended to it, with the rest of the line."""
        out = self.file.readline(1_000_000)
        if not out:
            raise EOFError("connection closed")
        while (m := re.search(rb"~?\{(\d+)\}\r\n$", out)) is not None:
            out += self.file.read(int(m.group(1)))
            out += self.file.readline(1_000_000)
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_tag(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def command(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        tag = self.next_tag()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> tuple[list[bytes], bytes]:
        lines: list[bytes] = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                return lines, line
            lines.append(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# ------------------------------------------------------------------------------------------- connection and login


def test_starttls_then_login(server: RunningServer) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    # RFC 9051 §6.2.3: no plaintext login before TLS, and the capability says so.
    assert "LOGINDISABLED" in client.capabilities
    assert "STARTTLS" in client.capabilities
    assert not any(c.startswith("AUTH=") for c in client.capabilities)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(USER, PASSWORD)
    client.starttls(ssl_context=server.client_tls())
    assert "LOGINDISABLED" not in client.capabilities
    assert "AUTH=PLAIN" in client.capabilities and "AUTH=SCRAM-SHA-256" in client.capabilities
    typ, data = client.login(USER, PASSWORD)
    assert typ == "OK"
    assert b"[CAPABILITY IMAP4rev1 IMAP4rev2" in data[0]
    assert client.select("INBOX") == ("OK", [b"0"])
    client.logout()


def test_starttls_discards_injected_plaintext(server: RunningServer) -> None:
    raw = Raw.connect(server, "imap")
    # A command smuggled after STARTTLS in the same packet must not run after the handshake.
    raw.send(b"a STARTTLS\r\nb LOGIN x y\r\n")
    assert raw.line().startswith(b"a OK")
    tls_sock = server.client_tls().wrap_socket(raw.sock, server_hostname="127.0.0.1")
    tls_sock.sendall(b"c NOOP\r\n")
    reply = tls_sock.recv(1000)
    assert reply.startswith(b"c OK"), reply
    tls_sock.close()


def test_imaps_greeting_and_capabilities(server: RunningServer) -> None:
    raw = Raw.connect(server)
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    assert b"AUTH=PLAIN" in raw.greeting and b"LOGINDISABLED" not in raw.greeting
    lines, done = raw.command("CAPABILITY")
    assert done.startswith(b"t1 OK") and b"STARTTLS" not in lines[0]
    raw.close()


def test_wrong_password_is_slowed_and_refused(server: RunningServer) -> None:
    client = imaps(server)
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(USER, "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("nobody@example.test", PASSWORD)
    # auth_failure_delay is 0.05 s in tests and grows with each failure: 0.05 + 0.10.
    assert time.monotonic() - started >= 0.15
    client.login(USER, PASSWORD)
    client.logout()


def test_repeated_login_failures_end_the_connection(server: RunningServer) -> None:
    raw = Raw.connect(server)
    replies = []
    try:
        for _ in range(12):
            replies.append(raw.command('LOGIN alice@example.test "nope"')[1])
    except EOFError:
        pass
    max_failures = server.config.limits.auth_max_failures
    # The first failures are answered as such; past the per-IP limit (issue 6) the address is
    # blocked and every further attempt is refused without checking the password.
    assert all(b"NO [AUTHENTICATIONFAILED]" in r for r in replies[:max_failures])
    assert all(b"NO [UNAVAILABLE]" in r for r in replies[max_failures:])
    assert len(replies) <= server.config.limits.bad_commands


def test_authenticate_plain_with_sasl_ir(server: RunningServer) -> None:
    raw = Raw.connect(server)
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    _, done = raw.command(f"AUTHENTICATE PLAIN {token}")
    assert done.startswith(b"t1 OK [CAPABILITY"), done
    raw.close()
    # Without SASL-IR: an empty challenge, then the response; "*" cancels with BAD.
    raw = Raw.connect(server)
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ \r\n"
    raw.send(b"*\r\n")
    assert raw.line().startswith(b"a BAD")
    raw.send(b"b AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ \r\n"
    raw.send(token.encode() + b"\r\n")
    assert raw.line().startswith(b"b OK")
    raw.close()


def _scram(raw: Raw, user: str, password: str) -> bytes:
    client_nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={user},r={client_nonce}"
    raw.send(b"s AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(f"n,,{first_bare}".encode()) + b"\r\n")
    reply = raw.line()
    assert reply.startswith(b"+ "), reply
    server_first = base64.b64decode(reply[2:].strip()).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    raw.send(base64.b64encode(f"{final_bare},p={base64.b64encode(proof).decode()}".encode()) + b"\r\n")
    reply = raw.line()
    if not reply.startswith(b"+ "):
        return reply
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
    assert base64.b64decode(reply[2:].strip()).decode() == f"v={expected}"
    raw.send(b"\r\n")
    return raw.line()


def test_authenticate_scram_sha256(server: RunningServer) -> None:
    raw = Raw.connect(server)
    assert _scram(raw, USER, "wrong password").startswith(b"s NO [AUTHENTICATIONFAILED]")
    assert _scram(raw, USER, PASSWORD).startswith(b"s OK")
    raw.close()


# ------------------------------------------------------------------------------------------- messages


def test_select_fetch_store_search(server: RunningServer) -> None:
    deliver(server, [SIMPLE, MULTIPART])
    client = login(server)
    assert client.select("INBOX") == ("OK", [b"2"])
    typ, data = fetch(client, "1", "(UID FLAGS RFC822.SIZE ENVELOPE)")
    assert typ == "OK"
    assert b"UID 1 FLAGS (\\Recent) RFC822.SIZE %d" % len(SIMPLE) in data[0]  # the first to select it
    assert b'"hello" (("Bob" NIL "bob" "example.net"))' in data[0]
    assert b'"<m1@example.net>"' in data[0]
    # BODY.PEEK leaves \Seen alone; BODY[] sets it and reports FLAGS.
    typ, data = fetch(client, "1", "(BODY.PEEK[TEXT])")
    assert data[0][1] == b"Hi there.\r\n"
    assert fetch(client, "1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]
    typ, data = fetch(client, "1", "(BODY[])")
    assert data[0][1] == SIMPLE
    assert b"FLAGS (\\Seen \\Recent)" in data[1]
    assert client.search(None, "UNSEEN") == ("OK", [b"2"])
    assert client.search(None, "SUBJECT", "parts") == ("OK", [b"2"])
    assert client.search(None, "BODY", '"soft break"') == ("OK", [b""])  # QP soft line break removed
    assert client.search(None, "BODY", "softbreak") == ("OK", [b"2"])
    typ, data = client.store("1:2", "+FLAGS", "(\\Flagged $Important)")
    assert typ == "OK" and len(data) == 2
    assert b"$Important" in data[1]
    assert client.search(None, "KEYWORD", "$Important") == ("OK", [b"1 2"])
    typ, data = client.store("2", "-FLAGS.SILENT", "($Important)")
    assert typ == "OK" and data == [None]
    assert client.uid("SEARCH", "KEYWORD", "$Important") == ("OK", [b"1"])
    client.logout()


def test_fetch_sections_partial_and_binary(server: RunningServer) -> None:
    deliver(server, [MULTIPART])
    raw = Raw.logged_in(server)
    raw.command("SELECT INBOX")
    lines, done = raw.command(
        "FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT TO)])"
    )
    assert done.startswith(b"t3 OK")
    assert b"BODY[1] {10}\r\nfirst part BODY[2.MIME]" in lines[0]  # the CRLF before a boundary is not content
    assert (
        b"BODY[2.MIME] {77}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        in lines[0]
    )
    assert (
        b"BODY[HEADER.FIELDS (SUBJECT TO)] {42}\r\nTo: alice@example.test\r\nSubject: parts\r\n\r\n"
        in lines[0]
    )
    lines, _ = raw.command("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (FROM TO SUBJECT MIME-VERSION)]<0.12>)")
    assert b"BODY[HEADER.FIELDS.NOT (FROM TO SUBJECT MIME-VERSION)]<0> {12}\r\nContent-Type" in lines[0]
    # RFC 3516: BINARY removes the transfer encoding; NUL needs literal8.
    lines, _ = raw.command("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[3])")
    assert b"BINARY[2] ~{9}\r\n\x00\x01binary\xff" in lines[0]
    assert b"BINARY.SIZE[2] 9" in lines[0]
    assert b"BINARY[3] {15}\r\ncaf\xc3\xa9 softbreak)" in lines[0]
    lines, _ = raw.command("FETCH 1 (FLAGS)")
    assert lines == [b"* 1 FETCH (FLAGS (\\Recent))\r\n"]  # every fetch above was a PEEK
    lines, _ = raw.command("FETCH 1 (BODYSTRUCTURE)")
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)' in lines[0]
    assert b'"mixed" ("boundary" "XX") NIL NIL NIL)' in lines[0]
    raw.close()


def test_envelope_header_fields_and_search_read_the_same_from(server: RunningServer) -> None:
    # Issue 11 item 7: "From : x" (RFC 5322 §4.5.3 WSP before the colon) is a From field for every reader.
    deliver(server, [b"From : CEO <ceo@example.test>\r\nSubject: s\r\nX-Note: a\r\n\tb\r\n\r\nbody\r\n"])
    raw = Raw.logged_in(server)
    raw.command("SELECT INBOX")
    lines, done = raw.command("FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (FROM X-NOTE)])")
    assert done.startswith(b"t3 OK")
    assert b'(("CEO" NIL "ceo" "example.test"))' in lines[0]
    assert (
        b"BODY[HEADER.FIELDS (FROM X-NOTE)] {48}\r\nFrom : CEO <ceo@example.test>\r\nX-Note: a\r\n\tb\r\n\r\n"
        in lines[0]
    )
    lines, _ = raw.command("SEARCH FROM ceo@example.test")
    assert lines == [b"* SEARCH 1\r\n"]
    lines, _ = raw.command('SEARCH HEADER X-Note "a b"')  # unfolded, WSP runs as one space
    assert lines == [b"* SEARCH 1\r\n"]
    raw.close()


def test_large_message_is_streamed(server: RunningServer) -> None:
    body = b"".join(b"line %07d of a long message\r\n" % i for i in range(40_000))  # ~1.2 MB
    message = b"Subject: big\r\n\r\n" + body
    deliver(server, [message])
    client = login(server)
    client.select("INBOX")
    _, data = fetch(client, "1", "(BODY.PEEK[])")
    assert data[0][1] == message
    _typ, data = fetch(client, "1", "(BODY.PEEK[TEXT]<1000000.64>)")
    assert data[0][0].endswith(b"BODY[TEXT]<1000000> {64}")
    assert data[0][1] == body[1_000_000:1_000_064]
    client.logout()


def test_copy_move_expunge_with_uidplus(server: RunningServer) -> None:
    deliver(server, [SIMPLE, SIMPLE, SIMPLE])
    client = login(server)
    client.select("INBOX")
    typ, data = client.copy("1:2", "Archive")
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    typ, data = client.uid("MOVE", "2", "Trash")
    assert typ == "OK"
    assert client.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert client.select("Trash") == ("OK", [b"1"])
    client.select("INBOX")
    client.store("1", "+FLAGS", "\\Deleted")
    typ, data = client.expunge()
    assert data == [b"1"]
    assert client.select("INBOX") == ("OK", [b"1"])
    assert fetch(client, "1", "(UID)")[1] == [b"1 (UID 3)"]
    assert client.copy("1", "Nonexistent") == ("NO", [b"[TRYCREATE] no such mailbox"])
    client.logout()


def test_append_multiappend_and_limits(server: RunningServer) -> None:
    raw = Raw.logged_in(server)
    date = '"01-Jan-2024 10:00:00 +0100"'
    raw.send(b"a APPEND Drafts (\\Draft) " + date.encode() + b" {%d}\r\n" % len(SIMPLE))
    assert raw.line().startswith(b"+ ")
    raw.send(SIMPLE + b"\r\n")
    done = raw.line()
    assert re.match(rb"a OK \[APPENDUID \d+ 1\]", done), done
    # MULTIAPPEND with non-synchronizing literals (LITERAL+).
    raw.send(b"b APPEND Drafts {6+}\r\nA: b\r\n () {6+}\r\nC: d\r\n\r\n")
    assert re.match(rb"b OK \[APPENDUID \d+ 2:3\]", raw.line())
    lines, _ = raw.command("EXAMINE Drafts")
    assert b"* 3 EXISTS\r\n" in lines
    lines, _ = raw.command("FETCH 1 (FLAGS INTERNALDATE)")
    # EXAMINE claims nothing but shows what no session has claimed as \Recent (RFC 3501 §6.3.2).
    assert lines == [b'* 1 FETCH (FLAGS (\\Draft \\Recent) INTERNALDATE "01-Jan-2024 10:00:00 +0100")\r\n']
    # A missing mailbox is refused before the data is sent (RFC 9051 §6.3.12 TRYCREATE).
    raw.send(b"c APPEND Nope {5}\r\n")
    assert raw.line().startswith(b"c NO [TRYCREATE]")
    # Over APPENDLIMIT: NO [TOOBIG] instead of the continuation (RFC 7889).
    limit = server.config.limits.message_size
    raw.send(b"d APPEND INBOX {%d}\r\n" % (limit + 1))
    assert raw.line().startswith(b"d NO [TOOBIG]")
    _, done = raw.command("NOOP")
    assert b" OK " in done
    raw.close()


def test_nonsync_literal_over_limit_closes(server: RunningServer) -> None:
    raw = Raw.logged_in(server)
    raw.send(b"a APPEND INBOX {%d+}\r\n" % (server.config.limits.message_size + 1))
    assert raw.line().startswith(b"a BAD [TOOBIG]")
    assert raw.line().startswith(b"* BYE")
    with pytest.raises(EOFError):
        raw.line()


def test_quota(server: RunningServer) -> None:
    deliver(server, [SIMPLE])
    server.call(server.store.set_quota(USER, 10 * 1024))
    raw = Raw.logged_in(server)
    lines, _done = raw.command("GETQUOTAROOT INBOX")
    assert lines == [b'* QUOTAROOT INBOX ""\r\n', b'* QUOTA "" (STORAGE 1 10)\r\n']
    raw.send(b"a APPEND INBOX {20000}\r\n")
    assert raw.line().startswith(b"a NO [OVERQUOTA]")
    raw.close()


def test_compress_deflate(server: RunningServer) -> None:
    deliver(server, [SIMPLE])
    raw = Raw.logged_in(server)
    _, done = raw.command("COMPRESS DEFLATE")
    assert done.startswith(b"t2 OK")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    decompressor = zlib.decompressobj(-15)
    raw.sock.sendall(
        compressor.compress(b"c1 SELECT INBOX\r\nc2 FETCH 1 BODY.PEEK[]\r\n")
        + compressor.flush(zlib.Z_SYNC_FLUSH)
    )
    received = b""
    while b"c2 OK" not in received:
        received += decompressor.decompress(raw.sock.recv(65536))
    assert b"c1 OK [READ-WRITE]" in received
    assert SIMPLE in received
    raw.sock.close()


# ------------------------------------------------------------------------------------------- mailboxes


def test_list_special_use_and_extended(server: RunningServer) -> None:
    client = login(server)
    typ, data = client.list()
    assert typ == "OK"
    assert b'(\\HasNoChildren) "/" INBOX' in data
    assert b'(\\HasNoChildren \\Sent) "/" Sent' in data
    for use in ("Drafts", "Trash", "Junk", "Archive"):
        assert f'(\\HasNoChildren \\{use}) "/" {use}'.encode() in data
    client.create("Projects/2024")
    client.unsubscribe("Projects")
    _, listed = client.list('""', "%")
    top = [d for d in listed if isinstance(d, bytes)]
    assert b'(\\HasChildren) "/" Projects' in top and not any(b"2024" in d for d in top)
    client._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    names = client.untagged_responses.pop("LIST")
    assert len(names) == 5 and all(b"\\HasNoChildren \\" in n for n in names)
    client._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
    names = client.untagged_responses.pop("LIST")
    assert b'(\\HasChildren) "/" Projects ("CHILDINFO" ("SUBSCRIBED"))' in names
    client._simple_command("LIST", '""', "INBOX", "RETURN", "(STATUS (MESSAGES UIDNEXT))")
    assert client.untagged_responses.pop("STATUS") == [b"INBOX (MESSAGES 0 UIDNEXT 1)"]
    client.logout()


def test_create_rename_delete_subscribe(server: RunningServer) -> None:
    deliver(server, [SIMPLE])
    client = login(server)
    assert client.create("Work/")[0] == "OK"
    assert client.create("Work")[0] == "NO"  # ALREADYEXISTS
    assert client._simple_command("CREATE", "Receipts", "(USE (\\Archive))")[0] == "OK"
    assert client.create("Work/Sub")[0] == "OK"
    assert client.delete("Work")[0] == "NO"  # HASCHILDREN
    assert client.rename("Work", "Job")[0] == "OK"
    assert client.status("Job/Sub", "(MESSAGES)")[0] == "OK"
    # RFC 9051 §6.3.6: renaming INBOX moves its messages and leaves INBOX empty.
    assert client.rename("INBOX", "Old")[0] == "OK"
    assert client.status("Old", "(MESSAGES)")[1] == [b"Old (MESSAGES 1)"]
    assert client.status("INBOX", "(MESSAGES)")[1] == [b"INBOX (MESSAGES 0)"]
    assert client.delete("INBOX")[0] == "NO"
    assert client.delete("Old")[0] == "OK"
    assert client.status("Old", "(MESSAGES)")[0] == "NO"
    assert client.unsubscribe("Job")[0] == "OK"
    assert not any(n.split(b'"/" ')[-1] == b"Job" for n in client.lsub()[1] if n)
    client.logout()


def test_utf8_names_for_rev1_and_rev2(server: RunningServer) -> None:
    raw = Raw.logged_in(server)
    # RFC 3501 §5.1.3: a rev1 client speaks modified UTF-7.
    _, done = raw.command("CREATE Entw&APw-rfe")
    assert done.startswith(b"t2 OK")
    lines, _ = raw.command('LIST "" Entw*')
    assert lines == [b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\n']
    _, done = raw.command("CREATE &Jjo-&Jjo-")  # not canonical: two adjacent runs
    assert done == b"t4 NO [CANNOT] invalid mailbox name (not modified UTF-7): adjacent BASE64 runs\r\n"
    raw.command("ENABLE UTF8=ACCEPT")
    lines, _ = raw.command('LIST "" Entw*')
    assert lines == [b'* LIST (\\HasNoChildren) "/" "Entw\xc3\xbcrfe"\r\n']
    raw.close()


def test_status_items(server: RunningServer) -> None:
    deliver(server, [SIMPLE, MULTIPART])
    client = login(server)
    _typ, data = client.status("INBOX", "(MESSAGES UIDNEXT UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT)")
    size = len(SIMPLE) + len(MULTIPART)
    expected = (
        rf"INBOX \(MESSAGES 2 UIDNEXT 3 UNSEEN 2 DELETED 0 SIZE {size} HIGHESTMODSEQ \d+ APPENDLIMIT \d+\)"
    )
    assert re.fullmatch(expected.encode(), data[0]), data
    assert client.status("Nope", "(MESSAGES)")[0] == "NO"
    client.logout()


# ------------------------------------------------------------------------------------------- bad input


def test_bad_input(server: RunningServer) -> None:
    deliver(server, [SIMPLE])
    raw = Raw.connect(server)
    # Commands in the wrong state are BAD (RFC 9051 §3).
    _, done = raw.command("SELECT INBOX")
    assert done.startswith(b"t1 BAD")
    _, done = raw.command(f'LOGIN {USER} "{PASSWORD}"')
    assert done.startswith(b"t2 OK")
    _, done = raw.command("FETCH 1 FLAGS")
    assert done.startswith(b"t3 BAD")
    raw.command("SELECT INBOX")
    # Malformed sequence sets, and numbers beyond EXISTS.
    _, done = raw.command("FETCH 0:x FLAGS")
    assert done.startswith(b"t5 BAD")
    _, done = raw.command("FETCH 5 FLAGS")
    assert done.startswith(b"t6 BAD") and b"out of range" in done
    _, done = raw.command("SEARCH FROB")
    assert done.startswith(b"t7 BAD")
    _, done = raw.command("SEARCH CHARSET KOI9 ALL")
    assert done.startswith(b"t8 NO [BADCHARSET")
    _, done = raw.command("SELECT Missing")
    assert done.startswith(b"t9 NO [NONEXISTENT]")
    _, done = raw.command("NOOP")
    assert done.startswith(b"t10 OK")
    raw.close()


def test_garbage_gets_bad_then_bye(server: RunningServer) -> None:
    raw = Raw.connect(server, "imap")
    replies = []
    with pytest.raises((EOFError, BrokenPipeError, ConnectionResetError)):
        for _ in range(50):
            raw.send(b"\x16\x03\x01 garbage\r\n")
            replies.append(raw.line())
    # Not even a tag can be read, so the BAD is untagged (RFC 9051 §7.1.3).
    assert all(r.startswith(b"* BAD ") for r in replies[:-1])
    assert replies[-1].startswith(b"* BYE")
    assert len(replies) == server.config.limits.bad_commands + 1


def test_autologout(server: RunningServer) -> None:
    from surat.imapd.session import IMAPService

    # A service with a short autologout, on its own listener.
    service = IMAPService(server.config, server.store, server.server.tls, autologout=0.3)

    async def start() -> tuple[asyncio.Server, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from surat.net.connection import Connection

            conn = Connection(reader, writer, "imaps")
            try:
                await service.handler("imaps")(conn)
            finally:
                await conn.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server.server.tls_context)
        return srv, srv.sockets[0].getsockname()[1]

    srv, port = server.call(start())
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = server.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")
        raw = Raw(tls)
        raw.command(f'LOGIN {USER} "{PASSWORD}"')
        assert raw.line().startswith(b"* BYE")
        raw.close()
    finally:
        # The server's loop runs in another thread: asyncio objects are closed from their own loop.
        server.loop.call_soon_threadsafe(srv.close)


def test_pipelined_commands_idle_and_append_transcript(server: RunningServer) -> None:
    raw = Raw.connect(server)
    # APPEND before login: refused instead of the continuation, and the command is over.
    raw.send(b"p APPEND INBOX {5}\r\n")
    assert raw.line() == b"p BAD APPEND not allowed in this state\r\n"
    raw.command(f'LOGIN {USER} "{PASSWORD}"')
    raw.send(b"a NOOP\r\nb IDLE\r\nDONE\r\nc APPEND INBOX {6+}\r\nA: b\r\n\r\nd SELECT INBOX\r\n")
    assert raw.line() == b"a OK NOOP completed\r\n"
    assert raw.line() == b"+ idling\r\n"
    assert raw.line() == b"b OK IDLE terminated\r\n"
    assert re.fullmatch(rb"c OK \[APPENDUID \d+ 1\] APPEND completed\r\n", raw.line())
    lines, done = raw.until("d")
    assert b"* 1 EXISTS\r\n" in lines and done == b"d OK [READ-WRITE] SELECT completed\r\n"
    raw.send(b"e IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    raw.send(b"NOT DONE\r\n")
    assert raw.line() == b"e BAD expected DONE\r\n"
    raw.close()
