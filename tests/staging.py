"""Staging a message through the store's blob interface, for tests that deliver or append bytes."""

from __future__ import annotations

from surat.store.base import BlobStore, StagedBlob


async def staged(blobs: BlobStore, data: bytes) -> StagedBlob:
    """`data` written into a new staged blob of `blobs`, ready for `Store.deliver`/`append`."""
    blob = blobs.stage()
    await blob.write(data)
    return blob
