"""DKIM (RFC 6376) and ARC (RFC 8617) verification, fed from our async `Resolver`.

DKIM is verified here: header parsing, tag lists, the RFC 6376 §3.4 canonicalizations and the hashes in
Python, the RSA and Ed25519 (RFC 8463) signature checks with `cryptography` (OpenSSL). dkimpy's pure-Python
RSA and its repeated parsing of the message cost most of the MX checks' CPU time; dkimpy is kept for ARC
chains (RFC 8617), run only for a message that carries ARC header fields. The header section is split once
(`parse_message`) and shared with ARC and DMARC.

We read every signature's d= and s= first, fetch all key records concurrently through the Resolver (which
caches per TTL), and keep what a bare "does not verify" would lose: a missing key is permerror and a DNS
failure temperror (RFC 6376 §6.1.2), not a failed signature. Parsed public keys are cached by record text,
so a key that changes in DNS is parsed afresh and an unchanged one costs nothing.

Results per RFC 8601 §2.7.1: a signature with syntax errors (or one that does not sign From, RFC 6376 §5.4) is
"neutral"; a key that is missing, revoked, malformed or unsuitable is "permerror"; a hash or signature mismatch
is "fail".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import functools
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import dkim
import dkim.util
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from surat.dns.base import DNSError, DNSErrorKind, Resolver
from surat.log import fields
from surat.mailauth.dkim_canon import (
    MessageFormatError,
    ParsedMessage,
    canonical_body,
    parse_message,
    sha256_digest,
    signed_header_data,
)

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT consider signatures with shorter keys valid
MAX_SIGNATURES = 10  # signatures verified per message, from the top (RFC 6376 §6.1 allows a limit)
MAX_ARC_SETS = 50  # RFC 8617 §4.2.1: the highest instance number

log = logging.getLogger(__name__)

# dkimpy logs every failed signature at ERROR; those are facts about the sender, not faults here
_DKIMPY_LOGGER = logging.getLogger("surat.mailauth.dkimpy")
_DKIMPY_LOGGER.addHandler(logging.NullHandler())
_DKIMPY_LOGGER.propagate = False


class DKIMStatus(enum.Enum):
    """RFC 8601 §2.7.1 result keywords for dkim=."""

    PASS = "pass"  # noqa: S105 - a result keyword, not a password
    FAIL = "fail"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DKIMResult:
    status: DKIMStatus
    domain: str  # d=, lower case ("" when the signature has none)
    selector: str  # s=
    reason: str  # "" on pass
    algorithm: str = ""  # a=, e.g. "rsa-sha256", "ed25519-sha256"
    identity: str = ""  # i=
    b_prefix: str = ""  # the first 8 characters of b= for header.b (RFC 6008)


class ARCStatus(enum.Enum):
    """RFC 8617 §4.4 chain validation status (cv)."""

    PASS = "pass"  # noqa: S105 - a result keyword, not a password
    FAIL = "fail"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ARCResult:
    status: ARCStatus
    reason: str
    instances: int = 0  # the highest i= (the chain's length)
    sealers: tuple[str, ...] = ()  # ARC-Seal d= of instances 1..n, so policy can trust a known sealer
    dns_temporary: bool = False  # a key lookup failed temporarily: a "fail" may turn into "pass" later


@dataclass(frozen=True, slots=True)
class _Key:
    """The outcome of fetching one key record: its text, or the status that fetching decided."""

    txt: bytes | None
    status: DKIMStatus | None = None
    reason: str = ""


_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")  # RFC 6376 §3.2 tag-name
# the names signatures and key records use (RFC 6376 §3.5, §3.6.1), valid without asking the regex
_COMMON_TAG_NAMES = frozenset(b"v a b bh c d h i l q s t x z k n p".split())


def _tags(value: bytes) -> dict[bytes, bytes]:
    """RFC 6376 §3.2 tag=value list; raises dkim.util.InvalidTagValueList like dkimpy's parser."""
    tags: dict[bytes, bytes] = {}
    specs = value.strip().split(b";")
    if not specs[-1]:
        specs.pop()  # a trailing semicolon is allowed
    for spec in specs:
        name, equals, tag_value = spec.partition(b"=")
        name = name.strip()
        if not equals or (name not in _COMMON_TAG_NAMES and _TAG_NAME.fullmatch(name) is None):
            raise dkim.util.InvalidTagSpec(spec)
        if name in tags:
            raise dkim.util.DuplicateTag(name)  # §3.2: a tag MUST NOT appear twice
        tags[name] = tag_value.strip()
    return tags


def _key_name(sig: dict[bytes, bytes]) -> str:
    return (sig[b"s"] + b"._domainkey." + sig[b"d"]).decode("ascii", "replace").lower()


async def _fetch_key(resolver: Resolver, name: str) -> _Key:
    try:
        records = await resolver.txt(name)
    except DNSError as exc:
        if exc.kind is DNSErrorKind.TEMPORARY:
            return _Key(None, DKIMStatus.TEMPERROR, f"DNS failure fetching key {name}")
        return _Key(None, DKIMStatus.PERMERROR, f"no key for signature ({name} does not exist)")
    if not records:
        return _Key(None, DKIMStatus.PERMERROR, f"no key for signature (no TXT record at {name})")
    # RFC 6376 §3.6.2.2: with several TXT records the result is undefined; use the first, as dkimpy does
    return _Key(records[0].encode("utf-8", "replace"))


async def _fetch_keys(resolver: Resolver, names: Iterable[str]) -> dict[str, _Key]:
    unique = sorted(set(names))
    if len(unique) == 1:
        return {unique[0]: await _fetch_key(resolver, unique[0])}  # the usual case, without a task
    fetched = await asyncio.gather(*(_fetch_key(resolver, name) for name in unique))
    return dict(zip(unique, fetched, strict=True))


def _dnsfunc(keys: dict[str, _Key]) -> Callable[..., bytes | None]:
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        key = keys.get(text.lower().removesuffix("."))
        return key.txt if key is not None else None

    return lookup


@dataclass(frozen=True, slots=True)
class _PublicKey:
    """A parsed key record (RFC 6376 §3.6.1): its tags and the key, or why it is unusable."""

    tags: dict[bytes, bytes]
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey | None
    error: str = ""
    rsa_bits: int = 0  # the RSA key's size; 0 for other keys (no isinstance on an ABC per message)
    # What the record's tags allow (RFC 6376 §3.6.1), worked out once per record, not per message:
    key_type: bytes = field(init=False)  # k=
    hash_algorithms: frozenset[bytes] | None = field(init=False)  # h=; None: any
    for_email: bool = field(init=False)  # s= is * or email
    same_domain_only: bool = field(init=False)  # t=s

    def __post_init__(self) -> None:
        tags = self.tags
        hashes = {h.strip().lower() for h in tags[b"h"].split(b":")} if b"h" in tags else None
        services = {s.strip() for s in tags.get(b"s", b"*").split(b":")}
        flags = {f.strip() for f in tags.get(b"t", b"").split(b":")}
        # frozen: the derived fields are set the way dataclasses' own __init__ sets fields
        object.__setattr__(self, "key_type", tags.get(b"k", b"rsa").lower())
        object.__setattr__(self, "hash_algorithms", frozenset(hashes) if hashes is not None else None)
        object.__setattr__(self, "for_email", bool(services & {b"*", b"email"}))
        object.__setattr__(self, "same_domain_only", b"s" in flags)


@functools.lru_cache(maxsize=1024)
def _load_key(txt: bytes) -> _PublicKey:
    """Parse a key record; cached by its text, so a record that changes in DNS is parsed again."""
    try:
        tags = _tags(txt)
    except dkim.util.InvalidTagValueList:
        return _PublicKey({}, None, "key record syntax error")
    if b"v" in tags and tags[b"v"] != b"DKIM1":
        return _PublicKey(tags, None, "key record has an unknown version")
    if b"p" not in tags:
        return _PublicKey(tags, None, "key record has no p=")
    data = _unspace(tags[b"p"])
    if not data:
        return _PublicKey(tags, None, "key revoked")
    try:
        der = base64.b64decode(data, validate=True)
    except binascii.Error:
        return _PublicKey(tags, None, "key record unusable: p= is not base64")
    key_type = tags.get(b"k", b"rsa").lower()
    try:
        if key_type == b"ed25519":
            # RFC 8463 §4.2: p= is the bare 32-byte public key
            return _PublicKey(tags, ed25519.Ed25519PublicKey.from_public_bytes(der))
        if key_type == b"rsa":
            # RFC 6376 §3.6.1: SubjectPublicKeyInfo; a bare RSAPublicKey is accepted as well
            key = serialization.load_der_public_key(der)
            if not isinstance(key, rsa.RSAPublicKey):
                return _PublicKey(tags, None, "key record unusable: p= is not an RSA key")
            return _PublicKey(tags, key, rsa_bits=key.key_size)
    except (ValueError, UnsupportedAlgorithm) as exc:
        return _PublicKey(tags, None, f"key record unusable: {exc}")
    return _PublicKey(tags, None, f"key record unusable: unknown key type {_text(key_type)}")


def _check_key(
    loaded: _PublicKey, sig: dict[bytes, bytes], min_rsa_bits: int
) -> tuple[DKIMStatus, str] | None:
    """RFC 6376 §3.6.1, §6.1.2: reasons to refuse the key before any cryptography; None when acceptable."""
    if loaded.key is None:
        return DKIMStatus.PERMERROR, loaded.error
    key_type = loaded.key_type
    algorithm = sig.get(b"a", b"").lower()
    if not algorithm.startswith(key_type + b"-"):
        return DKIMStatus.PERMERROR, f"key type {_text(key_type)} does not match a="
    if loaded.hash_algorithms is not None and algorithm.split(b"-", 1)[1] not in loaded.hash_algorithms:
        return DKIMStatus.PERMERROR, "key does not allow the signature's hash algorithm"
    if not loaded.for_email:
        return DKIMStatus.PERMERROR, "key is not for email"
    # RFC 6376 §3.6.1 t=s: the i= domain must be d= itself, not a subdomain
    if loaded.same_domain_only and b"i" in sig and sig[b"i"].rpartition(b"@")[2].lower() != sig[b"d"].lower():
        return DKIMStatus.PERMERROR, "key forbids subdomains in i= (t=s)"
    if loaded.rsa_bits and loaded.rsa_bits < min_rsa_bits:
        # RFC 8301 §3.2
        return DKIMStatus.PERMERROR, f"key unusable: public key too small: {loaded.rsa_bits} bits"
    return None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _result(status: DKIMStatus, sig: dict[bytes, bytes] | None, reason: str) -> DKIMResult:
    if sig is None:
        return DKIMResult(status, "", "", reason)
    raw_b = sig.get(b"b", b"")
    b_value = _unspace(raw_b[:64])  # the first 8 characters, without copying all of b=
    if len(b_value) < 8:
        b_value = _unspace(raw_b)
    return DKIMResult(
        status,
        _text(sig.get(b"d", b"")).lower(),
        _text(sig.get(b"s", b"")),
        reason,
        _text(sig.get(b"a", b"")).lower(),
        _text(sig.get(b"i", b"")),
        _text(b_value[:8]),
    )


_REQUIRED_TAGS = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")  # RFC 6376 §3.5
_REQUIRED_TAG_SET = frozenset(_REQUIRED_TAGS)
_ALGORITHMS = (b"rsa-sha256", b"ed25519-sha256", b"rsa-sha1")  # rsa-sha1 is refused later, by name
# RFC 6376 §2.4 base64string: base64 characters and up to two "=", with FWS anywhere. Matched against the
# value with its whitespace removed, so there is one way to match and the check is linear in the length
# (whitespace classes on both sides of "=?" used to backtrack cubically over a long run of spaces).
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_DIGITS = re.compile(rb"[0-9]{1,12}")
_LENGTH = re.compile(rb"[0-9]{1,76}")
# compiled here, not looked up in re's cache per message
_NOT_IN_DOMAIN = re.compile(rb"[\s()<>\[\]:;@\\,\"]")
_CLOCK_SLACK = 36000  # seconds of clock difference forgiven in t= and x= (dkimpy uses the same)


def signature_problem(sig: dict[bytes, bytes], now: float) -> str:
    """Why a DKIM-Signature's tags are unacceptable (RFC 6376 §3.5, §6.1.1), or "" when they are fine."""
    if not _REQUIRED_TAG_SET.issubset(sig):
        missing = next(tag for tag in _REQUIRED_TAGS if tag not in sig)
        return f"missing {_text(missing)}="
    if sig[b"v"] != b"1":
        return f"v= is {_text(sig[b'v'])!r}, not 1"
    if sig[b"a"].lower() not in _ALGORITHMS:
        return f"unknown signature algorithm {_text(sig[b'a'])}"
    for tag in (b"b", b"bh"):
        value = _unspace(sig[tag])
        if not value or len(value) % 4 or _BASE64.fullmatch(value) is None:
            return f"{_text(tag)}= is not base64"
    domain = sig[b"d"].lower()
    if not domain or _NOT_IN_DOMAIN.search(domain):
        return "d= is not a domain name"
    if b"i" in sig:
        # §3.5 i=: its domain is d= or a subdomain of it
        identity_domain = sig[b"i"].rpartition(b"@")[2].lower()
        if identity_domain != domain and not identity_domain.endswith(b"." + domain):
            return "i= is not in d= or a subdomain of it"
    if b"l" in sig and _LENGTH.fullmatch(sig[b"l"]) is None:
        return "l= is not a decimal number"
    if b"q" in sig and b"dns/txt" not in [q.strip().lower() for q in sig[b"q"].split(b":")]:
        return "q= does not offer dns/txt"
    signed_at = expires = None
    if b"t" in sig:
        if _DIGITS.fullmatch(sig[b"t"]) is None:
            return "t= is not a timestamp"
        signed_at = int(sig[b"t"])
        if signed_at > now + _CLOCK_SLACK:
            return "t= is in the future"
    if b"x" in sig:
        if _DIGITS.fullmatch(sig[b"x"]) is None:
            return "x= is not a timestamp"
        expires = int(sig[b"x"])
        if expires < now - _CLOCK_SLACK:
            return (
                "signature expired (x=)"  # §3.5 x=: verifiers MAY ignore the slack; we allow clocks to differ
            )
    if signed_at is not None and expires is not None and expires < signed_at:
        return "x= is before t="
    return ""


def _unspace(value: bytes) -> bytes:
    return b"".join(value.split())  # drops folding whitespace, faster than a regex


# Built once: constructing them (an ABC isinstance check each) costs about as much as the hashing.
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def _rsa_sha256_verifies(key: rsa.RSAPublicKey, signature: bytes, digest: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017 §8.2.2), holding the GIL.

    `key.verify` lets go of the GIL around OpenSSL's work, and then the event loop waits for the store's
    writer thread to hand it back: measured under load, 110 µs of wall time per call for 25 µs of work.
    `recover_data_from_signature` keeps the GIL and is the same check: OpenSSL undoes the RSA step, checks
    the 00 01 FF..FF 00 padding and the SHA-256 DigestInfo, and returns the digest the signer hashed,
    which must then equal ours. Any malformed encoding is InvalidSignature.
    """
    try:
        recovered = key.recover_data_from_signature(signature, _PKCS1, _SHA256)
    except InvalidSignature:
        return False
    return hmac.compare_digest(recovered, digest)


def _verify_one(
    parsed: ParsedMessage,
    signature: tuple[bytes, bytes],
    sig: dict[bytes, bytes],
    signed: list[bytes],
    loaded: _PublicKey,
    bodies: dict[bool, bytes],
) -> DKIMResult:
    algorithm = sig[b"a"].lower()
    if algorithm == b"rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid
        return _result(DKIMStatus.PERMERROR, sig, "rsa-sha1 is not accepted (RFC 8301)")
    header_c, _, body_c = sig.get(b"c", b"simple/simple").lower().partition(b"/")
    if header_c not in (b"simple", b"relaxed") or body_c not in (b"", b"simple", b"relaxed"):
        return _result(DKIMStatus.NEUTRAL, sig, f"signature unacceptable: unknown c= {_text(sig[b'c'])}")
    relaxed_body = body_c == b"relaxed"
    # RFC 6376 §3.7 step 1: several signatures over the same body share its canonical form and hash
    body_hash = bodies.get(relaxed_body)
    if body_hash is None or b"l" in sig:
        body = canonical_body(parsed.body, relaxed_body)
        if b"l" in sig:
            body = body[: int(sig[b"l"])]  # §3.5 l=: only this much of the canonical body is signed
            body_hash = sha256_digest(body)
        else:
            body_hash = bodies[relaxed_body] = sha256_digest(body)
    if body_hash != base64.b64decode(_unspace(sig[b"bh"])):
        return _result(DKIMStatus.FAIL, sig, "body hash did not verify")
    # Hashing a second From as well makes a From added above the signed one break the signature,
    # so a message cannot show one sender and be verified for another (dkimpy does the same).
    wanted = [*signed, b"from"] if b"from" in signed else signed
    data = signed_header_data(parsed, signature, wanted, header_c == b"relaxed")
    value = base64.b64decode(_unspace(sig[b"b"]))
    try:
        if loaded.rsa_bits:
            if not _rsa_sha256_verifies(cast(rsa.RSAPublicKey, loaded.key), value, sha256_digest(data)):
                return _result(DKIMStatus.FAIL, sig, "signature did not verify")
        elif isinstance(loaded.key, ed25519.Ed25519PublicKey):
            loaded.key.verify(value, sha256_digest(data))  # RFC 8463 §3: signs the SHA-256 hash
        else:
            return _result(DKIMStatus.PERMERROR, sig, "key unusable")
    except InvalidSignature:
        return _result(DKIMStatus.FAIL, sig, "signature did not verify")
    return _result(DKIMStatus.PASS, sig, "")


async def verify_dkim(
    resolver: Resolver,
    message: bytes,
    *,
    min_rsa_bits: int = MIN_RSA_BITS,
    parsed: ParsedMessage | None = None,
) -> list[DKIMResult]:
    """Verify every DKIM-Signature in `message` (top first); [] when the message is not signed.

    `parsed` is `parse_message(message)` when the caller has it already. Key records are fetched
    concurrently; hashing and the signature checks then run synchronously on the calling thread (cheap:
    one body hash and one OpenSSL RSA/Ed25519 verify per signature).
    """
    if parsed is None:
        try:
            parsed = parse_message(message)
        except MessageFormatError as exc:
            signatures = message.lower().count(b"dkim-signature:")
            return (
                [_result(DKIMStatus.NEUTRAL, None, f"message header unparsable: {exc}")] if signatures else []
            )
    raw_signatures = [
        item for item, name in zip(parsed.fields, parsed.names, strict=True) if name == b"dkim-signature"
    ]
    if not raw_signatures:
        return []
    if len(raw_signatures) > MAX_SIGNATURES:
        # RFC 6376 §6.1: "Verifiers MAY limit the number of signatures they attempt to validate";
        # each costs a key lookup and a signature check. The topmost are the most recently added.
        log.info(
            "dkim.signatures_ignored", extra=fields(signatures=len(raw_signatures), verified=MAX_SIGNATURES)
        )
        raw_signatures = raw_signatures[:MAX_SIGNATURES]

    # per signature: its tags, the header fields it signs (h=) and its key's name, or an early result
    checked: list[tuple[dict[bytes, bytes], list[bytes], str] | None] = []
    early: dict[int, DKIMResult] = {}
    now = time.time()
    for index, (_name, value) in enumerate(raw_signatures):
        try:
            sig = _tags(value)
        except dkim.util.InvalidTagValueList as exc:
            checked.append(None)
            early[index] = _result(DKIMStatus.NEUTRAL, None, f"signature syntax error: {exc}")
            continue
        problem = signature_problem(sig, now)
        if problem:
            checked.append(None)
            early[index] = _result(DKIMStatus.NEUTRAL, sig, f"signature unacceptable: {problem}")
            continue
        signed = [h.strip().lower() for h in sig[b"h"].split(b":")]
        if b"from" not in signed:
            checked.append(None)
            early[index] = _result(DKIMStatus.NEUTRAL, sig, "From is not signed")  # RFC 6376 §5.4
            continue
        checked.append((sig, signed, _key_name(sig)))

    keys = await _fetch_keys(resolver, [entry[2] for entry in checked if entry is not None])

    results: list[DKIMResult] = []
    bodies: dict[bool, bytes] = {}
    for index, entry in enumerate(checked):
        if entry is None:
            results.append(early[index])
            continue
        sig, signed, key_name = entry
        key = keys[key_name]
        if key.status is not None:
            results.append(_result(key.status, sig, key.reason))
            continue
        assert key.txt is not None
        loaded = _load_key(key.txt)
        refused = _check_key(loaded, sig, min_rsa_bits)
        if refused is not None:
            results.append(_result(refused[0], sig, refused[1]))
            continue
        try:
            results.append(_verify_one(parsed, raw_signatures[index], sig, signed, loaded, bodies))
        except Exception as exc:
            # hostile input must not crash the session
            results.append(_result(DKIMStatus.NEUTRAL, sig, f"signature could not be processed: {exc}"))
    return results


async def verify_arc(
    resolver: Resolver,
    message: bytes,
    *,
    min_rsa_bits: int = MIN_RSA_BITS,
    parsed: ParsedMessage | None = None,
) -> ARCResult:
    """Validate the ARC chain of `message` (RFC 8617 §5.2): cv=pass, fail, or none (no ARC sets).

    `parsed` is `parse_message(message)` when the caller has it already; a message without ARC header
    fields (nearly all) costs no more than that.
    """
    if parsed is None:
        try:
            parsed = parse_message(message)
        except MessageFormatError as exc:
            if b"arc-seal:" not in message.lower():
                return ARCResult(ARCStatus.NONE, "message is not ARC signed")
            return ARCResult(ARCStatus.FAIL, f"message header unparsable: {exc}")
    fields = [
        (name, value)
        for (_, value), name in zip(parsed.fields, parsed.names, strict=True)
        if name in (b"arc-seal", b"arc-message-signature")
    ]
    if not fields:
        return ARCResult(ARCStatus.NONE, "message is not ARC signed")
    if len(fields) > 2 * MAX_ARC_SETS:
        # RFC 8617 §4.2.1: i= ends at 50, so more sets than that is a broken chain; deciding so before
        # any key lookup keeps a message with thousands of ARC fields from costing as many queries
        return ARCResult(ARCStatus.FAIL, f"more than {MAX_ARC_SETS} ARC sets")
    names: list[str] = []
    for _name, value in fields:
        try:
            sig = _tags(value)
        except dkim.util.InvalidTagValueList:
            continue  # dkimpy reports the malformed set itself
        if b"s" in sig and b"d" in sig:
            names.append(_key_name(sig))
    if not names and not any(name == b"arc-seal" for name, _ in fields):
        return ARCResult(ARCStatus.NONE, "message is not ARC signed")
    keys = await _fetch_keys(resolver, names)
    temporary = any(key.status is DKIMStatus.TEMPERROR for key in keys.values())
    try:
        cv, details, reason = dkim.arc_verify(
            message, logger=_DKIMPY_LOGGER, dnsfunc=_dnsfunc(keys), minkey=min_rsa_bits
        )
    except Exception as exc:
        # dkimpy raises IndexError and the like on malformed sets; that is a broken chain, not our fault
        return ARCResult(ARCStatus.FAIL, f"ARC set unprocessable: {exc}", dns_temporary=temporary)
    instances = max((int(d["instance"]) for d in details), default=0)
    sealers = tuple(
        _text(d.get("as-domain", b"")).lower() for d in sorted(details, key=lambda d: int(d["instance"]))
    )
    if cv == dkim.CV_Pass:
        return ARCResult(ARCStatus.PASS, str(reason), instances, sealers)
    if cv == dkim.CV_None:
        return ARCResult(ARCStatus.NONE, str(reason), instances, sealers)
    # dkimpy returns None for a chain an earlier sealer already declared failed (RFC 8617 §5.2 step 2)
    return ARCResult(ARCStatus.FAIL, str(reason), instances, sealers, dns_temporary=temporary)
