"""Modified UTF-7 (RFC 3501 §5.1.3): known encodings, round trips, and strict rejection."""

from __future__ import annotations

import pytest

from surat.proto.imap import mutf7

KNOWN = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("a&b", "a&-b"),
    # RFC 3501 §5.1.3 example: "~peter/mail/台北/日本語"
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entw\u00fcrfe", "Entw&APw-rfe"),  # German "Drafts" (Thunderbird / Dovecot)
    ("\u00e9t\u00e9", "&AOk-t&AOk-"),
    ("Ma\u00efl & co", "Ma&AO8-l &- co"),
    ("\U0001f600", "&2D3eAA-"),  # astral plane: a surrogate pair in UTF-16
    ("\u00e9\u00e8", "&AOkA6A-"),  # two characters share one run
]


@pytest.mark.parametrize(("text", "encoded"), KNOWN)
def test_encode(text: str, encoded: str) -> None:
    assert mutf7.encode(text) == encoded


@pytest.mark.parametrize(("text", "encoded"), KNOWN)
def test_decode(text: str, encoded: str) -> None:
    assert mutf7.decode(encoded) == text


@pytest.mark.parametrize(
    "text",
    [
        "Sent Items",
        "\u0416\u0443\u0440\u043d\u0430\u043b",  # Cyrillic
        "\u4f60\u597d/\u4e16\u754c",
        "a\u00e9b\u00e9c",
        "&&&",
        "&\u00e9&",
        "\U0001f4e7 mail \U0001f4ec",
        "\x7e\x20\x21",
        "x" * 200 + "\u00ff" * 100,
    ],
)
def test_round_trip(text: str) -> None:
    encoded = mutf7.encode(text)
    assert encoded.isascii()
    assert all(0x20 <= ord(ch) <= 0x7E for ch in encoded)
    assert mutf7.decode(encoded) == text


def test_round_trip_all_bmp_blocks() -> None:
    # Every 251st BMP code point outside the surrogate range, in runs of varying length.
    chars = [chr(cp) for cp in range(0x80, 0x10000, 251) if not 0xD800 <= cp <= 0xDFFF]
    for size in (1, 2, 3, 4, 5):
        for i in range(0, len(chars), size):
            text = "a" + "".join(chars[i : i + size]) + "b"
            assert mutf7.decode(mutf7.encode(text)) == text


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("&U,BTFw", "unterminated shift"),
        ("&", "lone ampersand"),
        ("&U,BTF$-", "character outside modified BASE64"),
        ("&U/BTFw-", "'/' instead of ','"),
        ("&AOk=-", "padding"),
        ("&AGE-", "printable ASCII 'a' encoded"),
        ("&ACY-", "'&' encoded instead of '&-'"),
        ("&AOk-&AOg-", "adjacent runs must be merged"),
        ("&AOl-", "non-zero padding bits"),
        ("&AO-", "truncated: not a whole UTF-16 unit"),
        ("&2D0-", "lone high surrogate"),
        ("&3gA-", "lone low surrogate"),
        ("caf\u00e9", "raw 8-bit character"),
        ("tab\there", "control character"),
        ("&AOkA-", "leftover bits form a digit"),
    ],
)
def test_decode_rejects_non_canonical(encoded: str, reason: str) -> None:
    with pytest.raises(mutf7.MUTF7Error):
        mutf7.decode(encoded)
