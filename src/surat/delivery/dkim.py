"""DKIM signing keys per domain, their DNS records, and signing outbound mail (RFC 6376, RFC 8463).

Every local domain gets two keys, RSA-2048 and Ed25519, and every outbound message carries both
signatures: Ed25519 is short and fast but not every verifier knows it yet (RFC 8463 §5 asks
signers to keep an RSA signature alongside), and a verifier ignores a signature whose algorithm
it does not know (RFC 6376 §6.1.1), so two signatures never hurt.

Keys are kept by the store's `KeyStore` role (store/base.py), which every node of an installation
shares (issue 12): the SQLite store keeps them as files, `<data_dir>/dkim/<domain>/<selector>.pem`
(directory 0700, file 0600; store/keyfiles.py), the PostgreSQL store in its `dkim_keys` table, so
that every node signs with the one key a domain publishes. Generation itself is pure
(`generate_keys` returns PEM in a `DkimKey`); this module reads and adds keys only through the
store.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from surat.mailauth.dkim_canon import (
    MessageFormatError,
    ParsedMessage,
    canonical_body,
    parse_message,
    selected_fields,
    sha256_digest,
    signature_field_data,
)
from surat.message.headers import Header
from surat.store.base import DKIM_SELECTOR_RE, AlreadyExists, KeyStore, StoredDkimKey

log = logging.getLogger(__name__)

RSA_BITS = 2048  # RFC 8301 §3.2: at least 1024, SHOULD be 2048 bits
_TXT_STRING_MAX = 255  # RFC 1035 §3.3.14: one character-string is at most 255 octets

# RFC 6376 §5.4.1's recommended list, plus the fields that decide how the signed body is shown
# (MIME-Version, Content-*) and Message-ID/Sender, which receivers use for threading and display.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "resent-date",
    "resent-from",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    # RFC 8460 §5.3: a TLS report's domain and submitter are part of what its signature vouches for
    "tls-report-domain",
    "tls-report-submitter",
)
# RFC 6376 §8.15: naming a field once more than it occurs signs its absence, so nobody can add a
# second From above the signed one (the one most mail readers display), nor a To, Subject, Date
# or Message-ID where the author wrote none or above the author's.
OVERSIGNED_HEADERS: tuple[str, ...] = ("from", "to", "subject", "date", "message-id")

_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class DkimError(Exception):
    """A key could not be made, read or used; the message says which and why."""


class DkimAlgorithm(enum.Enum):
    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def signature_algorithm(self) -> str:
        """The a= tag value (RFC 6376 §3.5, RFC 8463 §3)."""
        return "rsa-sha256" if self is DkimAlgorithm.RSA else "ed25519-sha256"

    @property
    def selector_suffix(self) -> str:
        return "r" if self is DkimAlgorithm.RSA else "e"


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str  # A-label, lower case, no trailing dot
    selector: str  # e.g. "s20261126r"
    algorithm: DkimAlgorithm
    public_key: str  # the p= value: base64 SubjectPublicKeyInfo (RSA) or raw 32 bytes (Ed25519)
    private_pem: bytes = field(repr=False)  # PKCS#1 for RSA, PKCS#8 for Ed25519

    @property
    def record_name(self) -> str:
        """Where the public key is published (RFC 6376 §3.6.2.1), fully qualified."""
        return f"{self.selector}._domainkey.{self.domain}."

    @property
    def txt_record(self) -> str:
        """The TXT record text (RFC 6376 §3.6.1); k= is required for Ed25519 (RFC 8463 §4)."""
        return f"v=DKIM1; k={self.algorithm.value}; p={self.public_key}"

    @property
    def txt_strings(self) -> tuple[str, ...]:
        """The record text split into character-strings of at most 255 octets, in order.

        Verifiers concatenate them without separators (RFC 6376 §3.6.2.2); an RSA-2048 key needs two.
        """
        text = self.txt_record
        return tuple(text[i : i + _TXT_STRING_MAX] for i in range(0, len(text), _TXT_STRING_MAX))


def normalize_domain(domain: str) -> str:
    """The domain as used in d= and in the key directory; only A-labels (callers IDNA-encode)."""
    name = domain.strip().rstrip(".").lower()
    if not _DOMAIN_RE.match(name):
        raise DkimError(f"not a valid DNS domain name (A-label form): {domain!r}")
    return name


def selector_for(algorithm: DkimAlgorithm, when: datetime) -> str:
    """`s` + the creation date + `r`/`e`: new keys never reuse a published selector by accident,
    and an operator sees a key's age at a glance in DNS."""
    return f"s{when:%Y%m%d}{algorithm.selector_suffix}"


def _public_key_b64(private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    public = private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def generate_key(
    domain: str, algorithm: DkimAlgorithm, now: datetime, selector: str | None = None
) -> DkimKey:
    """A new key; nothing is written."""
    domain = normalize_domain(domain)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is DkimAlgorithm.RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        # dkimpy reads PKCS#1 ("RSA PRIVATE KEY"), as do opendkim and rspamd.
        key_format = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        key_format = serialization.PrivateFormat.PKCS8
    pem = private.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
    return DkimKey(
        domain=domain,
        selector=selector or selector_for(algorithm, now),
        algorithm=algorithm,
        public_key=_public_key_b64(private),
        private_pem=pem,
    )


def generate_keys(domain: str, now: datetime) -> tuple[DkimKey, DkimKey]:
    """A fresh RSA-2048 and Ed25519 key pair for `domain` (RSA first)."""
    return generate_key(domain, DkimAlgorithm.RSA, now), generate_key(domain, DkimAlgorithm.ED25519, now)


def key_from_pem(domain: str, selector: str, pem: bytes) -> DkimKey:
    """Rebuild a `DkimKey` from stored PEM; the algorithm comes from the key, not the file name."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"unreadable DKIM key {selector} for {domain}: {exc}") from None
    if isinstance(private, rsa.RSAPrivateKey):
        algorithm = DkimAlgorithm.RSA
        if private.key_size < 1024:  # RFC 8301 §3.2: verifiers MUST reject smaller keys
            raise DkimError(f"DKIM key {selector} for {domain} is too short ({private.key_size} bits)")
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = DkimAlgorithm.ED25519
    else:
        raise DkimError(f"DKIM key {selector} for {domain} is neither RSA nor Ed25519")
    return DkimKey(normalize_domain(domain), selector, algorithm, _public_key_b64(private), pem)


# ----------------------------------------------------------------------------------------- the store


def _stored(key: DkimKey, now: datetime) -> StoredDkimKey:
    return StoredDkimKey(key.domain, key.selector, key.algorithm.value, key.private_pem, now)


async def save_keys(store: KeyStore, keys: Iterable[DkimKey], now: datetime) -> None:
    """Add each key to the store. An existing selector is never replaced (DkimError): its public half
    may already be published, and replacing it would break every signature until DNS catches up."""
    for key in keys:
        try:
            await store.add_dkim_key(_stored(key, now))
        except AlreadyExists:
            raise DkimError(f"DKIM key {key.selector} for {key.domain} already exists") from None


def _newest(domain: str, stored: Sequence[StoredDkimKey]) -> tuple[DkimKey, ...]:
    newest: dict[DkimAlgorithm, DkimKey] = {}
    for item in stored:
        if not DKIM_SELECTOR_RE.match(item.selector):
            continue
        key = key_from_pem(domain, item.selector, item.private_pem)
        current = newest.get(key.algorithm)
        if current is None or _selector_order(item.selector) > _selector_order(current.selector):
            newest[key.algorithm] = key
    return tuple(newest[algorithm] for algorithm in DkimAlgorithm if algorithm in newest)


async def load_keys(store: KeyStore, domain: str) -> tuple[DkimKey, ...]:
    """The newest key per algorithm for `domain` (RSA first); () when the domain has none.

    Selectors carry their date, so the newest is the greatest name. Older keys stay in the store (and
    in DNS) until messages signed with them have been verified; removing them is the operator's.
    The keys are parsed in a thread: an RSA key's checks take milliseconds.
    """
    domain = normalize_domain(domain)
    stored = await store.dkim_keys(domain)
    return await asyncio.to_thread(_newest, domain, stored)


def _selector_order(selector: str) -> tuple[str, int]:
    match = DKIM_SELECTOR_RE.match(selector)
    assert match is not None
    return match.group(1), int(match.group(3) or 0)


async def ensure_keys(store: KeyStore, domain: str, now: datetime) -> tuple[DkimKey, ...]:
    """The domain's keys, generating and adding whichever algorithm is missing (`domain add`, the
    first message of a new domain).

    Several processes or nodes may do this at once for one domain: each adds its new key only if the
    domain still has none of that algorithm (`only_first_of_algorithm`, atomic in the store), and
    all of them then read the same keys back, so one key per algorithm is published and used.
    When the dated selector is already taken, a numeric suffix is added (`s20261126r2`): an existing
    selector is never replaced.
    """
    domain = normalize_domain(domain)
    existing = await load_keys(store, domain)
    present = {key.algorithm for key in existing}
    missing = [algorithm for algorithm in DkimAlgorithm if algorithm not in present]
    if not missing:
        return existing
    taken = {item.selector for item in await store.dkim_keys(domain)}
    for algorithm in missing:
        base = selector_for(algorithm, now)
        selector, counter = base, 1
        while selector in taken:
            counter += 1
            selector = f"{base}{counter}"
        # RSA-2048 generation takes a tenth of a second or more: not on the event loop.
        key = await asyncio.to_thread(generate_key, domain, algorithm, now, selector)
        try:
            await store.add_dkim_key(_stored(key, now), only_first_of_algorithm=True)
        except AlreadyExists:
            raise DkimError(f"DKIM key {selector} for {domain} already exists") from None
    return await load_keys(store, domain)


# ----------------------------------------------------------------------------------------- signing

# RFC 6376 §3.5 b=, bh=: base64 may be folded anywhere; lines of the field stay under RFC 5322
# §2.1.1's 78 characters.
_LINE_WIDTH = 76
_FOLD = b"\r\n "
# Up to this size a message is signed on the event loop when `SigningKeys.in_thread` is off; a
# bigger one always in a thread: canonicalisation and hashing are linear in the size (about 1 µs
# per KiB), and a client sends up to `[limits] message_size`.
INLINE_SIGN_LIMIT = 256 * 1024


Canonicalization = Literal["simple", "relaxed"]  # RFC 6376 §3.4


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key ready to sign with: its private half parsed once (parsing the PEM costs more than signing)."""

    key: DkimKey
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_key(cls, key: DkimKey) -> SigningKey:
        private = serialization.load_pem_private_key(key.private_pem, password=None)
        if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise DkimError(f"DKIM key {key.selector} for {key.domain} is neither RSA nor Ed25519")
        return cls(key, private)


def headers_to_sign(parsed: ParsedMessage) -> list[bytes]:
    """The h= list (RFC 6376 §5.4): each recommended field as often as it occurs, plus one more of
    each OVERSIGNED_HEADERS field (§8.15: signs that no further one may be added)."""
    wanted = _SIGNED_SET
    signed = [name for name in parsed.names if name in wanted]
    return signed + list(_OVERSIGNED)


_SIGNED_SET = frozenset(name.encode("ascii") for name in SIGNED_HEADERS)
_OVERSIGNED = tuple(name.encode("ascii") for name in OVERSIGNED_HEADERS)
_PKCS1 = padding.PKCS1v15()  # built once: each construction is an ABC isinstance check
_SHA256 = hashes.SHA256()


def _fold_tags(tags: Sequence[tuple[bytes, bytes]], column: int) -> tuple[bytes, int]:
    """`tag=value; ...` with folding whitespace between tags (and after the colons of h=) where a
    line would pass _LINE_WIDTH; returns the text and the column it ends at. The last tag (b=) is
    written as given, its value empty: it is filled in after hashing."""
    out = bytearray()
    for number, (name, value) in enumerate(tags):
        # h= may be folded after each colon (RFC 6376 §3.5: [FWS] ":" [FWS] between the names)
        pieces = [name + b"=" + value] if name != b"h" else [b"h=" + value.replace(b":", b": ")]
        words = pieces[0].split(b" ") if name == b"h" else pieces
        if number < len(tags) - 1:
            words[-1] += b";"
        for index, word in enumerate(words):
            separator = b" " if index == 0 else b""
            if column + len(separator) + len(word) > _LINE_WIDTH:
                out += _FOLD
                column = 1
            else:
                out += separator
                column += len(separator)
            out += word
            column += len(word)
    return bytes(out), column


def _fold_base64(value: bytes, column: int) -> bytes:
    """`value` in lines of at most _LINE_WIDTH, starting at `column` (RFC 6376 §3.5: base64 may
    carry FWS anywhere)."""
    out = bytearray()
    room = _LINE_WIDTH - column
    if room < 8:
        out += _FOLD
        room = _LINE_WIDTH - 1
    while value:
        out += value[:room]
        value = value[room:]
        if value:
            out += _FOLD
            room = _LINE_WIDTH - 1
    return bytes(out)


def sign(
    message: bytes,
    domain: str,
    keys: Sequence[DkimKey | SigningKey],
    *,
    timestamp: int | None = None,
    canonicalization: tuple[Canonicalization, Canonicalization] = ("relaxed", "relaxed"),
    header: Header | None = None,
) -> bytes:
    """DKIM-Signature header fields (CRLF-terminated) to prepend to `message`, one per key.

    relaxed/relaxed canonicalisation by default (RFC 6376 §3.4.2, §3.4.4: survives header
    refolding and whitespace changes by relays; `canonicalization` (header, body) chooses "simple"
    as well), d=`domain`, t=`timestamp` (now when None), RSA signature on top.
    The canonical forms come from `surat.mailauth.dkim_canon`, the code our verifier checks with;
    the body is hashed once for all keys, the signed header fields are put together once, and the
    private-key operations are OpenSSL's (`cryptography`): a fraction of a millisecond for both.
    A message without a From field cannot be signed (RFC 6376 §5.4): b"" is returned and a warning
    logged, and the message goes out unsigned. A header section that cannot be split is DkimError.
    `header`: the header section of `message` (CRLF line ends only) as the end of DATA read it, handed
    on so that it is not read again.
    """
    domain = normalize_domain(domain)
    try:
        parsed = parse_message(message, crlf_only=header is not None, header=header)
    except MessageFormatError as exc:
        raise DkimError(f"cannot sign for {domain}: {exc}") from None
    if not parsed.has(b"from"):
        log.warning("dkim_unsigned reason=no_from domain=%s", domain)
        return b""
    signing = [key if isinstance(key, SigningKey) else SigningKey.from_key(key) for key in keys]
    for item in signing:
        if item.key.domain != domain:
            raise DkimError(f"DKIM key {item.key.selector} belongs to {item.key.domain}, not {domain}")
    signed_names = headers_to_sign(parsed)
    relaxed_header, relaxed_body = (choice == "relaxed" for choice in canonicalization)
    c_tag = "/".join(canonicalization).encode("ascii")
    # RFC 6376 §3.7: the body hash (one for every signature: same canonicalisation and hash)...
    body_hash = base64.b64encode(sha256_digest(canonical_body(parsed.body, relaxed_body)))
    # ... and the selected header fields, bottom-up per name (the same for every signature)
    header_data = selected_fields(parsed, signed_names, relaxed_header)
    when = str(int(time.time()) if timestamp is None else timestamp).encode("ascii")
    fields: list[bytes] = []
    for item in sorted(signing, key=lambda k: k.key.algorithm is not DkimAlgorithm.RSA):
        key = item.key
        # RFC 6376 §3.5: v, a, b, bh, d, h, s required; b= last so the value is appended after hashing
        tags = [
            (b"v", b"1"),
            (b"a", key.algorithm.signature_algorithm.encode("ascii")),
            (b"c", c_tag),
            (b"d", domain.encode("ascii")),
            (b"s", key.selector.encode("ascii")),
            (b"t", when),
            (b"h", b":".join(signed_names)),
            (b"bh", body_hash),
            (b"b", b""),
        ]
        template, column = _fold_tags(tags, len(b"DKIM-Signature:"))
        # §3.7 step 2: the signature field itself with b= empty, canonicalised, without its CRLF
        data = header_data + signature_field_data((b"DKIM-Signature", template + b"\r\n"), relaxed_header)
        private = item.private
        if isinstance(private, rsa.RSAPrivateKey):
            value = private.sign(data, _PKCS1, _SHA256)  # RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2)
        else:
            value = private.sign(sha256_digest(data))  # RFC 8463 §3: Ed25519 signs the SHA-256 hash
        fields.append(b"DKIM-Signature:" + template + _fold_base64(base64.b64encode(value), column) + b"\r\n")
    return b"".join(fields)


class SigningKeys:
    """Each domain's signing keys, read and parsed once, for the submission service and the queue.

    A key added to the store while the server runs (a rotation) is picked up at the next start; what
    was queued before is delivered with the signature it got when it was queued (issue 18).
    """

    def __init__(self, store: KeyStore, *, in_thread: bool = True) -> None:
        self.store = store
        # Sign in the default executor: OpenSSL's RSA step lets go of the GIL, so the event loop
        # goes on meanwhile (see docs/performance.md, issue 18, for the figures); off: sign on
        # the loop, messages up to INLINE_SIGN_LIMIT.
        self.in_thread = in_thread
        self._keys: dict[str, tuple[SigningKey, ...]] = {}
        # One load at a time in this process: two first messages of a new domain need not both make
        # keys (the store would keep only one of each algorithm anyway, see ensure_keys).
        self._loading = asyncio.Lock()

    async def load(self, domain: str, now: datetime) -> tuple[SigningKey, ...]:
        """The domain's keys, created in the store when missing, read again from it."""
        domain = normalize_domain(domain)
        stored = await ensure_keys(self.store, domain, now)
        keys = await asyncio.to_thread(lambda: tuple(SigningKey.from_key(key) for key in stored))
        self._keys[domain] = keys
        return keys

    async def get(self, domain: str, now: datetime) -> tuple[SigningKey, ...]:
        """The domain's keys (`domain` lower case), loaded the first time."""
        keys = self._keys.get(domain)
        if keys is None:
            async with self._loading:
                keys = self._keys.get(domain)
                if keys is None:
                    keys = await self.load(domain, now)
        return keys

    async def sign(self, message: bytes, domain: str, now: datetime, header: Header | None = None) -> bytes:
        """`sign(message, domain, keys, timestamp=now, header=header)` with the domain's keys, in a
        thread or not."""
        keys = await self.get(domain, now)
        timestamp = int(now.timestamp())
        if not self.in_thread and len(message) <= INLINE_SIGN_LIMIT:
            return sign(message, domain, keys, timestamp=timestamp, header=header)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, functools.partial(sign, message, domain, keys, timestamp=timestamp, header=header)
        )


DnsTxtLookup = Callable[..., bytes | None]


def txt_lookup(keys: Iterable[DkimKey]) -> DnsTxtLookup:
    """A dkimpy `dnsfunc` serving `keys`' records: for tests and `surat check` self-verification."""
    records = {key.record_name.encode("ascii"): "".join(key.txt_strings).encode("ascii") for key in keys}

    def lookup(name: bytes, timeout: float = 5, **_: object) -> bytes | None:
        qname = name if name.endswith(b".") else name + b"."
        return records.get(qname.lower())

    return lookup
