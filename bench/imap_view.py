"""One IMAP client's view of a shared mailbox, and the check of every server response against it.

The view is what the server has told this client: the message count and, per sequence number, the UID
where a FETCH response carried one (0 where not learnt yet). Sans-IO: the load client feeds it the
command it sends (`begin`), each response (`untagged`, `continuation`, `tagged`) with literal contents
left out, and what happened to the connection (`closed`, `timed_out`, `trailing`). Each broken rule
adds one to a counter (VIOLATIONS) and keeps the first few examples; legal but notable events go to
INFO. Commands are not pipelined, so "the command in progress" is always the last one begun.

Violations (the rule, where it is written):
    exists_shrank               `* N EXISTS` below the count the client knows, with no EXPUNGE or VANISHED
                                to account for it: the count only drops by expunges the client is told of
                                (RFC 9051 §7.4.1, §2.3.1.2)
    bad_expunge                 `* N EXPUNGE` for a number outside 1..count (RFC 9051 §7.5.1)
    expunge_during_seq_command  `* N EXPUNGE` while a FETCH, STORE or SEARCH by sequence number is in
                                progress; only their UID forms may carry it (RFC 9051 §7.5.1, §5.5)
    bad_on_known_seq            BAD to a FETCH or STORE whose sequence numbers are all in the client's view
                                (the numbers are valid; a message expunged elsewhere gets NO or its data,
                                RFC 9051 §6.4.5 / §7.5.1, counted as info no_on_fetch_store)
    fetch_out_of_range          `* N FETCH` for a number outside 1..count (RFC 9051 §7.5.2: numbers refer to
                                the client's view; new messages are announced by EXISTS first, §7.4.1)
    search_out_of_range         a SEARCH result outside 1..count (same rule)
    uid_mismatch                a FETCH response gives a message a UID other than the one the client learnt
                                for that number, or one out of ascending order with its neighbours: UIDs
                                ascend with sequence numbers and never change (RFC 9051 §2.3.1.1)
    after_logout                after LOGOUT, anything but `* BYE` then the tagged OK, or data after that OK.
                                RFC 9051 §6.1.3 requires the BYE; other untagged updates there are allowed
                                by §7.5.1 but useless to a client that is leaving, so this asks for none
    disconnects                 the connection closed or broke while a command was in progress
    timeouts                    no tagged reply within the client's command timeout
    other                       any other BAD or unexpected NO, `* BAD`, a continuation request to a command
                                that sends no data, a response the client cannot parse
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

VIOLATIONS = (
    "exists_shrank",
    "bad_expunge",
    "expunge_during_seq_command",
    "bad_on_known_seq",
    "fetch_out_of_range",
    "search_out_of_range",
    "uid_mismatch",
    "after_logout",
    "disconnects",
    "timeouts",
    "other",
)
INFO = ("no_on_fetch_store", "expunges", "vanished")
EXAMPLES_PER_VIOLATION = 3  # the first ones of each kind are kept; the counters hold the rest
EXAMPLE_CHARS = 200  # of the command and the offending response, so a long FETCH does not flood the report

_NUMBERED = re.compile(rb"\* (\d+) ([A-Za-z]+)")
_FETCH_UID = re.compile(rb"[( ]UID (\d+)[ )]")
_UID_RANGE = re.compile(rb"(\d+)(?::(\d+))?")
_SEQUENCE_COMMANDS = frozenset((b"FETCH", b"STORE", b"SEARCH"))
_FETCH_STORE = frozenset((b"FETCH", b"STORE"))
_SENDS_DATA = frozenset((b"APPEND", b"IDLE", b"AUTHENTICATE"))


@dataclass(frozen=True, slots=True)
class Example:
    violation: str
    command: bytes
    response: bytes
    view_size: int  # the message count the client knew when the response came

    def __str__(self) -> str:
        command = self.command[:EXAMPLE_CHARS].decode(errors="replace")
        response = self.response[:EXAMPLE_CHARS].decode(errors="replace").rstrip()
        return (
            f"{self.violation}: command {command!r} got {response!r} (client knew {self.view_size} messages)"
        )


class MailboxView:
    def __init__(self) -> None:
        self.uids: list[int] = []  # by sequence number - 1; 0 = UID not learnt yet
        self.violations: Counter[str] = Counter()
        self.info: Counter[str] = Counter()
        self.examples: list[Example] = []
        self.command = b""
        self._verb = b""  # FETCH, UID FETCH, SELECT, ...
        self._by_sequence = False  # FETCH, STORE or SEARCH by sequence number
        self._selecting = False  # a SELECT before its EXISTS: that EXISTS starts a new view
        self._logging_out = False
        self._bye = False
        self._vanished_unplaced = 0  # VANISHED UIDs not in the view: EXISTS may drop by this many

    def __len__(self) -> int:
        return len(self.uids)

    def violation(self, name: str, response: bytes) -> None:
        self.violations[name] += 1
        if self.violations[name] <= EXAMPLES_PER_VIOLATION:
            self.examples.append(Example(name, self.command, response, len(self.uids)))

    def known_uids(self) -> list[int]:
        return [uid for uid in self.uids if uid]

    # ------------------------------------------------------------------------------------ events

    def begin(self, command: bytes) -> None:
        """The client sends `command` (without tag and CRLF; an APPEND without its literal)."""
        self.command = command
        words = command.split(b" ", 2)
        verb = words[0].upper()
        if verb == b"UID" and len(words) > 1:
            verb = b"UID " + words[1].upper()
        self._verb = verb
        self._by_sequence = verb in _SEQUENCE_COMMANDS
        self._selecting = verb in (b"SELECT", b"EXAMINE")
        self._logging_out = verb == b"LOGOUT"
        self._bye = False

    def untagged(self, response: bytes) -> None:
        """One `* ...` response (literal contents left out, the `{n}` markers kept)."""
        if self._logging_out:
            if response.startswith(b"* BYE"):
                self._bye = True
            else:
                self.violation("after_logout", response)
            return
        numbered = _NUMBERED.match(response)
        if numbered is not None:
            self._numbered(int(numbered.group(1)), numbered.group(2).upper(), response)
            return
        word = response[2:].split(b" ", 1)[0].rstrip(b"\r\n").upper()
        if word == b"SEARCH":
            self._search(response)
        elif word == b"VANISHED":
            self._vanished(response)
        elif word == b"BAD" or not response.startswith(b"* "):
            self.violation("other", response)
        elif word == b"OK" and self._selecting and response.startswith(b"* OK [CLOSED]"):
            self.uids = []  # RFC 7162 §3.2.11: what follows is about the newly selected mailbox
        elif word == b"BYE":
            self._bye = True  # the server is closing: the close that follows is the violation

    def continuation(self, response: bytes) -> None:
        if self._verb not in _SENDS_DATA:
            self.violation("other", response)

    def tagged(self, response: bytes) -> None:
        """The tagged reply `tag STATUS ...` that ends the command."""
        parts = response.split(b" ", 2)
        status = parts[1].rstrip(b"\r\n").upper() if len(parts) > 1 else b""
        if self._logging_out:
            if status != b"OK" or not self._bye:
                self.violation("after_logout", response)
            return
        if self._selecting:
            self._selecting = False
            if status != b"OK":
                self.uids = []  # RFC 9051 §6.3.2: a failed SELECT leaves no mailbox selected
                self.violation("other", response)
            return
        if status == b"OK":
            return
        fetch_or_store = self._verb.removeprefix(b"UID ") in _FETCH_STORE
        if status == b"NO" and fetch_or_store:
            self.info["no_on_fetch_store"] += 1
        elif status == b"BAD" and fetch_or_store and self._by_sequence:
            self.violation("bad_on_known_seq", response)
        else:
            self.violation("other", response)

    def trailing(self, data: bytes) -> None:
        """Data after the tagged OK to LOGOUT."""
        self.violation("after_logout", data)

    def closed(self, detail: bytes) -> None:
        """The connection closed or broke while `self.command` was in progress."""
        self.violation("disconnects", detail)

    def timed_out(self) -> None:
        self.violation("timeouts", b"(no tagged reply)")

    def unparsable(self, response: bytes) -> None:
        self.violation("other", response)

    # ------------------------------------------------------------------------------------ rules

    def _numbered(self, number: int, kind: bytes, response: bytes) -> None:
        count = len(self.uids)
        if kind == b"EXISTS":
            if self._selecting:
                self._selecting = False
                self.uids = [0] * number
            elif number < count - self._vanished_unplaced:
                self.violation("exists_shrank", response)
                del self.uids[number:]  # believe the server from here on, so one slip counts once
            elif number > count:
                self.uids += [0] * (number - count)
            else:
                del self.uids[number:]
            self._vanished_unplaced = 0
        elif kind == b"EXPUNGE":
            self.info["expunges"] += 1
            if not 1 <= number <= count:
                self.violation("bad_expunge", response)
                return
            if self._by_sequence:
                self.violation("expunge_during_seq_command", response)
            del self.uids[number - 1]  # RFC 9051 §7.5.1: the numbers above move down at once
        elif kind == b"FETCH":
            if not 1 <= number <= count:
                self.violation("fetch_out_of_range", response)
                return
            uid_match = _FETCH_UID.search(response)
            if uid_match is not None:
                self._learn_uid(number, int(uid_match.group(1)), response)
        elif kind != b"RECENT":
            self.violation("other", response)

    def _learn_uid(self, number: int, uid: int, response: bytes) -> None:
        index = number - 1
        known = self.uids[index]
        before = self.uids[index - 1] if index > 0 else 0
        after = self.uids[index + 1] if index + 1 < len(self.uids) else 0
        if (known and known != uid) or (before and before >= uid) or (after and after <= uid):
            self.violation("uid_mismatch", response)
        self.uids[index] = uid

    def _search(self, response: bytes) -> None:
        if self._verb != b"SEARCH":
            return  # UID SEARCH answers UIDs
        count = len(self.uids)
        for word in response.split()[2:]:
            if word.isdigit() and not 1 <= int(word) <= count:
                self.violation("search_out_of_range", response)
                return

    def _vanished(self, response: bytes) -> None:
        """RFC 7162 §3.2.10: the UIDs are gone (with EARLIER: were gone before; the view never had them)."""
        self.info["vanished"] += 1
        words = response.split()
        if len(words) < 3 or words[2].upper() == b"(EARLIER)":
            return
        ranges = [(int(m.group(1)), int(m.group(2) or m.group(1))) for m in _UID_RANGE.finditer(words[2])]
        gone = 0
        kept = []
        for uid in self.uids:
            if uid and any(low <= uid <= high or high <= uid <= low for low, high in ranges):
                gone += 1
            else:
                kept.append(uid)
        self.uids = kept
        span = sum(abs(high - low) + 1 for low, high in ranges)
        self._vanished_unplaced += span - gone  # UIDs the view had not learnt: EXISTS will tell the count
