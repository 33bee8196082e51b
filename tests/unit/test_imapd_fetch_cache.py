"""The header-block cache FETCH uses for HEADER and HEADER.FIELDS sections."""

from __future__ import annotations

from surat.imapd.fetch import FetchCache
from surat.imapd.sections import ByteRange
from surat.proto.imap.commands import FetchAttr


def test_lookup_is_by_blob_and_exact_range() -> None:
    cache = FetchCache()
    cache.put("b1", ByteRange(0, 5), b"12345")
    assert cache.get("b1", ByteRange(0, 5)) == b"12345"
    # A part's header starting at the same offset but ending elsewhere is another block.
    assert cache.get("b1", ByteRange(0, 3)) is None
    assert cache.get("b2", ByteRange(0, 5)) is None


def test_least_recently_used_blocks_go_first_when_full() -> None:
    cache = FetchCache(max_bytes=30, max_entry=10)
    for n in range(3):
        cache.put(f"b{n}", ByteRange(0, 10), bytes([n]) * 10)
    assert cache.get("b0", ByteRange(0, 10)) == bytes(10)  # now the most recently used
    cache.put("b3", ByteRange(0, 10), b"3" * 10)
    assert cache.size == 30 and len(cache) == 3
    assert cache.get("b1", ByteRange(0, 10)) is None
    assert cache.get("b0", ByteRange(0, 10)) is not None
    assert cache.get("b2", ByteRange(0, 10)) is not None


def test_large_blocks_are_not_kept_and_a_block_is_counted_once() -> None:
    cache = FetchCache(max_bytes=100, max_entry=10)
    cache.put("big", ByteRange(0, 11), b"x" * 11)
    assert cache.get("big", ByteRange(0, 11)) is None
    cache.put("b", ByteRange(0, 4), b"abcd")
    cache.put("b", ByteRange(0, 4), b"abcd")
    assert cache.size == 4 and len(cache) == 1


ENV = FetchAttr.ENVELOPE


def test_structures_are_keyed_by_mailbox_uidvalidity_uid_item_and_utf8() -> None:
    structures = FetchCache().structures
    structures.put((1, 100, 7, ENV, False), b"(env)")
    assert structures.get((1, 100, 7, ENV, False)) == b"(env)"
    for other in [
        (2, 100, 7, ENV, False),
        (1, 101, 7, ENV, False),
        (1, 100, 8, ENV, False),
        (1, 100, 7, FetchAttr.BODYSTRUCTURE, False),
        (1, 100, 7, ENV, True),
    ]:
        assert structures.get(other) is None


def test_structures_have_their_own_budget_counting_each_entrys_overhead() -> None:
    # Room for three 10-byte values with 5 bytes of overhead each.
    cache = FetchCache(max_bytes=100, max_entry=10, structure_bytes=45, structure_entry=12)
    structures = cache.structures
    structures.overhead = 5
    for uid in range(3):
        structures.put((1, 1, uid, ENV, False), bytes([uid]) * 10)
    assert structures.size == 45 and len(structures) == 3
    assert structures.get((1, 1, 0, ENV, False)) is not None  # now the most recently used
    structures.put((1, 1, 3, ENV, False), b"3" * 10)
    assert len(structures) == 3 and structures.get((1, 1, 1, ENV, False)) is None
    structures.put((1, 1, 4, ENV, False), b"x" * 13)  # larger than structure_entry: not kept
    assert structures.get((1, 1, 4, ENV, False)) is None and structures.size == 45
    # Header blocks are counted apart.
    assert cache.size == 0 and len(cache) == 0
