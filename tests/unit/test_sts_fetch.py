"""The MTA-STS policy response reader (RFC 8461 §3.3 over HTTP/1.1, RFC 9112): what it accepts, what it
refuses, and that it reads the same answer however the bytes arrive."""

from __future__ import annotations

import asyncio

import pytest

from surat.delivery.stspolicies import MAX_RESPONSE_HEAD, FetchError, read_response
from surat.mailauth.mtasts import MAX_POLICY_SIZE

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 86400\r\n"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"


async def read(response: bytes, pieces: int = 1) -> bytes:
    reader = asyncio.StreamReader(limit=MAX_RESPONSE_HEAD)
    step = max(1, len(response) // pieces)
    for start in range(0, len(response), step):
        reader.feed_data(response[start : start + step])
    reader.feed_eof()
    return await read_response(reader)


def chunked(body: bytes, size: int) -> bytes:
    out = b""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nTrailer: x\r\n\r\n"


@pytest.mark.parametrize(
    "response",
    [
        HEAD + f"Content-Length: {len(POLICY)}\r\n\r\n".encode() + POLICY,
        HEAD + b"Connection: close\r\n\r\n" + POLICY,  # the body runs to the end of the connection
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(POLICY, 7),
        HEAD.replace(b"Content-Type", b"content-TYPE")
        + b"Transfer-Encoding: Chunked\r\n\r\n"
        + chunked(POLICY, 100),
    ],
)
async def test_accepted_responses(response: bytes) -> None:
    for pieces in (1, 3, len(response)):
        assert await read(response, pieces) == POLICY


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n", "redirects"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n", "status 404"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + POLICY, "media type"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + POLICY, "media type"),
        (HEAD + b"Content-Length: 99999999999\r\n\r\n", "Content-Length"),
        (HEAD + f"Content-Length: {MAX_POLICY_SIZE + 1}\r\n\r\n".encode(), "larger"),
        (HEAD + b"\r\n" + b"x" * (MAX_POLICY_SIZE + 1), "larger"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", "chunk size"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n+10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", "chunk size"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX0\r\n\r\n", "CRLF"),
        (
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"x" * (MAX_POLICY_SIZE + 1), 8192),
            "larger",
        ),
        (HEAD + b"Bad header line\r\n\r\n", "bad header"),
    ],
)
async def test_refused_responses(response: bytes, error: str) -> None:
    with pytest.raises(FetchError, match=error):
        await read(response)


async def test_truncated_and_oversized_heads_fail() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read(HEAD + f"Content-Length: {len(POLICY)}\r\n\r\n".encode() + POLICY[:-1])
    with pytest.raises((asyncio.LimitOverrunError, ValueError)):
        await read(HEAD + b"X: " + b"y" * MAX_RESPONSE_HEAD + b"\r\n\r\n")
