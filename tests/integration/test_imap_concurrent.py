"""Several IMAP sessions on one mailbox: each session's view moves only by the rules.

RFC 9051 §7.5.1 / RFC 3501 §7.4.1: no EXPUNGE while FETCH, STORE or SEARCH by sequence number runs (nor
COPY by sequence number, RFC 2180 §4.4); EXISTS never shrinks unless EXPUNGEs came first; a message
expunged by another session stays addressable until this one is told (RFC 2180 §4.1, RFC 9051 §7.1
EXPUNGEISSUED); after LOGOUT only BYE and the tagged OK (RFC 9051 §6.1.3). The transcripts below are
byte-exact; the last test lets several clients work at once and checks every response against each
client's own model of its view.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from conftest import PASSWORD, USER, RunningServer
from test_imap_basic import SIMPLE, Raw, deliver

# ------------------------------------------------------------------------------------------- transcripts


@pytest.fixture
def two_selected(server: RunningServer) -> Iterator[Callable[[int], tuple[Raw, Raw]]]:
    """Opens two sessions with INBOX selected, holding `messages` messages (UIDs 1..messages); closed
    after the test."""
    opened: list[Raw] = []

    def open_pair(messages: int) -> tuple[Raw, Raw]:
        deliver(server, [SIMPLE] * messages)
        a = Raw.logged_in(server)
        b = Raw.logged_in(server)
        opened.extend((a, b))
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        return a, b

    yield open_pair
    for raw in opened:
        raw.close()


Pair = Callable[[int], tuple[Raw, Raw]]


def expunge_elsewhere(b: Raw, seq: int) -> None:
    b.command(f"STORE {seq} +FLAGS.SILENT (\\Deleted)")
    lines, done = b.command("EXPUNGE")
    assert lines == [b"* %d EXPUNGE\r\n" % seq] and b" OK " in done


def test_expunges_then_exists_counts_what_remains(server: RunningServer, two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 1)
    deliver(server, [SIMPLE])
    # 3 messages, one expunged, one delivered: after `* 1 EXPUNGE` the client holds 2, so EXISTS says 3.
    lines, _ = a.command("NOOP")
    # RECENT counts this session's recent messages (RFC 3501 §7.3.2): UIDs 2 and 3 claimed at SELECT, 4 now.
    assert lines == [b"* 1 EXPUNGE\r\n", b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]
    lines, _ = a.command("FETCH 1:3 (UID)")
    assert lines == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 3)\r\n", b"* 3 FETCH (UID 4)\r\n"]


def test_exists_during_fetch_counts_unannounced_expunges(server: RunningServer, two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 1)
    deliver(server, [SIMPLE])
    # No EXPUNGE during FETCH: the expunged message still holds number 1 here, so the new one is 4.
    lines, _ = a.command("FETCH 1 (UID)")
    assert lines == [b"* 1 FETCH (UID 1)\r\n", b"* 4 EXISTS\r\n", b"* 4 RECENT\r\n"]
    lines, _ = a.command("FETCH 4 (UID)")
    assert lines == [b"* 4 FETCH (UID 4)\r\n"]
    lines, _ = a.command("NOOP")
    assert lines == [b"* 1 EXPUNGE\r\n"]
    lines, _ = a.command("FETCH 3 (UID)")
    assert lines == [b"* 3 FETCH (UID 4)\r\n"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("FETCH 1:3 (UID)", [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n", b"* 3 FETCH (UID 3)\r\n"]),
        (
            "STORE 1,3 +FLAGS (\\Flagged)",
            # Session a selected first: the messages are \Recent for it (RFC 3501 §2.3.2).
            [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n", b"* 3 FETCH (FLAGS (\\Flagged \\Recent))\r\n"],
        ),
        ("SEARCH UNDELETED", [b"* SEARCH 1 2 3\r\n"]),  # as this session knows the flags
        ("COPY 1:3 Archive", []),
    ],
)
def test_no_expunge_during_commands_by_sequence_number(
    two_selected: Pair, command: str, expected: list[bytes]
) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 2)
    lines, done = a.command(command)
    # The flag change that came with the expunge is not announced either: the message is gone.
    assert lines == expected
    assert b" OK " in done, done
    lines, _ = a.command("NOOP")
    assert lines == [b"* 2 EXPUNGE\r\n"]


def test_uid_commands_may_announce_expunges(two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 2)
    # RFC 9051 §7.5.1 allows EXPUNGE during UID FETCH: the client matches responses by UID.
    lines, _ = a.command("UID FETCH 1:* (FLAGS)")
    assert lines == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n",
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n",
        b"* 2 EXPUNGE\r\n",
    ]


def test_qresync_vanished_follows_the_expunge_rules(server: RunningServer) -> None:
    deliver(server, [SIMPLE] * 3)
    a = Raw.logged_in(server)
    b = Raw.logged_in(server)
    a.command("ENABLE QRESYNC")
    a.command("SELECT INBOX")
    b.command("SELECT INBOX")
    expunge_elsewhere(b, 2)
    deliver(server, [SIMPLE])
    # RFC 7162 §3.2.10: VANISHED replaces EXPUNGE and is held back where EXPUNGE would be.
    lines, _ = a.command("FETCH 3 (UID FLAGS)")
    assert lines == [b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n", b"* 4 EXISTS\r\n", b"* 4 RECENT\r\n"]
    lines, _ = a.command("NOOP")
    assert lines == [b"* VANISHED 2\r\n"]
    lines, _ = a.command("FETCH 3 (UID FLAGS)")
    assert lines == [b"* 3 FETCH (UID 4 FLAGS (\\Recent))\r\n"]
    a.close()
    b.close()


def test_message_expunged_elsewhere_stays_addressable(two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 2)
    lines, _ = a.command("FETCH 2 (UID FLAGS)")  # this session learns of the expunge here
    assert lines == [b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"]
    # What the view holds is still answered (RFC 2180 §4.1.1); what needs the message is not, and the
    # tagged OK says why (RFC 9051 §7.1 EXPUNGEISSUED, as Dovecot answers).
    lines, done = a.command("FETCH 2 (UID RFC822.SIZE)")
    assert lines == [b"* 2 FETCH (UID 2 RFC822.SIZE %d)\r\n" % len(SIMPLE)]
    assert done == b"t4 OK FETCH completed\r\n"
    lines, done = a.command("FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert lines == [
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: hello\r\n\r\n)\r\n",
        b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: hello\r\n\r\n)\r\n",
    ]
    assert done == b"t5 OK [EXPUNGEISSUED] some messages were already expunged\r\n"
    lines, done = a.command("STORE 2 +FLAGS (\\Seen)")
    assert lines == []
    assert done == b"t6 OK [EXPUNGEISSUED] some messages were already expunged\r\n"
    lines, done = a.command("COPY 2 Archive")
    assert lines == []
    assert done == b"t7 NO [EXPUNGEISSUED] the messages were already expunged\r\n"
    lines, _ = a.command("NOOP")
    assert lines == [b"* 2 EXPUNGE\r\n"]
    # Now the client knows: 2 messages, and 3 is out of range.
    _, done = a.command("FETCH 3 (UID)")
    assert done == b"t9 BAD message sequence number out of range (mailbox has 2 messages)\r\n"


def test_store_of_a_message_expunged_unbeknown(two_selected: Pair) -> None:
    a, b = two_selected(2)
    expunge_elsewhere(b, 1)
    # The first command after the expunge: the store no longer has the message; no BAD, no FETCH for it.
    lines, done = a.command("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert lines == []
    assert done == b"t3 OK [EXPUNGEISSUED] some messages were already expunged\r\n"
    lines, _ = a.command("EXPUNGE")
    # The other session's expunge is announced first; then this one's, of message 2, now number 1.
    assert lines == [b"* 1 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"]


def test_expunge_removes_what_is_flagged_deleted_now(two_selected: Pair) -> None:
    a, b = two_selected(3)
    a.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
    # Another session changes its mind about message 1 and flags message 2, unbeknown to this one.
    b.command("STORE 1 -FLAGS.SILENT (\\Deleted)")
    b.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines, _ = a.command("EXPUNGE")
    # RFC 9051 §6.4.3: EXPUNGE removes the messages that have \Deleted when it runs.
    assert lines == [
        b"* 1 FETCH (FLAGS (\\Recent))\r\n",
        b"* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\n",
        b"* 2 EXPUNGE\r\n",
    ]
    lines, _ = a.command("UID FETCH 1:* (FLAGS)")
    assert lines == [b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n", b"* 2 FETCH (UID 3 FLAGS (\\Recent))\r\n"]


def test_pipelined_commands_get_expunges_only_where_allowed(two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 2)
    a.send(b"x1 FETCH 1:3 (UID)\r\nx2 NOOP\r\nx3 FETCH 1:2 (UID)\r\n")
    lines, _ = a.until("x1")
    assert lines == [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n", b"* 3 FETCH (UID 3)\r\n"]
    lines, _ = a.until("x2")
    assert lines == [b"* 2 EXPUNGE\r\n"]
    lines, _ = a.until("x3")
    assert lines == [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 3)\r\n"]


def test_move_announces_its_own_and_others_expunges(two_selected: Pair) -> None:
    a, b = two_selected(4)
    expunge_elsewhere(b, 1)
    lines, _ = a.command("MOVE 3 Archive")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 3 1\] moved\r\n", lines[0])
    # RFC 6851 §3.3: the moved message's EXPUNGE; then the one another session did, each number valid
    # when the client applies it.
    assert lines[1:] == [b"* 3 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"]
    lines, _ = a.command("FETCH 1:* (UID)")
    assert lines == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 4)\r\n"]


def test_logout_sends_only_bye_and_ok(server: RunningServer, two_selected: Pair) -> None:
    a, b = two_selected(3)
    expunge_elsewhere(b, 1)
    b.command("STORE 1 +FLAGS (\\Flagged)")
    deliver(server, [SIMPLE])
    lines, done = a.command("LOGOUT")
    # RFC 9051 §6.1.3: the server's BYE, then the tagged OK; pending updates are not sent any more.
    assert lines == [b"* BYE logging out\r\n"]
    assert done == b"t3 OK LOGOUT completed\r\n"
    with pytest.raises(EOFError):
        a.line()


def test_idle_pushes_expunge_then_exists(server: RunningServer, two_selected: Pair) -> None:
    a, b = two_selected(2)
    a.send(b"i IDLE\r\n")
    assert a.line() == b"+ idling\r\n"
    expunge_elsewhere(b, 1)
    seen = []
    while (line := a.line()) != b"* 1 EXPUNGE\r\n":
        seen.append(line)
    assert seen in ([], [b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n"])
    deliver(server, [SIMPLE])
    assert a.line() == b"* 2 EXISTS\r\n"
    assert a.line() == b"* 2 RECENT\r\n"
    a.send(b"DONE\r\n")
    assert a.line() == b"i OK IDLE terminated\r\n"
    lines, _ = a.command("FETCH 1:* (UID)")
    assert lines == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 3)\r\n"]


def test_append_that_fails_in_the_store_is_refused_not_disconnected(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Raw.logged_in(server)

    async def broken(account_id: int) -> None:
        raise RuntimeError("store unavailable")

    monkeypatch.setattr(server.store, "get_account_by_id", broken)
    # A synchronizing literal is refused instead of the continuation; a non-synchronizing one is read
    # and dropped, then refused. The connection stays (the client was mid-APPEND: no Broken pipe).
    a.send(b"a APPEND INBOX {6}\r\n")
    assert a.line() == b"a NO [SERVERBUG] internal server error\r\n"
    a.send(b"b APPEND INBOX {6+}\r\nA: b\r\n\r\n")
    assert a.line() == b"b NO [SERVERBUG] internal server error\r\n"
    monkeypatch.undo()
    a.send(b"c APPEND INBOX {6+}\r\nA: b\r\n\r\n")
    assert re.fullmatch(rb"c OK \[APPENDUID \d+ 1\] APPEND completed\r\n", a.line())
    a.close()


# ------------------------------------------------------------------------------------------- many clients

RUN_SECONDS = 3.0
CLIENTS = 5
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\}\r\n$")
_UNTAGGED_NUMBER = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE|FETCH)\b")
_FETCH_UID = re.compile(rb"[( ]UID (\d+)")


@dataclass
class ModelClient:
    """One connection and what it was told: `uids[n - 1]` is the UID of message n, None until seen."""

    name: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    uids: list[int | None] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    tags: int = 0
    commands: int = 0

    def violation(self, text: str) -> None:
        self.violations.append(f"{self.name}: {text}")

    async def line(self) -> bytes:
        out = await self.reader.readuntil(b"\r\n")
        while (m := _LITERAL_AT_END.search(out)) is not None:
            out += await self.reader.readexactly(int(m.group(1)))
            out += await self.reader.readuntil(b"\r\n")
        return out

    def untagged(self, line: bytes, command: str, by_sequence: bool) -> None:
        m = _UNTAGGED_NUMBER.match(line)
        if m is None:
            if line.startswith(b"* BYE"):
                self.violation(f"BYE during {command}: {line!r}")
            if line.startswith(b"* SEARCH"):
                top = max((int(n) for n in line.split()[2:]), default=0)
                if top > len(self.uids):
                    self.violation(f"SEARCH result {top} beyond {len(self.uids)} messages")
            return
        number, kind = int(m.group(1)), m.group(2)
        if kind == b"EXISTS":
            if number < len(self.uids):
                self.violation(f"EXISTS {number} after {len(self.uids)} without EXPUNGE ({command})")
            else:
                self.uids.extend([None] * (number - len(self.uids)))
        elif kind == b"EXPUNGE":
            if by_sequence:
                self.violation(f"EXPUNGE during {command}")
            if not 1 <= number <= len(self.uids):
                self.violation(f"EXPUNGE {number} of {len(self.uids)} messages ({command})")
            else:
                del self.uids[number - 1]
        else:
            if not 1 <= number <= len(self.uids):
                self.violation(f"FETCH {number} of {len(self.uids)} messages ({command})")
                return
            uid_match = _FETCH_UID.search(line)
            if uid_match is not None:
                uid = int(uid_match.group(1))
                known = self.uids[number - 1]
                if known is not None and known != uid:
                    self.violation(f"message {number} was UID {known}, now FETCH says {uid} ({command})")
                self.uids[number - 1] = uid

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def next_tag(self) -> bytes:
        self.tags += 1
        return b"%s%d" % (self.name.encode(), self.tags)

    async def until(self, tag: bytes, command: str, by_sequence: bool) -> bytes:
        while True:
            line = await self.line()
            if line.startswith(tag + b" "):
                self.commands += 1
                status = line.split()[1]
                if status == b"BAD" or (status == b"NO" and b"[EXPUNGEISSUED]" not in line):
                    self.violation(f"{command}: {line!r}")
                return line
            self.untagged(line, command, by_sequence)

    async def command(self, command: str, *, by_sequence: bool = False) -> bytes:
        tag = self.next_tag()
        self.send(tag + b" " + command.encode() + b"\r\n")
        await self.writer.drain()
        return await self.until(tag, command, by_sequence)

    async def append(self, message: bytes) -> None:
        tag = self.next_tag()
        self.send(tag + b" APPEND INBOX {%d}\r\n" % len(message))
        await self.writer.drain()
        while not (line := await self.line()).startswith(b"+ "):
            if line.startswith(tag + b" "):
                self.violation(f"APPEND refused: {line!r}")
                return
            self.untagged(line, "APPEND", False)
        self.send(message + b"\r\n")
        await self.writer.drain()
        await self.until(tag, "APPEND", False)

    async def idle(self, seconds: float) -> None:
        tag = self.next_tag()
        self.send(tag + b" IDLE\r\n")
        await self.writer.drain()
        while not (line := await self.line()).startswith(b"+ "):
            self.untagged(line, "IDLE", False)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                # readuntil keeps what it has buffered when cancelled; IDLE updates carry no literals.
                line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), left)
            except TimeoutError:
                break
            self.untagged(line, "IDLE", False)
        self.send(b"DONE\r\n")
        await self.writer.drain()
        await self.until(tag, "IDLE", False)

    async def logout(self) -> None:
        tag = self.next_tag()
        self.send(tag + b" LOGOUT\r\n")
        await self.writer.drain()
        lines = []
        while not (line := await self.line()).startswith(tag + b" "):
            lines.append(line)
        if len(lines) != 1 or not lines[0].startswith(b"* BYE"):
            self.violation(f"LOGOUT answered with {lines!r}")
        self.writer.close()


async def _connect(server: RunningServer, name: str) -> ModelClient:
    context: ssl.SSLContext = server.client_tls()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port("imaps"), ssl=context, server_hostname="127.0.0.1"
    )
    client = ModelClient(name, reader, writer)
    await client.line()  # greeting
    await client.command(f'LOGIN {USER} "{PASSWORD}"')
    client.uids = []
    await client.command("SELECT INBOX")
    return client


async def _work(client: ModelClient, rng: random.Random, until: float) -> None:
    message = SIMPLE
    while time.monotonic() < until:
        count = len(client.uids)
        roll = rng.random()
        lo = rng.randint(1, count) if count else 0
        hi = rng.randint(lo, count) if count else 0
        if roll < 0.18 or count < 3:
            await client.append(message)
        elif roll < 0.38:
            items = rng.choice(
                ["(UID FLAGS)", "(FLAGS)", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])", "(UID RFC822.SIZE)"]
            )
            await client.command(f"FETCH {lo}:{hi} {items}", by_sequence=True)
        elif roll < 0.55:
            flags = rng.choice(
                ["+FLAGS.SILENT (\\Deleted)", "+FLAGS (\\Seen)", "-FLAGS (\\Seen)", "+FLAGS (\\Deleted)"]
            )
            await client.command(f"STORE {lo}:{hi} {flags}", by_sequence=True)
        elif roll < 0.62:
            await client.command(
                rng.choice(["SEARCH UNDELETED", "SEARCH ALL", "SEARCH SUBJECT hello"]), by_sequence=True
            )
        elif roll < 0.66:
            await client.command(f"COPY {lo}:{hi} Archive", by_sequence=True)
        elif roll < 0.76:
            await client.command("EXPUNGE")
        elif roll < 0.84:
            await client.command("NOOP")
        elif roll < 0.89:
            await client.command("UID FETCH 1:* (FLAGS)")
        elif roll < 0.93:
            await client.command(rng.choice(["STATUS INBOX (MESSAGES UIDNEXT)", 'LIST "" "*"', "CHECK"]))
        elif roll < 0.96:
            await client.idle(0.05)
        else:
            client.uids = []
            await client.command("SELECT INBOX")
    await client.logout()


async def _run_clients(server: RunningServer, seed: int) -> tuple[list[ModelClient], float]:
    clients = [await _connect(server, f"c{i}_") for i in range(CLIENTS)]
    started = time.monotonic()
    await asyncio.gather(
        *(_work(c, random.Random(seed + i), started + RUN_SECONDS) for i, c in enumerate(clients))
    )
    return clients, time.monotonic() - started


def test_many_clients_on_one_mailbox_see_consistent_views(server: RunningServer) -> None:
    deliver(server, [SIMPLE] * 5)
    seed = random.randrange(1 << 30)
    clients, elapsed = asyncio.run(_run_clients(server, seed))
    violations = [v for c in clients for v in c.violations]
    commands = sum(c.commands for c in clients)
    print(
        f"{CLIENTS} clients, {commands} commands in {elapsed:.1f}s ({commands / elapsed:.0f}/s), seed {seed}"
    )
    assert commands > 50
    assert violations == [], f"seed {seed}: {len(violations)} violations, first: {violations[:10]}"
