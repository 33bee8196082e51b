"""Outbound transport security end to end (issue 15): server A relays to remote.test through the
production resolver (dnspython) querying a DNS server on 127.0.0.1, fetches remote.test's MTA-STS
policy from an HTTPS server on 127.0.0.1 with a test CA, and delivers to server B (remote.test's MX)
with STARTTLS, whose certificate names mta-sts.remote.test and mx.remote.test only."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROLES, RunningServer, inbox, queue
from dns_server import DNSServer
from test_relay import ALICE, BOB, Peer, fast_delivery, peer_config, remote_peer, submit, wait_for

from surat.app import SuratServer
from surat.certs import CertificatePaths, write_dev_certificates
from surat.config import parse_config
from surat.delivery.stspolicies import StsPolicies
from surat.delivery.tlspolicy import TlsFailure, TlsPolicy
from surat.dns.fake import FakeResolver
from surat.dns.resolver import DnsResolver
from surat.mailauth.mtasts import StsMode
from surat.store.base import RecipientState
from surat.store.sqlite import SQLiteStore

ENFORCE = "version: STSv1\nmode: enforce\nmx: *.remote.test\nmax_age: 86400\n"


@pytest.fixture(scope="module")
def sts_tls(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    """A CA and a certificate for the policy host and the good MX host (not for other.remote.test)."""
    return write_dev_certificates(
        tmp_path_factory.mktemp("sts-tls"), ["mta-sts.remote.test", "mx.remote.test"]
    )


class PolicyServer:
    """HTTPS on 127.0.0.1 answering every GET with `status`, `content_type` and `body`."""

    def __init__(self, tls: CertificatePaths) -> None:
        self.status = 200
        self.content_type = "text/plain"
        self.body = ENFORCE.encode()
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(owner.body)))
                if 300 <= owner.status < 400:
                    self.send_header("Location", "https://mta-sts.remote.test/elsewhere")
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-https", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def policy_server(sts_tls: CertificatePaths) -> Iterator[PolicyServer]:
    server = PolicyServer(sts_tls)
    try:
        yield server
    finally:
        server.close()


def dns_records(
    mx_host: str = "mx.remote.test", sts_id: str | None = "one"
) -> dict[tuple[str, str], list[str]]:
    records = {
        ("remote.test.", "MX"): [f"10 {mx_host}."],
        (f"{mx_host}.", "A"): ["127.0.0.1"],
        (f"{mx_host}.", "AAAA"): [],
        ("mta-sts.remote.test.", "A"): ["127.0.0.1"],
        ("mta-sts.remote.test.", "AAAA"): [],
    }
    if sts_id is not None:
        records[("_mta-sts.remote.test.", "TXT")] = [f'"v=STSv1; id={sts_id};"']
    return records


DNSFactory = Callable[[dict[tuple[str, str], list[str]]], DNSServer]


@pytest.fixture
def make_dns() -> Iterator[DNSFactory]:
    """DNS servers on 127.0.0.1 with the records given, all closed at the end of the test."""
    servers: list[DNSServer] = []

    def make(records: dict[tuple[str, str], list[str]]) -> DNSServer:
        servers.append(DNSServer(records))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def dns_server(make_dns: DNSFactory) -> DNSServer:
    return make_dns(dns_records())


@pytest.fixture
def mx(tmp_path: Path, sts_tls: CertificatePaths) -> Iterator[Peer]:
    """Server B, remote.test's MX, with the certificate for mx.remote.test."""
    tls = {"cert": str(sts_tls.cert), "key": str(sts_tls.key), "ca": str(sts_tls.ca)}
    with remote_peer(peer_config(tmp_path / "b", "mx.remote.test", tls=tls)) as running:
        yield running


@pytest.fixture
def mx_without_tls(tmp_path: Path) -> Iterator[Peer]:
    """Server B without a certificate: no STARTTLS in its EHLO reply (what a stripping attacker shows)."""
    config = parse_config(
        {
            "hostname": "mx.remote.test",
            "data_dir": "data",
            "listen": {role: ["127.0.0.1:0"] if role == "smtp" else [] for role in ROLES},
            "limits": {"greet_pause": 0},
        },
        base_dir=tmp_path / "b-plain",
    )
    with remote_peer(config) as running:
        yield running


class Reports:
    """A TlsReporter that keeps what it is told."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str, str, str]] = []
        self.successes: list[tuple[str, str]] = []

    def failure(self, domain: str, policy: TlsPolicy, failure: TlsFailure) -> None:
        self.failures.append((domain, failure.host, failure.result_type, failure.detail))

    def success(self, domain: str, policy: TlsPolicy, host: str) -> None:
        self.successes.append((domain, host))


class Sender(RunningServer):
    """Server A: real DNS through the test's DNS server, MX hosts on `mx_port`, the test CA trusted."""

    def __init__(
        self,
        base: Path,
        dns_port: int,
        mx_port: int,
        https_port: int,
        ca: Path,
        dnssec_trusted: bool = False,
        **delivery: Any,
    ) -> None:
        self.config = peer_config(
            base,
            "mail.example.test",
            dns={"nameservers": [f"127.0.0.1:{dns_port}"], "dnssec_trusted": dnssec_trusted},
            delivery=fast_delivery({}, allow_private_destinations=True, **delivery),
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="surat-sts-sender", daemon=True)
        self._thread.start()
        self.resolver = DnsResolver(self.config.dns.nameservers, timeout=2.0)
        self.server = SuratServer(self.config, resolver=self.resolver)
        self.call(self.server.start())
        runner = self.server.queue
        assert runner is not None
        self.reports = Reports()
        # Production: port 25 and 443 and the system's trust store; here the test's ports and CA.
        runner.settings = dataclasses.replace(runner.settings, mx_port=mx_port)
        runner.verify_tls_context = ssl.create_default_context(cafile=str(ca))
        runner.sts_policies = StsPolicies(
            self.store, self.resolver, runner.verify_tls_context, port=https_port, allow_private=True
        )
        runner.tls_reporter = self.reports
        self.add_domain("example.test")
        self.add_user(ALICE)


def start_sender(
    tmp_path: Path, dns: DNSServer, mx: Peer, policy: PolicyServer, sts_tls: CertificatePaths, **delivery: Any
) -> Sender:
    assert sts_tls.ca is not None
    return Sender(tmp_path / "a", dns.port, mx.port("smtp"), policy.port, sts_tls.ca, **delivery)


def submit_and_wait(
    tmp_path: Path,
    dns: DNSServer,
    mx: Peer,
    policy: PolicyServer,
    sts_tls: CertificatePaths,
    extra: dict[str, str] | None = None,
    **delivery: Any,
) -> tuple[Sender, str | None]:
    """Start A, submit a message to bob@remote.test (with `extra` header fields) and wait until it is
    delivered (None) or deferred (the reply it waits with); A is stopped again."""
    sender = start_sender(tmp_path, dns, mx, policy, sts_tls, **delivery)
    try:
        submit(sender, [BOB], extra=extra)

        def settled() -> tuple[str | None] | None:
            if inbox(mx, BOB) and not queue(sender):
                return (None,)
            for entry in queue(sender):
                if entry.attempts and entry.recipients[0].last_reply:
                    assert entry.recipients[0].state is RecipientState.PENDING
                    return (str(entry.recipients[0].last_reply),)
            return None

        (reply,) = wait_for(settled)
    finally:
        sender.stop()
    return sender, reply


def test_enforce_with_matching_mx_and_certificate_delivers(
    tmp_path: Path, dns_server: DNSServer, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    sender = start_sender(tmp_path, dns_server, mx, policy_server, sts_tls)
    try:
        submit(sender, [BOB])
        wait_for(lambda: inbox(mx, BOB))
        wait_for(lambda: not queue(sender))
        cached = sender.call(sender.store.get_sts_policy("remote.test"))
    finally:
        sender.stop()
    assert policy_server.paths == ["/.well-known/mta-sts.txt"]
    assert ("_mta-sts.remote.test.", "TXT") in dns_server.queries
    assert sender.reports.successes == [("remote.test", "mx.remote.test")]
    assert sender.reports.failures == []
    assert cached is not None and cached.policy_id == "one" and cached.policy == ENFORCE


def test_enforce_with_a_certificate_for_another_name_defers(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    # other.remote.test matches the policy's *.remote.test, but B's certificate does not name it.
    dns = make_dns(dns_records(mx_host="other.remote.test"))
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls)
    assert reply is not None and reply.startswith(
        "451 4.7.5 MTA-STS policy (enforce) of remote.test not satisfied by other.remote.test[127.0.0.1]:"
    )
    assert "certificate verify failed: Hostname mismatch" in reply
    assert inbox(mx, BOB) == []
    assert [f[:3] for f in sender.reports.failures][:1] == [
        ("remote.test", "other.remote.test", "certificate-host-mismatch")
    ]


def test_enforce_with_an_mx_the_policy_does_not_name_defers(
    tmp_path: Path, dns_server: DNSServer, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    policy_server.body = b"version: STSv1\nmode: enforce\nmx: mail.remote.test\nmax_age: 86400\n"
    _, reply = submit_and_wait(tmp_path, dns_server, mx, policy_server, sts_tls)
    assert reply == (
        "451 4.7.5 MTA-STS policy (enforce) of remote.test not satisfied by mx.remote.test:"
        " MX host not listed in the policy"
    )
    assert inbox(mx, BOB) == []


def test_enforce_with_a_peer_without_starttls_defers(
    tmp_path: Path,
    dns_server: DNSServer,
    mx_without_tls: Peer,
    policy_server: PolicyServer,
    sts_tls: CertificatePaths,
) -> None:
    sender, reply = submit_and_wait(tmp_path, dns_server, mx_without_tls, policy_server, sts_tls)
    assert reply == (
        "451 4.7.5 MTA-STS policy (enforce) of remote.test not satisfied by mx.remote.test[127.0.0.1]:"
        f"{mx_without_tls.port('smtp')}: TLS required but not offered by the server"
    )
    assert inbox(mx_without_tls, BOB) == []
    assert [f[2] for f in sender.reports.failures][:1] == ["starttls-not-supported"]


def test_testing_mode_delivers_and_records_the_failure(
    tmp_path: Path, make_dns: DNSFactory, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    policy_server.body = ENFORCE.replace("enforce", "testing").encode()
    dns = make_dns(dns_records(mx_host="other.remote.test"))
    sender, reply = submit_and_wait(tmp_path, dns, mx, policy_server, sts_tls)
    assert reply is None  # delivered
    assert [f[:3] for f in sender.reports.failures] == [
        ("remote.test", "other.remote.test", "certificate-host-mismatch")
    ]


@pytest.mark.parametrize("mx_host", ["other.remote.test", "mx.remote.test"])
def test_require_tls_domains_without_mta_sts(
    tmp_path: Path,
    make_dns: DNSFactory,
    mx: Peer,
    policy_server: PolicyServer,
    sts_tls: CertificatePaths,
    mx_host: str,
) -> None:
    # No _mta-sts record: the static policy applies; the certificate names mx.remote.test only.
    dns = make_dns(dns_records(mx_host=mx_host, sts_id=None))
    sender, reply = submit_and_wait(
        tmp_path, dns, mx, policy_server, sts_tls, require_tls_domains=["remote.test"]
    )
    if mx_host == "mx.remote.test":
        assert reply is None
        assert sender.reports.successes == [("remote.test", "mx.remote.test")]
    else:
        assert reply is not None and reply.startswith(
            "451 4.7.5 require_tls_domains (remote.test) not satisfied by other.remote.test[127.0.0.1]:"
        )
        assert "certificate verify failed: Hostname mismatch" in reply
        assert inbox(mx, BOB) == []
    assert policy_server.paths == []


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (302, "text/plain", ENFORCE.encode()),  # RFC 8461 §3.3: no redirects
        (200, "text/html", ENFORCE.encode()),  # text/plain only
        (200, "text/plain", ENFORCE.encode() + b"x: " + b"y" * 70_000 + b"\n"),  # over 64 KiB
        (200, "text/plain", b"version: STSv1\nmode: enforce\n"),  # malformed
        (404, "text/plain", b""),
    ],
)
async def test_a_policy_that_cannot_be_used_is_no_policy(
    tmp_path: Path,
    policy_server: PolicyServer,
    sts_tls: CertificatePaths,
    status: int,
    content_type: str,
    body: bytes,
) -> None:
    policy_server.status, policy_server.content_type, policy_server.body = status, content_type, body
    resolver = FakeResolver(
        {
            ("_mta-sts.remote.test", "TXT"): ["v=STSv1; id=one;"],
            ("mta-sts.remote.test", "A"): ["127.0.0.1"],
        }
    )
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        policies = StsPolicies(
            store,
            resolver,
            ssl.create_default_context(cafile=str(sts_tls.ca)),
            port=policy_server.port,
            allow_private=True,
        )
        assert await policies.policy_for("remote.test") is None
        assert await store.get_sts_policy("remote.test") is None
    finally:
        await store.close()
    assert policy_server.paths == ["/.well-known/mta-sts.txt"]


async def test_untrusted_policy_certificate_is_no_policy(
    tmp_path: Path, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    resolver = FakeResolver(
        {("_mta-sts.remote.test", "TXT"): ["v=STSv1; id=one;"], ("mta-sts.remote.test", "A"): ["127.0.0.1"]}
    )
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        # The system's trust store does not know the test CA.
        policies = StsPolicies(
            store, resolver, ssl.create_default_context(), port=policy_server.port, allow_private=True
        )
        assert await policies.policy_for("remote.test") is None
    finally:
        await store.close()


async def test_cached_policy_is_kept_across_restarts_and_lookup_failures(
    tmp_path: Path, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    """RFC 8461 §5.1: same id -> no refetch; TXT gone or fetch failing -> the cached policy until it
    expires; a new id -> refetch."""
    now = [1_000_000.0]
    context = ssl.create_default_context(cafile=str(sts_tls.ca))
    resolver = FakeResolver(
        {("_mta-sts.remote.test", "TXT"): ["v=STSv1; id=one;"], ("mta-sts.remote.test", "A"): ["127.0.0.1"]}
    )

    async def policy_after_restart() -> Any:
        store = SQLiteStore(tmp_path / "data")
        await store.open()
        try:
            policies = StsPolicies(
                store, resolver, context, port=policy_server.port, allow_private=True, clock=lambda: now[0]
            )
            return await policies.policy_for("remote.test")
        finally:
            await store.close()

    first = await policy_after_restart()
    assert first is not None and first.mode is StsMode.ENFORCE
    assert len(policy_server.paths) == 1
    assert await policy_after_restart() == first  # same id: from the cache
    assert len(policy_server.paths) == 1
    resolver.set("_mta-sts.remote.test", "TXT", [])  # the record disappears (or is stripped)
    policy_server.status = 500
    assert await policy_after_restart() == first
    resolver.set("_mta-sts.remote.test", "TXT", ["v=STSv1; id=two;"])  # new id, fetch fails
    assert await policy_after_restart() == first
    assert len(policy_server.paths) == 2
    policy_server.status = 200
    policy_server.body = ENFORCE.replace("enforce", "testing").encode()
    second = await policy_after_restart()  # new id, fetch works
    assert second is not None and second.mode is StsMode.TESTING
    now[0] += 86401  # past max_age, and the record gone: no policy
    resolver.set("_mta-sts.remote.test", "TXT", [])
    assert await policy_after_restart() is None


@pytest.mark.parametrize("require_tls_domains", [[], ["remote.test"]])
def test_tls_required_no_waives_the_recipient_policy_only(
    tmp_path: Path,
    make_dns: DNSFactory,
    mx: Peer,
    policy_server: PolicyServer,
    sts_tls: CertificatePaths,
    require_tls_domains: list[str],
) -> None:
    """RFC 8689 §5: "TLS-Required: No" delivers despite the domain's MTA-STS policy (the failure is
    still reported); our own require_tls_domains is not the recipient's policy and still holds."""
    sts_id = None if require_tls_domains else "one"
    dns = make_dns(dns_records(mx_host="other.remote.test", sts_id=sts_id))
    sender, reply = submit_and_wait(
        tmp_path,
        dns,
        mx,
        policy_server,
        sts_tls,
        extra={"TLS-Required": "No"},
        require_tls_domains=require_tls_domains,
    )
    assert [f[2] for f in sender.reports.failures][:1] == ["certificate-host-mismatch"]
    if require_tls_domains:
        assert reply is not None and "require_tls_domains (remote.test) not satisfied" in reply
    else:
        assert reply is None
        (received,) = inbox(mx, BOB)
        assert b"TLS-Required: No" in received
