"""Quickstart certificates: a dev CA + server certificate, or a self-signed one."""

from __future__ import annotations

import ipaddress
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from surat.certs import CertificatePaths, write_dev_certificates, write_self_signed_certificate

HOSTS = ["mail.example.test", "bücher.example.test", "192.0.2.7"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return write_dev_certificates(tmp_path_factory.mktemp("dev") / "tls", HOSTS)


@pytest.fixture(scope="module")
def selfsigned(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return write_self_signed_certificate(tmp_path_factory.mktemp("self") / "tls", ["mail.example.test"])


def load_cert(path: Path) -> x509.Certificate:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    assert len(certs) == 1
    return certs[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dev_files_and_modes(dev: CertificatePaths) -> None:
    tls_dir = dev.cert.parent
    assert dev == CertificatePaths(tls_dir / "cert.pem", tls_dir / "key.pem", tls_dir / "ca.pem")
    assert sorted(p.name for p in tls_dir.iterdir()) == ["ca-key.pem", "ca.pem", "cert.pem", "key.pem"]
    assert mode(dev.key) == 0o600
    assert mode(tls_dir / "ca-key.pem") == 0o600
    assert mode(dev.cert) == 0o644
    assert dev.ca is not None
    assert mode(dev.ca) == 0o644


def test_dev_server_certificate(dev: CertificatePaths) -> None:
    assert dev.ca is not None
    cert, ca = load_cert(dev.cert), load_cert(dev.ca)
    cert.verify_directly_issued_by(ca)
    assert cert.issuer == ca.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "mail.example.test",
        "xn--bcher-kva.example.test",
        "localhost",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.7"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.example.test"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=700) < lifetime < timedelta(days=800)
    assert cert.not_valid_before_utc < datetime.now(UTC) < cert.not_valid_after_utc
    assert ca.not_valid_after_utc >= cert.not_valid_after_utc
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048


def test_dev_ca_certificate(dev: CertificatePaths) -> None:
    assert dev.ca is not None
    ca = load_cert(dev.ca)
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    ca_key = serialization.load_pem_private_key((dev.ca.parent / "ca-key.pem").read_bytes(), None)
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert ca_key.public_key().public_bytes(*der) == ca.public_key().public_bytes(*der)


def test_key_matches_certificate(dev: CertificatePaths, selfsigned: CertificatePaths) -> None:
    for paths in (dev, selfsigned):
        key = serialization.load_pem_private_key(paths.key.read_bytes(), None)
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(*der) == load_cert(paths.cert).public_key().public_bytes(*der)


def test_self_signed(selfsigned: CertificatePaths) -> None:
    assert selfsigned.ca is None
    assert sorted(p.name for p in selfsigned.cert.parent.iterdir()) == ["cert.pem", "key.pem"]
    assert mode(selfsigned.key) == 0o600
    cert = load_cert(selfsigned.cert)
    cert.verify_directly_issued_by(cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test", "localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_no_silent_overwrite(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("operator's real key")
    with pytest.raises(FileExistsError, match=r"key\.pem"):
        write_dev_certificates(tmp_path, ["mail.example.test"])
    with pytest.raises(FileExistsError, match=r"key\.pem"):
        write_self_signed_certificate(tmp_path, ["mail.example.test"])
    # Nothing written, nothing replaced.
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]
    assert (tmp_path / "key.pem").read_text() == "operator's real key"


def test_ca_key_alone_blocks_dev_certificates(tmp_path: Path) -> None:
    (tmp_path / "ca-key.pem").write_text("x")
    with pytest.raises(FileExistsError, match=r"ca-key\.pem"):
        write_dev_certificates(tmp_path, [])


def test_overwrite(tmp_path: Path) -> None:
    first = write_self_signed_certificate(tmp_path, ["a.example.test"])
    old = first.cert.read_bytes()
    os.chmod(first.key, 0o644)  # an operator's mistake the rewrite repairs
    second = write_self_signed_certificate(tmp_path, ["b.example.test"], overwrite=True)
    assert second == first
    assert second.cert.read_bytes() != old
    assert mode(second.key) == 0o600
    names = load_cert(second.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "b.example.test" in names.get_values_for_type(x509.DNSName)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem"]  # no temp files left


def test_no_hostnames_still_covers_loopback(tmp_path: Path) -> None:
    paths = write_self_signed_certificate(tmp_path, [])
    cert = load_cert(paths.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
