"""MTA-STS record and policy parsing (RFC 8461 §3.1, §3.2) and MX pattern matching (§4.1)."""

from __future__ import annotations

import pytest

from surat.mailauth.mtasts import (
    MAX_MAX_AGE,
    MAX_POLICY_SIZE,
    PolicyError,
    StsMode,
    StsPolicy,
    StsRecord,
    mx_pattern_matches,
    parse_policy,
    parse_record,
)

# RFC 8461 §3.2's example, with CRLF line ends.
RFC_EXAMPLE = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"
RFC_EXAMPLE_POLICY = StsPolicy(
    StsMode.ENFORCE, 604800, ("mail.example.com", "*.example.net", "backupmx.example.com")
)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], StsRecord("20160831085700Z")),  # RFC 8461 §3.1
        (["v=STSv1; id=20160831085700Z"], StsRecord("20160831085700Z")),
        (["v=STSv1;id=abc"], StsRecord("abc")),
        (["v=STSv1; id=abc ; ext=val;"], StsRecord("abc")),  # unknown fields ignored
        (["v=spf1 -all", "v=STSv1; id=abc"], StsRecord("abc")),  # other records discarded
        (["v=STSv1; id=" + "a" * 32], StsRecord("a" * 32)),
        ([], None),
        (["v=spf1 -all"], None),
        (["v=STSv1 ; id=abc"], None),  # does not begin with "v=STSv1;": discarded (§3.1)
    ],
)
def test_record(texts: list[str], expected: StsRecord | None) -> None:
    assert parse_record(texts) == expected


@pytest.mark.parametrize(
    "texts",
    [
        ["v=STSv1; id=a", "v=STSv1; id=b"],  # §3.1: more than one record -> no MTA-STS
        ["v=STSv1;"],
        ["v=STSv1; ext=1"],  # no id
        ["v=STSv1; id="],
        ["v=STSv1; id=" + "a" * 33],
        ["v=STSv1; id=ab-c"],
        ["v=STSv1; id=a; id=b"],
        ["v=STSv1; id=a; bogus"],
        ["v=STSv1; id=a; _x=1"],
        ["v=STSv1; id=a; x=a=b"],
        ["v=STSv1; id=a; x="],
    ],
)
def test_bad_records(texts: list[str]) -> None:
    with pytest.raises(PolicyError):
        parse_record(texts)


def test_rfc_example_policy() -> None:
    assert parse_policy(RFC_EXAMPLE) == RFC_EXAMPLE_POLICY


def test_rfc_example_at_every_split_is_the_same_with_lf() -> None:
    # Lines end in CRLF or LF (§3.2 ABNF, erratum 6253), mixed within one file.
    lf = RFC_EXAMPLE.replace(b"\r\n", b"\n")
    assert parse_policy(lf) == RFC_EXAMPLE_POLICY
    for offset in range(len(lf)):
        mixed = RFC_EXAMPLE[:offset].replace(b"\r\n", b"\n") + RFC_EXAMPLE[offset:]
        assert parse_policy(mixed) == RFC_EXAMPLE_POLICY


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"version: STSv1\nmode: none\nmax_age: 0", StsPolicy(StsMode.NONE, 0, ())),
        (
            b"version:STSv1\nmode:testing\nmx:MX.Example.COM\nmax_age:86400\n",
            StsPolicy(StsMode.TESTING, 86400, ("mx.example.com",)),
        ),
        (
            b"mode: enforce\nmx: a.example\nmax_age: 31557600\nversion: STSv1\n",
            StsPolicy(StsMode.ENFORCE, MAX_MAX_AGE, ("a.example",)),
        ),
        (
            b"version: STSv1\nmode: enforce\nmx: a.example\nmx: a.example\nmax_age: 1\nfuture_key: anything at all\n\n",
            StsPolicy(StsMode.ENFORCE, 1, ("a.example",)),
        ),
        (
            b"version: STSv1  \t\r\nmode: enforce \r\nmx: a.example\t\r\nmax_age: 5 \r\n",
            StsPolicy(StsMode.ENFORCE, 5, ("a.example",)),
        ),
    ],
)
def test_policies(body: bytes, expected: StsPolicy) -> None:
    assert parse_policy(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"mode: enforce\nmx: a.example\nmax_age: 1\n",  # no version
        b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmx: a.example\nmax_age: 1\n",  # no mode
        b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",  # values are case-sensitive (%s)
        b"version: STSv1\nmode: enforce\nmx: a.example\n",  # no max_age
        b"version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx outside mode none
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: \xd9\xa1\n",  # Arabic-Indic digit one
        b"version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nmax_age: 2\n",
        b"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example.\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nno colon here\n",
        b"version : STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",  # no space before ':'
        b" version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n\xff\n",  # not UTF-8
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n#x: y\n",
    ],
)
def test_bad_policies(body: bytes) -> None:
    with pytest.raises(PolicyError):
        parse_policy(body)


def test_size_cap() -> None:
    body = b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n"
    padded = body + b"x: " + b"y" * (MAX_POLICY_SIZE - len(body) - 4) + b"\n"
    assert len(padded) == MAX_POLICY_SIZE
    assert parse_policy(padded).mx == ("a.example",)
    with pytest.raises(PolicyError, match="larger"):
        parse_policy(padded + b"\n")


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.Example.com.", True),
        ("mail.example.com", "mail2.example.com", False),
        # RFC 8461 §4.1: the wildcard is one left-most label.
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "mx1.example.com.evil", False),
        ("*.example.com", "mx1example.com", False),
    ],
)
def test_mx_matching(pattern: str, host: str, expected: bool) -> None:
    assert mx_pattern_matches(pattern, host) is expected
    assert StsPolicy(StsMode.ENFORCE, 1, (pattern,)).matches(host) is expected
