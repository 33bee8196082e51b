"""The benchmarks' IMAP client: asyncio, STARTTLS, one command at a time, a minimal response reader."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Self

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS\r\n$")
# Sessions per source address: Surat allows 20 connections per IP and listener by default.
PER_SOURCE = 16


class IMAPError(Exception):
    pass


class ConnectionClosed(IMAPError):
    """The server closed the connection (the argument: a partial line received before, if any)."""


class Client:
    """A lean asyncio IMAP client: reads lines and literals, nothing more (imaplib is blocking and slow)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.counter = 0
        self.exists = 0

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext, source: str = "127.0.0.1") -> Self:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=16 * 1024 * 1024
        )
        client = cls(reader, writer)
        await client.reader.readline()  # greeting
        await client.command(b"STARTTLS")
        await writer.start_tls(tls, server_hostname="localhost")
        return client

    def _tag(self) -> bytes:
        self.counter += 1
        return b"a%d" % self.counter

    async def read_response(self) -> tuple[bytes, int]:
        """One server response: its text with each literal's contents left out (the `{n}` marker and the
        rest of the response stay), and the octets it took on the wire."""
        readline = self.reader.readline
        line = await readline()
        if not line.endswith(b"\n"):
            raise ConnectionClosed(line)
        if not line.endswith(b"}\r\n"):
            return line, len(line)
        parts = [line]
        octets = len(line)
        while line.endswith(b"}\r\n") and (m := _LITERAL.search(line)):
            size = int(m.group(1))
            await self.reader.readexactly(size)
            line = await readline()
            if not line.endswith(b"\n"):
                raise ConnectionClosed(line)
            parts.append(line)
            octets += size + len(line)
        return b"".join(parts), octets

    async def _response(self, tag: bytes) -> int:
        """Read up to the tagged reply; the octets received. Keeps EXISTS up to date."""
        octets = 0
        prefix = tag + b" "
        while True:
            line, size = await self.read_response()
            octets += size
            if line.startswith(prefix):
                if line[len(prefix) : len(prefix) + 2] != b"OK":
                    raise IMAPError(line.decode(errors="replace").strip())
                return octets
            if line.endswith(b" EXISTS\r\n") and (m := _EXISTS.match(line)):
                self.exists = int(m.group(1))

    async def command(self, text: bytes) -> int:
        tag = self._tag()
        self.writer.write(tag + b" " + text + b"\r\n")
        return await self._response(tag)

    async def login(self, user: str, password: str) -> None:
        await self.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))

    async def idle(self) -> None:
        tag = self._tag()
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            line = await self.reader.readline()
            if not line:
                raise IMAPError("connection closed")
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                raise IMAPError(line.decode(errors="replace").strip())
        self.writer.write(b"DONE\r\n")
        await self._response(tag)

    async def close(self) -> None:
        with contextlib.suppress(IMAPError, OSError, TimeoutError, asyncio.IncompleteReadError):
            await asyncio.wait_for(self.command(b"LOGOUT"), 5)
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def session(port: int, user: str, password: str, tls: ssl.SSLContext, source: str) -> Client:
    client = await Client.connect(port, tls, source)
    await client.login(user, password)
    return client


def source_address(n: int) -> str:
    return f"127.0.0.{2 + n // PER_SOURCE}"
