"""What one IMAP session believes about its selected mailbox (RFC 9051 §2.3.1).

Sequence numbers exist only here: the view holds the UIDs in the order the client knows them, their
flags and MODSEQs as last announced, and the HIGHESTMODSEQ up to which the store's changes were read.
``apply`` merges a ``MailboxChanges`` from the store and returns what must be announced. Expunges may
have to wait (RFC 9051 §7.5.1: none during FETCH, STORE or SEARCH, and none between commands): the
messages stay in the view, with their sequence numbers, until ``take_expunged`` hands them out.

The view is exactly what the client was told: ``uids`` changes only where the session sends EXISTS (it
grows) or EXPUNGE/VANISHED (``take_expunged``), so a sequence number is valid here if and only if it is
valid for the client, and a message expunged elsewhere keeps its number until it is announced.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from surat.proto.imap.seqset import SequenceSet
from surat.store.base import MailboxChanges, MessageSummary

__all__ = ["Announcements", "MessageState", "SelectedView"]


# What the view keeps per message is the store's own summary: SELECT of a large mailbox then builds no
# second object per message, and a change replaces the entry (summaries are immutable).
MessageState = MessageSummary


@dataclass(slots=True)
class Announcements:
    """Untagged responses owed to the client after ``SelectedView.apply``."""

    # Messages arrived: EXISTS is owed. Its number is the view's count when it is sent, after any EXPUNGE
    # sent with it (RFC 9051 §7.3.1: EXISTS reports the mailbox's size as the client is to know it).
    new_messages: bool = False
    flag_changes: list[int] = field(default_factory=list)  # UIDs whose flags (or MODSEQ) changed
    new_keywords: bool = False  # a keyword appeared: send FLAGS again


class SelectedView:
    def __init__(
        self,
        mailbox_id: int,
        name: str,
        uidvalidity: int,
        messages: Sequence[MessageSummary],
        highestmodseq: int,
        *,
        read_only: bool,
    ) -> None:
        self.mailbox_id = mailbox_id
        self.name = name
        self.uidvalidity = uidvalidity
        self.read_only = read_only
        self.highestmodseq = highestmodseq
        self.uids: list[int] = [m.uid for m in messages]
        self.state: dict[int, MessageState] = {m.uid: m for m in messages}
        self.expunged: set[int] = set()  # gone from the store, not yet announced
        self.keywords: set[str] = set()
        seen_sets: set[frozenset[str]] = set()
        for m in messages:
            # Few distinct flag sets occur in a mailbox: look at each once.
            if m.flags and m.flags not in seen_sets:
                seen_sets.add(m.flags)
                self.keywords.update(f for f in m.flags if not f.startswith("\\"))
        # RFC 3501 §2.3.2: the messages this session was the first to be told about (claimed in the
        # store by ``claim_recent``); only IMAP4rev1 sessions show them, and never to another session.
        self.recent: set[int] = set()
        self.saved: list[int] | None = None  # RFC 5182 SEARCHRES result, as UIDs
        self.condstore = False  # RFC 7162 §3.1: a CONDSTORE-enabling command was used this session
        # Results of lone system-flag searches (SEARCH UNSEEN, which clients send again and again), each
        # valid while the message list and that flag's changes counter stay as they were.
        self._membership = 0  # bumped when messages come or go
        self._flag_changes: dict[str, int] = {}  # system flag -> times some message gained or lost it
        self._flag_results: dict[tuple[str, bool], tuple[int, int, list[int]]] = {}

    # ------------------------------------------------------------------------------------ lookups

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def resolve(self, seqset: SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of the messages a sequence set names, in ascending order.

        ``$`` must have been replaced by the caller (``substitute_saved``). Sequence numbers beyond EXISTS
        are the caller's to reject (RFC 9051 §9: `seq-number` must be a valid message number)."""
        uids = self.uids
        out: list[tuple[int, int]] = []
        if uid:
            for start, stop in seqset.resolve_uids(uids):
                out.extend((i + 1, uids[i]) for i in range(start, stop))
        else:
            for lo, hi in seqset.resolve_seq(len(uids)):
                out.extend((n, uids[n - 1]) for n in range(lo, hi + 1))
        return out

    def flags(self, uid: int) -> frozenset[str]:
        return self.state[uid].flags

    @property
    def highest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def mark_recent(self, first: int, last: int) -> None:
        """The view's messages with UIDs in [first, last] were claimed as \\Recent by this session."""
        if last < first:
            return
        start = bisect.bisect_left(self.uids, first)
        stop = bisect.bisect_right(self.uids, last)
        self.recent.update(self.uids[start:stop])

    def uids_by_system_flag(self, flag: str, present: bool) -> list[int]:
        """UIDs (ascending) of the messages with (``present``) or without a system flag, expunged but not
        yet announced ones included, as any other search sees them."""
        key = (flag, present)
        changes = self._flag_changes.get(flag, 0)
        cached = self._flag_results.get(key)
        if cached is not None and cached[0] == self._membership and cached[1] == changes:
            return list(cached[2])
        state = self.state
        if present:
            uids = [u for u in self.uids if flag in state[u].flags]
        else:
            uids = [u for u in self.uids if flag not in state[u].flags]
        self._flag_results[key] = (self._membership, changes, uids)
        return list(uids)

    def _replace(self, uid: int, old: MessageState, new: MessageState) -> None:
        self.state[uid] = new
        if old.flags is not new.flags:
            for flag in old.flags ^ new.flags:
                if flag.startswith("\\"):
                    self._flag_changes[flag] = self._flag_changes.get(flag, 0) + 1

    # ------------------------------------------------------------------------------------ changes

    def set_flags(self, uid: int, flags: frozenset[str], modseq: int) -> bool:
        """Record flags this session changed itself; True when a new keyword appeared."""
        st = self.state.get(uid)
        if st is None:
            return False
        self._replace(uid, st, MessageState(uid, modseq, flags, st.size, st.internal_date))
        return self._learn_keywords(flags)

    def _learn_keywords(self, flags: Iterable[str]) -> bool:
        new = {f for f in flags if not f.startswith("\\")} - self.keywords
        if new:
            self.keywords |= new
            return True
        return False

    def add_messages(self, messages: Iterable[MessageSummary]) -> bool:
        """Messages with UIDs above every known one; True when any was added."""
        added = False
        for m in messages:
            if self.uids and m.uid <= self.uids[-1]:
                continue
            self.uids.append(m.uid)
            self.state[m.uid] = m
            self._learn_keywords(m.flags)
            added = True
        if added:
            self._membership += 1
        return added

    def apply(self, changes: MailboxChanges) -> Announcements:
        out = Announcements()
        last = self.uids[-1] if self.uids else 0
        new: list[MessageSummary] = []
        for s in changes.changed:
            st = self.state.get(s.uid)
            if st is not None:
                if st.flags != s.flags or st.modseq != s.modseq:
                    flags_changed = st.flags != s.flags
                    self._replace(s.uid, st, s)
                    if flags_changed or self.condstore:
                        out.flag_changes.append(s.uid)
                    if self._learn_keywords(s.flags):
                        out.new_keywords = True
            elif s.uid > last:
                new.append(s)
        for uid in changes.vanished:
            if uid in self.state:
                self.expunged.add(uid)
        if new:
            if self._learn_keywords(f for s in new for f in s.flags):
                out.new_keywords = True
            self.add_messages(new)
            out.new_messages = True
        out.flag_changes = [u for u in out.flag_changes if u not in self.expunged]
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        return out

    def mark_expunged(self, uids: Iterable[int]) -> None:
        """Messages this session removed itself (EXPUNGE, MOVE): announced by ``take_expunged``."""
        for uid in uids:
            if uid in self.state:
                self.expunged.add(uid)

    def take_expunged(self) -> list[tuple[int, int]]:
        """Remove the expunged messages; (seq, uid) pairs in *descending* order, so that a client that
        applies `* n EXPUNGE` lines one after the other sees each number as it was sent (RFC 9051 §7.5.1)."""
        if not self.expunged:
            return []
        gone = self.expunged
        pairs = [(i + 1, u) for i, u in enumerate(self.uids) if u in gone]
        self.uids = [u for u in self.uids if u not in gone]
        for u in gone:
            self.state.pop(u, None)
        self.recent -= gone
        self._membership += 1
        self.expunged = set()
        if self.saved is not None:
            self.saved = [u for u in self.saved if u not in gone]
        pairs.reverse()
        return pairs

    def first_unseen(self) -> int | None:
        for i, uid in enumerate(self.uids):
            if "\\Seen" not in self.state[uid].flags:
                return i + 1
        return None
