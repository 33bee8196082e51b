"""The HAProxy PROXY protocol on every listener, over real sockets: from `[proxy] trusted` the header is
required and its client address replaces the socket's (logs, Received:, per-IP limits, login-failure
blocks); from anyone else a header is just a bad command."""

from __future__ import annotations

import imaplib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DOMAIN,
    PASSWORD,
    USER,
    RunningServer,
    dev_certificates,
    inbox,
    make_config,
    read_line,
)

from surat.net import proxyheader
from surat.proto.proxy import V2_SIGNATURE

CLIENT_V4 = "203.0.113.7"
CLIENT_V6 = "2001:db8::77"


def start(
    tmp_path: Path, factory: pytest.TempPathFactory, trusted: list[str], **limits: Any
) -> RunningServer:
    dev_certificates(factory.getbasetemp())
    config = make_config(tmp_path, proxy={"trusted": trusted}, limits={"greet_pause": 0, **limits})
    running = RunningServer(config)
    running.add_domain(DOMAIN)
    running.add_user(USER)
    return running


@pytest.fixture
def proxied(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server behind a load balancer on 127.0.0.1 (the tests play the balancer)."""
    running = start(tmp_path, tmp_path_factory, ["127.0.0.0/8"], auth_max_failures=3)
    try:
        yield running
    finally:
        running.stop()


def v1(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    local = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {local} {port} 25\r\n".encode()


def v2(client: str, port: int = 40000) -> bytes:
    if ":" in client:
        addresses = socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, "::1")
        family = 0x21
    else:
        addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
        family = 0x11
    payload = addresses + struct.pack("!HH", port, 25) + b"\x04\x00\x03abc"  # a NOOP TLV, skipped
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(payload)) + payload


def connect(server: RunningServer, role: str, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port(role)), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def closed_silently(sock: socket.socket) -> bool:
    """The server closed the connection without a word."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def smtp_exchange(sock: socket.socket, *commands: bytes) -> list[bytes]:
    replies = [read_line(sock)]
    for command in commands:
        sock.sendall(command)
        reply = read_line(sock)
        while reply[3:4] == b"-":
            reply = read_line(sock)
        replies.append(reply)
    return replies


def log_fields(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [record.__dict__["kv"] for record in caplog.records if record.getMessage() == message]


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
def test_mx_sees_the_proxied_client_in_logs_and_received_header(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture, header: Any
) -> None:
    with caplog.at_level("INFO"):
        sock = connect(proxied, "smtp", header(CLIENT_V4))
        replies = smtp_exchange(
            sock,
            b"EHLO client.example\r\n",
            b"MAIL FROM:<sender@remote.example>\r\n",
            f"RCPT TO:<{USER}>\r\n".encode(),
            b"DATA\r\n",
            b"Subject: hi\r\n\r\nhello\r\n.\r\n",
            b"QUIT\r\n",
        )
        sock.close()
    assert replies[0].startswith(b"220 mail.example.test ")
    assert [reply[:3] for reply in replies[1:]] == [b"250", b"250", b"250", b"354", b"250", b"221"]
    (message,) = inbox(proxied, USER)
    assert b"Received: from client.example ([203.0.113.7])" in message
    assert {"role": "smtp", "peer": CLIENT_V4, "proxy": "127.0.0.1"} in log_fields(caplog, "proxy.client")


def test_ipv6_client_through_v2_on_pop3(proxied: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        sock = connect(proxied, "pop3", v2(CLIENT_V6))
        assert read_line(sock).startswith(b"+OK")
        sock.sendall(b"QUIT\r\n")
        assert read_line(sock).startswith(b"+OK")
        sock.close()
    assert {"peer": CLIENT_V6, "role": "pop3"} in log_fields(caplog, "pop3.connect")


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", V2_SIGNATURE + b"\x20\x00\x00\x00"],  # v2 LOCAL: a health check
    ids=["v1-unknown", "v2-local"],
)
def test_unknown_and_local_use_the_socket_address(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    with caplog.at_level("INFO"):
        sock = connect(proxied, "imap", header)
        assert read_line(sock).startswith(b"* OK")
        sock.close()
        deadline = time.monotonic() + 5
        while not log_fields(caplog, "imap.connect") and time.monotonic() < deadline:
            time.sleep(0.01)
    assert {"peer": "127.0.0.1", "role": "imap"} in log_fields(caplog, "imap.connect")


class ProxiedIMAP(imaplib.IMAP4_SSL):
    """IMAP over implicit TLS through our "load balancer": the header first, then the TLS handshake."""

    def __init__(self, server: RunningServer, client: str) -> None:
        self._header = v2(client)
        context = server.client_tls()
        super().__init__("127.0.0.1", server.port("imaps"), ssl_context=context, timeout=10)

    def _create_socket(self, timeout: float | None) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout)
        sock.sendall(self._header)
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.example.test")


def imap_login(server: RunningServer, client: str, password: str) -> str:
    imap = ProxiedIMAP(server, client)
    try:
        return imap.login(USER, password)[0]
    except imaplib.IMAP4.error as exc:
        return f"NO {exc}"
    finally:
        imap.shutdown()


def test_login_failure_block_lands_on_the_proxied_address(proxied: RunningServer) -> None:
    for attempt in range(3):
        assert imap_login(proxied, CLIENT_V4, f"wrong {attempt}").startswith("NO")
    assert "UNAVAILABLE" in imap_login(proxied, CLIENT_V4, PASSWORD)
    # The balancer's own address (every client's socket peer) is not blocked: other clients log in.
    assert imap_login(proxied, "198.51.100.1", PASSWORD) == "OK"
    blocked = proxied.call(proxied.store.list_auth_clients(blocked_after=time.time()))
    assert [client.ip for client in blocked] == [CLIENT_V4]


def test_per_ip_connection_limit_counts_the_proxied_client(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = start(tmp_path, tmp_path_factory, ["127.0.0.1"], connections_per_ip=1)
    try:
        first = connect(server, "submission", v1(CLIENT_V4))
        assert read_line(first).startswith(b"220 ")
        second = connect(server, "submission", v1(CLIENT_V4, port=40001))
        assert read_line(second) == b"421 4.7.0 Too many connections\r\n"
        other = connect(server, "submission", v1("198.51.100.1"))
        assert read_line(other).startswith(b"220 ")
        for sock in (first, second, other):
            sock.close()
    finally:
        server.stop()


def tls_client(server: RunningServer) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = server.client_tls().wrap_bio(incoming, outgoing, server_hostname="mail.example.test")
    return tls, incoming, outgoing


@pytest.mark.parametrize("role", ["submissions", "imaps", "pop3s"])
def test_implicit_tls_header_and_client_hello_in_one_segment(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture, role: str
) -> None:
    # The balancer writes the header and the client's ClientHello together: the header must come off
    # the socket octet-exactly, the ClientHello stay for the TLS layer.
    tls, incoming, outgoing = tls_client(proxied)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = connect(proxied, role)
    sock.sendall(v1(CLIENT_V4) + outgoing.read())
    greeting = b""
    with caplog.at_level("INFO"):
        while not greeting.endswith(b"\r\n"):
            data = sock.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
            try:
                if not tls.server_side and tls.version() is None:
                    tls.do_handshake()
                greeting += tls.read(1000)
            except ssl.SSLWantReadError:
                pass
            if outgoing.pending:
                sock.sendall(outgoing.read())
        sock.close()
    assert greeting[:4] in (b"220 ", b"* OK", b"+OK ")
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert any(fields["peer"] == CLIENT_V4 for fields in log_fields(caplog, "proxy.client"))


@pytest.mark.parametrize("role", ["smtp", "imap", "pop3", "submissions"])
def test_trusted_address_without_a_header_is_closed(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture, role: str
) -> None:
    with caplog.at_level("INFO"):
        assert closed_silently(connect(proxied, role, b"EHLO client.example\r\n"))
    assert {"role": role, "proxy": "127.0.0.1", "reason": "not a PROXY header"} in log_fields(
        caplog, "proxy.refused"
    )


def test_trusted_address_with_a_bad_header_is_closed(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO"):
        assert closed_silently(connect(proxied, "smtp", b"PROXY TCP4 203.0.113.7 127.0.0.1 040000 25\r\n"))
    (refused,) = log_fields(caplog, "proxy.refused")
    assert refused["reason"] == "PROXY v1 line with a bad port b'040000'"


def test_trusted_address_that_sends_nothing_is_closed_at_the_deadline(
    proxied: RunningServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxyheader, "PROXY_HEADER_TIMEOUT", 0.3)
    with caplog.at_level("INFO"):
        sock = connect(proxied, "imaps", b"PROXY TCP4 203.0.")  # and then nothing
        started = time.monotonic()
        assert closed_silently(sock)
        assert time.monotonic() - started < 5
    assert {"role": "imaps", "proxy": "127.0.0.1", "reason": "timeout"} in log_fields(caplog, "proxy.refused")


@pytest.fixture
def elsewhere(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that trusts a balancer elsewhere, not 127.0.0.1."""
    running = start(tmp_path, tmp_path_factory, ["192.0.2.0/24", "2001:db8::/32"])
    try:
        yield running
    finally:
        running.stop()


def test_untrusted_header_is_a_bad_smtp_command(elsewhere: RunningServer) -> None:
    sock = connect(elsewhere, "smtp")
    replies = smtp_exchange(sock, v1(CLIENT_V4), b"EHLO client.example\r\n", b"QUIT\r\n")
    sock.close()
    assert replies[0].startswith(b"220 mail.example.test ")
    assert replies[1] == b"500 5.5.1 Command unrecognized\r\n"
    assert replies[2].startswith(b"250 ")
    assert replies[3].startswith(b"221 ")


@pytest.mark.parametrize(
    ("role", "greeting", "refusal", "next_command", "next_reply"),
    [
        ("imap", b"* OK", b"PROXY BAD unknown command TCP4\r\n", b"a1 NOOP\r\n", b"a1 OK"),
        ("pop3", b"+OK", b"-ERR unknown command\r\n", b"QUIT\r\n", b"+OK"),
    ],
)
def test_untrusted_header_is_a_bad_command(
    elsewhere: RunningServer,
    role: str,
    greeting: bytes,
    refusal: bytes,
    next_command: bytes,
    next_reply: bytes,
) -> None:
    sock = connect(elsewhere, role)
    assert read_line(sock).startswith(greeting)
    sock.sendall(v1(CLIENT_V4))
    assert read_line(sock) == refusal
    sock.sendall(next_command)  # and the session goes on
    assert read_line(sock).startswith(next_reply)
    sock.close()


def test_untrusted_header_before_tls_fails_the_handshake(elsewhere: RunningServer) -> None:
    sock = connect(elsewhere, "imaps", v2(CLIENT_V4))
    assert closed_silently(sock)
