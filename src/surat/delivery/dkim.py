"""DKIM signing keys per domain, their DNS records, and signing outbound mail (RFC 6376, RFC 8463).

Every local domain gets two keys, RSA-2048 and Ed25519, and every outbound message carries both
signatures: Ed25519 is short and fast but not every verifier knows it yet (RFC 8463 §5 asks
signers to keep an RSA signature alongside), and a verifier ignores a signature whose algorithm
it does not know (RFC 6376 §6.1.1), so two signatures never hurt.

Keys live in files, `<data_dir>/dkim/<domain>/<selector>.pem` (directory 0700, file 0600), not in
the store: a private key is a secret like the TLS key next to it, and the message database is
copied, backed up and read by more people and tools than the key should be. Generation itself is
pure (`generate_keys` returns PEM in a `DkimKey`), so a later multi-node key store can keep the
same values elsewhere without touching the signing code.
"""

from __future__ import annotations

import base64
import enum
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from surat.store.filemodes import make_private_dir

log = logging.getLogger(__name__)

RSA_BITS = 2048  # RFC 8301 §3.2: at least 1024, SHOULD be 2048 bits
KEY_DIR = "dkim"
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
)
# RFC 6376 §8.15: naming a field once more than it occurs signs its absence, so nobody can add a
# second From above the signed one (the one most mail readers display).
OVERSIGNED_HEADERS: tuple[str, ...] = ("from",)

_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_SELECTOR_RE = re.compile(r"^s(\d{8})([re])(\d*)$")
_FIELD_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


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


# ----------------------------------------------------------------------------------------- files


def key_dir(data_dir: Path, domain: str) -> Path:
    return data_dir / KEY_DIR / normalize_domain(domain)


def save_keys(data_dir: Path, keys: Iterable[DkimKey]) -> list[Path]:
    """Write each key to `<data_dir>/dkim/<domain>/<selector>.pem` (0600, atomically).

    An existing file for the same selector is never overwritten: its public half may already be
    published, and replacing it would break every signature until DNS catches up.
    """
    written: list[Path] = []
    for key in keys:
        directory = key_dir(data_dir, key.domain)
        make_private_dir(directory.parent, parents=True)  # <data_dir>/dkim too, not only the domain's
        make_private_dir(directory)
        path = directory / f"{key.selector}.pem"
        if path.exists():
            raise DkimError(f"DKIM key {path} already exists")
        tmp = directory / f".{key.selector}.pem.tmp"
        # O_EXCL with the mode given at creation: the key is never readable by others, not even
        # between open and chmod.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(key.private_pem)
                file.flush()
                os.fsync(file.fileno())
            os.link(tmp, path)  # fails instead of replacing if the selector appeared meanwhile
        except FileExistsError:
            raise DkimError(f"DKIM key {path} already exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        written.append(path)
    return written


def load_keys(data_dir: Path, domain: str) -> tuple[DkimKey, ...]:
    """The newest key per algorithm for `domain` (RSA first); () when the domain has none.

    Selectors carry their date, so the newest is the greatest name. Older keys stay on disk (and
    in DNS) until messages signed with them have been verified; removing them is the operator's.
    """
    directory = key_dir(data_dir, domain)
    if not directory.is_dir():
        return ()
    newest: dict[DkimAlgorithm, DkimKey] = {}
    for path in sorted(directory.glob("*.pem")):
        selector = path.stem
        if not _SELECTOR_RE.match(selector) or not path.is_file():
            continue
        key = key_from_pem(domain, selector, path.read_bytes())
        current = newest.get(key.algorithm)
        if current is None or _selector_order(selector) > _selector_order(current.selector):
            newest[key.algorithm] = key
    return tuple(newest[algorithm] for algorithm in DkimAlgorithm if algorithm in newest)


def _selector_order(selector: str) -> tuple[str, int]:
    match = _SELECTOR_RE.match(selector)
    assert match is not None
    return match.group(1), int(match.group(3) or 0)


def ensure_keys(data_dir: Path, domain: str, now: datetime) -> tuple[DkimKey, ...]:
    """The domain's keys, generating and saving whichever algorithm is missing (for `domain add`).

    When the dated selector's file name is already taken, a numeric suffix is added
    (`s20261126r2`): an existing file is never replaced.
    """
    existing = {key.algorithm: key for key in load_keys(data_dir, domain)}
    directory = key_dir(data_dir, domain)
    for algorithm in DkimAlgorithm:
        if algorithm in existing:
            continue
        base = selector_for(algorithm, now)
        selector, counter = base, 1
        while (directory / f"{selector}.pem").exists():
            counter += 1
            selector = f"{base}{counter}"
        save_keys(data_dir, [generate_key(domain, algorithm, now, selector)])
    return load_keys(data_dir, domain)


# ----------------------------------------------------------------------------------------- signing


def _header_names(message: bytes) -> list[str]:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[: end + 2]
    return [match.group(1).decode("ascii").lower() for match in _FIELD_NAME_RE.finditer(head)]


def headers_to_sign(message: bytes) -> list[str]:
    """The h= list: each recommended field as often as it occurs, plus one extra From."""
    names = _header_names(message)
    wanted = set(SIGNED_HEADERS)
    signed = [name for name in names if name in wanted]
    return signed + [name for name in OVERSIGNED_HEADERS]


def _dkimpy_private_key(key: DkimKey) -> bytes:
    if key.algorithm is DkimAlgorithm.RSA:
        return key.private_pem
    # dkimpy (PyNaCl) takes the 32-byte Ed25519 seed, base64-encoded (RFC 8463 §3).
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def sign(message: bytes, domain: str, keys: Sequence[DkimKey], logger: logging.Logger | None = None) -> bytes:
    """DKIM-Signature header fields (CRLF-terminated) to prepend to `message`, one per key.

    relaxed/relaxed canonicalisation (RFC 6376 §3.4: survives header refolding and whitespace
    changes by relays), d=`domain`, RSA signature on top. A message without a From field cannot be
    signed (RFC 6376 §5.4): b"" is returned and a warning logged, and the message goes out unsigned.
    CPU-bound (an RSA-2048 signature takes milliseconds): the queue runner calls it in an executor.
    """
    domain = normalize_domain(domain)
    if "from" not in _header_names(message):
        log.warning("dkim_unsigned reason=no_from domain=%s", domain)
        return b""
    include = [name.encode("ascii") for name in headers_to_sign(message)]
    fields: list[bytes] = []
    for key in sorted(keys, key=lambda k: k.algorithm is not DkimAlgorithm.RSA):
        if key.domain != domain:
            raise DkimError(f"DKIM key {key.selector} belongs to {key.domain}, not {domain}")
        try:
            signer = dkimpy.DKIM(
                message,
                signature_algorithm=key.algorithm.signature_algorithm.encode("ascii"),
                logger=logger or log,
            )
            field_bytes = signer.sign(
                key.selector.encode("ascii"),
                domain.encode("ascii"),
                _dkimpy_private_key(key),
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        except dkimpy.DKIMException as exc:
            raise DkimError(f"signing with {key.selector} for {domain} failed: {exc}") from exc
        assert isinstance(field_bytes, bytes)
        fields.append(field_bytes if field_bytes.endswith(b"\r\n") else field_bytes.rstrip(b"\r\n") + b"\r\n")
    return b"".join(fields)


DnsTxtLookup = Callable[..., bytes | None]


def txt_lookup(keys: Iterable[DkimKey]) -> DnsTxtLookup:
    """A dkimpy `dnsfunc` serving `keys`' records: for tests and `surat check` self-verification."""
    records = {key.record_name.encode("ascii"): "".join(key.txt_strings).encode("ascii") for key in keys}

    def lookup(name: bytes, timeout: float = 5, **_: object) -> bytes | None:
        qname = name if name.endswith(b".") else name + b"."
        return records.get(qname.lower())

    return lookup
