"""Response serialisation: quoting rules, response codes, status lines, ENVELOPE and BODYSTRUCTURE."""

from __future__ import annotations

import dataclasses
import datetime
import io

import pytest

from surat.message.address import Address
from surat.message.info import compute_message_info
from surat.message.mime import BodyPart, Envelope
from surat.proto.imap import structure, writer
from surat.proto.imap.parser import Scanner, parse_date_time
from surat.proto.imap.seqset import SequenceSet
from surat.proto.imap.writer import Code, ResponseCode, Status


def read_back(data: bytes) -> bytes:
    """Parse a serialised string with the command scanner: what we write must be what a reader gets."""
    s = Scanner(data)
    value = s.string_bytes() if data[:1] in (b'"', b"{") else s.astring_bytes()
    s.end()
    return value


@pytest.mark.parametrize(
    ("value", "utf8", "expected"),
    [
        ("hello", False, b'"hello"'),
        ("", False, b'""'),
        ('say "hi"', False, b'"say \\"hi\\""'),
        ("back\\slash", False, b'"back\\\\slash"'),
        ("two\r\nlines", False, b"{10}\r\ntwo\r\nlines"),
        ("caf\u00e9", False, b"{5}\r\ncaf\xc3\xa9"),  # 8-bit text to a rev1 client: literal
        ("caf\u00e9", True, b'"caf\xc3\xa9"'),  # UTF8=ACCEPT / IMAP4rev2: quoted UTF-8
        (b"nul\x00byte", False, b"~{8}\r\nnul\x00byte"),  # NUL needs literal8
        ("x" * 1025, False, b"{1025}\r\n" + b"x" * 1025),  # long values go as literals
        ("raw\udce9", True, b"{4}\r\nraw\xe9"),  # surrogate-escaped raw octet: not UTF-8, so a literal
    ],
)
def test_string(value: str | bytes, utf8: bool, expected: bytes) -> None:
    out = writer.string(value, utf8=utf8)
    assert out == expected
    if not expected.startswith(b"~"):
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        assert read_back(out) == raw


QUOTING_CASES = [
    "",
    "plain text",
    'say "hi"',
    "back\\slash",
    '\\"',
    "tab\there",
    "del\x7f",
    "x" * 1024,  # the longest quoted value
    "x" * 1025,
    "a\rb",
    "a\nb",
    "a\x00b",
    "caf\u00e9",
    "x" * 1022 + "\u00e9",  # 1024 octets in UTF-8
    "x" * 1023 + "\u00e9",  # 1025 octets: a literal even for UTF-8 clients
    "raw\udce9",  # a surrogate-escaped raw octet
    "\u00e9\udcff",
]


def valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("value", QUOTING_CASES)
def test_text_fast_path_agrees_with_the_octet_path(value: str, utf8: bool) -> None:
    """Plain ASCII str values are quoted without the bytes round trip; every str must still come out
    exactly as its octets do, and read back as those octets."""
    raw = value.encode("utf-8", "surrogateescape")
    out = writer.string(value, utf8=utf8)
    assert out == writer.string(raw, utf8=utf8)
    assert writer.nstring(value, utf8=utf8) == out
    if out.startswith(b"~"):
        assert b"\x00" in raw
    else:
        assert read_back(out) == raw
    if out.startswith(b'"'):
        assert writer.quoted(value) == out and writer.quoted(raw) == out
    assert out.startswith(b'"') == (
        len(raw) <= writer.MAX_QUOTED
        and not any(c in raw for c in b"\r\n\x00")
        and (raw.isascii() or (utf8 and valid_utf8(raw)))
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INBOX", b"INBOX"),
        ("Sent]", b"Sent]"),  # resp-specials are ASTRING-CHARs
        ("a b", b'"a b"'),
        ("a(b", b'"a(b"'),
        ("a%b", b'"a%b"'),
        ("a*", b'"a*"'),
        ("", b'""'),
        ("NIL", b'"NIL"'),  # would read as nil in nstring contexts
        ("nil", b'"nil"'),
        ('q"', b'"q\\""'),
        ("{5}", b'"{5}"'),
    ],
)
def test_astring(value: str, expected: bytes) -> None:
    out = writer.astring(value)
    assert out == expected
    assert read_back(out) == value.encode()


def test_nstring_and_literals() -> None:
    assert writer.nstring(None) == b"NIL"
    assert writer.nstring("NIL") == b'"NIL"'
    assert writer.literal(b"abc") == b"{3}\r\nabc"
    assert writer.literal8(b"\x00") == b"~{1}\r\n\x00"
    with pytest.raises(ValueError):
        writer.quoted("a\r\nb")


def test_mailbox_name() -> None:
    assert writer.mailbox_name("Entw\u00fcrfe", utf8=False) == b"Entw&APw-rfe"
    assert writer.mailbox_name("Entw\u00fcrfe", utf8=True) == b'"Entw\xc3\xbcrfe"'
    assert writer.mailbox_name("Sent Items", utf8=False) == b'"Sent Items"'
    assert writer.mailbox_name("A&B", utf8=False) == b"A&-B"


def test_date_time_round_trip() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=-7))
    value = datetime.datetime(1996, 7, 7, 2, 44, 25, tzinfo=tz)
    assert writer.format_date_time(value) == "07-Jul-1996 02:44:25 -0700"
    assert parse_date_time('"' + writer.format_date_time(value) + '"') == value
    east = datetime.datetime(
        2024, 12, 31, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    )
    assert writer.format_date_time(east) == "31-Dec-2024 23:59:59 +0530"
    assert writer.format_date_time(datetime.datetime(2000, 1, 2, 3, 4, 5)) == "02-Jan-2000 03:04:05 +0000"


def test_status_lines() -> None:
    assert writer.tagged("a1", Status.OK, "done") == b"a1 OK done\r\n"
    assert (
        writer.tagged("a1", Status.NO, "no such mailbox", Code.TRYCREATE)
        == b"a1 NO [TRYCREATE] no such mailbox\r\n"
    )
    assert writer.tagged("a", Status.BAD, "") == b"a BAD bad\r\n"  # text is never empty
    # resp-text cannot hold CR/LF or begin with "[" (that would read as a code)
    assert writer.tagged("a", Status.BAD, "[x]\r\ny") == b"a BAD  x]  y\r\n"
    assert writer.untagged_status(Status.BYE, "autologout") == b"* BYE autologout\r\n"
    assert writer.untagged_status(Status.OK, "x", ResponseCode.uidnext(4392)) == b"* OK [UIDNEXT 4392] x\r\n"
    assert writer.continuation() == b"+ Ready\r\n"
    assert writer.continuation_base64(b"") == b"+ \r\n"
    assert writer.continuation_base64(b"hi") == b"+ aGk=\r\n"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ResponseCode.uidvalidity(3857529045), b"[UIDVALIDITY 3857529045]"),
        (ResponseCode.highestmodseq(715194045007), b"[HIGHESTMODSEQ 715194045007]"),
        (ResponseCode.unseen(12), b"[UNSEEN 12]"),
        (
            ResponseCode.permanentflags(["\\Deleted", "\\Seen", "\\*"]),
            b"[PERMANENTFLAGS (\\Deleted \\Seen \\*)]",
        ),
        (ResponseCode.appenduid(38505, 3955), b"[APPENDUID 38505 3955]"),
        (ResponseCode.appenduid(38505, SequenceSet(((3955, 3957),))), b"[APPENDUID 38505 3955:3957]"),
        (
            ResponseCode.copyuid(38505, SequenceSet(((304, 304), (319, 320))), SequenceSet(((3956, 3958),))),
            b"[COPYUID 38505 304,319:320 3956:3958]",
        ),
        (ResponseCode.modified(SequenceSet(((7, 7), (9, 9)))), b"[MODIFIED 7,9]"),
        (ResponseCode.capability(["IMAP4rev1", "IMAP4rev2"]), b"[CAPABILITY IMAP4rev1 IMAP4rev2]"),
        (ResponseCode.badcharset(["UTF-8", "US-ASCII"]), b"[BADCHARSET (UTF-8 US-ASCII)]"),
        (Code.NONEXISTENT, b"[NONEXISTENT]"),
        (Code.TOOBIG, b"[TOOBIG]"),
        (Code.CANNOT, b"[CANNOT]"),
        (Code.ALREADYEXISTS, b"[ALREADYEXISTS]"),
        (Code.CLOSED, b"[CLOSED]"),
        (Code.SERVERBUG, b"[SERVERBUG]"),
        (Code.UNAVAILABLE, b"[UNAVAILABLE]"),
        (Code.AUTHENTICATIONFAILED, b"[AUTHENTICATIONFAILED]"),
        (Code.READ_ONLY, b"[READ-ONLY]"),
        (Code.UNKNOWN_CTE, b"[UNKNOWN-CTE]"),
    ],
)
def test_response_codes(code: ResponseCode, expected: bytes) -> None:
    assert code.render() == expected


def test_untagged_responses() -> None:
    assert writer.exists(23) == b"* 23 EXISTS\r\n"
    assert writer.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert (
        writer.vanished(SequenceSet(((41, 41), (43, 116))), earlier=True)
        == b"* VANISHED (EARLIER) 41,43:116\r\n"
    )
    assert writer.vanished(SequenceSet(((405, 405),))) == b"* VANISHED 405\r\n"
    assert writer.flags(["\\Answered", "\\Seen"]) == b"* FLAGS (\\Answered \\Seen)\r\n"
    assert writer.capability(["IMAP4rev2", "IDLE"]) == b"* CAPABILITY IMAP4rev2 IDLE\r\n"
    assert writer.enabled([]) == b"* ENABLED\r\n"
    assert writer.enabled(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert writer.search([2, 84, 882]) == b"* SEARCH 2 84 882\r\n"
    assert writer.search([], modseq=None) == b"* SEARCH\r\n"
    assert writer.search([2, 5], modseq=917162500) == b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"
    assert (
        writer.fetch(12, [("FLAGS", writer.flag_list(["\\Seen"])), ("UID", b"4827313")])
        == b"* 12 FETCH (FLAGS (\\Seen) UID 4827313)\r\n"
    )
    assert writer.fetch(1, [("BODY[]", writer.string("a\r\nb"))]) == b"* 1 FETCH (BODY[] {4}\r\na\r\nb)\r\n"


def test_esearch() -> None:
    assert writer.esearch("A282", uid=False, min_=2, count=3) == b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'
    assert (
        writer.esearch("A283", uid=True, all_=SequenceSet(((2, 2), (10, 15), (21, 21))))
        == b'* ESEARCH (TAG "A283") UID ALL 2,10:15,21\r\n'
    )
    # RFC 4731 §3.1: no ALL when nothing matched
    assert writer.esearch("A", uid=False, all_=SequenceSet(), count=0) == b'* ESEARCH (TAG "A") COUNT 0\r\n'


def test_list_and_status() -> None:
    assert (
        writer.list_response(["\\HasNoChildren"], "/", "INBOX", utf8=False)
        == b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
    )
    assert writer.list_response(["\\Noselect"], None, "", utf8=True) == b'* LIST (\\Noselect) NIL ""\r\n'
    assert (
        writer.list_response(
            ["\\Subscribed"], "/", "Entw\u00fcrfe", utf8=False, extended=[b'"CHILDINFO" ("SUBSCRIBED")']
        )
        == b'* LIST (\\Subscribed) "/" Entw&APw-rfe ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert writer.list_response([], "/", "x", utf8=False, command="LSUB") == b'* LSUB () "/" x\r\n'
    assert (
        writer.status_response("blurdybloop", [("MESSAGES", 231), ("UIDNEXT", 44292)], utf8=False)
        == b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )


# --- ENVELOPE / BODYSTRUCTURE -----------------------------------------------------------------------

TERRY = Address("Terry Gray", None, "gray", "cac.washington.edu")
IMAP = Address(None, None, "imap", "cac.washington.edu")
RFC_ENVELOPE = Envelope(
    date="Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    subject="IMAP4rev2 WG mtg summary and minutes",
    from_=(TERRY,),
    sender=(TERRY,),
    reply_to=(TERRY,),
    to=(IMAP,),
    cc=(
        Address(None, None, "minutes", "CNRI.Reston.VA.US"),
        Address("John Klensin", None, "KLENSIN", "MIT.EDU"),
    ),
    bcc=(),
    in_reply_to=None,
    message_id="<B27397-0100000@cac.washington.edu>",
)


def test_envelope_rfc_example() -> None:
    # RFC 9051 §8 example (FETCH 12 FULL)
    assert structure.envelope(RFC_ENVELOPE) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>")'
    )


def test_envelope_groups_and_8bit() -> None:
    group = (Address(None, None, "undisclosed", None), Address(None, None, None, None))
    env = dataclasses.replace(RFC_ENVELOPE, to=group, subject="Gr\u00fc\u00dfe", date=None)
    out = structure.envelope(env)
    assert b'((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL))' in out
    assert out.startswith(b"(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe ")
    assert structure.envelope(env, utf8=True).startswith(b'(NIL "Gr\xc3\xbc\xc3\x9fe" ')


def test_envelope_sender_and_reply_to_shared_with_from_or_not() -> None:
    """The store shares From's tuple with an absent Sender/Reply-To; a copy or another value must give
    the same bytes as it would alone."""
    from_ = (TERRY,)
    shared = dataclasses.replace(RFC_ENVELOPE, from_=from_, sender=from_, reply_to=from_)
    copied = dataclasses.replace(RFC_ENVELOPE, from_=from_, sender=tuple([TERRY]), reply_to=tuple([TERRY]))
    assert structure.envelope(shared) == structure.envelope(copied) == structure.envelope(RFC_ENVELOPE)
    own = dataclasses.replace(shared, sender=(IMAP,), reply_to=())
    assert structure.envelope(own).startswith(
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) NIL '
    )


def leaf(type_: str, subtype: str, **kw: object) -> BodyPart:
    base: dict[str, object] = {
        "type": type_,
        "subtype": subtype,
        "params": (),
        "id": None,
        "description": None,
        "encoding": "7BIT",
        "size": 0,
        "lines": 0,
        "disposition": None,
        "disposition_params": (),
        "language": (),
        "location": None,
        "header_start": 0,
        "body_start": 0,
        "end": 0,
    }
    base.update(kw)
    return BodyPart(**base)  # type: ignore[arg-type]


def test_bodystructure_text_rfc_example() -> None:
    part = leaf("TEXT", "PLAIN", params=(("CHARSET", "US-ASCII"),), size=3028, lines=92)
    # RFC 9051 §8: BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)
    assert (
        structure.body_structure(part, extensible=False)
        == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )
    assert (
        structure.body_structure(part)
        == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_bodystructure_multipart_and_message() -> None:
    attachment = leaf(
        "application",
        "pdf",
        params=(("name", "a b.pdf"),),
        encoding="BASE64",
        size=1000,
        disposition="attachment",
        disposition_params=(("filename", "a b.pdf"),),
        language=("en", "de"),
        location="http://x/y",
    )
    inner = leaf("text", "plain", size=5, lines=1)
    message = leaf("message", "rfc822", size=300, lines=9, envelope=RFC_ENVELOPE, message=inner)
    root = leaf(
        "multipart",
        "mixed",
        params=(("boundary", "xyz"),),
        parts=(leaf("text", "html", size=10, lines=2, language=("fr",)), attachment, message),
    )
    out = structure.body_structure(root)
    assert out.startswith(b'(("text" "html" NIL NIL NIL "7BIT" 10 2 NIL NIL "fr" NIL)')
    assert (
        b'("application" "pdf" ("name" "a b.pdf") NIL NIL "BASE64" 1000 NIL ("attachment" ("filename" "a b.pdf")) '
        b'("en" "de") "http://x/y")' in out
    )
    assert b'("message" "rfc822" NIL NIL NIL "7BIT" 300 ' + structure.envelope(RFC_ENVELOPE) in out
    assert b' ("text" "plain" NIL NIL NIL "7BIT" 5 1 NIL NIL NIL NIL) 9 NIL NIL NIL NIL)' in out
    assert out.endswith(b' "mixed" ("boundary" "xyz") NIL NIL NIL)')
    plain = structure.body_structure(root, extensible=False)
    assert plain.endswith(b' "mixed")')
    assert b"attachment" not in plain
    assert out.count(b"(") == out.count(b")")


def test_bodystructure_from_computed_message_info() -> None:
    raw = (
        b"From: A <a@example.com>\r\nTo: b@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
        b"--b1\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--b1--\r\n"
    )
    info = compute_message_info(io.BytesIO(raw))
    env = structure.envelope(info.envelope)
    assert b'"hi"' in env
    assert b'(("A" NIL "a" "example.com"))' in env
    assert b'"<1@x>"' in env
    body = structure.body_structure(info.body)
    assert body.lower().startswith(b'(("text" "plain" ("charset" "utf-8") nil nil "7bit" 5 1')
    assert b'"alternative" ("boundary" "b1")' in body.lower()
