"""IMAP SEARCH evaluation: every RFC 9051 §6.4.4 key against real messages, what is read for which key,
streaming decoders split at every offset, and a 100 000-message mailbox."""

from __future__ import annotations

import base64
import binascii
import datetime
import io
import quopri
from collections.abc import Callable, Sequence

import pytest

from surat.imapd import search as search_module
from surat.imapd.search import BATCH, BadCharset, SimpleView, check_charset, decode_header_value, search
from surat.message.info import MessageInfo, compute_message_info
from surat.message.transfer import Base64Decoder, QuotedPrintableDecoder
from surat.proto.imap import commands as c
from surat.proto.imap.parser import parse_command
from surat.store.base import MessageRecord, MessageSummary
from surat.store.memoryblobs import BytesBlobReader, MemoryBlobStore

# ----------------------------------------------------------------------------------------- fakes


class FakeBlobs(MemoryBlobStore):
    """Records which blobs were opened."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    async def open(self, blob_id: str) -> BytesBlobReader:
        self.opened.append(blob_id)
        return await super().open(blob_id)


class FakeStore:
    """An in-memory message source that counts what it is asked for."""

    def __init__(self) -> None:
        self._blobs = FakeBlobs()
        self.records: dict[int, MessageRecord] = {}
        self.calls: list[list[int]] = []  # the UIDs of each get_messages call

    @property
    def blobs(self) -> FakeBlobs:
        return self._blobs

    def add(self, summary: MessageSummary, raw: bytes, info: MessageInfo | None = None) -> None:
        blob_id = f"blob-{summary.uid}"
        self._blobs.data[blob_id] = raw
        self.records[summary.uid] = MessageRecord(
            mailbox_id=1,
            uid=summary.uid,
            modseq=summary.modseq,
            flags=summary.flags,
            size=summary.size,
            internal_date=summary.internal_date,
            blob_id=blob_id,
            info=info or compute_message_info(io.BytesIO(raw)),
        )

    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        assert mailbox_id == 1
        self.calls.append(list(uids))
        return [self.records[u] for u in uids if u in self.records]


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def b64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


# ----------------------------------------------------------------------------------------- mailbox

M1 = crlf(
    """From: Alice Example <alice@example.com>
To: Bob <bob@example.org>
Cc: carol@example.net
Subject: Hello world
Date: Fri, 01 Mar 2024 10:00:00 +0000
Message-ID: <m1@example.com>
X-Mailer: Fancy Client 1.0

The quick brown fox jumps over the lazy dog.
"""
)

GREETING = "Grüße aus München, wir sehen uns im Café.\r\n".encode()
M2 = crlf(
    f"""From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.de>
To: alice@example.com
Bcc: secret@example.com
Subject: =?UTF-8?Q?Caf=C3=A9_meeting?=
Date: Sat, 02 Mar 2024 23:30:00 -0800
Message-ID: <m2@example.de>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64_lines(GREETING)}
--b1
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<p>Gr=FC=DFe aus M=FCnchen mit einer Zeile die weich umbrochen=
 wird</p>
--b1--
"""
)

M3 = crlf(
    f"""From: bob@example.org
To: alice@example.com
Subject: Re: Hello world
Date: Mon, 04 Mar 2024 08:00:00 +0100
Message-ID: <m3@example.org>
In-Reply-To: <m1@example.com>
X-Priority: 1 (Highest)
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Une caf=E9 cr=E8me, s'il vous pla=EEt.
--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

{b64_lines(b"hidden secretword inside")}
--outer--
"""
)

M4 = crlf(
    """From: carol@example.net
To: bob@example.org
Subject: Fwd: Inner subject
Date: Tue, 05 Mar 2024 12:00:00 +0000
Message-ID: <m4@example.net>
Content-Type: multipart/mixed; boundary=fw

--fw
Content-Type: text/plain

See below.
--fw
Content-Type: message/rfc822

From: dave@example.com
Subject: Inner subject
Date: Mon, 04 Mar 2024 09:00:00 +0000

inner payload text
--fw--
"""
)

# No Date, no Subject; a needle straddling the 64 KiB read boundary and a large base64 part.
_FILLER = "abcdefghij" * 6553  # 65 530 octets
M5 = (
    crlf("From: eve@example.com\nTo: bob@example.org\nContent-Type: text/plain\n\n")
    + (_FILLER + "NEEDLE-ACROSS the boundary\r\n" + "z" * 40000 + "\r\n").encode()
)

UIDS = [3, 5, 8, 13, 21]  # sequence numbers 1..5; gaps catch any confusion of the two
UTC = datetime.UTC
PLUS1 = datetime.timezone(datetime.timedelta(hours=1))


def summaries() -> list[MessageSummary]:
    flags: list[set[str]] = [
        {"\\Seen", "\\Answered"},
        {"\\Flagged", "$Important"},
        {"\\Seen", "\\Deleted"},
        {"\\Draft", "Work"},
        set(),
    ]
    dates = [
        datetime.datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        datetime.datetime(2024, 3, 3, 8, 0, tzinfo=UTC),
        # 4 March in its own zone, 3 March in UTC: the date "disregarding time and timezone" is the 4th.
        datetime.datetime(2024, 3, 4, 0, 30, tzinfo=PLUS1),
        datetime.datetime(2024, 3, 5, 9, 0, tzinfo=UTC),
        datetime.datetime(2024, 3, 6, 9, 0, tzinfo=UTC),
    ]
    raws = [M1, M2, M3, M4, M5]
    return [
        MessageSummary(uid, 10 * (n + 1), frozenset(flags[n]), len(raws[n]), dates[n])
        for n, uid in enumerate(UIDS)
    ]


def mailbox(saved: Sequence[int] | None = None) -> tuple[FakeStore, SimpleView]:
    store = FakeStore()
    for summary, raw in zip(summaries(), [M1, M2, M3, M4, M5], strict=True):
        store.add(summary, raw)
    return store, SimpleView.of(summaries(), saved)


def key_of(criteria: str | bytes) -> c.SearchKey:
    raw = criteria.encode() if isinstance(criteria, str) else criteria
    command = parse_command(b"a SEARCH CHARSET UTF-8 " + raw)
    assert isinstance(command, c.SearchCommand)
    return command.key


async def run(criteria: str | bytes, saved: Sequence[int] | None = None) -> list[int]:
    """The matching sequence numbers."""
    store, view = mailbox(saved)
    uids = await search(store, 1, view, key_of(criteria), charset="UTF-8")
    assert uids == sorted(uids)
    return [UIDS.index(u) + 1 for u in uids]


CASES: list[tuple[str, list[int]]] = [
    ("ALL", [1, 2, 3, 4, 5]),
    # flags
    ("SEEN", [1, 3]),
    ("UNSEEN", [2, 4, 5]),
    ("ANSWERED", [1]),
    ("UNANSWERED", [2, 3, 4, 5]),
    ("DELETED", [3]),
    ("UNDELETED", [1, 2, 4, 5]),
    ("DRAFT", [4]),
    ("UNDRAFT", [1, 2, 3, 5]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 3, 4, 5]),
    ("KEYWORD $important", [2]),  # keywords compare case-insensitively
    ("KEYWORD Work", [4]),
    ("UNKEYWORD work", [1, 2, 3, 5]),
    ("KEYWORD nosuch", []),
    # RFC 9051: no \Recent in IMAP4rev2, so nothing is recent or new and everything is old
    ("RECENT", []),
    ("NEW", []),
    ("OLD", [1, 2, 3, 4, 5]),
    # sizes are strict comparisons
    ("LARGER 100000", [5]),
    ("SMALLER 100000", [1, 2, 3, 4]),
    (f"LARGER {len(M1) - 1}", [1, 2, 3, 4, 5]),
    (f"LARGER {len(M1)}", [2, 3, 4, 5]),
    (f"SMALLER {len(M1)}", []),
    (f"SMALLER {len(M1) + 1}", [1]),
    # internal dates, disregarding time and timezone
    ("BEFORE 4-Mar-2024", [1, 2]),
    ("ON 4-Mar-2024", [3]),
    ("ON 3-Mar-2024", [2]),
    ("SINCE 4-Mar-2024", [3, 4, 5]),
    # Date: header as written (message 2 is 3 March in UTC but 2 March where it was sent)
    ("SENTBEFORE 2-Mar-2024", [1]),
    ("SENTON 2-Mar-2024", [2]),
    ("SENTSINCE 4-Mar-2024", [3, 4]),
    ("SENTBEFORE 1-Jan-2100", [1, 2, 3, 4]),  # message 5 has no Date: and matches no SENT* key
    # address and subject fields, RFC 2047 decoded, case-insensitive substrings
    ("FROM alice", [1]),
    ('FROM "JÜRGEN"', [2]),
    ("FROM juergen@example.de", [2]),
    ("TO alice@example.com", [2, 3]),
    ("CC carol", [1]),
    ("BCC secret", [2]),
    ("BCC nobody", []),
    ('SUBJECT "café"', [2]),
    ('SUBJECT "hello WORLD"', [1, 3]),
    ('SUBJECT ""', [1, 2, 3, 4]),  # every message that has the field
    # other header fields, read from the message's header
    ("HEADER X-Priority highest", [3]),
    ('HEADER X-Mailer ""', [1]),
    ("HEADER message-id m4@", [4]),
    ("HEADER In-Reply-To <m1@example.com>", [3]),
    ('HEADER X-Missing ""', []),
    ("HEADER Subject inner", [4]),
    # BODY: decoded text parts (base64, quoted-printable, charsets), embedded message headers
    ("BODY fox", [1]),
    ('BODY "münchen"', [2]),
    ('BODY "umbrochen wird"', [2]),  # a quoted-printable soft line break
    ('BODY "crème"', [3]),  # ISO-8859-1 quoted-printable
    ("BODY secretword", []),  # inside a non-text attachment
    ('BODY "inner payload"', [4]),
    ("BODY dave@example.com", [4]),  # the header of an attached message is body text
    ("BODY hello", []),  # only in Subject:
    ("BODY data.bin", []),  # only in MIME header fields
    ("BODY needle-across", [5]),
    ('BODY ""', [1, 2, 3, 4, 5]),
    # TEXT: header and body, MIME header fields included
    ("TEXT hello", [1, 3]),
    ("TEXT x-priority", [3]),
    ('TEXT "data.bin"', [3]),
    ('TEXT "café"', [2, 3]),
    ("TEXT needle-across", [5]),
    ("TEXT nowhere-at-all", []),
    # sequence numbers and UIDs
    ("1:2", [1, 2]),
    ("2,4:*", [2, 4, 5]),
    ("*", [5]),
    ("4:2", [2, 3, 4]),
    ("UID 5:13", [2, 3, 4]),
    ("UID *", [5]),
    ("UID 100:*", [5]),  # `*` is the highest UID: 100:* is 21:100
    ("UID 22:30", []),
    ("UID 1:4", [1]),
    # RFC 7162 MODSEQ
    ("MODSEQ 30", [3, 4, 5]),
    ('MODSEQ "/flags/\\\\draft" all 41', [5]),
    # NOT, OR, AND and nesting
    ("NOT SEEN", [2, 4, 5]),
    ("OR SEEN FLAGGED", [1, 2, 3]),
    ('OR FROM alice BODY "crème"', [1, 3]),
    ('OR BODY "crème" FROM alice', [1, 3]),
    ("NOT BODY fox", [2, 3, 4, 5]),
    ("NOT NOT BODY fox", [1]),
    ("(SEEN SUBJECT hello)", [1, 3]),
    ("SEEN NOT SUBJECT re:", [1]),
    ('OR 1 BODY "münchen"', [1, 2]),
    ('UNSEEN OR SUBJECT "café" TEXT needle', [2, 5]),
    ("NOT (OR DELETED DRAFT) SINCE 2-Mar-2024", [2, 5]),
    ("2:* UNDELETED FROM example", [2, 4, 5]),
    ('OR (FLAGGED TEXT "münchen") (UID 21 BODY boundary)', [2, 5]),
]


@pytest.mark.parametrize(("criteria", "expected"), CASES, ids=[c for c, _ in CASES])
async def test_search_key(criteria: str, expected: list[int]) -> None:
    assert await run(criteria) == expected


async def test_every_search_key_kind_is_covered() -> None:
    kinds: set[type] = set()

    def walk(key: c.SearchKey) -> None:
        kinds.add(type(key))
        if isinstance(key, c.SearchNot):
            walk(key.key)
        elif isinstance(key, c.SearchOr):
            walk(key.left)
            walk(key.right)
        elif isinstance(key, c.SearchAnd):
            for k in key.keys:
                walk(k)

    for criteria, _ in CASES:
        walk(key_of(criteria))
    assert kinds == set(c.SearchKey.__args__)


async def test_saved_result() -> None:
    # RFC 5182 §2.1: `$` is the saved UIDs, whether used as a sequence set or with UID.
    assert await run("$", saved=[8, 21, 99]) == [3, 5]
    assert await run("UID $", saved=[8, 21]) == [3, 5]
    assert await run("NOT $", saved=[8]) == [1, 2, 4, 5]
    assert await run("$", saved=None) == []
    assert await run("OR $ FLAGGED", saved=[]) == [2]


async def test_charsets() -> None:
    store, view = mailbox()
    key = key_of("FROM alice")
    for charset in (None, "US-ASCII", "UTF-8", "utf-8"):
        assert await search(store, 1, view, key, charset=charset) == [3]
    # The parser refuses other charsets; search() still does for callers that skip the parser.
    with pytest.raises(BadCharset) as info:
        await search(store, 1, view, key, charset="ISO-8859-1")
    assert info.value.supported == ("UTF-8", "US-ASCII")
    with pytest.raises(BadCharset):
        check_charset("KOI8-R")


async def test_empty_mailbox() -> None:
    store = FakeStore()
    view = SimpleView.of([])
    for criteria in ("ALL", "*", "UID *", "UID 1:*", "1:*", "BODY x", "SUBJECT y", "$"):
        assert await search(store, 1, view, key_of(criteria), charset=None) == []
    assert store.calls == []


# ----------------------------------------------------------------------------------------- what is read


async def test_flag_keys_read_nothing_from_the_store() -> None:
    store, view = mailbox()
    key = key_of("OR (UNSEEN FLAGGED) (SEEN LARGER 10 SINCE 1-Jan-2020 MODSEQ 5 UID 1:* NOT 99)")
    assert await search(store, 1, view, key, charset=None) == [3, 5, 8]
    assert store.calls == []
    assert store.blobs.opened == []


async def test_cheap_keys_narrow_what_is_fetched() -> None:
    store, view = mailbox()
    assert await search(store, 1, view, key_of('UNSEEN SUBJECT "café"'), charset=None) == [5]
    assert store.calls == [[5, 13, 21]]  # only the unseen messages were fetched
    assert store.blobs.opened == []  # Subject comes from the stored MessageInfo


async def test_header_keys_do_not_open_message_files() -> None:
    store, view = mailbox()
    key = key_of("OR OR FROM bob TO bob OR CC x OR BCC y OR SUBJECT z SENTON 1-Mar-2024")
    assert await search(store, 1, view, key, charset=None) == [3, 8, 13, 21]
    assert store.blobs.opened == []


async def test_body_keys_open_only_undecided_messages() -> None:
    store, view = mailbox()
    assert await search(store, 1, view, key_of("OR SEEN BODY fox"), charset=None) == [3, 8]
    assert sorted(store.blobs.opened) == ["blob-13", "blob-21", "blob-5"]
    store.blobs.opened.clear()
    # A header key that decides first spares the file: only From: bob messages are opened.
    assert await search(store, 1, view, key_of('FROM bob BODY "crème"'), charset=None) == [8]
    assert store.blobs.opened == ["blob-8"]


async def test_messages_expunged_meanwhile_do_not_match_header_keys() -> None:
    store, view = mailbox()
    del store.records[5]
    assert await search(store, 1, view, key_of("FROM example"), charset=None) == [3, 8, 13, 21]
    assert await search(store, 1, view, key_of("NOT BODY fox"), charset=None) == [8, 13, 21]
    assert await search(store, 1, view, key_of("FLAGGED"), charset=None) == [5]  # the session's own view


async def test_unreadable_message_file_does_not_match() -> None:
    store, view = mailbox()
    del store.blobs.data["blob-3"]  # expunged meanwhile: open() raises NotFound
    assert await search(store, 1, view, key_of("TEXT example"), charset=None) == [5, 8, 13, 21]


# ----------------------------------------------------------------------------------------- decoding


def test_decode_header_value() -> None:
    assert decode_header_value("=?UTF-8?Q?Caf=C3=A9?=  au\t lait") == "Café au lait"
    assert decode_header_value(b"caf\xe9") == "café"  # unlabelled Latin-1
    assert decode_header_value("=?bogus?Q?x?=") == "=?bogus?Q?x?="


BASE64_TEXT = "Grüße, naïve café! ".encode() * 7


@pytest.mark.parametrize("wrap", [0, 1, 76])
def test_base64_decoder_split_at_every_offset(wrap: int) -> None:
    encoded = base64.b64encode(BASE64_TEXT)
    if wrap:
        encoded = b"\r\n".join(encoded[i : i + wrap] for i in range(0, len(encoded), wrap)) + b"\r\n"
    for cut in range(len(encoded) + 1):
        decoder = Base64Decoder()
        out = decoder.feed(encoded[:cut]) + decoder.feed(encoded[cut:]) + decoder.flush()
        assert out == BASE64_TEXT, cut


def test_base64_decoder_tolerates_missing_padding_and_garbage() -> None:
    decoder = Base64Decoder()
    assert decoder.feed(b"aGVsbG8*gd29y!bGQ") + decoder.flush() == b"hello world"


QP_TEXT = b"caf=E9 cr=E8me, a long line that is softly=\r\n broken and =3D an equals sign\r\nnext line=\nend"


def test_quoted_printable_decoder_split_at_every_offset() -> None:
    expected = quopri.decodestring(QP_TEXT)
    for cut in range(len(QP_TEXT) + 1):
        decoder = QuotedPrintableDecoder()
        out = decoder.feed(QP_TEXT[:cut]) + decoder.feed(QP_TEXT[cut:]) + decoder.flush()
        assert out == expected, cut


def test_quoted_printable_decoder_long_line_without_break() -> None:
    line = b"=41" * 50000  # one 150 000-octet line: decoded in pieces, never splitting "=41"
    decoder = QuotedPrintableDecoder()
    out = b"".join(decoder.feed(line[i : i + 4099]) for i in range(0, len(line), 4099)) + decoder.flush()
    assert out == b"A" * 50000
    assert binascii.a2b_qp(line) == out


def test_finder_split_at_every_offset() -> None:
    text = "Die STRASSE ist lang, l'été est chaud"
    needles = {"straße", "été", "lang,", "absent"}
    for cut in range(len(text) + 1):
        finder = search_module._Finder({search_module.fold(n) for n in needles})
        finder.feed(text[:cut])
        finder.feed(text[cut:])
        assert finder.found == {"strasse", "été", "lang,"}, cut


async def test_base64_body_across_read_chunks() -> None:
    text = ("lorem ipsum dolor " * 5000).encode()
    body = text[:49000] + b"ZEBRA-CROSSING" + text[49000:]
    raw = crlf("From: a@example.com\nContent-Transfer-Encoding: base64\n\n") + base64.encodebytes(body)
    store = FakeStore()
    summary = MessageSummary(1, 1, frozenset(), len(raw), datetime.datetime(2024, 1, 1, tzinfo=UTC))
    store.add(summary, raw)
    view = SimpleView.of([summary])
    assert await search(store, 1, view, key_of("BODY zebra-crossing"), charset=None) == [1]
    assert await search(store, 1, view, key_of("BODY zebra-crossings"), charset=None) == []


@pytest.mark.parametrize(
    ("encoding", "body", "needle", "found"),
    [
        # RFC 2045 §6.7 rules 3 and 5: blanks a relay added after a soft break's "=" leave it a soft
        # break (the search decoder of before kept "= " and the line break, and missed the word)
        ("quoted-printable", b"a long wo= \r\nrd here\r\n", "BODY word", True),
        # note (2): "==41" is a kept "=" then "=41" as written, not "=" + "A"
        ("quoted-printable", b"x ==41 y\r\n", 'BODY "=A"', False),
        # RFC 2045 §6.8: the first "=" ends the data; what follows is not base64 (was decoded as such)
        (
            "base64",
            base64.b64encode(b"hello") + b"\r\n" + base64.b64encode(b"ghost") + b"\r\n",
            "BODY ghost",
            False,
        ),
        ("base64", base64.b64encode(b"hello") + b"\r\n", "BODY hello", True),
    ],
)
async def test_body_search_decodes_as_binary_does(
    encoding: str, body: bytes, needle: str, found: bool
) -> None:
    raw = crlf(f"From: a@example.com\nContent-Transfer-Encoding: {encoding}\n\n") + body
    store = FakeStore()
    summary = MessageSummary(1, 1, frozenset(), len(raw), datetime.datetime(2024, 1, 1, tzinfo=UTC))
    store.add(summary, raw)
    view = SimpleView.of([summary])
    assert await search(store, 1, view, key_of(needle), charset=None) == ([1] if found else [])


# ----------------------------------------------------------------------------------------- 100 000 messages

BIG = 100_000


def big_mailbox() -> tuple[FakeStore, SimpleView, list[MessageSummary]]:
    base = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    keyed = frozenset({"$Later"})
    flag_sets = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "\\Flagged"}), keyed]
    messages = [
        MessageSummary(
            uid=2 * n + 1,
            modseq=n + 1,
            flags=flag_sets[n % 7 % 4],
            size=500 + n % 1000,
            internal_date=base + datetime.timedelta(hours=n),
        )
        for n in range(BIG)
    ]
    store = FakeStore()
    templates = [
        compute_message_info(io.BytesIO(crlf(f"From: user{k}@example.com\nSubject: topic {k}\n\nbody\n")))
        for k in range(10)
    ]
    hit = compute_message_info(io.BytesIO(crlf("From: boss@example.com\nSubject: the NEEDLE\n\nbody\n")))
    for n, m in enumerate(messages):
        info = hit if n % 997 == 0 else templates[n % 10]
        store.records[m.uid] = MessageRecord(
            1, m.uid, m.modseq, m.flags, m.size, m.internal_date, "none", info
        )
    return store, SimpleView.of(messages), messages


@pytest.fixture(scope="module")
def big() -> tuple[FakeStore, SimpleView, list[MessageSummary]]:
    return big_mailbox()


async def test_big_mailbox_flag_searches_never_call_the_store(
    big: tuple[FakeStore, SimpleView, list[MessageSummary]],
) -> None:
    store, view, messages = big
    store.calls.clear()
    since = datetime.date(2025, 6, 1)
    cases: list[tuple[str, Callable[[int, MessageSummary], bool]]] = [
        ("UNSEEN", lambda n, m: "\\Seen" not in m.flags),
        ("OR FLAGGED KEYWORD $later", lambda n, m: "\\Flagged" in m.flags or "$Later" in m.flags),
        ("UID 150001:* SMALLER 600", lambda n, m: m.uid >= 150001 and m.size < 600),
        ("NOT DELETED 1:1000", lambda n, m: n < 1000),
        (
            "SINCE 1-Jun-2025 UNSEEN MODSEQ 90000",
            lambda n, m: m.internal_date.date() >= since and "\\Seen" not in m.flags and m.modseq >= 90000,
        ),
    ]
    for criteria, oracle in cases:
        expected = [m.uid for n, m in enumerate(messages) if oracle(n, m)]
        assert await search(store, 1, view, key_of(criteria), charset=None) == expected, criteria
    assert store.calls == []


async def test_big_mailbox_header_search_fetches_in_bounded_batches(
    big: tuple[FakeStore, SimpleView, list[MessageSummary]],
) -> None:
    store, view, messages = big
    store.calls.clear()
    expected = [m.uid for n, m in enumerate(messages) if n % 997 == 0]
    assert await search(store, 1, view, key_of("SUBJECT needle"), charset=None) == expected
    assert max(len(call) for call in store.calls) <= BATCH
    fetched = [uid for call in store.calls for uid in call]
    assert sorted(fetched) == [m.uid for m in messages]  # each message once
    store.calls.clear()
    unseen = [(n, m) for n, m in enumerate(messages) if "\\Seen" not in m.flags]
    expected = [m.uid for n, m in unseen if n % 997 == 0]
    assert await search(store, 1, view, key_of("UNSEEN FROM boss"), charset=None) == expected
    assert sum(len(call) for call in store.calls) == len(unseen)
    assert max(len(call) for call in store.calls) <= BATCH
