"""IMAP SORT and THREAD (RFC 5256, RFC 5957): base subjects, every sort key, both thread algorithms
with their dummy and merge rules, and the THREAD response format."""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Sequence

import pytest

from surat.imapd.search import BATCH, BadCharset, SimpleView
from surat.imapd.sorting import base_subject, sort
from surat.imapd.threading import MAX_REFERENCES, ThreadNode, format_threads, thread
from surat.message.info import compute_message_info
from surat.proto.imap import commands as c
from surat.proto.imap.parser import parse_command
from surat.store.base import MessageRecord, MessageSummary
from surat.store.memoryblobs import BytesBlobReader, MemoryBlobStore

UTC = datetime.UTC


class FakeBlobs(MemoryBlobStore):
    async def open(self, blob_id: str) -> BytesBlobReader:
        raise AssertionError("SORT and THREAD never read message files")


class FakeStore:
    def __init__(self) -> None:
        self._blobs = FakeBlobs()
        self.records: dict[int, MessageRecord] = {}
        self.calls: list[int] = []

    @property
    def blobs(self) -> FakeBlobs:
        return self._blobs

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        self.calls.append(len(uids))
        return [self.records[u] for u in uids if u in self.records]


def build(
    messages: Sequence[tuple[str, int, datetime.datetime] | tuple[str, int, datetime.datetime, int]],
) -> tuple[FakeStore, SimpleView]:
    """(header text, uid, internal date[, size]) -> a store and a view, in UID order."""
    store = FakeStore()
    summaries = []
    for item in messages:
        header, uid, internal = item[0], item[1], item[2]
        raw = (header.strip("\n") + "\n\nbody\n").replace("\n", "\r\n").encode()
        size = item[3] if len(item) == 4 else len(raw)
        summary = MessageSummary(uid, uid, frozenset(), size, internal)
        summaries.append(summary)
        store.records[uid] = MessageRecord(
            1, uid, uid, frozenset(), size, internal, f"b{uid}", compute_message_info(io.BytesIO(raw))
        )
    return store, SimpleView.of(summaries)


def day(d: int, hour: int = 0) -> datetime.datetime:
    return datetime.datetime(2024, 3, d, hour, tzinfo=UTC)


def sort_command(text: str) -> c.Sort:
    command = parse_command(b"a SORT " + text.encode())
    assert isinstance(command, c.Sort)
    return command


# ----------------------------------------------------------------------------------------- base subject

BASE_SUBJECTS = [
    ("test", "test", False),
    ("Re: test", "test", True),
    ("RE:  test", "test", True),
    ("re: Re: RE: test", "test", True),
    ("Fwd: test", "test", True),
    ("Fw: test", "test", True),
    ("fwd : test", "test", True),
    ("Re[2]: test", "test", True),
    ("Re [2]: test", "test", True),
    ("[PATCH] test", "test", False),
    ("[PATCH]", "[PATCH]", False),  # removing the blob would leave no subj-base
    ("[PATCH]   ", "[PATCH]", False),
    ("[a][b] test", "test", False),
    ("[a] [b]", "[b]", False),
    ("[list] Re: test", "test", True),
    ("Re: [list] test", "test", True),
    ("test (fwd)", "test", True),
    ("test (FWD) (fwd)  ", "test", True),
    ("[Fwd: test]", "test", True),
    ("[fwd: Re: test]", "test", True),
    ("Re: [fwd: [list] test (fwd)]", "test", True),
    ("Fwd: [fwd: foo]", "foo", True),
    ("[fwd: foo] bar", "bar", False),  # a subj-blob, not a forward wrapper
    ("  Hello \t  world  ", "Hello world", False),
    ("Hello\r\n world", "Hello world", False),
    ("Recent news", "Recent news", False),
    ("Reply: x", "Reply: x", False),
    ("Re:", "", True),
    ("", "", False),
    (None, "", False),
    ("Re: Café crème", "Café crème", True),
]


@pytest.mark.parametrize(("subject", "base", "reply"), BASE_SUBJECTS)
def test_base_subject(subject: str | None, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


# ----------------------------------------------------------------------------------------- SORT

SORT_MAILBOX = [
    (
        "From: Zed <zed@x.example>\nTo: amy@x.example\nCc: bob@x.example\nSubject: Re: banana\n"
        "Date: Tue, 05 Mar 2024 10:00:00 +0000",
        2,
        day(1),
        300,
    ),
    (
        "From: amy@x.example\nTo: Zoe <zoe@x.example>\nSubject: apple\nDate: Tue, 05 Mar 2024 10:00:00 +0000",
        4,
        day(3),
        100,
    ),
    (
        "From: =?UTF-8?Q?=C3=89mile?= <Bob@x.example>\nTo: carl@x.example\nCc: Al <al@x.example>\n"
        "Subject: [list] Banana\nDate: Tue, 05 Mar 2024 03:00:00 -0800",
        6,
        day(2),
        200,
    ),
    ("From: carl@x.example\nSubject: Cherry (fwd)", 8, day(4), 200),
    (
        "From: Dan <dan@x.example>\nTo: Undisclosed recipients:;\nSubject: APPLE\n"
        "Date: Fri, 01 Mar 2024 00:00:00 +0000",
        10,
        day(5),
        50,
    ),
]

SORTS = [
    ("ARRIVAL", [1, 3, 2, 4, 5]),
    ("REVERSE ARRIVAL", [5, 4, 2, 3, 1]),
    ("SIZE", [5, 2, 3, 4, 1]),
    ("REVERSE SIZE", [1, 3, 4, 2, 5]),  # equal sizes stay in mailbox order, reversed or not
    ("DATE", [5, 4, 1, 2, 3]),  # no Date: uses the internal date; equal dates by sequence number
    ("REVERSE DATE", [3, 1, 2, 4, 5]),
    ("FROM", [2, 3, 4, 5, 1]),  # the addr-mailbox, ASCII case-insensitive
    ("TO", [4, 5, 1, 3, 2]),  # none (or only a group) is the empty string
    ("CC", [2, 4, 5, 3, 1]),
    ("SUBJECT", [2, 5, 1, 3, 4]),  # base subjects APPLE APPLE BANANA BANANA CHERRY
    ("REVERSE SUBJECT", [4, 1, 3, 2, 5]),
    ("SUBJECT REVERSE DATE", [2, 5, 3, 1, 4]),
    ("SUBJECT SIZE", [5, 2, 3, 1, 4]),
    ("DISPLAYFROM", [2, 4, 5, 1, 3]),  # amy@x.example carl@x.example dan zed émile
    ("DISPLAYTO", [4, 5, 1, 3, 2]),
]


@pytest.mark.parametrize(("criteria", "expected"), SORTS, ids=[s for s, _ in SORTS])
async def test_sort(criteria: str, expected: list[int]) -> None:
    store, view = build(SORT_MAILBOX)
    command = sort_command(f"({criteria}) UTF-8 ALL")
    uids = await sort(store, 1, view, command.criteria, command.key, command.charset)
    assert uids == [2 * n for n in expected]


async def test_sort_only_matching_messages_in_batches() -> None:
    store, view = build(SORT_MAILBOX)
    command = sort_command("(REVERSE SIZE) US-ASCII NOT SUBJECT banana")
    assert await sort(store, 1, view, command.criteria, command.key, command.charset) == [8, 4, 10]
    store.calls.clear()
    command = sort_command("(SIZE) US-ASCII LARGER 60")
    assert await sort(store, 1, view, command.criteria, command.key, command.charset) == [4, 6, 8, 2]
    assert store.calls == []  # ARRIVAL and SIZE come from the session's view


async def test_sort_bad_charset() -> None:
    store, view = build(SORT_MAILBOX)
    command = sort_command("(SUBJECT) UTF-8 ALL")  # the parser refuses ISO-8859-1 already
    with pytest.raises(BadCharset):
        await sort(store, 1, view, command.criteria, command.key, "ISO-8859-1")


async def test_sort_message_expunged_meanwhile_sorts_with_empty_keys() -> None:
    store, view = build(SORT_MAILBOX)
    del store.records[2]
    command = sort_command("(FROM) UTF-8 ALL")
    assert await sort(store, 1, view, command.criteria, command.key, command.charset) == [2, 4, 6, 8, 10]


async def test_sort_many_messages_fetches_in_batches() -> None:
    messages = [
        (f"From: u{n % 97}@x.example\nSubject: s{n % 89}", n + 1, day(1 + n % 28))
        for n in range(2600)  # over _INLINE_ORDERING: ordered in a worker
    ]
    store, view = build(messages)
    command = sort_command("(SUBJECT FROM REVERSE ARRIVAL) UTF-8 ALL")
    uids = await sort(store, 1, view, command.criteria, command.key, command.charset)
    assert max(store.calls) <= BATCH and sum(store.calls) == 2600
    expected = sorted(range(2600), key=lambda n: (f"S{(n) % 89}", f"U{n % 97}", -(1 + n % 28), n))
    assert uids == [n + 1 for n in expected]


# ----------------------------------------------------------------------------------------- THREAD


def mail(
    uid: int,
    hour: int,
    *,
    mid: str | None = None,
    refs: str | None = None,
    irt: str | None = None,
    subject: str | None = None,
) -> tuple[str, int, datetime.datetime]:
    lines = ["From: a@x.example", f"Date: Fri, 01 Mar 2024 {hour:02d}:00:00 +0000"]
    if mid is not None:
        lines.append(f"Message-ID: <{mid}@x>")
    if refs is not None:
        lines.append("References: " + " ".join(f"<{r}@x>" for r in refs.split()))
    if irt is not None:
        lines.append(f"In-Reply-To: <{irt}@x>")
    lines.append(f"Subject: {subject if subject is not None else f'topic {uid}'}")
    return "\n".join(lines), uid, day(1)


async def threads_of(
    messages: Sequence[tuple[str, int, datetime.datetime]], algorithm: str = "REFERENCES", key: str = "ALL"
) -> str:
    store, view = build(messages)
    command = parse_command(f"a THREAD {algorithm} UTF-8 {key}".encode())
    assert isinstance(command, c.Thread)
    roots = await thread(store, 1, view, command.algorithm, command.key, command.charset)
    return format_threads(roots)


REFERENCES = [
    (
        "chain",
        [mail(10, 1, mid="a"), mail(20, 2, mid="b", refs="a"), mail(30, 3, mid="c", refs="a b")],
        "(10 20 30)",
    ),
    (
        "siblings",
        [mail(10, 1, mid="a"), mail(20, 2, mid="b", refs="a"), mail(30, 3, mid="c", refs="a")],
        "(10 (20)(30))",
    ),
    (
        "parents arrive after their replies",
        [mail(10, 3, mid="c", refs="a b"), mail(20, 2, mid="b", refs="a"), mail(30, 1, mid="a")],
        "(30 20 10)",
    ),
    (
        "a missing parent of two stays as a dummy at the top",
        [
            mail(10, 1, mid="d", refs="zz", subject="Re: lost"),
            mail(20, 2, mid="e", refs="zz", subject="Re: lost"),
        ],
        "((10)(20))",
    ),
    ("a missing parent of one is pruned", [mail(10, 1, mid="f", refs="gone")], "(10)"),
    (
        "a missing parent in the middle is pruned",
        [mail(10, 1, mid="p"), mail(20, 2, mid="q", refs="p mid")],
        "(10 20)",
    ),
    ("In-Reply-To without References", [mail(10, 1, mid="a"), mail(20, 2, mid="b", irt="a")], "(10 20)"),
    (
        "a reply by subject joins the original",
        [mail(10, 1, mid="g", subject="Party"), mail(20, 2, mid="h", subject="Re: Party")],
        "(10 20)",
    ),
    (
        "the original by subject is preferred even when it comes later",
        [mail(10, 1, mid="h", subject="Re: Party"), mail(20, 2, mid="g", subject="Party")],
        "(20 10)",
    ),
    (
        "two originals with one subject go under a dummy",
        [mail(10, 1, mid="i", subject="Lunch"), mail(20, 2, mid="j", subject="Lunch")],
        "((10)(20))",
    ),
    (
        "two replies with one subject go under a dummy",
        [mail(10, 1, mid="i", subject="Re: Lunch"), mail(20, 2, mid="j", subject="RE: lunch")],
        "((10)(20))",
    ),
    (
        "a third message with the subject joins the dummy",
        [
            mail(10, 1, mid="i", subject="Lunch"),
            mail(20, 2, mid="j", subject="Lunch"),
            mail(30, 3, mid="k", subject="Re: Lunch"),
        ],
        "((10)(20)(30))",
    ),
    (
        "subject merge into a dummy made from references",
        [
            mail(10, 2, mid="x1", refs="q", subject="Re: s1"),
            mail(20, 1, mid="x2", refs="q", subject="Re: s1"),
            mail(30, 3, mid="x3", subject="s1"),
        ],
        "((20)(10)(30))",
    ),
    ("no loops", [mail(10, 2, mid="k", refs="l"), mail(20, 1, mid="l", refs="k")], "(20 10)"),
    ("a message referring to itself", [mail(10, 1, mid="s", refs="s")], "(10)"),
    (
        "a duplicate Message-ID gets one of its own",
        [mail(10, 1, mid="dup"), mail(20, 2, mid="dup"), mail(30, 3, mid="n", refs="dup")],
        "(10 30)(20)",
    ),
    ("no Message-ID", [mail(10, 1), mail(20, 2)], "(10)(20)"),
    (
        "the last reference replaces an existing parent",
        [mail(10, 1, mid="r1"), mail(20, 2, mid="r3", refs="r1 r2"), mail(30, 3, mid="r2", refs="rx")],
        "(10)(30 20)",
    ),
    (
        "a message without references has no parent, whatever others say",
        [mail(10, 1, mid="x"), mail(20, 3, mid="c", refs="x a"), mail(30, 2, mid="a")],
        "(10)(30 20)",
    ),
    (
        "threads and siblings by sent date",
        [
            mail(10, 5, mid="a"),
            mail(20, 9, mid="b", refs="a"),
            mail(30, 7, mid="c", refs="a"),
            mail(40, 1, mid="d"),
        ],
        "(40)(10 (30)(20))",
    ),
    (
        "a dummy sorts by its first child",
        [
            mail(10, 5, mid="x1", refs="q", subject="s1"),
            mail(20, 2, mid="x2", refs="q", subject="s1"),
            mail(30, 3, mid="y", subject="other"),
        ],
        "((20)(10))(30)",
    ),
    (
        "equal dates keep mailbox order",
        [mail(10, 1, mid="a"), mail(20, 1, mid="b", refs="a"), mail(30, 1, mid="c", refs="a"), mail(40, 1)],
        "(10 (20)(30))(40)",
    ),
]


@pytest.mark.parametrize(
    ("messages", "expected"), [(m, e) for _, m, e in REFERENCES], ids=[n for n, _, _ in REFERENCES]
)
async def test_thread_references(messages: list[tuple[str, int, datetime.datetime]], expected: str) -> None:
    assert await threads_of(messages) == expected


async def test_thread_dummies_with_one_child_are_gone_from_the_tree() -> None:
    store, view = build([mail(10, 1, mid="f", refs="gone"), mail(20, 2, mid="g", refs="p mid")])
    roots = await thread(store, 1, view, "REFERENCES", c.SearchAll(), "UTF-8")
    assert roots == [ThreadNode(10), ThreadNode(20)]


async def test_thread_only_matching_messages() -> None:
    chain = [mail(10, 1, mid="a"), mail(20, 2, mid="b", refs="a"), mail(30, 3, mid="c", refs="a b")]
    # The root is not searched for: its place is a dummy, pruned since it has one child.
    assert await threads_of(chain, key="NOT UID 10") == "(20 30)"
    assert await threads_of(chain, key="UID 10,30") == "(10 30)"


async def test_thread_ordered_subject() -> None:
    messages = [
        mail(10, 3, subject="Re: apple"),
        mail(20, 1, subject="apple"),
        mail(30, 2, subject="Banana"),
        mail(40, 4, subject="APPLE"),
        mail(50, 5, subject="banana (fwd)"),
    ]
    assert await threads_of(messages, "ORDEREDSUBJECT") == "(20 (10)(40))(30 50)"
    assert await threads_of(messages, "ORDEREDSUBJECT", key="UID 30:*") == "(30 50)(40)"


async def test_thread_bad_charset_and_algorithm() -> None:
    store, view = build([mail(10, 1)])
    with pytest.raises(BadCharset):
        await thread(store, 1, view, "REFERENCES", c.SearchAll(), "KOI8-R")
    with pytest.raises(ValueError, match="thread algorithm"):
        await thread(store, 1, view, "JWZ", c.SearchAll(), "UTF-8")


async def test_thread_deep_chain_is_not_recursive() -> None:
    depth = 2000  # well past Python's recursion limit
    messages = [mail(1, 0, mid="m1")] + [
        mail(n, 0, irt=f"m{n - 1}", mid=f"m{n}") for n in range(2, depth + 1)
    ]
    assert await threads_of(messages) == "(" + " ".join(str(n) for n in range(1, depth + 1)) + ")"


async def test_thread_deep_chain_is_linear() -> None:
    # Each reply names only its parent: linking used to walk up the whole chain for every message
    # (quadratic); a container without children needs no loop check.
    depth = 20_000
    messages = [mail(1, 0, mid="m1")] + [
        mail(n, 0, refs=f"m{n - 1}", mid=f"m{n}") for n in range(2, depth + 1)
    ]
    store, view = build(messages)
    started = time.process_time()
    roots = await thread(store, 1, view, "REFERENCES", c.SearchAll(), "UTF-8")
    assert time.process_time() - started < 1.5  # measured: 0.4 s; the quadratic version took 3.6 s
    assert format_threads(roots) == "(" + " ".join(str(n) for n in range(1, depth + 1)) + ")"


async def test_thread_uses_the_last_max_references() -> None:
    # Message 2 names message 1 first, then 150 missing ancestors: only the last MAX_REFERENCES (all
    # missing, pruned as dummies) place it, so it starts a thread of its own.
    missing = " ".join(f"gone{k}" for k in range(150))
    messages = [mail(1, 1, mid="a"), mail(2, 2, mid="b", refs=f"a {missing}")]
    assert MAX_REFERENCES == 100
    assert await threads_of(messages) == "(1)(2)"
    messages = [mail(1, 1, mid="a"), mail(2, 2, mid="b", refs=f"a {' '.join(missing.split()[:98])}")]
    assert await threads_of(messages) == "(1 2)"


# ----------------------------------------------------------------------------------------- format


def chain(*uids: int, tail: tuple[ThreadNode, ...] = ()) -> ThreadNode:
    node = ThreadNode(uids[-1], tail)
    for uid in reversed(uids[:-1]):
        node = ThreadNode(uid, (node,))
    return node


def test_format_rfc5256_example() -> None:
    # RFC 5256 §4: "(2)(3 6 (4 23)(44 7 96))"
    roots = [ThreadNode(2), chain(3, 6, tail=(chain(4, 23), chain(44, 7, 96)))]
    assert format_threads(roots) == "(2)(3 6 (4 23)(44 7 96))"
    assert format_threads([ThreadNode(None, (ThreadNode(3), ThreadNode(5)))]) == "((3)(5))"
    assert format_threads([ThreadNode(None, (chain(3, 4), ThreadNode(5)))]) == "((3 4)(5))"
    assert format_threads([]) == ""


def test_format_maps_uids_to_sequence_numbers() -> None:
    roots = [chain(100, tail=(ThreadNode(200), ThreadNode(300)))]
    assert format_threads(roots, {100: 1, 200: 2, 300: 3}.__getitem__) == "(1 (2)(3))"


def test_format_deep_nesting_is_not_recursive() -> None:
    node = ThreadNode(0)
    for n in range(1, 3000):
        node = ThreadNode(n, (ThreadNode(-n), node))  # every level branches
    text = format_threads([node])
    assert text.startswith("(2999 (-2999)(2998 (-2998)(")
    assert text.count("(") == text.count(")") == 2 * 2999 + 1
