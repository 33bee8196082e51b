"""DKIM and ARC verification (surat.mailauth.dkim_verify): messages signed here, keys served by a fake DNS."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from surat.dns.base import DNSErrorKind
from surat.dns.fake import FakeResolver
from surat.mailauth.dkim_verify import ARCStatus, DKIMStatus, verify_arc, verify_dkim

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


class RSAKey:
    def __init__(self, bits: int = 2048) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode()


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
