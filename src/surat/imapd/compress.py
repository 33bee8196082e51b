"""COMPRESS=DEFLATE (RFC 4978): raw deflate (no zlib header, RFC 1951) in both directions."""

from __future__ import annotations

import zlib

__all__ = ["Deflate"]


class Deflate:
    """One connection's compressor and decompressor.

    Output is flushed with Z_SYNC_FLUSH after every write so the client can decode each response as it
    arrives (RFC 4978 §4). Input is inflated at most ``max_output`` bytes at a time: a small packet that
    inflates to gigabytes (a "zip bomb") is handed out piece by piece, through the command reader's limits.
    """

    def __init__(self, level: int = 6) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)
        self._tail = b""

    def compress(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    @property
    def has_pending_input(self) -> bool:
        """Compressed input is left over from the last ``decompress`` (its output was capped)."""
        return bool(self._tail)

    def decompress(self, data: bytes, max_output: int = 65536) -> bytes:
        """Inflate what arrived (plus any left-over input); raises zlib.error on a corrupt stream."""
        out = self._decompressor.decompress(self._tail + data, max_output)
        self._tail = self._decompressor.unconsumed_tail
        return out
