"""Message bodies in PostgreSQL: `blobs` (id, size) and `blob_chunks` (pieces of BLOB_CHUNK_SIZE
octets, the last one shorter), the `BlobStore` Protocol of store/base.py.

Staging (`stage()`): a `StagedSpool` buffers in memory up to STAGE_MEMORY_BYTES and spills to an
anonymous temporary file beyond (`tempfile.SpooledTemporaryFile`); the rows are written only inside
the transaction that inserts the message's rows (`write_blobs`). Why not chunk rows as the message
arrives: those rows would have to be committed before the message is (a transaction per SMTP
session would hold a connection for the whole DATA), and then a node's `open()` could not tell a crash
leftover from another live node's message in transfer, so nothing could ever be collected safely.
This way a blob row exists only together with the rows that refer to it, a crash leaves nothing in
the database, and the temporary file (unlinked at creation) vanishes with the process.

Every chunk but the last is exactly BLOB_CHUNK_SIZE octets, so the chunk holding an offset is
`offset // BLOB_CHUNK_SIZE` and a range read fetches only the chunks it needs.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import IO

from surat.store.base import NotFound, StoreError
from surat.store.postgres.pool import Connection, PooledStore
from surat.store.postgres.schema import BLOB_CHUNK_SIZE

# A staged message is kept in memory up to this size (a typical message, never a large one), beyond it
# in a temporary file: memory per SMTP/IMAP session stays bounded by this, whatever the message size.
STAGE_MEMORY_BYTES = 1024 * 1024
# Reads of a staged spool up to this size run on the event loop; larger ones in a thread.
INLINE_READ = 64 * 1024


class StagedSpool:
    """`StagedBlob` in memory, spilling to an anonymous temporary file beyond STAGE_MEMORY_BYTES."""

    __slots__ = ("_file", "_state", "size")

    def __init__(self) -> None:
        self._file: IO[bytes] | None = tempfile.SpooledTemporaryFile(max_size=STAGE_MEMORY_BYTES)  # noqa: SIM115
        self._state = "open"  # "open", "taken" (the store owns it), "aborted"
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self._state != "open" or self._file is None:
            raise StoreError(f"staged blob is {self._state}")
        # Each write is one protocol chunk (bounded by the engines); past the bound it goes to the
        # page cache of a temporary file, as the file backend's staged writes do.
        self._file.write(data)
        self.size += len(data)

    async def read(self, offset: int = 0) -> bytes:
        if self._state != "open" or self._file is None:
            raise StoreError(f"staged blob is {self._state}")
        if self.size - offset <= INLINE_READ:
            return self._read_from(offset)
        return await asyncio.to_thread(self._read_from, offset)

    def _read_from(self, offset: int) -> bytes:
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read()
        self._file.seek(0, 2)  # further writes append
        return data

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._close()

    def take(self) -> IO[bytes]:
        """(For the store.) Own the spool from now on; StoreError if it was aborted or taken."""
        if self._state != "open" or self._file is None:
            raise StoreError(f"staged blob is {self._state}")
        self._state = "taken"
        file, self._file = self._file, None
        file.seek(0)
        return file

    def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


async def write_blobs(conn: Connection, blobs: Sequence[tuple[str, int, bytes | IO[bytes]]]) -> None:
    """Insert blobs (id, size, body) and their chunks in the caller's transaction: one INSERT for the
    `blobs` rows and one COPY for every chunk of all of them (a group commit's batch), streamed piece
    by piece (at most BLOB_CHUNK_SIZE octets of a spooled message in memory at a time). A spooled file
    is read on the event loop: its pieces come from the page cache (or memory), ~50 µs per 256 KiB,
    and the message size limit and the batch bound (deliveries.py) bound their number."""
    if not blobs:
        return
    await conn.execute(
        b"INSERT INTO blobs (id, size) SELECT * FROM unnest(%s::text[], %s::bigint[])",
        ([blob_id for blob_id, _, _ in blobs], [size for _, size, _ in blobs]),
    )
    cursor = conn.cursor()
    async with cursor.copy(b"COPY blob_chunks (blob_id, position, data) FROM STDIN") as copy:
        for blob_id, _, source in blobs:
            if isinstance(source, bytes):
                for position, start in enumerate(range(0, len(source), BLOB_CHUNK_SIZE)):
                    await copy.write_row((blob_id, position, source[start : start + BLOB_CHUNK_SIZE]))
                continue
            source.seek(0)
            position = 0
            while piece := source.read(BLOB_CHUNK_SIZE):
                await copy.write_row((blob_id, position, piece))
                position += 1


async def blob_tail(conn: Connection, blob_id: str, size: int) -> bytes:
    """The last two octets of a blob (POP3's CRLF question, for rows that did not record it)."""
    if size == 0:
        return b""
    start = max(0, size - 2)
    return await read_range(conn, blob_id, start, size - start)


async def read_range(conn: Connection, blob_id: str, offset: int, length: int) -> bytes:
    """`length` octets from `offset` (fewer at the end), from the chunks that hold them."""
    if length <= 0:
        return b""
    first = offset // BLOB_CHUNK_SIZE
    last = (offset + length - 1) // BLOB_CHUNK_SIZE
    cursor = await conn.execute(
        b"SELECT data FROM blob_chunks WHERE blob_id = %s AND position BETWEEN %s AND %s ORDER BY position",
        (blob_id, first, last),
    )
    data = b"".join(bytes(row[0]) for row in await cursor.fetchall())
    start = offset - first * BLOB_CHUNK_SIZE
    return data[start : start + length]


class PostgresBlobReader:
    """`BlobReader` over one blob's chunks. It holds no connection between reads: each read borrows
    one from the pool. A blob removed after `open()` (its last message expunged) raises NotFound."""

    __slots__ = ("_blob_id", "_closed", "_store", "size")

    def __init__(self, store: PostgresBlobStore, blob_id: str, size: int) -> None:
        self._store = store
        self._blob_id = blob_id
        self.size = size
        self._closed = False

    async def read(self, offset: int, length: int) -> bytes:
        if self._closed:
            raise StoreError("blob reader is closed")
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        data = await self._store.read_chunks(self._blob_id, offset, length)
        if len(data) < length:
            raise NotFound(f"blob {self._blob_id}")
        return data

    async def stream(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        # One chunk per step: each step holds at most BLOB_CHUNK_SIZE octets and one short query.
        end = self.size if length is None else min(self.size, offset + length)
        while offset < end:
            step = min(end - offset, BLOB_CHUNK_SIZE - offset % BLOB_CHUNK_SIZE)
            chunk = await self.read(offset, step)
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        self._closed = True


class PostgresBlobStore:
    """`BlobStore` over `blobs`/`blob_chunks`; connections come from the store's pool."""

    def __init__(self, store: PooledStore) -> None:
        self._store = store

    def stage(self) -> StagedSpool:
        return StagedSpool()

    async def size_of(self, blob_id: str) -> int | None:
        async def fn(conn: Connection) -> int | None:
            cursor = await conn.execute(b"SELECT size FROM blobs WHERE id = %s", (blob_id,))
            row = await cursor.fetchone()
            return int(row[0]) if row is not None else None

        return await self._store.with_connection(fn)

    async def read_chunks(self, blob_id: str, offset: int, length: int) -> bytes:
        async def fn(conn: Connection) -> bytes:
            return await read_range(conn, blob_id, offset, length)

        return await self._store.with_connection(fn)

    async def open(self, blob_id: str) -> PostgresBlobReader:
        size = await self.size_of(blob_id)
        if size is None:
            raise NotFound(f"blob {blob_id}")
        return PostgresBlobReader(self, blob_id, size)

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes:
        reader = await self.open(blob_id)
        try:
            return await reader.read(offset, reader.size - offset if length is None else length)
        finally:
            reader.close()

    async def read_many(self, ranges: Sequence[tuple[str, int]]) -> list[bytes | None]:
        """One query for all of them (the relay queue's batch of small messages)."""
        wanted = sorted({blob_id for blob_id, _ in ranges})

        async def fn(conn: Connection) -> dict[str, bytes]:
            cursor = await conn.execute(
                b"SELECT b.id, b.size, c.data FROM blobs b LEFT JOIN blob_chunks c ON c.blob_id = b.id"
                b" WHERE b.id = ANY(%s) ORDER BY b.id, c.position",
                (wanted,),
            )
            pieces: dict[str, list[bytes]] = {}
            sizes: dict[str, int] = {}
            for blob_id, size, data in await cursor.fetchall():
                sizes[blob_id] = size
                pieces.setdefault(blob_id, [])
                if data is not None:
                    pieces[blob_id].append(bytes(data))
            joined = {blob_id: b"".join(parts) for blob_id, parts in pieces.items()}
            return {blob_id: data for blob_id, data in joined.items() if len(data) == sizes[blob_id]}

        found = await self._store.with_connection(fn)
        out: list[bytes | None] = []
        for blob_id, offset in ranges:
            data = found.get(blob_id)
            out.append(None if data is None else data[offset:])
        return out
