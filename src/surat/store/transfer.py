"""What `surat import` and `surat store verify` ask of a store, beyond the `Store` Protocol.

Both backends implement `TransferStore`: the SQLite store in `sqlite.py`, the PostgreSQL store in
`postgres/transfer.py`. The import ledger (table `imported_messages`) records, per mailbox, the SHA-256
of every message an import stored and the UID it became, so that a second run skips what the first
brought in, and so that `verify` can check those bodies byte for byte (other bodies: their size).

`verify` never deletes a message: `repair` recounts each account's quota usage from its messages and
removes bodies that nothing refers to, and only those older than ORPHAN_MIN_AGE, because a body a
running server (or a worker) has just written is unreferenced until its transaction commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from surat.store.base import Store

# Seconds: an unreferenced body younger than this may belong to a delivery in flight; verify neither
# reports nor removes it.
ORPHAN_MIN_AGE = 3600.0
DIGEST_SIZE = hashlib.sha256().digest_size

# Rows for the counter checks, alike in both backends' SQL. RFC 9051 §2.3.1.1: UIDNEXT is greater
# than every UID the mailbox ever assigned (messages and expunged ones); RFC 7162 §3.1.1 (and §3.2.10
# for VANISHED): HIGHESTMODSEQ is at least every message's and every expunged UID's MODSEQ.
MAILBOX_COUNTERS_SQL = """
    SELECT a.address, mb.name, mb.uidnext, mb.highestmodseq,
           coalesce(greatest_uid, 0), coalesce(greatest_modseq, 0)
    FROM mailboxes mb
    JOIN accounts a ON a.id = mb.account_id
    LEFT JOIN (
        SELECT mailbox_id, max(uid) AS greatest_uid, max(modseq) AS greatest_modseq
        FROM (SELECT mailbox_id, uid, modseq FROM messages
              UNION ALL SELECT mailbox_id, uid, modseq FROM expunged) AS assigned
        GROUP BY mailbox_id
    ) AS seen ON seen.mailbox_id = mb.id
    WHERE mb.uidnext <= coalesce(greatest_uid, 0) OR mb.highestmodseq < coalesce(greatest_modseq, 0)
    ORDER BY a.address, mb.name
"""
# RFC 9208 §5.1: an account's STORAGE usage is the sum of its messages' sizes (each copy counts).
ACCOUNT_USAGE_SQL = """
    SELECT a.id, a.address, a.used_bytes, coalesce(sum(m.size), 0)
    FROM accounts a
    LEFT JOIN mailboxes mb ON mb.account_id = a.id
    LEFT JOIN messages m ON m.mailbox_id = mb.id
    GROUP BY a.id, a.address, a.used_bytes
    HAVING a.used_bytes <> coalesce(sum(m.size), 0)
    ORDER BY a.address
"""
# The same sum for one account (bound once), computed inside the repairing transaction.
RECOUNTED_USAGE_SQL = (
    "SELECT coalesce(sum(m.size), 0) FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id"
    " WHERE mb.account_id = {mark}"
)


@dataclass(frozen=True, slots=True)
class BodyCheck:
    """One stored body as the rows describe it: what verify compares the bytes with."""

    blob_id: str
    size: int  # the messages' recorded size
    digest: bytes | None  # SHA-256 from the import ledger, if the body came in by `surat import`
    where: str  # "address mailbox uid N", to name the problem


@dataclass(slots=True)
class VerifyReport:
    messages: int = 0
    bodies: int = 0
    body_bytes: int = 0
    digests_checked: int = 0
    problems: list[str] = field(default_factory=list)  # one line each, for the operator
    repaired: list[str] = field(default_factory=list)
    orphans: int = 0  # unreferenced bodies found (older than ORPHAN_MIN_AGE)


# Called with (bodies checked, bodies in all) now and then, for a progress line.
VerifyProgress = Callable[[int, int], None]


class TransferStore(Store, Protocol):
    async def imported_digests(self, mailbox_id: int) -> set[bytes]:
        """The SHA-256 digests of every message `surat import` stored in the mailbox (expunged ones
        too: a re-run does not bring back what the user deleted)."""
        ...

    async def record_imported(self, mailbox_id: int, imported: Sequence[tuple[bytes, int]]) -> None:
        """Remember (digest, uid) pairs of messages just imported into the mailbox."""
        ...

    async def verify(self, *, repair: bool = False, progress: VerifyProgress | None = None) -> VerifyReport:
        """Check every body against its rows, the mailbox counters and the quota usage, and find
        unreferenced bodies; with `repair`, recount usage and remove those bodies (never a message)."""
        ...


def mailbox_counter_problem(
    address: str, name: str, uidnext: int, highestmodseq: int, greatest_uid: int, greatest_modseq: int
) -> str:
    parts = []
    if uidnext <= greatest_uid:
        parts.append(f"UIDNEXT {uidnext} is not above the greatest UID {greatest_uid}")
    if highestmodseq < greatest_modseq:
        parts.append(f"HIGHESTMODSEQ {highestmodseq} is below a MODSEQ {greatest_modseq}")
    return f"{address} {name}: " + "; ".join(parts) + " (not repaired)"


def usage_problem(address: str, recorded: int, actual: int) -> str:
    return f"{address}: quota usage {recorded} bytes recorded, its messages hold {actual}"


def body_problem(check: BodyCheck, found_size: int | None, digest_matches: bool = True) -> str | None:
    """The line for a body whose bytes disagree with its rows; None when they agree."""
    if found_size is None:
        return f"{check.where}: body {check.blob_id} is missing"
    if found_size != check.size:
        return f"{check.where}: body {check.blob_id} holds {found_size} bytes, the message {check.size}"
    if not digest_matches:
        return f"{check.where}: body {check.blob_id} differs from what was imported (SHA-256)"
    return None
