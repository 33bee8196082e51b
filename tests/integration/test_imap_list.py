"""LIST/LSUB over a socket: RFC 5258 (LIST-EXTENDED) examples, RFC 3501 §6.3.9 LSUB, mailbox names that are
not modified UTF-7, and the wildcard matcher's time bound (issue 11 item 2), asserted line by line."""

from __future__ import annotations

import time

import pytest
from conftest import RunningServer
from test_imap_basic import Raw

from surat.imapd.listing import MAX_PATTERN_LENGTH
from surat.store.base import MAX_MAILBOX_NAME_OCTETS


def ok(raw: Raw, command: str | bytes) -> list[bytes]:
    """Run a command that must succeed; its untagged lines."""
    lines, done = raw.command(command)
    assert b" OK " in done, (command, done)
    return lines


def session(server: RunningServer, *, create: list[str], subscribed: list[str]) -> Raw:
    """A logged-in client whose account holds `create` (plus the defaults) with only `subscribed` subscribed."""
    raw = Raw.logged_in(server)
    for name in create:
        ok(raw, f"CREATE {name}")
    for line in ok(raw, 'LSUB "" "*"'):  # new mailboxes, and the parents CREATE made, start subscribed
        name = line.rstrip(b"\r\n").rsplit(b" ", 1)[1].decode()
        if name not in subscribed:
            ok(raw, f"UNSUBSCRIBE {name}")
    for name in subscribed:
        ok(raw, f"SUBSCRIBE {name}")
    return raw


# --------------------------------------------------------------------------- RFC 5258 §5 examples


def test_rfc5258_example_8_childinfo(server: RunningServer) -> None:
    raw = session(server, create=["Foo/Bar", "Foo/Baz", "Moo"], subscribed=["Foo/Baz"])
    # A) "Foo/Baz" is the only subscribed mailbox.
    assert ok(raw, 'LIST (SUBSCRIBED) "" "*"') == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Foo/Baz\r\n']
    assert ok(raw, 'LIST (SUBSCRIBED) "" "%"') == []
    assert ok(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == [
        b'* LIST (\\HasChildren) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    ]
    # A1) "Foo" subscribed too.
    ok(raw, "SUBSCRIBE Foo")
    assert ok(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == [
        b'* LIST (\\HasChildren \\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    ]
    # C) Only "Foo" and "Moo" subscribed: no CHILDINFO, RETURN (CHILDREN) honoured.
    ok(raw, "UNSUBSCRIBE Foo/Baz")
    ok(raw, "SUBSCRIBE Moo")
    assert ok(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)') == [
        b'* LIST (\\HasChildren \\Subscribed) "/" Foo\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Moo\r\n',
    ]
    # B) Nothing subscribed: no responses, although "Foo" has children.
    ok(raw, "UNSUBSCRIBE Foo")
    ok(raw, "UNSUBSCRIBE Moo")
    assert ok(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == []
    raw.close()


def test_rfc5258_example_9_childinfo_whatever_the_pattern(server: RunningServer) -> None:
    subscribed = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2", "eps2/mamba"]
    raw = session(
        server,
        create=["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2/mamba"],
        subscribed=subscribed,
    )
    # D03: CHILDINFO for foo2 (foo2/bar1 does not match "*2") and eps2 (eps2/mamba does not); none for
    # baz2, whose subscribed children are all listed (RFC 5258 §3.5: redundant CHILDINFO suppressed).
    assert ok(raw, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar2\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar22\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" baz2/bar222\r\n',
        b'* LIST (\\HasChildren \\Subscribed) "/" eps2 ("CHILDINFO" ("SUBSCRIBED"))\r\n',
        b'* LIST (\\HasChildren) "/" foo2 ("CHILDINFO" ("SUBSCRIBED"))\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" foo2/bar2\r\n',
    ]
    raw.close()


def test_rfc5258_example_10_nonexistent_subscribed(server: RunningServer) -> None:
    raw = session(server, create=["foo/bar"], subscribed=["foo/bar"])
    # The mailbox goes; its subscription stays (RFC 9051 §6.3.7).
    ok(raw, "DELETE foo/bar")
    assert ok(raw, 'LIST "" ("foo" "foo/*")') == [b'* LIST (\\HasNoChildren) "/" foo\r\n']
    assert ok(raw, 'LIST (SUBSCRIBED) "" "foo/*"') == [b'* LIST (\\NonExistent \\Subscribed) "/" foo/bar\r\n']
    assert ok(raw, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)') == [
        b'* LIST (\\HasNoChildren) "/" foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    ]
    # LSUB still lists the name; the client can drop it although the mailbox is gone.
    assert ok(raw, 'LSUB "" "foo/*"') == [b'* LSUB () "/" foo/bar\r\n']
    assert ok(raw, "UNSUBSCRIBE foo/bar") == []
    assert ok(raw, 'LIST (SUBSCRIBED) "" "foo/*"') == []
    _, done = raw.command("UNSUBSCRIBE foo/bar")
    assert done == b"t%d NO [NONEXISTENT] no such mailbox or subscription\r\n" % raw.counter
    raw.close()


def test_return_children_subscribed(server: RunningServer) -> None:
    # RFC 5258 §5 example 6: RETURN (SUBSCRIBED) adds \Subscribed but no names (no \NonExistent ones).
    raw = session(server, create=["Fruit/Apple", "Fruit/Peach", "Tofu"], subscribed=["INBOX", "Fruit/Peach"])
    ok(raw, "DELETE Fruit/Peach")
    assert ok(raw, 'LIST "" "*" RETURN (CHILDREN SUBSCRIBED)') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n',
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n',
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
        b'* LIST (\\HasChildren) "/" Fruit\r\n',
        b'* LIST (\\HasNoChildren) "/" Fruit/Apple\r\n',
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
        b'* LIST (\\HasNoChildren) "/" Tofu\r\n',
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
    ]
    # RFC 5258 §5 example 2/5: LIST (SUBSCRIBED) does list the subscribed name that is gone.
    assert ok(raw, 'LIST (SUBSCRIBED) "" "*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n',
        b'* LIST (\\NonExistent \\Subscribed) "/" Fruit/Peach\r\n',
    ]
    raw.close()


@pytest.mark.parametrize("options", ["(RECURSIVEMATCH)", "(REMOTE RECURSIVEMATCH)"])
def test_recursivematch_without_a_base_option_is_bad(server: RunningServer, options: str) -> None:
    # RFC 5258 §3.1: "The server MUST return BAD tagged response in such case."
    raw = Raw.logged_in(server)
    lines, done = raw.command(f'LIST {options} "" "%"')
    assert lines == []
    assert (
        done == b"t2 BAD RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE beside it (RFC 5258 \xc2\xa73.1)\r\n"
    )
    assert ok(raw, "NOOP") == []
    raw.close()


def test_lsub_percent_shows_unsubscribed_parent_as_noselect(server: RunningServer) -> None:
    # RFC 3501 §6.3.9: "foo/bar" subscribed, "foo" not: "%" returns foo, flagged \Noselect.
    raw = session(server, create=["foo/bar", "news"], subscribed=["foo/bar", "news"])
    assert ok(raw, 'LSUB "" "%"') == [b'* LSUB (\\Noselect) "/" foo\r\n', b'* LSUB () "/" news\r\n']
    assert ok(raw, 'LSUB "" "*"') == [b'* LSUB () "/" foo/bar\r\n', b'* LSUB () "/" news\r\n']
    assert ok(raw, 'LSUB "foo/" "%"') == [b'* LSUB () "/" foo/bar\r\n']
    raw.close()


# --------------------------------------------------------------------------- mailbox names


@pytest.mark.parametrize(
    "command",
    [
        "CREATE &Jjo-&Jjo-",  # two adjacent BASE64 runs: not the canonical form
        "SELECT &AGE-",  # printable ASCII ("a") in BASE64
        "EXAMINE Caf&AOk",  # unterminated shift
        "DELETE &Jj-",  # truncated run
        "RENAME INBOX &&-",  # "&" not followed by BASE64
        "STATUS &A,- (MESSAGES)",  # a run too short for one UTF-16 unit
        "SUBSCRIBE &2D0-",  # a lone high surrogate
        "UNSUBSCRIBE &ZeVnLA-&ZeVnLA-",
        "GETQUOTAROOT &Jjo",
        "APPEND &Jjo-&Jjo- {5+}\r\nhello",
    ],
)
def test_name_that_is_not_modified_utf7_gets_no(server: RunningServer, command: str) -> None:
    # RFC 3501 §5.1.3: a rev1 client's names are modified UTF-7; a string that is not is well-formed
    # syntax naming no mailbox here: NO, not BAD, and the session goes on.
    raw = Raw.logged_in(server)
    lines, done = raw.command(command)
    assert lines == []
    assert done.startswith(b"t2 NO [CANNOT] invalid mailbox name (not modified UTF-7): "), done
    assert ok(raw, "NOOP") == []
    raw.close()


def test_list_patterns_of_every_kind_answer_ok_or_bad(server: RunningServer) -> None:
    raw = session(server, create=["a/b", "Entw&APw-rfe"], subscribed=["a/b"])
    answers: dict[bytes, bytes] = {}
    patterns = [
        b"%",
        b"*",
        b"%*%*",
        b"!#$&'+,-.0123456789:;<=>?@^_`|}~",  # every ATOM-CHAR that is not a letter ("&" invalid mUTF-7)
        b"a]b",  # resp-specials are ASTRING-CHARs
        b'"quoted \\" \\\\ %*"',
        b"{3}\r\na/*",
        b"{1+}\r\n\x01",  # a control character in a literal: matches nothing
        b"Entw&APw-*",
        b"Entw&APw*",  # wildcard inside a shift sequence: not modified UTF-7
        b'"\xc3\xa9"',  # UTF-8 without UTF8=ACCEPT: not modified UTF-7
        b"(% * a/%)",
        b"&",
        b'""',
    ]
    for pattern in patterns:
        _, done = raw.command(b'LIST "" ' + pattern)
        answers[pattern] = done.split(b" ", 2)[1]
        assert ok(raw, "NOOP") == []  # the connection is alive and the error budget intact
    assert answers == {
        b"%": b"OK",
        b"*": b"OK",
        b"%*%*": b"OK",
        b"!#$&'+,-.0123456789:;<=>?@^_`|}~": b"BAD",
        b"a]b": b"OK",
        b'"quoted \\" \\\\ %*"': b"OK",
        b"{3}\r\na/*": b"OK",
        b"{1+}\r\n\x01": b"OK",
        b"Entw&APw-*": b"OK",
        b"Entw&APw*": b"BAD",
        b'"\xc3\xa9"': b"BAD",
        b"(% * a/%)": b"OK",
        b"&": b"BAD",
        b'""': b"OK",
    }
    assert ok(raw, 'LIST "" (a/* Entw&APw-*)') == [
        b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\n',
        b'* LIST (\\HasNoChildren) "/" a/b\r\n',
    ]
    _, done = raw.command(b'LIST "" "' + b"*" * (MAX_PATTERN_LENGTH + 1) + b'"')
    assert done == b"t%d BAD mailbox pattern longer than %d characters\r\n" % (
        raw.counter,
        MAX_PATTERN_LENGTH,
    )
    raw.close()


# --------------------------------------------------------------------------- issue 11 item 2: the matcher's bound


def _timed(raw: Raw, command: str) -> tuple[list[bytes], bytes, float]:
    start = time.perf_counter()
    lines, done = raw.command(command)
    return lines, done, time.perf_counter() - start


def test_hostile_pattern_is_answered_at_once_and_stalls_nobody(server: RunningServer) -> None:
    probe = Raw.logged_in(server)
    other = Raw.logged_in(server)
    long_name = "a" * 200
    ok(probe, f"CREATE {long_name}")
    ok(probe, 'LIST "" "*"')  # warm up
    # The reported probe (26 s with the backtracking matcher): answered in well under 50 ms.
    lines, done, elapsed = _timed(probe, 'LIST "" "*a*a*a*a*ab"')
    assert lines == [] and done.startswith(b"t%d OK" % probe.counter)
    assert elapsed < 0.050, elapsed
    # The largest name the store accepts against the longest pattern the server accepts, all states live.
    ok(probe, "CREATE " + "a" * MAX_MAILBOX_NAME_OCTETS)
    worst = ("*a" * MAX_PATTERN_LENGTH)[: MAX_PATTERN_LENGTH - 1] + "*"
    lines, done, elapsed = _timed(probe, f'LIST "" "{worst}"')
    assert done.startswith(b"t%d OK" % probe.counter)
    assert lines == [b'* LIST (\\HasNoChildren) "/" ' + b"a" * MAX_MAILBOX_NAME_OCTETS + b"\r\n"]
    assert elapsed < 0.050, elapsed
    # While one connection runs the probe, another one's NOOP is answered in < 50 ms.
    probe.send(b'p1 LIST "" "*a*a*a*a*ab"\r\n')
    _, done, elapsed = _timed(other, "NOOP")
    assert done.startswith(b"t%d OK" % other.counter)
    assert elapsed < 0.050, elapsed
    assert probe.until("p1")[1][:5] == b"p1 OK"
    probe.close()
    other.close()
