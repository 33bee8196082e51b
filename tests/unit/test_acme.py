"""ACME without a CA: the [acme] config, when a certificate is due (RFC 8555 leaves it to the client),
the backoff, the default names, the challenge files the http listener serves, `surat check`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fake_clock import Clock
from surat.acme.files import AcmeFiles, RenewalStatus, status_lines, valid_token
from surat.acme.renewal import (
    CHECK_INTERVAL,
    FIRST_RETRY,
    MAX_RETRY,
    AcmeRenewal,
    certificate_names,
    renewal_reason,
    retry_delay,
)
from surat.cli import main
from surat.config import LETS_ENCRYPT_DIRECTORY, ConfigError, parse_config
from tls_certs import make_certificate

NOW = datetime(2027, 1, 1, tzinfo=UTC)
NAMES = ["mail.example.test", "mta-sts.example.test"]


def config(tmp_path: Path, acme: dict[str, Any] | None = None, **top: Any) -> Any:
    data: dict[str, Any] = {"hostname": "mail.example.test", "acme": acme if acme is not None else {}, **top}
    return parse_config(data, base_dir=tmp_path)


# ------------------------------------------------------------------------------------------ config


def test_acme_defaults_and_the_served_certificate(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    assert loaded.acme is not None
    assert (loaded.acme.directory, loaded.acme.email, loaded.acme.hostnames, loaded.acme.ca_file) == (
        LETS_ENCRYPT_DIRECTORY,
        None,
        (),
        None,
    )
    # The certificate it obtains is the served [tls] pair; it need not exist before the first start.
    assert loaded.tls.cert == tmp_path / "data" / "acme" / "cert.pem"
    assert loaded.tls.key == tmp_path / "data" / "acme" / "key.pem"


def test_acme_is_off_without_the_table(tmp_path: Path) -> None:
    assert parse_config({"hostname": "mail.example.test"}, base_dir=tmp_path).acme is None


def test_acme_settings(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    loaded = config(
        tmp_path,
        {
            "directory": "https://acme-staging-v02.api.letsencrypt.org/directory",
            "email": "postmaster@example.test",
            "hostnames": ["Mail.Example.Test.", "mta-sts.example.test"],
            "ca_file": "ca.pem",
        },
    )
    assert loaded.acme.hostnames == ("mail.example.test", "mta-sts.example.test")
    assert loaded.acme.ca_file == tmp_path / "ca.pem"
    assert loaded.acme.email == "postmaster@example.test"


@pytest.mark.parametrize(
    ("acme", "top", "message"),
    [
        ({"directory": "http://ca.example/dir"}, {}, "acme.directory: expected an https:// URL"),
        ({"email": "postmaster"}, {}, "acme.email: expected an email address"),
        ({"ca_file": "missing.pem"}, {}, "acme.ca_file: file"),
        ({"hostnames": ["bad host"]}, {}, "acme.hostnames: 'bad host' is not a valid host name"),
        ({"hostname": ["x.example"]}, {}, "acme.hostname: unknown setting (did you mean hostnames?)"),
        ({}, {"tls": {"cert": "c.pem", "key": "k.pem"}}, "tls.cert: with [acme] the certificate is"),
    ],
)
def test_bad_acme_settings(tmp_path: Path, acme: dict[str, Any], top: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, acme, **top)
    assert str(raised.value).startswith(message)


# -------------------------------------------------------------------------------- when to renew


def certificate(
    path: Path, names: list[str], *, lifetime: timedelta, issued: datetime, self_signed: bool = False
) -> Path:
    made = make_certificate(
        names, not_before=issued, not_after=issued + lifetime, issuer=None if self_signed else "Test CA"
    )
    path.write_bytes(made.cert_pem)
    return path


DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("names", "lifetime", "age", "self_signed", "reason"),
    [
        (NAMES, 90 * DAY, 59 * DAY, False, None),  # Let's Encrypt: renewed at 60 days, 30 left
        (NAMES, 90 * DAY, 61 * DAY, False, "expires soon"),
        (NAMES, 6 * DAY, 3 * DAY, False, None),  # short-lived: a third of the lifetime left
        (NAMES, 6 * DAY, 4 * DAY + timedelta(minutes=1), False, "expires soon"),
        (NAMES, 90 * DAY, DAY, True, "placeholder certificate (self-signed)"),
        (NAMES[:1], 90 * DAY, DAY, False, "host names changed"),
    ],
)
def test_renewal_reason(
    tmp_path: Path,
    names: list[str],
    lifetime: timedelta,
    age: timedelta,
    self_signed: bool,
    reason: str | None,
) -> None:
    cert = certificate(
        tmp_path / "cert.pem", names, lifetime=lifetime, issued=NOW - age, self_signed=self_signed
    )
    assert renewal_reason(cert, NAMES, NOW) == reason


@pytest.mark.parametrize("content", [None, b"", b"not PEM"])
def test_no_usable_certificate_is_due(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "cert.pem"
    if content is not None:
        path.write_bytes(content)
    assert renewal_reason(path, NAMES, NOW) == "no usable certificate"


def test_backoff_doubles_up_to_the_check_interval() -> None:
    assert [retry_delay(n) for n in range(1, 6)] == [FIRST_RETRY * 2**i for i in range(5)]
    assert (retry_delay(8), retry_delay(9)) == (FIRST_RETRY * 2**7, MAX_RETRY)  # 10.7 h, then 12 h
    assert retry_delay(10_000) == MAX_RETRY  # no overflow however long it fails


class Domains:
    def __init__(self, *names: str) -> None:
        self.names = list(names)

    async def list_domains(self) -> list[str]:
        return self.names


async def test_default_names_follow_the_local_domains_when_https_is_on(tmp_path: Path) -> None:
    store = Domains("example.test", "example.org")
    with_https = config(tmp_path, listen={"https": ["127.0.0.1:0"]}, tls={})
    assert await certificate_names(with_https, store) == [  # type: ignore[arg-type]
        "autoconfig.example.org",
        "autoconfig.example.test",
        "autodiscover.example.org",
        "autodiscover.example.test",
        "mail.example.test",
        "mta-sts.example.org",
        "mta-sts.example.test",
    ]
    assert await certificate_names(config(tmp_path), store) == ["mail.example.test"]  # type: ignore[arg-type]
    explicit = config(tmp_path, {"hostnames": ["b.example.test", "a.example.test"]})
    assert await certificate_names(explicit, store) == ["a.example.test", "b.example.test"]  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- challenge files

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"  # RFC 8555 §8.3's example


def test_challenge_round_trip(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    assert files.challenge(TOKEN) is None
    files.put_challenge(TOKEN, f"{TOKEN}.thumbprint")
    assert files.challenge(TOKEN) == f"{TOKEN}.thumbprint".encode()
    assert (files.challenges / TOKEN).stat().st_mode & 0o777 == 0o600
    files.remove_challenge(TOKEN)
    assert files.challenge(TOKEN) is None


@pytest.mark.parametrize("token", ["", "../status.json", "a/b", "a.b", "tok en", "é", "A" * 129, ".lock"])
def test_only_base64url_tokens_are_looked_up(tmp_path: Path, token: str) -> None:
    files = AcmeFiles(tmp_path)
    files.write_status(RenewalStatus())
    assert not valid_token(token)
    assert files.challenge(token) is None
    with pytest.raises(ValueError, match="not an ACME token"):
        files.put_challenge(token, "x")


def test_placeholder_is_written_once(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    assert files.ensure_placeholder(["mail.example.test"])
    first = files.cert.read_bytes()
    assert {path.stat().st_mode & 0o777 for path in (files.cert, files.key, files.directory)} == {
        0o600,
        0o700,
    }
    assert not files.ensure_placeholder(["mail.example.test"])
    assert files.cert.read_bytes() == first
    assert renewal_reason(files.cert, ["mail.example.test"], datetime.now(UTC)) == (
        "placeholder certificate (self-signed)"
    )


# ---------------------------------------------------------------------------------- surat check


def test_status_lines_warn_about_failures(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    failed_at = NOW.timestamp()
    files.write_status(
        RenewalStatus(
            last_failure=failed_at,
            last_error="Error: no route to the CA",
            consecutive_failures=2,
            next_attempt=failed_at + 600,
        )
    )
    lines, warnings = status_lines(files, LETS_ENCRYPT_DIRECTORY)
    assert lines == [
        f"acme:     {LETS_ENCRYPT_DIRECTORY}",
        "  acme: last issued never, next check 2027-01-01 00:10 UTC",
    ]
    assert warnings == [
        "warning: acme: 2 order(s) failed in a row, the last at 2027-01-01 00:00 UTC: Error: no route to "
        "the CA; the current certificate stays served, next attempt 2027-01-01 00:10 UTC"
    ]


def test_check_before_the_first_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "surat.toml").write_text('hostname = "mail.example.test"\n[acme]\nemail = "a@example.test"\n')
    assert main(["--config", str(tmp_path / "surat.toml"), "check"]) == 0
    out = capsys.readouterr().out
    assert f"\nacme:     {LETS_ENCRYPT_DIRECTORY}\n  acme: last issued never, next check never\n" in out
    assert "warning" not in out


# --------------------------------------------------------------------------- the renewal's checks


def renewal(tmp_path: Path, clock: Clock) -> AcmeRenewal:
    # Nothing listens on port 1: an order that was started would fail at once, and be counted.
    loaded = config(tmp_path, {"directory": "https://127.0.0.1:1/dir", "hostnames": NAMES})
    return AcmeRenewal(loaded, Domains(), lambda: None, clock=clock)  # type: ignore[arg-type]


async def test_a_wake_up_within_the_backoff_orders_nothing(tmp_path: Path) -> None:
    clock = Clock()
    renewer = renewal(tmp_path, clock)
    renewer.files.prepare()
    renewer.files.write_status(
        RenewalStatus(last_failure=clock.now, consecutive_failures=3, next_attempt=clock.now + 600)
    )
    clock.now += 100
    assert await renewer.check() == 500
    assert renewer.files.read_status().consecutive_failures == 3  # no order was tried
    clock.now += 500
    assert await renewer.check() == retry_delay(4)  # the backoff is over: tried, failed again
    assert renewer.files.read_status().consecutive_failures == 4


async def test_a_good_certificate_clears_old_failures(tmp_path: Path) -> None:
    clock = Clock()
    renewer = renewal(tmp_path, clock)
    renewer.files.prepare()
    issued = datetime.fromtimestamp(clock.now, UTC)
    certificate(renewer.files.cert, NAMES, lifetime=90 * DAY, issued=issued)
    renewer.files.write_status(RenewalStatus(consecutive_failures=2, last_error="x", next_attempt=clock.now))
    assert await renewer.check() == CHECK_INTERVAL
    assert renewer.files.read_status() == RenewalStatus(next_attempt=clock.now + CHECK_INTERVAL)


async def test_a_revoked_certificate_is_due(tmp_path: Path) -> None:
    clock = Clock()
    renewer = renewal(tmp_path, clock)
    renewer.files.prepare()
    cert = certificate(
        renewer.files.cert, NAMES, lifetime=90 * DAY, issued=datetime.fromtimestamp(clock.now, UTC)
    )
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    now = datetime.fromtimestamp(clock.now, UTC)
    assert renewal_reason(cert, NAMES, now, revoked_serial=serial + 1) is None
    assert renewal_reason(cert, NAMES, now, revoked_serial=serial) == "revoked"


class UnreachableStore:
    async def list_domains(self) -> list[str]:
        raise OSError("database unreachable")


async def test_a_check_that_fails_outside_an_order_keeps_the_renewal_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = config(
        tmp_path, {"directory": "https://127.0.0.1:1/dir"}, listen={"https": ["127.0.0.1:0"]}, tls={}
    )
    renewer = AcmeRenewal(loaded, UnreachableStore(), lambda: None)  # type: ignore[arg-type]
    renewer.start()
    try:
        for _ in range(100):
            if any(record.message == "acme.check_failed" for record in caplog.records):
                break
            await asyncio.sleep(0.01)
        assert [record.message for record in caplog.records if record.name == "surat.acme.renewal"] == [
            "acme.check_failed"
        ]
        assert renewer._task is not None and not renewer._task.done()
    finally:
        await renewer.stop()
