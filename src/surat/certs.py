"""Certificates for `surat quickstart`: a dev CA with a server certificate, or one self-signed cert.

Keys are RSA-2048, not ECDSA P-256: every client we care about handles both today, but RSA is the
one that also works with old mail clients, embedded devices and TLS stacks built with a reduced
curve or signature list, and quickstart certificates exist to make the first login just work.

Keys are written 0600 from the first byte (never chmod'ed afterwards) and existing files are never
replaced unless the caller says `overwrite=True`.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificatePaths", "replace_file", "write_dev_certificates", "write_self_signed_certificate"]

RSA_BITS = 2048
# ~2 years, below the 825 days Apple platforms accept for any TLS server certificate.
SERVER_VALIDITY = timedelta(days=730)
CA_VALIDITY = timedelta(days=1095)  # outlives the server certificates it signs
# Tolerate a client whose clock is a little behind ours.
BACKDATE = timedelta(hours=1)

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
CA_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    cert: Path  # PEM server certificate
    key: Path  # PEM PKCS#8 private key, mode 0600
    ca: Path | None  # PEM CA certificate clients should trust; None for a self-signed cert


def write_dev_certificates(
    tls_dir: Path, hostnames: Sequence[str], *, overwrite: bool = False
) -> CertificatePaths:
    """Write ca.pem, ca-key.pem (0600), cert.pem and key.pem (0600) into `tls_dir`.

    The server certificate is signed by the new CA and names every hostname, "localhost",
    127.0.0.1 and ::1. Raises FileExistsError (writing nothing) if any of the four files exists
    and `overwrite` is False.
    """
    paths = CertificatePaths(tls_dir / CERT_NAME, tls_dir / KEY_NAME, tls_dir / CA_NAME)
    ca_key_path = tls_dir / CA_KEY_NAME
    _refuse_existing([paths.cert, paths.key, tls_dir / CA_NAME, ca_key_path], overwrite)

    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Surat development"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Surat development CA {now:%Y-%m-%d %H:%M:%S}"),
        ]
    )
    ca_public = ca_key.public_key()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    cert = (
        _server_builder(key, hostnames, _server_name(_first_name(hostnames)), now)
        .issuer_name(ca_name)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    tls_dir.mkdir(parents=True, exist_ok=True)
    _write(ca_key_path, _key_pem(ca_key), secret=True, overwrite=overwrite)
    _write(tls_dir / CA_NAME, ca_cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    _write(paths.key, _key_pem(key), secret=True, overwrite=overwrite)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    return paths


def write_self_signed_certificate(
    tls_dir: Path, hostnames: Sequence[str], *, overwrite: bool = False
) -> CertificatePaths:
    """Write a self-signed cert.pem and key.pem (0600) into `tls_dir`, until a real one is installed.

    Raises FileExistsError (writing nothing) if either file exists and `overwrite` is False.
    """
    paths = CertificatePaths(tls_dir / CERT_NAME, tls_dir / KEY_NAME, None)
    _refuse_existing([paths.cert, paths.key], overwrite)
    now = datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = _server_name(_first_name(hostnames))
    cert = (
        _server_builder(key, hostnames, subject, now)
        .issuer_name(subject)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    tls_dir.mkdir(parents=True, exist_ok=True)
    _write(paths.key, _key_pem(key), secret=True, overwrite=overwrite)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    return paths


# ----------------------------------------------------------------------------------------- helpers


def _first_name(hostnames: Sequence[str]) -> str:
    for name in hostnames:
        if _as_ip(name) is None:
            return _a_label(name)
    return "localhost"


def _server_name(common_name: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Surat")]
    if len(common_name) <= 64:  # RFC 5280 ub-common-name; the SAN list is what clients check
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _server_builder(
    key: rsa.RSAPrivateKey, hostnames: Sequence[str], subject: x509.Name, now: datetime
) -> x509.CertificateBuilder:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hostnames)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,  # TLS 1.2 RSA key exchange, still used by some old clients
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _alt_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in [*hostnames, "localhost", "127.0.0.1", "::1"]:
        ip = _as_ip(name)
        if ip is not None:
            if ip not in ips:
                ips.append(ip)
            continue
        label = _a_label(name)
        if label not in dns:
            dns.append(label)
    return [*(x509.DNSName(n) for n in dns), *(x509.IPAddress(ip) for ip in ips)]


def _as_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _a_label(name: str) -> str:
    """DNS names in certificates are A-labels (RFC 5280 §4.2.1.6, RFC 6125 §6.4.2)."""
    name = name.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty hostname")
    if name.isascii():
        return name
    return name.encode("idna").decode("ascii")


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{path} already exists; not overwriting it")


def _write(path: Path, data: bytes, *, secret: bool = False, overwrite: bool) -> None:
    """Write `path` whole or not at all; 0600 from creation for secrets, 0644 otherwise."""
    mode = 0o600 if secret else 0o644
    if not overwrite:
        # O_EXCL: a file that appeared since the check is still not replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(path, mode)  # undo the umask, which only ever removes bits
        return
    replace_file(path, data, secret=secret)


def replace_file(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Replace `path` in one rename, so a reader sees the old content or the new, never a part;
    0600 from creation for secrets, 0644 otherwise."""
    mode = 0o600 if secret else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
