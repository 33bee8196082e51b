"""Fuzz: a session's view of its mailbox against the client's model, under random changes by others.

Another session appends, expunges and flags messages; now and then this session is allowed to hear of
them, with or without EXPUNGE (RFC 9051 §7.5.1: none during FETCH, STORE, SEARCH). Whatever the order,
the client, applying the responses as the session sends them (EXPUNGEs, then EXISTS, then FETCH FLAGS),
holds exactly the view's list: every sequence number means the same message on both sides, EXISTS never
shrinks, and no update names a message the client does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.imapd.view import SelectedView
from surat.store.base import MailboxChanges, MessageSummary

pytestmark = pytest.mark.fuzz

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Mailbox:
    """The store's side: live messages with their MODSEQ and flags, and expunged UIDs with theirs."""

    modseq: int = 1
    uidnext: int = 1
    live: dict[int, MessageSummary] = field(default_factory=dict)
    expunged: dict[int, int] = field(default_factory=dict)

    def append(self, count: int) -> None:
        self.modseq += 1
        for _ in range(count):
            self.live[self.uidnext] = MessageSummary(self.uidnext, self.modseq, frozenset(), 10, NOW)
            self.uidnext += 1

    def pick(self, indexes: list[int]) -> list[int]:
        uids = sorted(self.live)
        return sorted({uids[i % len(uids)] for i in indexes}) if uids else []

    def expunge(self, indexes: list[int]) -> None:
        self.modseq += 1
        for uid in self.pick(indexes):
            del self.live[uid]
            self.expunged[uid] = self.modseq

    def flag(self, indexes: list[int]) -> None:
        self.modseq += 1
        for uid in self.pick(indexes):
            old = self.live[uid]
            self.live[uid] = MessageSummary(uid, self.modseq, old.flags ^ {"\\Seen"}, 10, NOW)

    def changes_since(self, modseq: int) -> MailboxChanges:
        changed = [m for _, m in sorted(self.live.items()) if m.modseq > modseq]
        vanished = sorted(u for u, m in self.expunged.items() if m > modseq)
        return MailboxChanges(changed, vanished, self.modseq)


_OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 3)),
    st.tuples(st.just("expunge"), st.lists(st.integers(0, 30), min_size=1, max_size=3)),
    st.tuples(st.just("flag"), st.lists(st.integers(0, 30), min_size=1, max_size=3)),
    st.tuples(st.just("sync"), st.booleans()),
)


@fuzz_settings()
@given(st.integers(0, 5), st.lists(_OPS, max_size=40))
def test_view_and_client_agree_on_every_sequence_number(start: int, ops: list[tuple[str, object]]) -> None:
    box = Mailbox()
    box.append(start)
    view = SelectedView(1, "INBOX", 7, list(box.live.values()), box.modseq, read_only=False)
    client = list(view.uids)  # what SELECT told the client
    for op, arg in ops:
        if op == "append":
            assert isinstance(arg, int)
            box.append(arg)
        elif op in ("expunge", "flag"):
            assert isinstance(arg, list)
            (box.expunge if op == "expunge" else box.flag)(arg)
        else:
            out = view.apply(box.changes_since(view.highestmodseq))
            if arg:  # EXPUNGE allowed here: `* n EXPUNGE` lines, each applied as it comes
                for seq, uid in view.take_expunged():
                    assert 1 <= seq <= len(client) and client[seq - 1] == uid
                    del client[seq - 1]
            if out.new_messages:  # then `* n EXISTS`, counted after the EXPUNGEs
                assert view.exists >= len(client)
                client.extend(view.uids[len(client) :])
            for uid in out.flag_changes:  # then `* n FETCH (FLAGS ...)`
                number = view.seq_of(uid)
                assert number is not None and client[number - 1] == uid and uid not in view.expunged
        assert client == view.uids
    # At a NOOP everything is told, and the client holds what the mailbox holds.
    view.apply(box.changes_since(view.highestmodseq))
    for seq, _ in view.take_expunged():
        del client[seq - 1]
    client.extend(view.uids[len(client) :])
    assert client == view.uids == sorted(box.live)
