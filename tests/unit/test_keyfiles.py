"""The SQLite store's key files (surat.store.keyfiles): the installation secret and the DKIM keys stay
where a single-node install has always kept them, and several processes on one data directory
(`[server] workers = N`) end with one secret and one key per algorithm."""

from __future__ import annotations

import multiprocessing
import stat
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from surat.delivery import dkim
from surat.store.base import StoredDkimKey
from surat.store.keyfiles import FileKeyStore, read_or_create_secret, write_key

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_secret_from_an_earlier_version_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "server.secret"
    path.write_bytes(b"k" * 40)  # what an install made before the store kept it: the same file
    path.chmod(0o600)
    assert await FileKeyStore(tmp_path).installation_secret() == b"k" * 40
    assert path.read_bytes() == b"k" * 40


async def test_a_missing_secret_is_made_private_and_a_short_one_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = await FileKeyStore(data).installation_secret()
    assert len(secret) == 32 and (data / "server.secret").read_bytes() == secret
    assert mode(data) == 0o700 and mode(data / "server.secret") == 0o600
    (data / "server.secret").write_bytes(b"short")
    renewed = await FileKeyStore(data).installation_secret()
    assert len(renewed) == 32 and renewed != secret
    assert sorted(p.name for p in data.iterdir()) == ["server.secret"]  # no temporary left


def _secret_in_a_process(data_dir: Path) -> bytes:
    return read_or_create_secret(data_dir)


def _key_in_a_process(data_dir: Path, selector: str) -> bool:
    key = dkim.generate_key("example.test", dkim.DkimAlgorithm.ED25519, NOW, selector)
    stored = StoredDkimKey(key.domain, key.selector, key.algorithm.value, key.private_pem, NOW)
    return write_key(data_dir, stored, only_first_of_algorithm=True)


def test_processes_starting_at_once_share_one_secret_and_one_key(tmp_path: Path) -> None:
    """Workers of one machine: separate processes, not only threads of one."""
    context = multiprocessing.get_context("spawn")  # no copy of pytest's state in the children
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        secrets = list(pool.map(_secret_in_a_process, [tmp_path] * 8))
        selectors = ["s20261126e"] + [f"s20261126e{n}" for n in range(2, 9)]
        added = list(pool.map(_key_in_a_process, [tmp_path] * 8, selectors))
    assert len(set(secrets)) == 1 and (tmp_path / "server.secret").read_bytes() == secrets[0]
    assert added.count(True) == 1
    assert len(list((tmp_path / "dkim" / "example.test").iterdir())) == 1
