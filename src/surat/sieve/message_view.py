"""What a script can see of one message: header fields, envelope, size, body text and dates.

Built on the message package (one header reader, one address parser, one MIME scanner, RFC 2047
decoding): nothing here splits header fields or addresses itself. The MIME scan runs only when a
`body` test asks for it, once per message.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from surat.message.address import GROUP_END, MISSING_DOMAIN, MISSING_MAILBOX, parse_address_list
from surat.message.encoded_words import decode_encoded_words
from surat.message.headers import Header, read_header
from surat.message.mime import BodyPart, scan_message
from surat.message.transfer import UnknownEncoding, decode_transfer_encoding
from surat.sieve.limits import MAX_BODY_TEXT

__all__ = ["MessageContext", "MessageView"]


@dataclass(frozen=True, slots=True)
class MessageContext:
    """The input of one run: the message as received and its envelope (RFC 5228 §5.4).

    `envelope_from` is "" for the null reverse-path <>; `now` must be timezone-aware (the `date` and
    `currentdate` tests use its zone as the local one, RFC 5260 §4.1). `header` may be handed on from
    the end of DATA so the header section is not read twice."""

    message: bytes
    envelope_from: str
    envelope_to: str
    now: datetime
    header: Header | None = None


@dataclass(slots=True)
class MessageView:
    context: MessageContext
    header: Header = field(init=False)
    _body_parts: list[tuple[str, str, str]] | None = None  # (type, subtype, decoded text) of leaves
    # Scripts test the same few fields again and again (Subject, From): each is decoded once per message.
    # Callers never change the lists handed out.
    _decoded: dict[str, list[str]] = field(default_factory=dict)
    _addresses: dict[bytes, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.header = self.context.header or read_header(self.context.message)

    @property
    def size(self) -> int:
        return len(self.context.message)

    def has_field(self, name: str) -> bool:
        return name.lower().encode("utf-8", "surrogateescape") in self.header.keys

    def raw_values(self, name: str) -> list[bytes]:
        """Unfolded values of the fields called `name`, top first."""
        return self.header.values(name.lower().encode("utf-8", "surrogateescape"))

    def decoded_values(self, name: str) -> list[str]:
        """RFC 5228 §2.7.2: header values compared after RFC 2047 decoding, as UTF-8 text."""
        key = name.lower()
        if key not in self._decoded:
            values = self.raw_values(key)
            self._decoded[key] = [decode_encoded_words(value.decode("utf-8", "replace")) for value in values]
        return self._decoded[key]

    def addresses(self, value: bytes) -> list[tuple[str, str]]:
        if value not in self._addresses:
            self._addresses[value] = _parse_addresses(value)
        return self._addresses[value]

    def body_raw(self) -> str:
        """RFC 5173 §5.1 :raw: the body as it is, undecoded (bounded by MAX_BODY_TEXT)."""
        body = self.context.message[self.header.body_start :]
        return body[:MAX_BODY_TEXT].decode("utf-8", "replace")

    def body_parts(self) -> list[tuple[str, str, str]]:
        if self._body_parts is None:
            root, _first = scan_message(io.BytesIO(self.context.message))
            self._body_parts = [(p.type, p.subtype, self._text(p)) for p in _leaves(root)]
        return self._body_parts

    def _text(self, part: BodyPart) -> str:
        """RFC 5173 §5.2: a part's body, transfer-decoded and converted from its charset."""
        data = self.context.message[part.body_start : part.end]
        with contextlib.suppress(UnknownEncoding):  # an unknown encoding: compared as it is
            data = decode_transfer_encoding(data, part.encoding)
        charset = dict(part.params).get("charset", "utf-8")
        try:
            text = data.decode(charset, "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        return text[:MAX_BODY_TEXT]


def _parse_addresses(value: bytes) -> list[tuple[str, str]]:
    """(local part, domain) of each address in an address-list value; groups are opened, and a
    missing local part or domain is "" (RFC 5228 §5.1 lets such addresses match only :all)."""
    out: list[tuple[str, str]] = []
    for address in parse_address_list(value):
        if address.host is None or address == GROUP_END:
            continue  # a group's start or end: not an address
        local = "" if address.mailbox in (None, MISSING_MAILBOX) else str(address.mailbox)
        domain = "" if address.host == MISSING_DOMAIN else address.host
        out.append((local, domain))
    return out


def _leaves(part: BodyPart) -> Iterator[BodyPart]:
    """Leaf parts in order; an attached message (message/rfc822) is entered (RFC 5173 §5.2)."""
    if part.is_multipart:
        for child in part.parts:
            yield from _leaves(child)
    elif part.message is not None:
        yield from _leaves(part.message)
    else:
        yield part
