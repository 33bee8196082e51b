"""ACME (RFC 8555) against a real CA: Pebble on loopback validates HTTP-01 on our http listener,
issues, and the TLS listeners then serve its certificate; a short validity makes the server renew by
itself; a name the CA cannot validate leaves the old certificate served and the failure recorded."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, free_port
from cryptography import x509
from pebble import Pebble, pebble

from surat.acme.files import AcmeFiles, RenewalStatus
from surat.config import Config, parse_config
from surat.net.tls import dns_names

HOSTNAMES = ["mail.example.test", "mta-sts.example.test"]
ISSUE_TIMEOUT = 60.0


def acme_config(base: Path, ca: Pebble, http_port: int, hostnames: list[str]) -> Config:
    return parse_config(
        {
            "hostname": "mail.example.test",
            "data_dir": "data",
            "listen": {
                "http": [f"127.0.0.1:{http_port}"],
                "imaps": ["127.0.0.1:0"],
                "admin": ["127.0.0.1:0"],
            },
            "limits": {"mail_auth": False},
            "acme": {
                "directory": ca.directory,
                "email": "postmaster@example.test",
                "hostnames": hostnames,
                "ca_file": str(ca.ca_file),
            },
        },
        base_dir=base,
    )


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, Pebble]]:
    """Pebble and a server ordering from it at start. Parametrize indirectly with (names the
    certificate asks for, names the DNS resolves, validity seconds or None)."""
    hostnames, resolvable, validity = getattr(request, "param", (HOSTNAMES, HOSTNAMES, None))
    http_port = free_port()
    with pebble(tmp_path, http_port, resolvable, validity=validity) as ca:
        server = RunningServer(acme_config(tmp_path, ca, http_port, hostnames))
        try:
            yield server, ca
        finally:
            server.stop()


def status(server: RunningServer) -> RenewalStatus:
    return AcmeFiles(server.config.data_dir).read_status()


def wait_for(condition: Callable[[], bool], what: str, ca: Pebble) -> None:
    deadline = time.monotonic() + ISSUE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what}; pebble said: {ca.log.read_text()[-3000:]}")
        time.sleep(0.2)


def served_certificate(server: RunningServer, context: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="mail.example.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def trusting(ca: Pebble) -> ssl.SSLContext:
    """A client that trusts only the root Pebble issues under, and checks the host name."""
    return ssl.create_default_context(cadata=ca.root_pem().decode("ascii"))


def installed(server: RunningServer) -> x509.Certificate:
    return x509.load_pem_x509_certificate(AcmeFiles(server.config.data_dir).cert.read_bytes())


def metrics_text(server: RunningServer) -> str:
    url = f"http://127.0.0.1:{server.port('admin')}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode("utf-8"))


def metric_values(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition."""
    samples = (line.split(" ") for line in text.splitlines() if line and not line.startswith("#"))
    return {sample[0]: float(sample[1]) for sample in samples if len(sample) == 2 and "{" not in sample[0]}


def test_issues_and_serves_the_certificate(running: tuple[RunningServer, Pebble]) -> None:
    server, ca = running
    wait_for(lambda: status(server).last_success is not None, "certificate issued", ca)
    leaf = served_certificate(server, trusting(ca))  # verifies the chain and mail.example.test
    assert leaf.serial_number == installed(server).serial_number
    assert sorted(dns_names(leaf)) == HOSTNAMES
    assert "Pebble Intermediate" in leaf.issuer.rfc4514_string()
    files = AcmeFiles(server.config.data_dir)
    assert {path.name: path.stat().st_mode & 0o777 for path in (files.key, files.account_key)} == {
        "key.pem": 0o600,
        "account.key": 0o600,
    }
    assert list(files.challenges.iterdir()) == []  # answers removed after the order
    gauges = metric_values(metrics_text(server))
    assert gauges["surat_acme_consecutive_failures"] == 0
    assert (
        gauges["surat_acme_certificate_not_after_timestamp_seconds"] == leaf.not_valid_after_utc.timestamp()
    )
