"""`surat dns DOMAIN --check` (issue 13) against the tests' DNS server over UDP: what is published
as printed is ok, a record that is not there is missing, one published otherwise is different and
shows what is there; the exit status says whether everything is in place."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_server import DNSServer

from surat.cli import main

DOMAIN = "example.test"
HOST = f"mail.{DOMAIN}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A quickstart --dev directory (its store holds the domain's DKIM keys); returns its config."""
    directory = tmp_path_factory.mktemp("dnscheck") / "srv"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SURAT_CONFIG", raising=False)
        patch.setattr("sys.stdout", io.StringIO())
        assert (
            main(["quickstart", "--dev", "--domain", DOMAIN, "--hostname", HOST, "--dir", str(directory)])
            == 0
        )
    yield directory / "surat.toml"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _zone(capsys: pytest.CaptureFixture[str], config: Path) -> dict[tuple[str, str], list[str]]:
    """The records `surat dns` prints, as the DNS server's table."""
    code, out, _ = _run(capsys, "--config", str(config), "dns", DOMAIN)
    assert code == 0
    records: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        if line and not line.startswith(";"):
            name, _ttl, _class, rtype, value = line.split(None, 4)
            records.setdefault((name, rtype), []).append(value)
    return records


def _point_at(config: Path, server: DNSServer, tmp_path: Path) -> Path:
    """A copy of the setup whose [dns] nameservers is the test DNS server."""
    directory = tmp_path / "srv"
    shutil.copytree(config.parent, directory)
    copy = directory / config.name
    text, count = re.subn(
        r"(?m)^nameservers = \[\].*$", f'nameservers = ["127.0.0.1:{server.port}"]', copy.read_text()
    )
    assert count == 1
    copy.write_text(text)
    return copy


def test_check_reports_ok_missing_and_different(
    setup: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    expected = _zone(capsys, setup)
    published = dict(expected)
    published.pop((f"_dmarc.{DOMAIN}.", "TXT"))  # missing
    published[(f"{DOMAIN}.", "TXT")] = ['"v=spf1 a mx ~all"', '"google-site-verification=abc"']  # different
    published.pop((f"_smtp._tls.{DOMAIN}.", "TXT"))  # optional: may be missing
    # A provider that flattens a CNAME into the target's addresses: still ok.
    published.pop((f"autodiscover.{DOMAIN}.", "CNAME"))
    published[(f"autodiscover.{DOMAIN}.", "A")] = ["192.0.2.7"]
    published[(f"{HOST}.", "A")] = ["192.0.2.7"]
    # DKIM's long value split into strings elsewhere than where `surat dns` splits it: still ok.
    dkim = [key for key in published if key[0].endswith(f"._domainkey.{DOMAIN}.")]
    assert len(dkim) == 2
    for key in dkim:
        (value,) = published[key]
        joined = "".join(re.findall(r'"([^"]*)"', value))
        published[key] = [" ".join(f'"{joined[i : i + 100]}"' for i in range(0, len(joined), 100))]
    server = DNSServer(published)
    try:
        config = _point_at(setup, server, tmp_path)
        code, out, err = _run(capsys, "--config", str(config), "dns", DOMAIN, "--check")
    finally:
        server.close()
    assert code == 1, err
    total = sum(len(values) for values in expected.values())
    assert err == f"2 of {total} records are not published as expected\n"
    lines = {tuple(line.split()[:3]): line for line in out.splitlines()}
    assert len(out.splitlines()) == sum(len(values) for values in expected.values())
    assert lines[("missing", "TXT", f"_dmarc.{DOMAIN}.")].endswith(
        f'"v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}"'
    )
    assert lines[("different", "TXT", f"{DOMAIN}.")].endswith(
        '"v=spf1 mx -all"  (published: "v=spf1 a mx ~all")'
    )
    assert ("missing", "(optional)", "TXT") in lines
    statuses = sorted(line.split()[0] for line in out.splitlines())
    assert statuses.count("ok") == len(statuses) - 3
    for key in dkim:
        assert lines[("ok", "TXT", key[0])]
    assert lines[("ok", "CNAME", f"autodiscover.{DOMAIN}.")]
    assert lines[("ok", "MX", f"{DOMAIN}.")].endswith(f"10 {HOST}.")


def test_check_passes_when_everything_is_published(
    setup: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = DNSServer(_zone(capsys, setup))
    try:
        code, out, err = _run(
            capsys, "--config", str(_point_at(setup, server, tmp_path)), "dns", DOMAIN, "--check"
        )
    finally:
        server.close()
    assert (code, err) == (0, "")
    assert {line.split()[0] for line in out.splitlines()} == {"ok"}


def test_a_dns_server_that_does_not_answer_is_an_error(
    setup: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = DNSServer({})
    server.close()  # nobody answers on its port any more
    code, out, err = _run(
        capsys, "--config", str(_point_at(setup, server, tmp_path)), "dns", DOMAIN, "--check"
    )
    assert code == 1, err
    assert {line.split()[0] for line in out.splitlines()} == {"error"}
    assert "timeout" in out
