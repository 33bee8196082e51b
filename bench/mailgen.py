"""Deterministic test messages for the benchmarks: the same seed gives the same bytes on any machine.

A mix like a real mailbox: 60% plain text, 25% multipart/alternative (text and HTML), 15% with a binary
attachment; sizes from a Pareto distribution (many small, a few large, capped at `max_kb`); non-ASCII
display names and subjects (RFC 2047 encoded words), Cc on some, and replies (In-Reply-To/References)
to recent messages, so threads exist. Line ends are CRLF, as a server stores and sends them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

WORDS = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "mail",
    "server",
    "imap",
    "smtp",
    "pop3",
    "queue",
    "mailbox",
    "folder",
    "message",
    "header",
    "body",
    "attachment",
    "räksmörgås",
    "naïve",
    "café",
    "日本語",
)
PEOPLE = ("alice", "bob", "carol", "dave", "eve", "José Núñez", "Zoë")
DOMAIN = "example.test"
FIRST_DATE = 1_600_000_000  # one message an hour from here on: dates rise with the message number
THREAD_WINDOW = 50  # replies go to one of the last 50 messages
CACHE = Path("/tmp/surat-bench-cache")
VERSION = 1  # part of the cache file's name: change it when the messages change
_LENGTH = struct.Struct(">I")


def _text(rng: random.Random, size: int) -> str:
    """About `size` characters of words, wrapped at 72."""
    lines: list[str] = []
    line: list[str] = []
    width = total = 0
    while total < size:
        word = rng.choice(WORDS)
        if width + len(word) + 1 > 72 and line:
            lines.append(" ".join(line))
            line, width = [], 0
        line.append(word)
        width += len(word) + 1
        total += len(word) + 1
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def _address(name: str) -> str:
    return f'"{name}" <{name.split(maxsplit=1)[0].lower()}@{DOMAIN}>'


def make_message(rng: random.Random, number: int, max_kb: int, earlier_ids: list[str]) -> tuple[str, bytes]:
    """Message `number` drawn from `rng`: its Message-ID and its bytes."""
    message = EmailMessage()
    message["From"] = _address(rng.choice(PEOPLE))
    message["To"] = _address(rng.choice(PEOPLE))
    if rng.random() < 0.3:
        message["Cc"] = f"list{rng.randint(1, 3)}@{DOMAIN}"
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
    message_id = f"<m{number}@gen.{DOMAIN}>"
    if earlier_ids and rng.random() < 0.35:
        parent = rng.choice(earlier_ids[-THREAD_WINDOW:])
        message["Subject"] = "Re: " + subject
        message["In-Reply-To"] = parent
        message["References"] = parent
    else:
        message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = formatdate(FIRST_DATE + number * 3600 + rng.randint(0, 3599), localtime=False)
    size = int(rng.paretovariate(1.2) * 800) % (max_kb * 1024) + 200
    kind = rng.random()
    if kind < 0.6:
        message.set_content(_text(rng, size))
    elif kind < 0.85:
        message.set_content(_text(rng, size))
        html = "<html><body><p>" + _text(rng, size // 2) + "</p></body></html>"
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(_text(rng, min(size, 2000)))
        message.add_attachment(
            rng.randbytes(size),
            maintype="application",
            subtype="octet-stream",
            filename=f"file{number}.bin",
        )
    return message_id, message.as_bytes(policy=SMTP)


def messages(count: int, seed: int = 1, max_kb: int = 64) -> Iterator[bytes]:
    """`count` messages; the first n of a longer run with the same seed are the same n messages."""
    rng = random.Random(seed)
    ids: list[str] = []
    for number in range(count):
        message_id, raw = make_message(rng, number, max_kb, ids)
        ids.append(message_id)
        yield raw


def cached_messages(count: int, seed: int = 1, cache: Path = CACHE) -> Iterator[bytes]:
    """`messages(count, seed)`, generated once into a file under `cache` (about 2 ms a message) and then
    read back from it; a file made for a larger count serves a smaller one (its first messages)."""
    cache.mkdir(exist_ok=True)
    prefix = f"mailgen-v{VERSION}-seed{seed}-"
    for path in sorted(cache.glob(prefix + "*.bin")):
        if int(path.stem.rsplit("-", 1)[1]) >= count:
            return _read(path, count)
    path = cache / f"{prefix}{count}.bin"
    print(f"generating {count} messages into {path} (once) ...", flush=True)
    partial = path.with_suffix(".tmp")
    with partial.open("wb") as out:
        for raw in messages(count, seed):
            out.write(_LENGTH.pack(len(raw)) + raw)
    partial.rename(path)
    return _read(path, count)


def _read(path: Path, count: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        for _ in range(count):
            (length,) = _LENGTH.unpack(source.read(_LENGTH.size))
            yield source.read(length)
