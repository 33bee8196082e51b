"""ARC override of a DMARC reject (surat.smtpd.inbound): a mailing list we trust broke DKIM, not a forger.

The MX's InboundChecks are driven directly, and a real server is configured with `limits.trusted_arc_sealers`.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import dkim
import pytest
from conftest import DOMAIN, USER, RunningServer, dev_certificates, inbox, make_config

from dkim_keys import RSAKey
from surat.dns.fake import FakeResolver
from surat.smtpd.inbound import Disposition, InboundChecks

ORIGINAL = (
    b"From: Alice <alice@sender.example>\r\n"
    b"To: list@lists.example\r\n"
    b"Subject: meeting\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@sender.example>\r\n"
    b"\r\n"
    b"See you at ten.\r\n"
)


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey()


def resolver(key: RSAKey) -> FakeResolver:
    return FakeResolver(
        {
            ("s1._domainkey.sender.example", "TXT"): [key.record],
            ("sender.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.sender.example", "TXT"): ["v=DMARC1; p=reject"],
            ("arc._domainkey.lists.example", "TXT"): [key.record],
            ("lists.example", "TXT"): ["v=spf1 ip4:198.51.100.7 -all"],
        }
    )


def through_the_list(key: RSAKey, list_results: str) -> bytes:
    """Signed by sender.example, then changed by the list (DKIM breaks) and ARC-sealed by it."""
    signed: bytes = dkim.sign(ORIGINAL, b"s1", b"sender.example", key.private_pem) + ORIGINAL
    changed = signed.replace(b"Subject: meeting", b"Subject: [list] meeting")
    with_results = f"Authentication-Results: lists.example; {list_results}\r\n".encode() + changed
    arc_set: list[bytes] = dkim.arc_sign(
        with_results, b"arc", b"lists.example", key.private_pem, b"lists.example", timestamp="1700000000"
    )
    assert arc_set, "dkimpy produced no ARC set"
    return b"".join(arc_set) + with_results


async def verdict(key: RSAKey, message: bytes, trusted: tuple[str, ...]) -> Disposition:
    checks = InboundChecks(resolver(key), "mail.example.test", trusted_sealers=trusted)
    # the list's server delivers: SPF passes for its own bounce domain, which is not aligned with From
    spf = checks.start_spf("198.51.100.7", "mx.lists.example", "bounce@lists.example")
    result = await checks.evaluate(spf, message)
    assert result.dmarc is not None and result.dmarc.status.value == "fail"
    assert [r.status.value for r in result.dkim] == ["fail"]
    return result.disposition


async def test_trusted_sealer_that_saw_dmarc_pass_overrides_reject(key: RSAKey) -> None:
    message = through_the_list(
        key, "dkim=pass header.d=sender.example; dmarc=pass header.from=sender.example"
    )
    assert await verdict(key, message, ("lists.example",)) is Disposition.ACCEPT


async def test_untrusted_sealer_does_not_override(key: RSAKey) -> None:
    message = through_the_list(
        key, "dkim=pass header.d=sender.example; dmarc=pass header.from=sender.example"
    )
    assert await verdict(key, message, ()) is Disposition.REJECT
    assert await verdict(key, message, ("other.example",)) is Disposition.REJECT


async def test_trusted_sealer_that_saw_dmarc_fail_does_not_override(key: RSAKey) -> None:
    message = through_the_list(
        key, "dkim=fail header.d=sender.example; dmarc=fail header.from=sender.example"
    )
    assert await verdict(key, message, ("lists.example",)) is Disposition.REJECT


async def test_broken_chain_does_not_override(key: RSAKey) -> None:
    message = through_the_list(key, "dmarc=pass header.from=sender.example").replace(
        b"See you at ten.", b"See you at noon."
    )
    assert await verdict(key, message, ("lists.example",)) is Disposition.REJECT


def list_server_resolver(key: RSAKey) -> FakeResolver:
    dns = resolver(key)
    dns.set("lists.example", "TXT", ["v=spf1 ip4:127.0.0.1 -all"])  # the test client is the list's server
    return dns


@pytest.mark.parametrize("trusted", [True, False])
def test_trusted_arc_sealers_config_key(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, key: RSAKey, trusted: bool
) -> None:
    dev_certificates(tmp_path_factory.getbasetemp())
    sealers = ["Lists.Example"] if trusted else []
    config = make_config(tmp_path, limits={"greet_pause": 0, "trusted_arc_sealers": sealers})
    running = RunningServer(config, resolver=list_server_resolver(key))
    try:
        running.add_domain(DOMAIN)
        running.add_user(USER)
        message = through_the_list(
            key, "dkim=pass header.d=sender.example; dmarc=pass header.from=sender.example"
        )
        with smtplib.SMTP("127.0.0.1", running.port("smtp"), local_hostname="mx.lists.example") as client:
            if trusted:
                client.sendmail("bounce@lists.example", [USER], message)
            else:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("bounce@lists.example", [USER], message)
                assert refused.value.smtp_code == 550
        stored = inbox(running, USER)
        assert len(stored) == (1 if trusted else 0)
        if trusted:
            assert b"arc=pass" in stored[0] and b"dmarc=fail" in stored[0]
    finally:
        running.stop()
