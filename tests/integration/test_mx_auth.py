"""SPF, DKIM and DMARC on the MX listener of a real server: DNS answers from a FakeResolver, mail via smtplib.

Messages are DKIM-signed here with keys generated for the test; the fake DNS serves their records.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from conftest import DOMAIN, USER, RunningServer, dev_certificates, inbox, make_config

from dkim_keys import RSAKey
from surat.dns.fake import FakeResolver

AUTHSERV_ID = "mail.example.test"


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey()


def dns(key: RSAKey) -> FakeResolver:
    return FakeResolver(
        {
            # signs with DKIM, SPF allows the test client (127.0.0.1), DMARC asks for reject
            ("sender.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
            ("s1._domainkey.sender.example", "TXT"): [key.record],
            ("_dmarc.sender.example", "TXT"): ["v=DMARC1; p=reject"],
            # the test client is not allowed to send for these
            ("forged.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.forged.example", "TXT"): ["v=DMARC1; p=reject"],
            ("junk.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.junk.example", "TXT"): ["v=DMARC1; p=quarantine"],
            ("nopolicy.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
        }
    )


@pytest.fixture
def mx_server(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, key: RSAKey
) -> Iterator[RunningServer]:
    dev_certificates(tmp_path_factory.getbasetemp())
    config = make_config(tmp_path, limits={"greet_pause": 0})
    running = RunningServer(config, resolver=dns(key))
    try:
        running.add_domain(DOMAIN)
        running.add_user(USER)
        yield running
    finally:
        running.stop()


def message(
    from_domain: str, extra_headers: bytes = b"", body: bytes = b"Hello,\r\nthe figures.\r\n"
) -> bytes:
    return (
        extra_headers
        + (
            f"From: Sender <news@{from_domain}>\r\n"
            f"To: {USER}\r\n"
            "Subject: figures\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <1@{from_domain}>\r\n"
            "\r\n"
        ).encode()
        + body
    )


def sign(msg: bytes, key: RSAKey, domain: str = "sender.example") -> bytes:
    signature: bytes = dkim.sign(msg, b"s1", domain.encode(), key.private_pem)
    return signature + msg


def send(server: RunningServer, sender: str, msg: bytes) -> None:
    with smtplib.SMTP(
        "127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10
    ) as client:
        client.sendmail(sender, [USER], msg)


def results(stored: bytes) -> list[str]:
    """The Authentication-Results fields of a stored message, unfolded."""
    header = stored.split(b"\r\n\r\n", 1)[0].decode()
    fields = header.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
    return [f for f in fields if f.lower().startswith("authentication-results:")]


def test_dkim_signed_message_passes(mx_server: RunningServer, key: RSAKey) -> None:
    send(mx_server, "bounce@sender.example", sign(message("sender.example"), key))
    (stored,) = inbox(mx_server, USER, "INBOX")
    (ours,) = results(stored)
    assert ours.startswith(f"Authentication-Results: {AUTHSERV_ID};")
    assert "dkim=pass header.d=sender.example header.s=s1" in ours
    assert "spf=pass" in ours and "smtp.mailfrom=bounce@sender.example" in ours
    assert "dmarc=pass" in ours and "header.from=sender.example" in ours
    # under our own Received:, above the message as it arrived
    assert stored.index(b"Received: from client.example") < stored.index(b"Authentication-Results:")
    assert stored.index(b"Authentication-Results:") < stored.index(b"DKIM-Signature:")
    assert inbox(mx_server, USER, "Junk") == []


def test_tampered_body_fails_dkim(mx_server: RunningServer, key: RSAKey) -> None:
    signed = sign(message("sender.example"), key).replace(b"the figures.", b"the FIGURES.")
    send(mx_server, "bounce@sender.example", signed)
    (stored,) = inbox(mx_server, USER, "INBOX")  # SPF still passes aligned, so DMARC passes
    (ours,) = results(stored)
    assert "dkim=fail" in ours and "body hash did not verify" in ours
    assert "dkim=pass" not in ours
    assert "dmarc=pass" in ours


def test_dkim_alone_satisfies_dmarc_when_spf_fails(mx_server: RunningServer, key: RSAKey) -> None:
    # Forwarded mail: the envelope is not sender.example's, but the signature aligns with From.
    send(mx_server, "bounce@nopolicy.example", sign(message("sender.example"), key))
    (stored,) = inbox(mx_server, USER, "INBOX")
    (ours,) = results(stored)
    assert "spf=fail" in ours and "dkim=pass" in ours and "dmarc=pass" in ours


def test_spf_fail_with_dmarc_reject_is_refused(mx_server: RunningServer) -> None:
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(mx_server, "ceo@forged.example", message("forged.example"))
    assert info.value.smtp_code == 550
    error = info.value.smtp_error
    assert isinstance(error, bytes) and error.startswith(b"5.7.1")
    assert inbox(mx_server, USER, "INBOX") == []
    assert inbox(mx_server, USER, "Junk") == []


def test_tampered_signature_with_dmarc_reject_is_refused(mx_server: RunningServer, key: RSAKey) -> None:
    signed = sign(message("sender.example"), key).replace(b"the figures.", b"pay me.")
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(mx_server, "bounce@nopolicy.example", signed)
    assert info.value.smtp_code == 550


@pytest.mark.parametrize(
    "author",
    [
        b"From : CEO <ceo@forged.example>\r\n",  # RFC 5322 §4.5.3: WSP before the colon is a From field
        b"From: ceo@forged.example\r\n",
        b"FROM:ceo@forged.example\r\n",
    ],
)
def test_a_second_from_field_is_checked_too(mx_server: RunningServer, key: RSAKey, author: bytes) -> None:
    # Issue 11 item 7 on port 25: besides the From that the signature aligns with, a forged one. RFC 5322
    # §3.6 allows one From; RFC 7489 §6.6.1 leaves such mail to the receiver: every domain of every From
    # field is checked and the strictest failing policy (forged.example's p=reject) applies.
    signed = sign(author + message("sender.example"), key)
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(mx_server, "bounce@sender.example", signed)
    assert (info.value.smtp_code, info.value.smtp_error) == (
        550,
        b"5.7.1 Message rejected by the sender domain's DMARC policy",
    )
    assert inbox(mx_server, USER, "INBOX") == []
    assert inbox(mx_server, USER, "Junk") == []


def test_a_from_too_long_to_read_is_refused(mx_server: RunningServer, key: RSAKey) -> None:
    # surat.message reads MAX_AUTHOR_FIELD octets of an author field; RFC 7489 §6.6.1 leaves an author
    # that cannot be established to the receiver, and a forged domain must not hide in what is not read.
    many = b",\r\n ".join(b"x%d@sender.example" % n for n in range(600))
    signed = sign(
        message("sender.example").replace(b"From: Sender <news@sender.example>", b"From: " + many), key
    )
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(mx_server, "bounce@sender.example", signed)
    assert info.value.smtp_code == 550
    assert inbox(mx_server, USER, "INBOX") == []


def test_dmarc_quarantine_goes_to_junk(mx_server: RunningServer) -> None:
    send(mx_server, "news@junk.example", message("junk.example"))
    assert inbox(mx_server, USER, "INBOX") == []
    (stored,) = inbox(mx_server, USER, "Junk")
    (ours,) = results(stored)
    assert "dmarc=fail (p=quarantine dis=quarantine)" in ours
    assert "spf=fail" in ours


def test_no_dmarc_policy_is_delivered(mx_server: RunningServer) -> None:
    send(mx_server, "news@nopolicy.example", message("nopolicy.example"))
    (stored,) = inbox(mx_server, USER, "INBOX")
    (ours,) = results(stored)
    assert "spf=fail" in ours and "dkim=none" in ours and "dmarc=none" in ours


def test_forged_authentication_results_are_stripped(mx_server: RunningServer, key: RSAKey) -> None:
    forged = (
        f"Authentication-Results: {AUTHSERV_ID.upper()};\r\n\tdkim=pass header.d=bank.example\r\n"
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n"
        f"Authentication-Results: (comment) {AUTHSERV_ID}; dmarc=pass\r\n"
    ).encode()
    send(mx_server, "news@nopolicy.example", message("nopolicy.example", extra_headers=forged))
    (stored,) = inbox(mx_server, USER, "INBOX")
    fields = results(stored)
    assert len(fields) == 2
    ours = [f for f in fields if f.startswith(f"Authentication-Results: {AUTHSERV_ID};")]
    assert len(ours) == 1
    assert "bank.example" not in ours[0] and "dmarc=none" in ours[0]
    # someone else's claims are left alone
    assert any(f.startswith("Authentication-Results: other.example;") for f in fields)
    assert b"bank.example" not in stored


def test_results_and_reasons_in_the_transaction_log(
    mx_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="surat.smtpd.service"), pytest.raises(smtplib.SMTPDataError):
        send(mx_server, "ceo@forged.example", message("forged.example"))
    (record,) = [r for r in caplog.records if r.getMessage() == "smtp.transaction"]
    kv = record.__dict__["kv"]
    assert kv["result"] == "550 5.7.1"
    assert kv["spf"].startswith("fail (")
    assert kv["dmarc"].startswith("fail (no aligned SPF or DKIM pass; p=reject")
    assert kv["dkim"] == "none"
    assert kv["disposition"] == "reject"
