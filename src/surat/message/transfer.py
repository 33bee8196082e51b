"""Content-Transfer-Encoding decoders (RFC 2045 §6): the one set, for FETCH BINARY and for SEARCH.

Exact RFC 2045 §6.7 quoted-printable and §6.8 base64, read leniently where the RFC says decoders should
(see each decoder). Two ways in, with the same result for the same octets however they are split:
`decode_transfer_encoding` for a whole part (BINARY), and `transfer_decoder` for a part read in pieces
(SEARCH BODY/TEXT: `feed` each piece, then `flush`).

Bounds: linear in the data, never more output than input; each C call (translate, a2b_*, a regex pass)
covers about DECODE_CHUNK octets, so that in a worker thread no single step holds the GIL (and so the
event loop) for long. A streaming decoder keeps less than DECODE_CHUNK octets between pieces, but for a
run of blanks (quoted-printable), which it must see the end of: it remembers how far it has scanned it,
so the run is still read once.
"""

from __future__ import annotations

import binascii
import re
from typing import Protocol

__all__ = [
    "DECODE_CHUNK",
    "Base64Decoder",
    "IdentityDecoder",
    "QuotedPrintableDecoder",
    "TransferDecoder",
    "UnknownEncoding",
    "decode_base64",
    "decode_quoted_printable",
    "decode_transfer_encoding",
    "transfer_decoder",
]


class UnknownEncoding(Exception):
    """A Content-Transfer-Encoding we cannot decode (BINARY answers RFC 3516 §4.2 UNKNOWN-CTE)."""


class TransferDecoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def decode_transfer_encoding(data: bytes, encoding: str) -> bytes:
    """`data` with its transfer encoding removed (RFC 3516 §4.2: what BINARY returns); UnknownEncoding
    for an encoding we do not know.

    Linear in ``data`` and never larger than it; the caller bounds ``data`` (one part of a stored
    message, so at most ``limits.message_size`` octets). Decoded ``DECODE_CHUNK`` octets at a time, so
    that, run in a worker thread, no single C call holds the GIL (and so the event loop) for long."""
    enc = encoding.upper()
    if enc in _IDENTITY_ENCODINGS:
        return data
    if enc == "BASE64":
        return decode_base64(data)
    if enc == "QUOTED-PRINTABLE":
        return decode_quoted_printable(data)
    raise UnknownEncoding(encoding)


DECODE_CHUNK = 64 * 1024  # octets of encoded data per C call (about a millisecond of GIL each)
# RFC 2045 §6.2: these three are not encodings, only statements about the content ("" when absent).
_IDENTITY_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY", ""})
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# RFC 2045 §6.8: "All line breaks or other characters not found in Table 1 must be ignored by decoding
# software"; "=" is kept to find the end of the data.
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET + b"=")


def transfer_decoder(encoding: str) -> TransferDecoder:
    """A streaming decoder for `encoding` (as BodyPart.encoding has it, upper-cased); an unknown encoding
    gives the octets as they are (SEARCH then looks in the encoded text, as Dovecot does)."""
    enc = encoding.upper()
    if enc == "BASE64":
        return Base64Decoder()
    if enc == "QUOTED-PRINTABLE":
        return QuotedPrintableDecoder()
    return IdentityDecoder()


class IdentityDecoder:
    """RFC 2045 §6.2: 7bit, 8bit and binary are statements about the content, not encodings."""

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def decode_base64(data: bytes, *, chunk: int = DECODE_CHUNK) -> bytes:
    """RFC 2045 §6.8 base64 of a whole part (see Base64Decoder)."""
    decoder = Base64Decoder(chunk)
    return decoder.feed(data) + decoder.flush()


class Base64Decoder:
    """RFC 2045 §6.8 base64, leniently: characters outside the alphabet are skipped, the first "=" ends
    the data ("the occurrence of any '=' characters may be taken as evidence that the end of the data
    has been reached"), and a last quantum without its padding still gives its whole octets (two or
    three characters carry one or two octets; a lone sixth bit-group carries none)."""

    __slots__ = ("_carry", "_chunk", "_ended")

    def __init__(self, chunk: int = DECODE_CHUNK) -> None:
        self._chunk = chunk
        self._carry = b""  # fewer than 4 characters: an incomplete quantum
        self._ended = False  # an "=" was seen: what follows is not data

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        chunk = self._chunk
        for start in range(0, 0 if self._ended else len(data), chunk):
            clean = self._carry + data[start : start + chunk].translate(None, _NOT_BASE64)
            padding = clean.find(b"=")
            if padding >= 0:
                self._carry, self._ended = clean[:padding], True
                break
            whole = len(clean) - len(clean) % 4
            out.append(binascii.a2b_base64(clean[:whole]))
            self._carry = clean[whole:]
        return b"".join(out)

    def flush(self) -> bytes:
        carry, self._carry, self._ended = self._carry, b"", False
        rest = len(carry) % 4
        if rest == 1:
            carry = carry[:-1]
        elif rest:
            carry += b"=" * (4 - rest)
        return binascii.a2b_base64(carry)


def decode_quoted_printable(data: bytes, *, chunk: int = DECODE_CHUNK) -> bytes:
    """RFC 2045 §6.7 quoted-printable of a whole part (see QuotedPrintableDecoder)."""
    decoder = QuotedPrintableDecoder(chunk)
    return decoder.feed(data) + decoder.flush()


class QuotedPrintableDecoder:
    """RFC 2045 §6.7 quoted-printable.

    - "=XY" is the octet XY in hex; lower-case digits are accepted (note (1): "a robust implementation
      might choose to recognize them").
    - An "=" at the end of a line, white space after it allowed, is a soft line break and vanishes
      (rule 5); so does one at the very end of the data: the part's content ends before the CRLF of the
      boundary delimiter (RFC 2046 §5.1.1), which was that soft break's line end.
    - White space at the end of a line is deleted (rule 3: "it will necessarily have been added by
      intermediate transport agents").
    - An "=" followed by anything else is kept with the octet after it, both untransformed (notes (2)
      and (3)): "=ZZ" stays "=ZZ", "==41" stays "==41" (the kept octet starts no escape). Other octets,
      line ends (CRLF, or a bare LF) and control characters are kept as they are (note (4) allows
      removing them; keeping them loses nothing).

    Linear, and in C but for a few steps per chunk of about ``chunk`` octets (see
    ``_quoted_printable_cut``). In each chunk, each bad "=" is rewritten as "=3D", white space before
    line ends is removed, then ``binascii.a2b_qp`` removes soft line breaks, decodes "=XY" and keeps
    everything else.
    """

    __slots__ = ("_blank_scanned", "_chunk", "_rest", "_run")

    def __init__(self, chunk: int = DECODE_CHUNK) -> None:
        self._chunk = chunk
        self._rest = b""  # not decoded yet: what the next octets decide (see _decode)
        self._blank_scanned = 0  # of a run of blanks at the start of _rest, the octets known blank
        # A run of blanks (after an optional "=") that reached the end of the octets so far, in pieces:
        # joined once when its end arrives, so a long run is neither copied nor scanned per piece.
        self._run: list[bytes] = []

    def feed(self, data: bytes) -> bytes:
        if self._run:
            if not data.translate(None, b" \t"):
                self._run.append(data)
                self._blank_scanned += len(data)
                return b""
            self._rest = b"".join(self._run)
            self._run = []
        self._rest += data
        return self._decode(final=False)

    def flush(self) -> bytes:
        if self._run:
            self._rest = b"".join(self._run)
            self._run = []
        out = self._decode(final=True)
        self._rest, self._blank_scanned = b"", 0
        return out

    def _decode(self, *, final: bool) -> bytes:
        """Decode what the octets so far decide; the rest waits for more (all of it when `final`).

        A piece ends at a line end or where no escape, "==" pair or white space rule reaches across
        (`_quoted_printable_cut`); without more octets, only at the last line end, and fewer than
        `chunk` octets wait. A run of blanks waits until its end is seen (rule 3 depends on what follows
        it); it is scanned once, however many pieces it arrives in.
        """
        data, chunk = self._rest, self._chunk
        out: list[bytes] = []
        start, size = 0, len(data)
        scanned = 0  # of a run of blanks left waiting at `start`, the octets known blank
        while start < size:
            blanks = _leading_blanks(data, start, chunk, self._blank_scanned if start == 0 else 0, final)
            if blanks is not None:
                after, kept = blanks
                if kept is None:  # the run reaches the end of what we have
                    scanned = after - start
                    break
                out.append(kept)
                start = after
                continue
            end = _quoted_printable_cut(data, start, chunk)
            if end >= size and not final:
                end = data.rfind(b"\n", start) + 1
                if end <= start:
                    break  # no line end: fewer than `chunk` octets wait
            last = final and end >= size
            # Left to right, as a decoder reads: "==" is a bad "=" keeping the "=" after it, so runs of "="
            # pair from the left (what bytes.replace does: leftmost, non-overlapping); then any other bad
            # "=" is kept alone and the octet after it stays as it is. An "=" before a line end (blanks
            # between allowed; or at the very end) is a soft break, left for a2b_qp to remove. Blanks go
            # last: removing them first could join a kept "=" and CR to a LF ("=\r \n").
            piece = data[start:end].replace(b"==", b"=3D=3D")
            piece = (_QP_BAD_EQUALS_LAST if last else _QP_BAD_EQUALS).sub(b"=3D", piece)
            piece = (_QP_PADDING_LAST if last else _QP_PADDING).sub(b"", piece)
            out.append(binascii.a2b_qp(piece))
            start = end
        self._rest, self._blank_scanned = data[start:], scanned
        if scanned and scanned == size - start:  # all that waits is a run of blanks
            self._run, self._rest = [self._rest], b""
        return b"".join(out)


def _leading_blanks(
    data: bytes, start: int, chunk: int, scanned: int = 0, final: bool = True
) -> tuple[int, bytes | None] | None:
    """When the quoted-printable chunk at ``start`` begins with a run of blanks (or an "=" and one) that
    reaches past where the chunk would end: where the run ends and what it decodes to. Blanks before a
    line end or the end of the data are deleted (rule 3), with the "=" before them a soft break (rule 5)
    whose line end goes too; other blanks are kept, and so is the "=" (note 2). The run is scanned
    once, ``chunk`` octets per C call, from ``scanned`` octets after ``start`` (known blank already).
    A shorter run is left to the chunk (None). Not ``final`` (more octets may follow): a run that
    reaches the end of ``data``, or a CR at its end, is undecided: (its end so far, None)."""
    size = len(data)
    equals = data[start] == _EQUALS
    first = start + 1 if equals else start
    if first >= size or data[first] not in _BLANKS:
        return None
    step_end = start + max(chunk, 3)  # where _quoted_printable_cut would look first
    after = max(first, start + scanned)
    while True:
        run = _BLANK_RUN.match(data, after, max(step_end, after))
        assert run is not None  # the pattern matches the empty string
        after = run.end()
        if after < step_end or after >= size:
            break
        step_end = after + chunk
    if after >= size and not final:
        return after, None
    if after < start + max(chunk, 3) and after < size:
        return None
    if not final and data[after:] == b"\r":
        return after, None  # a CR LF split between pieces
    line_end = 1 if data[after : after + 1] == b"\n" else 2 if data[after : after + 2] == b"\r\n" else 0
    if line_end or after == size:
        return (after + line_end if equals else after), b""
    return after, data[start:after]


def _quoted_printable_cut(data: bytes, start: int, chunk: int) -> int:
    """Where the chunk of quoted-printable ``data`` that begins at ``start`` (where a decoder reading
    left to right starts afresh) ends, about ``chunk`` octets on, so that decoding chunk by chunk gives
    what decoding the whole would: after a line end when there is one, else at a point that no escape,
    "==" pair or white space rule reaches across."""
    cut = start + max(chunk, 3)
    size = len(data)
    if cut >= size:
        return size
    line_end = data.rfind(b"\n", start, cut)
    if line_end >= 0:
        return line_end + 1
    if data[cut - 1] == _CR and data[cut] == _LF:
        return cut + 1
    if data[cut - 1] in _BLANKS:
        # Whether blanks are deleted depends on what follows the whole run (rule 3): end the chunk before
        # the run (and before an "=" that starts a token just before it: "=" and blanks may be a soft
        # break); the next chunk starts with it, and ``_leading_blanks`` reads it whole, once.
        run_start = start + len(data[start:cut].rstrip(b" \t"))
        if run_start > start and data[run_start - 1] == _EQUALS:
            equals = run_start - start - len(data[start:run_start].rstrip(b"="))
            run_start -= equals % 2
        if run_start > start:
            return run_start
    # A run of "=" pairs from its first octet, a token start (no escape has "=" after its first octet),
    # and the chunk's start is a token start too: parity tells whether an "=" near the end starts a
    # token that may reach into the next chunk.
    equals = cut - start - len(data[start:cut].rstrip(b"="))
    if equals:
        return cut - equals % 2
    if data[cut - 2] == _EQUALS:
        equals = cut - 1 - start - len(data[start : cut - 1].rstrip(b"="))
        if equals % 2:
            return cut - 2  # "=X" may be "=XY", Y in the next chunk
    return cut


_CR, _LF, _EQUALS = ord("\r"), ord("\n"), ord("=")
_BLANKS = frozenset(b" \t")
_BLANK_RUN = re.compile(rb"[ \t]*+")
# Rule 3: blanks before a line end (or, in the last chunk, the end of the data). A match starts only at
# the first blank of a run (the lookbehind), and "*+" never gives octets back: each octet is looked at
# a bounded number of times, however long the run.
_QP_PADDING = re.compile(rb"[ \t](?<![ \t][ \t])[ \t]*+(?=\r?\n)")
_QP_PADDING_LAST = re.compile(rb"[ \t](?<![ \t][ \t])[ \t]*+(?=\r?\n|\Z)")
# An "=" that is neither an escape nor a soft break. The blanks the lookahead skips follow this "=" and
# end at the next octet that is not blank: each run is skipped for one "=" at most.
_QP_BAD_EQUALS = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*+\r?\n)")
_QP_BAD_EQUALS_LAST = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*+(?:\r?\n|\Z))")
