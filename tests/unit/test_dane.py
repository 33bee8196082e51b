"""DANE-EE matching (RFC 6698 §2.1, RFC 7671 §5.1, RFC 7672 §3.1.1) and which TLSA records are usable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from surat.certs import write_dev_certificates
from surat.delivery.dane import certificate_matches, usable_records
from surat.dns.base import TLSARecord


@pytest.fixture(scope="module")
def certificate_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    paths = write_dev_certificates(tmp_path_factory.mktemp("dane"), ["mx.example.test"])
    return x509.load_pem_x509_certificate(Path(paths.cert).read_bytes()).public_bytes(Encoding.DER)


def _spki(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    ("selector", "matching_type", "digest"),
    [
        (0, 0, lambda b: b),
        (0, 1, lambda b: hashlib.sha256(b).digest()),
        (0, 2, lambda b: hashlib.sha512(b).digest()),
        (1, 0, lambda b: b),
        (1, 1, lambda b: hashlib.sha256(b).digest()),
        (1, 2, lambda b: hashlib.sha512(b).digest()),
    ],
)
def test_dane_ee_matches_by_selector_and_matching_type(
    certificate_der: bytes, selector: int, matching_type: int, digest: object
) -> None:
    assert callable(digest)
    selected = certificate_der if selector == 0 else _spki(certificate_der)
    good = TLSARecord(3, selector, matching_type, digest(selected))
    bad = TLSARecord(3, selector, matching_type, bytes(len(good.data)))
    assert usable_records([good]) == (good,)
    assert certificate_matches([good], certificate_der)
    assert not certificate_matches([bad], certificate_der)
    assert certificate_matches([bad, good], certificate_der)  # any one record of the set


def test_unusable_records_are_left_out(certificate_der: bytes) -> None:
    digest = hashlib.sha256(_spki(certificate_der)).digest()
    unusable = [
        TLSARecord(0, 1, 1, digest),  # PKIX-TA: unusable for SMTP (RFC 7672 §3.1.3)
        TLSARecord(1, 1, 1, digest),  # PKIX-EE: likewise
        TLSARecord(2, 1, 1, digest),  # DANE-TA: not supported here (see surat.delivery.dane)
        TLSARecord(3, 2, 1, digest),  # unknown selector
        TLSARecord(3, 1, 3, digest),  # unknown matching type
        TLSARecord(3, 1, 1, digest[:31]),  # wrong digest length
        TLSARecord(3, 1, 2, digest),  # SHA-512 needs 64 bytes
    ]
    assert usable_records(unusable) == ()


def test_garbage_certificate_matches_nothing() -> None:
    assert not certificate_matches([TLSARecord(3, 1, 1, bytes(32))], b"not a certificate")
