"""Fuzz: Sieve scripts parse or raise SieveSyntaxError; parsed scripts evaluate to actions, or to the
implicit keep with a runtime error, within the step bounds (tests/fuzzing.py's CPU time per input)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.sieve import Keep, MessageContext, Script, SieveResult, SieveSyntaxError, evaluate, parse_script
from surat.sieve.matching import Budget, Comparator, glob_match
from surat.sieve.parser import SUPPORTED_CAPABILITIES

pytestmark = pytest.mark.fuzz

_REQUIRE = "require [" + ", ".join(f'"{c}"' for c in sorted(SUPPORTED_CAPABILITIES)) + "];\n"

_TOKENS = st.sampled_from(
    [
        *'[](){},;:"\\#*?$ \t\r\n/',
        "/*",
        "*/",
        "text:\n",
        "\n.\n",
        "..",
        "${",
        "}",
        "${hex:41}",
        "${unicode:263a}",
        "${1}",
        "if",
        "elsif",
        "else",
        "require",
        "stop",
        "keep",
        "discard",
        "fileinto",
        "redirect",
        "set",
        "vacation",
        "reject",
        "addflag",
        "include",
        "return",
        "global",
        "header",
        "address",
        "envelope",
        "exists",
        "size",
        "allof",
        "anyof",
        "not",
        "true",
        "false",
        "string",
        "body",
        "date",
        "hasflag",
        ":is",
        ":contains",
        ":matches",
        ":count",
        ":value",
        ":over",
        ":under",
        ":all",
        ":domain",
        ":user",
        ":comparator",
        ":index",
        ":last",
        ":days",
        ":copy",
        ":flags",
        ":lower",
        ":length",
        ":content",
        '"i;octet"',
        '"i;ascii-numeric"',
        '"ge"',
        '"subject"',
        '"a*b?c"',
        '"x@y.example"',
        "10",
        "1K",
        "99999999999999999999",
        "é",
        "\x00",
        _REQUIRE,
    ]
)

_SEEDS = [
    'require ["fileinto", "variables"];\nif header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }',
    'if anyof (size :over 1M, not exists "From") { discard; } elsif address :domain :is "to" "a.example" { keep; } else { redirect "b@c.example"; }',
    'require ["vacation", "imap4flags"];\naddflag "\\\\Seen";\nvacation :days 3 :subject "away" text:\nback soon\n..\n.\n;',
    'require ["body", "relational", "comparator-i;ascii-numeric"];\nif body :contains "x" { discard; }\nif header :count "ge" :comparator "i;ascii-numeric" "to" "2" { keep; }',
]

_MESSAGES = st.sampled_from(
    [
        b"",
        b"Subject: hi\r\n\r\nbody\r\n",
        b"From: a <a@b.example>\r\nTo: x@y.example, z@y.example\r\nList-ID: <l.example>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nab\r\n--x--\r\n",
        b"Subject: =?utf-8?b?w6k=?=\r\nTo: group:;\r\nX: \xff\xfe\r\n\r\n",
    ]
)


def _parse_or_error(text: str) -> Script | None:
    try:
        return parse_script(text)
    except SieveSyntaxError as error:
        assert error.line >= 1
        assert error.line <= text.count("\n") + 2
        return None


def _check_result(result: SieveResult) -> None:
    if result.errors:
        assert result.actions == (Keep(implicit=True),)
    else:
        assert result.actions  # at least the implicit keep, a keep, a discard, a fileinto...


def _run(script: Script, message: bytes) -> SieveResult:
    context = MessageContext(message, "s@example.org", "r+d@example.net", datetime(2026, 1, 2, tzinfo=UTC))
    return evaluate(
        script, context, include_resolver=lambda name, where: script, mailbox_exists=lambda name: True
    )


@fuzz_settings()
@given(st.lists(_TOKENS, max_size=80).map("".join), _MESSAGES)
def test_random_scripts_parse_or_raise(text: str, message: bytes) -> None:
    script = _parse_or_error(text)
    if script is not None:
        _check_result(_run(script, message))


@fuzz_settings()
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), _TOKENS), max_size=8),
    _MESSAGES,
)
def test_mutated_scripts_parse_or_raise(seed: str, edits: list[tuple[int, int, str]], message: bytes) -> None:
    text = seed
    for position, removed, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + removed :]
    script = _parse_or_error(text)
    if script is not None:
        _check_result(_run(script, message))


_KEYS = st.sampled_from(['"a"', '"*"', '"*@*"', '"?"', '""', '["x", "*y*"]', '"${1}"', '"1"'])
_HEADERS = st.sampled_from(['"subject"', '"to"', '["from", "to"]', '"list-id"', '"date"'])
_ADDRESS_HEADERS = st.sampled_from(['"to"', '"from"', '["from", "to"]', '"cc"'])
_MATCH = st.sampled_from(["", ":is", ":contains", ":matches", ':count "ge"', ':value "lt"'])
_LEAF_TESTS = st.one_of(
    st.builds(lambda m, h, k: f"header {m} {h} {k}", _MATCH, _HEADERS, _KEYS),
    st.builds(lambda m, h, k: f"address {m} :domain {h} {k}", _MATCH, _ADDRESS_HEADERS, _KEYS),
    st.builds(lambda m, k: f'envelope {m} :detail "to" {k}', _MATCH, _KEYS),
    st.builds(lambda m, k: f"body {m} :text {k}", _MATCH, _KEYS),
    st.builds(lambda m, k: f'date {m} "date" "year" {k}', _MATCH, _KEYS),
    st.builds(lambda m, k: f'string {m} "${{1}}${{v}}" {k}', _MATCH, _KEYS),
    st.sampled_from(["true", "false", 'exists "to"', "size :over 10", 'hasflag "\\\\Seen"']),
)
_TESTS = st.recursive(
    _LEAF_TESTS,
    lambda inner: st.one_of(
        inner.map(lambda t: f"not {t}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: f"anyof ({', '.join(ts)})"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: f"allof ({', '.join(ts)})"),
    ),
    max_leaves=6,
)
_ACTIONS = st.sampled_from(
    [
        "keep;",
        "discard;",
        "stop;",
        'fileinto "${1}x";',
        'fileinto :copy :flags "a" "B";',
        'redirect "u@example.com";',
        'redirect :copy "${v}@example.com";',
        'set "v" "${0}${v}";',
        'set :length "n" "${v}";',
        'addflag "\\\\Seen ${1}";',
        'removeflag "\\\\Seen";',
        'vacation :days 1 "away";',
        'reject "no";',
        'include :once "self";',
        "return;",
    ]
)
_COMMANDS = st.recursive(
    _ACTIONS,
    lambda inner: st.builds(
        lambda t, body, other: f"if {t} {{ {' '.join(body)} }} else {{ {' '.join(other)} }}",
        _TESTS,
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=2),
    ),
    max_leaves=10,
)


@fuzz_settings()
@given(st.lists(_COMMANDS, max_size=8), _MESSAGES)
def test_generated_scripts_evaluate_to_actions_or_a_limit(commands: list[str], message: bytes) -> None:
    script = parse_script(_REQUIRE + "\n".join(commands))  # generated from the grammar: always valid
    result = _run(script, message)
    _check_result(result)
    for error in result.errors:
        assert error.startswith("line "), error  # every runtime error names its line


def _reference_glob(value: str, pattern: str) -> list[str] | None:
    """The definition, by brute force: each wildcard, left to right, takes the fewest characters that
    let the rest match (RFC 5229 §3.2); exponential in general, fine for the short inputs here."""
    tokens: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            tokens.append("=" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            tokens.append(char if char in "*?" else "=" + char)

    @functools.cache
    def rest(p: int, t: int) -> list[str] | None:
        if p == len(tokens):
            return [] if t == len(value) else None
        token = tokens[p]
        if token == "*":
            for end in range(t, len(value) + 1):
                tail = rest(p + 1, end)
                if tail is not None:
                    return [value[t:end], *tail]
            return None
        if t == len(value):
            return None
        if token == "?":
            tail = rest(p + 1, t + 1)
            return None if tail is None else [value[t], *tail]
        return rest(p + 1, t + 1) if token[1] == value[t] else None

    return rest(0, 0)


@fuzz_settings()
@given(st.text("ab*", max_size=12), st.text("ab*?\\", max_size=8))
def test_glob_equals_the_definition(value: str, pattern: str) -> None:
    assert glob_match(Comparator.OCTET, value, pattern, Budget()) == _reference_glob(value, pattern)
