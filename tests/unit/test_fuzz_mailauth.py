"""Fuzz: DKIM-Signature and DKIM key records, ARC header records, SPF and DMARC records (RFC 6376, 8617,
7208, 7489).

Random and mutated records parse or give their documented error (a DKIM result with a reason, an
SPFSyntaxError, a DMARCRecordError) within the per-input deadline of `fuzzing.PER_INPUT_DEADLINE`,
which is how super-linear parsing of hostile records shows up.
"""

from __future__ import annotations

import asyncio
import functools

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkim_keys import RSAKey
from fuzzing import fuzz_settings
from surat.dns.fake import FakeResolver
from surat.mailauth import dmarc, spf
from surat.mailauth.dkim_verify import ARCStatus, DKIMStatus, verify_arc, verify_dkim

pytestmark = pytest.mark.fuzz

_VALID_SIGNATURE = (
    "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1; t=1700000000; h=from:subject; "
    "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA"
)
_VALID_KEY = "v=DKIM1; k=rsa; h=sha256; t=s; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"
_RECORD_PIECES = [
    *"=;: \t\r\n!/+,.-_*%{}",
    "  " * 20,
    "\r\n ",
    "AAAA",
    "v=1",
    "a=",
    "b=",
    "bh=",
    "d=",
    "s=",
    "h=",
    "from",
    "l=",
    "q=dns/txt",
    "x=",
    "t=",
    "i=@",
    "k=ed25519",
    "p=",
    "v=DKIM1",
    "n=",
    "rsa-sha256",
    "example.org",
    "99999999999999",
    "\x00",
    "é",
]


def _mutations(base: str) -> st.SearchStrategy[str]:
    """`base` with random pieces inserted, replaced or deleted at random places."""

    def mutate(edits: list[tuple[int, int, str]]) -> str:
        text = base
        for position, length, piece in edits:
            at = position % (len(text) + 1)
            text = text[:at] + piece + text[at + length :]
        return text

    edit = st.tuples(st.integers(0, 400), st.integers(0, 8), st.sampled_from(["", *_RECORD_PIECES]))
    return st.lists(edit, max_size=12).map(mutate)


def _random_record() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(_RECORD_PIECES), max_size=60).map("".join)


@fuzz_settings()
@given(
    st.one_of(_mutations(_VALID_SIGNATURE), _random_record()),
    st.one_of(_mutations(_VALID_KEY), _random_record()),
)
def test_dkim_signatures_and_key_records(signature: str, key_record: str) -> None:
    message = (
        b"DKIM-Signature: "
        + signature.encode("utf-8").replace(b"\r\n", b"\r\n ").replace(b"\n", b" ")
        + b"\r\nFrom: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    )
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [key_record]})
    results = asyncio.run(verify_dkim(resolver, message))
    assert len(results) <= 1
    for result in results:
        assert isinstance(result.status, DKIMStatus)
        assert result.status is not DKIMStatus.PASS  # no signature here can verify
        assert result.reason


_SPF_PIECES = [
    *" :/.%{}-+~?=",
    "v=spf1 ",
    "all",
    "ip4:",
    "ip6:",
    "a",
    "mx",
    "ptr",
    "exists:",
    "include:",
    "redirect=",
    "exp=",
    "192.0.2.0",
    "/24",
    "//64",
    "::1",
    "%{d}",
    "%{ir}",
    "%{l1r-}",
    "%{x}",
    "example.org",
    "a" * 40,
    "1" * 40,
    "-" * 10,
    "\x00",
]


@fuzz_settings()
@given(st.lists(st.sampled_from(_SPF_PIECES), max_size=50).map("".join))
def test_spf_records_parse_or_raise_their_error(text: str) -> None:
    try:
        record = spf.parse_record("v=spf1 " + text)
    except spf.SPFSyntaxError:
        return
    assert record is not None


_DMARC_PIECES = [
    *" ;=,!@:\t",
    "v=DMARC1",
    "p=",
    "none",
    "quarantine",
    "reject",
    "sp=",
    "np=",
    "pct=",
    "100",
    "rua=",
    "ruf=",
    "mailto:",
    "d@example.org",
    "!10m",
    "adkim=s",
    "aspf=r",
    "@" * 30,
    " " * 30,
    "x",
    "é",
    "\x00",
]


@fuzz_settings()
@given(st.lists(st.sampled_from(_DMARC_PIECES), max_size=50).map("".join))
def test_dmarc_records_parse_or_raise_their_error(text: str) -> None:
    for record_text in (text, "v=DMARC1; " + text):
        dmarc.parse_record.cache_clear()
        try:
            record = dmarc.parse_record(record_text)
        except dmarc.DMARCRecordError:
            continue
        assert 0 <= record.pct <= 100
        assert all(uri.lower().startswith("mailto:") for uri in (*record.rua, *record.ruf))


# ARC (RFC 8617): Surat selects the ARC-Seal and ARC-Message-Signature fields, reads their tag lists
# (RFC 6376 §3.2, our `_tags`) to fetch the keys, and leaves the chain to dkimpy. Header records mutated
# anywhere give an ARCResult (pass, fail or none, with a reason), never an exception.

_ARC_PIECES = [*_RECORD_PIECES, "i=1", "i=2", "cv=pass", "cv=none", "cv=fail", "ARC-Seal:", "ARC-Seal: i=1;"]


@functools.cache
def _sealed() -> tuple[bytes, str]:
    """A message with one ARC set by lists.example, and the key record that verifies it."""
    key = RSAKey(1024)  # the key's size does not matter here, its generation time does
    message = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello\r\n"
    results = b"Authentication-Results: lists.example; dkim=pass header.d=example.org\r\n" + message
    arc_set: list[bytes] = dkim.arc_sign(
        results, b"arc", b"lists.example", key.private_pem, b"lists.example", timestamp="1700000000"
    )
    return b"".join(arc_set) + results, key.record


@fuzz_settings()
@given(st.data())
def test_arc_header_records_verify_or_fail(data: st.DataObject) -> None:
    sealed, record = _sealed()
    header_end = sealed.index(b"\r\nAuthentication-Results:")  # the ARC set is above it
    arc_set = sealed[:header_end].decode()
    mutated = data.draw(
        _mutations(arc_set) | st.lists(st.sampled_from(_ARC_PIECES), max_size=60).map("".join)
    )
    message = mutated.encode("utf-8") + sealed[header_end:]
    resolver = FakeResolver({("arc._domainkey.lists.example", "TXT"): [record]})
    result = asyncio.run(verify_arc(resolver, message))
    assert isinstance(result.status, ARCStatus)
    assert result.reason
    if mutated == arc_set:
        assert result.status is ARCStatus.PASS, result.reason
