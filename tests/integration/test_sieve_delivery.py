"""Sieve at final delivery (issue 14), through the real server's MX listener: each test stores a script
for alice, sends a message over SMTP, and looks where it went (IMAP, the store, the outbound queue).

remote.example's MX fails temporarily in these tests (conftest.RunningServer), so what the server
sends away (vacation replies, redirects, rejection notices) waits in the queue where a test reads it.
"""

from __future__ import annotations

import imaplib
from typing import Any

import pytest
from conftest import DOMAIN, PASSWORD, USER, Raw, RunningServer, inbox, queue

from surat.cli import set_generated_script
from surat.sieve.generated import FORWARD_SCRIPT, VACATION_SCRIPT, forward_script, vacation_script

BOB = f"bob@{DOMAIN}"
SENDER = "sender@remote.example"


def use_script(server: RunningServer, text: str, address: str = USER) -> None:
    async def put() -> None:
        account = await server.store.get_account(address)
        await server.store.put_sieve_script(account.id, "main", text)
        await server.store.activate_sieve_script(account.id, "main")

    server.call(put())


def message(subject: str = "hello", *, to: str = USER, extra: str = "") -> bytes:
    return (
        f"From: Sender <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m-{subject.replace(' ', '-')}@remote.example>\r\n"
        f"{extra}\r\nBody of {subject}.\r\n"
    ).encode()


def send(
    server: RunningServer, content: bytes, rcpts: tuple[str, ...] = (USER,), sender: str = SENDER
) -> bytes:
    """One SMTP transaction on port 25; the reply to the end of DATA."""
    client = Raw(server)
    try:
        assert client.command(b"EHLO client.example\r\n").startswith(b"250")
        assert client.command(f"MAIL FROM:<{sender}>\r\n".encode()).startswith(b"250")
        for rcpt in rcpts:
            assert client.command(f"RCPT TO:<{rcpt}>\r\n".encode()).startswith(b"250")
        assert client.command(b"DATA\r\n").startswith(b"354")
        return client.command(content + b".\r\n")
    finally:
        client.close()


def queued(server: RunningServer) -> list[tuple[str, list[str], bytes]]:
    """(sender, recipients, message as it will be sent) of every queue entry."""

    async def read() -> list[tuple[str, list[str], bytes]]:
        out = []
        for entry in await server.store.list_queue():
            data = await server.store.blobs.read(entry.blob_id, entry.body_offset)
            out.append((entry.sender, [r.address for r in entry.recipients], data))
        return out

    result: list[tuple[str, list[str], bytes]] = server.call(read())
    return result


@pytest.fixture
def bob(server: RunningServer) -> str:
    server.add_user(BOB)
    return BOB


def test_fileinto_with_flags_is_seen_over_imap(server: RunningServer) -> None:
    use_script(
        server,
        'require ["fileinto", "imap4flags"];\n'
        'if header :contains "subject" "[news]" { fileinto :flags ["\\\\Flagged", "newsletter"] "Archive"; }\n',
    )
    assert send(server, message("[news] weekly")).startswith(b"250 ")
    assert send(server, message("personal")).startswith(b"250 ")
    client = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=server.client_tls())
    try:
        client.login(USER, PASSWORD)
        assert client.select("Archive")[1] == [b"1"]
        status, data = client.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK"
        first: Any = data[0]
        assert b"\\Flagged" in first[0] and b"newsletter" in first[0]
        assert first[1] == b"Subject: [news] weekly\r\n\r\n"
        assert client.select("INBOX")[1] == [b"1"]
    finally:
        client.logout()


def test_fileinto_create_makes_the_mailbox_and_a_missing_one_means_inbox(server: RunningServer) -> None:
    use_script(
        server,
        'require ["fileinto", "mailbox"];\n'
        'if header :is "subject" "a" { fileinto :create "Lists/Python"; }\n'
        'if header :is "subject" "b" { fileinto "Missing"; }\n',
    )
    assert send(server, message("a")).startswith(b"250 ")
    assert send(server, message("b")).startswith(b"250 ")
    assert [m.split(b"Subject: ")[1][:1] for m in inbox(server, USER, "Lists/Python")] == [b"a"]
    assert [m.split(b"Subject: ")[1][:1] for m in inbox(server, USER)] == [b"b"]


def test_discard_stores_nothing(server: RunningServer) -> None:
    use_script(server, 'if header :contains "subject" "spam" { discard; }\n')
    assert send(server, message("spam offer")).startswith(b"250 ")
    assert inbox(server, USER) == []
    assert queue(server) == []


def test_vacation_replies_once_per_period_from_null_sender(server: RunningServer) -> None:
    use_script(server, 'require "vacation";\nvacation :days 7 :subject "Away" "I am away until Monday.";\n')
    assert send(server, message("first")).startswith(b"250 ")
    assert send(server, message("second")).startswith(b"250 ")  # same sender, same period: no reply
    assert len(inbox(server, USER)) == 2  # vacation keeps the message (implicit keep)
    ((sender, rcpts, reply),) = queued(server)
    assert (sender, rcpts) == ("", [SENDER])
    head, _, body = reply.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
    assert fields[b"To"] == f"<{SENDER}>".encode()
    assert fields[b"From"] == USER.encode()
    assert fields[b"Subject"] == b"Away"
    assert fields[b"Auto-Submitted"] == b"auto-replied (vacation)"
    assert fields[b"In-Reply-To"] == b"<m-first@remote.example>"
    assert fields[b"References"] == b"<m-first@remote.example>"
    assert body == b"I am away until Monday.\r\n"


@pytest.mark.parametrize(
    ("sender", "to", "extra", "why"),
    [
        ("", USER, "", "null sender"),
        (SENDER, USER, "List-Id: <news.remote.example>\r\n", "mailing list"),
        (SENDER, USER, "Precedence: bulk\r\n", "Precedence"),
        (SENDER, USER, "Auto-Submitted: auto-generated\r\n", "Auto-Submitted"),
        (SENDER, "someone-else@remote.example", "", "not addressed"),
        ("owner-list@remote.example", USER, "", "automatic sender"),
    ],
)
def test_no_vacation_reply(server: RunningServer, sender: str, to: str, extra: str, why: str) -> None:
    use_script(server, 'require "vacation";\nvacation "away";\n')
    assert send(server, message("x", to=to, extra=extra), sender=sender).startswith(b"250 ")
    assert queued(server) == []
    assert len(inbox(server, USER)) == 1


def test_redirect_to_a_local_user_delivers_directly(server: RunningServer, bob: str) -> None:
    use_script(server, f'redirect "{bob}";\n')
    assert send(server, message("for bob")).startswith(b"250 ")
    assert inbox(server, USER) == []
    (copy,) = inbox(server, bob)
    assert b"Subject: for bob" in copy
    assert queue(server) == []


def test_redirect_to_a_remote_address_is_queued_with_delivered_to(server: RunningServer) -> None:
    use_script(server, 'require "copy";\nredirect :copy "friend@remote.example";\n')
    assert send(server, message("pass it on")).startswith(b"250 ")
    assert len(inbox(server, USER)) == 1  # :copy keeps it here too
    ((sender, rcpts, data),) = queued(server)
    assert (sender, rcpts) == (SENDER, ["friend@remote.example"])  # the envelope sender kept (no SRS yet)
    assert data.startswith(f"Delivered-To: {USER}\r\nReceived: ".encode())
    assert b"Subject: pass it on" in data


def test_a_message_that_already_went_through_the_account_is_kept_not_redirected(
    server: RunningServer,
) -> None:
    use_script(server, 'redirect "friend@remote.example";\n')
    looped = message("loop", extra=f"Delivered-To: {USER}\r\n")
    assert send(server, looped).startswith(b"250 ")
    assert queue(server) == []
    assert len(inbox(server, USER)) == 1


def test_reject_is_a_550_at_the_end_of_data(server: RunningServer) -> None:
    use_script(
        server, 'require "reject";\nif header :contains "subject" "buy" { reject "No ads,\r\nthanks é"; }\n'
    )
    assert (
        send(server, message("buy now"))
        == b"550 5.7.1 Rejected by the recipient's filter: No ads, thanks ?\r\n"
    )
    assert inbox(server, USER) == []
    assert send(server, message("hello")).startswith(b"250 ")


def test_reject_by_one_of_two_recipients_is_a_notice_to_the_sender(server: RunningServer, bob: str) -> None:
    use_script(server, 'require "reject";\nreject "not here";\n')
    assert send(server, message("both", to=f"{USER}, {bob}"), rcpts=(USER, bob)).startswith(b"250 ")
    assert inbox(server, USER) == []
    assert len(inbox(server, bob)) == 1
    ((sender, rcpts, dsn),) = queued(server)
    assert (sender, rcpts) == ("", [SENDER])
    assert f"Final-Recipient: rfc822; {USER}".encode() in dsn
    assert b"Action: failed" in dsn and b"Status: 5.7.1" in dsn
    assert b"Rejected by the recipient's filter: not here" in dsn


@pytest.mark.parametrize(
    "script",
    [
        # MAX_REDIRECTS (4) exceeded: a runtime error
        "".join(f'redirect "r{i}@remote.example";\n' for i in range(5)),
        # an include of a script that does not exist (not :optional)
        'require "include";\ninclude :personal "nowhere";\ndiscard;\n',
    ],
)
def test_a_failing_script_is_the_implicit_keep(server: RunningServer, script: str) -> None:
    use_script(server, script)
    assert send(server, message("kept")).startswith(b"250 ")
    assert len(inbox(server, USER)) == 1
    assert queue(server) == []


def test_generated_vacation_and_forward_scripts_work_at_delivery(server: RunningServer) -> None:
    async def generate() -> None:
        account = await server.store.get_account(USER)
        await server.store.put_sieve_script(account.id, "mine", 'require "fileinto";\nfileinto "Archive";\n')
        await server.store.activate_sieve_script(account.id, "mine")
        await set_generated_script(
            server.store,
            account.id,
            VACATION_SCRIPT,
            lambda then: vacation_script("Away", 3, "Back soon.", then),
        )
        await set_generated_script(
            server.store,
            account.id,
            FORWARD_SCRIPT,
            lambda then: forward_script("fwd@remote.example", True, then),
        )

    server.call(generate())
    assert send(server, message("chained")).startswith(b"250 ")
    assert len(inbox(server, USER, "Archive")) == 1  # the user's own script ran last
    entries = sorted(queued(server))
    assert [(s, r) for s, r, _ in entries] == [("", [SENDER]), (SENDER, ["fwd@remote.example"])]
    assert b"Subject: Away" in entries[0][2]
