"""Owner-only modes for everything under the data directory (issue 11 item 12).

The data directory holds password hashes and SCRAM keys (the index) and mail (blobs, spool, queue):
directories are created 0700 and files 0600 whatever the process umask, and `surat check` lists
anything looser that an older version, a restore or a hand-made copy left behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path, *, parents: bool = False) -> None:
    """Create `path` 0700 if it is missing (an existing directory keeps its mode)."""
    if path.is_dir():
        return
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        return  # made meanwhile by another process; not ours to change
    os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask, which may clear owner bits


def open_private(path: Path, extra_flags: int) -> BinaryIO:
    """`path` opened for writing, created 0600 (`extra_flags`: os.O_EXCL or os.O_TRUNC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | extra_flags, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def loose_modes(root: Path) -> Iterator[tuple[Path, int]]:
    """(path, mode) of every directory under `root` (itself included) that group or others may
    enter or read, and every file they may read or write. Symbolic links are not followed."""
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            mode = stat.S_IMODE(directory.lstat().st_mode)
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        if mode & 0o077:
            yield directory, mode
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                file_mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if file_mode & 0o077:
                    yield Path(entry.path), file_mode
