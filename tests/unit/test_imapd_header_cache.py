"""The header-block cache FETCH uses for HEADER and HEADER.FIELDS sections."""

from __future__ import annotations

from surat.imapd.fetch import HeaderCache
from surat.imapd.sections import ByteRange


def test_lookup_is_by_blob_and_exact_range() -> None:
    cache = HeaderCache()
    cache.put("b1", ByteRange(0, 5), b"12345")
    assert cache.get("b1", ByteRange(0, 5)) == b"12345"
    # A part's header starting at the same offset but ending elsewhere is another block.
    assert cache.get("b1", ByteRange(0, 3)) is None
    assert cache.get("b2", ByteRange(0, 5)) is None


def test_least_recently_used_blocks_go_first_when_full() -> None:
    cache = HeaderCache(max_bytes=30, max_entry=10)
    for n in range(3):
        cache.put(f"b{n}", ByteRange(0, 10), bytes([n]) * 10)
    assert cache.get("b0", ByteRange(0, 10)) == bytes(10)  # now the most recently used
    cache.put("b3", ByteRange(0, 10), b"3" * 10)
    assert cache.size == 30 and len(cache) == 3
    assert cache.get("b1", ByteRange(0, 10)) is None
    assert cache.get("b0", ByteRange(0, 10)) is not None
    assert cache.get("b2", ByteRange(0, 10)) is not None


def test_large_blocks_are_not_kept_and_a_block_is_counted_once() -> None:
    cache = HeaderCache(max_bytes=100, max_entry=10)
    cache.put("big", ByteRange(0, 11), b"x" * 11)
    assert cache.get("big", ByteRange(0, 11)) is None
    cache.put("b", ByteRange(0, 4), b"abcd")
    cache.put("b", ByteRange(0, 4), b"abcd")
    assert cache.size == 4 and len(cache) == 1
