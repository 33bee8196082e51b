"""`BlobStore` in memory: the reference for the Protocol's semantics without files, for unit tests of
code that reads or stages messages (IMAP SEARCH/FETCH helpers, the SMTP spool), and the shape a
database backend takes (a staged blob is chunks kept apart until the store takes it over).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence

from surat.store.base import NotFound, StoreError

CHUNK = 64 * 1024  # octets per chunk of BytesBlobReader.stream


class StagedBytes:
    """`StagedBlob` as a list of chunks; `MemoryBlobStore.commit` makes it a blob."""

    __slots__ = ("_chunks", "size", "state")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0
        self.state = "open"  # "open", "taken", "aborted"

    async def write(self, data: bytes) -> None:
        if self.state != "open":
            raise StoreError(f"staged blob is {self.state}")
        self._chunks.append(bytes(data))
        self.size += len(data)

    async def read(self, offset: int = 0) -> bytes:
        if self.state != "open":
            raise StoreError(f"staged blob is {self.state}")
        return b"".join(self._chunks)[offset:]

    def abort(self) -> None:
        if self.state == "open":
            self.state = "aborted"
            self._chunks = []

    def take(self) -> bytes:
        if self.state != "open":
            raise StoreError(f"staged blob is {self.state}")
        self.state = "taken"
        data, self._chunks = b"".join(self._chunks), []
        return data


class BytesBlobReader:
    """`BlobReader` over bytes in memory."""

    __slots__ = ("_data", "closed")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.closed = False

    @property
    def size(self) -> int:
        return len(self._data)

    async def read(self, offset: int, length: int) -> bytes:
        if self.closed:
            raise StoreError("blob reader is closed")
        return self._data[offset : offset + max(0, length)]

    async def stream(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        end = len(self._data) if length is None else min(len(self._data), offset + length)
        while offset < end:
            if self.closed:
                raise StoreError("blob reader is closed")
            chunk = self._data[offset : min(end, offset + CHUNK)]
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        self.closed = True


class MemoryBlobStore:
    """Blobs in a dict. `staged` lists every staged blob handed out (tests check none is left open)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.staged: list[StagedBytes] = []

    def stage(self) -> StagedBytes:
        staged = StagedBytes()
        self.staged.append(staged)
        return staged

    def commit(self, staged: StagedBytes) -> str:
        """Take `staged` over as a new blob; returns its id."""
        blob_id = secrets.token_hex(13)
        self.data[blob_id] = staged.take()
        return blob_id

    async def open(self, blob_id: str) -> BytesBlobReader:
        try:
            return BytesBlobReader(self.data[blob_id])
        except KeyError:
            raise NotFound(f"blob {blob_id}") from None

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes:
        reader = await self.open(blob_id)
        return await reader.read(offset, reader.size - offset if length is None else length)

    async def read_many(self, ranges: Sequence[tuple[str, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for blob_id, offset in ranges:
            data = self.data.get(blob_id)
            out.append(None if data is None else data[offset:])
        return out
