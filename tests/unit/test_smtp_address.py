"""RFC 5321 §4.1.2 paths, IDNA domains, address literals and the ESMTP parameters of MAIL/RCPT."""

from __future__ import annotations

import pytest

from surat.proto.smtp import replies as R
from surat.proto.smtp.address import (
    Address,
    MailParams,
    RcptParams,
    SMTPSyntaxError,
    UnsafeText,
    has_controls,
    header_safe,
    normalize_domain,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    terminal_safe,
    xtext_decode,
    xtext_encode,
)


@pytest.mark.parametrize(
    ("text", "address", "rest"),
    [
        ("<user@example.com>", Address("user", "example.com"), ""),
        ("<User.Name+tag@EXAMPLE.com> SIZE=10", Address("User.Name+tag", "example.com"), " SIZE=10"),
        ("<a!#$%&'*+-/=?^_`{|}~@x.example>", Address("a!#$%&'*+-/=?^_`{|}~", "x.example"), ""),
        ('<"john doe"@example.com>', Address("john doe", "example.com"), ""),
        ('<"a\\"b\\\\c"@example.com>', Address('a"b\\c', "example.com"), ""),
        ('<"a>b"@example.com>', Address("a>b", "example.com"), ""),
        ("<@relay.example,@other.example:user@example.com>", Address("user", "example.com"), ""),
        ("<user@[192.0.2.1]>", Address("user", "[192.0.2.1]"), ""),
        ("<user@[IPv6:2001:DB8:0:0:0:0:0:1]>", Address("user", "[IPv6:2001:db8::1]"), ""),
        ("<user@[010.000.2.1]>", Address("user", "[10.0.2.1]"), ""),  # Snum = 1*3DIGIT
        ("<user@[IPv6:::1]>", Address("user", "[IPv6:::1]"), ""),  # IPv6-comp
        ("<user@[ipv6:1:2:3:4:5:6::]>", Address("user", "[IPv6:1:2:3:4:5:6::]"), ""),  # 6 groups + "::"
        ("<user@[IPv6:::ffff:192.0.2.1]>", Address("user", "[IPv6:::ffff:c000:201]"), ""),  # IPv6v4-comp
        (
            "<user@[IPv6:1:2:3:4:5:6:192.0.2.1]>",
            Address("user", "[IPv6:1:2:3:4:5:6:c000:201]"),
            "",
        ),  # v4-full
        ("<user@[IPv6:1::2:3:4:192.0.2.1]>", Address("user", "[IPv6:1::2:3:4:c000:201]"), ""),
        ("<user@xn--bcher-kva.example>", Address("user", "xn--bcher-kva.example"), ""),
        ("<user@Bücher.example>", Address("user", "xn--bcher-kva.example"), ""),
        ("<jörg@example.com>", Address("jörg", "example.com"), ""),
        ("<u@localhost>", Address("u", "localhost"), ""),
    ],
)
def test_valid_paths(text: str, address: Address, rest: str) -> None:
    assert parse_path(text, sender=False) == (address, rest)


def test_null_reverse_path() -> None:
    assert parse_path("<> BODY=8BITMIME", sender=True) == (None, " BODY=8BITMIME")
    with pytest.raises(SMTPSyntaxError) as info:
        parse_path("<>", sender=False)
    assert info.value.reply == R.BAD_RECIPIENT_SYNTAX


def test_postmaster_without_domain() -> None:
    # RFC 5321 §4.1.1.3
    assert parse_path("<Postmaster>", sender=False, postmaster_ok=True) == (Address("Postmaster", ""), "")
    with pytest.raises(SMTPSyntaxError):
        parse_path("<Postmaster>", sender=True)
    with pytest.raises(SMTPSyntaxError):
        parse_path("<someone>", sender=False, postmaster_ok=True)


@pytest.mark.parametrize(
    "text",
    [
        "user@example.com",
        "<user@example.com",
        "<user>",
        "<@example.com>",
        "<user@>",
        "<.user@example.com>",
        "<user.@example.com>",
        "<us..er@example.com>",
        "<us er@example.com>",
        "<user@exa mple.com>",
        "<user@-example.com>",
        "<user@example-.com>",
        "<user@example..com>",
        "<user@example.com.>",
        "<user@exa_mple.com>",
        "<user@[300.1.1.1]>",
        "<user@[IPv6:zz::1]>",
        "<user@[tag:content]>",  # a General-address-literal: no tag but IPv6 is registered
        "<user@[IPv6:::1%eth0]>",  # no scope id in the RFC 5321 §4.1.3 grammar
        "<user@[IPv6:::1%\rX-Evil: 1]>",
        "<user@[IPv6:1:2:3:4:5:6:7]>",  # IPv6-full has 8 groups
        "<user@[IPv6:1:2:3:4:5:6:7::]>",  # IPv6-comp: at most 6 groups beside "::"
        "<user@[IPv6:1::2::3]>",
        "<user@[IPv6:1:::2]>",
        "<user@[IPv6::1]>",
        "<user@[IPv6:12345::1]>",
        "<user@[IPv6:1::2:3:4:5:192.0.2.1]>",  # IPv6v4-comp: at most 4 groups beside "::"
        "<user@[IPv6:::256.0.0.1]>",
        "<user@[IPv6:1.2.3.4]>",
        "<user@[192.0.2]>",
        "<user@[192.0.2.1.5]>",
        "<user@[1922.0.2.1]>",
        "<user@[ 192.0.2.1]>",
        "<user@[١٩٢.0.2.1]>",  # Arabic-Indic digits are digits to str.isdigit, not to RFC 5234
        "<user@xn--zz.example>",
        '<"unterminated@example.com>',
        "<user@example.com>junk",
        "<@relay.example user@example.com>",
        "<" + "a" * 65 + "@example.com>",
        "<user@" + ("a" * 60 + ".") * 5 + "com>",
        "<user@" + "a" * 64 + ".com>",
    ],
)
def test_invalid_paths(text: str) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_path(text, sender=True)
    assert info.value.reply == R.BAD_SENDER_SYNTAX


def test_utf8_refused_when_not_allowed() -> None:
    with pytest.raises(SMTPSyntaxError):
        parse_path("<jörg@example.com>", sender=True, utf8=False)
    with pytest.raises(SMTPSyntaxError):
        parse_path("<user@bücher.example>", sender=True, utf8=False)


def test_address_str_round_trips() -> None:
    for text in ["<a.b@example.com>", '<"john doe"@example.com>', '<"a\\"b"@example.com>']:
        address, _ = parse_path(text, sender=False)
        assert address is not None
        assert parse_path(f"<{address}>", sender=False)[0] == address
    assert str(Address("Postmaster", "")) == "Postmaster"


@pytest.mark.parametrize(
    ("domain", "normal"),
    [
        ("Example.COM", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ],
)
def test_normalize_domain(domain: str, normal: str) -> None:
    assert normalize_domain(domain) == normal


def test_xtext() -> None:
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode(xtext_encode("ü x")) == "ü x"
    for bad in ["a+2", "a+zz", "a=b", "a b"]:
        with pytest.raises(ValueError):
            xtext_decode(bad)


def test_mail_params() -> None:
    assert parse_mail_params("") == MailParams()
    assert parse_mail_params(
        " size=123 body=8bitmime SMTPUTF8 RET=full ENVID=abc+2B AUTH=u+40example.com"
    ) == (
        MailParams(size=123, body="8BITMIME", smtputf8=True, ret="FULL", envid="abc+2B", auth="u@example.com")
    )


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("SIZE", R.SYNTAX_ERROR),
        ("SIZE=-1", R.SYNTAX_ERROR),
        ("SIZE=" + "9" * 21, R.SYNTAX_ERROR),
        ("SIZE=1 SIZE=2", R.SYNTAX_ERROR),
        ("BODY=BINARYMIME", R.SYNTAX_ERROR),
        ("SMTPUTF8=yes", R.SYNTAX_ERROR),
        ("RET=ALL", R.SYNTAX_ERROR),
        ("ENVID=" + "x" * 101, R.SYNTAX_ERROR),
        ("ENVID=a+zz", R.SYNTAX_ERROR),
        ("=1", R.SYNTAX_ERROR),
        ("-X=1", R.SYNTAX_ERROR),
        ("X=", R.SYNTAX_ERROR),
        ("NOTIFY=NEVER", R.UNKNOWN_PARAMETER),
        ("XFOO=1", R.UNKNOWN_PARAMETER),
    ],
)
def test_bad_mail_params(text: str, reply: R.Reply) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_mail_params(text)
    assert info.value.reply == reply


def test_dsn_and_smtputf8_params_only_when_offered() -> None:
    for text in ["RET=FULL", "ENVID=x"]:
        with pytest.raises(SMTPSyntaxError) as info:
            parse_mail_params(text, dsn=False)
        assert info.value.reply == R.UNKNOWN_PARAMETER
    with pytest.raises(SMTPSyntaxError):
        parse_mail_params("SMTPUTF8", smtputf8=False)
    with pytest.raises(SMTPSyntaxError):
        parse_rcpt_params("NOTIFY=NEVER", dsn=False)


def test_rcpt_params() -> None:
    assert parse_rcpt_params(" notify=success,delay orcpt=rfc822;a+40b") == RcptParams(
        ("SUCCESS", "DELAY"), "rfc822;a+40b"
    )
    assert parse_rcpt_params("NOTIFY=never") == RcptParams(("NEVER",))


@pytest.mark.parametrize(
    "text",
    [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=",
        "NOTIFY=ALWAYS",
        "ORCPT=rfc822",
        "ORCPT=;a@b",
        "ORCPT=rfc822;",
        "ORCPT=rfc822;a+zz",
        "ORCPT=rfc822;" + "a" * 500,
    ],
)
def test_bad_rcpt_params(text: str) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_rcpt_params(text)
    assert info.value.reply == R.SYNTAX_ERROR


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("a@example.org", True),
        ("jörg@example.org", True),
        ("a\r@x", False),
        ("a\x00", False),
        ("a\x85", False),
    ],
)
def test_header_and_terminal_checks(text: str, safe: bool) -> None:
    assert has_controls(text) is not safe
    if safe:
        assert header_safe(text, "sender") == text
        assert terminal_safe(text) == text
    else:
        with pytest.raises(UnsafeText, match="control character in sender"):
            header_safe(text, "sender")
        assert terminal_safe(text).isprintable()
    assert terminal_safe("<a\r\nX-Evil: 1\x1b[2J>") == "<a\\r\\nX-Evil: 1\\x1b[2J>"
