"""The listeners' accepting: an accept error pauses that listener for a moment instead of spinning,
then it accepts again; stop() closes the listening sockets and ends the sessions."""

from __future__ import annotations

import asyncio
import socket

import pytest

from surat.config import HostPort
from surat.net import listener as listener_module
from surat.net.connection import Connection
from surat.net.listener import Listeners, ListenerSpec


class FailingOnce(socket.socket):
    """A listening socket whose first accept fails as when the process is out of descriptors."""

    failed = False

    def accept(self) -> tuple[socket.socket, object]:
        if not self.failed:
            self.failed = True
            raise OSError(24, "Too many open files")
        return super().accept()


async def test_accept_error_pauses_the_listener_then_it_accepts_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listener_module, "ACCEPT_ERROR_PAUSE", 0.05)
    served: asyncio.Queue[str] = asyncio.Queue()

    async def handler(conn: Connection) -> None:
        await served.put(conn.peer_host)

    listening = FailingOnce(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    listening.setblocking(False)
    monkeypatch.setattr(listener_module, "bind", lambda address: [listening])
    listeners = Listeners()
    await listeners.start(ListenerSpec("smtp", (HostPort("127.0.0.1", 0),), handler))
    try:
        with caplog.at_level("WARNING"):
            _, writer = await asyncio.open_connection(*listening.getsockname())
            assert await asyncio.wait_for(served.get(), 5) == "127.0.0.1"
        assert listening.failed
        assert [record.getMessage() for record in caplog.records] == ["accept.failed"]
        writer.close()
    finally:
        await listeners.stop()
    assert listening.fileno() == -1  # closed
    assert listeners.bound("smtp") == []
