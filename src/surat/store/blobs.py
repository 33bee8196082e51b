"""Message bodies as immutable files under `<data_dir>/blobs/xx/<id>`.

Ids are 26 lower-case hex digits: 12 of milliseconds since the epoch (so ids sort by time) and
14 random ones. `xx` is the low byte of the time: files spread over 256 directories as time
passes, while the files of one group commit (ids made with one timestamp) share a directory, so
the commit syncs one directory rather than one per file. Only the
SQLite store creates and removes blobs (it owns the durability protocol); others just read them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from surat.store.base import NotFound
from surat.store.filemodes import open_private

_ID = re.compile(r"^[0-9a-f]{26}$")


def new_blob_id(millis: int | None = None) -> str:
    if millis is None:
        millis = time.time_ns() // 1_000_000
    return f"{millis % (1 << 48):012x}{secrets.token_hex(7)}"


class FileBlobStore:
    """`BlobStore` over a directory of files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, blob_id: str) -> Path:
        # Ids come from our own index, but never let one name a path outside the blob area.
        if not _ID.match(blob_id):
            raise NotFound(f"blob {blob_id!r}")
        return self.root / blob_id[10:12] / blob_id

    def open(self, blob_id: str) -> BinaryIO:
        try:
            return self._path(blob_id).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id}") from None

    def path(self, blob_id: str) -> Path | None:
        return self._path(blob_id)

    # -- used by the store's writer

    def install(self, source: Path, blob_id: str) -> Path:
        """Move `source` into place (a rename on the same filesystem; a copy across filesystems)."""
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
