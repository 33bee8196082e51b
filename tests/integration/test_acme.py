"""ACME (RFC 8555) against a real CA: Pebble on loopback validates HTTP-01 on our http listener,
issues, and the TLS listeners then serve its certificate; a short validity makes the server renew by
itself; a name the CA cannot validate leaves the old certificate served and the failure recorded."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, free_port, serving
from cryptography import x509
from pebble import Pebble, pebble
from prometheus_client.parser import text_string_to_metric_families
from test_web import request

from surat.acme.files import AcmeFiles, RenewalStatus
from surat.acme.renewal import FIRST_RETRY
from surat.cli import main
from surat.config import Config, load_config
from surat.net.tls import dns_names

HOSTNAMES = ["mail.example.test", "mta-sts.example.test"]
ISSUE_TIMEOUT = 60.0


def acme_config(
    base: Path,
    directory: str,
    ca_file: Path,
    http_port: int,
    hostnames: list[str],
    *,
    imaps_port: int = 0,
    workers: int = 1,
) -> Config:
    """base/surat.toml (a file, for the `surat acme` command) with [acme] ordering from `directory`."""
    path = base / "surat.toml"
    path.write_text(
        'hostname = "mail.example.test"\n'
        'data_dir = "data"\n'
        f"[server]\nworkers = {workers}\n"
        "[listen]\n"
        f'http = ["127.0.0.1:{http_port}"]\n'
        f'imaps = ["127.0.0.1:{imaps_port}"]\n'
        'admin = ["127.0.0.1:0"]\n'
        "[limits]\n"
        "mail_auth = false\n"
        "[acme]\n"
        f'directory = "{directory}"\n'
        'email = "postmaster@example.test"\n'
        f"hostnames = {json.dumps(hostnames)}\n"
        f'ca_file = "{ca_file}"\n'
    )
    return load_config(path)


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, Pebble]]:
    """Pebble and a server ordering from it at start. Parametrize indirectly with (names the
    certificate asks for, names the DNS resolves, validity seconds or None)."""
    hostnames, resolvable, validity = getattr(request, "param", (HOSTNAMES, HOSTNAMES, None))
    http_port = free_port()
    with pebble(tmp_path, http_port, resolvable, validity=validity) as ca:
        server = RunningServer(acme_config(tmp_path, ca.directory, ca.ca_file, http_port, hostnames))
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


def served_certificate(server: RunningServer | int, context: ssl.SSLContext) -> x509.Certificate:
    """The certificate the imaps listener (of `server`, or on this port) serves."""
    port = server if isinstance(server, int) else server.port("imaps")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="mail.example.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def trusting(ca: Pebble) -> ssl.SSLContext:
    """A client that trusts only the root Pebble issues under, and checks the host name."""
    return ssl.create_default_context(cadata=ca.root_pem().decode("ascii"))


def installed(server: RunningServer | Config) -> x509.Certificate:
    config = server if isinstance(server, Config) else server.config
    return x509.load_pem_x509_certificate(AcmeFiles(config.data_dir).cert.read_bytes())


def metrics_text(server: RunningServer) -> str:
    url = f"http://127.0.0.1:{server.port('admin')}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode("utf-8"))


def metric_values(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_issues_and_serves_the_certificate(
    running: tuple[RunningServer, Pebble], capsys: pytest.CaptureFixture[str]
) -> None:
    server, ca = running
    wait_for(lambda: status(server).last_success is not None, "certificate issued", ca)
    leaf = served_certificate(server, trusting(ca))  # verifies the chain and mail.example.test
    assert leaf.serial_number == installed(server).serial_number
    assert sorted(dns_names(leaf)) == HOSTNAMES
    assert "Pebble Intermediate" in leaf.issuer.rfc4514_string()
    files = AcmeFiles(server.config.data_dir)
    # Nothing under data_dir that others may read (`surat check` would warn).
    assert [path for path in files.directory.rglob("*") if path.stat().st_mode & 0o077] == []
    assert list(files.challenges.iterdir()) == []  # answers removed after the order
    gauges = metric_values(metrics_text(server))
    assert gauges["surat_acme_consecutive_failures"] == 0
    assert (
        gauges["surat_acme_certificate_not_after_timestamp_seconds"] == leaf.not_valid_after_utc.timestamp()
    )


# Pebble's certificates last 45 s here: the server renews with a third (15 s) left, by itself; the
# margin leaves a loaded CI machine time to order before the old one expires.
SHORT_VALIDITY = 45


@pytest.mark.parametrize("running", [(HOSTNAMES, HOSTNAMES, SHORT_VALIDITY)], indirect=True)
def test_renews_a_short_lived_certificate_before_it_expires(running: tuple[RunningServer, Pebble]) -> None:
    server, ca = running
    wait_for(lambda: status(server).last_success is not None, "certificate issued", ca)
    first = served_certificate(server, trusting(ca))
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert lifetime.total_seconds() <= SHORT_VALIDITY + 1
    wait_for(lambda: installed(server).serial_number != first.serial_number, "renewal", ca)
    # The renewal reloaded the listeners: new handshakes get the new certificate, before the old
    # one expires (the renewal time is 1/3 of the lifetime before it).
    wait_for(lambda: served_certificate(server, trusting(ca)) != first, "renewed certificate served", ca)
    renewed = served_certificate(server, trusting(ca))
    assert renewed.serial_number == installed(server).serial_number
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert status(server).consecutive_failures == 0


@pytest.mark.parametrize("running", [([*HOSTNAMES, "unknown.example.test"], HOSTNAMES, None)], indirect=True)
def test_a_failed_order_keeps_the_certificate_and_backs_off(running: tuple[RunningServer, Pebble]) -> None:
    server, ca = running
    wait_for(lambda: status(server).consecutive_failures == 1, "failure recorded", ca)
    recorded = status(server)
    assert recorded.last_success is None
    assert recorded.last_error is not None and "unknown.example.test" in recorded.last_error
    assert recorded.last_failure is not None and recorded.next_attempt is not None
    assert recorded.next_attempt - recorded.last_failure == FIRST_RETRY
    # Still serving: the self-signed placeholder (nothing better was ever issued).
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    placeholder = served_certificate(server, unverified)
    assert placeholder.issuer == placeholder.subject
    assert placeholder.serial_number == installed(server).serial_number
    gauges = metric_values(metrics_text(server))
    assert gauges["surat_acme_consecutive_failures"] == 1
    assert gauges["surat_acme_certificate_not_after_timestamp_seconds"] == 0
    assert 'surat_acme_orders_total{result="failed"}' in metrics_text(server)


def test_http_listener_answers_the_challenges_any_worker_wrote(tmp_path: Path) -> None:
    """The answers are files under data_dir/acme/challenges/, so any process's http listener serves
    what the renewing process wrote (RFC 8555 §8.3: GET /.well-known/acme-challenge/TOKEN)."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("unused: nothing listens on port 1, so the order fails at once\n")
    server = RunningServer(acme_config(tmp_path, "https://127.0.0.1:1/dir", ca_file, 0, HOSTNAMES))
    try:
        token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
        AcmeFiles(server.config.data_dir).put_challenge(
            token, f"{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
        )
        answer = request(
            server, "http", "GET", f"/.well-known/acme-challenge/{token}", "mta-sts.example.test"
        )
        assert (answer.status, answer.headers["Content-Type"], answer.body) == (
            200,
            "application/octet-stream",
            f"{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI".encode(),
        )
        for unknown in ("other-token", "..%2Fstatus.json", "a.b"):
            answer = request(
                server, "http", "GET", f"/.well-known/acme-challenge/{unknown}", "mail.example.test"
            )
            assert (answer.status, answer.body) == (404, b"no such ACME challenge\n")
    finally:
        server.stop()


def test_revoke_and_reissue(
    running: tuple[RunningServer, Pebble], capsys: pytest.CaptureFixture[str]
) -> None:
    server, ca = running
    wait_for(lambda: status(server).last_success is not None, "certificate issued", ca)
    first = installed(server)
    assert server.config.path is not None
    assert main(["--config", str(server.config.path), "acme", "revoke", "--reason", "superseded"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"acme: revoked the certificate with serial {first.serial_number:x} (superseded)\n")
    assert json.loads(ca.get(f"/cert-status-by-serial/{first.serial_number:x}"))["Status"] == "Revoked"
    # What SIGHUP does (the in-process server has no pid file for the command to find).
    server.loop.call_soon_threadsafe(server.server.reload_certificates)
    wait_for(lambda: installed(server).serial_number != first.serial_number, "new certificate", ca)
    wait_for(
        lambda: served_certificate(server, trusting(ca)) == installed(server), "new certificate served", ca
    )
    assert status(server).revoked_serial == first.serial_number  # kept: it names the revoked one


def test_with_workers_one_orders_and_every_worker_serves_the_certificate(tmp_path: Path) -> None:
    """`workers = 2`: worker 0 orders; the CA's HTTP-01 requests may reach either worker (they read
    the answers from data_dir); the SIGHUP worker 0 sends the supervisor reaches both workers."""
    http_port, imaps_port = free_port(), free_port()
    with pebble(tmp_path, http_port, HOSTNAMES) as ca:
        config = acme_config(
            tmp_path, ca.directory, ca.ca_file, http_port, HOSTNAMES, imaps_port=imaps_port, workers=2
        )
        assert config.path is not None
        with serving(config.path, imaps_port):
            files = AcmeFiles(config.data_dir)
            wait_for(lambda: files.read_status().last_success is not None, "certificate issued", ca)
            serial = installed(config).serial_number
            log = tmp_path / "server.log"
            wait_for(lambda: len(reloaded_pids(log.read_text())) == 2, "both workers reloaded", ca)
            # Many connections, spread by the kernel over both workers: each gets the new certificate.
            for _ in range(20):
                assert served_certificate(imaps_port, trusting(ca)).serial_number == serial
        text = log.read_text()
        assert text.count("acme.ordering") == 1  # one ACME client for the data_dir
        assert "reload.forwarded workers=2" in text


def reloaded_pids(log: str) -> set[str]:
    return {
        field.removeprefix("pid=")
        for line in log.splitlines()
        if "tls.reloaded" in line
        for field in line.split()
        if field.startswith("pid=")
    }
