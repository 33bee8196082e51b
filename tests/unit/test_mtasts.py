"""MTA-STS policies and TXT records (RFC 8461 §3.1, §3.2): rendering, ids, the strict parsers."""

from __future__ import annotations

import pytest

from surat.mtasts import (
    MAX_AGE_LIMIT,
    Policy,
    PolicyError,
    StsRecord,
    parse_policy,
    parse_sts_record,
    policy_id,
    render_policy,
)

# RFC 8461 §3.2's example, as published (LF-terminated lines).
RFC_EXAMPLE = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n"


def test_the_rfc_example_parses() -> None:
    assert parse_policy(RFC_EXAMPLE) == Policy(
        "enforce", 604800, ("mail.example.com", "*.example.net", "backupmx.example.com")
    )


def test_render_is_crlf_lines_that_parse_back() -> None:
    policy = Policy("testing", 86400, ("mail.example.test",))
    text = render_policy(policy)
    assert text == "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 86400\r\n"
    assert parse_policy(text) == policy
    assert parse_policy(text.rstrip("\r\n")) == policy  # the last terminator is optional


def test_the_id_changes_with_the_policy_and_only_then() -> None:
    testing = Policy("testing", 604800, ("mail.example.test",))
    ids = {
        policy_id(testing),
        policy_id(Policy("enforce", 604800, ("mail.example.test",))),
        policy_id(Policy("testing", 86400, ("mail.example.test",))),
        policy_id(Policy("testing", 604800, ("mx.example.test",))),
    }
    assert len(ids) == 4
    assert policy_id(testing) == policy_id(Policy("testing", 604800, ("mail.example.test",)))
    assert all(parse_sts_record(f"v=STSv1; id={i}") == StsRecord(i) for i in ids)


def test_first_occurrence_wins_and_unknown_fields_are_ignored() -> None:
    text = (
        "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 5\nmax_age: 6\nfuture_x: y\n"
    )
    assert parse_policy(text) == Policy("testing", 5, ("a.example",))


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 1\n") == Policy("none", 1, ())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "version"),
        ("mode: testing\nmx: a.example\nmax_age: 1\n", "version"),
        ("version: STSv2\nmode: testing\nmx: a.example\nmax_age: 1\n", "version"),
        ("version: STSv1\nmode: Testing\nmx: a.example\nmax_age: 1\n", "mode"),  # %s: case-sensitive
        ("version: STSv1\nmode: testing\nmax_age: 1\n", "no mx"),
        ("version: STSv1\nmode: testing\nmx: a.example\n", "max_age"),
        ("version: STSv1\nmode: testing\nmx: a.example\nmax_age: -1\n", "max_age"),
        ("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 12345678901\n", "max_age"),
        (f"version: STSv1\nmode: testing\nmx: a.example\nmax_age: {MAX_AGE_LIMIT + 1}\n", "above"),
        ("version: STSv1\nmode: testing\nmx: a..example\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: testing\nmx: a.*.example\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: testing\nmx: -a.example\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1\n\n", "line 5"),
        ("version STSv1\nmode: testing\nmx: a.example\nmax_age: 1\n", "line 1"),
        (" version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1\n", "line 1"),
        ("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1\nx: a=b\n", "extension"),
        ("version: STSv1\r\r\nmode: testing\nmx: a.example\nmax_age: 1\n", "line 1"),
        ("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1\n" + "x: y\n" * 20000, "larger"),
    ],
)
def test_bad_policies_are_refused(text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=STSv1; id=20160831085700Z;", "20160831085700Z"),  # RFC 8461 §3.1's example
        ("v=STSv1;id=abc", "abc"),
        ("v=STSv1; id=abc; ext=1", "abc"),
        ("v=STSv1; id=first; id=second", "first"),
    ],
)
def test_sts_records(text: str, expected: str) -> None:
    assert parse_sts_record(text) == StsRecord(expected)


@pytest.mark.parametrize(
    "text",
    [
        "v=STSv2; id=1",
        "id=1; v=STSv1",
        "v=STSv1",
        "v=STSv1; id=",
        "v=STSv1; id=" + "a" * 33,
        "v=STSv1x; id=1",
    ],
)
def test_bad_sts_records(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_sts_record(text)
