"""DANE for outbound SMTP end to end (RFC 7672): server A's production resolver (dnspython) asks a DNS
server on 127.0.0.1 that answers with the AD bit when told to (a validating resolver's "authentic"),
and `[dns] dnssec_trusted` makes A use TLSA records. B's certificate names mx.remote.test only, so
every test below delivers to other.remote.test, where WebPKI (MTA-STS) would fail."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import inbox
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dns_server import DNSServer
from test_relay import BOB, Peer
from test_relay_mtasts import (
    DNSFactory,
    PolicyServer,
    dns_records,
    make_dns,
    mx,
    policy_server,
    sts_tls,
    submit_and_wait,
)

from surat.certs import CertificatePaths

__all__ = ["make_dns", "mx", "policy_server", "sts_tls"]  # fixtures, imported so that pytest finds them


def spki_sha256(tls: CertificatePaths) -> str:
    certificate = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def dane_dns(make_dns: DNSFactory, tlsa: str, *, authentic: bool = True, sts: bool = True) -> DNSServer:
    records = dns_records(mx_host="other.remote.test", sts_id="one" if sts else None)
    records[("_25._tcp.other.remote.test.", "TLSA")] = [tlsa]
    server = make_dns(records)
    server.authentic = authentic
    return server


def test_dane_ee_pin_delivers_without_webpki_and_takes_precedence_over_mta_sts(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    # remote.test also publishes an MTA-STS policy in enforce mode, which the certificate (not valid
    # for other.remote.test) would fail: DANE decides for a host with TLSA records (RFC 8461 §2).
    dns = dane_dns(make_dns, f"3 1 1 {spki_sha256(sts_tls)}")
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls, dnssec_trusted=True)
    assert reply is None
    assert len(inbox(mx, BOB)) == 1
    assert ("_25._tcp.other.remote.test.", "TLSA") in dns.queries
    assert sender.reports.successes == [("remote.test", "other.remote.test")]
    assert sender.reports.failures == []


def test_dane_mismatch_defers(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    dns = dane_dns(make_dns, "3 1 1 " + "00" * 32, sts=False)
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls, dnssec_trusted=True)
    assert reply is not None and reply.startswith(
        "451 4.7.5 DANE (TLSA) of remote.test's MX host not satisfied by other.remote.test[127.0.0.1]:"
    )
    assert reply.endswith(": TLS handshake failed: certificate matches none of the TLSA records")
    assert inbox(mx, BOB) == []
    assert [f[:3] for f in sender.reports.failures][:1] == [
        ("remote.test", "other.remote.test", "validation-failure")
    ]


def test_tlsa_without_the_ad_bit_is_ignored(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    # An unauthenticated (insecure) answer is no DANE: opportunistic TLS delivers (RFC 7672 §2.2).
    dns = dane_dns(make_dns, "3 1 1 " + "00" * 32, authentic=False, sts=False)
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls, dnssec_trusted=True)
    assert reply is None
    assert sender.reports.failures == [] and sender.reports.successes == []


def test_tlsa_is_not_used_unless_the_resolver_is_trusted(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    dns = dane_dns(make_dns, "3 1 1 " + "00" * 32, sts=False)
    _, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls)
    assert reply is None
    assert ("_25._tcp.other.remote.test.", "TLSA") not in dns.queries


def test_only_unusable_tlsa_records_mean_tls_without_authentication(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    # RFC 7672 §2.2: PKIX-EE(1) is unusable for SMTP; with nothing usable, TLS is still required.
    dns = dane_dns(make_dns, "1 1 1 " + "00" * 32, sts=False)
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls, dnssec_trusted=True)
    assert reply is None
    assert sender.reports.successes == [("remote.test", "other.remote.test")]
