"""Relay through real DNS: server A finds remote.test's MX with dnspython, querying a DNS server the
test runs on 127.0.0.1, and delivers there (issue 5: integration with a local DNS server)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, inbox, queue
from dns_server import DNSServer
from test_relay import (
    ALICE,
    BOB,
    Peer,
    fast_delivery,
    peer_config,
    publish_dkim_keys,
    remote,
    submit,
    wait_for,
)

from surat.app import SuratServer
from surat.dns.resolver import DnsResolver

__all__ = ["remote"]  # the fixture, imported so that pytest finds it here


class DNSPeer(RunningServer):
    """Server A with the production resolver (dnspython) pointed at the test's DNS server."""

    def __init__(self, tmp_path: Path, dns_port: int, mx_port: int) -> None:
        self.config = peer_config(
            tmp_path / "a",
            "mail.example.test",
            dns={"nameservers": [f"127.0.0.1:{dns_port}"]},
            delivery=fast_delivery({}, allow_private_destinations=True),  # the test DNS answers 127.0.0.1
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="surat-dns-peer", daemon=True)
        self._thread.start()
        resolver = DnsResolver(self.config.dns.nameservers, timeout=2.0)
        self.server = SuratServer(self.config, resolver=resolver)
        self.call(self.server.start())
        runner = self.server.queue
        assert runner is not None
        # MX hosts are reached on port 25 in production; here B listens on an ephemeral port.
        runner.settings = dataclasses.replace(runner.settings, mx_port=mx_port)


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    server = DNSServer(
        {
            ("remote.test.", "MX"): ["10 mx.remote.test."],
            ("mx.remote.test.", "A"): ["127.0.0.1"],
            ("mx.remote.test.", "AAAA"): [],
        }
    )
    try:
        yield server
    finally:
        server.close()


def test_mx_found_through_dns_and_mail_arrives_signed(
    tmp_path: Path, remote: Peer, dns_server: DNSServer
) -> None:
    sender = DNSPeer(tmp_path, dns_server.port, remote.port("smtp"))
    try:
        sender.add_domain("example.test")
        sender.add_user(ALICE)
        publish_dkim_keys(sender, remote.fake_dns)  # type: ignore[arg-type]
        submit(sender, [BOB])
        (received,) = wait_for(lambda: inbox(remote, BOB))
        wait_for(lambda: not queue(sender))
    finally:
        sender.stop()
    assert ("remote.test.", "MX") in dns_server.queries
    assert ("mx.remote.test.", "A") in dns_server.queries
    head = received.split(b"\r\n\r\n", 1)[0]
    assert b"by mx.remote.test" in head
    assert b"dkim=pass" in head  # B verified A's signatures
