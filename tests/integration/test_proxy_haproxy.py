"""Interoperability with a real HAProxy in front of Surat: `send-proxy` (v1) to the MX port and
`send-proxy-v2` to the IMAPS port. The client connects from 127.0.0.2, HAProxy from 127.0.0.1 (the
only trusted address), and Surat must see 127.0.0.2. Needs Debian's `haproxy` package (.ci/run
installs it); skipped without it, a failure under CI=true."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import subprocess
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
    free_port,
    inbox,
    make_config,
    require_tool,
)

CLIENT = "127.0.0.2"  # loopback too (127.0.0.0/8): a client address that is not HAProxy's


class HAProxy:
    def __init__(self, directory: Path, routes: dict[str, tuple[int, str]]) -> None:
        """`routes`: name -> (Surat's port, "send-proxy" or "send-proxy-v2"); each gets a front port."""
        self.ports = {name: free_port() for name in routes}
        sections = [
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        ]
        for name, (target, option) in routes.items():
            sections.append(
                f"listen {name}\n    bind 127.0.0.1:{self.ports[name]}\n"
                f"    server surat 127.0.0.1:{target} source 127.0.0.1 {option}\n"
            )
        config = directory / "haproxy.cfg"
        config.write_text("\n".join(sections))
        self.log = (directory / "haproxy.log").open("wb")
        # -db: foreground, no daemon; the process is ours to stop.
        self.process = subprocess.Popen(
            [require_tool("haproxy"), "-db", "-f", str(config)], stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 10
        for port in self.ports.values():
            while True:
                assert self.process.poll() is None, (directory / "haproxy.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "haproxy did not start"
                    time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def behind_haproxy(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, HAProxy]]:
    require_tool("haproxy")
    dev_certificates(tmp_path_factory.getbasetemp())
    config = make_config(
        tmp_path, proxy={"trusted": ["127.0.0.1/32"]}, limits={"greet_pause": 0, "auth_max_failures": 2}
    )
    server = RunningServer(config)
    haproxy = None
    try:
        server.add_domain(DOMAIN)
        server.add_user(USER)
        haproxy = HAProxy(
            tmp_path,
            {"mx": (server.port("smtp"), "send-proxy"), "imaps": (server.port("imaps"), "send-proxy-v2")},
        )
        yield server, haproxy
    finally:
        if haproxy is not None:
            haproxy.stop()
        server.stop()


def test_mx_through_haproxy_send_proxy_v1(behind_haproxy: tuple[RunningServer, HAProxy]) -> None:
    server, haproxy = behind_haproxy
    with smtplib.SMTP(
        "127.0.0.1",
        haproxy.ports["mx"],
        local_hostname="client.example",
        timeout=10,
        source_address=(CLIENT, 0),
    ) as client:
        client.sendmail("sender@remote.example", [USER], b"Subject: via haproxy\r\n\r\nhello\r\n")
    (message,) = inbox(server, USER)
    assert b"Received: from client.example ([127.0.0.2])" in message


class IMAPFrom(imaplib.IMAP4_SSL):
    def __init__(self, server: RunningServer, port: int) -> None:
        super().__init__("127.0.0.1", port, ssl_context=server.client_tls(), timeout=10)

    def _create_socket(self, timeout: float | None) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(CLIENT, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.example.test")


def test_imaps_through_haproxy_send_proxy_v2_blocks_the_client_not_the_balancer(
    behind_haproxy: tuple[RunningServer, HAProxy],
) -> None:
    server, haproxy = behind_haproxy
    for attempt in range(2):
        client = IMAPFrom(server, haproxy.ports["imaps"])
        with pytest.raises(imaplib.IMAP4.error):
            client.login(USER, f"wrong {attempt}")
        client.shutdown()
    blocked = server.call(server.store.list_auth_clients(blocked_after=time.time()))
    assert [entry.ip for entry in blocked] == [CLIENT]
    # The balancer's own address is not blocked: a client straight from 127.0.0.1 (trusted, so it
    # plays the balancer and sends its own header) logs in.
    sock = socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=10)
    sock.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 993\r\n")
    with server.client_tls().wrap_socket(sock, server_hostname="mail.example.test") as tls:
        tls.recv(1000)
        tls.sendall(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        assert tls.recv(1000).startswith(b"a OK")
