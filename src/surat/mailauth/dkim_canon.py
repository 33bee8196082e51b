"""DKIM's view of a message (RFC 6376 §3.4, §3.7): header fields split once, the canonical forms, the hash.

Shared by the verifier (`surat.mailauth.dkim_verify`) and the signer (`surat.delivery.dkim`), so what we
sign is hashed by the very code that checks signatures (and ARC sealing will use it too). Written for
speed: substring searches at C speed rather than a Python step per line, and regexes only where the
cheap test says there is something to change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from surat.message.headers import Header, read_header


class MessageFormatError(ValueError):
    """The header section cannot be split into fields."""


_LINE_END = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A message split once, for DKIM, ARC and DMARC to share.

    `fields` are (name as written, value after the colon up to and including its final CRLF, folding kept),
    top first; `body` is everything after the blank line. Bare LF line ends are read as CRLF, as they would
    be in transit (RFC 6376 §5.3).
    """

    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes
    names: tuple[bytes, ...] = ()  # the field names lower-cased, for matching (RFC 5322 names are caseless)

    def values(self, name: bytes) -> list[bytes]:
        """The values of every field called `name` (lower case), top first."""
        return [value for (_, value), lower in zip(self.fields, self.names, strict=True) if lower == name]

    def has(self, name: bytes) -> bool:
        return name in self.names


def parse_message(message: bytes, *, crlf_only: bool = False, header: Header | None = None) -> ParsedMessage:
    """Split `message` into header fields and body; MessageFormatError for a line that is neither.

    The fields are read by `surat.message.headers`, the reader every other part of Surat uses, so DKIM
    signs and checks the very fields that IMAP shows and submission checked (issue 11 item 7). A header
    section longer than that reader's bound (MAX_HEADER_SECTION) is a MessageFormatError too.

    `crlf_only` says the caller knows every line ends in CRLF (our SMTP engine normalises line ends), which
    spares two scans of the whole message looking for bare LFs. With it, `header` may be the message's
    header section as `read_header` read it already (the end of DATA reads it once and hands it on),
    and it is not read again.
    """
    if header is None or not crlf_only:
        if not crlf_only and message.count(b"\n") != message.count(b"\r\n"):
            message = _LINE_END.sub(b"\r\n", message)
        header = read_header(message, crlf_only=True)  # every line ends in CRLF now
    if header.defect is not None:
        raise MessageFormatError(header.defect)
    return ParsedMessage(
        tuple(zip(header.names, [raw + b"\r\n" for raw in header.raws], strict=True)),
        message[header.body_start :],
        header.keys,
    )


# Runs of WSP that "reduce to a single SP" changes: a lone SP is left alone, so ordinary text has no matches.
_WSP_RUN = re.compile(rb"[ \t]*\t[ \t]*|  +")
# RFC 6376 §3.7: the b= tag's value, with all whitespace around it, counts as empty in the signed header
_B_VALUE = re.compile(rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*")


def relaxed_field(name: bytes, value: bytes) -> bytes:
    """One field in relaxed form, CRLF-terminated; `value` is as `ParsedMessage.fields` holds it."""
    # RFC 6376 §3.4.2: lower-case name, unfold, runs of WSP to one SP, none around the value or colon
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.rstrip().lower() + b":" + value.strip() + b"\r\n"


def _strip_line_ends(body: bytes) -> bytes:
    """`body` without the WSP before each CRLF (RFC 6376 §3.4.4 a).

    Only the lines that end in WSP are touched (usually none or one): two substring searches at C speed,
    not a Python step per line nor a regex that tries a match at every space of the body.
    """
    space = body.find(b" \r\n")
    tab = body.find(b"\t\r\n") if b"\t" in body else -1  # a one-octet search is several times faster
    if space < 0 and tab < 0:
        return body
    parts: list[bytes] = []
    start = 0
    while space >= 0 or tab >= 0:
        hit = tab if space < 0 or 0 <= tab < space else space
        parts.append(body[start:hit].rstrip(b" \t"))
        start = hit + 1  # the CRLF starts the next part
        if hit == space:
            space = body.find(b" \r\n", start)
        else:
            tab = body.find(b"\t\r\n", start)
    parts.append(body[start:])
    return b"".join(parts)


def canonical_body(body: bytes, relaxed: bool) -> bytes:
    """RFC 6376 §3.4.3 (simple) and §3.4.4 (relaxed) body canonicalization of a CRLF body."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # §3.4.3/§3.4.4: a non-empty body gets its missing final CRLF
    if relaxed:
        # the substring tests run at C speed and spare the regex scans on ordinary text
        body = _strip_line_ends(body)
        if b"\t" in body or b"  " in body:
            body = _WSP_RUN.sub(b" ", body)
    end = len(body)
    while end >= 4 and body[end - 4 : end] == b"\r\n\r\n":
        end -= 2  # empty lines at the end are ignored
    body = body[:end]
    if relaxed:
        return b"" if body == b"\r\n" else body  # RFC 6376 erratum 1384: an empty body stays empty
    return body or b"\r\n"  # §3.4.3: an empty body is a single CRLF


def selected_fields(parsed: ParsedMessage, signed: Iterable[bytes], relaxed: bool) -> bytes:
    """RFC 6376 §3.7 step 2 (and §5.4.2): the fields named in h=, canonicalized, in h= order.

    Each name takes the lowest not yet used field of that name (fields are taken from the bottom up);
    a name listed more often than it occurs adds nothing, which signs the absence of another such
    field (RFC 6376 §8.15, oversigning). Names are lower case.
    """
    header_fields = parsed.fields
    names = parsed.names
    below: dict[bytes, int] = {}
    parts: list[bytes] = []
    for name in signed:
        index = below.get(name, len(header_fields))
        while index > 0:
            index -= 1
            if names[index] == name:
                field_name, value = header_fields[index]
                parts.append(relaxed_field(field_name, value) if relaxed else field_name + b":" + value)
                break
        below[name] = index
    return b"".join(parts)


def signature_field_data(signature: tuple[bytes, bytes], relaxed: bool) -> bytes:
    """RFC 6376 §3.7 step 2, last part: the DKIM-Signature field itself, b= empty, without its final CRLF."""
    sig_name, sig_value = signature
    blanked = without_b_value(sig_value)
    if relaxed:
        return relaxed_field(sig_name, blanked).removesuffix(b"\r\n")
    return sig_name + b":" + blanked.removesuffix(b"\r\n")


def signed_header_data(
    parsed: ParsedMessage, signature: tuple[bytes, bytes], signed: Iterable[bytes], relaxed: bool
) -> bytes:
    """RFC 6376 §3.7 step 2: what the signature's hash covers besides the body."""
    return selected_fields(parsed, signed, relaxed) + signature_field_data(signature, relaxed)


def without_b_value(value: bytes) -> bytes:
    """The DKIM-Signature value with b='s value (and the whitespace around it) removed (RFC 6376 §3.7)."""
    # Fast path: a "b=" whose tag starts the list or follows ";" and optional whitespace. The regex
    # below tries a match at every position of the value, several times slower than these searches.
    pos = value.find(b"b=")
    while pos >= 0:
        before = pos - 1
        while before >= 0 and value[before] in _WSP_OCTETS:
            before -= 1
        if before < 0 or value[before] == _SEMICOLON:
            end = value.find(b";", pos)
            return value[: pos + 2] + (value[end:] if end >= 0 else b"")
        pos = value.find(b"b=", pos + 2)
    match = _B_VALUE.search(value)  # "b =" with whitespace before the "=", or no b= at all
    # slicing rather than re.sub with a group reference, whose template expansion costs more than the search
    return value[: match.end(1)] + value[match.end() :] if match is not None else value


_WSP_OCTETS = frozenset(b" \t\r\n")
_SEMICOLON = ord(";")

_GIL_CHUNK = 2047  # hashlib lets go of the GIL for updates of 2048 bytes and more


def sha256_digest(data: bytes) -> bytes:
    """SHA-256 of `data`, in updates small enough to keep the GIL.

    Handing the GIL to the store's threads for a few microseconds of hashing costs far more than the
    hashing (the event loop waits to get it back); only a large message is worth the release.
    """
    if len(data) > 256 * 1024 or len(data) <= _GIL_CHUNK:
        return hashlib.sha256(data).digest()  # small data keeps the GIL anyway: one call, no slicing
    digest = hashlib.sha256()
    view = memoryview(data)
    for start in range(0, len(data), _GIL_CHUNK):
        digest.update(view[start : start + _GIL_CHUNK])
    return digest.digest()
