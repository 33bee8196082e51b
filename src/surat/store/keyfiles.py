"""The SQLite store's `KeyStore`: the installation secret and the DKIM signing keys as files in the
data directory, where a single-node install has always kept them (operators know these paths):

- `<data_dir>/server.secret`: 32 random bytes (0600);
- `<data_dir>/dkim/<domain>/<selector>.pem`: one private key per file (directory 0700, file 0600).

Several processes of one machine (`[server] workers = N`) share these files, so creating them is
atomic across processes: each file is written whole under a temporary name and hard-linked into
place, which fails instead of replacing a file another process put there first; and adding a key
`only_first_of_algorithm` holds an exclusive flock(2) on the domain's directory while it looks and
writes. All file work runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from surat.store.base import (
    DKIM_SELECTOR_RE,
    INSTALLATION_SECRET_BYTES,
    AlreadyExists,
    StoredDkimKey,
    StoreError,
)
from surat.store.common import normalize_domain
from surat.store.filemodes import PRIVATE_FILE_MODE, make_private_dir

SECRET_FILE = "server.secret"  # noqa: S105 - a file name, not a secret
KEY_DIR = "dkim"


def key_dir(data_dir: Path, domain: str) -> Path:
    return data_dir / KEY_DIR / normalize_domain(domain)


class FileKeyStore:
    """`KeyStore` over files in `data_dir` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    async def installation_secret(self) -> bytes:
        return await asyncio.to_thread(read_or_create_secret, self.data_dir)

    async def dkim_keys(self, domain: str) -> list[StoredDkimKey]:
        return await asyncio.to_thread(read_keys, self.data_dir, domain)

    async def add_dkim_key(self, key: StoredDkimKey, *, only_first_of_algorithm: bool = False) -> bool:
        return await asyncio.to_thread(write_key, self.data_dir, key, only_first_of_algorithm)

    def dkim_location(self, domain: str) -> str:
        return str(key_dir(self.data_dir, domain))


def read_or_create_secret(data_dir: Path) -> bytes:
    """`data_dir/server.secret`, created when missing; two processes creating it at once both end
    with the one that was linked into place first."""
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        secret = path.read_bytes()
        if len(secret) >= INSTALLATION_SECRET_BYTES:
            return secret
        # Shorter: damaged by hand or by a full disk before fsync existed here. A new one is better
        # than a weak one; replaced, not linked, because a file is there.
        _write_private(path, secrets.token_bytes(INSTALLATION_SECRET_BYTES), replace=True)
        return path.read_bytes()
    make_private_dir(data_dir, parents=True)
    with contextlib.suppress(FileExistsError):  # another process made it first: theirs counts
        _write_private(path, secrets.token_bytes(INSTALLATION_SECRET_BYTES), replace=False)
    return path.read_bytes()


def read_keys(data_dir: Path, domain: str) -> list[StoredDkimKey]:
    directory = key_dir(data_dir, domain)
    if not directory.is_dir():
        return []
    keys = []
    for path in sorted(directory.glob("*.pem")):
        selector = path.stem
        # Only files named as a selector are keys; anything else here (an operator's notes, a backup
        # copy) is left alone.
        if not DKIM_SELECTOR_RE.match(selector) or not path.is_file():
            continue
        pem = path.read_bytes()
        created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        keys.append(StoredDkimKey(directory.name, selector, _algorithm(path, pem), pem, created))
    return keys


def write_key(data_dir: Path, key: StoredDkimKey, only_first_of_algorithm: bool) -> bool:
    if not DKIM_SELECTOR_RE.match(key.selector):
        raise StoreError(f"DKIM selector {key.selector!r} is not one this store keeps (sYYYYMMDD[re][N])")
    directory = key_dir(data_dir, key.domain)
    make_private_dir(directory.parent, parents=True)  # <data_dir>/dkim too, not only the domain's
    make_private_dir(directory)
    with _locked(directory):
        if only_first_of_algorithm and any(
            other.algorithm == key.algorithm for other in read_keys(data_dir, key.domain)
        ):
            return False
        path = directory / f"{key.selector}.pem"
        try:
            _write_private(path, key.private_pem, replace=False)
        except FileExistsError:
            # never replaced: its public half may already be published, and replacing it would break
            # every signature until DNS catches up
            raise AlreadyExists(f"DKIM key {path}") from None
    return True


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock(2) on `directory` itself (no lock file beside the keys), held by this process
    until the block ends; other processes adding a key to the domain wait."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """`path` written whole and durable (0600 from its creation) or not at all. replace=False: a file
    already at `path` stays and FileExistsError is raised."""
    # A name of its own: two processes (or two threads of one) writing at once never share one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # O_EXCL with the mode given at creation: the data is never readable by others, not even between
    # open and chmod.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails instead of replacing
    finally:
        temporary.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _algorithm(path: Path, pem: bytes) -> str:
    """The key's algorithm, from the key itself rather than its file name (what DkimAlgorithm names)."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"unreadable DKIM key {path}: {exc}") from None
    if isinstance(private, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise StoreError(f"DKIM key {path} is neither RSA nor Ed25519")
