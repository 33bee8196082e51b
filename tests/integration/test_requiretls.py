"""REQUIRETLS (RFC 8689) over real sockets: offered only in TLS sessions, refused in clear, accepted
over TLS; relayed to remote.test under its MTA-STS policy only when the next hop (server B, with a
certificate for mx.remote.test) offers REQUIRETLS, else returned at once with 5.7.30."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, RunningServer, inbox, queue
from dns_server import DNSServer
from test_relay import ALICE, BOB, Peer, peer_config, remote_peer, wait_for
from test_relay_mtasts import (
    PolicyServer,
    dns_server,
    make_dns,
    mx,
    policy_server,
    start_sender,
    sts_tls,
)

from dsn_reports import recipient_blocks
from surat.certs import CertificatePaths

__all__ = ["dns_server", "make_dns", "mx", "policy_server", "sts_tls"]  # fixtures, for pytest to find


def _message(sender: str, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "secret"
    msg.set_content("For your eyes only.\n")
    return msg.as_bytes()


def _context(server: RunningServer) -> ssl.SSLContext:
    context = server.client_tls()
    context.check_hostname = False
    return context


def test_mx_offers_requiretls_after_starttls_only(server: RunningServer) -> None:
    with smtplib.SMTP(
        "127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10
    ) as client:
        client.ehlo()
        assert not client.has_extn("requiretls")
        # RFC 8689 §4.1: only in a TLS session
        assert client.docmd("MAIL FROM:<someone@remote.example> REQUIRETLS") == (
            530,
            b"5.7.10 REQUIRETLS needs a TLS session: STARTTLS first",
        )
        client.starttls(context=_context(server))
        client.ehlo()
        assert client.has_extn("requiretls")
        assert client.docmd("MAIL FROM:<someone@remote.example> REQUIRETLS") == (250, b"2.1.0 Sender OK")
        assert client.docmd(f"RCPT TO:<{USER}>")[0] == 250
        assert client.data(_message("someone@remote.example", USER))[0] == 250
    (stored,) = inbox(server, USER)
    assert b"For your eyes only." in stored


def test_submissions_offers_requiretls_at_once(server: RunningServer) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1",
        server.port("submissions"),
        local_hostname="client.example",
        timeout=10,
        context=_context(server),
    ) as client:
        client.ehlo()
        assert client.has_extn("requiretls")
        client.login(USER, PASSWORD)
        client.sendmail(USER, [USER], _message(USER, USER), mail_options=["REQUIRETLS"])
    assert len(inbox(server, USER)) == 1


def _submit_requiretls(sender: RunningServer, to: str) -> None:
    with smtplib.SMTP(
        "127.0.0.1", sender.port("submission"), local_hostname="client.test", timeout=10
    ) as client:
        client.starttls(context=_context(sender))
        client.ehlo()
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [to], _message(ALICE, to), mail_options=["REQUIRETLS"]) == {}


def test_relay_to_a_next_hop_with_verified_tls_and_requiretls_delivers(
    tmp_path: Path, dns_server: DNSServer, mx: Peer, policy_server: PolicyServer, sts_tls: CertificatePaths
) -> None:
    sender = start_sender(tmp_path, dns_server, mx, policy_server, sts_tls)
    try:
        _submit_requiretls(sender, BOB)
        wait_for(lambda: inbox(mx, BOB) and not queue(sender))
        assert inbox(sender, ALICE) == []  # no DSN
    finally:
        sender.stop()
    assert sender.reports.successes == [("remote.test", "mx.remote.test")]


@pytest.fixture
def mx_without_requiretls(tmp_path: Path, sts_tls: CertificatePaths) -> Iterator[Peer]:
    """Server B with a good certificate for mx.remote.test, REQUIRETLS not offered."""
    tls = {"cert": str(sts_tls.cert), "key": str(sts_tls.key), "ca": str(sts_tls.ca), "requiretls": False}
    with remote_peer(peer_config(tmp_path / "b", "mx.remote.test", tls=tls)) as running:
        yield running


def test_relay_to_a_next_hop_without_requiretls_bounces_with_5_7_30(
    tmp_path: Path,
    dns_server: DNSServer,
    mx_without_requiretls: Peer,
    policy_server: PolicyServer,
    sts_tls: CertificatePaths,
) -> None:
    sender = start_sender(tmp_path, dns_server, mx_without_requiretls, policy_server, sts_tls)
    try:
        _submit_requiretls(sender, BOB)
        (dsn,) = wait_for(lambda: not queue(sender) and inbox(sender, ALICE))
    finally:
        sender.stop()
    assert inbox(mx_without_requiretls, BOB) == []
    (block,) = recipient_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "5.7.30")
    assert " ".join(block["Diagnostic-Code"].split()) == (
        "smtp; 550 5.7.30 REQUIRETLS support required, and the server does not offer it"
    )
    assert b"For your eyes only." not in dsn  # RFC 8689 §4.3: the header only
