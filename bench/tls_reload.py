"""How long a certificate reload holds the event loop (`TlsContexts.reload`, which runs on it).

For 1 and 3 certificates of each key type (RSA-2048, as quickstart writes; ECDSA P-256, certbot's
default), prints the time to build the contexts at start (with the full RSA key check) and the median
and maximum of `--runs` reloads (without it, see surat.net.tls.load_server_certificate).

    PYTHONPATH=src python bench/tls_reload.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from surat.config import CertificatePair, TLSConfig
from surat.net.tlscontexts import TlsContexts


def write_pair(directory: Path, name: str, kind: str) -> CertificatePair:
    """A self-signed certificate for `name` and its key, of `kind` "rsa" or "ecdsa"."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.now(UTC)
    builder = x509.CertificateBuilder(
        subject, subject, key.public_key(), 1, start, start + timedelta(days=90)
    )
    cert = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    pair = CertificatePair(directory / f"{name}.pem", directory / f"{name}.key")
    pair.cert.write_bytes(cert.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tls-reload-"))
    print("| certificates | start | reload, median | reload, max |\n|---|---|---|---|")
    for kind, label in (("rsa", "RSA-2048"), ("ecdsa", "ECDSA P-256")):
        pairs = [write_pair(directory, f"{kind}{index}.example", kind) for index in range(3)]
        for count in (1, 3):
            tls = TLSConfig(cert=pairs[0].cert, key=pairs[0].key, certificates=tuple(pairs[1:count]))
            began = time.perf_counter()
            holder = TlsContexts(tls)
            start_ms = (time.perf_counter() - began) * 1000
            reloads = []
            for _ in range(args.runs):
                began = time.perf_counter()
                holder.reload()
                reloads.append((time.perf_counter() - began) * 1000)
            print(
                f"| {count} {label} | {start_ms:.1f} ms | {statistics.median(reloads):.2f} ms "
                f"| {max(reloads):.1f} ms |"
            )


if __name__ == "__main__":
    main()
