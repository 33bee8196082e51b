"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3), for IMAP4rev1 clients that did not ENABLE UTF8=ACCEPT.

Decoding is strict: only the canonical encoding of a name is accepted, so one name has exactly one
encoded form and two different byte strings can never map to the same mailbox.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["MUTF7Error", "decode", "encode"]


class MUTF7Error(ValueError):
    """The input is not a canonical modified UTF-7 string."""


def _is_direct(ch: str) -> bool:
    # RFC 3501 §5.1.3: printable US-ASCII (0x20-0x7e) represents itself, except "&".
    return "\x20" <= ch <= "\x7e"


def _b64_encode(run: str) -> str:
    raw = run.encode("utf-16-be")
    # RFC 3501 §5.1.3: modified BASE64 uses "," for "/" and omits "=" padding.
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Encode a Unicode mailbox name to modified UTF-7."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _is_direct(ch):
            if run:
                out.append("&" + _b64_encode("".join(run)) + "-")
                run.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append("&" + _b64_encode("".join(run)) + "-")
    return "".join(out)


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _b64_decode(chunk: str) -> str:
    if any(c not in _B64_ALPHABET for c in chunk):
        raise MUTF7Error(f"invalid modified BASE64 character in {chunk!r}")
    bits = len(chunk) * 6
    # A run encodes whole UTF-16 code units; leftover bits must be fewer than one base64 digit (6) and
    # zero, otherwise the encoding is not the canonical one (RFC 3501 §5.1.3 + RFC 2152 rules).
    if bits % 16 >= 6:
        raise MUTF7Error(f"truncated modified BASE64 run {chunk!r}")
    padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:  # pragma: no cover - alphabet and length are already checked
        raise MUTF7Error(str(exc)) from exc
    if base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") != chunk:
        raise MUTF7Error(f"non-zero padding bits in {chunk!r}")
    try:
        text = raw.decode("utf-16-be")  # strict: rejects lone surrogates
    except UnicodeDecodeError as exc:
        raise MUTF7Error(f"invalid UTF-16 in {chunk!r}") from exc
    if any(_is_direct(c) for c in text):
        # RFC 3501 §5.1.3: printable US-ASCII "MUST NOT" be encoded in modified BASE64.
        raise MUTF7Error(f"printable ASCII encoded in BASE64 in {chunk!r}")
    return text


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; raise MUTF7Error if it is not canonical."""
    out: list[str] = []
    i = 0
    n = len(name)
    previous_was_run = False
    while i < n:
        ch = name[i]
        if ch == "&":
            end = name.find("-", i + 1)
            if end < 0:
                raise MUTF7Error("unterminated '&' shift sequence")
            chunk = name[i + 1 : end]
            if chunk == "":
                out.append("&")
                previous_was_run = False
            else:
                if previous_was_run:
                    # Two adjacent runs must have been written as one (canonical form).
                    raise MUTF7Error("adjacent BASE64 runs")
                out.append(_b64_decode(chunk))
                previous_was_run = True
            i = end + 1
            continue
        if not _is_direct(ch):
            raise MUTF7Error(f"character {ch!r} must be encoded")
        out.append(ch)
        previous_was_run = False
        i += 1
    return "".join(out)
