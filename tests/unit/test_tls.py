"""TLS contexts: real handshakes over a socketpair with the quickstart certificates."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from surat.certs import CertificatePaths, write_dev_certificates, write_self_signed_certificate
from surat.net.tls import TLSSetupError, client_context, server_context
from tls_certs import make_certificate


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return write_dev_certificates(tmp_path_factory.mktemp("dev"), ["mail.example.test"])


@pytest.fixture(scope="module")
def selfsigned(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return write_self_signed_certificate(tmp_path_factory.mktemp("self"), ["mail.example.test"])


class Handshake:
    """Server side on a thread; the client side runs in the test."""

    def __init__(self, server: ssl.SSLContext) -> None:
        self.server_sock, self.client_sock = socket.socketpair()
        self.server_sock.settimeout(10)
        self.client_sock.settimeout(10)
        self.server_ctx = server
        self.server_error: BaseException | None = None
        self.server_version: str | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            with self.server_ctx.wrap_socket(self.server_sock, server_side=True) as tls:
                self.server_version = tls.version()
                tls.sendall(tls.recv(100).upper())
        except (ssl.SSLError, OSError) as exc:
            self.server_error = exc

    def run(self, client: ssl.SSLContext, server_hostname: str | None) -> str | None:
        self.thread.start()
        try:
            with client.wrap_socket(self.client_sock, server_hostname=server_hostname) as tls:
                tls.sendall(b"ehlo")
                assert tls.recv(100) == b"EHLO"
                return tls.version()
        finally:
            self.client_sock.close()
            self.thread.join(10)
            self.server_sock.close()


@pytest.fixture
def handshake(dev: CertificatePaths) -> Iterator[Handshake]:
    hs = Handshake(server_context(dev.cert, dev.key))
    yield hs
    hs.client_sock.close()
    hs.server_sock.close()


@pytest.mark.parametrize("hostname", ["mail.example.test", "localhost", "127.0.0.1", "::1"])
def test_handshake_verified_with_dev_ca(dev: CertificatePaths, hostname: str) -> None:
    hs = Handshake(server_context(dev.cert, dev.key))
    version = hs.run(client_context(verify=True, ca_file=dev.ca), hostname)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert hs.server_error is None
    assert hs.server_version == version


def test_wrong_hostname_fails_verification(handshake: Handshake, dev: CertificatePaths) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake.run(client_context(verify=True, ca_file=dev.ca), "other.example.test")


def test_unknown_ca_fails_verification(handshake: Handshake, selfsigned: CertificatePaths) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake.run(client_context(verify=True, ca_file=selfsigned.cert), "mail.example.test")


def test_self_signed_trusted_explicitly(selfsigned: CertificatePaths) -> None:
    hs = Handshake(server_context(selfsigned.cert, selfsigned.key))
    assert hs.run(client_context(verify=True, ca_file=selfsigned.cert), "mail.example.test")


def test_unverified_client_accepts_any_certificate(handshake: Handshake) -> None:
    context = client_context(verify=False)
    assert context.verify_mode == ssl.CERT_NONE
    assert handshake.run(context, None)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_client_refused(handshake: Handshake) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        handshake.run(old, None)
    # The server, not the client, is the one refusing.
    assert isinstance(handshake.server_error, ssl.SSLError)
    assert "UNSUPPORTED_PROTOCOL" in str(handshake.server_error)


def test_context_settings(dev: CertificatePaths) -> None:
    context = server_context(dev.cert, dev.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert client_context(verify=True).minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(verify=True).check_hostname


# ---------------------------------------------------------------------------------------- errors


def write_cert(
    tmp_path: Path, not_before: datetime, not_after: datetime, name: str = "cert.pem"
) -> tuple[Path, Path]:
    issued = make_certificate(["mail.example.test"], not_before=not_before, not_after=not_after)
    cert_path, key_path = tmp_path / name, tmp_path / f"key-{name}"
    cert_path.write_bytes(issued.cert_pem)
    key_path.write_bytes(issued.key_pem)
    return cert_path, key_path


def test_expired_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    cert, key = write_cert(tmp_path, now - timedelta(days=400), now - timedelta(days=1))
    with pytest.raises(TLSSetupError) as info:
        server_context(cert, key)
    message = str(info.value)
    assert message.startswith(f"TLS certificate {cert} expired on ")
    assert f"{(now - timedelta(days=1)):%Y-%m-%d}" in message


def test_valid_ecdsa_certificate_accepted(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    cert, key = write_cert(tmp_path, now - timedelta(days=1), now + timedelta(days=90))
    assert isinstance(server_context(cert, key), ssl.SSLContext)


def test_mismatched_key(dev: CertificatePaths, selfsigned: CertificatePaths) -> None:
    with pytest.raises(TLSSetupError) as info:
        server_context(dev.cert, selfsigned.key)
    assert str(info.value) == f"TLS private key {selfsigned.key} does not match the certificate {dev.cert}"


def test_missing_files(tmp_path: Path, dev: CertificatePaths) -> None:
    with pytest.raises(TLSSetupError, match=r"cannot read TLS certificate .*missing\.pem: No such file"):
        server_context(tmp_path / "missing.pem", dev.key)
    with pytest.raises(TLSSetupError, match=r"cannot read TLS private key .*nokey\.pem"):
        server_context(dev.cert, tmp_path / "nokey.pem")


def test_garbage_files(tmp_path: Path, dev: CertificatePaths) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(
        TLSSetupError, match=re.escape(f"TLS certificate {junk} contains no valid PEM certificate")
    ):
        server_context(junk, dev.key)
    with pytest.raises(
        TLSSetupError, match=re.escape(f"TLS private key {junk} contains no valid PEM private key")
    ):
        server_context(dev.cert, junk)
    # A certificate where the key should be.
    with pytest.raises(TLSSetupError, match="contains no valid PEM private key"):
        server_context(dev.cert, dev.cert)


def test_encrypted_key(tmp_path: Path, dev: CertificatePaths) -> None:
    key = serialization.load_pem_private_key(dev.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSSetupError, match=re.escape(f"TLS private key {encrypted} is encrypted")):
        server_context(dev.cert, encrypted)


def test_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(TLSSetupError, match="cannot load TLS CA file"):
        client_context(verify=True, ca_file=tmp_path / "none.pem")
