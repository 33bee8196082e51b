"""MessageInfo: what IMAP asks for again and again, computed once per message (ARCHITECTURE decision 5).

`compute_message_info` runs the MIME scanner (`surat.message.mime`) over a message and records the
RFC 9051 §7.5.2 ENVELOPE, the BODYSTRUCTURE tree with the byte offsets of every part, and decoded
(RFC 2047, Unicode) values of the fields SEARCH, SORT and THREAD need. `MessageInfo` is stored with
the message as JSON and decoded lazily.
"""

from __future__ import annotations

import calendar
import email.utils
import json
import re
from dataclasses import FrozenInstanceError
from typing import TYPE_CHECKING, Any, BinaryIO

from surat.message.address import Address
from surat.message.encoded_words import decode_encoded_words
from surat.message.headers import Header
from surat.message.mime import BodyPart, Envelope, envelope_of, scan_message

__all__ = ["MessageInfo", "compute_message_info"]

_JSON_VERSION = 1


_FIELDS = (
    "envelope",
    "body",
    "subject",
    "from_",
    "to",
    "cc",
    "bcc",
    "date",
    "message_id",
    "in_reply_to",
    "references",
)
# What ``to_json`` writes starts so; other texts (hand-written or damaged) are decoded and checked at once.
_JSON_PREFIX = f"[{_JSON_VERSION},["
_ENVELOPE_AT = len(_JSON_PREFIX) - 1
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class MessageInfo:
    """What IMAP needs of one message, computed once at delivery. Immutable, compared by value.

    ``from_json`` decodes lazily, and only the part of the text a field needs: a FETCH of FLAGS or of
    header fields never parses it, a FETCH ENVELOPE parses the envelope but not the body tree (most
    of the text, and most of the objects the garbage collector would then walk), a cached ENVELOPE
    nothing. The text is ``[version, envelope, body, subject, ..., references]``: ``envelope`` is
    decoded from its start, ``body`` after it, the decoded header values after that. Once decoded,
    a field is a plain slot read.
    """

    __slots__ = ("_text", "_after_envelope", "_after_body", *_FIELDS)

    envelope: Envelope
    body: BodyPart  # the whole message: header_start 0, end = size
    # Decoded values (RFC 2047 words decoded, whitespace unfolded) for SEARCH, SORT and THREAD.
    subject: str | None
    from_: str | None
    to: str | None
    cc: str | None
    bcc: str | None
    date: float | None  # Date: as a UTC timestamp
    message_id: str | None  # "<id>" form
    in_reply_to: str | None  # the first "<id>" of In-Reply-To
    references: tuple[str, ...]
    _text: str | None  # the JSON text of a lazily decoded instance
    _after_envelope: int  # offsets in _text just after the envelope and the body, -1 until known
    _after_body: int

    def __init__(
        self,
        envelope: Envelope,
        body: BodyPart,
        subject: str | None,
        from_: str | None,
        to: str | None,
        cc: str | None,
        bcc: str | None,
        date: float | None,
        message_id: str | None,
        in_reply_to: str | None,
        references: tuple[str, ...],
    ) -> None:
        values = (envelope, body, subject, from_, to, cc, bcc, date, message_id, in_reply_to, references)
        for name, value in zip(_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_text", None)

    @classmethod
    def _lazy(cls, text: str) -> MessageInfo:
        info = cls.__new__(cls)
        object.__setattr__(info, "_text", text)
        object.__setattr__(info, "_after_envelope", -1)
        object.__setattr__(info, "_after_body", -1)
        return info

    if not TYPE_CHECKING:  # hidden from mypy, so that a misspelt attribute stays an error

        def __getattr__(self, name: str) -> Any:
            # Called only for a slot not set yet: a field of a lazily decoded instance.
            if name not in _FIELDS or self._text is None:
                raise AttributeError(name)
            try:
                self._decode(name)
            except (IndexError, KeyError, TypeError) as exc:  # valid JSON, but not our layout
                raise ValueError("damaged MessageInfo encoding") from exc
            return object.__getattribute__(self, name)

    def _decode(self, name: str) -> None:
        # Safe if two threads decode the same instance: the text never changes, and each step sets
        # whole values (at worst both do the same work).
        setter = object.__setattr__
        text = self._text
        assert text is not None
        if name == "envelope":
            raw, end = _DECODER.raw_decode(text, _ENVELOPE_AT)
            setter(self, "envelope", _envelope_from_obj(raw))
            setter(self, "_after_envelope", end)
            return
        after_envelope = self._after_envelope
        if after_envelope < 0:
            after_envelope = _DECODER.raw_decode(text, _ENVELOPE_AT)[1]
            setter(self, "_after_envelope", after_envelope)
        after_body = self._after_body
        if name == "body" or after_body < 0:
            # Header values come after the body: decoding them decodes the body on the way.
            raw, after_body = _DECODER.raw_decode(text, _after_comma(text, after_envelope))
            setter(self, "body", _part_from_obj(raw))
            setter(self, "_after_body", after_body)
            if name == "body":
                return
        tail = json.loads("[" + text[_after_comma(text, after_body) :])
        if not isinstance(tail, list) or len(tail) != 9:
            raise ValueError("unknown MessageInfo encoding")
        for field, value in zip(_FIELDS[2:10], tail[:8], strict=True):
            setter(self, field, value)
        setter(self, "references", tuple(tail[8]))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, MessageInfo)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"MessageInfo({fields})"

    @property
    def size(self) -> int:
        return self.body.end

    def to_json(self) -> str:
        if self._text is not None:
            return self._text  # the text it was decoded from says it all
        obj = [
            _JSON_VERSION,
            _envelope_to_obj(self.envelope),
            _part_to_obj(self.body),
            self.subject,
            self.from_,
            self.to,
            self.cc,
            self.bcc,
            self.date,
            self.message_id,
            self.in_reply_to,
            list(self.references),
        ]
        # ensure_ascii keeps surrogate escapes (raw 8-bit header octets) representable.
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> MessageInfo:
        """Decode ``to_json`` output. Text in its usual form is decoded on first use of each field (a
        damaged one then raises ValueError from that use); any other form is decoded and checked here."""
        if text.startswith(_JSON_PREFIX):
            return cls._lazy(text)
        obj = json.loads(text)
        if not isinstance(obj, list) or len(obj) != 12 or obj[0] != _JSON_VERSION:
            raise ValueError("unknown MessageInfo encoding")
        return cls(
            envelope=_envelope_from_obj(obj[1]),
            body=_part_from_obj(obj[2]),
            subject=obj[3],
            from_=obj[4],
            to=obj[5],
            cc=obj[6],
            bcc=obj[7],
            date=obj[8],
            message_id=obj[9],
            in_reply_to=obj[10],
            references=tuple(obj[11]),
        )


def _after_comma(text: str, pos: int) -> int:
    """The offset of the JSON value that follows the comma at ``pos`` (whitespace allowed around it)."""
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    pos = match.end()
    if text[pos : pos + 1] != ",":
        raise ValueError("unknown MessageInfo encoding")
    match = _WHITESPACE.match(text, pos + 1)
    assert match is not None
    return match.end()


# ----------------------------------------------------------------------------------------- JSON


def _addresses_to_obj(addresses: tuple[Address, ...]) -> list[list[str | None]]:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def _addresses_from_obj(obj: list[list[str | None]]) -> tuple[Address, ...]:
    if not obj:
        return ()
    return tuple([Address(a[0], a[1], a[2], a[3]) for a in obj])


def _envelope_to_obj(env: Envelope) -> list[Any]:
    return [
        env.date,
        env.subject,
        _addresses_to_obj(env.from_),
        _addresses_to_obj(env.sender),
        _addresses_to_obj(env.reply_to),
        _addresses_to_obj(env.to),
        _addresses_to_obj(env.cc),
        _addresses_to_obj(env.bcc),
        env.in_reply_to,
        env.message_id,
    ]


def _envelope_from_obj(obj: list[Any]) -> Envelope:
    from_ = _addresses_from_obj(obj[2])
    # Sender and Reply-To are most often From's copies (RFC 9051 §7.5.2): one tuple serves all three.
    return Envelope(
        date=obj[0],
        subject=obj[1],
        from_=from_,
        sender=from_ if obj[3] == obj[2] else _addresses_from_obj(obj[3]),
        reply_to=from_ if obj[4] == obj[2] else _addresses_from_obj(obj[4]),
        to=_addresses_from_obj(obj[5]),
        cc=_addresses_from_obj(obj[6]),
        bcc=_addresses_from_obj(obj[7]),
        in_reply_to=obj[8],
        message_id=obj[9],
    )


def _part_to_obj(part: BodyPart) -> list[Any]:
    return [
        part.type,
        part.subtype,
        [list(p) for p in part.params],
        part.id,
        part.description,
        part.encoding,
        part.size,
        part.lines,
        part.disposition,
        [list(p) for p in part.disposition_params],
        list(part.language),
        part.location,
        part.header_start,
        part.body_start,
        part.end,
        [_part_to_obj(p) for p in part.parts],
        _envelope_to_obj(part.envelope) if part.envelope is not None else None,
        _part_to_obj(part.message) if part.message is not None else None,
    ]


def _pairs_from_obj(obj: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple([(p[0], p[1]) for p in obj]) if obj else ()


def _part_from_obj(obj: list[Any]) -> BodyPart:
    # Positional and with fast paths for the usual empty lists: FETCH BODYSTRUCTURE of a whole
    # mailbox decodes one of these per part.
    return BodyPart(
        obj[0],
        obj[1],
        _pairs_from_obj(obj[2]),
        obj[3],
        obj[4],
        obj[5],
        obj[6],
        obj[7],
        obj[8],
        _pairs_from_obj(obj[9]),
        tuple(obj[10]) if obj[10] else (),
        obj[11],
        obj[12],
        obj[13],
        obj[14],
        tuple([_part_from_obj(p) for p in obj[15]]) if obj[15] else (),
        _envelope_from_obj(obj[16]) if obj[16] is not None else None,
        _part_from_obj(obj[17]) if obj[17] is not None else None,
    )


# ----------------------------------------------------------------------------------------- decoding


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        # Unlabelled 8-bit header octets that are not UTF-8: most often Latin-1 or CP1252.
        return value.decode("cp1252", "replace")


def _decoded(value: bytes | None) -> str | None:
    """RFC 2047 encoded words decoded (RFC 6532: raw UTF-8 accepted), whitespace unfolded."""
    if value is None:
        return None
    text = _text(value)
    if "=?" in text:
        text = " ".join(decode_encoded_words(text).split())
    return text


_MSGID = re.compile(r"<[^<>\s]*>")


def _first_msgid(value: bytes | None) -> str | None:
    if value is None:
        return None
    found = _MSGID.search(_text(value))
    return found.group(0) if found else None


def _timestamp(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        # RFC 5322 §3.3: "-0000" (parsed as None) means UTC with no local information.
        return float(calendar.timegm((*parsed[:6], 0, 1, -1)) - (parsed[9] or 0))
    except (TypeError, ValueError, OverflowError):
        return None


def compute_message_info(file: BinaryIO, header: Header | None = None) -> MessageInfo:
    """Scan a message from the file's current position (offsets count from there).

    `header`: the message's header section, read already (see `scan_message`); the result is the same
    with or without it, only cheaper with it."""
    body, first = scan_message(file, header)
    return MessageInfo(
        envelope=envelope_of(first),
        body=body,
        subject=_decoded(first.get("subject")),
        from_=_decoded(first.get("from")),
        to=_decoded(first.get("to")),
        cc=_decoded(first.get("cc")),
        bcc=_decoded(first.get("bcc")),
        date=_timestamp(first.get("date")),
        message_id=_first_msgid(first.get("message-id")),
        in_reply_to=_first_msgid(first.get("in-reply-to")),
        references=tuple(_MSGID.findall(_text(first.get("references") or b""))),
    )
