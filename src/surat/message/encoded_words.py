"""RFC 2047 encoded words, decoded totally: any text in, text out, never an exception."""

from __future__ import annotations

import email.errors
import email.header
import re

__all__ = ["decode_encoded_words"]

# RFC 2047 §2 encoded-word "=?" charset "?" encoding "?" encoded-text "?=" (charset may carry an RFC 2231
# §5 "*language"); no class includes "?", so there is one way to match and the scan is linear.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")


def _decode_word(word: str) -> str | None:
    """One encoded word's text, or None when its charset or encoding cannot be decoded."""
    try:
        ((payload, charset),) = email.header.decode_header(word)
        if not isinstance(payload, bytes) or charset is None:
            return None
        return payload.decode(charset.partition("*")[0], "replace")
    except (LookupError, UnicodeError, ValueError, TypeError, email.errors.MessageError):
        # an unknown or non-text charset ("\xf0tf-8", "zlib"), bad base64: CharsetError and the like
        return None


def decode_encoded_words(text: str) -> str:
    """`text` with its RFC 2047 encoded words decoded; total, it never raises.

    A word that cannot be decoded is kept as written (RFC 2047 §6.3: "display the encoded-word as
    is"), the others are still decoded. Whitespace between two decoded words is dropped (§6.2).
    """
    out: list[str] = []
    pos = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        decoded = _decode_word(match.group())
        if decoded is None:
            out += (between, match.group())
        else:
            if not (after_word and not between.strip()):
                out.append(between)
            out.append(decoded)
        after_word = decoded is not None
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)
