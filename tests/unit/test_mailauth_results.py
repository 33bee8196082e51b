"""Authentication-Results (surat.mailauth.results): the header we write and forgeries we remove."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from surat.mailauth.dkim_verify import ARCResult, ARCStatus, DKIMResult, DKIMStatus
from surat.mailauth.dmarc import DMARCResult, DMARCStatus, Policy
from surat.mailauth.results import authentication_results, authserv_id_of, remove_forged_results
from surat.mailauth.spf import SPFResult, SPFStatus

SPF_PASS = SPFResult(
    SPFStatus.PASS, "example.org", "mailfrom", "alice@example.org", "example.org: matched ip4:192.0.2.1"
)
DKIM_PASS = DKIMResult(DKIMStatus.PASS, "example.org", "s1", "", "rsa-sha256", "", "AbCd+/12")
DMARC_PASS = DMARCResult(DMARCStatus.PASS, "example.org", Policy.NONE, "aligned SPF example.org")


def test_full_header() -> None:
    header = authentication_results(
        "mx.example.net",
        spf=SPF_PASS,
        dkim=[DKIM_PASS],
        dmarc=DMARC_PASS,
        arc=ARCResult(ARCStatus.PASS, "success", 2, ("a.example", "b.example")),
    )
    assert header == (
        b"Authentication-Results: mx.example.net;\r\n"
        b'\tspf=pass reason="example.org: matched ip4:192.0.2.1" smtp.mailfrom=alice@example.org;\r\n'
        b'\tdkim=pass header.d=example.org header.s=s1 header.a=rsa-sha256 header.b="AbCd+/12";\r\n'
        b'\tdmarc=pass reason="aligned SPF example.org" header.from=example.org;\r\n'
        b"\tarc=pass (i=2)\r\n"
    )


def test_no_results_is_none() -> None:
    assert authentication_results("mx.example.net") == b"Authentication-Results: mx.example.net; none\r\n"


def test_unsigned_message_says_dkim_none() -> None:
    header = authentication_results("mx.example.net", spf=SPF_PASS)
    assert b"\tdkim=none\r\n" in header


def test_dmarc_fail_shows_policy_and_disposition() -> None:
    result = DMARCResult(
        DMARCStatus.FAIL,
        "example.org",
        Policy.QUARANTINE,
        "no aligned SPF or DKIM pass; p=reject (not sampled by pct=50)",
        requested_policy=Policy.REJECT,
    )
    header = authentication_results("mx.example.net", dmarc=result)
    assert b'dmarc=fail (p=reject dis=quarantine) reason="no aligned SPF or DKIM pass; p=reject' in header
    assert b'(not sampled by pct=50)" header.from=example.org' in header


def test_null_sender_reports_helo() -> None:
    spf = SPFResult(
        SPFStatus.NONE, "mail.example.org", "helo", "postmaster@mail.example.org", "no SPF record"
    )
    header = authentication_results("mx.example.net", spf=spf)
    assert b'spf=none reason="no SPF record" smtp.helo=mail.example.org' in header


@pytest.mark.parametrize(
    ("sender", "prop"),
    [
        ("a.b@example.org", b"smtp.mailfrom=a.b@example.org"),
        ('"odd local"@example.org', b"smtp.mailfrom=example.org"),
        ("bounce+x=y@example.org", b"smtp.mailfrom=bounce+x=y@example.org"),
    ],
)
def test_mailfrom_property(sender: str, prop: bytes) -> None:
    spf = SPFResult(SPFStatus.FAIL, "example.org", "mailfrom", sender, "")
    header = authentication_results("mx.example.net", spf=spf)
    assert b"spf=fail " + prop in header


def test_reasons_are_quoted_and_sanitized() -> None:
    spf = SPFResult(
        SPFStatus.PERMERROR, "example.org", "mailfrom", "a@example.org", 'bad "record"\r\nX-Injected: 1\\'
    )
    dkim = DKIMResult(DKIMStatus.FAIL, "exämple.org", "s1", "body hash did not verify")
    header = authentication_results("mx.example.net", spf=spf, dkim=[dkim])
    assert header.isascii()
    assert b'reason="bad \\"record\\"??X-Injected: 1\\\\"' in header
    assert header.count(b"\r\n") == 3  # the three lines we fold, nothing injected
    assert b'header.d="ex?mple.org"' in header  # "?" is a tspecial, so the value is quoted


def test_several_dkim_results() -> None:
    fail = DKIMResult(
        DKIMStatus.FAIL, "example.net", "x", "signature did not verify", "ed25519-sha256", "", "zzzzzzzz"
    )
    header = authentication_results("mx.example.net", dkim=[DKIM_PASS, fail])
    lines = header.decode().split(";\r\n\t")
    assert lines[1].startswith("dkim=pass header.d=example.org")
    assert lines[2].startswith('dkim=fail reason="signature did not verify" header.d=example.net')


def test_header_parses_with_the_standard_library() -> None:
    header = authentication_results("mx.example.net", spf=SPF_PASS, dkim=[DKIM_PASS], dmarc=DMARC_PASS)
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(header + b"\r\nbody\r\n")
    value = str(message["Authentication-Results"])
    assert value.startswith("mx.example.net;")
    assert "dmarc=pass" in value
    assert authserv_id_of(value) == "mx.example.net"


# --- authserv-id and forgery removal --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "authserv_id"),
    [
        (" mx.example.net; spf=pass", "mx.example.net"),
        ("mx.example.net 1; none", "mx.example.net"),
        (" (comment (nested)) mx.example.net; none", "mx.example.net"),
        ('  "mx.example.net"; none', "mx.example.net"),
        ("\r\n\tmx.example.net;\r\n\tspf=pass", "mx.example.net"),
        (" ; none", ""),
    ],
)
def test_authserv_id_of(value: str, authserv_id: str) -> None:
    assert authserv_id_of(value) == authserv_id


MESSAGE = (
    b"Received: from a by b\r\n"
    b"Authentication-Results: MX.Example.NET; spf=pass smtp.mailfrom=forged@bank.example\r\n"
    b"Authentication-Results: other.example; dkim=pass\r\n"
    b"authentication-results: (looks innocent)\r\n"
    b"  mx.example.net;\r\n"
    b"\tdmarc=pass header.from=bank.example\r\n"
    b"Authentication-Results: mx.example.net.evil; none\r\n"
    b"From: x@bank.example\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.net; in the body stays\r\n"
)


def test_remove_forged_results() -> None:
    cleaned = remove_forged_results(MESSAGE, "mx.example.net")
    assert cleaned == (
        b"Received: from a by b\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
        b"Authentication-Results: mx.example.net.evil; none\r\n"
        b"From: x@bank.example\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.net; in the body stays\r\n"
    )


def test_remove_forged_results_lf_and_headers_only() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert remove_forged_results(lf, "mx.example.net") == remove_forged_results(
        MESSAGE, "mx.example.net"
    ).replace(b"\r\n", b"\n")
    headers_only = b"Subject: hi\r\nAuthentication-Results: mx.example.net; none"
    assert remove_forged_results(headers_only, "mx.example.net") == b"Subject: hi\r\n"


def test_remove_keeps_clean_message_identical() -> None:
    clean = b"From: a@example.org\r\nSubject: x\r\n folded\r\n\r\nbody\r\n"
    assert remove_forged_results(clean, "mx.example.net") == clean


def test_our_header_then_removal_round_trip() -> None:
    header = authentication_results("mx.example.net", spf=SPF_PASS, dkim=[DKIM_PASS])
    message = header + b"From: a@example.org\r\n\r\nbody\r\n"
    assert remove_forged_results(message, "mx.example.net") == b"From: a@example.org\r\n\r\nbody\r\n"
