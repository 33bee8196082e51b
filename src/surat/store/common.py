"""What every store backend does alike: names, addresses and flags normalised one way, the flags'
text form in the `messages.flags` column, and MessageInfo decoding with its cache. Pure functions, no
SQL: the SQLite and PostgreSQL stores both import them, so a name valid on one is valid on the other."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from surat.message.info import MessageInfo
from surat.sieve import SieveSyntaxError, parse_script
from surat.store.base import (
    HIERARCHY_DELIMITER,
    MAX_MAILBOX_NAME_OCTETS,
    MAX_SIEVE_SCRIPT_NAME,
    Change,
    ChangeKind,
    InvalidName,
    InvalidScript,
    Mailbox,
    QueueAttempt,
    QueueEntry,
    QueueRecipient,
    RecipientState,
    TlsResultCount,
    TlsResultKey,
)

# RFC 9051 §2.3.2 system flags; matched case-insensitively, stored in this spelling.
_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What a store's group commit did (both backends' `commit_stats()`, for tests and benchmarks)."""

    batches: int  # group commits done
    items: int  # deliveries and appends committed by them
    largest: int  # the most items one commit carried


def added_changes(
    added: Mapping[int, Sequence[int]],
    owners: Mapping[int, int],
    modseqs: Mapping[int, int],
    queued: bool,
) -> list[Change]:
    """A group commit's changes: MESSAGES_ADDED per mailbox (its UIDs, its account from `owners`, the
    commit's MODSEQ from `modseqs`), and QUEUE_CHANGED when it queued something."""
    changes = [
        Change(ChangeKind.MESSAGES_ADDED, owners[mailbox_id], mailbox_id, tuple(uids), modseqs[mailbox_id])
        for mailbox_id, uids in added.items()
    ]
    if queued:
        changes.append(Change(ChangeKind.QUEUE_CHANGED, 0))
    return changes


@functools.lru_cache(maxsize=4096)  # every RCPT asks for the same few domains, several times
def normalize_domain(name: str) -> str:
    """Lower-case A-label form (IDNA), without a trailing dot."""
    text = name.strip().rstrip(".").lower()
    if not text:
        raise InvalidName("empty domain")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidName(f"invalid domain {name!r}") from None
    labels = text.split(".")
    if any(not label or len(label) > 63 for label in labels) or len(text) > 253:
        raise InvalidName(f"invalid domain {name!r}")
    if any(not (c.isalnum() or c in "-_") for c in text.replace(".", "")):
        raise InvalidName(f"invalid domain {name!r}")
    return text


@functools.lru_cache(maxsize=4096)  # a pure function of its arguments: invalid ones raise, uncached
def normalize_address(address: str, allow_catchall: bool = False) -> str:
    """ "local@domain" lower-cased with the domain in A-label form; "@domain" if allowed."""
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at or (not local and not allow_catchall):
        raise InvalidName(f"invalid address {address!r}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in local) or len(local) > 64:
        raise InvalidName(f"invalid address {address!r}")
    return f"{local.lower()}@{normalize_domain(domain)}"


def normalize_mailbox_name(name: str) -> str:
    """Validate a mailbox name; "INBOX" (any case) as first component is spelled "INBOX".

    Names are never used as paths, but odd ones are refused anyway: they make LIST patterns and
    clients misbehave.
    """
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_NAME_OCTETS:
        raise InvalidName("mailbox name empty or too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "*%" for c in name):
        raise InvalidName("mailbox name has control or wildcard characters")
    parts = name.split(HIERARCHY_DELIMITER)
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidName("mailbox name has an empty, '.' or '..' component")
    if parts[0].upper() == "INBOX":  # RFC 9051 §5.1: INBOX is case-insensitive
        parts[0] = "INBOX"
    return HIERARCHY_DELIMITER.join(parts)


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _SYSTEM_FLAGS.get(flag.lower())
            if canonical is not None:
                out.add(canonical)
            # \Recent is not stored (RFC 9051 removed it); other \-names are not flags.
        elif flag:
            out.add(flag)
    return frozenset(out)


def flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


_FLAG_SETS: dict[str, frozenset[str]] = {}


def flags_of(text: str) -> frozenset[str]:
    # A mailbox holds few distinct flag strings: one shared set per string keeps a 10 000-message
    # listing (IMAP SELECT) from building 10 000 sets. Bounded, as keywords are client-chosen.
    flags = _FLAG_SETS.get(text)
    if flags is None:
        flags = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) < 4096:
            _FLAG_SETS[text] = flags
    return flags


@functools.lru_cache(maxsize=2048)
def message_info(text: str) -> MessageInfo:
    """MessageInfo is immutable, and clients FETCH the same recent messages again and again: each
    JSON text is decoded once (~25 µs) while it stays among the recently used (~3 KiB each)."""
    return MessageInfo.from_json(text)


def mailbox_from_row(row: tuple[Any, ...]) -> Mailbox:
    """A Mailbox from the columns id, account_id, name, uidvalidity, uidnext, highestmodseq,
    special_use, subscribed: the order both backends select them in."""
    return Mailbox(
        id=row[0],
        account_id=row[1],
        name=row[2],
        uidvalidity=row[3],
        uidnext=row[4],
        highestmodseq=row[5],
        special_use=row[6],
        subscribed=bool(row[7]),
    )


# The queue's columns, in the order both backends select them in (see the *_from_row functions).
QUEUE_ENTRY_COLUMNS = (
    "id, sender, size, blob_id, body_offset, created_at, next_attempt_at, envid, ret, smtputf8,"
    " eight_bit, authenticated_user, dkim_signature, requiretls"
)
QUEUE_RECIPIENT_COLUMNS = "queue_id, address, state, notify, orcpt, last_reply, delay_notified"


def queue_recipient_from_row(row: tuple[Any, ...]) -> QueueRecipient:
    """A QueueRecipient from the QUEUE_RECIPIENT_COLUMNS (notify: space-separated, "" for none)."""
    return QueueRecipient(
        address=row[1],
        state=RecipientState(row[2]),
        notify=tuple(row[3].split()),
        orcpt=row[4],
        last_reply=row[5],
        delay_notified=bool(row[6]),
    )


def queue_entry_from_row(
    row: tuple[Any, ...],
    recipients: Iterable[QueueRecipient],
    attempts: Iterable[QueueAttempt],
    created_at: datetime,
    next_attempt_at: datetime,
) -> QueueEntry:
    """A QueueEntry from the QUEUE_ENTRY_COLUMNS; its times as the backend converted them."""
    return QueueEntry(
        id=row[0],
        sender=row[1],
        recipients=tuple(recipients),
        size=row[2],
        blob_id=row[3],
        body_offset=row[4],
        created_at=created_at,
        next_attempt_at=next_attempt_at,
        attempts=tuple(attempts),
        envid=row[7],
        ret=row[8],
        smtputf8=bool(row[9]),
        eight_bit=bool(row[10]),
        authenticated_user=row[11],
        dkim_signature=None if row[12] is None else bytes(row[12]),
        requiretls=bool(row[13]),
    )


def check_sieve_script(name: str, text: str) -> None:
    """What both backends check before storing a Sieve script: the name (RFC 5804 §1.6: not empty, no
    control characters, at most MAX_SIEVE_SCRIPT_NAME characters) and that the text parses (the
    parser's "line L, column C: why" in InvalidScript), so that a broken script is refused when it is
    uploaded, not found out at a delivery."""
    if not name or len(name) > MAX_SIEVE_SCRIPT_NAME:
        raise InvalidName(f"a script name is 1 to {MAX_SIEVE_SCRIPT_NAME} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        raise InvalidName("a script name has no control characters (RFC 5804 §1.6)")
    try:
        parse_script(text)
    except SieveSyntaxError as exc:
        raise InvalidScript(str(exc)) from None


def new_script_version() -> int:
    """A script's version: random, so a script deleted and put again never gets a version a cache
    (in any process or node) still holds for the old text. 62 bits fit both backends' integers."""
    return secrets.randbits(62)


# TLS-RPT counts (RFC 8460, Store.add_tls_results): the statements both backends run (key columns
# in TlsResultKey's field order), with "?" placeholders (PostgreSQL: `postgres_placeholders`).
ADD_TLS_RESULT = (
    "INSERT INTO tls_results (day, policy_domain, policy_type, policy_string, mx_host, result_type,"
    " sending_mta_ip, receiving_mx_hostname, receiving_ip, failure_reason_code, sessions)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (day, policy_domain, policy_type, policy_string, mx_host, result_type,"
    " sending_mta_ip, receiving_mx_hostname, receiving_ip, failure_reason_code)"
    " DO UPDATE SET sessions = tls_results.sessions + excluded.sessions"
)
SELECT_TLS_RESULTS = (
    "SELECT day, policy_domain, policy_type, policy_string, mx_host, result_type,"
    " sending_mta_ip, receiving_mx_hostname, receiving_ip, failure_reason_code, sessions"
    " FROM tls_results WHERE day = ? ORDER BY policy_domain, policy_type, policy_string, result_type"
)
CLAIM_TLS_REPORT = "INSERT INTO tls_reports (policy_domain, day) VALUES (?, ?) ON CONFLICT DO NOTHING"
FORGET_TLS_RESULTS = ("DELETE FROM tls_results WHERE day < ?", "DELETE FROM tls_reports WHERE day < ?")


def postgres_placeholders(statement: str) -> bytes:
    """A statement above with psycopg's placeholders (the texts hold no other "?")."""
    return statement.replace("?", "%s").encode()


def tls_result_row(count: TlsResultCount) -> tuple[str | int, ...]:
    key = count.key
    return (
        key.day,
        key.policy_domain.lower(),
        key.policy_type,
        key.policy_string,
        key.mx_host,
        key.result_type,
        key.sending_mta_ip,
        key.receiving_mx_hostname,
        key.receiving_ip,
        key.failure_reason_code,
        count.sessions,
    )


def tls_result_count(row: Sequence[Any]) -> TlsResultCount:
    return TlsResultCount(TlsResultKey(*(str(value) for value in row[:10])), int(row[10]))
