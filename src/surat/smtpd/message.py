"""A message being received: streamed to the store's staging, with the trace headers in front.

The staged blob is what `Store.deliver` takes over: `Return-Path:` (local copies only), our `Received:`,
for submission any `Date:`/`Message-ID:` we add (RFC 6409 §8), then the message as received. The
header section is held in memory (bounded) until its end, so the additions can be decided before
anything is written and the message is never copied; the body goes straight to the staged blob.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import secrets
from datetime import datetime

from surat.message.headers import MAX_HEADER_SECTION, Header, read_header, with_fields_above
from surat.message.info import MessageInfo, compute_message_info
from surat.proto.smtp.address import header_safe
from surat.store.base import BlobStore, StagedBlob


def _clean(text: str) -> str:
    """Client-supplied text in a header comment: printable, no parentheses or line breaks."""
    return "".join(c if c.isprintable() and c not in "()\\" else "?" for c in text)[:255]


def return_path(sender: str) -> bytes:
    """RFC 5321 §4.4: the final delivery adds Return-Path with the envelope sender.

    Raises UnsafeText for a control character: a CR in the sender would start a forged field above
    our Authentication-Results (issue 11 item 6; the engine refuses such commands already).
    """
    return f"Return-Path: <{header_safe(sender, 'Return-Path')}>\r\n".encode()


def received_header(
    *,
    helo: str,
    peer_ip: str,
    hostname: str,
    protocol: str,
    transaction_id: str,
    tls: tuple[str, str] | None,
    auth_user: str | None,
    recipient: str | None,
    when: datetime,
) -> bytes:
    """RFC 5321 §4.4 Received: trace header (protocol names from RFC 3848 / RFC 6531 §3.7.3)."""
    lines = [f"Received: from {_clean(helo)} ([{peer_ip}])"]
    lines.append(f"\tby {hostname} (Surat) with {protocol} id {transaction_id}")
    if tls is not None:
        lines.append(f"\t(version={_clean(tls[0])} cipher={_clean(tls[1])})")
    if auth_user is not None:
        lines.append(f"\t(authenticated as {_clean(auth_user)})")
    if recipient is not None:
        lines.append(f"\tfor <{header_safe(recipient, 'Received')}>")
    lines[-1] += ";"
    lines.append(f"\t{email.utils.format_datetime(when)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def protocol_name(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    if not extended:
        return "SMTP"
    suffix = ("S" if tls else "") + ("A" if authenticated else "")
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + suffix


class Spool:
    """The spool of one message. Not thread-safe; one per transaction.

    Messages up to MEMORY_LIMIT stay in memory and reach the store as bytes: the store's writer
    thread then writes the message once, and the event loop makes no file system calls for it
    (measured: those calls, waiting on the GIL, were the largest cost of an accepted message).
    A larger message moves to a blob staged in the store (`BlobStore.stage()`) as soon as it
    outgrows the limit, so that no whole large message is held in memory.
    """

    MEMORY_LIMIT = 1024 * 1024

    def __init__(self, blobs: BlobStore, prefix: bytes, *, add_missing_for: str | None = None) -> None:
        """`add_missing_for`: the host name for Message-ID if Date/Message-ID may be added (submission)."""
        self._blobs = blobs
        self.staged: StagedBlob | None = None  # once the message outgrew memory
        self._memory: bytearray | None = bytearray()
        self._prefix = prefix
        self._add_for = add_missing_for
        self._held: bytearray | None = bytearray()  # header section until its end, then None
        # The header section of the message as received, read once by surat.message at its end and
        # handed on (From check, DKIM, MessageInfo); None when it outgrew MAX_HEADER_SECTION.
        self.header: Header | None = None
        self._additions = b""  # the fields we added below the prefix (submission: Date, Message-ID)
        self.size = 0
        self.added: list[str] = []  # names of the header fields we added

    @property
    def content(self) -> bytes | None:
        """The whole message when it stayed in memory (after finish())."""
        return bytes(self._memory) if self._memory is not None else None

    async def write(self, chunk: bytes) -> None:
        if self._held is None:
            await self._put(chunk)
            return
        held = self._held
        start = max(0, len(held) - 3)
        held += chunk
        if held.startswith(b"\r\n"):
            end = 0  # no header section at all
        else:
            found = held.find(b"\r\n\r\n", start)
            end = found + 2 if found >= 0 else -1  # the empty line starts at `end`
        if end >= 0:
            await self._release(end + 2)
        elif len(held) > MAX_HEADER_SECTION:
            self._held = None
            await self._put(self._prefix)
            await self._put(bytes(held))

    async def _release(self, end: int) -> None:
        """The header section is held[:end] (with its empty line, if any): parse it, write prefix,
        additions, the rest."""
        held = self._held
        assert held is not None
        self._held = None
        additions = b""
        # Read once, by the reader every other part of Surat uses, so that all see the same fields (issue
        # 11 item 7), and handed on: submission's From check, DKIM, the MessageInfo (issue 11 item 7).
        self.header = read_header(bytes(held[:end]), crlf_only=True)  # the engine sends CRLF lines
        if self._add_for is not None:
            # RFC 6409 §8.3 (Date) and §8.3 (Message-ID): the MSA may add what the client left out.
            if self.header.first(b"date") is None:
                additions += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
                self.added.append("Date")
            if self.header.first(b"message-id") is None:
                message_id = f"<{secrets.token_hex(16)}@{self._add_for}>"
                additions += f"Message-ID: {message_id}\r\n".encode()
                self.added.append("Message-ID")
        self._additions = additions
        await self._put(self._prefix + additions)
        await self._put(bytes(held))

    async def _put(self, data: bytes) -> None:
        self.size += len(data)
        if self._memory is not None:
            self._memory += data
            if len(self._memory) <= self.MEMORY_LIMIT:
                return
            data, self._memory = bytes(self._memory), None
            self.staged = self._blobs.stage()
        assert self.staged is not None
        await self.staged.write(data)

    async def finish(self) -> None:
        """All text received: write what is held (a message with no body)."""
        if self._held is not None:
            await self._release(len(self._held))

    async def message(self) -> bytes:
        """The message as the client sent it, without our prefix (after finish())."""
        skip = len(self._prefix)
        if self._memory is not None:
            with memoryview(self._memory) as view:
                return bytes(view[skip:])  # one copy; slicing the bytearray first would make two
        assert self.staged is not None
        return await self.staged.read(skip)

    def sent_header(self) -> Header | None:
        """The header section of `message()` (ours added below the prefix, then the client's), from
        the one read at the end of DATA; None when it must be read from the bytes."""
        if self.header is None or not self._additions:
            return self.header
        return with_fields_above(self._additions, self.header)

    def stored_header(self) -> Header | None:
        """The header section of the whole content (our prefix first); None: read it from the bytes."""
        sent = self.sent_header()
        return with_fields_above(self._prefix, sent) if sent is not None else None

    async def message_info(self) -> MessageInfo:
        """The MessageInfo of the content, as the store keeps it, without reading the header again
        (after finish()).

        In memory the scan runs here, bounded by MEMORY_LIMIT octets (linear: about a millisecond per
        MiB). A staged message is read back through the blob (bounded by the message size limit, as
        the DKIM/DMARC checks read it) and scanned in a thread, so that no message a client sends
        holds the event loop."""
        header = self.stored_header()
        if self._memory is not None:
            return compute_message_info(io.BytesIO(self._memory), header)
        assert self.staged is not None
        content = await self.staged.read()
        return await asyncio.to_thread(compute_message_info, io.BytesIO(content), header)

    async def stored(self) -> bytes:
        """The whole content as the store will keep it, our prefix first (after finish()); a staged
        message is read back, bounded by the message size limit as `message()` is."""
        if self._memory is not None:
            return bytes(self._memory)
        assert self.staged is not None
        return await self.staged.read()

    async def add_trace_fields(self, fields: bytes) -> None:
        """Put `fields` (whole lines) right below the Return-Path, above our Received: e.g. the
        Delivered-To of an account that forwards the message (loop prevention)."""
        end = self._prefix.index(b"\r\n") + 2  # the prefix starts with the Return-Path line
        message = await self.message()  # with any fields added below the prefix (submission)
        await self.rewrite(self._prefix[:end] + fields + self._prefix[end:], message, self.sent_header())

    async def rewrite(self, prefix: bytes, message: bytes, header: Header | None = None) -> None:
        """Replace the content with `prefix` + `message` (after finish(); MX only, where no header
        field is added after the prefix). `header`: the header section of `message`, or None if it is
        not known (then `message_info` reads it)."""
        if self._memory is not None:
            self._memory = bytearray(prefix)
            self._memory += message  # one copy of the message, not two
        else:
            assert self.staged is not None
            self.staged.abort()  # staged blobs only grow: stage the new content afresh
            self.staged = self._blobs.stage()
            await self.staged.write(prefix)
            await self.staged.write(message)
        self._prefix = prefix
        self._additions = b""
        self.header = header
        self.size = len(prefix) + len(message)

    def discard(self) -> None:
        self._memory = None
        if self.staged is not None:
            self.staged.abort()
            self.staged = None
