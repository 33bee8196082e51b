"""SEARCH on a lone system flag (UNSEEN and the like) through the view's cached result: it must always
agree with the general search, whatever changed in between."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from surat.imapd.search import search
from surat.imapd.view import SelectedView
from surat.proto.imap.commands import SearchCommand, SearchFlag, SearchNot
from surat.proto.imap.parser import parse_command
from surat.store.base import BlobStore, MailboxChanges, MessageRecord, MessageSummary

NOW = datetime(2024, 1, 1, tzinfo=UTC)
SYSTEM = ("\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "\\Draft")


class NoStore:
    """Flag keys never need the store."""

    @property
    def blobs(self) -> BlobStore:
        raise AssertionError("not needed")

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        raise AssertionError("not needed")


def summary(uid: int, flags: Sequence[str] = (), modseq: int = 1) -> MessageSummary:
    return MessageSummary(uid=uid, modseq=modseq, flags=frozenset(flags), size=100, internal_date=NOW)


def general(view: SelectedView, flag: str, present: bool) -> list[int]:
    """The predicate-based search, the reference: NOT flag goes through the general path."""
    key = SearchFlag(flag, True) if present else SearchNot(SearchFlag(flag, True))
    return asyncio.run(search(NoStore(), 1, view, key, charset=None))


def check(view: SelectedView) -> None:
    for flag in SYSTEM:
        for present in (True, False):
            assert view.uids_by_system_flag(flag, present) == general(view, flag, present), (flag, present)


def test_unseen_follows_every_kind_of_change() -> None:
    view = SelectedView(
        1, "INBOX", 7, [summary(u, ("\\Seen",) if u % 2 else ()) for u in range(1, 11)], 1, read_only=False
    )
    assert view.uids_by_system_flag("\\Seen", False) == [2, 4, 6, 8, 10]
    check(view)
    # This session's STORE.
    view.set_flags(2, frozenset({"\\Seen"}), 2)
    assert view.uids_by_system_flag("\\Seen", False) == [4, 6, 8, 10]
    # Another session's change, then a new message, through the store's change list.
    view.apply(MailboxChanges(changed=[summary(3, (), 3), summary(11, (), 4)], vanished=[], highestmodseq=4))
    assert view.uids_by_system_flag("\\Seen", False) == [3, 4, 6, 8, 10, 11]
    # An expunge stays visible until it is announced, as for any other search.
    view.mark_expunged([4])
    assert view.uids_by_system_flag("\\Seen", False) == [3, 4, 6, 8, 10, 11]
    view.take_expunged()
    assert view.uids_by_system_flag("\\Seen", False) == [3, 6, 8, 10, 11]
    check(view)


def test_a_change_of_another_flag_keeps_the_result_and_the_caller_cannot_spoil_it() -> None:
    view = SelectedView(1, "INBOX", 7, [summary(u) for u in range(1, 6)], 1, read_only=False)
    first = view.uids_by_system_flag("\\Seen", False)
    first.clear()  # the caller's copy
    view.set_flags(3, frozenset({"\\Flagged"}), 2)
    assert view.uids_by_system_flag("\\Seen", False) == [1, 2, 3, 4, 5]
    assert view.uids_by_system_flag("\\Flagged", True) == [3]
    check(view)


@pytest.mark.parametrize("seed", range(5))
def test_random_changes_agree_with_the_general_search(seed: int) -> None:
    rng = random.Random(seed)
    view = SelectedView(1, "INBOX", 7, [summary(u) for u in range(1, 40)], 1, read_only=False)
    modseq = 1
    for _ in range(60):
        modseq += 1
        action = rng.random()
        live = [u for u in view.uids if u not in view.expunged]
        if action < 0.4 and live:
            view.set_flags(rng.choice(live), frozenset(f for f in SYSTEM if rng.random() < 0.4), modseq)
        elif action < 0.7 and live:
            uid = rng.choice(live)
            flags = [f for f in (*SYSTEM, "$Work") if rng.random() < 0.4]
            view.apply(
                MailboxChanges(changed=[summary(uid, flags, modseq)], vanished=[], highestmodseq=modseq)
            )
        elif action < 0.8:
            new = view.uids[-1] + 1 if view.uids else 1
            view.apply(
                MailboxChanges(changed=[summary(new, ("\\Seen",), modseq)], vanished=[], highestmodseq=modseq)
            )
        elif action < 0.9 and live:
            view.mark_expunged([rng.choice(live)])
        else:
            view.take_expunged()
        flag = rng.choice(SYSTEM)
        present = rng.random() < 0.5
        assert view.uids_by_system_flag(flag, present) == general(view, flag, present)
    check(view)


# RFC 3501 §6.4.4 keys on \Recent, as the parser builds them, and what they find among UIDs 1..6 of which
# this session claimed 2, 3 and 5 (UID 3 \Seen).
RECENT_KEYS = {
    "RECENT": [2, 3, 5],
    "NEW": [2, 5],  # RECENT UNSEEN
    "OLD": [1, 4, 6],  # NOT RECENT
    "NOT NEW": [1, 3, 4, 6],
    "UNSEEN RECENT": [2, 5],
}


@pytest.mark.parametrize(("text", "expected"), RECENT_KEYS.items())
def test_recent_keys_match_the_session_claim(text: str, expected: list[int]) -> None:
    view = SelectedView(
        1, "INBOX", 7, [summary(u, ("\\Seen",) if u == 3 else ()) for u in range(1, 7)], 1, read_only=False
    )
    view.mark_recent(2, 3)
    view.mark_recent(5, 5)
    view.mark_recent(9, 8)  # an empty claim changes nothing
    command = parse_command(b"a SEARCH " + text.encode())
    assert isinstance(command, SearchCommand)
    assert asyncio.run(search(NoStore(), 1, view, command.key, charset=None)) == expected


def test_recent_claims_only_known_uids_and_forgets_expunged() -> None:
    view = SelectedView(1, "INBOX", 7, [summary(u) for u in (2, 4, 6)], 1, read_only=False)
    view.mark_recent(3, 100)  # the store's range may cover UIDs this view does not hold
    assert view.recent == {4, 6}
    view.mark_expunged([4])
    assert view.recent == {4, 6}  # still addressable until the EXPUNGE is sent
    view.take_expunged()
    assert view.recent == {6}
