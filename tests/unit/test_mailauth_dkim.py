"""DKIM and ARC verification (surat.mailauth.dkim_verify): messages signed here, keys served by a fake DNS."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from dkim_keys import RSAKey
from surat.delivery.dkim import DkimAlgorithm, generate_key
from surat.delivery.dkim import sign as outbound_sign
from surat.dns.base import DNSErrorKind
from surat.dns.fake import FakeResolver
from surat.mailauth.dkim_canon import (
    _B_VALUE,
    MessageFormatError,
    canonical_body,
    parse_message,
    without_b_value,
)
from surat.mailauth.dkim_verify import (
    MAX_ARC_SETS,
    MAX_SIGNATURES,
    ARCStatus,
    DKIMStatus,
    _load_key,
    _rsa_sha256_verifies,
    signature_problem,
    verify_arc,
    verify_dkim,
)

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly figures\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the figures are attached.\r\n"
)


class Ed25519Key:
    def __init__(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        self.private_b64 = base64.b64encode(key.private_bytes_raw())
        public_raw = key.public_key().public_bytes_raw()
        self.record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(public_raw).decode()


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey()


@pytest.fixture(scope="module")
def other_rsa_key() -> RSAKey:
    return RSAKey()


def sign_rsa(
    message: bytes, key: RSAKey, domain: str = "example.org", selector: str = "s1", **kw: object
) -> bytes:
    header: bytes = dkim.sign(message, selector.encode(), domain.encode(), key.private_pem, **kw)
    return header + message


def sign_ed25519(message: bytes, key: Ed25519Key, domain: str = "example.org", selector: str = "ed") -> bytes:
    header: bytes = dkim.sign(
        message, selector.encode(), domain.encode(), key.private_b64, signature_algorithm=b"ed25519-sha256"
    )
    return header + message


async def test_unsigned_message_has_no_results() -> None:
    assert await verify_dkim(FakeResolver(), MESSAGE) == []


async def test_rsa_pass(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS, result.reason
    assert (result.domain, result.selector, result.algorithm) == ("example.org", "s1", "rsa-sha256")
    assert len(result.b_prefix) == 8
    assert signed.count(result.b_prefix.encode()) == 1


async def test_ed25519_pass() -> None:
    key = Ed25519Key()
    signed = sign_ed25519(MESSAGE, key)
    resolver = FakeResolver({("ed._domainkey.example.org", "TXT"): [key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS, result.reason
    assert result.algorithm == "ed25519-sha256"


async def test_tampered_body_fails(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed.replace(b"figures are", b"figures were"))
    assert result.status is DKIMStatus.FAIL
    assert "body hash" in result.reason


async def test_tampered_ed25519_body_fails() -> None:
    key = Ed25519Key()
    signed = sign_ed25519(MESSAGE, key)
    resolver = FakeResolver({("ed._domainkey.example.org", "TXT"): [key.record]})
    [result] = await verify_dkim(resolver, signed.replace(b"Hello Bob", b"Hello Eve"))
    assert result.status is DKIMStatus.FAIL


async def test_tampered_signed_header_fails(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed.replace(b"quarterly figures", b"wire the money"))
    assert result.status is DKIMStatus.FAIL
    assert "body hash" not in result.reason


async def test_wrong_key_fails(rsa_key: RSAKey, other_rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [other_rsa_key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.FAIL


async def test_relaxed_canonicalization_survives_whitespace_changes(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key, canonicalize=(b"relaxed", b"relaxed"))
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    reformatted = signed.replace(b"Subject: quarterly figures", b"Subject:   quarterly    figures")
    [result] = await verify_dkim(resolver, reformatted.replace(b"attached.\r\n", b"attached.   \r\n"))
    assert result.status is DKIMStatus.PASS, result.reason


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (None, DKIMStatus.PERMERROR),  # the name does not exist: RFC 6376 §6.1.2 PERMFAIL (no key)
        (DNSErrorKind.TEMPORARY, DKIMStatus.TEMPERROR),  # RFC 6376 §6.1.2 TEMPFAIL
        ([], DKIMStatus.PERMERROR),  # NODATA
        (["v=DKIM1; k=rsa; p="], DKIMStatus.PERMERROR),  # revoked
        (["v=DKIM1; k=rsa; p=not!base64"], DKIMStatus.PERMERROR),
        (["v=DKIM2; k=rsa; p=AAAA"], DKIMStatus.PERMERROR),
        (["garbage without tags"], DKIMStatus.PERMERROR),
    ],
)
async def test_key_problems(
    rsa_key: RSAKey, answer: list[str] | DNSErrorKind | None, status: DKIMStatus
) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("other.example.org", "TXT"): ["x"]})
    if answer is not None:
        resolver.set("s1._domainkey.example.org", "TXT", answer)
    [result] = await verify_dkim(resolver, signed)
    assert result.status is status, result.reason
    assert result.domain == "example.org"


async def test_key_restrictions(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key, identity=b"alice@mail.example.org")
    name = "s1._domainkey.example.org"
    ok = FakeResolver({(name, "TXT"): [rsa_key.record]})
    assert (await verify_dkim(ok, signed))[0].status is DKIMStatus.PASS
    for restricted in [
        rsa_key.record + "; h=sha1",  # hash not allowed
        rsa_key.record + "; t=s",  # i= is a subdomain of d=
        rsa_key.record + "; s=tlsrpt",  # not for email
        rsa_key.record.replace("k=rsa", "k=ed25519"),  # type does not match a=
    ]:
        resolver = FakeResolver({(name, "TXT"): [restricted]})
        [result] = await verify_dkim(resolver, signed)
        assert result.status is DKIMStatus.PERMERROR, restricted


async def test_rsa_key_below_minimum_is_permerror(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed, min_rsa_bits=4096)
    assert result.status is DKIMStatus.PERMERROR


@pytest.mark.parametrize(
    "signature",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from; b=AAAA\r\n",  # no bh=
        b"DKIM-Signature: v=1; a=rsa-md5; d=example.org; s=s1; h=from; bh=AAAA; b=AAAA\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=subject; bh=AAAA; b=AAAA\r\n",  # From unsigned
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from; bh=AAAA; b=AAAA; x=1000\r\n",  # expired
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; i=a@evil.example; h=from; bh=AAAA; b=AAAA\r\n",
        b"DKIM-Signature: this is not a tag list\r\n",
    ],
)
async def test_unacceptable_signatures_are_neutral_without_dns(signature: bytes) -> None:
    resolver = FakeResolver()
    [result] = await verify_dkim(resolver, signature + MESSAGE)
    assert result.status is DKIMStatus.NEUTRAL, result.reason
    assert resolver.queries == []


async def test_every_signature_is_verified_in_order(rsa_key: RSAKey) -> None:
    ed_key = Ed25519Key()
    once = sign_rsa(MESSAGE, rsa_key, domain="example.org", selector="s1")
    twice = sign_ed25519(once, ed_key, domain="mailer.example", selector="ed")
    thrice = sign_rsa(twice, rsa_key, domain="missing.example", selector="gone")
    resolver = FakeResolver(
        {
            ("s1._domainkey.example.org", "TXT"): [rsa_key.record],
            ("ed._domainkey.mailer.example", "TXT"): [ed_key.record],
        }
    )
    results = await verify_dkim(resolver, thrice)
    assert [(r.domain, r.status) for r in results] == [
        ("missing.example", DKIMStatus.PERMERROR),
        ("mailer.example", DKIMStatus.PASS),
        ("example.org", DKIMStatus.PASS),
    ]


async def test_shared_key_is_fetched_once(rsa_key: RSAKey) -> None:
    signed = sign_rsa(sign_rsa(MESSAGE, rsa_key), rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    results = await verify_dkim(resolver, signed)
    assert [r.status for r in results] == [DKIMStatus.PASS, DKIMStatus.PASS]
    assert resolver.queries == [("s1._domainkey.example.org", "TXT")]


async def test_lf_line_endings(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key).replace(b"\r\n", b"\n")
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS, result.reason


# --- ARC (RFC 8617) -----------------------------------------------------------------------------------------


def arc_seal(message: bytes, key: RSAKey, domain: str, results: str) -> bytes:
    """What an intermediary does: record its results in an A-R header, then add an ARC set."""
    with_results = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    arc_set: list[bytes] = dkim.arc_sign(
        with_results, b"arc", domain.encode(), key.private_pem, domain.encode(), timestamp="1700000000"
    )
    assert arc_set, "dkimpy produced no ARC set"
    return b"".join(arc_set) + with_results


def arc_zone(key: RSAKey, *domains: str) -> FakeResolver:
    return FakeResolver({(f"arc._domainkey.{d}", "TXT"): [key.record] for d in domains})


async def test_arc_none_without_arc_headers() -> None:
    result = await verify_arc(FakeResolver(), MESSAGE)
    assert result.status is ARCStatus.NONE


async def test_arc_one_and_two_hops_pass(rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    result = await verify_arc(arc_zone(rsa_key, "lists.example"), hop1)
    assert (result.status, result.instances, result.sealers) == (ARCStatus.PASS, 1, ("lists.example",))

    hop2 = arc_seal(hop1, rsa_key, "forwarder.example", "arc=pass")
    result = await verify_arc(arc_zone(rsa_key, "lists.example", "forwarder.example"), hop2)
    assert result.status is ARCStatus.PASS, result.reason
    assert result.sealers == ("lists.example", "forwarder.example")
    assert result.instances == 2


async def test_arc_fails_when_modified_after_sealing(rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    result = await verify_arc(arc_zone(rsa_key, "lists.example"), hop1.replace(b"Hello Bob", b"Hello Eve"))
    assert result.status is ARCStatus.FAIL
    assert not result.dns_temporary


async def test_arc_fails_with_wrong_key(rsa_key: RSAKey, other_rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    result = await verify_arc(arc_zone(other_rsa_key, "lists.example"), hop1)
    assert result.status is ARCStatus.FAIL


async def test_arc_fail_on_temporary_dns_is_marked(rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    resolver = FakeResolver({("arc._domainkey.lists.example", "TXT"): DNSErrorKind.TEMPORARY})
    result = await verify_arc(resolver, hop1)
    assert (result.status, result.dns_temporary) == (ARCStatus.FAIL, True)


async def test_arc_incomplete_set_fails(rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    lines = hop1.split(b"\r\n")
    # drop the ARC-Seal header field (and its folded continuation lines)
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line.lower().startswith(b"arc-seal:"):
            skipping = True
            continue
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        kept.append(line)
    result = await verify_arc(arc_zone(rsa_key, "lists.example"), b"\r\n".join(kept))
    assert result.status is ARCStatus.FAIL


async def test_unparsable_header_with_signature_is_neutral() -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256\r\nthis line has no colon\r\n\r\nbody\r\n"
    [result] = await verify_dkim(FakeResolver(), message)
    assert result.status is DKIMStatus.NEUTRAL


async def test_truncated_at_every_offset_never_raises(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    header_end = signed.index(b"\r\n\r\n")
    statuses = set()
    for offset in range(header_end + 2):
        for result in await verify_dkim(resolver, signed[:offset] + b"\r\n" + signed[header_end:]):
            statuses.add(result.status)
        arc = await verify_arc(resolver, signed[:offset])
        assert arc.status is ARCStatus.NONE
    assert DKIMStatus.PASS not in statuses  # every cut removed part of a signed header or of the signature
    assert DKIMStatus.NEUTRAL in statuses
    assert DKIMStatus.FAIL in statuses


async def test_arc_truncated_at_every_offset_never_passes(rsa_key: RSAKey) -> None:
    hop1 = arc_seal(MESSAGE, rsa_key, "lists.example", "dkim=pass header.d=example.org")
    resolver = arc_zone(rsa_key, "lists.example")
    header_end = hop1.index(b"\r\n\r\n")
    arc_end = hop1.index(b"Authentication-Results:")  # the ARC set sits above it
    seen = set()
    for offset in range(arc_end):
        result = await verify_arc(resolver, hop1[:offset] + b"\r\n" + hop1[header_end:])
        seen.add(result.status)
        assert result.status is not ARCStatus.PASS, offset
    assert seen == {ARCStatus.NONE, ARCStatus.FAIL}


# --- our own verifier (RFC 6376 §3.4 canonicalization, cryptography for the signature) ---------------

WHITESPACE_MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To:  bob@example.net \t\r\n"
    b"Subject:  folded\r\n"
    b"\tsubject  line \r\n"
    b"Message-ID: <2@example.org>\r\n"
    b"\r\n"
    b" C \r\n"
    b"D \t E\r\n"
    b"tabs\tand  spaces  \t\r\n"
    b"\r\n"
    b"\r\n"
)


def test_canonical_body_rfc6376_example() -> None:
    body = b" C \r\nD \t E\r\n\r\n\r\n"  # RFC 6376 §3.4.5
    assert canonical_body(body, relaxed=True) == b" C\r\nD E\r\n"
    assert canonical_body(body, relaxed=False) == b" C \r\nD \t E\r\n"


@pytest.mark.parametrize(
    ("body", "simple", "relaxed"),
    [
        (
            b"",
            b"\r\n",
            b"",
        ),  # §3.4.3: empty simple body is one CRLF; §3.4.4 (erratum 1384): relaxed stays empty
        (b"\r\n", b"\r\n", b""),
        (b"\r\n\r\n", b"\r\n", b""),
        (b" \t \r\n\r\n", b" \t \r\n", b""),
        (b"abc", b"abc\r\n", b"abc\r\n"),  # a missing final CRLF is added
        (b"abc  ", b"abc  \r\n", b"abc\r\n"),
        (b"a\tb", b"a\tb\r\n", b"a b\r\n"),
        (b"a\r\n\r\nb\r\n\r\n", b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n"),  # only trailing empty lines go
        (b"x\r\r\n", b"x\r\r\n", b"x\r\r\n"),  # a lone CR is not a line end
        (b"a \t\r\n\t\r\n \r\n", b"a \t\r\n\t\r\n \r\n", b"a\r\n"),  # blank-but-for-WSP lines go too
        (b"x \r y \r\n", b"x \r y \r\n", b"x \r y\r\n"),
    ],
)
def test_canonical_body_edges(body: bytes, simple: bytes, relaxed: bytes) -> None:
    assert canonical_body(body, relaxed=False) == simple
    assert canonical_body(body, relaxed=True) == relaxed


@pytest.mark.parametrize(
    "value",
    [
        b" v=1; a=rsa-sha256; bh=abc=; b=XYZ\r\n",
        b"b=abc; d=x",  # first tag
        b" b = abc ;d=x",  # whitespace before "=": the regex path
        b" d=ab=; b=Q\r\n w=\r\n",  # "b=" inside another value first
        b" x=1;\r\n\tb=AAA\r\n BBB;c=2\r\n",  # folded, not last
        b" bh=Ab=;b=1",
        b"ab=1; b=2",  # a tag name ending in b
        b"v=1; a=x",  # no b= at all
    ],
)
def test_b_value_removed_as_the_rfc_regex_does(value: bytes) -> None:
    # RFC 6376 §3.7: the signature's own b= value is hashed as empty
    match = _B_VALUE.search(value)
    expected = value[: match.end(1)] + value[match.end() :] if match is not None else value
    assert without_b_value(value) == expected


def test_parse_message_fields_and_body() -> None:
    parsed = parse_message(b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\n")  # RFC 6376 §3.4.5's header
    assert parsed.fields == ((b"A", b" X\r\n"), (b"B ", b" Y\t\r\n\tZ  \r\n"))
    assert parsed.body == b" C \r\n"
    assert parsed.values(b"b") == [b" Y\t\r\n\tZ  \r\n"]
    assert parse_message(b"A: 1\nB: 2\n\nbody\n") == parse_message(b"A: 1\r\nB: 2\r\n\r\nbody\r\n")
    assert parse_message(b"A: 1").fields == ((b"A", b" 1\r\n"),)
    assert parse_message(b"\r\nbody").fields == ()
    with pytest.raises(MessageFormatError):
        parse_message(b" continuation first\r\n\r\n")
    with pytest.raises(MessageFormatError):
        parse_message(b"no colon here\r\n\r\n")


@pytest.mark.parametrize("header_c", [b"simple", b"relaxed"])
@pytest.mark.parametrize("body_c", [b"simple", b"relaxed"])
@pytest.mark.parametrize("length", [False, True])
async def test_verifies_what_dkimpy_signs(
    rsa_key: RSAKey, header_c: bytes, body_c: bytes, length: bool
) -> None:
    signed = sign_rsa(
        WHITESPACE_MESSAGE,
        rsa_key,
        canonicalize=(header_c, body_c),
        include_headers=[b"from", b"to", b"subject", b"message-id", b"subject"],
        length=length,
    )
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS, result.reason
    # and the verdicts agree with dkimpy's on changes that only one canonicalization tolerates
    changed = signed.replace(b"To:  bob@example.net \t", b"To: bob@example.net")
    changed = changed.replace(b"D \t E", b"D E")
    [ours] = await verify_dkim(resolver, changed)
    theirs = dkim.verify(changed, dnsfunc=lambda *_a, **_k: rsa_key.record.encode())
    assert (ours.status is DKIMStatus.PASS) == theirs == (header_c == body_c == b"relaxed")


async def test_length_tag_allows_appended_text_only(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key, length=True)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [appended] = await verify_dkim(resolver, signed + b"-- \r\nlist footer\r\n")
    assert appended.status is DKIMStatus.PASS
    [changed] = await verify_dkim(resolver, signed.replace(b"Hello Bob", b"Hello Eve"))
    assert changed.status is DKIMStatus.FAIL


async def test_second_from_above_the_signed_one_fails(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    end = signed.index(b"From: Alice")
    forged = signed[:end] + b"From: Mallory <boss@example.org>\r\n" + signed[end:]
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, forged)
    assert result.status is DKIMStatus.FAIL


@pytest.mark.parametrize("algorithm", [DkimAlgorithm.RSA, DkimAlgorithm.ED25519])
async def test_verifies_our_outbound_signer(algorithm: DkimAlgorithm) -> None:
    key = generate_key("example.org", algorithm, datetime(2026, 1, 1, tzinfo=UTC))
    signed = outbound_sign(WHITESPACE_MESSAGE, "example.org", [key]) + WHITESPACE_MESSAGE
    resolver = FakeResolver({(key.record_name.rstrip("."), "TXT"): ["".join(key.txt_strings)]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS, result.reason
    assert result.algorithm == algorithm.signature_algorithm
    [tampered] = await verify_dkim(resolver, signed.replace(b"tabs", b"tab"))
    assert tampered.status is DKIMStatus.FAIL


async def test_rsa_sha1_is_not_accepted(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key, signature_algorithm=b"rsa-sha1")
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PERMERROR  # RFC 8301 §3.1
    assert "rsa-sha1" in result.reason


async def test_bare_rsa_public_key_record(rsa_key: RSAKey) -> None:
    private = serialization.load_pem_private_key(rsa_key.private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    pkcs1 = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    record = "v=DKIM1; p=" + base64.b64encode(pkcs1).decode()
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [record]})
    [result] = await verify_dkim(resolver, sign_rsa(MESSAGE, rsa_key))
    assert result.status is DKIMStatus.PASS


async def test_parsed_keys_are_cached_by_record_text(rsa_key: RSAKey) -> None:
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    signed = sign_rsa(MESSAGE, rsa_key)
    await verify_dkim(resolver, signed)
    hits = _load_key.cache_info().hits
    [result] = await verify_dkim(resolver, signed)
    assert result.status is DKIMStatus.PASS
    assert _load_key.cache_info().hits == hits + 1


async def test_shared_parse_gives_the_same_results(rsa_key: RSAKey) -> None:
    signed = sign_rsa(MESSAGE, rsa_key)
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    parsed = parse_message(signed)
    assert await verify_dkim(resolver, signed, parsed=parsed) == await verify_dkim(resolver, signed)
    arc = await verify_arc(resolver, signed, parsed=parsed)
    assert arc.status is ARCStatus.NONE
    assert resolver.queries == [("s1._domainkey.example.org", "TXT")] * 2  # ARC asked DNS nothing


GOOD_TAGS = {
    b"v": b"1",
    b"a": b"rsa-sha256",
    b"d": b"example.org",
    b"s": b"s1",
    b"h": b"from:to",
    b"bh": b"AAAA",
    b"b": b"AAAA\r\n BBBB",
}
NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, ""),
        ({b"i": b"alice@mail.example.org", b"l": b"100", b"q": b"dns/txt", b"t": b"1699999000"}, ""),
        ({b"x": str(NOW + 60).encode(), b"t": str(NOW).encode()}, ""),
        ({b"a": b"ED25519-SHA256"}, ""),
        ({b"bh": None}, "missing bh="),
        ({b"v": b"2"}, "not 1"),
        ({b"a": b"rsa-md5"}, "unknown signature algorithm"),
        ({b"b": b"AAA"}, "b= is not base64"),
        ({b"bh": b"AA!A"}, "bh= is not base64"),
        ({b"d": b"exa mple.org"}, "d= is not a domain"),
        ({b"i": b"a@evilexample.org"}, "i= is not in d="),
        ({b"l": b"-1"}, "l= is not"),
        ({b"q": b"http"}, "q= does not offer"),
        ({b"t": str(NOW + 86400).encode()}, "future"),
        ({b"x": str(NOW - 86400).encode()}, "expired"),
        ({b"x": str(NOW).encode(), b"t": str(NOW + 10).encode()}, "x= is before t="),
    ],
)
def test_signature_problem(changes: dict[bytes, bytes | None], problem: str) -> None:
    sig = dict(GOOD_TAGS)
    for tag, value in changes.items():
        if value is None:
            del sig[tag]
        else:
            sig[tag] = value
    found = signature_problem(sig, NOW)
    assert (found == "") if not problem else (problem in found), found


# RFC 8017 §9.2 note 1: the DER DigestInfo prefixes of EMSA-PKCS1-v1_5
_SHA256_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_SHA1_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


def _raw_rsa_signature(key: rsa.RSAPrivateKey, encoded: bytes) -> bytes:
    """The RSA signing primitive (RSASP1) applied to an encoded message we build by hand."""
    numbers = key.private_numbers()
    size = key.key_size // 8
    return pow(int.from_bytes(encoded, "big"), numbers.d, numbers.public_numbers.n).to_bytes(size, "big")


def _encoded(size: int, info: bytes, digest: bytes, block_type: bytes = b"\x01", fill: int = 0xFF) -> bytes:
    payload = info + digest
    return b"\x00" + block_type + bytes([fill]) * (size - 3 - len(payload)) + b"\x00" + payload


_DIGEST = hashlib.sha256(b"signed header fields").digest()


@pytest.mark.parametrize(
    ("encoded", "verifies"),
    [
        (lambda size: _encoded(size, _SHA256_INFO, _DIGEST), True),
        (lambda size: _encoded(size, _SHA256_INFO, hashlib.sha256(b"other").digest()), False),
        (lambda size: _encoded(size, _SHA1_INFO, _DIGEST[:20]), False),  # another hash's DigestInfo
        (lambda size: _encoded(size, _SHA256_INFO, _DIGEST, block_type=b"\x02"), False),
        (lambda size: _encoded(size, _SHA256_INFO, _DIGEST, fill=0xFE), False),  # padding not all FF
        (lambda size: _encoded(size, _SHA256_INFO, _DIGEST + b"\x00"), False),  # an octet after the digest
        (
            lambda size: (
                b"\x00\x01" + b"\xff" * 4 + b"\x00" + (_SHA256_INFO + _DIGEST).rjust(size - 7, b"\x00")
            ),
            False,
        ),
    ],
    ids=[
        "valid",
        "other-digest",
        "sha1-info",
        "block-type-2",
        "bad-padding",
        "trailing-octet",
        "short-padding",
    ],
)
def test_rsa_check_keeping_the_gil_accepts_only_the_exact_encoding(
    encoded: Callable[[int], bytes], verifies: bool
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    size = key.key_size // 8
    em = encoded(size)
    assert len(em) == size
    signature = _raw_rsa_signature(key, em)
    assert _rsa_sha256_verifies(key.public_key(), signature, _DIGEST) is verifies
    # the same answer as cryptography's own verify (which lets go of the GIL)
    try:
        key.public_key().verify(signature, _DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        agrees = True
    except InvalidSignature:
        agrees = False
    assert agrees is verifies


async def test_only_the_topmost_signatures_are_verified(rsa_key: RSAKey) -> None:
    # RFC 6376 §6.1: a limit on the signatures verified; each beyond it would cost a DNS lookup
    signed = sign_rsa(MESSAGE, rsa_key)
    junk = b"".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; d=junk{n}.example; s=s; h=from; bh=AAAA; b=AAAA\r\n".encode()
        for n in range(MAX_SIGNATURES + 5)
    )
    resolver = FakeResolver({("s1._domainkey.example.org", "TXT"): [rsa_key.record]})
    results = await verify_dkim(resolver, junk + signed)
    assert len(results) == MAX_SIGNATURES
    assert len(resolver.queries) == MAX_SIGNATURES  # one key lookup per verified signature
    # the genuine signature below the limit still counts when it is among the first
    few = junk[: junk.index(b"DKIM-Signature", 1)]
    results = await verify_dkim(resolver, few + signed)
    assert [r.status for r in results] == [DKIMStatus.PERMERROR, DKIMStatus.PASS]


async def test_more_arc_sets_than_rfc_8617_allows_fail_without_key_lookups() -> None:
    sets = b"".join(
        f"ARC-Seal: i={n}; a=rsa-sha256; cv=pass; d=s{n}.example; s=arc; b=AAAA\r\n"
        f"ARC-Message-Signature: i={n}; a=rsa-sha256; d=s{n}.example; s=arc; h=from; bh=AAAA; b=AAAA\r\n".encode()
        for n in range(1, MAX_ARC_SETS + 2)
    )
    resolver = FakeResolver()
    result = await verify_arc(resolver, sets + MESSAGE)
    assert result.status is ARCStatus.FAIL and "more than 50" in result.reason
    assert resolver.queries == []
