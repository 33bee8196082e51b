"""surat.sieve parser: RFC 5228 §8 grammar, `require` checking, signatures, limits, error lines."""

from __future__ import annotations

import pytest

from surat.sieve import SieveSyntaxError, parse_script
from surat.sieve.limits import MAX_COMMANDS, MAX_NESTING, MAX_SCRIPT_SIZE, MAX_STRING_LIST
from surat.sieve.nodes import Command, Number, StringList, Tag
from surat.sieve.nodes import Test as SieveTest


def first(script: str) -> Command:
    return parse_script(script).commands[-1]


# RFC 5228's own examples (§2.x, §3.x, §4.x, §5.x) and the extensions' ones: each must parse.
RFC_EXAMPLES = [
    # §2.3 comments
    "if size :over 100k { # this is a comment\n    discard;\n}",
    "if size :over 100K { /* this is a comment\n    this is still a comment */ discard /* this is a comment\n    */ ;\n}",
    # §2.4.2 multi-line string
    'require "fileinto";\nif header :contains "Subject" text:\nfoo\n..bar\n.\n{ fileinto "x"; }',
    # §3.1
    'require "fileinto";\nif header :contains "from" "coyote" {\n    discard;\n} elsif header :contains ["subject"] ["$$$"] {\n'
    '    discard;\n} else {\n    fileinto "INBOX";\n}',
    # §3.2
    'require ["fileinto", "reject"];',
    # §4.2
    'redirect "bart@example.com";',
    # §5.1
    'if address :is :all "from" "tim@example.com" {\n    discard;\n}',
    # §5.4
    'require "envelope";\nif envelope :all :is "from" "tim@example.com" {\n    discard;\n}',
    # §5.5
    'if exists ["From","Date"] {\n    discard;\n}',
    # §5.6 (the test has no command of its own; put it in an if)
    'if header :is ["X-Caffeine"] [""] { discard; }',
    'if header :contains ["X-Caffeine"] [""] { discard; }',
    # §5.9
    "if anyof (size :over 1M, not size :under 500k) { discard; }",
    # §9 example script
    '#\n# Example Sieve Filter\n# Declare any optional features or extension used by the script\n#\nrequire ["fileinto"];\n\n'
    "#\n# Handle messages from known mailing lists\n# Move messages from IETF filter discussion list to filter mailbox\n#\n"
    'if header :is "Sender" "owner-ietf-mta-filters@imc.org"\n        {\n        fileinto "filter";  # move to "filter" mailbox\n        }\n'
    '#\n# Keep all messages to or from people in my company\n#\nelsif address :DOMAIN :is ["From", "To"] "example.com"\n        {\n'
    '        keep;               # keep in "In" mailbox\n        }\n\n#\n# Try and catch unsolicited email.  If a message is not to me,\n'
    "# or it contains a subject known to be used by spammers, it's probably\n# spam.\n#\n"
    'elsif anyof (NOT address :all :contains\n               ["To", "Cc", "Bcc"] "me@example.com",\n'
    '             header :matches "subject"\n               ["*make*money*fast*", "*university*dipl*mas*"])\n        {\n'
    '        fileinto "spam";   # move to "spam" mailbox\n        }\nelse\n        {\n'
    '        # Move all other (non-company) mail to "personal"\n        # mailbox.\n        fileinto "personal";\n        }\n',
    # RFC 5229 §3, §4, §5
    'require ["fileinto", "variables"];\nif header :matches "List-ID" "*<*@*" {\n    fileinto "INBOX.lists.${2}"; stop;\n}',
    'require "variables";\nset "honorific"  "Mr";\nset "first_name" "Wile";\nset :upperfirst :lower "x" "yYy";',
    'require "variables";\nif string :matches " ${state} " "* pending *" { discard; }',
    # RFC 5230 §4
    'require "vacation";\nvacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]\n'
    "\"I'm away until October 19.  If it's an emergency, call 911, I guess.\" ;",
    'require ["vacation", "vacation-seconds"];\nvacation :seconds 1800 :handle "ho" :subject "s" :from "me@example.com" :mime "r";',
    # RFC 5232 §3-§5
    'require ["imap4flags", "fileinto"];\nsetflag "\\\\Seen";\naddflag ["\\\\Flagged", "\\\\Answered"];\n'
    'fileinto :flags "\\\\Deleted" "Trash";\nif hasflag :contains "\\\\Seen" { keep :flags ["a", "b"]; }',
    'require ["imap4flags", "variables"];\naddflag "flagvar" ["\\\\Deleted", "\\\\Answered"];\nif hasflag "flagvar" "\\\\Deleted" { removeflag "\\\\Deleted"; }',
    # RFC 5173 §7
    'require "body";\nif body :raw :contains "MAKE MONEY FAST" { discard; }',
    'require ["body", "fileinto"];\nif body :content "text" :contains ["missile", "coordinates"] { fileinto "secrets"; }',
    # RFC 5231 §5, RFC 5260, RFC 5233, RFC 5490, RFC 3894, RFC 5429, RFC 6609
    'require ["relational", "comparator-i;ascii-numeric"];\nif header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"] { discard; }\n'
    'if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"] { discard; }',
    'require ["date", "relational", "index"];\nif date :index 1 :last :zone "-0500" :value "ge" "date" "date" "2007-06-01" { discard; }\n'
    'if currentdate :value "lt" "hour" "09" { discard; }\nif date :originalzone "received" "zone" "+0100" { discard; }',
    'require ["subaddress", "fileinto"];\nif envelope :detail "to" "mta-filters" { fileinto "inbox.ietf-mta-filters"; }'.replace(
        '"subaddress"', '"subaddress", "envelope"'
    ),
    'require ["fileinto", "mailbox"];\nif mailboxexists "Partners" { fileinto :create "Partners"; }',
    'require ["copy", "fileinto"];\nredirect :copy "a@example.com";\nfileinto :copy "Archive";',
    'require ["reject"];\nif size :over 100K { reject text:\nYour message is too big.\n.\n; }',
    'require "ereject";\nereject "no";',
    'require ["include", "variables"];\ninclude :personal "always_allow";\ninclude :global :once :optional "spam_tests";\n'
    'global ["test", "test_mailbox"];\nreturn;',
    'require ["encoded-character"];\nif header :contains "Subject" "$${hex:24 24}" { discard; }',
]


@pytest.mark.parametrize("script", RFC_EXAMPLES)
def test_rfc_examples_parse(script: str) -> None:
    parsed = parse_script(script)
    assert parsed.commands


def test_if_elsif_else_tree() -> None:
    script = parse_script(RFC_EXAMPLES[3])
    assert [c.name for c in script.commands] == ["require", "if", "elsif", "else"]
    condition = script.commands[1].test
    assert condition == SieveTest(
        "header",
        {"contains": None},
        (StringList(("from",), False, 2), StringList(("coyote",), False, 2)),
        (),
        2,
    )
    assert script.commands[3].block == (
        Command("fileinto", {}, (StringList(("INBOX",), False, 7),), None, None, 7),
    )


@pytest.mark.parametrize(
    ("number", "value"),
    [
        ("0", 0),
        ("100", 100),
        ("1K", 1024),
        ("2k", 2048),
        ("3M", 3 << 20),
        ("4g", 4 << 30),
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_numbers_and_quantifiers(number: str, value: int) -> None:
    test = first(f"if size :over {number} {{ stop; }}").test
    assert test is not None
    assert test.positional == (Number(value, 1),)


def test_number_too_large_is_refused() -> None:
    with pytest.raises(SieveSyntaxError, match="line 1, column 15: number is too large"):
        parse_script("if size :over 9999999999G { stop; }")


@pytest.mark.parametrize(
    ("written", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"\a\b\c"', "abc"),  # §2.4.2: an undefined escape is the character itself
        ('"two\nlines"', "two\nlines"),
        ("text:\nline one\n..dotted\n.\n", "line one\r\n.dotted\r\n"),
        ("text: # comment\r\nx\r\n.\r\n", "x\r\n"),
        ("text:\n.\n", ""),
    ],
)
def test_strings(written: str, value: str) -> None:
    command = first(f"redirect {written};")
    assert command.positional == (StringList((value,), False, 1),)


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("${hex:40}", "@"),
        ("${HEX: 24 24}", "$$"),
        ("${unicode:40}", "@"),
        ("${Unicode: 263a 40}", "\u263a@"),
        ("${hex:}", "${hex:}"),  # not an encoded-character: kept
        ("${hex:4}", "${hex:4}"),  # odd digits: kept
        ("$${hex:40}", "$@"),
        ("${other:40}", "${other:40}"),
    ],
)
def test_encoded_character(written: str, value: str) -> None:
    command = first(f'require "encoded-character";\nredirect "{written}";')
    assert command.positional[0] == StringList((value,), False, 2)


def test_encoded_character_needs_require() -> None:
    assert first('redirect "${hex:40}";').positional[0] == StringList(("${hex:40}",), False, 1)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (
            'require "fileinto";\nrequire "x-unknown";',
            'line 2, column 1: unsupported capability "x-unknown" in require',
        ),
        ('keep;\nrequire "fileinto";', 'line 2, column 1: "require" must come before any other command'),
        (
            'if true {\n  require "fileinto";\n}',
            'line 2, column 3: "require" must come before any other command',
        ),
        ('\n\nfileinto "x";', 'line 3, column 1: command "fileinto" needs require "fileinto"'),
        ('if string "a" "b" { stop; }', 'line 1, column 4: test "string" needs require "variables"'),
        ('require "fileinto";\nfileinto :copy "x";', 'line 2: tag ":copy" needs require "copy"'),
        ('if header :count "gt" "a" "b" {}', 'line 1: tag ":count" needs require "relational"'),
        ('if address :user "to" "b" {}', 'line 1: tag ":user" needs require "subaddress"'),
        ("keep", 'line 1, column 5: expected ";" after "keep", found the end of the script'),
        ("keep true;", 'line 1, column 6: expected ";" after "keep", found a test or block'),
        ("frobnicate;", 'line 1, column 1: unknown command "frobnicate"'),
        ("if frob { }", 'line 1, column 4: unknown test "frob"'),
        (
            "if true { keep;",
            'line 1, column 16: expected "}" to close the block of "if", found the end of the script',
        ),
        ("if true keep;", 'line 1, column 9: "if" needs a block "{ ... }", found "keep"'),
        ("else { }", 'line 1, column 1: "else" must follow "if" or "elsif"'),
        ("if true {} keep; elsif true {}", 'line 1, column 18: "elsif" must follow "if" or "elsif"'),
        ('redirect "x', "line 1, column 10: string is not closed by a quote"),
        ("redirect text:\nabc\n", 'line 2: multi-line string is not ended by a line holding "."'),
        ("redirect text: x\n.\n", 'line 1, column 16: "text:" must be followed by the end of the line'),
        ("/* never closed", 'line 1, column 1: comment "/*" is not closed by "*/"'),
        ("keep; @", "line 1, column 7: unexpected character '@'"),
        ("keep; : ;", 'line 1, column 7: ":" must start a tag such as ":is"'),
        ('if header :is :is "a" "b" {}', 'line 1: test "header": tag ":is" given twice'),
        (
            'if header :is :contains "a" "b" {}',
            'line 1: test "header": tags ":is" and ":contains" exclude each other',
        ),
        ('if header :frob "a" "b" {}', 'line 1: test "header" has no tag ":frob"'),
        ('if header "a" {}', 'line 1: test "header" takes 2 positional argument(s), not 1'),
        ('if header "a" :is "b" {}', 'line 1: test "header": tag ":is" after a positional argument'),
        ("if size 100 {}", 'line 1: test "size" needs :over or :under'),
        ('if size :over "1" {}', 'line 1: argument 1 of test "size" must be a number'),
        ('redirect ["a", "b"];', 'line 1: argument 1 of command "redirect" must be a string'),
        (
            'if header :comparator 3 "a" "b" {}',
            'line 1: tag ":comparator" of test "header" must be followed by a string',
        ),
        ('if header :comparator "i;frob" "a" "b" {}', 'line 1: unknown comparator "i;frob"'),
        (
            'if header :comparator "i;ascii-numeric" "a" "b" {}',
            'line 1: comparator "i;ascii-numeric" needs require "comparator-i;ascii-numeric"',
        ),
        (
            'require "comparator-i;ascii-numeric";\nif header :contains :comparator "i;ascii-numeric" "a" "b" {}',
            'line 2: comparator "i;ascii-numeric" cannot be used with :contains or :matches',
        ),
        (
            'require "relational";\nif header :value "xx" "a" "b" {}',
            'line 2: ":value" needs one of gt, ge, lt, le, eq, ne',
        ),
        ('require "index";\nif header :last "a" "b" {}', 'line 2: ":last" needs ":index"'),
        ('require "date";\nif currentdate "century" "21" {}', 'line 2: unknown date part "century"'),
        (
            'require "date";\nif currentdate :zone "CET" "hour" "1" {}',
            'line 2: ":zone" must be +hhmm or -hhmm, not "CET"',
        ),
        ('require "variables";\nset "1x" "v";', 'line 2: "set": "1x" is not a variable name'),
        (
            'require "variables";\nset :lower :upper "x" "v";',
            'line 2: command "set": tags ":lower" and ":upper" exclude each other',
        ),
        (
            'require "vacation";\nvacation :days 1 :seconds 2 "r";',
            'line 2: tag ":seconds" needs require "vacation-seconds"',
        ),
        (
            'require ["vacation", "vacation-seconds"];\nvacation :days 1 :seconds 2 "r";',
            'line 2: command "vacation": tags ":days" and ":seconds" exclude each other',
        ),
        (
            'require "imap4flags";\nsetflag "v" "\\\\Seen";',
            'line 2: "setflag" with a variable name needs require "variables"',
        ),
        (
            'if address "subject" "x" {}',
            'line 1: "subject" is not an address header: the address test cannot use it',
        ),
        ('require "envelope";\nif envelope "auth" "x" {}', 'line 2: unknown envelope part "auth"'),
        ("if not (true) {}", 'line 1, column 8: expected a test, found "("'),
        ("if allof true {}", 'line 1, column 10: expected "(" after "allof", found "true"'),
        (
            "if allof (true false) {}",
            'line 1, column 16: expected ")" to close the tests of "allof", found "false"',
        ),
        ('redirect ["a" "b"];', 'line 1, column 15: expected "," or "]" in the string list, found a string'),
        ("redirect [];", 'line 1, column 11: expected a string in the list, found "]"'),
        (
            'require "encoded-character";\nredirect "${unicode:D800}";',
            "line 2: encoded-character ${unicode:D800} is not a character",
        ),
        (
            'require "encoded-character";\nredirect "${hex:ff}";',
            "line 2: encoded-character ${hex:...} is not UTF-8",
        ),
    ],
)
def test_errors_name_the_line(script: str, error: str) -> None:
    with pytest.raises(SieveSyntaxError) as raised:
        parse_script(script)
    assert str(raised.value) == error


def test_identifiers_and_tags_are_case_insensitive() -> None:
    command = first('REQUIRE "fileinto";\nIF Header :CONTAINS "a" "b" { FileInto "x"; }')
    assert command.name == "if"
    assert command.test is not None and command.test.tags == {"contains": None}
    assert command.block is not None and command.block[0].name == "fileinto"


def test_optional_leading_argument() -> None:
    plain = first('require "imap4flags";\nsetflag "\\\\Seen";')
    assert plain.positional == (StringList(("\\Seen",), False, 2),)
    named = first('require ["imap4flags", "variables"];\nsetflag "v" ["a", "b"];')
    assert named.positional == (StringList(("v",), False, 2), StringList(("a", "b"), True, 2))


def test_tag_values_are_kept_by_name() -> None:
    command = first('require "vacation";\nvacation :days 3 :addresses ["a@b"] :mime "r";')
    assert command.tags == {"days": Number(3, 2), "addresses": StringList(("a@b",), True, 2), "mime": None}
    assert not isinstance(command.tags["days"], Tag)


def test_nesting_limit() -> None:
    at_limit = "if true {" * MAX_NESTING + "keep;" + "}" * MAX_NESTING
    parse_script(at_limit)
    with pytest.raises(SieveSyntaxError, match=f"blocks nest deeper than {MAX_NESTING}"):
        parse_script("if true {" * (MAX_NESTING + 1) + "}" * (MAX_NESTING + 1))
    with pytest.raises(SieveSyntaxError, match=f"tests nest deeper than {MAX_NESTING}"):
        parse_script("if " + "not " * (MAX_NESTING + 1) + "true {}")


def test_command_limit() -> None:
    parse_script("keep;" * MAX_COMMANDS)
    with pytest.raises(
        SieveSyntaxError, match=f"line 1, column {5 * MAX_COMMANDS + 1}: script has more than"
    ):
        parse_script("keep;" * (MAX_COMMANDS + 1))


def test_size_limit() -> None:
    with pytest.raises(SieveSyntaxError, match=f"line 1: script is longer than {MAX_SCRIPT_SIZE} characters"):
        parse_script("#" * (MAX_SCRIPT_SIZE + 1))


def test_string_list_limit() -> None:
    strings = ",".join(['"a"'] * (MAX_STRING_LIST + 1))
    with pytest.raises(SieveSyntaxError, match=f"string list has more than {MAX_STRING_LIST} strings"):
        parse_script(f'if header :is [{strings}] "b" {{}}')


def test_capabilities_are_recorded() -> None:
    assert parse_script('require ["fileinto", "copy"];\nrequire "body";').capabilities == {
        "fileinto",
        "copy",
        "body",
    }


def test_lines_are_counted_through_comments_and_strings() -> None:
    script = '/* one\ntwo */ "\n\n"\n# three\ntext:\nx\n.\n\nfrob;'
    with pytest.raises(SieveSyntaxError) as raised:
        parse_script(script)
    # the string starts the script's first command: the error is where the command should be
    assert raised.value.line == 2
    with pytest.raises(SieveSyntaxError) as later:
        parse_script('/* one\ntwo */ keep;\nredirect "a\n\nb";\n# c\nredirect text:\nx\n.\n;\nfrob;')
    assert (later.value.line, later.value.column) == (11, 1)


@pytest.mark.parametrize("script", RFC_EXAMPLES)
def test_crlf_and_lf_scripts_parse_alike(script: str) -> None:
    """Scripts come from Unix editors (LF) and from ManageSieve clients (CRLF): the same AST."""
    assert parse_script(script.replace("\n", "\r\n")) == parse_script(script)


@pytest.mark.parametrize("script", RFC_EXAMPLES)
def test_a_comment_may_stand_for_any_blank(script: str) -> None:
    """RFC 5228 §2.3: a bracket comment is white space; in place of any blank between tokens, the same AST."""
    parsed = parse_script(script)
    for index, char in enumerate(script):
        if char == " " and not _inside_string(script, index):
            assert parse_script(script[:index] + "/**/" + script[index + 1 :]) == parsed


def _inside_string(script: str, index: int) -> bool:
    """Whether `index` lies in a quoted string, a multi-line string or a comment (good enough for the
    RFC examples: no escaped quotes)."""
    in_quotes = False
    position = 0
    while position < index:
        if script.startswith("text:", position) and not in_quotes:
            end = script.find("\n.\n", position)
            if end < 0 or index <= end + 2:
                return True
            position = end + 3
            continue
        char = script[position]
        if char == "#" and not in_quotes:
            newline = script.find("\n", position)
            if newline < 0 or index < newline:
                return True
            position = newline
            continue
        if script.startswith("/*", position) and not in_quotes:
            end = script.find("*/", position)
            if index < end + 2:
                return True
            position = end + 2
            continue
        if char == '"':
            in_quotes = not in_quotes
        position += 1
    return in_quotes
