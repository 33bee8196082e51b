"""The shared-mailbox checker of bench/imap_load.py --shared: each rule flagged on a transcript that breaks
it, and nothing flagged on the same exchange done right (a checker that cries wolf is as useless as one
that never does)."""

from __future__ import annotations

import pytest
from imap_view import VIOLATIONS, MailboxView


def play(transcript: str, view: MailboxView | None = None) -> MailboxView:
    """Feed a transcript: `C: command` begins a command, `S: ...` is a server response (`a ...` the tagged
    reply, `+ ...` a continuation request, `* ...` untagged), `S.` data after LOGOUT's OK, `X` a close;
    `<CRLF>` ends a literal's marker line (the literal's contents are left out, as the client does)."""
    view = view or MailboxView()
    for raw_line in transcript.strip().splitlines():
        line = raw_line.strip()
        if line.startswith("C: "):
            view.begin(line[3:].encode())
            continue
        if line == "X":
            view.closed(b"connection closed")
            continue
        data = line[3:].replace("<CRLF>", "\r\n").encode() + b"\r\n"
        if line.startswith("S. "):
            view.trailing(data)
        elif data.startswith(b"a "):
            view.tagged(data)
        elif data.startswith(b"+"):
            view.continuation(data)
        else:
            view.untagged(data)
    return view


SELECTED = """
    C: SELECT INBOX
    S: * FLAGS (\\Seen \\Deleted \\Flagged)
    S: * 4 EXISTS
    S: * OK [UIDVALIDITY 7] UIDs valid
    S: a OK [READ-WRITE] SELECT completed
    C: FETCH 1:4 (UID FLAGS)
    S: * 1 FETCH (UID 10 FLAGS ())
    S: * 2 FETCH (UID 11 FLAGS ())
    S: * 3 FETCH (UID 12 FLAGS (\\Seen))
    S: * 4 FETCH (FLAGS () UID 14)
    S: a OK FETCH completed
"""


def selected() -> MailboxView:
    view = play(SELECTED)
    assert view.uids == [10, 11, 12, 14]
    assert not view.violations
    return view


def violations(view: MailboxView) -> dict[str, int]:
    return {name: count for name, count in view.violations.items() if count}


# Each: a transcript after SELECTED that breaks exactly one rule, and the counter it must raise.
BROKEN = [
    ("exists_shrank", "C: NOOP\nS: * 3 EXISTS\nS: a OK done"),
    ("bad_expunge", "C: EXPUNGE\nS: * 5 EXPUNGE\nS: a OK done"),
    ("bad_expunge", "C: EXPUNGE\nS: * 0 EXPUNGE\nS: a OK done"),
    ("expunge_during_seq_command", "C: FETCH 2 (UID)\nS: * 2 EXPUNGE\nS: a OK done"),
    ("expunge_during_seq_command", "C: STORE 1 +FLAGS (\\Flagged)\nS: * 1 EXPUNGE\nS: a OK done"),
    ("expunge_during_seq_command", "C: SEARCH UNSEEN\nS: * 4 EXPUNGE\nS: * SEARCH 1\nS: a OK done"),
    ("bad_on_known_seq", "C: FETCH 3:4 (FLAGS)\nS: a BAD invalid sequence set"),
    ("bad_on_known_seq", "C: STORE 2 +FLAGS.SILENT (\\Deleted)\nS: a BAD no such message"),
    ("fetch_out_of_range", "C: FETCH 4 (FLAGS)\nS: * 5 FETCH (FLAGS ())\nS: a OK done"),
    ("fetch_out_of_range", "C: EXPUNGE\nS: * 4 EXPUNGE\nS: * 4 FETCH (FLAGS ())\nS: a OK done"),
    ("search_out_of_range", "C: SEARCH FLAGGED\nS: * SEARCH 2 5\nS: a OK done"),
    ("uid_mismatch", "C: FETCH 2 (UID)\nS: * 2 FETCH (UID 13)\nS: a OK done"),
    ("uid_mismatch", "C: UID FETCH 12 (FLAGS)\nS: * 2 FETCH (FLAGS () UID 12)\nS: a OK done"),
    (
        "uid_mismatch",
        "C: FETCH 4 (UID BODY.PEEK[HEADER])\nS: * 4 FETCH (BODY[HEADER] {9}<CRLF> UID 15)\nS: a OK",
    ),
    ("after_logout", "C: LOGOUT\nS: * 5 EXISTS\nS: * BYE bye\nS: a OK done"),
    ("after_logout", "C: LOGOUT\nS: a OK done"),
    ("after_logout", "C: LOGOUT\nS: * BYE bye\nS: a OK done\nS. * 1 EXPUNGE"),
    ("disconnects", "C: APPEND INBOX {10}\nX"),
    ("other", 'C: LIST "" "*"\nS: a BAD parse error'),
    ("other", "C: NOOP\nS: * BAD internal"),
    ("other", "C: NOOP\nS: + go on"),
    ("other", "C: STATUS Archive (MESSAGES)\nS: a NO [SERVERBUG] oops"),
    ("other", "C: NOOP\nS: garbage"),
]


@pytest.mark.parametrize(("rule", "transcript"), BROKEN)
def test_each_rule_is_flagged(rule: str, transcript: str) -> None:
    view = play(transcript, selected())
    assert violations(view) == {rule: 1}
    assert rule in VIOLATIONS
    [example] = view.examples
    assert example.violation == rule
    assert example.command == transcript.split("\n", maxsplit=1)[0][3:].encode()


# The same exchanges done right: nothing flagged.
CORRECT = [
    "C: NOOP\nS: * 2 EXPUNGE\nS: * 3 EXISTS\nS: a OK done",  # EXISTS after an expunge: not a shrink
    "C: EXPUNGE\nS: * 4 EXPUNGE\nS: * 1 EXPUNGE\nS: a OK done",
    "C: UID FETCH 11 (FLAGS)\nS: * 1 EXPUNGE\nS: * 1 FETCH (UID 11 FLAGS ())\nS: a OK done",  # UID form
    "C: UID STORE 12 +FLAGS (\\Seen)\nS: * 4 EXPUNGE\nS: * 3 FETCH (UID 12 FLAGS (\\Seen))\nS: a OK done",
    "C: FETCH 2 (UID)\nS: * 6 EXISTS\nS: * 6 FETCH (FLAGS ())\nS: a OK done",  # announced by EXISTS first
    "C: FETCH 2 (FLAGS)\nS: a NO [EXPUNGEISSUED] some messages were expunged",  # allowed: info only
    "C: SEARCH UNSEEN\nS: * SEARCH 1 2 4\nS: a OK done",
    "C: UID SEARCH UNSEEN\nS: * SEARCH 10 11 14\nS: a OK done",  # UIDs, not numbers
    "C: IDLE\nS: + idling\nS: * 2 EXPUNGE\nS: * 5 EXISTS\nS: a OK done",
    "C: APPEND INBOX (\\Seen) {100}\nS: + ready\nS: * 5 EXISTS\nS: a OK [APPENDUID 7 15] done",
    "C: FETCH 4 (UID BODY.PEEK[HEADER])\nS: * 4 FETCH (BODY[HEADER] {20}<CRLF> UID 14)\nS: a OK done",
    "C: SELECT INBOX\nS: * OK [CLOSED]\nS: * 2 EXISTS\nS: a OK done",  # a new view: not a shrink
    "C: NOOP\nS: * VANISHED 11:12\nS: * 2 EXISTS\nS: a OK done",
    "C: LOGOUT\nS: * BYE logging out\nS: a OK done",
]


@pytest.mark.parametrize("transcript", CORRECT)
def test_correct_exchanges_flag_nothing(transcript: str) -> None:
    view = play(transcript, selected())
    assert violations(view) == {}
    assert view.examples == []


def test_expunges_move_the_numbers_down_at_once() -> None:
    # RFC 9051 §7.5.1: "* 3 EXPUNGE" twice removes what were messages 3 and 4.
    view = play("C: EXPUNGE\nS: * 3 EXPUNGE\nS: * 3 EXPUNGE\nS: a OK done", selected())
    assert view.uids == [10, 11]
    assert view.info["expunges"] == 2


def test_a_slip_counts_once_and_the_view_follows_the_server() -> None:
    view = play("C: NOOP\nS: * 2 EXISTS\nS: a OK done\nC: NOOP\nS: * 2 EXISTS\nS: a OK done", selected())
    assert violations(view) == {"exists_shrank": 1}
    assert view.uids == [10, 11]


def test_examples_are_bounded_and_carry_the_view_size() -> None:
    view = selected()
    for _ in range(10):
        play("C: NOOP\nS: * BAD oops", view)
    assert view.violations["other"] == 10
    assert len(view.examples) == 3
    assert "client knew 4 messages" in str(view.examples[0])
