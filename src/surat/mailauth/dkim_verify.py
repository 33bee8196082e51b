"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, fed from our async `Resolver`.

dkimpy does the cryptography and canonicalization (RSA and Ed25519, RFC 8463) but asks DNS synchronously
through a `dnsfunc`. We read every signature's d= and s= first, fetch all the key records concurrently through
the Resolver, and hand dkimpy a dict lookup. Fetching ourselves also keeps what dkimpy folds into a bare False:
a missing key is permerror and a DNS failure temperror (RFC 6376 §6.1.2), not a failed signature.

Results per RFC 8601 §2.7.1: a signature with syntax errors (or one that does not sign From, RFC 6376 §5.4) is
"neutral"; a key that is missing, revoked, malformed or unsuitable is "permerror"; a hash or signature mismatch
is "fail".
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dkim
import dkim.util

from surat.dns.base import DNSError, DNSErrorKind, Resolver

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT consider signatures with shorter keys valid

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


def _tags(value: bytes) -> dict[bytes, bytes]:
    parsed: dict[bytes, bytes] = dkim.util.parse_tag_value(value)
    return parsed


def _header_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    headers, _body = dkim.rfc822_parse(message)
    fields: list[tuple[bytes, bytes]] = headers
    return fields


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
    fetched = await asyncio.gather(*(_fetch_key(resolver, name) for name in unique))
    return dict(zip(unique, fetched, strict=True))


def _dnsfunc(keys: dict[str, _Key]) -> Callable[..., bytes | None]:
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        key = keys.get(text.lower().removesuffix("."))
        return key.txt if key is not None else None

    return lookup


def _check_key(txt: bytes, sig: dict[bytes, bytes]) -> tuple[DKIMStatus, str] | None:
    """RFC 6376 §3.6.1, §6.1.2: reasons to refuse the key before any cryptography; None when acceptable."""
    try:
        key = _tags(txt)
    except dkim.util.InvalidTagValueList:
        return DKIMStatus.PERMERROR, "key record syntax error"
    if b"v" in key and key[b"v"] != b"DKIM1":
        return DKIMStatus.PERMERROR, "key record has an unknown version"
    if b"p" not in key:
        return DKIMStatus.PERMERROR, "key record has no p="
    if not key[b"p"].strip():
        return DKIMStatus.PERMERROR, "key revoked"
    key_type = key.get(b"k", b"rsa").lower()
    algorithm = sig.get(b"a", b"")
    if not algorithm.startswith(key_type + b"-"):
        return DKIMStatus.PERMERROR, f"key type {key_type.decode('ascii', 'replace')} does not match a="
    if b"h" in key:
        hashes = {h.strip().lower() for h in key[b"h"].split(b":")}
        if algorithm.split(b"-", 1)[1] not in hashes:
            return DKIMStatus.PERMERROR, "key does not allow the signature's hash algorithm"
    services = {s.strip() for s in key.get(b"s", b"*").split(b":")}
    if not services & {b"*", b"email"}:
        return DKIMStatus.PERMERROR, "key is not for email"
    flags = {f.strip() for f in key.get(b"t", b"").split(b":")}
    # RFC 6376 §3.6.1 t=s: the i= domain must be d= itself, not a subdomain
    if b"s" in flags and b"i" in sig and sig[b"i"].rpartition(b"@")[2].lower() != sig[b"d"].lower():
        return DKIMStatus.PERMERROR, "key forbids subdomains in i= (t=s)"
    try:
        dkim.evaluate_pk(b"", txt)
    except (dkim.DKIMException, ValueError) as exc:  # binascii.Error is a ValueError
        return DKIMStatus.PERMERROR, f"key record unusable: {exc}"
    return None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _result(status: DKIMStatus, sig: dict[bytes, bytes] | None, reason: str) -> DKIMResult:
    if sig is None:
        return DKIMResult(status, "", "", reason)
    b_value = re.sub(rb"\s+", b"", sig.get(b"b", b""))
    return DKIMResult(
        status,
        _text(sig.get(b"d", b"")).lower(),
        _text(sig.get(b"s", b"")),
        reason,
        _text(sig.get(b"a", b"")).lower(),
        _text(sig.get(b"i", b"")),
        _text(b_value[:8]),
    )


async def verify_dkim(
    resolver: Resolver, message: bytes, *, min_rsa_bits: int = MIN_RSA_BITS
) -> list[DKIMResult]:
    """Verify every DKIM-Signature in `message` (top first); [] when the message is not signed.

    Key records are fetched concurrently; hashing and the signature checks then run synchronously on the
    calling thread (cheap for ordinary messages: one body hash and one RSA/Ed25519 verify per signature).
    """
    try:
        fields = _header_fields(message)
    except dkim.DKIMException as exc:
        signatures = message.lower().count(b"dkim-signature:")
        return [_result(DKIMStatus.NEUTRAL, None, f"message header unparsable: {exc}")] if signatures else []
    raw_signatures = [value for name, value in fields if name.lower() == b"dkim-signature"]
    if not raw_signatures:
        return []

    parsed: list[dict[bytes, bytes] | None] = []
    early: dict[int, DKIMResult] = {}
    for index, value in enumerate(raw_signatures):
        try:
            sig = _tags(value)
        except dkim.util.InvalidTagValueList as exc:
            parsed.append(None)
            early[index] = _result(DKIMStatus.NEUTRAL, None, f"signature syntax error: {exc}")
            continue
        parsed.append(sig)
        try:
            dkim.validate_signature_fields(sig)
        except dkim.DKIMException as exc:
            early[index] = _result(DKIMStatus.NEUTRAL, sig, f"signature unacceptable: {exc}")
            continue
        signed = [h.strip().lower() for h in sig[b"h"].split(b":")]
        if b"from" not in signed:
            early[index] = _result(DKIMStatus.NEUTRAL, sig, "From is not signed")  # RFC 6376 §5.4

    wanted = [_key_name(sig) for index, sig in enumerate(parsed) if sig is not None and index not in early]
    keys = await _fetch_keys(resolver, wanted)
    verifier = dkim.DKIM(message, logger=_DKIMPY_LOGGER, minkey=min_rsa_bits)
    dnsfunc = _dnsfunc(keys)

    results: list[DKIMResult] = []
    for index, maybe_sig in enumerate(parsed):
        if index in early:
            results.append(early[index])
            continue
        assert maybe_sig is not None
        sig = maybe_sig
        key = keys[_key_name(sig)]
        if key.status is not None:
            results.append(_result(key.status, sig, key.reason))
            continue
        assert key.txt is not None
        refused = _check_key(key.txt, sig)
        if refused is not None:
            results.append(_result(refused[0], sig, refused[1]))
            continue
        results.append(_verify_one(verifier, index, sig, dnsfunc))
    return results


def _verify_one(
    verifier: dkim.DKIM, index: int, sig: dict[bytes, bytes], dnsfunc: Callable[..., bytes | None]
) -> DKIMResult:
    try:
        ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except dkim.KeyFormatError as exc:
        return _result(DKIMStatus.PERMERROR, sig, f"key unusable: {exc}")  # e.g. an RSA key below the minimum
    except dkim.ValidationError as exc:
        reason = "body hash did not verify" if "body hash" in str(exc) else f"signature did not verify: {exc}"
        return _result(DKIMStatus.FAIL, sig, reason)
    except Exception as exc:
        # hostile input must not crash the session; dkimpy raises more than DKIMException on odd messages
        return _result(DKIMStatus.NEUTRAL, sig, f"signature could not be processed: {exc}")
    if ok:
        return _result(DKIMStatus.PASS, sig, "")
    return _result(DKIMStatus.FAIL, sig, "signature did not verify")


async def verify_arc(resolver: Resolver, message: bytes, *, min_rsa_bits: int = MIN_RSA_BITS) -> ARCResult:
    """Validate the ARC chain of `message` (RFC 8617 §5.2): cv=pass, fail, or none (no ARC sets)."""
    try:
        fields = _header_fields(message)
    except dkim.DKIMException as exc:
        if b"arc-seal:" not in message.lower():
            return ARCResult(ARCStatus.NONE, "message is not ARC signed")
        return ARCResult(ARCStatus.FAIL, f"message header unparsable: {exc}")
    names: list[str] = []
    for name, value in fields:
        if name.lower() not in (b"arc-seal", b"arc-message-signature"):
            continue
        try:
            sig = _tags(value)
        except dkim.util.InvalidTagValueList:
            continue  # dkimpy reports the malformed set itself
        if b"s" in sig and b"d" in sig:
            names.append(_key_name(sig))
    if not names and not any(name.lower() == b"arc-seal" for name, _ in fields):
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
