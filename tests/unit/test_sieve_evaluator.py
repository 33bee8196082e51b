"""surat.sieve evaluator: actions, implicit keep and cancellation, each extension, runtime limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from surat.sieve import (
    Discard,
    FileInto,
    Keep,
    MessageContext,
    Redirect,
    Reject,
    Script,
    SieveResult,
    Vacation,
    evaluate,
    parse_script,
)
from surat.sieve.limits import MAX_MATCH_WORK, MAX_REDIRECTS, MAX_STEPS
from surat.sieve.matching import Budget, Comparator, glob_match

NOW = datetime(2026, 12, 8, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))

MESSAGE = (
    b"Return-Path: <coyote@desert.example.org>\r\n"
    b"Received: from a.example by b.example; Sun, 07 Dec 2026 23:59:00 -0500\r\n"
    b"Date: Mon, 07 Dec 2026 22:15:00 -0800\r\n"
    b'From: "Wile E. Coyote" <coyote@desert.example.org>\r\n'
    b"To: roadrunner+birdseed@acme.example, Bugs <bugs@acme.example>\r\n"
    b"Cc: group: elmer@acme.example;\r\n"
    b"Subject: [acme-users] [fwd] version 1.0 is out\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"List-ID: Acme users <acme-users.lists.acme.example>\r\n"
    b"X-Priority: 2\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Launch the missile at these coordinates: caf=C3=A9\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"U0VDUkVUIGJpbmFyeQ==\r\n"
    b"--b1--\r\n"
)


def context(message: bytes = MESSAGE, sender: str = "coyote@desert.example.org") -> MessageContext:
    return MessageContext(message, sender, "roadrunner+birdseed@acme.example", NOW)


def run(script: str, message: bytes = MESSAGE, **options: object) -> SieveResult:
    sender = options.pop("sender", "coyote@desert.example.org")
    assert isinstance(sender, str)
    return evaluate(parse_script(script), context(message, sender), **options)  # type: ignore[arg-type]


def actions(script: str, message: bytes = MESSAGE, **options: object) -> tuple[object, ...]:
    result = run(script, message, **options)
    assert result.errors == ()
    return result.actions


IMPLICIT = Keep(implicit=True)


# --------------------------------------------------------------- implicit keep and cancellation
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("", (IMPLICIT,)),  # RFC 5228 §2.10.2: an empty script keeps
        ("keep;", (Keep(),)),
        ("keep; keep;", (Keep(),)),  # §2.10.3: once
        ("discard;", (Discard(),)),
        ("discard; keep;", (Discard(), Keep())),
        ('require "fileinto";\nfileinto "A";', (FileInto("A"),)),
        ('require "fileinto";\nfileinto "A"; fileinto "A";', (FileInto("A"),)),
        ('require "fileinto";\nfileinto "A"; fileinto "B";', (FileInto("A"), FileInto("B"))),
        ('require ["fileinto", "copy"];\nfileinto :copy "A";', (FileInto("A", copy=True), IMPLICIT)),
        ('require ["fileinto", "mailbox"];\nfileinto :create "A";', (FileInto("A", create=True),)),
        ('redirect "a@example.com";', (Redirect("a@example.com"),)),
        ('redirect "a@example.com"; redirect "A@example.com";', (Redirect("a@example.com"),)),
        (
            'require "copy";\nredirect :copy "a@example.com";',
            (Redirect("a@example.com", copy=True), IMPLICIT),
        ),
        ('redirect "Bart <bart@example.com>";', (Redirect("bart@example.com"),)),
        ("stop; discard;", (IMPLICIT,)),
        ("if false { discard; }", (IMPLICIT,)),
        ('require "reject";\nreject "no thanks";', (Reject("no thanks"),)),
        ('require "ereject";\nereject "no";', (Reject("no", extended=True),)),
    ],
)
def test_actions_and_implicit_keep(script: str, expected: tuple[object, ...]) -> None:
    assert actions(script) == expected


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "reject";\nkeep;\nreject "x";', "line 3: reject cannot be combined with earlier actions"),
        ('require "reject";\nreject "x";\nkeep;', "line 3: keep cannot be combined with reject"),
        (
            'require ["reject", "vacation"];\nvacation "away";\nreject "x";',
            "line 3: reject cannot be combined with earlier actions",
        ),
        (
            'require "reject";\nreject "x";\nreject "y";',
            "line 3: reject cannot be combined with earlier actions",
        ),
        ('require "vacation";\nvacation "a";\nvacation "b";', "line 3: more than 1 vacation per message"),
        (
            'require "variables";\nset "a" "not an address";\nredirect "${a}";',
            "line 3: redirect to an invalid address 'not an address'",
        ),
        (
            'require "include";\ninclude "missing";',
            "line 2: included personal script 'missing' does not exist",
        ),
    ],
)
def test_runtime_errors_fall_back_to_implicit_keep(script: str, error: str) -> None:
    result = run(script)
    assert result.errors == (error,)
    assert result.actions == (IMPLICIT,)  # RFC 5228 §2.10.6: nothing is lost
    assert result.failed
    assert result.log[-2:] == (f"error: {error}", "implicit keep")


def test_log_names_each_action_with_its_line() -> None:
    result = run('require "fileinto";\nfileinto "A";\nredirect "b@example.com";\nkeep;')
    assert result.log == ("line 2: fileinto 'A'", "line 3: redirect 'b@example.com'", "line 4: keep")


# --------------------------------------------------------------- tests of RFC 5228 §5
@pytest.mark.parametrize(
    ("test", "outcome"),
    [
        ("true", True),
        ("false", False),
        ("not true", False),
        ("allof (true, false)", False),
        ("anyof (false, true)", True),
        ("allof ()".replace("()", "(true)"), True),
        ('exists ["From", "Date"]', True),
        ('exists ["From", "X-Nope"]', False),
        ("size :over 100", True),
        ("size :under 100", False),
        (f"size :over {len(MESSAGE)}", False),  # strictly greater (§5.9)
        (f"size :under {len(MESSAGE)}", False),
        (f"size :under {len(MESSAGE) + 1}", True),
        ('header :is "X-Priority" "2"', True),
        ('header :is "x-priority" "2 "', False),
        ('header :contains "subject" "ACME-users"', True),  # i;ascii-casemap by default
        ('header :contains :comparator "i;octet" "subject" "ACME-users"', False),
        ('header :is "subject" "café"', True),  # §2.7.2: RFC 2047 decoded
        ('header :matches "subject" "*version ?.0*"', True),
        ('header :matches "subject" "version*"', False),
        ('header :is "X-Caffeine" ""', False),  # §5.7: a missing header matches nothing
        ('header :contains ["X-Nope", "To"] "bugs"', True),
        ('address :is "from" "coyote@desert.example.org"', True),
        ('address :all :is "from" "COYOTE@DESERT.EXAMPLE.ORG"', True),
        ('address :localpart :is "from" "coyote"', True),
        ('address :domain :is "to" "acme.example"', True),
        ('address :domain :is "from" "acme.example"', False),
        ('address :is "cc" "elmer@acme.example"', True),  # addresses inside a group
        ('address :contains "to" "Bugs"', True),  # the addr-spec, case-folded; not the display name
        ('address :contains :comparator "i;octet" "to" "Bugs"', False),
        ('envelope :is "from" "coyote@desert.example.org"', True),
        ('envelope :domain :is "to" "acme.example"', True),
        ('envelope :localpart :is "to" "roadrunner+birdseed"', True),
        ('envelope :user :is "to" "roadrunner"', True),  # RFC 5233
        ('envelope :detail :is "to" "birdseed"', True),
        ('address :detail :matches "from" "*"', False),  # no "+": no detail (RFC 5233 §4)
        ('address :user :is "to" "bugs"', True),
        ('header :is :comparator "i;ascii-numeric" "x-priority" "002"', True),
        ('header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3"', True),
        ('header :value "gt" :comparator "i;ascii-numeric" "x-priority" "3"', False),
        ('header :value "gt" "subject" "A"', True),
        ('header :count "eq" :comparator "i;ascii-numeric" "subject" "2"', True),
        ('address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "3"', True),
        ('header :count "eq" :comparator "i;ascii-numeric" "x-nope" "0"', True),
        ('header :index 2 :is "subject" "café"', True),
        ('header :index 1 :last :is "subject" "café"', True),
        ('header :index 3 :contains "subject" ""', False),
        ('mailboxexists "INBOX"', True),
        ('mailboxexists ["INBOX", "Nope"]', False),
    ],
)
def test_tests(test: str, outcome: bool) -> None:
    script = (
        'require ["envelope", "subaddress", "relational", "comparator-i;ascii-numeric", "index", "mailbox"];\n'
        f"if {test} {{ discard; }}"
    )
    result = actions(script, mailbox_exists=lambda name: name == "INBOX")
    assert result == ((Discard(),) if outcome else (IMPLICIT,))


def test_null_sender_is_the_empty_string_for_every_address_part() -> None:
    script = 'require "envelope";\nif envelope :domain :is "from" "" { discard; }'
    assert actions(script, sender="") == (Discard(),)


# --------------------------------------------------------------- RFC 5229 variables
def test_match_variables_rfc5229_examples() -> None:
    script = (
        'require ["fileinto", "variables"];\n'
        'if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }\n'
        'if header :matches "Subject" "[*] *" { fileinto "INBOX.lists.${1}"; stop; }\n'
    )
    # "Acme users <acme-users.lists.acme.example>" has no "@": the first rule does not match
    assert actions(script) == (FileInto("INBOX.lists.acme-users"),)
    second = (
        'require ["fileinto", "variables"];\nif header :matches "Subject" "[*] *" { fileinto "${2}|${0}"; }'
    )
    assert actions(second) == (FileInto("[fwd] version 1.0 is out|[acme-users] [fwd] version 1.0 is out"),)


@pytest.mark.parametrize(
    ("statements", "value"),
    [
        ('set "a" "juMBlEd lETters";\nset :lower "b" "${a}";', "jumbled letters"),
        ('set "a" "juMBlEd lETters";\nset :upper "b" "${a}";', "JUMBLED LETTERS"),
        ('set :lowerfirst "b" "JuMBlEd";', "juMBlEd"),
        ('set :upperfirst :lower "b" "juMBlEd";', "Jumbled"),  # RFC 5229 §4.1 example
        ('set :quotewildcard "b" "Rock*";', "Rock\\*"),
        ('set :length "b" "${none}ab";', "2"),
        ('set :length :upper "b" "abc";', "3"),
        ('set "b" "${a";', "${a"),
        ('set "b" "${}";', "${}"),
        ('set "b" "$${x}";', "$"),
        ('set "x" "X";\nset "b" "${X}${x}";', "XX"),  # names are case-insensitive
        ('set "b" "${unknown}";', ""),
        ('set "b" "${1}";', ""),  # no :matches yet
        ('set "a" "${b}";\nset "b" "${a}x";', "x"),
        ('set "a" "$";\nset "b" "${a}{a}";', "${a}"),  # expansion is not repeated (§3)
    ],
)
def test_set_and_expansion(statements: str, value: str) -> None:
    script = f'require ["variables", "fileinto"];\n{statements}\nfileinto "${{b}}";'
    assert actions(script) == (FileInto(value),)


def test_string_test_and_match_variables_survive_failed_matches() -> None:
    script = (
        'require ["variables", "fileinto", "relational"];\n'
        'set "state" "${state} pending";\n'
        'if string :matches " ${state} " "* pending *" { fileinto "p-${1}"; }\n'
        'if header :matches "subject" "no*such" { discard; }\n'
        'if string :count "eq" ["a", "", "b"] "2" { fileinto "after-${1}"; }\n'
    )
    assert actions(script) == (FileInto("p- "), FileInto("after- "))  # "  pending ": ${1} is " "


def test_variable_values_are_bounded() -> None:
    script = (
        'require ["variables", "fileinto"];\nset "a" "0123456789";\n'
        + 'set "a" "${a}${a}";\n' * 12
        + 'set :length "n" "${a}";\nfileinto "${n}";'
    )
    assert actions(script) == (FileInto("4000"),)


# --------------------------------------------------------------- RFC 5232 imap4flags
def test_imap4flags_rfc5232_examples() -> None:
    script = (
        'require ["imap4flags", "fileinto", "variables"];\n'
        'setflag "\\\\Seen \\\\seen";\n'
        'addflag ["\\\\Flagged", "\\\\Answered"];\n'
        'removeflag "\\\\flagged";\n'
        'fileinto "A";\n'
        'fileinto :flags "\\\\Deleted" "Trash";\n'
        'addflag "myvar" "$Junk";\n'
        'if hasflag :contains "myvar" "junk" { addflag "${0}X"; }\n'
        'if hasflag "\\\\SEEN" { keep :flags ""; }\n'
    )
    assert actions(script) == (
        FileInto("A", ("\\Seen", "\\Answered")),
        FileInto("Trash", ("\\Deleted",)),
        Keep(()),
    )


def test_implicit_keep_carries_the_final_flags() -> None:
    script = 'require "imap4flags";\naddflag "\\\\Seen";\naddflag "\\\\Flagged";\nremoveflag "\\\\Seen";'
    assert actions(script) == (Keep(("\\Flagged",), implicit=True),)


# --------------------------------------------------------------- RFC 5173 body
@pytest.mark.parametrize(
    ("test", "outcome"),
    [
        ('body :contains "missile"', True),  # :text by default
        ('body :text :contains "café"', True),  # transfer- and charset-decoded
        ('body :raw :contains "caf=C3=A9"', True),
        ('body :raw :contains "café"', False),
        ('body :content "application/octet-stream" :contains "SECRET"', True),
        ('body :content "application" :contains "SECRET"', True),
        ('body :content "text" :contains "SECRET"', False),
        ('body :content "image" :contains ""', False),
        ('body :contains ["missile", "coordinates"]', True),
    ],
)
def test_body(test: str, outcome: bool) -> None:
    assert actions(f'require "body";\nif {test} {{ discard; }}') == ((Discard(),) if outcome else (IMPLICIT,))


# --------------------------------------------------------------- RFC 5230 vacation, RFC 6131
def test_vacation_parameters() -> None:
    script = (
        'require "vacation";\n'
        'vacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]\n'
        '"I\'m away until October 19.";'
    )
    (vacation, keep) = actions(script)
    assert keep == IMPLICIT  # vacation does not cancel the implicit keep
    assert isinstance(vacation, Vacation)
    assert vacation.seconds == 23 * 86400
    assert vacation.addresses == ("tjs@example.edu", "ts4z@landru.example.edu")
    assert vacation.reason == "I'm away until October 19."
    assert len(vacation.handle) == 32
    other = actions('require "vacation";\nvacation :subject "Away" "I\'m away until October 19.";')[0]
    assert isinstance(other, Vacation) and other.handle != vacation.handle  # RFC 5230 §4.2
    assert other.seconds == 7 * 86400  # the default


@pytest.mark.parametrize(
    ("period", "seconds"),
    [(":days 0", 86400), (":seconds 0", 0), (":seconds 1800", 1800), (":days 9999", 365 * 86400)],
)
def test_vacation_period(period: str, seconds: int) -> None:
    result = actions(
        f'require ["vacation", "vacation-seconds"];\nvacation {period} :handle "h" :from "me@acme.example" :mime "r";'
    )
    assert result[0] == Vacation("r", "h", seconds, None, "me@acme.example", (), True)


# --------------------------------------------------------------- RFC 5260 date, currentdate
@pytest.mark.parametrize(
    ("test", "outcome"),
    [
        ('date :is "date" "date" "2026-12-08"', True),  # 22:15 -0800 is 07:15 +0100 on the 8th (local)
        ('date :originalzone :is "date" "date" "2026-12-07"', True),
        ('date :zone "-0800" :is "date" "time" "22:15:00"', True),
        ('date :originalzone :is "date" "zone" "-0800"', True),
        ('date :is "date" "weekday" "2"', True),  # Tuesday
        ('date :originalzone :is "date" "std11" "Mon, 07 Dec 2026 22:15:00 -0800"', True),
        ('date :zone "+0000" :is "date" "iso8601" "2026-12-08T06:15:00+00:00"', True),
        ('date :is "date" "julian" "61382"', True),
        ('date :value "ge" :comparator "i;ascii-numeric" "date" "year" "2026"', True),
        ('date :index 1 :last :zone "-0500" :is "received" "hour" "23"', True),
        ('date :is "x-nope" "year" "2026"', False),
        ('date :is "subject" "year" "2026"', False),
        ('currentdate :is "date" "2026-12-08"', True),
        ('currentdate :is "hour" "10"', True),
        ('currentdate :zone "+0000" :is "hour" "09"', True),
        ('currentdate :is "zone" "+0100"', True),
    ],
)
def test_dates(test: str, outcome: bool) -> None:
    script = (
        f'require ["date", "relational", "index", "comparator-i;ascii-numeric"];\nif {test} {{ discard; }}'
    )
    assert actions(script) == ((Discard(),) if outcome else (IMPLICIT,))


# --------------------------------------------------------------- RFC 6609 include
def resolver(scripts: dict[str, str]) -> object:
    def resolve(name: str, location: str) -> Script | None:
        text = scripts.get(f"{location}:{name}")
        return None if text is None else parse_script(text)

    return resolve


def test_include_global_variables_and_return() -> None:
    scripts = {
        "personal:lists": 'require ["include", "variables", "fileinto"];\nglobal "box";\nset "box" "Lists";\nset "local" "x";\nreturn;\ndiscard;',
        "global:spam": 'require "fileinto";\nfileinto "Spam";',
    }
    main = (
        'require ["include", "variables", "fileinto"];\n'
        'global "box";\n'
        'include "lists";\n'
        'include :global :once "spam";\ninclude :global :once "spam";\n'
        'include :optional "missing";\n'
        'fileinto "${box}${local}";\n'
    )
    assert actions(main, include_resolver=resolver(scripts)) == (FileInto("Spam"), FileInto("Lists"))


def test_stop_in_an_included_script_stops_everything() -> None:
    scripts = {"personal:s": "stop;"}
    assert actions('require "include";\ninclude "s";\ndiscard;', include_resolver=resolver(scripts)) == (
        IMPLICIT,
    )


def test_include_loop_and_bad_script() -> None:
    loop = {
        "personal:a": 'require "include";\ninclude "b";',
        "personal:b": 'require "include";\ninclude "a";',
    }
    result = run('require "include";\ninclude "a";', include_resolver=resolver(loop))
    assert result.errors == ("line 2: include loop: personal script 'a' includes itself",)
    broken = {"personal:a": "frob;"}
    result = run('require "include";\ninclude "a";', include_resolver=resolver(broken))
    assert result.errors == (
        "line 2: included personal script 'a': line 1, column 1: unknown command \"frob\"",
    )


# --------------------------------------------------------------- limits
def test_redirect_limit() -> None:
    redirects = "".join(f'redirect "u{i}@example.com";\n' for i in range(MAX_REDIRECTS + 1))
    result = run(redirects)
    assert result.errors == (f"line {MAX_REDIRECTS + 1}: more than {MAX_REDIRECTS} redirects",)
    assert result.actions == (IMPLICIT,)


def test_step_limit() -> None:
    # 2048 values (the two Subject fields named 1024 times) x enough keys: more steps than MAX_STEPS
    names = ", ".join(['"subject"'] * 1024)
    keys = ", ".join(f'"k{i}"' for i in range(MAX_STEPS // 2048 + 1))
    result = run(f"if header :is [{names}] [{keys}] {{ discard; }}")
    assert result.errors == (f"line 1: script ran more than {MAX_STEPS} steps",)


def test_glob_is_bounded_and_not_exponential() -> None:
    budget = Budget()
    value = "a" * 2000
    assert glob_match(Comparator.OCTET, value, "*a*a*a*a*a*b", budget) is None
    assert budget.spent <= 2000 * 12
    # A search costs at most (characters searched) x (segment length): a long segment with "?" that
    # almost matches everywhere is the worst case. The budget counts that bound and ends the run.
    pattern = "*" + "a?" * 500 + "b*"
    hostile = (
        'require "variables";\nset "v" "'
        + "a" * 3900
        + '";\n'
        + f'if string :matches "${{v}}" "{pattern}" {{ discard; }}\n' * 3
    )
    result = run(hostile)
    assert result.errors == (f"line 5: matching work for this message exceeds {MAX_MATCH_WORK} steps",)


def test_contains_reads_are_charged() -> None:
    # 1024 keys against a 10 000-character value: 10 M characters read, over the budget
    keys = ", ".join(f'"k{i}"' for i in range(1024))
    script = (
        'require "variables";\nset "v" "'
        + "a" * 3990
        + '";\n'
        + f'if string :contains ["${{v}}", "${{v}}", "${{v}}"] [{keys}] {{ discard; }}'
    )
    result = run(script)
    assert result.errors == (f"line 3: matching work for this message exceeds {MAX_MATCH_WORK} steps",)


@pytest.mark.parametrize(
    ("value", "pattern", "captures"),
    [
        ("", "", []),
        ("", "*", [""]),
        ("abc", "a?c", ["b"]),
        ("abc", "a*", ["bc"]),
        ("abc", "*c", ["ab"]),
        ("a*c", "a\\*c", []),
        ("abc", "a\\*c", None),
        ("x\\y", "x\\\\y", []),
        ("[a] [b] c", "[*] *", ["a", "[b] c"]),
        ("abab", "*b*", ["a", "ab"]),
        ("aXbYbZ", "a*b*", ["X", "YbZ"]),
        ("abc", "**c", ["", "ab"]),
        ("ab", "a?*", ["b", ""]),
        ("ab", "a??", None),
        ("ABC", "a*", ["BC"]),  # casemap, the capture keeps the value's case
    ],
)
def test_glob_captures(value: str, pattern: str, captures: list[str] | None) -> None:
    assert glob_match(Comparator.ASCII_CASEMAP, value, pattern, Budget()) == captures


def test_dates_need_an_aware_now() -> None:
    # the zone of `now` is the local zone; UTC here
    result = evaluate(
        parse_script('require "date";\nif currentdate :is "zone" "+0000" { discard; }'),
        MessageContext(MESSAGE, "", "x@y", datetime(2026, 1, 1, tzinfo=UTC)),
    )
    assert result.actions == (Discard(),)
