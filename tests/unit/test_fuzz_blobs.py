"""Fuzz: the file blob backend. A message written into a staged blob in random pieces reads back
whole, and once installed, every (offset, length) read or stream gives exactly that slice, in chunks
never over the bound, whatever the chunk and inline-read sizes; an aborted blob leaves no file and
can no longer be handed to the store."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.store import blobs as blobs_module
from surat.store.base import StoreError
from surat.store.blobs import FileBlobStore, new_blob_id

pytestmark = pytest.mark.fuzz

_RANGES = st.lists(st.tuples(st.integers(0, 600), st.none() | st.integers(0, 600)), max_size=8)


async def _check(data: bytes, cuts: list[int], ranges: list[tuple[int, int | None]], abort: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        blobs = FileBlobStore(root / "blobs", root / "tmp")
        staged = blobs.stage()
        bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
        for start, end in itertools.pairwise(bounds):
            await staged.write(data[start:end])
        assert staged.size == len(data)
        assert await staged.read() == data
        if abort:
            staged.abort()
            assert list((root / "tmp").iterdir()) == []
            with pytest.raises(StoreError):
                staged.take()
            return
        blob_id = new_blob_id()
        (root / "blobs" / blob_id[10:12]).mkdir(parents=True)
        blobs.install(staged.take(), blob_id)
        assert list((root / "tmp").iterdir()) == []
        reader = await blobs.open(blob_id)
        try:
            for offset, length in ranges:
                expected = data[offset:] if length is None else data[offset : offset + length]
                chunks = [chunk async for chunk in reader.stream(offset, length)]
                assert b"".join(chunks) == expected
                assert all(0 < len(chunk) <= blobs_module.STREAM_CHUNK for chunk in chunks)
                assert await reader.read(offset, len(data) if length is None else length) == expected
        finally:
            reader.close()


@fuzz_settings()
@given(
    data=st.binary(max_size=500),
    cuts=st.lists(st.integers(0, 500), max_size=6),
    ranges=_RANGES,
    chunk=st.integers(1, 64),
    inline=st.integers(0, 64),
    abort=st.booleans(),
)
def test_staged_writes_read_back_at_any_range(
    data: bytes, cuts: list[int], ranges: list[tuple[int, int | None]], chunk: int, inline: int, abort: bool
) -> None:
    with (
        mock.patch.object(blobs_module, "STREAM_CHUNK", chunk),
        mock.patch.object(blobs_module, "INLINE_READ", inline),
    ):
        asyncio.run(_check(data, cuts, ranges, abort))
