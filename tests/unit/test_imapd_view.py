"""The per-session view of the selected mailbox: sequence numbers, change merging, deferred expunges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from surat.imapd.view import SelectedView
from surat.proto.imap.seqset import parse_sequence_set
from surat.store.base import MailboxChanges, MessageSummary

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def summary(uid: int, flags: tuple[str, ...] = (), modseq: int = 1) -> MessageSummary:
    return MessageSummary(uid=uid, modseq=modseq, flags=frozenset(flags), size=100, internal_date=NOW)


def make_view(uids: list[int]) -> SelectedView:
    return SelectedView(1, "INBOX", 7, [summary(u) for u in uids], 1, read_only=False)


def test_sequence_numbers_and_resolution() -> None:
    view = make_view([3, 5, 9, 10])
    assert view.exists == 4
    assert [view.seq_of(u) for u in (3, 5, 9, 10, 4)] == [1, 2, 3, 4, None]
    assert view.resolve(parse_sequence_set("2:*"), uid=False) == [(2, 5), (3, 9), (4, 10)]
    assert view.resolve(parse_sequence_set("4:9,*"), uid=True) == [(2, 5), (3, 9), (4, 10)]
    # RFC 9051 §9: UID 20:* with a highest UID of 10 means 10:20.
    assert view.resolve(parse_sequence_set("20:*"), uid=True) == [(4, 10)]


def test_apply_announces_flags_new_messages_and_defers_expunges() -> None:
    view = make_view([1, 2, 3])
    changes = MailboxChanges(
        changed=[summary(2, ("\\Seen",), 5), summary(4, ("$Work",), 6)], vanished=[1, 99], highestmodseq=6
    )
    out = view.apply(changes)
    assert out.flag_changes == [2]
    assert out.new_messages and view.exists == 4  # the expunged message counts until it is announced
    assert out.new_keywords and view.keywords == {"$Work"}
    assert view.highestmodseq == 6
    assert view.uids == [1, 2, 3, 4]
    assert view.expunged == {1}  # UID 99 was never known to this session
    assert view.take_expunged() == [(1, 1)]
    assert view.uids == [2, 3, 4] and view.seq_of(4) == 3


def test_take_expunged_is_descending_so_each_number_is_valid_when_sent() -> None:
    view = make_view([10, 20, 30, 40, 50])
    view.saved = [20, 30, 50]
    view.mark_expunged([20, 40, 50, 77])
    # Applied one after the other by a client: 5 EXPUNGE, 4 EXPUNGE, 2 EXPUNGE leaves 10, 30.
    assert view.take_expunged() == [(5, 50), (4, 40), (2, 20)]
    assert view.uids == [10, 30]
    assert view.saved == [30]  # RFC 5182 §2.1: expunged messages leave the saved result
    assert view.take_expunged() == []


def test_unchanged_summary_is_not_announced_again() -> None:
    view = make_view([1])
    view.set_flags(1, frozenset({"\\Flagged"}), 4)  # this session's own STORE
    out = view.apply(MailboxChanges([summary(1, ("\\Flagged",), 4)], [], 4))
    assert out.flag_changes == [] and not out.new_messages


@pytest.mark.parametrize("condstore", [False, True])
def test_modseq_only_change_is_announced_under_condstore(condstore: bool) -> None:
    view = make_view([1])
    view.condstore = condstore
    out = view.apply(MailboxChanges([summary(1, (), 9)], [], 9))
    assert out.flag_changes == ([1] if condstore else [])


def test_first_unseen() -> None:
    view = SelectedView(1, "INBOX", 7, [summary(1, ("\\Seen",)), summary(2), summary(3)], 1, read_only=True)
    assert view.first_unseen() == 2


def test_exists_after_announced_expunges_counts_what_the_client_holds() -> None:
    view = make_view([1, 2, 3])
    out = view.apply(MailboxChanges([summary(4, modseq=3)], vanished=[1], highestmodseq=3))
    assert out.new_messages
    # Announced together: `* 1 EXPUNGE` first, then EXISTS with the count after it (3, not 4), so that
    # no later EXISTS is smaller than one the client saw without an EXPUNGE between them.
    assert view.take_expunged() == [(1, 1)]
    assert view.exists == 3 and view.uids == [2, 3, 4]


def test_unannounced_expunge_keeps_sequence_numbers_valid() -> None:
    view = make_view([1, 2, 3])
    view.apply(MailboxChanges([], vanished=[2], highestmodseq=2))
    # RFC 9051 §7.5.1: until the EXPUNGE is sent, message 2 is still message 2 for the client.
    assert view.exists == 3
    assert view.resolve(parse_sequence_set("1:3"), uid=False) == [(1, 1), (2, 2), (3, 3)]
    assert view.seq_of(3) == 3 and view.expunged == {2}
    # A flag change to a message that is gone is not announced.
    out = view.apply(MailboxChanges([summary(2, ("\\Seen",), 3)], [], 3))
    assert out.flag_changes == []


def test_exists_never_shrinks_without_expunge() -> None:
    view = make_view([1, 2, 3, 4])
    told = [view.exists]
    batches = [
        MailboxChanges([summary(5, modseq=2)], [1, 2], 2),
        MailboxChanges([summary(6, modseq=3), summary(7, modseq=3)], [5], 3),
        MailboxChanges([], [3, 4, 6, 7], 4),
        MailboxChanges([summary(8, modseq=5)], [], 5),
    ]
    for allow_expunge, changes in zip([False, True, False, True], batches, strict=True):
        out = view.apply(changes)
        expunged = view.take_expunged() if allow_expunge else []
        # What a client does with the responses: EXPUNGEs first, then EXISTS.
        count = told[-1] - len(expunged)
        if out.new_messages:
            assert view.exists >= count
            count = view.exists
        told.append(count)
        assert count == view.exists
    assert view.uids == [8] and not view.expunged
