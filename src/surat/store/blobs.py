"""The file blob backend: message bodies as immutable files under `<data_dir>/blobs/xx/<id>`.

Ids are 26 lower-case hex digits: 12 of milliseconds since the epoch (so ids sort by time) and
14 random ones. `xx` is the low byte of the time: files spread over 256 directories as time
passes, while the files of one group commit (ids made with one timestamp) share a directory, so
the commit syncs one directory rather than one per file. Only the
SQLite store installs and removes blobs (it owns the durability protocol); others stage, read
and stream them through the `BlobStore` Protocol and never see a path.

Staged messages are files in the spool area (`<data_dir>/tmp`, on the blob area's filesystem, so
that taking one over is a rename); the store's `open()` removes what a crash left there.

Reads: a read of up to INLINE_READ octets is a pread(2) on the event loop (from the page cache in
the common case: shorter than a thread hand-over, which measured slower for FETCH and RETR), a
larger one runs in a thread; `stream()` reads STREAM_CHUNK octets at a time on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from surat.store.base import NotFound, StoreError
from surat.store.filemodes import make_private_dir, open_private

_ID = re.compile(r"^[0-9a-f]{26}$")

# The bound on event-loop work per read: a read up to this size runs on the loop (a page-cache
# copy of 64 KiB takes tens of microseconds), a larger one in a thread.
INLINE_READ = 64 * 1024
STREAM_CHUNK = 64 * 1024  # octets per chunk of BlobReader.stream (POP3 RETR, FETCH literals)


def new_blob_id(millis: int | None = None) -> str:
    if millis is None:
        millis = time.time_ns() // 1_000_000
    return f"{millis % (1 << 48):012x}{secrets.token_hex(7)}"


class StagedFile:
    """`StagedBlob` in a file of the spool area. Writes go through a buffered file on the event loop,
    as the SMTP DATA and IMAP APPEND chunks arrive (each at most the engine's chunk size)."""

    __slots__ = ("_file", "_state", "path", "size")

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file: BinaryIO | None = file
        self._state = "open"  # "open", "taken" (the store owns the file), "aborted"
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self._file is None:
            raise StoreError(f"staged blob is {self._state}")
        self._file.write(data)
        self.size += len(data)

    async def read(self, offset: int = 0) -> bytes:
        if self._state != "open":
            raise StoreError(f"staged blob is {self._state}")
        if self._file is not None:
            self._file.flush()
        return await asyncio.to_thread(_read_file, self.path, offset)

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def take(self) -> Path:
        """(For the store.) Close the file and own it from now on; StoreError if it was aborted."""
        if self._state != "open":
            raise StoreError(f"staged blob is {self._state}")
        self._state = "taken"
        self._close()
        return self.path

    def discard_taken(self) -> None:
        """(For the store.) Remove a file taken over but not installed (refused or failed)."""
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()


def _read_file(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


class FileBlobReader:
    """`BlobReader` over an open file descriptor (pread: no shared position, safe from threads)."""

    __slots__ = ("_fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        if self._fd < 0:
            raise StoreError("blob reader is closed")
        if length <= INLINE_READ:
            return os.pread(self._fd, length, offset)
        return await asyncio.to_thread(self._read_fully, offset, length)

    def _read_fully(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        while length > 0:
            chunk = os.pread(self._fd, min(length, 1 << 24), offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def stream(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        end = self.size if length is None else offset + length
        return _FileChunks(self, offset, end)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _FileChunks:
    """The chunks of `FileBlobReader.stream`. An iterator object rather than an async generator: a
    caller that stops early (POP3 TOP, a pipelined RETR whose last chunk ends the message) leaves no
    suspended generator (and its last chunk) waiting for the event loop's finalizer."""

    __slots__ = ("_end", "_offset", "_reader")

    def __init__(self, reader: FileBlobReader, offset: int, end: int) -> None:
        self._reader = reader
        self._offset = offset
        self._end = end

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._offset >= self._end:
            raise StopAsyncIteration
        fd = self._reader._fd
        if fd < 0:
            raise StoreError("blob reader is closed")
        chunk = os.pread(fd, min(STREAM_CHUNK, self._end - self._offset), self._offset)
        if not chunk:
            raise StopAsyncIteration  # shorter than its recorded size (damaged): ends early
        self._offset += len(chunk)
        return chunk


class FileBlobStore:
    """`BlobStore` over a directory of files; staged files in `spool_dir`."""

    def __init__(self, root: Path, spool_dir: Path) -> None:
        self.root = root
        self.spool_dir = spool_dir
        self._spool_ready = False

    # -- the BlobStore Protocol

    def stage(self) -> StagedFile:
        if not self._spool_ready:
            make_private_dir(self.spool_dir, parents=True)
            self._spool_ready = True
        path = self.spool_dir / f"staged-{secrets.token_hex(8)}"
        return StagedFile(path, open_private(path, os.O_EXCL))

    async def open(self, blob_id: str) -> FileBlobReader:
        fd = self._open_fd(blob_id)
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return FileBlobReader(fd, size)

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None) -> bytes:
        reader = await self.open(blob_id)
        try:
            wanted = max(0, reader.size - offset) if length is None else length
            return await reader.read(offset, wanted)
        finally:
            reader.close()

    async def read_many(self, ranges: Sequence[tuple[str, int]]) -> list[bytes | None]:
        # One thread hand-over for the batch: the opens and reads leave the event loop.
        return await asyncio.to_thread(self._read_many, ranges)

    def _read_many(self, ranges: Sequence[tuple[str, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for blob_id, offset in ranges:
            try:
                with self._path(blob_id).open("rb") as file:
                    file.seek(offset)
                    out.append(file.read())
            except (OSError, NotFound):
                out.append(None)
        return out

    def _open_fd(self, blob_id: str) -> int:
        try:
            return os.open(self._path(blob_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id}") from None

    def _path(self, blob_id: str) -> Path:
        # Ids come from our own index, but never let one name a path outside the blob area.
        if not _ID.match(blob_id):
            raise NotFound(f"blob {blob_id!r}")
        return self.root / blob_id[10:12] / blob_id

    # -- for the SQLite store (same backend): paths, installing, removing

    def path(self, blob_id: str) -> Path:
        return self._path(blob_id)

    def install(self, source: Path, blob_id: str) -> Path:
        """Move `source` (a taken-over staged file) into place (a rename on the same filesystem;
        a copy across filesystems)."""
        target = self._path(blob_id)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # the spool is on another filesystem
                raise
            tmp = target.with_name(target.name + ".part")
            with source.open("rb") as src, open_private(tmp, os.O_TRUNC) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.rename(tmp, target)
            source.unlink()
        return target

    def write(self, blob_id: str, data: bytes) -> Path:
        """Write a new blob from memory. Not yet durable: the store's commit syncs it."""
        target = self._path(blob_id)
        with open_private(target, os.O_EXCL) as file:
            file.write(data)
        return target

    def delete(self, blob_id: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotFound):
            self._path(blob_id).unlink()

    def scan(self) -> Iterator[tuple[str, Path]]:
        """Every (id, path) present, plus leftovers (non-id names) with id ""."""
        if not self.root.is_dir():
            return
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                yield (entry.name if _ID.match(entry.name) else ""), Path(entry.path)
