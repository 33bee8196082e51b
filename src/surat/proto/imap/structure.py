"""ENVELOPE and BODY/BODYSTRUCTURE serialisation (RFC 9051 §7.5.2) from precomputed message data.

The data comes from ``surat.message`` (Envelope, Address, BodyPart), which this sans-IO layer
may not import; the Protocols below name exactly the attributes used, and those classes satisfy them.
Raw header text arrives as ``str`` decoded with ``surrogateescape``; it is written back as the original
octets (a literal when they are not valid UTF-8 or the client does not accept UTF-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from surat.proto.imap.writer import NIL, nstring, paren, string

__all__ = ["AddressData", "BodyPartData", "EnvelopeData", "body_structure", "envelope"]


class AddressData(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def adl(self) -> str | None: ...
    @property
    def mailbox(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...


class EnvelopeData(Protocol):
    @property
    def date(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def from_(self) -> Sequence[AddressData]: ...
    @property
    def sender(self) -> Sequence[AddressData]: ...
    @property
    def reply_to(self) -> Sequence[AddressData]: ...
    @property
    def to(self) -> Sequence[AddressData]: ...
    @property
    def cc(self) -> Sequence[AddressData]: ...
    @property
    def bcc(self) -> Sequence[AddressData]: ...
    @property
    def in_reply_to(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...


class BodyPartData(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def subtype(self) -> str: ...
    @property
    def params(self) -> Sequence[tuple[str, str]]: ...
    @property
    def id(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def encoding(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def lines(self) -> int: ...
    @property
    def disposition(self) -> str | None: ...
    @property
    def disposition_params(self) -> Sequence[tuple[str, str]]: ...
    @property
    def language(self) -> Sequence[str]: ...
    @property
    def location(self) -> str | None: ...
    @property
    def md5(self) -> str | None: ...
    @property
    def parts(self) -> Sequence[BodyPartData]: ...
    @property
    def envelope(self) -> EnvelopeData | None: ...
    @property
    def message(self) -> BodyPartData | None: ...


def _address(a: AddressData, utf8: bool) -> bytes:
    # RFC 9051 §9 address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
    return b"(%b %b %b %b)" % (
        nstring(a.name, utf8=utf8),
        nstring(a.adl, utf8=utf8),
        nstring(a.mailbox, utf8=utf8),
        nstring(a.host, utf8=utf8),
    )


def _addresses(addrs: Sequence[AddressData], utf8: bool) -> bytes:
    # RFC 9051 §9 env-from etc. = "(" 1*address ")" / nil: addresses follow each other without SP.
    if not addrs:
        return NIL
    return b"(" + b"".join([_address(a, utf8) for a in addrs]) + b")"


def envelope(env: EnvelopeData, *, utf8: bool = False) -> bytes:
    """RFC 9051 §9 envelope: date subject from sender reply-to to cc bcc in-reply-to message-id."""
    from_ = _addresses(env.from_, utf8)
    # Sender and Reply-To default to From (RFC 9051 §7.5.2); the store then shares one sequence.
    sender = from_ if env.sender is env.from_ else _addresses(env.sender, utf8)
    reply_to = from_ if env.reply_to is env.from_ else _addresses(env.reply_to, utf8)
    return b"(%b %b %b %b %b %b %b %b %b %b)" % (
        nstring(env.date, utf8=utf8),
        nstring(env.subject, utf8=utf8),
        from_,
        sender,
        reply_to,
        _addresses(env.to, utf8),
        _addresses(env.cc, utf8),
        _addresses(env.bcc, utf8),
        nstring(env.in_reply_to, utf8=utf8),
        nstring(env.message_id, utf8=utf8),
    )


def _params(params: Sequence[tuple[str, str]], utf8: bool) -> bytes:
    # RFC 9051 §9 body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    if not params:
        return NIL
    items: list[bytes] = []
    for key, value in params:
        items.append(string(key, utf8=utf8))
        items.append(string(value, utf8=utf8))
    return paren(items)


def _disposition(part: BodyPartData, utf8: bool) -> bytes:
    # body-fld-dsp = "(" string SP body-fld-param ")" / nil
    if part.disposition is None:
        return NIL
    return paren((string(part.disposition, utf8=utf8), _params(part.disposition_params, utf8)))


def _language(part: BodyPartData, utf8: bool) -> bytes:
    # body-fld-lang = nstring / "(" string *(SP string) ")"
    langs = part.language
    if not langs:
        return NIL
    if len(langs) == 1:
        return string(langs[0], utf8=utf8)
    return paren(string(x, utf8=utf8) for x in langs)


def _extension(part: BodyPartData, first: bytes, utf8: bool) -> bytes:
    # body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]
    # body-ext-mpart = body-fld-param [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]
    disposition = NIL if part.disposition is None else _disposition(part, utf8)
    language = NIL if not part.language else _language(part, utf8)
    location = NIL if part.location is None else string(part.location, utf8=utf8)
    return b"%b %b %b %b" % (first, disposition, language, location)


_UNKNOWN_ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
_EMPTY_TEXT_BODY = b'("text" "plain" NIL NIL NIL "7bit" 0 0)'


def body_structure(part: BodyPartData, *, extensible: bool = True, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY (without extension data), RFC 9051 §7.5.2 / §9 body."""
    kind = part.type.lower()
    if kind == "multipart":
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]; bodies follow without SP.
        children = b"".join([body_structure(p, extensible=extensible, utf8=utf8) for p in part.parts])
        if not children:
            # The grammar requires at least one part; show an empty multipart as one empty text part.
            children = _EMPTY_TEXT_BODY
        out = children + b" " + string(part.subtype, utf8=utf8)
        if extensible:
            out += b" " + _extension(part, _params(part.params, utf8), utf8)
        return b"(" + out + b")"
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
    out = b"(%b %b %b %b %b %b %d" % (
        string(part.type, utf8=utf8),
        string(part.subtype, utf8=utf8),
        _params(part.params, utf8),
        nstring(part.id, utf8=utf8),
        nstring(part.description, utf8=utf8),
        string(part.encoding, utf8=utf8),
        part.size,
    )
    if kind == "text":
        # body-type-text = media-text SP body-fields SP body-fld-lines
        out += b" %d" % part.lines
    elif kind == "message" and part.subtype.lower() in ("rfc822", "global"):
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        if part.envelope is not None and part.message is not None:
            inner_envelope = envelope(part.envelope, utf8=utf8)
            inner = body_structure(part.message, extensible=extensible, utf8=utf8)
        else:
            # Not scanned (an encoded message/rfc822, which RFC 2046 §5.2.1 forbids, or one nested
            # beyond the scanner's depth): the grammar still needs an envelope and a body, so that
            # clients parse the rest of the structure; an empty envelope and an empty text body say
            # nothing false.
            inner_envelope, inner = _UNKNOWN_ENVELOPE, _EMPTY_TEXT_BODY
        out += b" %b %b %d" % (inner_envelope, inner, part.lines)
    if extensible:
        out += b" " + _extension(part, nstring(part.md5, utf8=utf8), utf8)
    return out + b")"
