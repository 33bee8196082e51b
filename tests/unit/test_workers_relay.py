"""The change feed relay between workers (surat.workers.relay): wire format, bounds, and the feed."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from surat.store.base import Change, ChangeKind
from surat.workers.relay import (
    CHANGES_PER_LINE,
    MAX_LINE,
    MAX_PENDING_LINES,
    OVERFLOW,
    READY,
    RelayedChangeFeed,
    RelayLink,
    RelayProtocolError,
    decode_line,
    encode_changes,
    open_link,
)

ADDED = Change(ChangeKind.MESSAGES_ADDED, 7, 3, (1, 2, 3), 12)
EXPUNGED = Change(ChangeKind.MESSAGES_EXPUNGED, 7, 3, (2,), 13)
QUEUED = Change(ChangeKind.QUEUE_CHANGED, 0)


def test_changes_travel_without_their_uids() -> None:
    (line,) = encode_changes([ADDED, EXPUNGED, QUEUED])
    assert line == b'[["messages_added",7,3,12],["messages_expunged",7,3,13],["queue_changed",0,null,0]]\n'
    assert decode_line(line) == [
        Change(ChangeKind.MESSAGES_ADDED, 7, 3, (), 12),
        Change(ChangeKind.MESSAGES_EXPUNGED, 7, 3, (), 13),
        QUEUED,
    ]


def test_many_changes_are_split_into_lines_under_the_limit() -> None:
    changes = [Change(ChangeKind.FLAGS_CHANGED, 2**40, 2**40, (), 2**62)] * (CHANGES_PER_LINE * 2 + 1)
    lines = encode_changes(changes)
    assert len(lines) == 3
    assert all(len(line) < MAX_LINE for line in lines)
    decoded = [change for line in lines for change in decode_line(line)]
    assert decoded == changes


def test_a_subscriber_overflow_and_nothing_are_not_sent() -> None:
    assert encode_changes([]) == []
    assert encode_changes([Change(ChangeKind.OVERFLOW, 7)]) == []


@pytest.mark.parametrize("marker", [READY, OVERFLOW])
def test_markers_decode_as_themselves(marker: bytes) -> None:
    assert decode_line(marker) == marker


@pytest.mark.parametrize(
    "line",
    [
        b"\n",
        b"nonsense\n",
        b"[]\n",
        b'"hello"\n',
        b'{"kind": 1}\n',
        b'[["overflow",7,null,0]]\n',  # a subscriber's own marker is never on the wire
        b'[["messages_added",7,3]]\n',
        b'[["messages_added",-1,3,1]]\n',
        b'[["messages_added",7,3.5,1]]\n',
        b'[["messages_added",true,3,1]]\n',
        b'[["messages_added","7",3,1]]\n',
        b'[["no_such_kind",7,3,1]]\n',
        b"[[[],null,null,null]]\n",  # found by the fuzz test: an unhashable kind
        json.dumps([["flags_changed", 1, 1, 1]] * (CHANGES_PER_LINE + 1)).encode() + b"\n",
        b"\xff\xfe\n",
    ],
)
def test_anything_else_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(RelayProtocolError):
        decode_line(line)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


async def collect(lines: AsyncIterator[bytes]) -> list[bytes]:
    return [line async for line in lines]


async def test_lines_split_at_every_offset_arrive_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    stream = encode_changes([ADDED])[0] + READY + encode_changes([QUEUED])[0]
    _, writer = await asyncio.open_unix_connection(sock=pair[0])
    for cut in range(len(stream) + 1):
        reader = asyncio.StreamReader(limit=MAX_LINE)
        reader.feed_data(stream[:cut])
        reader.feed_data(stream[cut:])
        reader.feed_eof()
        assert await collect(RelayLink(reader, writer).lines()) == stream.splitlines(keepends=True)
    writer.close()


@pytest.mark.parametrize(
    "stream",
    [b"x" * (MAX_LINE + 1) + b"\n", b'"ready"\n[["queue_changed",0,null'],
    ids=["too long", "cut off by the end"],
)
async def test_a_line_too_long_or_cut_off_ends_the_link_with_an_error(
    pair: tuple[socket.socket, socket.socket], stream: bytes
) -> None:
    _, writer = await asyncio.open_unix_connection(sock=pair[0])
    reader = asyncio.StreamReader(limit=MAX_LINE)
    reader.feed_data(stream)
    reader.feed_eof()
    received = []
    with pytest.raises(RelayProtocolError):
        async for line in RelayLink(reader, writer).lines():
            received.append(line)
    assert len(received) == stream.count(b"\n") - (1 if len(stream) > MAX_LINE else 0)
    writer.close()


async def test_a_peer_that_falls_behind_gets_one_overflow_not_unbounded_memory(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    link = await open_link(pair[0])
    line = encode_changes([ADDED])[0]
    for _ in range(MAX_PENDING_LINES):
        link.send([line])
    link.send([line])  # one too many: everything waiting is replaced by the marker
    link.send([line])  # and the marker covers what comes until it is written
    sender = asyncio.create_task(link.run())
    peer_reader, peer_writer = await asyncio.open_unix_connection(sock=pair[1], limit=MAX_LINE)
    assert await peer_reader.readline() == OVERFLOW
    link.send([line])  # after the marker, changes are news again
    assert await peer_reader.readline() == line
    link.close()
    await sender
    assert await peer_reader.read() == b""
    peer_writer.close()


async def test_the_feed_publishes_locally_and_relays_and_takes_other_workers_changes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    feed = RelayedChangeFeed(await open_link(pair[0]))
    sender = asyncio.create_task(feed.link.run())
    follower = asyncio.create_task(feed.follow())
    subscription = feed.subscribe(7)
    peer_reader, peer_writer = await asyncio.open_unix_connection(sock=pair[1], limit=MAX_LINE)

    feed.publish([ADDED])  # a commit of this worker: here at once, and on the relay
    assert subscription.pending() == [ADDED]
    assert await peer_reader.readline() == encode_changes([ADDED])[0]

    peer_writer.write(encode_changes([EXPUNGED])[0])  # another worker's commit, through the supervisor
    await peer_writer.drain()
    assert await anext(aiter(subscription)) == Change(ChangeKind.MESSAGES_EXPUNGED, 7, 3, (), 13)

    peer_writer.write(OVERFLOW)  # the supervisor lost some: re-read
    await peer_writer.drain()
    assert await anext(aiter(subscription)) == Change(ChangeKind.OVERFLOW, 7)

    peer_writer.close()  # the supervisor is gone: what was in flight is re-read too, and follow ends
    await follower
    assert subscription.pending() == [Change(ChangeKind.OVERFLOW, 7)]
    feed.link.close()
    await sender
