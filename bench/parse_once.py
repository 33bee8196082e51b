"""CPU per accepted message spent reading it at the end of DATA: every consumer reading the header itself
(before issue 11 item 7 step 2) against the header read once and handed on (now), through the very
functions the SMTP service calls, on 1 000 mixed messages from bench/mailgen.py.

    PYTHONPATH=src .venv/bin/python bench/parse_once.py [COUNT]

MX: spool header, DKIM/ARC/DMARC's split, the MessageInfo of the stored copy (trace fields on top).
Submission: the From check's header, DKIM signing's split, the MessageInfo. Signing, key lookups and
hashing are the same either way and left out; only the reading differs.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable

from mailgen import messages

from surat.mailauth.dkim_canon import parse_message
from surat.message.headers import read_header, with_fields_above
from surat.message.info import compute_message_info

TRACE = (
    b"Return-Path: <sender@remote.example>\r\n"
    b"Received: from client.example ([192.0.2.1])\r\n\tby mail.example.test (Surat) with ESMTPS id a.1\r\n"
    b"\tfor <alice@example.test>;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
)
ADDED = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@mail.example.test>\r\n"


def header_of(message: bytes) -> bytes:
    return message[: message.find(b"\r\n\r\n") + 4]


def mx_before(message: bytes) -> None:
    parse_message(message, crlf_only=True)
    compute_message_info(io.BytesIO(TRACE + message))


def mx_after(message: bytes) -> None:
    header = read_header(header_of(message), crlf_only=True)
    parse_message(message, crlf_only=True, header=header)
    compute_message_info(io.BytesIO(TRACE + message), with_fields_above(TRACE, header))


def submission_before(message: bytes) -> None:
    read_header(header_of(message))
    parse_message(ADDED + message)
    compute_message_info(io.BytesIO(TRACE + ADDED + message))


def submission_after(message: bytes) -> None:
    header = read_header(header_of(message), crlf_only=True)
    sent = with_fields_above(ADDED, header)
    parse_message(ADDED + message, crlf_only=True, header=sent)
    stored = with_fields_above(TRACE, sent) if sent is not None else None
    compute_message_info(io.BytesIO(TRACE + ADDED + message), stored)


def per_message(run: Callable[[bytes], None], corpus: list[bytes], rounds: int = 5) -> float:
    """The best of `rounds` passes, in microseconds of CPU per message."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for message in corpus:
            run(message)
        best = min(best, time.process_time() - start)
    return best / len(corpus) * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    corpus = list(messages(count, max_kb=64))
    size = sum(map(len, corpus)) // len(corpus)
    print(f"{count} messages, mean {size} octets; CPU microseconds per message (best of 5)")
    for name, before, after in (
        ("MX", mx_before, mx_after),
        ("submission", submission_before, submission_after),
    ):
        was, now = per_message(before, corpus), per_message(after, corpus)
        print(f"{name:<11} before {was:7.1f}  after {now:7.1f}  ({(was - now) / was:.0%} less)")


if __name__ == "__main__":
    main()
