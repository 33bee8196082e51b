"""Small self-signed certificates for the TLS reload and SNI tests (ECDSA P-256: generated in
microseconds, where the quickstart's RSA keys take a good part of a second each)."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    cert_pem: bytes
    key_pem: bytes
    sha256: str  # hex of the DER certificate: what a client sees as the peer's fingerprint

    def install(self, cert: Path, key: Path) -> None:
        """Replace the files as certbot's deploy does: each written whole, then renamed over the old."""
        for path, data in ((key, self.key_pem), (cert, self.cert_pem)):
            temporary = path.with_name(path.name + ".new")
            temporary.write_bytes(data)
            temporary.chmod(0o600)
            temporary.replace(path)


def make_certificate(
    names: Sequence[str],
    *,
    expired: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    issuer: str | None = None,
) -> IssuedCertificate:
    """A self-signed certificate naming `names` (subjectAltName DNS), with a fresh key; valid for 90
    days from now, or expired yesterday, unless the dates are given. `issuer`: the issuer's common
    name, to look like a CA's certificate (still signed by its own key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    if not_before is None:
        not_before = now - timedelta(days=180 if expired else 0, minutes=5)
    if not_after is None:
        not_after = now + timedelta(days=-1 if expired else 90)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(
            subject if issuer is None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def any_certificate_client() -> ssl.SSLContext:
    """A client that accepts whatever certificate it is shown: the tests compare fingerprints."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_fingerprint(tls: ssl.SSLSocket | ssl.SSLObject | socket.socket | None) -> str:
    """The SHA-256 fingerprint of the certificate the server presented on this connection."""
    assert isinstance(tls, ssl.SSLSocket | ssl.SSLObject)
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()
