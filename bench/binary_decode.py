"""How fast FETCH BINARY removes a transfer encoding, and the longest single step (one chunk, the time a
worker thread holds the GIL at most), on well-formed and hostile 8 MiB parts.

    PYTHONPATH=src .venv/bin/python bench/binary_decode.py
"""

from __future__ import annotations

import base64
import os
import quopri
import time
from collections.abc import Callable

from surat.message.transfer import DECODE_CHUNK, decode_base64, decode_quoted_printable

MIB = 1024 * 1024


def cases() -> dict[str, tuple[Callable[[bytes], bytes], bytes]]:
    data = os.urandom(8 * MIB)
    return {
        "base64, random octets": (decode_base64, base64.encodebytes(data).replace(b"\n", b"\r\n")),
        "QP, well-formed (random octets)": (
            decode_quoted_printable,
            quopri.encodestring(data).replace(b"\n", b"\r\n"),
        ),
        "QP, 76-octet lines with trailing blank": (
            decode_quoted_printable,
            (b"a" * 74 + b" \r\n") * (8 * MIB // 77),
        ),
        'QP, all bad escapes "=ZZ"': (decode_quoted_printable, b"=ZZ" * (8 * MIB // 3)),
        'QP, all "="': (decode_quoted_printable, b"=" * (8 * MIB)),
        "QP, one line of blanks": (decode_quoted_printable, b" " * (8 * MIB)),
        'QP, "= ", 8 MiB of blanks, "x"': (decode_quoted_printable, b"= " + b" " * (8 * MIB) + b"x"),
        'QP, all "x= " (bad "=" before a blank)': (decode_quoted_printable, b"x= " * (8 * MIB // 3)),
        'QP, all "= \\r\\n" (empty soft-broken lines)': (decode_quoted_printable, b"= \r\n" * (8 * MIB // 4)),
    }


def main() -> None:
    print(f"{'input':46} {'MiB':>5} {'MiB/s':>7} {'one chunk':>10}")
    for name, (decode, data) in cases().items():
        started = time.perf_counter()
        decode(data)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        decode(data[:DECODE_CHUNK])
        chunk = time.perf_counter() - started
        size = len(data) / MIB
        print(f"{name:46} {size:5.1f} {size / elapsed:7.0f} {chunk * 1000:8.1f}ms")


if __name__ == "__main__":
    main()
