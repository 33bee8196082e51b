"""The shared-mailbox load of `imap_load.py --shared`: N sessions on ONE mailbox, each checking every
response against its own view (imap_view.MailboxView). See imap_load.py's docstring for what it prints.

Each session stays logged in for the whole run (it reconnects only after the server dropped it, which
counts as a violation) and sends one command at a time, drawn at random from SHARED_MIX.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from common import LoadFigures, percentile_ms
from imap_client import Client, ConnectionClosed, IMAPError, source_address
from imap_view import INFO, VIOLATIONS, Example, MailboxView

OTHER_MAILBOX = "Archive"  # what STATUS asks about: created before the load
# Weights of the command kinds; the seq-number kinds fall back to APPEND while the view is empty.
SHARED_MIX = {
    "append": 8,
    "fetch": 20,
    "store": 10,
    "delete": 5,
    "expunge": 3,
    "uid_fetch": 10,
    "uid_store": 6,
    "search": 6,
    "list": 3,
    "status": 4,
    "select": 2,
    "noop": 6,
    "idle": 4,
}
BY_SEQUENCE = frozenset(("fetch", "store", "delete"))
RANGE_MAX = 20  # messages in a FETCH or STORE range
IDLE_SECONDS = (0.05, 0.2)  # how long an IDLE lasts before DONE (its latency includes this)
COMMAND_SECONDS = 10.0  # no tagged reply after this long: a timeout, and the session starts over
LOGOUT_SECONDS = 5.0  # for the server to close after LOGOUT's OK
RECONNECT_PAUSE = 0.2  # after a failed connect, so a refusing server is not hammered
EXAMPLES_SHOWN = 3  # per violation kind in the report


class Server(Protocol):
    name: str
    user: str
    password: str
    port: int
    ports: list[int]  # every node's, `port` among them: the sessions are spread over them

    def cpu(self) -> float: ...


@dataclass
class SharedLoad(LoadFigures):
    name: str = ""
    views: list[MailboxView] = field(default_factory=list)
    connects: int = 0
    connect_failures: int = 0

    def violations(self) -> Counter[str]:
        total: Counter[str] = Counter({name: 0 for name in VIOLATIONS})
        for view in self.views:
            total.update(view.violations)
        return total

    def info(self) -> Counter[str]:
        total: Counter[str] = Counter({name: 0 for name in INFO})
        for view in self.views:
            total.update(view.info)
        return total

    def examples(self) -> list[Example]:
        """The first EXAMPLES_SHOWN of each violation kind, from all sessions."""
        shown: list[Example] = []
        for name in VIOLATIONS:
            shown += [e for view in self.views for e in view.examples if e.violation == name][:EXAMPLES_SHOWN]
        return shown


class SharedClient(Client):
    view: MailboxView

    async def checked(self, command: bytes, literal: bytes | None = None, idle_seconds: float = 0.0) -> None:
        """Send `command` and check every response up to its tagged reply against the view. `literal`:
        sent at the server's continuation request (APPEND); `idle_seconds`: DONE that long after it (IDLE)."""
        view = self.view
        prefix = self._tag() + b" "
        view.begin(command)
        self.writer.write(prefix + command + b"\r\n")
        done_timer: asyncio.TimerHandle | None = None
        try:
            while True:
                response, _ = await self.read_response()
                if response.startswith(prefix):
                    view.tagged(response)
                    return
                if response.startswith(b"* "):
                    view.untagged(response)
                elif response.startswith(b"+"):
                    view.continuation(response)
                    if literal is not None:
                        self.writer.write(literal + b"\r\n")
                        literal = None
                    elif idle_seconds and done_timer is None:
                        loop = asyncio.get_running_loop()
                        done_timer = loop.call_later(idle_seconds, self.writer.write, b"DONE\r\n")
                else:
                    view.unparsable(response)
        finally:
            if done_timer is not None:
                done_timer.cancel()

    async def logout(self) -> None:
        """LOGOUT, then nothing but the close may follow its tagged OK (RFC 9051 §6.1.3)."""
        await self.checked(b"LOGOUT")
        trailing = b""
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            async with asyncio.timeout(LOGOUT_SECONDS):
                while data := await self.reader.read(4096):
                    trailing += data
        if trailing:
            self.view.trailing(trailing)


def small_message(client: int, number: int) -> bytes:
    return (
        f"From: <load{client}@example.net>\r\nTo: <bench@example.test>\r\n"
        f"Subject: shared load {client}-{number}\r\nMessage-ID: <shared-{client}-{number}@bench.test>\r\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
        + "A short message appended while nine other sessions watch the same mailbox.\r\n"
        * 4
    ).encode()


def next_command(
    kind: str, view: MailboxView, rng: random.Random, client: int, number: int
) -> tuple[str, bytes, bytes | None, float]:
    """The kind actually sent, the command, an APPEND's literal, an IDLE's seconds. Sequence numbers are
    drawn from 1..the view's count, UIDs from those the view has learnt."""
    count = len(view)
    if kind in BY_SEQUENCE and count == 0:
        kind = "append"
    known = view.known_uids() if kind in ("uid_fetch", "uid_store") else []
    if kind in ("uid_fetch", "uid_store") and not known:
        kind = "fetch" if count else "append"  # learn some UIDs first
    first = rng.randint(1, count) if count else 0
    last = min(count, first + rng.randint(1, RANGE_MAX - 1))
    sign = b"+" if rng.random() < 0.5 else b"-"
    if kind == "append":
        literal = small_message(client, number)
        return kind, b"APPEND INBOX (\\Seen) {%d}" % len(literal), literal, 0.0
    if kind == "fetch":
        shape = rng.random()
        if shape < 0.4:
            return kind, b"FETCH %d (FLAGS UID)" % first, None, 0.0
        if shape < 0.7:
            return kind, b"FETCH %d:%d (UID FLAGS RFC822.SIZE)" % (first, last), None, 0.0
        return kind, b"FETCH %d (UID RFC822.SIZE BODY.PEEK[HEADER])" % first, None, 0.0
    if kind == "store":
        numbers = b"%d" % first if rng.random() < 0.7 else b"%d:%d" % (first, last)
        return kind, b"STORE %s %sFLAGS (\\Flagged)" % (numbers, sign), None, 0.0
    if kind == "delete":
        return kind, b"STORE %d +FLAGS.SILENT (\\Deleted)" % first, None, 0.0
    if kind == "expunge":
        return kind, b"EXPUNGE", None, 0.0
    if kind == "uid_fetch":
        uid = rng.choice(known)
        if rng.random() < 0.5:
            return kind, b"UID FETCH %d (FLAGS RFC822.SIZE)" % uid, None, 0.0
        return kind, b"UID FETCH %d:%d (FLAGS)" % (uid, uid + RANGE_MAX), None, 0.0
    if kind == "uid_store":
        return kind, b"UID STORE %d %sFLAGS (\\Seen)" % (rng.choice(known), sign), None, 0.0
    if kind == "search":
        return kind, b"SEARCH " + rng.choice((b"FLAGGED", b"UNSEEN", b"DELETED")), None, 0.0
    if kind == "list":
        return kind, b'LIST "" "*"', None, 0.0
    if kind == "status":
        return kind, b"STATUS %s (MESSAGES UIDNEXT UNSEEN)" % OTHER_MAILBOX.encode(), None, 0.0
    if kind == "select":
        return kind, b"SELECT INBOX", None, 0.0
    if kind == "idle":
        return kind, b"IDLE", None, rng.uniform(*IDLE_SECONDS)
    return "noop", b"NOOP", None, 0.0


async def shared_session(
    n: int, server: Server, tls: ssl.SSLContext, load: SharedLoad, stop_at: float
) -> None:
    """One session until `stop_at`, then LOGOUT; a new connection if the server dropped this one."""
    rng = random.Random(n)
    view = MailboxView()
    load.views.append(view)
    kinds, weights = list(SHARED_MIX), list(SHARED_MIX.values())
    perf = time.perf_counter
    number = 0
    while perf() < stop_at:
        try:
            async with asyncio.timeout(COMMAND_SECONDS):
                port = server.ports[n % len(server.ports)]  # half the sessions on each of two nodes
                client = await SharedClient.connect(port, tls, source_address(n))
                await client.login(server.user, server.password)
        except (IMAPError, OSError, TimeoutError, asyncio.IncompleteReadError):
            load.connect_failures += 1
            await asyncio.sleep(RECONNECT_PAUSE)
            continue
        load.connects += 1
        client.view = view
        try:
            kind = "select"  # every session starts by selecting the shared mailbox
            while True:
                number += 1
                kind, command, literal, idle_seconds = next_command(kind, view, rng, n, number)
                t0 = perf()
                async with asyncio.timeout(COMMAND_SECONDS):
                    await client.checked(command, literal, idle_seconds)
                load.latencies[kind].append(perf() - t0)
                if perf() >= stop_at:
                    break
                kind = rng.choices(kinds, weights)[0]
            async with asyncio.timeout(COMMAND_SECONDS + LOGOUT_SECONDS):
                await client.logout()
        except TimeoutError:
            view.timed_out()
        except ConnectionClosed as exc:
            view.closed(b"connection closed" + (b" after " + exc.args[0] if exc.args[0] else b""))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            view.closed(repr(exc).encode())
        finally:
            client.writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(LOGOUT_SECONDS):
                    await client.writer.wait_closed()


async def prepare_shared(server: Server, tls: ssl.SSLContext) -> int:
    """Create the mailbox STATUS asks about and SELECT the shared one once (Dovecot indexes it then);
    the INBOX's message count."""
    client = await Client.connect(server.port, tls, source_address(0))
    try:
        await client.login(server.user, server.password)
        with contextlib.suppress(IMAPError):  # exists already
            await client.command(b"CREATE %s" % OTHER_MAILBOX.encode())
        await client.command(b"SELECT INBOX")
        return client.exists
    finally:
        await client.close()


async def run_shared(server: Server, tls: ssl.SSLContext, clients: int, duration: float) -> SharedLoad:
    load = SharedLoad({kind: [] for kind in SHARED_MIX}, name=server.name)
    cpu0, server_cpu0 = time.process_time(), server.cpu()
    start = time.perf_counter()
    await asyncio.gather(*(shared_session(n, server, tls, load, start + duration) for n in range(clients)))
    load.seconds = time.perf_counter() - start
    load.client_cpu = time.process_time() - cpu0
    load.server_cpu = server.cpu() - server_cpu0
    return load


def report_shared(load: SharedLoad) -> None:
    violations = load.violations()
    print(
        f"{load.name}: {load.ops} commands in {load.seconds:.1f} s = {load.rate:.0f} commands/s, "
        f"violations={sum(violations.values())}, server CPU {load.server_cpu / load.seconds * 100:.0f}% "
        f"and client CPU {load.client_cpu / load.seconds * 100:.0f}% of a core"
        + (
            f", PostgreSQL CPU {load.database_cpu / load.seconds * 100:.0f}%"
            if load.database_cpu is not None
            else ""
        )
    )
    for line in load.latency_lines():
        print(line)
    print("  violations: " + " ".join(f"{name}={count}" for name, count in violations.items()))
    info = load.info()
    print(
        "  info: "
        + " ".join(f"{name}={count}" for name, count in info.items())
        + f" connects={load.connects} connect_failures={load.connect_failures}"
    )
    for example in load.examples():
        print(f"    {example}")


def compare_shared(mine: SharedLoad, peer: SharedLoad) -> None:
    """The counters side by side, and the ratio of commands/s."""
    print(f"{'':<28}{mine.name:>10}{peer.name:>10}")
    print(f"{'commands/s':<28}{mine.rate:>10.0f}{peer.rate:>10.0f}")
    for kind in SHARED_MIX:
        print(
            f"{kind + ' p50_ms':<28}{percentile_ms(mine.latencies[kind], 0.5):>10.2f}"
            f"{percentile_ms(peer.latencies[kind], 0.5):>10.2f}"
        )
    mine_violations, peer_violations = mine.violations(), peer.violations()
    for name in VIOLATIONS:
        print(f"{name:<28}{mine_violations[name]:>10}{peer_violations[name]:>10}")
    print(f"ratio {mine.name}/{peer.name}: commands/s {mine.rate / peer.rate:.2f}x")
