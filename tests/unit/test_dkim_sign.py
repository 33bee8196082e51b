"""DKIM keys, their DNS records, and signatures checked by dkimpy's verifier against those records."""

from __future__ import annotations

import asyncio
import base64
import re
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.delivery.dkim import (
    Canonicalization,
    DkimAlgorithm,
    DkimError,
    DkimKey,
    SigningKey,
    SigningKeys,
    ensure_keys,
    generate_key,
    generate_keys,
    headers_to_sign,
    key_from_pem,
    load_keys,
    normalize_domain,
    save_keys,
    selector_for,
    sign,
    txt_lookup,
)
from surat.dns.fake import FakeResolver
from surat.mailauth.dkim_canon import MessageFormatError, parse_message
from surat.mailauth.dkim_verify import DKIMStatus, verify_dkim
from surat.store.keyfiles import FileKeyStore

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)

MESSAGE = (
    b"Received: from client by mail.example.com; Thu, 26 Nov 2026 09:30:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Thu, 26 Nov 2026 09:30:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the numbers are fine.\r\n"
)


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return generate_keys("Example.COM.", NOW)


def _verify_all(message: bytes, lookup: object) -> list[bool]:
    count = len(re.findall(rb"(?im)^dkim-signature:", message.split(b"\r\n\r\n", 1)[0]))
    results = []
    for index in range(count):
        try:
            results.append(bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=lookup)))
        except dkimpy.DKIMException:
            results.append(False)
    return results


def _tags(field: bytes) -> dict[str, str]:
    value = field.split(b":", 1)[1].decode("ascii")
    value = re.sub(r"\s+", "", value)
    return dict(part.split("=", 1) for part in value.split(";") if part)


def _fields(signature: bytes) -> list[bytes]:
    return [b"DKIM-Signature:" + part for part in signature.split(b"DKIM-Signature:")[1:]]


# ----------------------------------------------------------------------------------------- keys


def test_generated_keys_and_selectors(keys: tuple[DkimKey, DkimKey]) -> None:
    rsa_key, ed_key = keys
    assert (rsa_key.algorithm, ed_key.algorithm) == (DkimAlgorithm.RSA, DkimAlgorithm.ED25519)
    assert rsa_key.domain == ed_key.domain == "example.com"
    assert (rsa_key.selector, ed_key.selector) == ("s20261126r", "s20261126e")
    assert selector_for(DkimAlgorithm.ED25519, datetime(2027, 1, 2, tzinfo=UTC)) == "s20270102e"
    assert rsa_key.record_name == "s20261126r._domainkey.example.com."
    assert b"BEGIN RSA PRIVATE KEY" in rsa_key.private_pem
    assert b"BEGIN PRIVATE KEY" in ed_key.private_pem
    assert "PRIVATE" not in repr(rsa_key)
    assert rsa_key.private_pem.decode().splitlines()[1] not in repr(rsa_key)


def test_rsa_txt_record_is_split_into_255_octet_strings(keys: tuple[DkimKey, DkimKey]) -> None:
    rsa_key = keys[0]
    assert rsa_key.txt_record == f"v=DKIM1; k=rsa; p={rsa_key.public_key}"
    assert len(rsa_key.txt_strings) == 2
    assert all(len(part.encode()) <= 255 for part in rsa_key.txt_strings)
    assert "".join(rsa_key.txt_strings) == rsa_key.txt_record
    public = serialization.load_der_public_key(base64.b64decode(rsa_key.public_key))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    private = serialization.load_pem_private_key(rsa_key.private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()


def test_ed25519_txt_record(keys: tuple[DkimKey, DkimKey]) -> None:
    ed_key = keys[1]
    assert ed_key.txt_record == f"v=DKIM1; k=ed25519; p={ed_key.public_key}"
    assert ed_key.txt_strings == (ed_key.txt_record,)
    assert len(base64.b64decode(ed_key.public_key)) == 32  # RFC 8463 §4: the raw public key


@pytest.mark.parametrize("bad", ["", "../etc", "exa mple.com", "a/b.com", "-x.com", "bücher.de", "x..com"])
def test_bad_domains_rejected(bad: str) -> None:
    with pytest.raises(DkimError):
        normalize_domain(bad)


def test_key_from_pem_detects_algorithm_and_rejects_others(keys: tuple[DkimKey, DkimKey]) -> None:
    for key in keys:
        assert key_from_pem("example.com", key.selector, key.private_pem) == key
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(DkimError, match="neither RSA nor Ed25519"):
        key_from_pem("example.com", "s20261126e", ec_pem)
    with pytest.raises(DkimError, match="unreadable"):
        key_from_pem(
            "example.com", "s20261126e", b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"
        )


# ----------------------------------------------------------------------------------------- key files
# A SQLite store keeps the keys as files in its data directory (surat.store.keyfiles); the same
# promises on every backend are in tests/store_contract/test_keys.py.


async def test_save_and_load_with_private_permissions(tmp_path: Path, keys: tuple[DkimKey, DkimKey]) -> None:
    store = FileKeyStore(tmp_path)
    await save_keys(store, keys, NOW)
    directory = tmp_path / "dkim" / "example.com"
    assert store.dkim_location("EXAMPLE.com") == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["s20261126e.pem", "s20261126r.pem"]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes() in (keys[0].private_pem, keys[1].private_pem)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    assert await load_keys(store, "EXAMPLE.com") == keys
    assert await load_keys(store, "other.example") == ()


async def test_save_never_overwrites(tmp_path: Path, keys: tuple[DkimKey, DkimKey]) -> None:
    store = FileKeyStore(tmp_path)
    await save_keys(store, keys[:1], NOW)
    path = tmp_path / "dkim" / "example.com" / "s20261126r.pem"
    before = path.read_bytes()
    with pytest.raises(DkimError, match="already exists"):
        await save_keys(store, [generate_key("example.com", DkimAlgorithm.ED25519, NOW, "s20261126r")], NOW)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["s20261126r.pem"]  # no temporary left either


async def test_load_picks_the_newest_key_per_algorithm(tmp_path: Path, keys: tuple[DkimKey, DkimKey]) -> None:
    store = FileKeyStore(tmp_path)
    newer_ed = generate_key("example.com", DkimAlgorithm.ED25519, datetime(2027, 3, 1, tzinfo=UTC))
    same_day_ed = generate_key("example.com", DkimAlgorithm.ED25519, NOW, "s20261126e2")
    await save_keys(store, [*keys, same_day_ed], NOW)
    assert await load_keys(store, "example.com") == (keys[0], same_day_ed)
    await save_keys(store, [newer_ed], NOW)
    (tmp_path / "dkim" / "example.com" / "notes.pem").write_text("not a key")  # not a selector: ignored
    assert await load_keys(store, "example.com") == (keys[0], newer_ed)


async def test_ensure_keys_creates_what_is_missing_once(
    tmp_path: Path, keys: tuple[DkimKey, DkimKey]
) -> None:
    store = FileKeyStore(tmp_path)
    await save_keys(store, keys[:1], NOW)  # RSA only: Ed25519 is missing
    ensured = await ensure_keys(store, "example.com", NOW)
    assert ensured[0] == keys[0]
    # Same day, but the Ed25519 selector is free: it gets the plain dated name.
    assert ensured[1].algorithm is DkimAlgorithm.ED25519
    assert ensured[1].selector == "s20261126e"
    assert await ensure_keys(store, "example.com", NOW) == ensured
    # A selector that is taken (here by an RSA key under an Ed25519-looking name) is never reused:
    # a suffix is added.
    other = FileKeyStore(tmp_path / "other")
    odd = generate_key("example.com", DkimAlgorithm.RSA, NOW, "s20261126e")
    await save_keys(other, [odd], NOW)
    fresh = await ensure_keys(other, "example.com", NOW)
    assert [key.selector for key in fresh] == ["s20261126e", "s20261126e2"]
    assert [key.algorithm for key in fresh] == [DkimAlgorithm.RSA, DkimAlgorithm.ED25519]


# ----------------------------------------------------------------------------------------- signing


def test_headers_to_sign_counts_occurrences_and_oversigns() -> None:
    # RFC 6376 §8.15: one more From, To, Subject, Date and Message-ID than the message has
    oversigned = [b"from", b"to", b"subject", b"date", b"message-id"]
    assert headers_to_sign(parse_message(MESSAGE)) == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        *oversigned,
    ]
    two_to = (
        b"To: a@x\r\nFrom: b@y\r\nTo: c@z\r\n\tcontinued: not a field\r\nReceived: x\r\n\r\nFrom: body\r\n"
    )
    assert headers_to_sign(parse_message(two_to)) == [b"to", b"from", b"to", *oversigned]


def test_sign_produces_two_verifiable_signatures(keys: tuple[DkimKey, DkimKey]) -> None:
    signature = sign(MESSAGE, "example.com", keys)
    assert signature.endswith(b"\r\n")
    assert re.search(rb"[^\r]\n", signature) is None  # CRLF only
    fields = _fields(signature)
    assert len(fields) == 2
    tags = [_tags(field) for field in fields]
    assert [t["a"] for t in tags] == ["rsa-sha256", "ed25519-sha256"]
    assert [t["s"] for t in tags] == ["s20261126r", "s20261126e"]
    for t in tags:
        assert t["d"] == "example.com"
        assert t["c"] == "relaxed/relaxed"
        assert t["h"].lower().encode().split(b":") == headers_to_sign(parse_message(MESSAGE))
    signed = signature + MESSAGE
    assert _verify_all(signed, txt_lookup(keys)) == [True, True]


def test_verification_uses_the_published_records(keys: tuple[DkimKey, DkimKey]) -> None:
    signed = sign(MESSAGE, "example.com", keys) + MESSAGE
    other = generate_key("example.com", DkimAlgorithm.ED25519, NOW)  # same selector, other key
    assert _verify_all(signed, txt_lookup([keys[0], other])) == [True, False]
    assert _verify_all(signed, txt_lookup([])) == [False, False]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"the numbers are fine.", b"the numbers are FINE."),  # body
        (b"Subject: Quarterly numbers", b"Subject: Quarterly numberz"),  # signed header
        (b"From: Alice", b"From: Mallory <m@evil.example>\r\nFrom: Alice"),  # a second From on top
        # oversigned (RFC 6376 §8.15): no second To, Subject, Date or Message-ID either
        (b"To: Bob", b"To: everyone@example.org\r\nTo: Bob"),
        (b"Subject: Q", b"Subject: Urgent: pay now\r\nSubject: Q"),
        (b"Date: Thu", b"Date: Fri, 1 Jan 2027 00:00:00 +0000\r\nDate: Thu"),
        (b"Message-ID: <1", b"Message-ID: <2@example.com>\r\nMessage-ID: <1"),
        (b"Content-Type: text/plain", b"Content-Type: text/html"),
    ],
)
def test_tampering_breaks_both_signatures(keys: tuple[DkimKey, DkimKey], old: bytes, new: bytes) -> None:
    signed = sign(MESSAGE, "example.com", keys) + MESSAGE
    assert old in signed
    assert _verify_all(signed.replace(old, new, 1), txt_lookup(keys)) == [False, False]


def test_relaxed_canonicalization_survives_whitespace_changes(keys: tuple[DkimKey, DkimKey]) -> None:
    signed = sign(MESSAGE, "example.com", keys) + MESSAGE
    changed = (
        signed.replace(b"Subject: Quarterly numbers", b"Subject:  Quarterly\r\n  numbers")
        .replace(b"the numbers are fine.", b"the  numbers are fine.   ")
        .replace(b"X-Mailer: test", b"X-Mailer: changed by a relay")  # not signed
    )
    assert _verify_all(changed, txt_lookup(keys)) == [True, True]


def test_message_without_from_is_not_signed(keys: tuple[DkimKey, DkimKey]) -> None:
    assert sign(b"To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n", "example.com", keys) == b""


def test_key_for_another_domain_is_refused(keys: tuple[DkimKey, DkimKey]) -> None:
    with pytest.raises(DkimError, match=r"belongs to example\.com"):
        sign(MESSAGE, "example.net", keys)


def test_single_key_signs_once(keys: tuple[DkimKey, DkimKey]) -> None:
    signature = sign(MESSAGE, "example.com", keys[1:])
    assert len(_fields(signature)) == 1
    assert _verify_all(signature + MESSAGE, txt_lookup(keys)) == [True]


# ------------------------------------------------------------------- the oracles: dkimpy and our verifier


def _ours(message: bytes, keys: Sequence[DkimKey]) -> list[DKIMStatus]:
    resolver = FakeResolver()
    for key in keys:
        resolver.set(key.record_name, "TXT", ["".join(key.txt_strings)])
    return [result.status for result in asyncio.run(verify_dkim(resolver, message))]


LONG_SUBJECT = b"Subject: " + b" ".join(b"word%d" % i for i in range(60))
# Messages whose header fields and body exercise every canonicalisation rule (RFC 6376 §3.4)
ORACLE_MESSAGES = {
    "plain": MESSAGE,
    "folded": MESSAGE.replace(
        b"To: Bob <bob@example.org>",
        b"To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>,\r\n  Dave <d@x>",
    ),
    "long": MESSAGE.replace(b"Subject: Quarterly numbers", LONG_SUBJECT)
    + b"x" * 990
    + b"\r\n"
    + b"line\r\n" * 2000,
    "whitespace": MESSAGE.replace(b"Subject: Quarterly numbers", b"Subject:\t Quarterly  \t numbers  ")
    + b"trailing \t \r\n\r\n  two  spaces\r\n\r\n\r\n",
    "8-bit": MESSAGE.replace(b"utf-8", b"iso-8859-1") + b"Gr\xfc\xdfe, caf\xe9\r\n",
    "smtputf8": MESSAGE.replace(
        b"From: Alice <alice@example.com>", "From: Ålice <ålice@example.com>".encode()
    ).replace(b"Subject: Quarterly numbers", "Subject: Квартальные цифры 数字".encode())
    + "Привет, 世界\r\n".encode(),
    "empty body": MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    "no final CRLF": MESSAGE + b"no newline at the end",
    "two From": b"From: list@example.com\r\n" + MESSAGE,
}
CANONICALIZATIONS: list[tuple[Canonicalization, Canonicalization]] = [
    ("relaxed", "relaxed"),
    ("relaxed", "simple"),
    ("simple", "relaxed"),
    ("simple", "simple"),
]


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS, ids="/".join)
@pytest.mark.parametrize("name", ORACLE_MESSAGES)
def test_every_signature_verifies_with_dkimpy_and_ours(
    keys: tuple[DkimKey, DkimKey], name: str, canonicalization: tuple[Canonicalization, Canonicalization]
) -> None:
    message = ORACLE_MESSAGES[name]
    signature = sign(message, "example.com", keys, canonicalization=canonicalization, timestamp=1_796_000_000)
    fields = _fields(signature)
    assert [_tags(field)["a"] for field in fields] == ["rsa-sha256", "ed25519-sha256"]
    assert all(_tags(field)["c"] == "/".join(canonicalization) for field in fields)
    # RFC 5322 §2.1.1: lines of at most 78 characters
    assert max(len(line) for line in signature.split(b"\r\n")) <= 78
    signed = signature + message
    assert _verify_all(signed, txt_lookup(keys)) == [True, True]
    assert _ours(signed, keys) == [DKIMStatus.PASS, DKIMStatus.PASS]


def test_timestamp_is_the_one_given(keys: tuple[DkimKey, DkimKey]) -> None:
    signature = sign(MESSAGE, "example.com", keys, timestamp=1_796_000_000)
    assert [_tags(field)["t"] for field in _fields(signature)] == ["1796000000", "1796000000"]


def test_parsed_keys_sign_like_pem_keys(keys: tuple[DkimKey, DkimKey]) -> None:
    parsed = [SigningKey.from_key(key) for key in keys]
    signature = sign(MESSAGE, "example.com", parsed, timestamp=1)
    assert "PRIVATE" not in repr(parsed[0])
    # Ed25519 (RFC 8032 §5.1.6) and RSASSA-PKCS1-v1_5 are deterministic: same input, same fields
    assert signature == sign(MESSAGE, "example.com", keys, timestamp=1)


def test_unsplittable_header_is_a_dkim_error(keys: tuple[DkimKey, DkimKey]) -> None:
    with pytest.raises(DkimError, match="cannot sign"):
        sign(b"From: a@example.com\r\nno colon here\r\n\r\nbody\r\n", "example.com", keys)


def test_signing_keys_load_once_and_sign_in_a_thread_or_inline(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)

    async def run(in_thread: bool) -> bytes:
        signing_keys = SigningKeys(store, in_thread=in_thread)
        first = await signing_keys.get("example.com", NOW)
        assert await signing_keys.get("example.com", NOW) is first  # kept, not read again
        return await signing_keys.sign(MESSAGE, "example.com", NOW)

    for in_thread in (True, False):
        signature = asyncio.run(run(in_thread))
        assert [_tags(field)["t"] for field in _fields(signature)] == [str(int(NOW.timestamp()))] * 2
        published = asyncio.run(load_keys(store, "example.com"))
        assert _verify_all(signature + MESSAGE, txt_lookup(published)) == [
            True,
            True,
        ]


_FIELD_NAMES = st.sampled_from(
    ["From", "To", "Subject", "Date", "Cc", "Message-ID", "X-Other", "content-type"]
)
_FIELD_VALUES = st.binary(max_size=120).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"\r\n\t"))


@pytest.mark.fuzz
@fuzz_settings()
@given(
    fields=st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=8),
    body=st.binary(max_size=600),
    canonicalization=st.sampled_from(CANONICALIZATIONS),
)
def test_fuzz_signatures_verify_or_are_refused(
    keys: tuple[DkimKey, DkimKey],
    fields: list[tuple[str, bytes]],
    body: bytes,
    canonicalization: tuple[Canonicalization, Canonicalization],
) -> None:
    """Any header fields and body: two signatures our verifier accepts, b"" without From, or DkimError."""
    message = b"".join(name.encode() + b":" + value + b"\r\n" for name, value in fields) + b"\r\n" + body
    try:
        signature = sign(message, "example.com", keys, canonicalization=canonicalization)
    except DkimError:
        with pytest.raises(MessageFormatError):
            parse_message(message)
        return
    if not any(name == "From" for name, _ in fields):
        assert signature == b""
        return
    assert _ours(signature + message, keys) == [DKIMStatus.PASS, DKIMStatus.PASS]


def test_concurrent_first_uses_of_a_domain_create_its_keys_once(tmp_path: Path) -> None:
    async def run() -> list[tuple[SigningKey, ...]]:
        signing_keys = SigningKeys(FileKeyStore(tmp_path))
        return await asyncio.gather(*(signing_keys.get("example.com", NOW) for _ in range(4)))

    first, *others = asyncio.run(run())
    assert all(keys is first for keys in others)
    assert sorted(p.name for p in (tmp_path / "dkim" / "example.com").iterdir()) == [
        "s20261126e.pem",
        "s20261126r.pem",
    ]
