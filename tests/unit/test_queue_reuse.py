"""The queue runner's connection cache, route sharing and the store's grouped attempt writes, against
a small scripted SMTP peer on 127.0.0.1 (asyncio, no PIPELINING: one reply per command line)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from surat.config import HostPort
from surat.delivery import queue
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.dns.base import MXRecord
from surat.dns.fake import FakeResolver
from surat.store.base import Delivery, NotFound, OutboundMessage, OutboundRecipient
from surat.store.sqlite import SQLiteStore

SENDER = "bob@source.test"  # not local: no DKIM keys needed


class Peer:
    """Counts connections and messages; `drop_second_mail` closes a connection, without a reply,
    when a second MAIL arrives on it (a cached session the peer has given up on);
    `hang_up_after_data` closes it right after the 250 to the message."""

    def __init__(
        self,
        *,
        drop_second_mail: bool = False,
        hang_up_after_data: bool = False,
        silent_quit: bool = False,
        delay: float = 0.0,
    ) -> None:
        self.drop_second_mail = drop_second_mail
        self.silent_quit = silent_quit
        self.hang_up_after_data = hang_up_after_data
        self.mails = 0
        self.delay = delay
        self.connections = 0
        self.quits = 0
        self.active = 0
        self.max_active = 0
        self.messages: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        mails = 0
        try:
            writer.write(b"220 peer.test ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-peer.test\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    mails += 1
                    self.mails += 1
                    if self.drop_second_mail and mails == 2:
                        return
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb in (b"RCPT", b"RSET"):
                    writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    body = bytearray()
                    while (data := await reader.readline()) != b".\r\n":
                        body += data
                    await asyncio.sleep(self.delay)  # keeps sessions busy so they overlap
                    self.messages.append(bytes(body))
                    writer.write(b"250 2.0.0 queued\r\n")
                    if self.hang_up_after_data:
                        await writer.drain()
                        return
                elif verb == b"QUIT":
                    self.quits += 1
                    if self.silent_quit:
                        await asyncio.sleep(30)  # never answers
                    writer.write(b"221 2.0.0 bye\r\n")
                    return
                else:
                    writer.write(b"502 5.5.2 no\r\n")
                await writer.drain()
        finally:
            self.active -= 1
            writer.close()


async def serve(peer: Peer) -> None:
    peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)


async def enqueue(store: SQLiteStore, rcpt: str, n: int) -> str | None:
    content = f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: reuse {n}\r\n\r\nbody {n}\r\n".encode()
    remote = OutboundMessage(sender=SENDER, recipients=(OutboundRecipient(rcpt),))
    result = await store.deliver(
        Delivery(None, len(content), datetime.now(UTC), remote=remote, content=content)
    )
    return result.queue_id


def make_runner(
    store: SQLiteStore, tmp_path: Path, resolver: FakeResolver, **settings: object
) -> QueueRunner:
    return QueueRunner(
        store,
        resolver,
        RunnerSettings(hostname="mail.example.test", **settings),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
    )


async def test_entries_for_one_domain_share_sessions(store: SQLiteStore, tmp_path: Path) -> None:
    peer = Peer(delay=0.05)
    await serve(peer)
    route = {"remote.test": HostPort("127.0.0.1", peer.port)}
    runner = make_runner(store, tmp_path, FakeResolver(), routes=route, max_connections_per_domain=2)
    for n in range(6):
        await enqueue(store, f"user{n}@remote.test", n)
    try:
        assert await runner.run_once() == 6
        await runner.idle()
        assert await store.list_queue() == []
        assert sorted(m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in peer.messages) == [
            f"reuse {n}".encode() for n in range(6)
        ]
        # RFC 5321 §3.3: six transactions over the two sessions the per-domain limit allows.
        assert peer.connections == 2
        assert peer.max_active == 2
        assert peer.quits == 0  # kept open for the next entry
    finally:
        await runner.stop()
        assert peer.server is not None
        peer.server.close()
    await asyncio.sleep(0.05)
    assert peer.quits == 2  # stop() QUITs the idle sessions


async def test_a_cached_session_the_peer_dropped_is_replaced_once(store: SQLiteStore, tmp_path: Path) -> None:
    peer = Peer(drop_second_mail=True)
    await serve(peer)
    route = {"remote.test": HostPort("127.0.0.1", peer.port)}
    runner = make_runner(store, tmp_path, FakeResolver(), routes=route)
    try:
        await enqueue(store, "first@remote.test", 1)
        await runner.run_once()
        await runner.idle()
        second = await enqueue(store, "second@remote.test", 2)
        await runner.run_once()
        await runner.idle()
        # The reused session died at MAIL (nothing heard): the message went over a new session,
        # in the same attempt, exactly once.
        assert await store.list_queue() == []
        assert len(peer.messages) == 2
        assert peer.connections == 2
        assert second is not None
    finally:
        await runner.stop()
        assert peer.server is not None
        peer.server.close()


async def test_an_idle_session_closed_by_the_peer_is_not_used(store: SQLiteStore, tmp_path: Path) -> None:
    peer = Peer(hang_up_after_data=True)
    await serve(peer)
    route = {"remote.test": HostPort("127.0.0.1", peer.port)}
    runner = make_runner(store, tmp_path, FakeResolver(), routes=route)
    try:
        await enqueue(store, "first@remote.test", 1)
        await runner.run_once()
        await runner.idle()
        await asyncio.sleep(0.1)  # the peer hangs up on the cached session
        await enqueue(store, "second@remote.test", 2)
        await runner.run_once()
        await runner.idle()
        assert await store.list_queue() == []
        assert len(peer.messages) == 2
        assert peer.connections == 2
        assert peer.mails == 2  # the dead session was not tried: no MAIL went into it
    finally:
        await runner.stop()
        assert peer.server is not None
        peer.server.close()


async def test_concurrent_entries_share_one_mx_lookup(store: SQLiteStore, tmp_path: Path) -> None:
    peer = Peer()
    await serve(peer)

    class Counting(FakeResolver):
        mx_lookups = 0

        async def mx(self, name: str) -> list[MXRecord]:
            Counting.mx_lookups += 1
            await asyncio.sleep(0.01)
            return await super().mx(name)

    resolver = Counting(
        {("remote.test", "MX"): [MXRecord(10, "mx.remote.test")], ("mx.remote.test", "A"): ["127.0.0.1"]}
    )
    # the fake DNS points at 127.0.0.1: allowed here only, as `[delivery] allow_private_destinations`
    runner = make_runner(store, tmp_path, resolver, mx_port=peer.port, allow_private_destinations=True)
    for n in range(5):
        await enqueue(store, f"user{n}@remote.test", n)
    try:
        await runner.run_once()
        await runner.idle()
        assert await store.list_queue() == []
        assert len(peer.messages) == 5
        assert Counting.mx_lookups == 1
    finally:
        await runner.stop()
        assert peer.server is not None
        peer.server.close()


async def test_grouped_attempt_writes_fail_alone(store: SQLiteStore) -> None:
    ids = [i for n in range(3) if (i := await enqueue(store, f"user{n}@remote.test", n)) is not None]
    now = datetime.now(UTC)
    lease = now + timedelta(minutes=30)
    # Issued together, so the writer runs them in one transaction (one SAVEPOINT each).
    results = await asyncio.gather(
        *(store.record_attempt(i, now, "mx.remote.test", lease) for i in [*ids, "missing"]),
        return_exceptions=True,
    )
    assert results[:3] == [1, 1, 1]
    assert isinstance(results[3], NotFound)
    entries = await store.list_queue()
    assert sorted(e.id for e in entries) == sorted(ids)
    assert all(len(e.attempts) == 1 and e.attempts[0].result is None for e in entries)
    finished = await asyncio.gather(
        store.finish_attempt(ids[0], 1, "250 ok", [], None),
        store.finish_attempt("missing", 1, "250 ok", [], None),
        store.finish_attempt(ids[1], 1, "451 later", [], lease),
        return_exceptions=True,
    )
    assert finished[0] is None and finished[2] is None
    assert isinstance(finished[1], NotFound)
    left = {e.id: e for e in await store.list_queue()}
    assert sorted(left) == sorted(ids[1:])  # the finished entry is gone, the others stay
    assert left[ids[1]].attempts[0].result == "451 later"
    assert left[ids[2]].attempts[0].result is None


async def test_stop_does_not_wait_long_for_a_silent_quit(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "IDLE_QUIT_WAIT", 0.2)
    peer = Peer(silent_quit=True)
    await serve(peer)
    runner = make_runner(
        store, tmp_path, FakeResolver(), routes={"remote.test": HostPort("127.0.0.1", peer.port)}
    )
    try:
        await enqueue(store, "first@remote.test", 1)
        await runner.run_once()
        await runner.idle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner.stop()  # the engine's own QUIT timeout is 300 s
        assert loop.time() - started < 2
        assert peer.quits == 1
    finally:
        assert peer.server is not None
        peer.server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
