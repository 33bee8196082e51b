"""Abuse protection on a real server: shared auth-failure limiter, sending limits, connection limits,
early talkers, directory harvesting and EHLO syntax.

127.0.0.2 serves as a second client address (the whole of 127.0.0.0/8 is loopback on Linux): the client
socket is bound to it, the server sees it as another peer.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DOMAIN, PASSWORD, USER, RunningServer, dev_certificates, make_config, read_line

import surat.smtpd.service as smtpd_service
from surat.dns.base import DNSErrorKind
from surat.dns.fake import FakeResolver
from surat.smtpd.dnsbl import listing_zone, query_name
from surat.smtpd.service import valid_helo

OTHER_IP = "127.0.0.2"


def start(
    tmp_path: Path, factory: pytest.TempPathFactory, resolver: FakeResolver | None = None, **limits: Any
) -> RunningServer:
    dev_certificates(factory.getbasetemp())
    config = make_config(tmp_path, limits={"greet_pause": 0, **limits})
    running = RunningServer(config, resolver=resolver)
    running.add_domain(DOMAIN)
    running.add_user(USER)
    return running


@pytest.fixture
def server(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start(tmp_path, tmp_path_factory, auth_max_failures=5)
    try:
        yield running
    finally:
        running.stop()


def tls(server: RunningServer) -> ssl.SSLContext:
    context = server.client_tls()
    context.check_hostname = False
    return context


def connect(server: RunningServer, role: str, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port(role)), timeout=10, source_address=(source, 0))


class IMAPFrom(imaplib.IMAP4_SSL):
    """IMAP over implicit TLS from a chosen source address."""

    def __init__(self, server: RunningServer, source: str) -> None:
        self._source = source
        super().__init__("127.0.0.1", server.port("imaps"), ssl_context=tls(server), timeout=10)

    def _create_socket(self, timeout: float | None) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class POP3From(poplib.POP3_SSL):
    def __init__(self, server: RunningServer, source: str) -> None:
        self._source = source
        self._tls = tls(server)
        super().__init__("127.0.0.1", server.port("pop3s"), context=self._tls, timeout=10)

    def _create_socket(self, timeout: float) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self._tls.wrap_socket(sock, server_hostname=self.host)


class SMTPFrom(smtplib.SMTP_SSL):
    def __init__(self, server: RunningServer, source: str) -> None:
        super().__init__(
            "127.0.0.1",
            server.port("submissions"),
            local_hostname="client.example",
            context=tls(server),
            timeout=10,
            source_address=(source, 0),
        )


def imap_login(server: RunningServer, source: str, password: str) -> tuple[str, bytes]:
    client = IMAPFrom(server, source)
    try:
        typ, data = client.login(USER, password)
        return typ, b" ".join(item for item in data if isinstance(item, bytes))
    except imaplib.IMAP4.error as exc:  # a NO: the text holds the response code
        return "NO", str(exc).encode()
    finally:
        client.shutdown()


def pop3_login(server: RunningServer, source: str, password: str) -> bytes:
    client = POP3From(server, source)
    try:
        client.user(USER)
        return client.pass_(password)
    except poplib.error_proto as exc:
        return bytes(exc.args[0])
    finally:
        client.close()


def smtp_login(server: RunningServer, source: str, password: str) -> tuple[int, bytes]:
    with SMTPFrom(server, source) as client:
        client.ehlo()
        client.user, client.password = USER, password
        try:
            # one attempt (smtplib's login() would try the next mechanism after a failure)
            return client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            error = exc.smtp_error
            return exc.smtp_code, error if isinstance(error, bytes) else error.encode()


def test_brute_force_from_one_ip_is_blocked_on_every_protocol_not_for_the_user_elsewhere(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="surat.authlimit"):
        # Five failures from 127.0.0.1, spread over the three protocols: they count together.
        assert imap_login(server, "127.0.0.1", "wrong 1")[0] == "NO"
        assert imap_login(server, "127.0.0.1", "wrong 2")[0] == "NO"
        assert pop3_login(server, "127.0.0.1", "wrong 3").startswith(b"-ERR [AUTH]")
        assert smtp_login(server, "127.0.0.1", "wrong 4")[0] == 535
        assert smtp_login(server, "127.0.0.1", "wrong 5")[0] == 535

    # Now even the right password is refused from 127.0.0.1, before it is checked ...
    code, text = smtp_login(server, "127.0.0.1", PASSWORD)
    assert (code, text[:5]) == (454, b"4.7.0")
    typ, text = imap_login(server, "127.0.0.1", PASSWORD)
    assert typ == "NO" and b"[UNAVAILABLE]" in text
    assert pop3_login(server, "127.0.0.1", PASSWORD).startswith(b"-ERR [SYS/TEMP]")

    # ... while the account's owner logs in from another address on all three.
    assert imap_login(server, OTHER_IP, PASSWORD)[0] == "OK"
    assert pop3_login(server, OTHER_IP, PASSWORD).startswith(b"+OK")
    assert smtp_login(server, OTHER_IP, PASSWORD)[0] == 235

    failed = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "auth.failed"]
    assert [(f["ip"], f["user"], f["service"]) for f in failed] == [
        ("127.0.0.1", USER, "imap"),
        ("127.0.0.1", USER, "imap"),
        ("127.0.0.1", USER, "pop3"),
        ("127.0.0.1", USER, "submissions"),
        ("127.0.0.1", USER, "submissions"),
    ]
    assert [r.__dict__["kv"]["ip"] for r in caplog.records if r.getMessage() == "auth.blocked"] == [
        "127.0.0.1"
    ]
    assert not any("wrong" in r.getMessage() or "wrong" in str(r.__dict__.get("kv")) for r in caplog.records)


def test_smtplib_login_with_a_wrong_password_counts_as_one_failure(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # smtplib.login tries PLAIN, then LOGIN, in one session: one guess, so one failure for the block.
    with caplog.at_level("INFO", logger="surat.authlimit"):
        for attempt in range(4):
            with (
                smtplib.SMTP_SSL(
                    "127.0.0.1", server.port("submissions"), context=tls(server), timeout=10
                ) as client,
                pytest.raises(smtplib.SMTPAuthenticationError),
            ):
                client.login(USER, f"wrong {attempt}")
    failed = [r.__dict__["kv"] for r in caplog.records if r.getMessage() == "auth.failed"]
    assert len(failed) == 4
    # Four failures of a limit of five: the right password still works from this address.
    assert smtp_login(server, "127.0.0.1", PASSWORD)[0] == 235


def submit(client: smtplib.SMTP, rcpts: list[str]) -> None:
    client.sendmail(USER, rcpts, f"From: {USER}\r\nTo: {USER}\r\nSubject: hi\r\n\r\nhello\r\n")


def submission(server: RunningServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port("submission"), local_hostname="client.example", timeout=10)
    client.starttls(context=tls(server))
    client.ehlo()
    client.login(USER, PASSWORD)
    return client


def test_messages_per_hour(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start(tmp_path, tmp_path_factory, messages_per_hour=2)
    try:
        with submission(running) as client:
            submit(client, [USER])
            submit(client, [USER])
            with pytest.raises(smtplib.SMTPSenderRefused) as info:
                submit(client, [USER])
        assert info.value.smtp_code == 451
        assert info.value.smtp_error.startswith(b"4.7.1")
        # a new session does not reset it
        with submission(running) as client:
            code, _ = client.mail(USER)
            assert code == 451
    finally:
        running.stop()


def test_recipients_per_hour(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start(tmp_path, tmp_path_factory, recipients_per_hour=3)
    running.add_user("bob@example.test")
    try:
        with submission(running) as client:
            submit(client, [USER, "bob@example.test"])
            assert client.mail(USER)[0] == 250
            assert client.rcpt(USER)[0] == 250
            code, text = client.rcpt("bob@example.test")
            assert (code, text[:5]) == (451, b"4.7.1")
    finally:
        running.stop()


def test_connection_limit_per_ip_on_smtp_imap_pop3(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start(tmp_path, tmp_path_factory, connections_per_ip=2)
    held: list[socket.socket] = []
    try:
        for role, greeting, refusal in (
            ("smtp", b"220 ", b"421 4.7.0"),
            ("imap", b"* OK", b"* BYE"),
            ("pop3", b"+OK", b"-ERR [SYS/TEMP]"),
        ):
            for _ in range(2):
                sock = connect(running, role)
                held.append(sock)
                assert read_line(sock).startswith(greeting)
            third = connect(running, role)
            assert read_line(third).startswith(refusal)
            assert third.recv(100) == b""  # and closed
            third.close()
            # the limit is per address: another client is still served
            other = connect(running, role, OTHER_IP)
            assert read_line(other).startswith(greeting)
            other.close()
    finally:
        for sock in held:
            sock.close()
        running.stop()


def test_early_talker_is_rejected(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loopback clients are exempt from the pause; make this one look like it comes from outside.
    monkeypatch.setattr(smtpd_service, "_is_loopback", lambda address: False)
    running = start(tmp_path, tmp_path_factory, greet_pause=0.3)
    try:
        impatient = connect(running, "smtp")
        impatient.sendall(b"EHLO spammer.example\r\n")
        assert read_line(impatient).startswith(b"554 5.5.0")
        assert impatient.recv(100) == b""
        impatient.close()
        # a client that waits gets the greeting after the pause
        patient = connect(running, "smtp", OTHER_IP)
        started = time.monotonic()
        assert read_line(patient).startswith(b"220 ")
        assert time.monotonic() - started >= 0.25
        patient.close()
        # and, having passed once, is greeted at once next time (postscreen-like cache)
        again = connect(running, "smtp", OTHER_IP)
        started = time.monotonic()
        assert read_line(again).startswith(b"220 ")
        assert time.monotonic() - started < 0.25
        again.close()
        # the early talker did not pass: it still waits
        retry = connect(running, "smtp")
        started = time.monotonic()
        assert read_line(retry).startswith(b"220 ")
        assert time.monotonic() - started >= 0.25
        retry.close()
    finally:
        running.stop()


def test_loopback_clients_are_greeted_without_pause(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start(tmp_path, tmp_path_factory, greet_pause=2)
    try:
        client = connect(running, "smtp")
        started = time.monotonic()
        assert read_line(client).startswith(b"220 ")
        assert time.monotonic() - started < 1
        client.close()
    finally:
        running.stop()


def test_directory_harvesting_ends_the_session(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start(tmp_path, tmp_path_factory, unknown_recipients=3)
    try:
        with smtplib.SMTP(
            "127.0.0.1", running.port("smtp"), local_hostname="client.example", timeout=10
        ) as c:
            c.ehlo()
            assert c.mail("x@remote.example")[0] == 250
            assert c.rcpt("nobody1@example.test")[0] == 550
            assert c.rcpt(USER)[0] == 250  # known users do not reset the count
            assert c.rcpt("nobody2@example.test")[0] == 550
            code, text = c.rcpt("nobody3@example.test")
            assert (code, text[:5]) == (421, b"4.7.0")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                c.noop()
    finally:
        running.stop()


def test_invalid_ehlo_is_refused(server: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as c:
        assert c.ehlo("-bad-.example")[0] == 501
        assert c.ehlo("a..b")[0] == 501
        assert c.ehlo("[1.2.3]")[0] == 501
        assert c.ehlo("client.example")[0] == 250


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("mail.example.com", True),
        ("localhost", True),
        ("mail.example.com.", True),
        ("WIN_PC.local", True),  # "_" is wrong but common
        ("bücher.example", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("", False),
        (".", False),
        ("a..b", False),
        ("-a.example", False),
        ("a-.example", False),
        ("a" * 64 + ".example", False),
        ("exa mple", False),
        ("[192.0.2.256]", False),
        ("[IPv6:2001:db8::g]", False),
        ("[2001:db8::1]", False),
        ("mail@example.com", False),
    ],
)
def test_valid_helo(name: str, ok: bool) -> None:
    assert valid_helo(name) is ok


def test_dnsbl_listed_client_is_refused(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    resolver = FakeResolver(
        {
            ("1.0.0.127.bl.example", "A"): ["127.0.0.2"],  # 127.0.0.1 is listed
            ("2.0.0.127.broken.example", "A"): DNSErrorKind.TEMPORARY,
        }
    )
    running = start(
        tmp_path, tmp_path_factory, resolver=resolver, dnsbl=["broken.example", "other.example", "bl.example"]
    )
    try:
        listed = connect(running, "smtp")
        assert (
            read_line(listed)
            == b"554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.example\r\n"
        )
        assert listed.recv(100) == b""
        listed.close()
        # not listed anywhere (and one list failing) is no reason to refuse
        clean = connect(running, "smtp", OTHER_IP)
        assert read_line(clean).startswith(b"220 ")
        clean.close()
        # submission is not screened
        submitter = connect(running, "submission")
        assert read_line(submitter).startswith(b"220 ")
        submitter.close()
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.99", "99.2.0.192.bl.example"),
        ("::ffff:192.0.2.99", "99.2.0.192.bl.example"),
        (
            "2001:db8:1:2:3:4:567:89ab",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example",
        ),
        ("unknown", None),
    ],
)
def test_dnsbl_query_name(ip: str, name: str | None) -> None:
    # RFC 5782 §2.1 and §2.4 examples
    assert query_name(ip, "bl.example") == name


@pytest.mark.parametrize(
    ("answer", "listed"),
    [
        (["127.0.0.2"], True),
        (["127.0.0.10", "127.0.0.4"], True),
        (["127.255.255.254"], False),
        (["10.0.0.1"], False),
    ],
)
async def test_dnsbl_answers(answer: list[str], listed: bool) -> None:
    resolver = FakeResolver({("99.2.0.192.bl.example", "A"): answer})
    zone = await listing_zone(resolver, "192.0.2.99", ["bl.example"])
    assert zone == ("bl.example" if listed else None)
