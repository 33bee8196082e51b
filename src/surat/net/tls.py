"""TLS contexts for the listeners (implicit TLS and STARTTLS/STLS) and for outbound connections.

`server_context` checks the certificate and key with `cryptography` before handing them to the ssl
module, because OpenSSL's own errors ("[SSL] PEM lib (_ssl.c:3874)", "key values mismatch") do not
say which file is wrong, and OpenSSL happily serves an expired certificate.
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = [
    "TLSSetupError",
    "certificate_warnings",
    "client_context",
    "dns_names",
    "load_server_certificate",
    "server_context",
]

log = logging.getLogger(__name__)

EXPIRY_WARNING = timedelta(days=14)
_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class TLSSetupError(Exception):
    """The TLS certificate or key cannot be used; the message is one sentence naming the file, and
    `setting` the config key to fix (`tls.cert` or `tls.key`)."""

    def __init__(self, message: str, setting: str = "tls.cert") -> None:
        super().__init__(message)
        self.setting = setting


def _read(path: Path, what: str, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSSetupError(f"cannot read TLS {what} {path}: {exc.strerror or exc}", setting) from None


def _check_pair(
    cert_path: Path, key_path: Path, now: datetime, setting: str, full_key_check: bool
) -> x509.Certificate:
    """The leaf certificate, once the pair is known to work; `setting` names the pair in errors
    ("tls", "tls.certificates[0]"). `full_key_check=False` skips checking that an RSA key's private
    numbers are consistent (see load_server_certificate)."""
    cert_setting, key_setting = f"{setting}.cert", f"{setting}.key"
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path, "certificate", cert_setting))
    except ValueError:
        raise TLSSetupError(
            f"TLS certificate {cert_path} contains no valid PEM certificate", cert_setting
        ) from None
    leaf = chain[0]  # a PEM chain starts with the server's own certificate
    not_after = leaf.not_valid_after_utc
    if not_after <= now:
        raise TLSSetupError(
            f"TLS certificate {cert_path} expired on {not_after:%Y-%m-%d %H:%M} UTC", cert_setting
        )
    if leaf.not_valid_before_utc > now:
        # A clock slightly behind the CA's is not worth refusing to start over; clients may object.
        log.warning(
            "event=tls_cert_not_yet_valid cert=%s not_before=%s", cert_path, leaf.not_valid_before_utc
        )
    if not_after - now < EXPIRY_WARNING:
        log.warning("event=tls_cert_expires_soon cert=%s not_after=%s", cert_path, not_after)

    try:
        key = serialization.load_pem_private_key(
            _read(key_path, "private key", key_setting),
            password=None,
            unsafe_skip_rsa_key_validation=not full_key_check,
        )
    except TypeError:
        raise TLSSetupError(
            f"TLS private key {key_path} is encrypted; Surat needs it without a passphrase", key_setting
        ) from None
    except ValueError:
        raise TLSSetupError(
            f"TLS private key {key_path} contains no valid PEM private key", key_setting
        ) from None
    except UnsupportedAlgorithm:
        raise TLSSetupError(
            f"TLS private key {key_path} is of a type this system does not support", key_setting
        ) from None
    if not isinstance(key, _SIGNING_KEYS):
        raise TLSSetupError(
            f"TLS private key {key_path} is not a signing key (RSA, ECDSA or EdDSA)", key_setting
        )

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TLSSetupError(
            f"TLS private key {key_path} does not match the certificate {cert_path}", key_setting
        )
    return leaf


def _name_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 §6.4.3: a wildcard stands for exactly one whole left-most label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def dns_names(leaf: x509.Certificate) -> list[str]:
    """The DNS names of the certificate's subjectAltName (RFC 6125 §6.4.4: clients no longer look
    at the subject's CN when there is one, so neither do we)."""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.DNSName))


def certificate_warnings(cert_path: Path, hostname: str, now: datetime) -> list[str]:
    """What `surat check` warns about in a certificate that works but will disappoint: self-signed
    (other servers and mail clients will not trust it), not naming `hostname` (clients verifying the
    name refuse it), or expiring within EXPIRY_WARNING. Errors are `server_context`'s to raise."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except (OSError, ValueError):
        return []  # server_context reports it
    warnings: list[str] = []
    if leaf.issuer == leaf.subject:
        warnings.append(
            f"{cert_path} is self-signed: other mail servers and clients will not trust it; install one "
            'from a CA (e.g. Let\'s Encrypt, README "Production")'
        )
    names = dns_names(leaf)
    if not any(_name_matches(name, hostname) for name in names):
        shown = ", ".join(names) or "no DNS names"
        warnings.append(f"{cert_path} does not cover hostname {hostname} (it names {shown})")
    not_after = leaf.not_valid_after_utc
    if not_after - now < EXPIRY_WARNING:
        days = max(0, (not_after - now).days)
        warnings.append(f"{cert_path} expires in {days} day(s), on {not_after:%Y-%m-%d %H:%M} UTC: renew it")
    return warnings


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 minimum, OpenSSL's default ciphers, no compression.

    Raises TLSSetupError when a file is unreadable or not PEM, the certificate has expired, or the
    key does not belong to the certificate.
    """
    return load_server_certificate(cert, key)[0]


def load_server_certificate(
    cert: Path, key: Path, setting: str = "tls", *, full_key_check: bool = True
) -> tuple[ssl.SSLContext, x509.Certificate]:
    """`server_context`, and the leaf certificate it serves; `setting` is the config table the pair
    comes from, named in errors.

    `full_key_check=False` is for a reload inside the running server: checking an RSA-2048 key's
    private numbers takes ~40 ms of CPU holding the GIL (measured; a thread does not help), during
    which no session is served, per certificate. Without it a pair costs ~1.5 ms, and a key that
    does not belong to the certificate is still refused (its public half is compared here, and
    OpenSSL compares them again). Start-up, `surat check` and `surat reload` check fully."""
    leaf = _check_pair(cert, key, datetime.now(UTC), setting, full_key_check)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996, RFC 9325 §3.1.1
    # No compression (CRIME, RFC 9325 §3.3); client-initiated renegotiation costs us CPU for nothing.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TLSSetupError(
            f"TLS certificate {cert} and key {key} were refused by OpenSSL: {exc}", f"{setting}.cert"
        ) from None
    return context, leaf


def client_context(verify: bool, ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 minimum.

    verify=True checks the chain and the host name, against `ca_file` only when given, else against
    the system's trust store. verify=False encrypts without authenticating (opportunistic TLS for
    SMTP between MTAs, RFC 7435), and ignores `ca_file`.
    """
    if verify:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSSetupError(f"cannot load TLS CA file {ca_file}: {exc}") from None
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    return context
