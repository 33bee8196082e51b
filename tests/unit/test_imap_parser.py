"""The IMAP command grammar: one table of RFC examples per command, each also fed through the reader
with the input split at every offset."""

from __future__ import annotations

import datetime

import pytest

from surat.proto.imap import commands as c
from surat.proto.imap.parser import CommandSyntaxError, parse_command, parse_date_time
from surat.proto.imap.reader import NEED_DATA, CommandReader, Event, LiteralChunk, NeedLiteral
from surat.proto.imap.seqset import STAR, SequenceSet

S = SequenceSet


def seq(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


def events_for(chunks: list[bytes]) -> list[Event]:
    """Feed ``chunks`` one by one, accepting every synchronizing literal; LiteralChunks are merged."""
    reader = CommandReader()
    out: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, NeedLiteral):
                if event.synchronizing:
                    reader.accept_literal()
                continue
            if isinstance(event, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
                out[-1] = LiteralChunk(out[-1].data + event.data)
                continue
            out.append(event)
    return out


def parse_split(line: bytes) -> c.Command:
    """Parse directly and through the reader at every split point; all must agree."""
    direct = parse_command(line)
    wire = line + b"\r\n"
    for i in range(len(wire) + 1):
        assert events_for([wire[:i], wire[i:]]) == [direct], f"split at {i}"
    return direct


COMMANDS: list[tuple[bytes, c.Command]] = [
    # RFC 9051 §6.1 any state
    (b"a001 CAPABILITY", c.Capability("a001")),
    (b"a002 noop", c.Noop("a002")),
    (b"A023 LOGOUT", c.Logout("A023")),
    (b"a001 STARTTLS", c.StartTLS("a001")),
    # §6.2.2 AUTHENTICATE, RFC 4959 SASL-IR
    (b"A001 AUTHENTICATE GSSAPI", c.Authenticate("A001", "GSSAPI")),
    (b"a AUTHENTICATE plain AGZyZWQAc2VjcmV0", c.Authenticate("a", "PLAIN", b"\x00fred\x00secret")),
    (b"a AUTHENTICATE PLAIN =", c.Authenticate("a", "PLAIN", b"")),
    (b"a AUTHENTICATE SCRAM-SHA-256", c.Authenticate("a", "SCRAM-SHA-256")),
    # §6.2.3 LOGIN
    (b"a001 LOGIN SMITH SESAME", c.Login("a001", "SMITH", "SESAME")),
    (b'a LOGIN "fred@example.com" "p\\"w\\\\d"', c.Login("a", "fred@example.com", 'p"w\\d')),
    (b"a LOGIN {4}\r\nuser {3+}\r\npwd", c.Login("a", "user", "pwd")),
    (b'a LOGIN "j\xc3\xb6rg" pass]', c.Login("a", "j\u00f6rg", "pass]")),
    # RFC 5161 ENABLE
    (b"t2 ENABLE CONDSTORE qresync", c.Enable("t2", ("CONDSTORE", "QRESYNC"))),
    (b"t ENABLE UTF8=ACCEPT", c.Enable("t", ("UTF8=ACCEPT",))),
    # RFC 4978 COMPRESS
    (b"a COMPRESS DEFLATE", c.Compress("a", "DEFLATE")),
    # RFC 2971 ID
    (
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")',
        c.Id("a023", (("name", "sodr"), ("version", "19.34"), ("vendor", "Pink Floyd Music Limited"))),
    ),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("name" NIL)', c.Id("a", (("name", None),))),
    (b"a ID ()", c.Id("a", ())),
    # §6.3.2 SELECT / EXAMINE, RFC 7162 CONDSTORE / QRESYNC
    (b"A142 SELECT INBOX", c.Select("A142", "INBOX")),
    (b"A142 SELECT inbox", c.Select("A142", "INBOX")),
    (b'a SELECT "Sent Items"', c.Select("a", "Sent Items")),
    (b"a SELECT INBOX/Sub", c.Select("a", "INBOX/Sub")),
    (b"A932 EXAMINE blurdybloop", c.Examine("A932", "blurdybloop")),
    (b"a SELECT INBOX (CONDSTORE)", c.Select("a", "INBOX", condstore=True)),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        c.Select(
            "A02",
            "INBOX",
            qresync=c.QResyncParams(67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541))),
        ),
    ),
    (
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
        b"15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
        c.Select(
            "B04",
            "INBOX",
            qresync=c.QResyncParams(
                67890007,
                90060115194045000,
                seq((1, 29997)),
                seq((5000, 5000), (7500, 7500), (9000, 9000), (9990, 9999)),
                SequenceSet.from_numbers([15000, 22500, 27000, *range(29970, 29998, 3)]),
            ),
        ),
    ),
    (
        b"a EXAMINE INBOX (QRESYNC (1 2 (1:2 10:11)) CONDSTORE)",
        c.Examine("a", "INBOX", True, c.QResyncParams(1, 2, None, seq((1, 2)), seq((10, 11)))),
    ),
    # §6.3.4 CREATE, RFC 6154 USE
    (b"A003 CREATE owatagusiam/", c.Create("A003", "owatagusiam/")),
    (b"t1 CREATE MySpecialArchive (USE (\\archive))", c.Create("t1", "MySpecialArchive", ("\\Archive",))),
    (b"t CREATE X (USE (\\Sent \\Trash))", c.Create("t", "X", ("\\Sent", "\\Trash"))),
    (b"A682 DELETE blurdybloop", c.Delete("A682", "blurdybloop")),
    (b"A683 RENAME blurdybloop sarasoop", c.Rename("A683", "blurdybloop", "sarasoop")),
    (b"A685 RENAME INBOX old-mail", c.Rename("A685", "INBOX", "old-mail")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", c.Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", c.Unsubscribe("A002", "#news.comp.mail.mime")),
    # §6.3.9 LIST, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
    (b'A101 LIST "" ""', c.List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""', c.List("A102", "#news.comp.mail.misc", ("",))),
    (b"A202 LIST ~/Mail/ %", c.List("A202", "~/Mail/", ("%",))),
    (b'a LIST "" *', c.List("a", "", ("*",))),
    (b'a LIST "" INBOX/%/foo*', c.List("a", "", ("INBOX/%/foo*",))),
    (
        b'A02 LIST (SUBSCRIBED) "" "*"',
        c.List("A02", "", ("*",), selection=frozenset({"SUBSCRIBED"}), extended=True),
    ),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)',
        c.List("A03", "", ("%",), returns=frozenset({"CHILDREN"}), extended=True),
    ),
    (
        b'A04 LIST (REMOTE SUBSCRIBED RECURSIVEMATCH) "" ("%" "Other/%") RETURN (SUBSCRIBED CHILDREN)',
        c.List(
            "A04",
            "",
            ("%", "Other/%"),
            selection=frozenset({"REMOTE", "SUBSCRIBED", "RECURSIVEMATCH"}),
            returns=frozenset({"SUBSCRIBED", "CHILDREN"}),
            extended=True,
        ),
    ),
    (
        b'A05 LIST (RECURSIVEMATCH SPECIAL-USE) "" *',
        c.List("A05", "", ("*",), selection=frozenset({"RECURSIVEMATCH", "SPECIAL-USE"}), extended=True),
    ),
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))',
        c.List("A01", "", ("%",), status=("MESSAGES", "UNSEEN"), extended=True),
    ),
    (
        b't1 LIST "" "%" RETURN (SPECIAL-USE STATUS (size))',
        c.List("t1", "", ("%",), returns=frozenset({"SPECIAL-USE"}), status=("SIZE",), extended=True),
    ),
    (
        b'a LIST (SPECIAL-USE) "" "*"',
        c.List("a", "", ("*",), selection=frozenset({"SPECIAL-USE"}), extended=True),
    ),
    (b'A002 LSUB "#news." "comp.mail.*"', c.Lsub("A002", "#news.", "comp.mail.*")),
    (b"a NAMESPACE", c.Namespace("a")),
    # §6.3.11 STATUS, RFC 8438, RFC 7162, RFC 7889
    (b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)", c.Status("A042", "blurdybloop", ("UIDNEXT", "MESSAGES"))),
    (
        b"a STATUS INBOX (messages uidnext uidvalidity unseen deleted size highestmodseq appendlimit recent)",
        c.Status(
            "a",
            "INBOX",
            (
                "MESSAGES",
                "UIDNEXT",
                "UIDVALIDITY",
                "UNSEEN",
                "DELETED",
                "SIZE",
                "HIGHESTMODSEQ",
                "APPENDLIMIT",
                "RECENT",
            ),
        ),
    ),
    (b"a IDLE", c.Idle("a")),
    (b"FXXZ CHECK", c.Check("FXXZ")),
    (b"A341 CLOSE", c.Close("A341")),
    (b"a UNSELECT", c.Unselect("a")),
    (b"A202 EXPUNGE", c.Expunge("A202")),
    (b"A003 UID EXPUNGE 3000:3002", c.UidExpunge("A003", seq((3000, 3002)))),
    # §6.4.5 FETCH
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            "A654",
            False,
            seq((2, 4)),
            (
                c.FetchSimple(c.FetchAttr.FLAGS),
                c.FetchBody(c.Section((), "HEADER.FIELDS", ("DATE", "FROM"))),
            ),
        ),
    ),
    (
        b"a FETCH 1 ALL",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(
                c.FetchSimple(x)
                for x in (
                    c.FetchAttr.FLAGS,
                    c.FetchAttr.INTERNALDATE,
                    c.FetchAttr.RFC822_SIZE,
                    c.FetchAttr.ENVELOPE,
                )
            ),
            macro="ALL",
        ),
    ),
    (
        b"a FETCH 1:* fast",
        c.Fetch(
            "a",
            False,
            seq((1, STAR)),
            tuple(
                c.FetchSimple(x)
                for x in (c.FetchAttr.FLAGS, c.FetchAttr.INTERNALDATE, c.FetchAttr.RFC822_SIZE)
            ),
            macro="FAST",
        ),
    ),
    (
        b"a FETCH * FULL",
        c.Fetch(
            "a",
            False,
            seq((STAR, STAR)),
            tuple(
                c.FetchSimple(x)
                for x in (
                    c.FetchAttr.FLAGS,
                    c.FetchAttr.INTERNALDATE,
                    c.FetchAttr.RFC822_SIZE,
                    c.FetchAttr.ENVELOPE,
                    c.FetchAttr.BODY,
                )
            ),
            macro="FULL",
        ),
    ),
    (b"a FETCH 1 BODY", c.Fetch("a", False, seq((1, 1)), (c.FetchSimple(c.FetchAttr.BODY),))),
    (b"a FETCH 1 body[]", c.Fetch("a", False, seq((1, 1)), (c.FetchBody(c.Section()),))),
    (
        b"a FETCH 1 (UID RFC822.SIZE BODYSTRUCTURE ENVELOPE INTERNALDATE MODSEQ)",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(
                c.FetchSimple(x)
                for x in (
                    c.FetchAttr.UID,
                    c.FetchAttr.RFC822_SIZE,
                    c.FetchAttr.BODYSTRUCTURE,
                    c.FetchAttr.ENVELOPE,
                    c.FetchAttr.INTERNALDATE,
                    c.FetchAttr.MODSEQ,
                )
            ),
        ),
    ),
    (
        b"a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT)",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(
                c.FetchSimple(x)
                for x in (c.FetchAttr.RFC822, c.FetchAttr.RFC822_HEADER, c.FetchAttr.RFC822_TEXT)
            ),
        ),
    ),
    (
        b"a FETCH 1 (BODY.PEEK[1.2.3.MIME] BODY[4.TEXT]<0.2048> BODY[2] BODY[3.HEADER] BODY[TEXT])",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            (
                c.FetchBody(c.Section((1, 2, 3), "MIME"), peek=True),
                c.FetchBody(c.Section((4,), "TEXT"), partial=(0, 2048)),
                c.FetchBody(c.Section((2,))),
                c.FetchBody(c.Section((3,), "HEADER")),
                c.FetchBody(c.Section((), "TEXT")),
            ),
        ),
    ),
    (
        b'a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Received "X-Spam")]<10.20>',
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            (
                c.FetchBody(
                    c.Section((), "HEADER.FIELDS.NOT", ("RECEIVED", "X-SPAM")), peek=True, partial=(10, 20)
                ),
            ),
        ),
    ),
    (
        b"a FETCH 1 (BINARY[1] BINARY.PEEK[]<0.100> BINARY.SIZE[2.1])",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            (
                c.FetchBody(c.Section((1,)), binary=True),
                c.FetchBody(c.Section(), peek=True, partial=(0, 100), binary=True),
                c.FetchBody(c.Section((2, 1)), peek=True, binary=True, size_only=True),
            ),
        ),
    ),
    # RFC 7162 CHANGEDSINCE / VANISHED
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        c.Fetch("s100", True, seq((1, STAR)), (c.FetchSimple(c.FetchAttr.FLAGS),), changedsince=12345),
    ),
    (
        b"A03 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 20070117040000 VANISHED)",
        c.Fetch(
            "A03",
            True,
            seq((1, STAR)),
            (c.FetchSimple(c.FetchAttr.FLAGS),),
            changedsince=20070117040000,
            vanished=True,
        ),
    ),
    (b"a FETCH $ FLAGS", c.Fetch("a", False, S(saved=True), (c.FetchSimple(c.FetchAttr.FLAGS),))),
    # §6.4.6 STORE, RFC 7162 UNCHANGEDSINCE
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        c.Store("A003", False, seq((2, 4)), c.StoreMode.ADD, False, ("\\Deleted",)),
    ),
    (
        b"a STORE 1 FLAGS.SILENT (\\seen $Forwarded)",
        c.Store("a", False, seq((1, 1)), c.StoreMode.REPLACE, True, ("\\Seen", "$Forwarded")),
    ),
    (
        b"a STORE 1 -flags \\Flagged \\Answered",
        c.Store("a", False, seq((1, 1)), c.StoreMode.REMOVE, False, ("\\Flagged", "\\Answered")),
    ),
    (b"a STORE 1:* FLAGS ()", c.Store("a", False, seq((1, STAR)), c.StoreMode.REPLACE, False, ())),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        c.Store("d105", False, seq((7, 7), (5, 5), (9, 9)), c.StoreMode.ADD, True, ("\\Deleted",), 320162338),
    ),
    (
        b"a UID STORE 4 (UNCHANGEDSINCE 0) FLAGS (x)",
        c.Store("a", True, seq((4, 4)), c.StoreMode.REPLACE, False, ("x",), 0),
    ),
    # §6.4.7 COPY, RFC 6851 MOVE, §6.4.9 UID
    (b"A003 COPY 2:4 MEETING", c.Copy("A003", False, seq((2, 4)), "MEETING")),
    (b"a UID COPY 4827313:4828442 Archive", c.Copy("a", True, seq((4827313, 4828442)), "Archive")),
    (b"a MOVE 1:3 Trash", c.Move("a", False, seq((1, 3)), "Trash")),
    (b'a UID MOVE 42:69 "Junk Mail"', c.Move("a", True, seq((42, 69)), "Junk Mail")),
    (b"a UID MOVE $ inbox", c.Move("a", True, S(saved=True), "INBOX")),
    # RFC 9208 QUOTA
    (b'G0001 GETQUOTA "!partition/sda4"', c.GetQuota("G0001", "!partition/sda4")),
    (b"A003 GETQUOTAROOT INBOX", c.GetQuotaRoot("A003", "INBOX")),
    (b'S0000 SETQUOTA "#user/alice" (STORAGE 510)', c.SetQuota("S0000", "#user/alice", (("STORAGE", 510),))),
    (b'S SETQUOTA "" ()', c.SetQuota("S", "", ())),
]


@pytest.mark.parametrize(("line", "expected"), COMMANDS, ids=[x[0].decode("latin-1")[:60] for x in COMMANDS])
def test_command(line: bytes, expected: c.Command) -> None:
    assert parse_split(line) == expected


def search(line: bytes) -> c.SearchCommand:
    command = parse_split(line)
    assert isinstance(command, c.SearchCommand)
    return command


def key_of(text: bytes) -> c.SearchKey:
    return search(b"t SEARCH " + text).key


UNSEEN = c.SearchFlag("\\Seen", present=False)

SEARCH_KEYS: list[tuple[bytes, c.SearchKey]] = [
    (b"ALL", c.SearchAll()),
    (b"ANSWERED", c.SearchFlag("\\Answered")),
    (b"DELETED", c.SearchFlag("\\Deleted")),
    (b"DRAFT", c.SearchFlag("\\Draft")),
    (b"FLAGGED", c.SearchFlag("\\Flagged")),
    (b"SEEN", c.SearchFlag("\\Seen")),
    (b"RECENT", c.SearchFlag("\\Recent")),
    (b"unanswered", c.SearchFlag("\\Answered", False)),
    (b"UNDELETED", c.SearchFlag("\\Deleted", False)),
    (b"UNDRAFT", c.SearchFlag("\\Draft", False)),
    (b"UNFLAGGED", c.SearchFlag("\\Flagged", False)),
    (b"UNSEEN", UNSEEN),
    (b"NEW", c.SearchAnd((c.SearchFlag("\\Recent"), UNSEEN))),
    (b"OLD", c.SearchFlag("\\Recent", False)),
    (b"KEYWORD $Forwarded", c.SearchFlag("$Forwarded")),
    (b"UNKEYWORD Junk", c.SearchFlag("Junk", False)),
    (b"BCC boss", c.SearchHeader("bcc", "boss")),
    (b'CC "a b"', c.SearchHeader("cc", "a b")),
    (b'FROM "Smith"', c.SearchHeader("from", "Smith")),
    (b"TO {3}\r\nx y", c.SearchHeader("to", "x y")),
    (b'SUBJECT "caf\xc3\xa9"', c.SearchHeader("subject", "caf\u00e9")),
    (b'HEADER Message-ID "<x@y>"', c.SearchHeader("message-id", "<x@y>")),
    (b'HEADER X-Spam ""', c.SearchHeader("x-spam", "")),
    (b"BODY hello", c.SearchText("hello", body_only=True)),
    (b'TEXT "string not in mailbox"', c.SearchText("string not in mailbox", body_only=False)),
    (b"BEFORE 1-Feb-1994", c.SearchDate(c.DateField.INTERNAL, c.DateOp.BEFORE, datetime.date(1994, 2, 1))),
    (b'ON "17-Jul-1996"', c.SearchDate(c.DateField.INTERNAL, c.DateOp.ON, datetime.date(1996, 7, 17))),
    (b"SINCE 01-feb-2024", c.SearchDate(c.DateField.INTERNAL, c.DateOp.SINCE, datetime.date(2024, 2, 1))),
    (b"SENTBEFORE 1-Jan-2000", c.SearchDate(c.DateField.SENT, c.DateOp.BEFORE, datetime.date(2000, 1, 1))),
    (b"SENTON 29-Feb-2024", c.SearchDate(c.DateField.SENT, c.DateOp.ON, datetime.date(2024, 2, 29))),
    (b"SENTSINCE 31-Dec-1999", c.SearchDate(c.DateField.SENT, c.DateOp.SINCE, datetime.date(1999, 12, 31))),
    (b"LARGER 10000", c.SearchSize(True, 10000)),
    (b"SMALLER 5", c.SearchSize(False, 5)),
    (b"LARGER 9223372036854775807", c.SearchSize(True, 2**63 - 1)),
    (b"UID 1:100,200", c.SearchUid(seq((1, 100), (200, 200)))),
    (b"UID $", c.SearchUid(S(saved=True))),
    (b"2:4,*", c.SearchSeq(seq((2, 4), (STAR, STAR)))),
    (b"$", c.SearchSeq(S(saved=True))),
    (b"MODSEQ 620162338", c.SearchModSeq(620162338)),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', c.SearchModSeq(620162338, "/flags/\\draft", "all")),
    (b"NOT DELETED", c.SearchNot(c.SearchFlag("\\Deleted"))),
    (b"NOT NOT SEEN", c.SearchNot(c.SearchNot(c.SearchFlag("\\Seen")))),
    (
        b"OR SEEN FLAGGED",
        c.SearchOr(c.SearchFlag("\\Seen"), c.SearchFlag("\\Flagged")),
    ),
    (
        b"OR (FROM a TO b) NOT (SMALLER 10)",
        c.SearchOr(
            c.SearchAnd((c.SearchHeader("from", "a"), c.SearchHeader("to", "b"))),
            c.SearchNot(c.SearchSize(False, 10)),
        ),
    ),
    (b"(SEEN)", c.SearchFlag("\\Seen")),
    (b"((SEEN))", c.SearchFlag("\\Seen")),
    (
        b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        c.SearchAnd(
            (
                c.SearchFlag("\\Flagged"),
                c.SearchDate(c.DateField.INTERNAL, c.DateOp.SINCE, datetime.date(1994, 2, 1)),
                c.SearchNot(c.SearchHeader("from", "Smith")),
            )
        ),
    ),
    (
        b"OR OR ANSWERED DELETED (1:5 UNSEEN)",
        c.SearchOr(
            c.SearchOr(c.SearchFlag("\\Answered"), c.SearchFlag("\\Deleted")),
            c.SearchAnd((c.SearchSeq(seq((1, 5))), UNSEEN)),
        ),
    ),
]


@pytest.mark.parametrize(("text", "expected"), SEARCH_KEYS, ids=[x[0].decode("latin-1") for x in SEARCH_KEYS])
def test_search_key(text: bytes, expected: c.SearchKey) -> None:
    assert key_of(text) == expected


def test_search_variants() -> None:
    assert search(b"A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994") == c.SearchCommand(
        "A282",
        False,
        c.SearchAnd(
            (
                c.SearchFlag("\\Flagged"),
                c.SearchDate(c.DateField.INTERNAL, c.DateOp.SINCE, datetime.date(1994, 2, 1)),
            )
        ),
        None,
        ("MIN", "COUNT"),
    )
    assert search(b"A283 SEARCH RETURN () ALL").returns == ("ALL",)  # RFC 4731 §3.1
    assert search(b"a UID SEARCH RETURN (SAVE) DELETED").returns == ("SAVE",)
    assert search(b"a UID SEARCH RETURN (SAVE MIN MAX ALL COUNT) 1:*").returns == (
        "SAVE",
        "MIN",
        "MAX",
        "ALL",
        "COUNT",
    )
    cmd = search(b"A284 SEARCH CHARSET UTF-8 TEXT {4}\r\n\xe2\x82\xac!")
    assert (cmd.charset, cmd.key) == ("UTF-8", c.SearchText("\u20ac!", body_only=False))
    cmd = search(b'a SEARCH CHARSET "us-ascii" SUBJECT "cafe"')
    assert (cmd.charset, cmd.key) == ("US-ASCII", c.SearchHeader("subject", "cafe"))
    assert search(b"a UID SEARCH UNSEEN").uid


@pytest.mark.parametrize(
    "command",
    [
        b"a SEARCH CHARSET X-NOPE TEXT x",
        # Python codec names that are no MIME charsets: never looked up (issue 11 item 10 crashed on these).
        b"a SEARCH CHARSET rot13 TEXT x",
        b"a SEARCH CHARSET hex TEXT x",
        b"a SEARCH CHARSET base64 TEXT x",
        b"a SEARCH CHARSET punycode TEXT x",
        b"a SEARCH CHARSET idna TEXT x",
        # Real charsets we do not search in (RFC 9051 §6.4.4 only requires US-ASCII and UTF-8).
        b"a SEARCH CHARSET UTF-16 TEXT x",
        b'a SEARCH CHARSET "ISO-8859-1" SUBJECT "caf\xe9"',
        b"a SEARCH CHARSET {5}\r\nKOI8R ALL",
        b"a SORT (FROM) rot13 ALL",
        b"a THREAD REFERENCES hex ALL",
    ],
)
def test_search_unknown_charset_is_badcharset(command: bytes) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(command)
    assert info.value.code == "BADCHARSET"
    assert info.value.tag == "a"


@pytest.mark.parametrize(
    "command",
    [b"a SEARCH ", b"a SEARCH", b"a SEARCH NOT ", b"a SEARCH OR 1 ", b"a SEARCH (", b"a UID SEARCH CHARSET "],
)
def test_search_cut_short_is_a_syntax_error(command: bytes) -> None:
    # Issue 11 item 10: the end of input where a search key belongs raised ValueError, not a syntax error.
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(command)
    assert info.value.code is None


def test_sort_and_thread() -> None:
    assert parse_split(b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994") == c.Sort(
        "A282",
        False,
        (c.SortCriterion("SUBJECT"),),
        "UTF-8",
        c.SearchDate(c.DateField.INTERNAL, c.DateOp.SINCE, datetime.date(1994, 2, 1)),
    )
    assert parse_split(b'A284 UID SORT (REVERSE DATE from) US-ASCII NOT TEXT "hello"') == c.Sort(
        "A284",
        True,
        (c.SortCriterion("DATE", reverse=True), c.SortCriterion("FROM")),
        "US-ASCII",
        c.SearchNot(c.SearchText("hello", body_only=False)),
    )
    assert parse_split(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000") == c.Thread(
        "A283",
        False,
        "ORDEREDSUBJECT",
        "UTF-8",
        c.SearchDate(c.DateField.INTERNAL, c.DateOp.SINCE, datetime.date(2000, 3, 5)),
    )
    assert parse_split(b"a UID THREAD references utf-8 ALL") == c.Thread(
        "a", True, "REFERENCES", "UTF-8", c.SearchAll()
    )


def test_section_spec_and_response_name() -> None:
    body = c.FetchBody(c.Section((1, 2), "HEADER.FIELDS", ("FROM", "TO")), peek=True, partial=(10, 20))
    assert body.response_name() == "BODY[1.2.HEADER.FIELDS (FROM TO)]<10>"
    assert c.FetchBody(c.Section()).response_name() == "BODY[]"
    assert c.FetchBody(c.Section((3,)), binary=True).response_name() == "BINARY[3]"
    assert c.FetchBody(c.Section((3,)), binary=True, size_only=True).response_name() == "BINARY.SIZE[3]"
    assert c.Section((4,), "MIME").spec() == "4.MIME"


def test_login_repr_hides_password() -> None:
    assert "hunter2" not in repr(c.Login("a", "u", "hunter2"))


def test_date_time() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=-7))
    assert parse_date_time('"17-Jul-1996 02:44:25 -0700"') == datetime.datetime(
        1996, 7, 17, 2, 44, 25, tzinfo=tz
    )
    assert parse_date_time('" 7-Jul-1996 02:44:25 +0000"').day == 7
    assert parse_date_time('"07-Jul-1996 02:44:25 +0530"').utcoffset() == datetime.timedelta(
        hours=5, minutes=30
    )
    for bad in (
        '"17-Jul-1996 02:44:25"',
        '"17-Jux-1996 02:44:25 -0700"',
        '"32-Jul-1996 02:44:25 -0700"',
        '"17-Jul-1996 25:44:25 -0700"',
        '"17-Jul-96 02:44:25 -0700"',
        '"17-Jul-1996 02:44:25 0700"',
        "17-Jul-1996 02:44:25 -0700",
    ):
        with pytest.raises(ValueError):
            parse_date_time(bad)


BAD: list[tuple[bytes, str]] = [
    (b"a", "missing command"),
    (b"a FOO", "unknown command"),
    (b"a UID NOOP", "NOOP has no UID form"),
    (b"a  NOOP", "two spaces"),
    (b"a NOOP ", "trailing space"),
    (b"a NOOP x", "arguments to NOOP"),
    (b"a LOGIN user", "missing password"),
    (b'a LOGIN "user pass', "unterminated quoted"),
    (b'a LOGIN "us\\er" p', "backslash escapes only quoted-specials"),
    (b"a LOGIN user pa(ss", "atom-special in atom"),
    (b'a LOGIN "\xff" x', "invalid UTF-8"),
    (b"a LOGIN {3}\r\nu\x00s x", "NUL in literal"),
    (b"a LOGIN ~{1}\r\nu x", "literal8 outside APPEND"),
    (b"a AUTHENTICATE PLAIN AG$$", "invalid base64"),
    (b"a ENABLE", "ENABLE needs a capability"),
    (b"a SELECT", "SELECT needs a mailbox"),
    (b"a SELECT INBOX (FOO)", "unknown select parameter"),
    (b"a SELECT INBOX (CONDSTORE CONDSTORE)", "repeated select parameter"),
    (b"a SELECT INBOX (QRESYNC (0 1))", "UIDVALIDITY 0"),
    (b"a SELECT INBOX (QRESYNC (1 0))", "modseq 0"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:*))", "star in known-uids"),
    (b"a CREATE X (USE (\\Inbox))", "unknown special-use"),
    (b"a RENAME a", "RENAME needs two names"),
    (b'a LIST ""', "LIST needs a pattern"),
    (b'a LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH alone"),
    (b'a LIST (REMOTE RECURSIVEMATCH) "" *', "RECURSIVEMATCH with only REMOTE (RFC 5258 §6)"),
    (b'a LIST (FOO) "" *', "unknown selection option"),
    (b'a LIST "" * RETURN (FOO)', "unknown return option"),
    (b'a LIST "" * (CHILDREN)', "return options without RETURN"),
    (b"a STATUS INBOX ()", "empty STATUS list"),
    (b"a STATUS INBOX (FOO)", "unknown STATUS item"),
    (b"a STATUS INBOX MESSAGES", "STATUS items need parentheses"),
    (b"a FETCH 1", "FETCH needs items"),
    (b"a FETCH 0 FLAGS", "sequence number 0"),
    (b"a FETCH 1:2:3 FLAGS", "malformed sequence set"),
    (b"a FETCH 1, FLAGS", "trailing comma"),
    (b"a FETCH 1 (FLAGS", "unclosed list"),
    (b"a FETCH 1 FOO", "unknown item"),
    (b"a FETCH 1 BODY[FOO]", "unknown section"),
    (b"a FETCH 1 BODY[MIME]", "MIME needs a part number"),
    (b"a FETCH 1 BODY[0]", "part 0"),
    (b"a FETCH 1 BODY[1.]", "dangling dot"),
    (b"a FETCH 1 BODY[]<5>", "partial without length"),
    (b"a FETCH 1 BODY[]<0.0>", "partial length 0"),
    (b"a FETCH 1 BINARY[TEXT]", "BINARY takes only part numbers"),
    (b"a FETCH 1 BINARY.SIZE", "BINARY.SIZE needs a section"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "empty header list"),
    (b"a FETCH 1 FLAGS (VANISHED)", "VANISHED without UID FETCH"),
    (b"a UID FETCH 1 FLAGS (VANISHED)", "VANISHED without CHANGEDSINCE"),
    (b"a UID FETCH 1 FLAGS (CHANGEDSINCE 0)", "CHANGEDSINCE 0"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "repeated modifier"),
    (b"a STORE 1 FLAGS", "STORE needs flags"),
    (b"a STORE 1 XFLAGS (x)", "unknown store item"),
    (b"a STORE 1 +FLAGS (\\)", "empty system flag"),
    (b"a STORE 1 (FOO 1) FLAGS (x)", "unknown store modifier"),
    (b"a COPY 1", "COPY needs a mailbox"),
    (b"a SEARCH", "SEARCH needs a key"),
    (b"a SEARCH FOO", "unknown search key"),
    (b"a SEARCH (SEEN", "unclosed parenthesis"),
    (b"a SEARCH ()", "empty parenthesis"),
    (b"a SEARCH OR SEEN", "OR needs two keys"),
    (b"a SEARCH NOT", "NOT needs a key"),
    (b"a SEARCH SINCE 1-Foo-2000", "bad month"),
    (b"a SEARCH SINCE 30-Feb-2000", "impossible date"),
    (b"a SEARCH SINCE 1-Feb-00", "two-digit year"),
    (b"a SEARCH LARGER x", "LARGER needs a number"),
    (b"a SEARCH LARGER 9223372036854775808", "LARGER over number64"),
    (b"a SEARCH RETURN (FOO) ALL", "unknown return option"),
    (b"a SEARCH RETURN (MIN)", "RETURN without keys"),
    (b'a SEARCH MODSEQ "/flags/x" bogus 5', "bad entry type"),
    (b"a SEARCH UID 1:0", "UID 0"),
    (b"a SEARCH " + b"(" * 40 + b"SEEN" + b")" * 40, "nesting too deep"),
    (b"a SEARCH " + b"NOT " * 40 + b"SEEN", "NOT chain too deep"),
    (b"a SORT SUBJECT UTF-8 ALL", "sort criteria need parentheses"),
    (b"a SORT (FOO) UTF-8 ALL", "unknown sort key"),
    (b"a SORT (SUBJECT) ALL", "SORT needs a charset"),
    (b"a THREAD FOO UTF-8 ALL", "unknown algorithm"),
    (b"a ID", "ID needs an argument"),
    (b'a ID ("a")', "ID field without value"),
    (b"a ID (" + b'"k" "v" ' * 31 + b")", "too many ID pairs"),
    (b'a SETQUOTA "" (STORAGE)', "resource without limit"),
    (b"a UID EXPUNGE", "UID EXPUNGE needs a set"),
    (b"+a NOOP", "tag with '+'"),
    (b"(a NOOP", "tag with '('"),
    (b" NOOP", "empty tag"),
]


@pytest.mark.parametrize(("line", "reason"), BAD, ids=[x[1] for x in BAD])
def test_bad_commands(line: bytes, reason: str) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(line)
    assert info.value.message
    expected_tag = line.split(b" ", 1)[0].decode()
    if expected_tag in ("+a", "(a", ""):
        assert info.value.tag == "*"
    else:
        assert info.value.tag == expected_tag
