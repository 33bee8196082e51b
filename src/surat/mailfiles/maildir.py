"""Maildir and Maildir++ names: flags in file names, Dovecot's keyword letters, folder names.

A message file's name ends with ":2,<letters>" (the "info" part of the Maildir spec,
https://cr.yp.to/proto/maildir.html): D draft, F flagged, P passed (forwarded), R replied,
S seen, T trashed. The letters a-z are keywords, numbered by the folder's `dovecot-keywords` file
(lines "<n> <keyword>", n = 0 for "a" ... 25 for "z"), as Dovecot writes them.

Maildir++ keeps subfolders beside the root's cur/new/tmp as directories named ".A.B" for the mailbox
"A/B" ("." is the hierarchy separator; names are modified UTF-7, RFC 3501 §5.1.3, as Dovecot writes
them). A name holding "." cannot be told apart from a deeper level: it is exported with its dots as
levels (reported), as Dovecot's default layout does too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from surat.proto.imap import mutf7

# RFC 9051 system flags and $Forwarded (RFC 5788 registry) for the Maildir info letters.
FLAG_LETTERS: Mapping[str, str] = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF_FLAG: Mapping[str, str] = {flag: letter for letter, flag in FLAG_LETTERS.items()}
KEYWORDS_FILE = "dovecot-keywords"
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A keywords file longer than this is not Dovecot's (26 lines of at most a mailbox-sized keyword).
KEYWORDS_FILE_BOUND = 64 * 1024
INFO_SEPARATOR = ":2,"


def read_keywords(folder: Path) -> dict[str, str]:
    """letter -> keyword from the folder's dovecot-keywords file; {} when there is none."""
    path = folder / KEYWORDS_FILE
    try:
        with path.open("rb") as file:
            text = file.read(KEYWORDS_FILE_BOUND).decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    letters: dict[str, str] = {}
    for line in text.splitlines():
        number, _, keyword = line.strip().partition(" ")
        if number.isdigit() and int(number) < len(KEYWORD_LETTERS) and keyword.strip():
            letters[KEYWORD_LETTERS[int(number)]] = keyword.strip()
    return letters


def flags_from_name(name: str, keywords: Mapping[str, str]) -> frozenset[str]:
    """The flags of a message file from its ":2,<letters>" suffix; unknown letters are ignored."""
    _, separator, letters = name.rpartition(INFO_SEPARATOR)
    if not separator:
        return frozenset()
    flags = {FLAG_LETTERS[c] for c in letters if c in FLAG_LETTERS}
    flags |= {keywords[c] for c in letters if c in keywords}
    return frozenset(flags)


def info_suffix(flags: Iterable[str], letter_of_keyword: Mapping[str, str]) -> str:
    """ ":2," and the letters of `flags` in ASCII order, as the Maildir spec asks."""
    letters = {LETTER_OF_FLAG[f] for f in flags if f in LETTER_OF_FLAG}
    letters |= {letter_of_keyword[f] for f in flags if f in letter_of_keyword}
    return INFO_SEPARATOR + "".join(sorted(letters))


def mailbox_of_folder(folder_name: str) -> str:
    """ ".A.B" -> "A/B" (modified UTF-7 decoded; a name that is not valid modified UTF-7 is kept as
    it is, since other writers use UTF-8)."""
    name = folder_name.removeprefix(".")
    with contextlib.suppress(mutf7.MUTF7Error):
        name = mutf7.decode(name)
    return name.replace(".", "/")


def folder_of_mailbox(mailbox: str) -> str:
    """ "A/B" -> ".A.B" (modified UTF-7); "" for INBOX, whose messages are the root's."""
    if mailbox == "INBOX":
        return ""
    return "." + mutf7.encode(mailbox).replace("/", ".")


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()
