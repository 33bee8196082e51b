"""The file blob area: ids, layout, refusal of path tricks, scan."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from surat.store.base import NotFound
from surat.store.blobs import FileBlobStore, new_blob_id


def test_ids_sort_by_time_and_share_a_directory_per_timestamp() -> None:
    first = new_blob_id()
    time.sleep(0.002)
    second = new_blob_id()
    assert len(first) == 26 and first < second
    same = {new_blob_id(1_700_000_000_123)[10:12] for _ in range(20)}
    assert len(same) == 1
    assert len({new_blob_id(1_700_000_000_123) for _ in range(20)}) == 20


def test_install_open_delete_scan(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    blob_id = new_blob_id()
    (tmp_path / "blobs" / blob_id[10:12]).mkdir(parents=True)
    source = tmp_path / "spool"
    source.write_bytes(b"message")
    target = blobs.install(source, blob_id)
    assert not source.exists() and target == blobs.path(blob_id)
    with blobs.open(blob_id) as f:
        assert f.read() == b"message"
    (target.parent / "junk.part").write_bytes(b"")
    assert sorted(blob for blob, _ in blobs.scan()) == ["", blob_id]
    blobs.delete(blob_id)
    blobs.delete(blob_id)  # deleting twice is harmless
    with pytest.raises(NotFound):
        blobs.open(blob_id)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "ABCDEF0123456789abcdef0123", "a" * 27, "x/y"])
def test_ids_that_are_not_ours_are_refused(tmp_path: Path, bad: str) -> None:
    blobs = FileBlobStore(tmp_path)
    with pytest.raises(NotFound):
        blobs.open(bad)
    with pytest.raises(NotFound):
        blobs.path(bad)
