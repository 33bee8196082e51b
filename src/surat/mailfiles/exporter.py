"""`surat export`: every mailbox of an account into a Maildir++ tree or mbox files, flags included.

Maildir (the default): the tree Dovecot reads (maildir.py). INBOX is the root's cur/, mailbox "A/B" the
folder ".A.B"; each message is `cur/<internal date, epoch seconds>.<uid>.<host>:2,<letters>`, its
modification time the internal date (Dovecot and `surat import` read the received date from it), and
each folder's `dovecot-keywords` numbers its first 26 keywords (more cannot be written as letters:
reported). Lines end in LF, as Maildir files usually do (Dovecot and mutt read either).

mbox: one mboxrd file per mailbox, "A/B" as `A/B.mbox`; each message's separator carries its
internal date (UTC, RFC 4155), and its flags are put on top of its header as mutt and Dovecot read
them: `Status: RO` (R: \\Seen; O: not new), `X-Status:` (A answered, F flagged, T draft, D deleted)
and `X-Keywords:` (keywords, by spaces). `surat import` reads these back and does not store them.

Bodies are streamed from the store (BlobReader.stream) a chunk at a time, cut into lines of at most
LINE_BOUND octets: memory stays flat whatever the size of the mailbox or of a message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from surat.mailfiles import maildir
from surat.mailfiles.mbox import LINE_BOUND, is_escaped_from, separator_line
from surat.store.base import Account, Mailbox, MessageSummary, NotFound, Store

FORMATS = ("maildir", "mbox")
_X_STATUS = (("\\Answered", "A"), ("\\Flagged", "F"), ("\\Draft", "T"), ("\\Deleted", "D"))


@dataclass(slots=True)
class ExportSummary:
    mailboxes: int = 0
    messages: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


async def _lines(store: Store, blob_id: str) -> AsyncIterator[bytes]:
    """The stored message's lines with LF line ends, each at most LINE_BOUND octets (a longer line
    comes in pieces; a CR is never cut from its LF)."""
    reader = await store.blobs.open(blob_id)
    try:
        pending = b""
        async for chunk in reader.stream():
            pending += chunk
            start = 0
            while True:
                end = pending.find(b"\n", start, start + LINE_BOUND)
                if end < 0:
                    if len(pending) - start < LINE_BOUND:
                        break
                    end = start + LINE_BOUND - 1
                    if pending[end : end + 1] == b"\r":
                        end -= 1  # keep a CR with its LF, which the next chunk brings
                line = pending[start : end + 1]
                yield line[:-2] + b"\n" if line.endswith(b"\r\n") else line
                start = end + 1
            pending = pending[start:]
        if pending:
            yield pending
    finally:
        reader.close()


def _message_list(
    summaries: list[MessageSummary], blob_ids: dict[int, str]
) -> list[tuple[MessageSummary, str]]:
    return [(summary, blob_ids[summary.uid]) for summary in summaries if summary.uid in blob_ids]


class Exporter:
    def __init__(self, store: Store, account: Account, directory: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self._store = store
        self._account = account
        self._directory = directory
        self._format = fmt
        self._host = socket.gethostname().replace("/", "_").replace(":", "_") or "surat"
        self.summary = ExportSummary()

    async def run(self) -> ExportSummary:
        self._directory.mkdir(parents=True, exist_ok=True)
        if any(self._directory.iterdir()):
            raise FileExistsError(f"{self._directory} is not empty; export writes into an empty directory")
        for mailbox in sorted(await self._store.list_mailboxes(self._account.id), key=lambda m: m.name):
            summaries = await self._store.list_messages(mailbox.id)
            blob_ids = {blob.uid: blob.blob_id for blob in await self._store.list_message_blobs(mailbox.id)}
            messages = _message_list(summaries, blob_ids)
            if self._format == "maildir":
                await self._maildir(mailbox, messages)
            else:
                await self._mbox(mailbox, messages)
            self.summary.mailboxes += 1
        return self.summary

    # -------------------------------------------------------------------------------- Maildir

    async def _maildir(self, mailbox: Mailbox, messages: list[tuple[MessageSummary, str]]) -> None:
        if "." in mailbox.name:
            self.summary.warnings.append(f"{mailbox.name}: its '.' is a level in the Maildir++ folder name")
        folder = self._directory / maildir.folder_of_mailbox(mailbox.name)
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if folder != self._directory:
            (folder / "maildirfolder").touch()  # Maildir++: marks a subfolder
        keywords = sorted({f for summary, _ in messages for f in summary.flags} - set(maildir.LETTER_OF_FLAG))
        keywords = [k for k in keywords if not k.startswith("\\")]
        letters = dict(zip(keywords, maildir.KEYWORD_LETTERS, strict=False))
        if len(keywords) > len(maildir.KEYWORD_LETTERS):
            left = ", ".join(keywords[len(maildir.KEYWORD_LETTERS) :])
            self.summary.warnings.append(f"{mailbox.name}: more than 26 keywords, not written: {left}")
        if letters:
            (folder / maildir.KEYWORDS_FILE).write_text(
                "".join(f"{n} {keyword}\n" for n, keyword in enumerate(letters))
            )
        for summary, blob_id in messages:
            when = int(summary.internal_date.timestamp())
            name = f"{when}.{summary.uid}.{self._host}{maildir.info_suffix(summary.flags, letters)}"
            staging = folder / "tmp" / name.partition(":")[0]
            if not await self._write_message(staging, blob_id, mailbox, summary):
                continue
            os.utime(staging, (when, when))
            staging.replace(folder / "cur" / name)

    # -------------------------------------------------------------------------------- mbox

    async def _mbox(self, mailbox: Mailbox, messages: list[tuple[MessageSummary, str]]) -> None:
        path = self._directory / f"{mailbox.name}.mbox"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:
            for summary, blob_id in messages:
                await self._mbox_message(file, mailbox, summary, blob_id)

    async def _mbox_message(
        self, file: BinaryIO, mailbox: Mailbox, summary: MessageSummary, blob_id: str
    ) -> None:
        flags = summary.flags
        header = separator_line(summary.internal_date)
        header += b"Status: RO\n" if "\\Seen" in flags else b"Status: O\n"
        x_status = "".join(letter for flag, letter in _X_STATUS if flag in flags)
        if x_status:
            header += f"X-Status: {x_status}\n".encode()
        keywords = sorted(f for f in flags if not f.startswith("\\"))
        if keywords:
            header += f"X-Keywords: {' '.join(keywords)}\n".encode()
        start = file.tell()
        file.write(header)
        last = b"\n"  # a piece ending in LF: the next one starts a line
        try:
            async for line in _lines(self._store, blob_id):
                # mboxrd: ">*From " at the start of a line gets one more ">" (RFC 4155 §2, mboxrd)
                escape = last.endswith(b"\n") and line.startswith((b"From ", b">")) and is_escaped_from(line)
                file.write(b">" + line if escape else line)
                last = line
        except NotFound:
            file.seek(start)
            file.truncate()
            self._gone(mailbox, summary)
            return
        # RFC 4155 §2: the message ends with a line break and is followed by an empty line.
        file.write(b"\n" if last.endswith(b"\n") else b"\n\n")
        self.summary.messages += 1
        self.summary.bytes += file.tell() - start

    # -------------------------------------------------------------------------------- both

    async def _write_message(
        self, path: Path, blob_id: str, mailbox: Mailbox, summary: MessageSummary
    ) -> bool:
        try:
            with path.open("wb") as file:
                async for line in _lines(self._store, blob_id):
                    file.write(line)
                self.summary.bytes += file.tell()
        except NotFound:
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - the CLI's own loop, nothing else waits on it
            self._gone(mailbox, summary)
            return False
        self.summary.messages += 1
        return True

    def _gone(self, mailbox: Mailbox, summary: MessageSummary) -> None:
        self.summary.warnings.append(
            f"{mailbox.name} uid {summary.uid}: expunged during the export, not written"
        )
