"""The web listeners (issue 13) over real sockets: client autoconfiguration, Autodiscover, the MTA-STS
policy, the http redirect, /metrics after real mail traffic, and what https must not serve."""

from __future__ import annotations

import http.client
import imaplib
import smtplib
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import DOMAIN, PASSWORD, USER, RunningServer, dev_certificates, make_config, require_tool
from prometheus_client.parser import text_string_to_metric_families

from surat.config import Config
from surat.mailauth.mtasts import parse_policy, policy_id, published_policy
from surat.web import security
from surat.web.autoconfig import AUTODISCOVER_RESPONSE_NS, OUTLOOK_SCHEMA

HOSTNAME = "mail.example.test"
WEB = {"https": ["127.0.0.1:0"], "http": ["127.0.0.1:0"], "admin": ["127.0.0.1:0"]}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@pytest.fixture
def server_config(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """conftest's `server` with the web listeners as well."""
    dev_certificates(tmp_path_factory.getbasetemp())
    return make_config(tmp_path, listen=WEB)


def request(
    server: RunningServer,
    role: str,
    method: str,
    path: str,
    host: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to a web listener with the given Host header; https verifies the dev certificate
    (issued for mail.example.test, the name sent as SNI) whatever Host says."""
    port = server.port(role)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn: http.client.HTTPConnection
    if role == "https":
        conn = http.client.HTTPSConnection(HOSTNAME, port, timeout=10)
        conn.sock = server.client_tls().wrap_socket(raw, server_hostname=HOSTNAME)
    else:
        conn = http.client.HTTPConnection(HOSTNAME, port, timeout=10)
        conn.sock = raw
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------- Thunderbird


def _thunderbird(answer: Answer) -> ET.Element:
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "application/xml; charset=utf-8"
    root = ET.fromstring(answer.body)
    assert (root.tag, root.attrib) == ("clientConfig", {"version": "1.1"})
    return root


def test_thunderbird_autoconfig_field_by_field(server: RunningServer) -> None:
    root = _thunderbird(
        request(server, "https", "GET", f"/mail/config-v1.1.xml?emailaddress={USER}", f"autoconfig.{DOMAIN}")
    )
    (provider,) = root
    assert (provider.tag, provider.attrib) == ("emailProvider", {"id": DOMAIN})
    assert [(child.tag, child.text) for child in provider[:3]] == [
        ("domain", DOMAIN),
        ("displayName", DOMAIN),
        ("displayShortName", DOMAIN),
    ]
    servers = [
        (
            server.tag,
            server.attrib["type"],
            [(child.tag, child.text) for child in server],
        )
        for server in provider[3:]
    ]

    def fields(port: int, socket_type: str) -> list[tuple[str, str | None]]:
        return [
            ("hostname", HOSTNAME),
            ("port", str(port)),
            ("socketType", socket_type),
            ("authentication", "password-cleartext"),
            ("username", "%EMAILADDRESS%"),
        ]

    # The ports the listeners are bound to (port 0 in the config), implicit TLS first.
    assert servers == [
        ("incomingServer", "imap", fields(server.port("imaps"), "SSL")),
        ("incomingServer", "pop3", fields(server.port("pop3s"), "SSL")),
        ("outgoingServer", "smtp", fields(server.port("submissions"), "SSL")),
        ("outgoingServer", "smtp", fields(server.port("submission"), "STARTTLS")),
    ]


def test_thunderbird_well_known_on_the_domain_itself(server: RunningServer) -> None:
    answer = request(server, "https", "GET", "/.well-known/autoconfig/mail/config-v1.1.xml", DOMAIN)
    assert _thunderbird(answer).find("emailProvider/domain").text == DOMAIN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/mail/config-v1.1.xml?emailaddress=bob@other.test", f"autoconfig.{DOMAIN}"),  # not a local domain
        ("/mail/config-v1.1.xml?emailaddress=nobody", f"autoconfig.{DOMAIN}"),
        (f"/mail/config-v1.1.xml?emailaddress={USER}", "autoconfig.other.test"),  # not a host of ours
        ("/mail/config-v1.1.xml", "autoconfig.other.test"),
        ("/.well-known/autoconfig/mail/config-v1.1.xml", "other.test"),
    ],
)
def test_thunderbird_answers_only_for_local_domains(server: RunningServer, path: str, host: str) -> None:
    assert request(server, "https", "GET", path, host).status == 404


# ----------------------------------------------------------------------------------------- Autodiscover


def autodiscover_request(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{OUTLOOK_SCHEMA}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def test_autodiscover_pox_field_by_field(server: RunningServer) -> None:
    # An address with an XML special character, escaped in the request: echoed as the same address.
    address = f"o&amp;brien@{DOMAIN}"
    answer = request(
        server,
        "https",
        "POST",
        "/autodiscover/autodiscover.xml",
        f"autodiscover.{DOMAIN}",
        autodiscover_request(address),
        {"Content-Type": "text/xml"},
    )
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "application/xml; charset=utf-8"
    root = ET.fromstring(answer.body)
    r = f"{{{OUTLOOK_SCHEMA}}}"
    assert root.tag == f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{r}Response/{r}Account")
    assert account is not None
    assert [(c.tag, c.text) for c in account[:2]] == [
        (f"{r}AccountType", "email"),
        (f"{r}Action", "settings"),
    ]
    protocols = [{c.tag.removeprefix(r): c.text for c in protocol} for protocol in account[2:]]
    common = {
        "Server": HOSTNAME,
        "LoginName": f"o&brien@{DOMAIN}",
        "DomainRequired": "off",
        "SPA": "off",
        "SSL": "on",
        "AuthRequired": "on",
    }
    assert protocols == [
        {"Type": "IMAP", "Port": str(server.port("imaps")), **common},
        {"Type": "POP3", "Port": str(server.port("pop3s")), **common},
        {"Type": "SMTP", "Port": str(server.port("submissions")), **common},
    ]
    # Outlook's capitalisation of the path works too.
    again = request(
        server, "https", "POST", "/Autodiscover/Autodiscover.xml", HOSTNAME, autodiscover_request(USER)
    )
    assert again.status == 200 and f"<LoginName>{USER}</LoginName>".encode() in again.body


BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    "<Request><EMailAddress>&lol9;@example.test</EMailAddress></Request></Autodiscover>"
).encode()
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>"
)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (BOMB, 400, b"a DOCTYPE is not allowed"),
        (EXTERNAL, 400, b"a DOCTYPE is not allowed"),
        (b"<Autodiscover><Request><EMailAddress>a@example.test</EMailAddress>", 400, b"not well-formed"),
        (b"not xml at all", 400, b"not well-formed"),
        (b"<Autodiscover><Request></Request></Autodiscover>", 400, b"no EMailAddress"),
        (
            b"<Autodiscover><Request><EMailAddress>a b@x</EMailAddress></Request></Autodiscover>",
            400,
            b"not a mail",
        ),
        (
            autodiscover_request(USER).replace(
                b"outlook/responseschema/2006a", b"mobilesync/responseschema/2006"
            ),
            400,
            b"only the response schema",
        ),
        (autodiscover_request(USER) + b" " * 20000, 400, b"request too large"),
        (autodiscover_request(USER) + b" " * security.MAX_BODY, 413, b""),
        (autodiscover_request("bob@other.test"), 404, b""),
    ],
)
def test_autodiscover_refuses_bad_requests_cleanly(
    server: RunningServer, body: bytes, status: int, reason: bytes
) -> None:
    answer = request(
        server, "https", "POST", "/autodiscover/autodiscover.xml", f"autodiscover.{DOMAIN}", body
    )
    assert answer.status == status, answer
    assert reason in answer.body
    # and the server goes on serving
    assert (
        request(
            server, "https", "POST", "/autodiscover/autodiscover.xml", HOSTNAME, autodiscover_request(USER)
        ).status
        == 200
    )


# ----------------------------------------------------------------------------------------- MTA-STS


def test_mta_sts_policy_parses_strictly(server: RunningServer) -> None:
    answer = request(server, "https", "GET", "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"  # RFC 8461 §3.2
    policy = parse_policy(answer.text.encode())
    assert policy == published_policy("testing", 604800, HOSTNAME)
    assert answer.text == "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
    # The id `surat dns` publishes is this policy's.
    sts = server.config.mta_sts
    assert policy_id(policy) == policy_id(published_policy(sts.mode, sts.max_age, server.config.hostname))


@pytest.mark.parametrize("host", ["mta-sts.other.test", DOMAIN, HOSTNAME, f"autoconfig.{DOMAIN}", ""])
def test_mta_sts_policy_only_on_the_policy_host_of_a_local_domain(server: RunningServer, host: str) -> None:
    assert request(server, "https", "GET", "/.well-known/mta-sts.txt", host).status == 404


def test_mta_sts_mode_from_config(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    dev_certificates(tmp_path_factory.getbasetemp())
    running = RunningServer(
        make_config(
            tmp_path, listen={"https": ["127.0.0.1:0"]}, mta_sts={"mode": "enforce", "max_age": 86400}
        )
    )
    try:
        running.add_domain(DOMAIN)
        answer = request(running, "https", "GET", "/.well-known/mta-sts.txt", f"MTA-STS.{DOMAIN}.")
        assert parse_policy(answer.text.encode()) == published_policy("enforce", 86400, HOSTNAME)
    finally:
        running.stop()


# ----------------------------------------------------------------------------------------- http, headers


def test_http_redirects_to_https(server: RunningServer) -> None:
    answer = request(
        server, "http", "GET", "/mail/config-v1.1.xml?emailaddress=a@b&x=y%20z", f"autoconfig.{DOMAIN}"
    )
    assert answer.status == 301
    port = server.port("https")
    assert (
        answer.headers["Location"]
        == f"https://autoconfig.{DOMAIN}:{port}/mail/config-v1.1.xml?emailaddress=a@b&x=y%20z"
    )
    assert "Strict-Transport-Security" not in answer.headers  # RFC 6797 §7.2: never over plain HTTP
    post = request(server, "http", "POST", "/autodiscover/autodiscover.xml", "", b"x")
    assert (
        post.status == 301
        and post.headers["Location"] == f"https://{HOSTNAME}:{port}/autodiscover/autodiscover.xml"
    )


def test_acme_challenge_hook_answers_404_for_now(server: RunningServer) -> None:
    answer = request(server, "http", "GET", "/.well-known/acme-challenge/some-token", DOMAIN)
    assert (answer.status, answer.body) == (404, b"no such ACME challenge\n")


@pytest.mark.parametrize(
    "path", ["/metrics", "/", "/static/surat.css", "/admin", "/.well-known/acme-challenge/x"]
)
def test_nothing_of_admin_on_https(server: RunningServer, path: str) -> None:
    assert request(server, "https", "GET", path, HOSTNAME).status == 404
    assert request(server, "https", "GET", path, f"autoconfig.{DOMAIN}").status == 404


def test_security_headers(server: RunningServer) -> None:
    for role, path, host in (
        ("https", "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}"),
        ("https", "/nothing", HOSTNAME),  # errors too
        ("admin", "/", "127.0.0.1"),
        ("http", "/", DOMAIN),
    ):
        headers = request(server, role, "GET", path, host).headers
        assert headers["Content-Security-Policy"] == security.CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert (headers["Strict-Transport-Security"] is not None) == (role == "https")


def test_admin_console_asks_for_a_login_and_serves_its_style_sheet(server: RunningServer) -> None:
    # The pages themselves: tests/integration/test_web_admin.py
    answer = request(server, "admin", "GET", "/", "127.0.0.1")
    assert (answer.status, answer.headers["Location"]) == (303, "/login")
    login = request(server, "admin", "GET", "/login", "127.0.0.1")
    assert login.status == 200 and login.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<script" not in login.text
    css = request(server, "admin", "GET", "/static/surat.css", "127.0.0.1")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")


def test_a_slow_request_head_is_cut_off(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is aiohttp's keep-alive timer, which also runs before the first request; shortened here
    # so that the test does not wait the real 30 seconds.
    monkeypatch.setattr(security, "KEEPALIVE_TIMEOUT", 1.0)
    dev_certificates(tmp_path_factory.getbasetemp())
    running = RunningServer(make_config(tmp_path, listen={"admin": ["127.0.0.1:0"]}))
    try:
        with socket.create_connection(("127.0.0.1", running.port("admin")), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
            started = time.monotonic()
            assert sock.recv(100) == b""  # closed by the server, without an answer
            assert time.monotonic() - started < 5
    finally:
        running.stop()


# ----------------------------------------------------------------------------------------- /metrics


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = request(server, "admin", "GET", "/metrics", "127.0.0.1")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_after_real_traffic(server: RunningServer) -> None:
    before = scrape(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    message = EmailMessage()
    message["From"] = "sender@remote.example"
    message["To"] = USER
    message["Subject"] = "metrics"
    message.set_content("counted")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        smtp.send_message(message)
        # a refused transaction: 550 for an unknown local user is at RCPT; 5xx at DATA needs a rejected body
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10) as smtp:
        smtp.starttls(context=server.client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(USER, "wrong password")
        smtp.login(USER, PASSWORD)
    with imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10
    ) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(USER, "wrong password")
        imap.login(USER, PASSWORD)
        imap.select("INBOX")
        imap.fetch("1", "(FLAGS)")
        imap.logout()
    after = scrape(server)

    assert delta("surat_connections_total", listener="smtp", result="accepted") == 1
    assert delta("surat_connections_total", listener="imaps", result="accepted") == 1
    assert delta("surat_smtp_transactions_total", role="smtp", reply="2xx") == 1
    assert delta("surat_deliveries_total", kind="local", result="delivered") == 1
    assert delta("surat_auth_attempts_total", protocol="submission", result="failed") >= 1
    assert delta("surat_auth_attempts_total", protocol="submission", result="ok") == 1
    assert delta("surat_auth_attempts_total", protocol="imap", result="failed") == 1
    assert delta("surat_auth_attempts_total", protocol="imap", result="ok") == 1
    for command in ("LOGIN", "SELECT", "FETCH", "LOGOUT"):
        assert delta("surat_imap_command_duration_seconds_count", command=command) >= 1, command
    assert delta("surat_imap_command_duration_seconds_count", command="LOGIN") == 2
    # mail_auth is on in these tests: the fake resolver answers NXDOMAIN, so SPF finds no record.
    assert delta("surat_mail_auth_results_total", method="spf", result="none") == 1
    assert delta("surat_mail_auth_results_total", method="dmarc", result="none") == 1
    assert delta("surat_http_requests_total", listener="admin", status="2xx") == 1  # the first scrape
    # read from the store at scrape time
    assert after[("surat_queue_messages", ())] == 0
    assert after[("surat_queue_oldest_age_seconds", ())] == 0
    assert after[("surat_blocked_clients", ())] == 0
    # No per-user labels anywhere.
    assert not [key for key in after if any(USER in value for _, value in key[1])]


def test_metrics_read_the_queue_and_blocks_at_scrape_time(server: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10) as smtp:
        smtp.starttls(context=server.client_tls())
        smtp.login(USER, PASSWORD)
        smtp.sendmail(
            USER, ["someone@remote.example"], b"From: " + USER.encode() + b"\r\nSubject: q\r\n\r\nx\r\n"
        )
    for _ in range(server.config.limits.auth_max_failures):
        with (
            imaplib.IMAP4_SSL(
                "127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10
            ) as imap,
            pytest.raises(imaplib.IMAP4.error),
        ):
            imap.login(USER, "wrong password")
    samples = scrape(server)
    assert samples[("surat_queue_messages", ())] == 1
    assert 0 < samples[("surat_queue_oldest_age_seconds", ())] < 60
    assert samples[("surat_blocked_clients", ())] == 1


# ----------------------------------------------------------------------------------------- curl


def test_curl_fetches_the_policy(server: RunningServer) -> None:
    curl = require_tool("curl")
    port = server.port("https")
    result = subprocess.run(
        [curl, "-sS", "--cacert", str(server.ca_file), "--resolve", f"{HOSTNAME}:{port}:127.0.0.1",
         "-H", f"Host: mta-sts.{DOMAIN}", f"https://{HOSTNAME}:{port}/.well-known/mta-sts.txt"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    assert parse_policy(result.stdout) == published_policy("testing", 604800, HOSTNAME)
