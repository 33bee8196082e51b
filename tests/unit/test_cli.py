"""The `surat` command, run through `main([...])` against real files, certificates and the SQLite store."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim as dkimpy
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.zone
import pytest
from cryptography import x509

from dkim_keys import data_dir_keys
from staging import staged
from surat import cli
from surat.apppasswords import authenticate_mail
from surat.authlimit import BlockPolicy, StoreAuthLimiter
from surat.cli import main, normalize_address, normalize_domain, parse_size
from surat.config import LISTEN_ROLES, Config, HostPort, load_config
from surat.delivery import dkim
from surat.net import tls as tls_module
from surat.net.tls import certificate_warnings, server_context
from surat.passwords import verify_password
from surat.store.base import (
    Delivery,
    OutboundMessage,
    OutboundRecipient,
    QueueEntry,
    RecipientState,
    RecipientUpdate,
    Store,
)
from surat.store.sqlite import INDEX_FILE, SQLiteStore

DOMAIN = "example.test"
POSTMASTER = f"postmaster@{DOMAIN}"


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def surat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """Run `surat ARGS...`, with optional stdin text; returns exit code, stdout and stderr."""
    monkeypatch.delenv("SURAT_CONFIG", raising=False)
    monkeypatch.delenv("SURAT_DEBUG", raising=False)

    def run(*args: str, stdin: str | None = None) -> Run:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def _one_line_error(result: Run, code: int, *words: str) -> None:
    assert result.code == code, result
    assert result.err.startswith("surat: "), result.err
    assert result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in result.err, (word, result.err)


def _password_from(output: str) -> str:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"Account {POSTMASTER}, password"))
    return lines[index + 1].strip()


@dataclass
class Setup:
    dir: Path
    config_file: Path
    password: str
    output: str

    def config(self) -> Config:
        return load_config(self.config_file)


@pytest.fixture(scope="module")
def dev_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # Key generation and password hashing are slow-ish: make one dev setup, copy it per test.
    directory = tmp_path_factory.mktemp("template") / "srv"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SURAT_CONFIG", raising=False)
        out = io.StringIO()
        mp.setattr("sys.stdout", out)
        code = main(["quickstart", "--dev", "--domain", DOMAIN, "--dir", str(directory)])
    assert code == 0
    yield Setup(directory, directory / "surat.toml", _password_from(out.getvalue()), out.getvalue())


@pytest.fixture
def dev(dev_template: Setup, tmp_path: Path) -> Setup:
    directory = tmp_path / "srv"
    shutil.copytree(dev_template.dir, directory)
    return Setup(directory, directory / "surat.toml", dev_template.password, dev_template.output)


def _in_store(config: Config, action: Callable[[Store], object]) -> object:
    async def go() -> object:
        store = SQLiteStore(config.data_dir)
        await store.open()
        try:
            result = action(store)
            return await result if asyncio.iscoroutine(result) else result
        finally:
            await store.close()

    return asyncio.run(go())


def _verify(config: Config, address: str, password: str) -> bool:
    async def check(store: Store) -> bool:
        found = await store.get_credentials(address)
        assert found is not None, address
        return verify_password(found[1], password)

    result = _in_store(config, check)
    assert isinstance(result, bool)
    return result


# ----------------------------------------------------------------------------------------- quickstart


def test_quickstart_dev_writes_a_working_setup(dev: Setup) -> None:
    config = dev.config()
    assert config.hostname == f"mail.{DOMAIN}"
    assert config.data_dir == dev.dir.resolve() / "data"
    ports = {role: [str(hp) for hp in getattr(config.listen, role)] for role in LISTEN_ROLES}
    assert ports == {role: [f"127.0.0.1:{port}"] for role, port in cli.DEV_PORTS.items()}
    assert ports["smtp"] == ["127.0.0.1:2525"]
    assert ports["pop3s"] == ["127.0.0.1:9950"]
    assert config.tls.cert is not None
    assert config.tls.key is not None
    assert config.tls.ca is not None
    assert config.tls.ca.is_file()
    server_context(config.tls.cert, config.tls.key)  # a usable pair
    assert (config.tls.key.stat().st_mode & 0o077) == 0
    # The password printed once is the postmaster's; a wrong one is refused.
    assert re.fullmatch(r"\S{12,}", dev.password)
    assert _verify(config, POSTMASTER, dev.password)
    assert not _verify(config, POSTMASTER, dev.password + "x")
    # The output tells how to trust the dev CA and what to publish in DNS.
    assert str(config.tls.ca.name) in dev.output
    assert "--tls-ca-path" in dev.output
    assert "--cacert" in dev.output
    assert "127.0.0.1:5870" in dev.output
    assert f"IN  MX   10 mail.{DOMAIN}." in dev.output
    assert f"_submissions._tcp.{DOMAIN}." in dev.output


def test_quickstart_dev_config_is_relocatable(dev: Setup) -> None:
    text = dev.config_file.read_text()
    assert str(dev.dir) not in text  # paths are relative to the config file
    assert 'cert = "tls/cert.pem"' in text


def test_quickstart_config_documents_every_key(dev: Setup) -> None:
    # Uncommenting every commented-out setting must still give a valid config with those values.
    text = dev.config_file.read_text()
    uncommented = re.sub(r"(?m)^# ?([a-z_]+ *=)", r"\1", text)
    assert uncommented != text
    dev.config_file.write_text(uncommented)
    config = dev.config()
    assert config.limits.recipients == 1000
    assert config.limits.smtp_idle_timeout == 300
    assert config.limits.bad_commands == 10
    assert config.dns.timeout == 5.0
    assert config.delivery.smarthost == HostPort("smtp.provider.example", 587)
    assert dict(config.delivery.routes) == {"example.net": HostPort("127.0.0.1", 2526)}
    for section in ("[tls]", "[listen]", "[dns]", "[limits]", "[delivery]"):
        assert section in text


def test_quickstart_production(surat: Callable[..., Run], tmp_path: Path) -> None:
    directory = tmp_path / "prod"
    result = surat("quickstart", "--domain", "Example.COM", "--dir", str(directory))
    assert result.code == 0, result.err
    config = load_config(directory / "surat.toml")
    assert config.hostname == "mail.example.com"
    # All IPv4 addresses, and all IPv6 ones where the machine has IPv6.
    hosts = cli.production_hosts()
    assert hosts[0] == "0.0.0.0" and hosts[1:] in ([], ["::"])
    for role, port in (
        ("smtp", 25),
        ("submission", 587),
        ("submissions", 465),
        ("imaps", 993),
        ("pop3s", 995),
    ):
        assert getattr(config.listen, role) == tuple(HostPort(host, port) for host in hosts)
    assert config.tls.ca is None
    assert not (directory / "tls" / "ca.pem").exists()
    assert config.tls.cert is not None and config.tls.key is not None
    server_context(config.tls.cert, config.tls.key)
    assert "real certificate" in result.out
    assert "--tls-ca-path" not in result.out
    assert '"v=spf1 mx -all"' in result.out
    assert "_dmarc.example.com." in result.out


@pytest.mark.parametrize(
    ("argv0", "on_path", "config", "expected"),
    [
        # after `make run`: the venv's program is not on PATH, the config is in var/
        (".venv/bin/surat", None, "var/surat.toml", ".venv/bin/surat --config var/surat.toml"),
        ("./.venv/bin/surat", None, None, ".venv/bin/surat"),
        # installed: the name on PATH is this program
        ("/opt/surat/bin/surat", "/opt/surat/bin/surat", "/var/lib/surat/surat.toml",
         "surat --config /var/lib/surat/surat.toml"),
        ("/opt/surat/bin/surat", None, "surat.toml", "/opt/surat/bin/surat"),
        # `python -m surat`, tests: the plain name
        ("/usr/lib/python3/surat/__main__.py", None, None, "surat"),
    ],
)  # fmt: skip
def test_command_prefix_is_what_runs_this_program_again(
    monkeypatch: pytest.MonkeyPatch, argv0: str, on_path: str | None, config: str | None, expected: str
) -> None:
    monkeypatch.setattr("sys.argv", [argv0])
    monkeypatch.setattr(shutil, "which", lambda name: on_path)
    assert cli.command_prefix(config) == expected


def test_production_hosts_follow_the_machines_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "has_ipv6", False)
    assert cli.production_hosts() == ["0.0.0.0"]


async def test_ipv4_and_ipv6_listeners_on_one_port_coexist(tmp_path: Path) -> None:
    # What quickstart writes for production must start: "0.0.0.0:P" and "[::]:P" side by side.
    if cli.production_hosts() == ["0.0.0.0"]:
        pytest.skip("this machine has no IPv6")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    servers = [await asyncio.start_server(lambda r, w: None, host, port) for host in ("0.0.0.0", "::")]
    for server in servers:
        server.close()
        await server.wait_closed()


def test_quickstart_hostname_and_idn_domain(surat: Callable[..., Run], tmp_path: Path) -> None:
    directory = tmp_path / "idn"
    result = surat(
        "quickstart",
        "--domain",
        "Bücher.example",
        "--hostname",
        "MX1.bücher.example",
        "--dir",
        str(directory),
    )
    assert result.code == 0, result.err
    config = load_config(directory / "surat.toml")
    assert config.hostname == "mx1.xn--bcher-kva.example"
    account = _in_store(config, lambda store: store.get_account("postmaster@xn--bcher-kva.example"))
    assert account is not None


def test_quickstart_refuses_to_overwrite(surat: Callable[..., Run], dev: Setup) -> None:
    before = dev.config_file.read_bytes()
    cert_before = (dev.dir / "tls" / "cert.pem").read_bytes()
    result = surat("quickstart", "--dev", "--domain", "other.test", "--dir", str(dev.dir))
    _one_line_error(result, 1, "surat.toml", "already exists")
    assert dev.config_file.read_bytes() == before
    assert (dev.dir / "tls" / "cert.pem").read_bytes() == cert_before
    assert _verify(dev.config(), POSTMASTER, dev.password)


def test_quickstart_refuses_existing_data(surat: Callable[..., Run], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "something").write_text("x")
    result = surat("quickstart", "--domain", DOMAIN, "--dir", str(tmp_path))
    _one_line_error(result, 1, "data")
    assert not (tmp_path / "surat.toml").exists()
    assert not (tmp_path / "tls").exists()


@pytest.mark.parametrize("domain", ["not a domain", "-bad.example", "a..b", "example.123", ""])
def test_quickstart_bad_domain(surat: Callable[..., Run], tmp_path: Path, domain: str) -> None:
    result = surat("quickstart", "--domain", domain, "--dir", str(tmp_path / "x"))
    _one_line_error(result, 2, "domain")
    assert not (tmp_path / "x").exists()


def test_quickstart_cleans_up_after_a_failure(
    surat: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(password: str) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "make_credentials", broken)
    directory = tmp_path / "new"
    result = surat("quickstart", "--domain", DOMAIN, "--dir", str(directory))
    _one_line_error(result, 1, "No space left")
    assert not directory.exists()  # so that quickstart can simply run again


# ----------------------------------------------------------------------------------------- domains


def test_domain_round_trip(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    assert surat("--config", c, "domain", "list").out == f"{DOMAIN}\n"
    assert surat("--config", c, "domain", "add", "Other.TEST.").code == 0
    assert surat("--config", c, "domain", "add", "bücher.example").code == 0
    assert surat("--config", c, "domain", "list").out == f"{DOMAIN}\nother.test\nxn--bcher-kva.example\n"
    _one_line_error(surat("--config", c, "domain", "add", "other.test"), 1, "already exists")
    assert surat("--config", c, "domain", "del", "other.test").code == 0
    _one_line_error(surat("--config", c, "domain", "del", "other.test"), 1, "does not exist")
    assert surat("--config", c, "domain", "list").out == f"{DOMAIN}\nxn--bcher-kva.example\n"


def test_domain_del_refuses_a_domain_with_accounts(surat: Callable[..., Run], dev: Setup) -> None:
    result = surat("--config", str(dev.config_file), "domain", "del", DOMAIN)
    _one_line_error(result, 1, "1 account")
    assert surat("--config", str(dev.config_file), "domain", "list").out == f"{DOMAIN}\n"


def test_domain_add_bad_name(surat: Callable[..., Run], dev: Setup) -> None:
    _one_line_error(surat("--config", str(dev.config_file), "domain", "add", "under_score.test"), 2, "domain")


def test_config_from_environment(
    surat: Callable[..., Run], dev: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURAT_CONFIG", str(dev.config_file))
    assert surat("domain", "list").out == f"{DOMAIN}\n"


# ----------------------------------------------------------------------------------------- users


def test_user_round_trip(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    result = surat(
        "--config", c, "user", "add", "Alice@Example.TEST", "--password-stdin", stdin="correct horse\n"
    )
    assert result.code == 0, result.err
    config = dev.config()
    assert _verify(config, f"alice@{DOMAIN}", "correct horse")
    listing = surat("--config", c, "user", "list").out.splitlines()
    assert [line.split()[0] for line in listing] == [f"alice@{DOMAIN}", POSTMASTER]
    assert "quota=unlimited" in listing[0]

    result = surat(
        "--config", c, "user", "passwd", f"alice@{DOMAIN}", "--password-stdin", stdin="battery staple\r\n"
    )
    assert result.code == 0, result.err
    assert _verify(config, f"alice@{DOMAIN}", "battery staple")
    assert not _verify(config, f"alice@{DOMAIN}", "correct horse")

    assert surat("--config", c, "user", "quota", f"alice@{DOMAIN}", "2G").code == 0
    assert "quota=2G" in surat("--config", c, "user", "list", DOMAIN).out
    account = _in_store(config, lambda store: store.get_account(f"alice@{DOMAIN}"))
    assert account is not None
    assert getattr(account, "quota_bytes", None) == 2 << 30
    assert surat("--config", c, "user", "quota", f"alice@{DOMAIN}", "none").code == 0
    assert "alice@example.test  quota=unlimited" in surat("--config", c, "user", "list").out

    assert surat("--config", c, "user", "del", f"alice@{DOMAIN}").code == 0
    assert surat("--config", c, "user", "list").out.split()[0] == POSTMASTER
    _one_line_error(surat("--config", c, "user", "del", f"alice@{DOMAIN}"), 1, "does not exist")
    _one_line_error(surat("--config", c, "user", "quota", f"alice@{DOMAIN}", "1G"), 1, "does not exist")


def test_user_admin_on_and_off(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    # quickstart's postmaster runs the admin console (issue 13)
    assert surat("--config", c, "user", "list").out.rstrip("\n").endswith("  admin")
    assert (
        surat("--config", c, "user", "add", f"bob@{DOMAIN}", "--password-stdin", stdin="secret pw\n").code
        == 0
    )
    listing = surat("--config", c, "user", "list").out.splitlines()
    assert [line.endswith("  admin") for line in listing] == [False, True]
    result = surat("--config", c, "user", "admin", f"Bob@{DOMAIN}", "on")
    assert (result.code, result.out) == (0, f"bob@{DOMAIN} is now an administrator\n")
    account = _in_store(dev.config(), lambda store: store.get_account(f"bob@{DOMAIN}"))
    assert getattr(account, "is_admin", None) is True
    result = surat("--config", c, "user", "admin", f"bob@{DOMAIN}", "off")
    assert (result.code, result.out) == (0, f"bob@{DOMAIN} is no longer an administrator\n")
    account = _in_store(dev.config(), lambda store: store.get_account(f"bob@{DOMAIN}"))
    assert getattr(account, "is_admin", None) is False
    _one_line_error(surat("--config", c, "user", "admin", f"nobody@{DOMAIN}", "on"), 1, "does not exist")
    _one_line_error(surat("--config", c, "user", "admin", f"bob@{DOMAIN}", "yes"), 2, "invalid choice")


def test_user_app_password(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    config = dev.config()
    result = surat("--config", c, "user", "app-password", POSTMASTER.upper(), "add", "phone")
    assert result.code == 0, result.err
    heading, password = result.out.splitlines()
    assert heading == f"app password phone for {POSTMASTER} (shown only now):"
    assert len(password) == 20 and password.isalnum()
    listing = surat("--config", c, "user", "app-password", POSTMASTER, "list").out
    assert re.fullmatch(r"phone  created=\S+  last_used=never\n", listing), listing

    async def login(store: Store, secret: str) -> object:
        return await authenticate_mail(store, POSTMASTER, secret, scram_iterations=4096)

    assert getattr(_in_store(config, lambda store: login(store, password)), "address", None) == POSTMASTER
    assert "last_used=never" not in surat("--config", c, "user", "app-password", POSTMASTER, "list").out
    _one_line_error(surat("--config", c, "user", "app-password", POSTMASTER, "add", "phone"), 1, "already")
    _one_line_error(surat("--config", c, "user", "app-password", POSTMASTER, "add", " "), 1, "empty")
    _one_line_error(
        surat("--config", c, "user", "app-password", f"nobody@{DOMAIN}", "list"), 1, "does not exist"
    )
    result = surat("--config", c, "user", "app-password", POSTMASTER, "revoke", "phone")
    assert (result.code, result.out) == (0, f"revoked app password phone of {POSTMASTER}\n")
    assert _in_store(config, lambda store: login(store, password)) is None
    assert surat("--config", c, "user", "app-password", POSTMASTER, "list").out == ""
    _one_line_error(
        surat("--config", c, "user", "app-password", POSTMASTER, "revoke", "phone"), 1, "no app password"
    )
    # the account password still works: the app password was only ever an addition
    assert getattr(_in_store(config, lambda store: login(store, dev.password)), "address", None) == POSTMASTER


def test_user_add_with_quota(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    result = surat(
        "--config",
        c,
        "user",
        "add",
        f"bob@{DOMAIN}",
        "--quota",
        "500M",
        "--password-stdin",
        stdin="s3cret-pw\n",
    )
    assert result.code == 0, result.err
    assert f"bob@{DOMAIN}  quota=500M  used=0" in surat("--config", c, "user", "list").out


def test_user_add_errors(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    _one_line_error(
        surat(
            "--config", c, "user", "add", "carol@elsewhere.test", "--password-stdin", stdin="long enough\n"
        ),
        1,
        "elsewhere.test is not a local domain",
    )
    _one_line_error(
        surat("--config", c, "user", "add", POSTMASTER, "--password-stdin", stdin="long enough\n"),
        1,
        "already exists",
    )
    _one_line_error(
        surat("--config", c, "user", "add", "no-at-sign", "--password-stdin", stdin="x\n"), 2, "local@domain"
    )
    _one_line_error(
        surat("--config", c, "user", "add", f"a..b@{DOMAIN}", "--password-stdin", stdin="x\n"), 2, "dot-atom"
    )
    _one_line_error(
        surat("--config", c, "user", "add", f"a+b@{DOMAIN}", "--password-stdin", stdin="x\n"), 2, "plus"
    )
    _one_line_error(
        surat("--config", c, "user", "add", f"d@{DOMAIN}", "--password-stdin", stdin="short\n"), 1, "short"
    )
    _one_line_error(
        surat("--config", c, "user", "add", f"d@{DOMAIN}", "--password-stdin", stdin=""), 1, "no password"
    )
    _one_line_error(
        surat("--config", c, "user", "add", f"d@{DOMAIN}", "--password-stdin", stdin="bad\x07password\n"),
        1,
        "password",
    )
    _one_line_error(surat("--config", c, "user", "add", f"d@{DOMAIN}", "--quota", "lots"), 2, "size")
    # Without a terminal and without --password-stdin there is nobody to ask.
    _one_line_error(
        surat("--config", c, "user", "add", f"d@{DOMAIN}", stdin="ignored\n"), 2, "--password-stdin"
    )
    _one_line_error(
        surat("--config", c, "user", "passwd", f"nobody@{DOMAIN}", "--password-stdin", stdin="x" * 9),
        1,
        "does not exist",
    )
    assert f"d@{DOMAIN}" not in surat("--config", c, "user", "list").out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_user_add_prompts_twice(
    surat: Callable[..., Run], dev: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = str(dev.config_file)
    answers = iter(["typed password", "typed password", "first try!", "second try"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert surat("--config", c, "user", "add", f"eve@{DOMAIN}").code == 0
    assert len(prompts) == 2
    assert _verify(dev.config(), f"eve@{DOMAIN}", "typed password")
    _one_line_error(surat("--config", c, "user", "passwd", f"eve@{DOMAIN}"), 1, "differ")
    assert _verify(dev.config(), f"eve@{DOMAIN}", "typed password")


# ----------------------------------------------------------------------------------------- aliases


def test_alias_round_trip(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    assert surat("--config", c, "alias", "add", f"Abuse@{DOMAIN}", POSTMASTER).code == 0
    assert surat("--config", c, "alias", "add", f"abuse@{DOMAIN}", "someone@remote.example").code == 0
    assert surat("--config", c, "alias", "add", f"@{DOMAIN.upper()}", POSTMASTER).code == 0
    assert surat("--config", c, "alias", "list").out.splitlines() == [
        f"@{DOMAIN} -> {POSTMASTER}",
        f"abuse@{DOMAIN} -> {POSTMASTER}",
        f"abuse@{DOMAIN} -> someone@remote.example",
    ]
    assert surat("--config", c, "alias", "list", "other.test").out == ""
    _one_line_error(surat("--config", c, "alias", "add", f"abuse@{DOMAIN}", POSTMASTER), 1, "already exists")
    assert surat("--config", c, "alias", "del", f"abuse@{DOMAIN}", "someone@remote.example").code == 0
    assert surat("--config", c, "alias", "list", DOMAIN).out.splitlines() == [
        f"@{DOMAIN} -> {POSTMASTER}",
        f"abuse@{DOMAIN} -> {POSTMASTER}",
    ]
    assert surat("--config", c, "alias", "del", f"abuse@{DOMAIN}").code == 0
    assert surat("--config", c, "alias", "del", f"@{DOMAIN}").code == 0
    assert surat("--config", c, "alias", "list").out == ""
    _one_line_error(surat("--config", c, "alias", "del", f"abuse@{DOMAIN}"), 1, "does not exist")


def test_alias_errors(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    _one_line_error(
        surat("--config", c, "alias", "add", "x@remote.example", POSTMASTER), 1, "not a local domain"
    )
    _one_line_error(
        surat("--config", c, "alias", "add", f"x@{DOMAIN}", f"typo@{DOMAIN}"), 1, "no account or alias"
    )
    _one_line_error(surat("--config", c, "alias", "add", POSTMASTER, f"x@{DOMAIN}"), 1, "is an account")
    _one_line_error(surat("--config", c, "alias", "add", "@", POSTMASTER), 2, "domain")
    _one_line_error(surat("--config", c, "alias", "add", f"x@{DOMAIN}", "not-an-address"), 2, "target")
    _one_line_error(surat("--config", c, "alias", "add", f"x@{DOMAIN}"), 2, "TARGET")
    # A plus-address of an account is a valid target.
    assert surat("--config", c, "alias", "add", f"x@{DOMAIN}", f"postmaster+x@{DOMAIN}").code == 0


def test_alias_add_refuses_a_loop_and_names_it(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    assert surat("--config", c, "alias", "add", f"a@{DOMAIN}", POSTMASTER).code == 0
    assert surat("--config", c, "alias", "add", f"b@{DOMAIN}", f"a@{DOMAIN}").code == 0
    _one_line_error(
        surat("--config", c, "alias", "add", f"a@{DOMAIN}", f"b@{DOMAIN}"),
        1,
        f"alias a@{DOMAIN} -> b@{DOMAIN} would make a loop: a@{DOMAIN} -> b@{DOMAIN} -> a@{DOMAIN}",
    )
    assert surat("--config", c, "alias", "list").out.splitlines() == [
        f"a@{DOMAIN} -> {POSTMASTER}",
        f"b@{DOMAIN} -> a@{DOMAIN}",
    ]


# ----------------------------------------------------------------------------------------- blocks


def test_blocks_list_and_lift(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    config = dev.config()

    async def guess(store: Store) -> None:
        limiter = StoreAuthLimiter(store, BlockPolicy.from_config(config.limits))
        for _ in range(config.limits.auth_max_failures):
            await limiter.failure("192.0.2.7", "postmaster@example.test", "imap")
            await limiter.failure("2001:db8::9", None, "smtp")

    _in_store(config, guess)
    listed = surat("--config", c, "blocks", "list")
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("192.0.2.7  until ") or lines[1].startswith("192.0.2.7  until ")
    assert any(line.startswith("2001:db8::/64 (last 2001:db8::9)  until ") for line in lines)
    assert all(line.endswith("blocks 1") for line in lines)
    assert listed.err == "2 address(es) blocked\n"
    lifted = surat("--config", c, "blocks", "lift", "192.0.2.7")
    assert (lifted.code, lifted.out) == (0, "lifted the block of 192.0.2.7\n")
    assert surat("--config", c, "blocks", "list").out.splitlines() == [
        line for line in lines if not line.startswith("192.0.2.7")
    ]
    _one_line_error(surat("--config", c, "blocks", "lift", "192.0.2.7"), 1, "192.0.2.7 is not blocked")
    _one_line_error(surat("--config", c, "blocks", "lift", "nonsense"), 2, "not an IP address")


# ----------------------------------------------------------------------------------------- queue


def _queue_one(config: Config) -> str:
    body = b"From: postmaster@example.test\r\nTo: bob@remote.example\r\nSubject: hi\r\n\r\nhello\r\n"

    async def deliver(store: Store) -> str:
        result = await store.deliver(
            Delivery(
                staged=await staged(store.blobs, body),
                size=len(body),
                internal_date=datetime.now(UTC),
                remote=OutboundMessage(
                    sender=POSTMASTER,
                    recipients=(OutboundRecipient("bob@remote.example"),),
                    authenticated_user=POSTMASTER,
                ),
            )
        )
        assert result.queue_id is not None
        return result.queue_id

    queue_id = _in_store(config, deliver)
    assert isinstance(queue_id, str)
    return queue_id


def test_queue_commands(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    config = dev.config()
    result = surat("--config", c, "queue", "list")
    assert (result.code, result.out) == (0, "")
    queue_id = _queue_one(config)

    listing = surat("--config", c, "queue", "list")
    assert listing.code == 0
    assert listing.out.startswith(queue_id)
    assert "bob@remote.example (pending)" in listing.out
    shown = surat("--config", c, "queue", "show", queue_id).out
    assert f"sender:       <{POSTMASTER}>" in shown
    assert "bob@remote.example  pending" in shown
    assert f"submitted by: {POSTMASTER}" in shown
    assert "delay notice" not in shown

    async def notified(store: Store) -> None:
        number = await store.record_attempt(queue_id, datetime.now(UTC), None, datetime.now(UTC))
        update = RecipientUpdate(0, RecipientState.PENDING, "421 4.4.1 down", delay_notified=True)
        await store.finish_attempt(queue_id, number, "421 4.4.1 down", [update], datetime.now(UTC))

    _in_store(config, notified)
    shown = surat("--config", c, "queue", "show", queue_id).out
    assert "bob@remote.example  pending  (delay notice sent)" in shown

    assert surat("--config", c, "queue", "retry", queue_id).code == 0
    entry = _in_store(config, lambda store: store.get_queue_entry(queue_id))
    assert isinstance(entry, QueueEntry)
    due = entry.next_attempt_at if entry.next_attempt_at.tzinfo else entry.next_attempt_at.replace(tzinfo=UTC)
    assert due <= datetime.now(UTC)

    assert surat("--config", c, "queue", "flush").out == "1 message(s) due now\n"
    assert surat("--config", c, "queue", "drop", queue_id).code == 0
    assert surat("--config", c, "queue", "list").out == ""
    for action in ("show", "retry", "drop"):
        _one_line_error(surat("--config", c, "queue", action, queue_id), 1, queue_id)


# ----------------------------------------------------------------------------------------- dns


def test_dns_uses_config_hostname_and_ports(surat: Callable[..., Run], dev: Setup) -> None:
    result = surat("--config", str(dev.config_file), "dns", DOMAIN)
    assert result.code == 0
    assert f"IN  MX   10 mail.{DOMAIN}." in result.out
    assert f"SRV  0 1 4650 mail.{DOMAIN}." in result.out
    # Quickstart printed the very same records.
    assert result.out.strip() in dev.output


def test_dns_refuses_a_domain_that_is_not_local_unless_forced(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    _one_line_error(
        surat("--config", c, "dns", "nosuch.example"),
        1,
        "nosuch.example is not a local domain",
        f"surat --config {c} domain add nosuch.example",
        "--force",
    )
    forced = surat("--config", c, "dns", "nosuch.example", "--force")
    assert forced.code == 0
    assert re.search(r"(?m)^nosuch\.example\.\s+3600\s+IN\s+MX\s+10 mail\.example\.test\.$", forced.out)


def test_dns_with_hostname_needs_no_config(
    surat: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = surat("dns", "Example.COM", "--hostname", "mail.example.com")
    assert result.code == 0
    assert re.search(r"(?m)^example\.com\.\s+3600\s+IN\s+MX\s+10 mail\.example\.com\.$", result.out)
    assert "SRV  0 1 993 mail.example.com." in result.out
    _one_line_error(surat("dns", "example.com"), 2, "config", "not found")
    _one_line_error(surat("dns", "exa mple.com", "--hostname", "mail.example.com"), 2, "domain")


def _published_txt(output: str, domain: str) -> dict[bytes, bytes]:
    """The TXT records of `surat dns` output as a zone file, parsed by dnspython: name -> text."""
    zone = dns.zone.from_text(output, origin=domain, relativize=False, check_origin=False)
    records: dict[bytes, bytes] = {}
    for name, rdataset in zone.iterate_rdatasets(dns.rdatatype.TXT):
        for rdata in rdataset:
            assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
            assert all(len(part) <= 255 for part in rdata.strings)  # RFC 1035 §3.3.14
            records[name.to_text().encode()] = b"".join(rdata.strings)
    return records


def _verify_with(records: dict[bytes, bytes], message: bytes) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of `message`, keys looked up in `records` only."""

    def lookup(name: bytes, timeout: float = 5, **_: object) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")

    verifier = dkimpy.DKIM(message)
    count = message.split(b"\r\n\r\n", 1)[0].count(b"DKIM-Signature:")
    return [bool(verifier.verify(idx=i, dnsfunc=lookup)) for i in range(count)]


MESSAGE = (
    b"From: Postmaster <postmaster@example.test>\r\nTo: someone@elsewhere.test\r\n"
    b"Subject: signed\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
    b"\r\nHello.\r\n"
)


def test_quickstart_creates_dkim_keys_and_prints_their_records(dev: Setup) -> None:
    config = dev.config()
    keys = data_dir_keys(config.data_dir, DOMAIN)
    assert [k.algorithm for k in keys] == [dkim.DkimAlgorithm.RSA, dkim.DkimAlgorithm.ED25519]
    # where a single-node install has always kept them
    paths = sorted((config.data_dir / "dkim" / DOMAIN).glob("*.pem"))
    assert [path.stem for path in paths] == sorted(key.selector for key in keys)
    for path in paths:
        assert (path.stat().st_mode & 0o077) == 0  # private keys: owner only
    records = _published_txt(dev.output[dev.output.index("; DNS records") :], DOMAIN)
    for key in keys:
        assert records[key.record_name.encode()] == key.txt_record.encode()


def test_dns_prints_dkim_records_that_verify_a_signed_message(surat: Callable[..., Run], dev: Setup) -> None:
    result = surat("--config", str(dev.config_file), "dns", DOMAIN)
    assert result.code == 0, result.err
    records = _published_txt(result.out, DOMAIN)
    keys = data_dir_keys(dev.config().data_dir, DOMAIN)
    assert {k.record_name.encode() for k in keys} <= records.keys()
    signed = dkim.sign(MESSAGE, DOMAIN, keys) + MESSAGE
    assert _verify_with(records, signed) == [True, True]  # RSA and Ed25519
    # The check can fail: a record for another key does not verify the signature.
    other = dkim.generate_keys(DOMAIN, datetime.now(UTC))
    wrong = {k.record_name.encode(): o.txt_record.encode() for k, o in zip(keys, other, strict=True)}
    assert _verify_with(wrong, signed) == [False, False]


def test_dns_with_hostname_reads_keys_only_with_a_config(
    surat: Callable[..., Run], dev: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_config = surat("--config", str(dev.config_file), "dns", DOMAIN, "--hostname", "mx.example.test")
    assert with_config.code == 0
    assert len([k for k in _published_txt(with_config.out, DOMAIN) if b"._domainkey." in k]) == 2
    monkeypatch.chdir(tmp_path)
    without = surat("dns", DOMAIN, "--hostname", "mx.example.test")
    assert without.code == 0
    assert "_domainkey" not in without.out and "--config" in without.out


def test_domain_add_creates_dkim_keys_and_del_keeps_them(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    data_dir = dev.config().data_dir
    added = surat("--config", c, "domain", "add", "other.test")
    assert added.code == 0, added.err
    keys = data_dir_keys(data_dir, "other.test")
    assert len(keys) == 2
    for key in keys:
        assert key.selector in added.out
    assert f"surat --config {c} dns other.test" in added.out
    records = _published_txt(surat("--config", c, "dns", "other.test").out, "other.test")
    message = MESSAGE.replace(b"example.test", b"other.test")
    assert _verify_with(records, dkim.sign(message, "other.test", keys) + message) == [True, True]
    deleted = surat("--config", c, "domain", "del", "other.test")
    assert deleted.code == 0
    assert "DKIM keys stay" in deleted.err and str(data_dir / "dkim" / "other.test") in deleted.err
    assert data_dir_keys(data_dir, "other.test") == keys  # still on disk
    # Added again: the same keys, so records already published keep verifying.
    assert surat("--config", c, "domain", "add", "other.test").code == 0
    assert data_dir_keys(data_dir, "other.test") == keys


# ----------------------------------------------------------------------------------------- check


def test_check_good_config(surat: Callable[..., Run], dev: Setup) -> None:
    result = surat("--config", str(dev.config_file), "check")
    assert result.code == 0, result.err
    assert result.out.endswith("OK\n")
    assert "1 domain(s), 1 account(s), 0 queued" in result.out
    assert "\nproxy:    PROXY protocol from (nobody)\n" in result.out


def test_check_shows_trusted_proxies(surat: Callable[..., Run], dev: Setup) -> None:
    _edit(dev, "[dns]\n", '[proxy]\ntrusted = ["127.0.0.1", "2001:db8::/32"]\n\n[dns]\n')
    result = surat("--config", str(dev.config_file), "check")
    assert result.code == 0, result.err
    assert "\nproxy:    PROXY protocol from 127.0.0.1/32, 2001:db8::/32\n" in result.out


def test_check_warns_about_a_self_signed_certificate(surat: Callable[..., Run], tmp_path: Path) -> None:
    directory = tmp_path / "prod"
    assert surat("quickstart", "--domain", "example.com", "--dir", str(directory)).code == 0
    result = surat("--config", str(directory / "surat.toml"), "check")
    assert result.code == 0, result.err
    warnings = [line for line in result.out.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: tls.cert: {directory / 'tls' / 'cert.pem'} is self-signed: other mail "
                        "servers and clients will not trust it; install one from a CA (e.g. Let's Encrypt, "
                        'README "Production")']  # fmt: skip
    assert result.out.endswith("OK, with 1 warning(s)\n")


def test_check_warns_about_a_certificate_for_another_name(surat: Callable[..., Run], dev: Setup) -> None:
    _edit(dev, f'hostname = "mail.{DOMAIN}"', 'hostname = "mx.elsewhere.example"')
    result = surat("--config", str(dev.config_file), "check")
    assert result.code == 0, result.err
    assert (
        "does not cover hostname mx.elsewhere.example (it names mail.example.test, localhost, mta-sts.example.test, autoconfig.example.test, autodiscover.example.test)"
        in result.out
    )
    assert result.out.endswith("OK, with 1 warning(s)\n")


def test_certificate_warnings_expiry_and_wildcards(dev: Setup) -> None:
    cert = dev.dir / "tls" / "cert.pem"
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    soon = leaf.not_valid_after_utc - timedelta(days=3, hours=1)
    (warning,) = certificate_warnings(cert, f"mail.{DOMAIN}", soon)
    assert warning.startswith(f"{cert} expires in 3 day(s), on ")
    assert certificate_warnings(cert, f"mail.{DOMAIN}", leaf.not_valid_after_utc - timedelta(days=15)) == []
    assert certificate_warnings(cert, "LOCALHOST.", soon)[1:] == []


@pytest.mark.parametrize(
    ("pattern", "hostname", "matches"),
    [("*.example.com", "mail.example.com", True), ("*.example.com", "a.b.example.com", False),
     ("*.example.com", "example.com", False), ("Mail.Example.com", "mail.example.com.", True)],
)  # fmt: skip
def test_wildcard_names_cover_one_label(pattern: str, hostname: str, matches: bool) -> None:
    assert tls_module._name_matches(pattern, hostname) is matches


def _edit(setup: Setup, old: str, new: str) -> None:
    text = setup.config_file.read_text()
    assert old in text
    setup.config_file.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "case",
    [
        ("[dns]\n", "[dns]\nresolver = 1\n", "dns.resolver", "unknown setting"),
        ("smtp        = [", "smpt = []\nsmtp = [", "listen.smpt", "unknown setting"),
        ('"127.0.0.1:2525"', '"127.0.0.1"', "listen.smtp", "host:port"),
        ('"127.0.0.1:1430"', '"127.0.0.1:99999"', "listen.imap", "range"),
        ('cert = "tls/cert.pem"', 'cert = "tls/missing.pem"', "tls.cert", "does not exist"),
        ('hostname = "', 'hostname = "bad_name', "hostname", "host name"),
    ],
)
def test_check_broken_config(surat: Callable[..., Run], dev: Setup, case: tuple[str, str, str, str]) -> None:
    old, new, key, word = case
    _edit(dev, old, new)
    result = surat("--config", str(dev.config_file), "check")
    _one_line_error(result, 2, f"surat: config: {key}: ", word)
    assert result.out == ""


def test_check_mismatched_key(surat: Callable[..., Run], dev: Setup) -> None:
    _edit(dev, 'key  = "tls/key.pem"', 'key  = "tls/ca-key.pem"')
    _one_line_error(
        surat("--config", str(dev.config_file), "check"), 2, "surat: config: tls.key: ", "does not match"
    )


def test_check_garbage_cert(surat: Callable[..., Run], dev: Setup) -> None:
    (dev.dir / "tls" / "cert.pem").write_text("not a certificate\n")
    _one_line_error(surat("--config", str(dev.config_file), "check"), 2, "tls.cert")


def test_check_invalid_toml_and_missing_file(surat: Callable[..., Run], dev: Setup, tmp_path: Path) -> None:
    dev.config_file.write_text("hostname = \n")
    _one_line_error(surat("--config", str(dev.config_file), "check"), 2, "config", "TOML")
    _one_line_error(surat("--config", str(tmp_path / "none.toml"), "check"), 2, "not found", "quickstart")


def test_check_unusable_data_dir(surat: Callable[..., Run], dev: Setup) -> None:
    shutil.rmtree(dev.dir / "data")
    (dev.dir / "data").write_text("a file, not a directory\n")
    _one_line_error(surat("--config", str(dev.config_file), "check"), 1, "cannot open the store")


def test_user_del_mentions_aliases_left_behind(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    added = surat("--config", c, "user", "add", f"zoe@{DOMAIN}", "--password-stdin", stdin="zoe's password\n")
    assert added.code == 0
    assert surat("--config", c, "alias", "add", f"info@{DOMAIN}", f"zoe@{DOMAIN}").code == 0
    result = surat("--config", c, "user", "del", f"zoe@{DOMAIN}")
    assert result.code == 0
    assert f"info@{DOMAIN}" in result.err


def test_serve_with_a_broken_config_exits_2(surat: Callable[..., Run], dev: Setup) -> None:
    _edit(dev, "message_size = 52428800", "message_size = 12")
    _one_line_error(surat("--config", str(dev.config_file), "serve"), 2, "limits.message_size")


def test_serve_with_a_bad_certificate_exits_2(surat: Callable[..., Run], dev: Setup) -> None:
    (dev.dir / "tls" / "key.pem").write_text("junk\n")
    _one_line_error(
        surat("--config", str(dev.config_file), "serve"), 2, "tls.key", "no valid PEM private key"
    )


# ----------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["user"],
        ["user", "add"],
        ["user", "quota", "a@b.test"],
        ["queue", "show"],
        ["quickstart"],
        ["domain", "add", "a.test", "b.test"],
        ["--config"],
    ],
)
def test_usage_errors_are_one_line_exit_2(surat: Callable[..., Run], argv: list[str]) -> None:
    _one_line_error(surat(*argv), 2, "--help")


def test_help_and_version(surat: Callable[..., Run]) -> None:
    result = surat("--help")
    assert result.code == 0
    for command in ("quickstart", "serve", "domain", "user", "alias", "queue", "dns", "check"):
        assert command in result.out
    assert surat("user", "add", "--help").code == 0
    assert surat("--version").out.startswith("surat ")


def test_unexpected_errors_are_one_line(
    surat: Callable[..., Run], dev: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(config: Config) -> int:
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli, "run_server", boom)
    _one_line_error(surat("--config", str(dev.config_file), "serve"), 1, "RuntimeError", "something broke")


# ----------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("a-b.c1.test", "a-b.c1.test"),
    ],
)
def test_normalize_domain(text: str, expected: str) -> None:
    assert normalize_domain(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", ".", "a..b", "-a.test", "a-.test", "a_b.test", "a b.test", "1.2.3.4", "a" * 64 + ".test", "é" * 70],
)
def test_normalize_domain_rejects(text: str) -> None:
    with pytest.raises(cli.UsageError):
        normalize_domain(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("first.last@example.com", "first.last@example.com"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("jürgen@bücher.example", "jürgen@xn--bcher-kva.example"),
        ("a@b@example.com", None),
        ("@example.com", None),
        ("user@", None),
        (".user@example.com", None),
        ("user.@example.com", None),
        ("us er@example.com", None),
        ('"quoted"@example.com', None),
        ("x" * 65 + "@example.com", None),
    ],
)
def test_normalize_address(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(cli.UsageError):
            normalize_address(text)
    else:
        assert normalize_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1024", 1024), ("1K", 1024), ("500M", 500 << 20), ("2G", 2 << 30), ("1t", 1 << 40), ("3GB", 3 << 30)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected
    assert parse_size(cli.format_size(expected)) == expected


@pytest.mark.parametrize("text", ["", "G", "-1", "1.5G", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(cli.UsageError):
        parse_size(text)


def test_queue_list_and_show_escape_control_characters(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    config = dev.config()
    queue_id = _queue_one(config)
    hostile = "421 4.4.1 \x1b[2Jdown\rX-Evil: 1"

    async def attempted(store: Store) -> None:
        number = await store.record_attempt(queue_id, datetime.now(UTC), "mx\x1b]0;t\x07", datetime.now(UTC))
        update = RecipientUpdate(0, RecipientState.PENDING, hostile)
        await store.finish_attempt(queue_id, number, hostile, [update], datetime.now(UTC))

    _in_store(config, attempted)
    shown = surat("--config", c, "queue", "show", queue_id).out
    assert "    last reply: 421 4.4.1 \\x1b[2Jdown\\rX-Evil: 1\n" in shown
    assert "mx\\x1b]0;t\\x07: " in shown
    listing = surat("--config", c, "queue", "list").out
    for output in (shown, listing):
        assert all(line.isprintable() for line in output.splitlines())


def test_check_warns_about_loose_modes(surat: Callable[..., Run], dev: Setup) -> None:
    data = dev.config().data_dir
    assert "warning" not in surat("--config", str(dev.config_file), "check").out  # quickstart's modes
    (data / INDEX_FILE).chmod(0o644)
    data.chmod(0o755)
    result = surat("--config", str(dev.config_file), "check")
    assert result.code == 0
    warnings = [line for line in result.out.splitlines() if line.startswith("warning: ")]
    assert warnings[:2] == [
        f"warning: {data} has mode 0755, others may read it; chmod 0700 it",
        f"warning: {data / INDEX_FILE} has mode 0644, others may read it; chmod 0600 it",
    ]
    # and SQLite's -wal/-shm files, made with the mode of the index file while the check had it open
    assert all(line.startswith(f"warning: {data / INDEX_FILE}-") for line in warnings[2:])


def test_quickstart_writes_the_web_listeners(dev: Setup, surat: Callable[..., Run], tmp_path: Path) -> None:
    config = dev.config()
    assert config.listen.https == (HostPort("127.0.0.1", 4443),)
    assert config.listen.http == (HostPort("127.0.0.1", 8000),)
    assert config.listen.admin == (HostPort("127.0.0.1", 8081),)
    assert config.mta_sts.mode == "testing" and config.mta_sts.max_age == 604800
    assert "Admin console and metrics: http://127.0.0.1:8081/" in dev.output
    directory = tmp_path / "prod"
    assert surat("quickstart", "--domain", "example.com", "--dir", str(directory)).code == 0
    production = load_config(directory / "surat.toml")
    assert production.listen.https[0] == HostPort("0.0.0.0", 443)
    assert production.listen.http[0] == HostPort("0.0.0.0", 80)
    assert production.listen.admin == (HostPort("127.0.0.1", 8080),)  # loopback only, however many hosts


def test_dns_sts_id_follows_the_configured_policy(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)

    def sts_id() -> str:
        out = surat("--config", c, "dns", DOMAIN).out
        match = re.search(r'"v=STSv1; id=([A-Za-z0-9]+)"', out)
        assert match is not None, out
        assert f"mta-sts.{DOMAIN}." in out
        return match[1]

    testing = sts_id()
    assert sts_id() == testing
    text = dev.config_file.read_text()
    dev.config_file.write_text(text.replace('mode = "testing"', 'mode = "enforce"'))
    assert dev.config().mta_sts.mode == "enforce"
    assert sts_id() != testing


def _scripts(config: Config, address: str) -> dict[str, tuple[bool, str]]:
    async def read(store: Store) -> dict[str, tuple[bool, str]]:
        account = await store.get_account(address)
        assert account is not None
        return {s.name: (s.active, s.text) for s in await store.list_sieve_scripts(account.id)}

    result = _in_store(config, read)
    assert isinstance(result, dict)
    return result


def test_sieve_put_get_list_activate_del(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    script = dev.dir / "filters.sieve"
    script.write_text('require "fileinto";\nif header :contains "subject" "[list]" { fileinto "Lists"; }\n')
    assert surat("--config", c, "sieve", "put", POSTMASTER, "filters", str(script)).code == 0
    assert surat("--config", c, "sieve", "put", POSTMASTER, "other", "-", stdin="keep;\n").code == 0
    assert surat("--config", c, "sieve", "list", POSTMASTER).out == "filters\nother\n"
    assert surat("--config", c, "sieve", "activate", POSTMASTER, "filters").code == 0
    assert surat("--config", c, "sieve", "list", POSTMASTER).out == "filters  (active)\nother\n"
    assert surat("--config", c, "sieve", "get", POSTMASTER, "filters").out == script.read_text()
    # RFC 5804 §2.10: the active script is not deleted.
    _one_line_error(surat("--config", c, "sieve", "del", POSTMASTER, "filters"), 1, "filters is active")
    assert surat("--config", c, "sieve", "del", POSTMASTER, "other").code == 0
    assert surat("--config", c, "sieve", "deactivate", POSTMASTER).code == 0
    assert surat("--config", c, "sieve", "del", POSTMASTER, "filters").code == 0
    assert surat("--config", c, "sieve", "list", POSTMASTER).out == ""
    _one_line_error(surat("--config", c, "sieve", "get", POSTMASTER, "filters"), 1, "no script filters")
    _one_line_error(surat("--config", c, "sieve", "activate", POSTMASTER, "nope"), 1, "nope")
    _one_line_error(surat("--config", c, "sieve", "list", "nobody@example.test"), 1, "does not exist")


def test_sieve_put_and_check_refuse_a_broken_script_with_its_line(
    surat: Callable[..., Run], dev: Setup, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.sieve"
    bad.write_text('keep;\nrequire "fileinto";\n')  # require after another command
    result = surat("sieve", "check", str(bad))
    _one_line_error(result, 1, "line 2")
    good = tmp_path / "good.sieve"
    good.write_text("keep;\n")
    assert surat("sieve", "check", str(good)).out == f"{good}: ok\n"
    result = surat("--config", str(dev.config_file), "sieve", "put", POSTMASTER, "bad", str(bad))
    _one_line_error(result, 1, "script bad: line 2")
    assert _scripts(dev.config(), POSTMASTER) == {}


def test_user_vacation_and_forward_chain_with_the_users_script(surat: Callable[..., Run], dev: Setup) -> None:
    c = str(dev.config_file)
    assert surat("--config", c, "sieve", "put", POSTMASTER, "mine", "-", stdin="keep;\n").code == 0
    assert surat("--config", c, "sieve", "activate", POSTMASTER, "mine").code == 0
    on = surat(
        "--config",
        c,
        "user",
        "vacation",
        POSTMASTER,
        "on",
        "--subject",
        "Away",
        "--days",
        "3",
        stdin="Back soon.\n",
    )
    assert on.out == f"vacation of {POSTMASTER} is on; active script: surat-vacation\n"
    scripts = _scripts(dev.config(), POSTMASTER)
    active, text = scripts["surat-vacation"]
    assert active
    assert 'vacation :days 3 :subject "Away" text:\nBack soon.\n.\n;\n' in text
    assert text.endswith('include :personal :optional "mine";\n')
    forward = surat("--config", c, "user", "forward", POSTMASTER, "Friend@Example.NET", "--keep")
    assert forward.out == f"forward of {POSTMASTER} is on; active script: surat-vacation\n"
    scripts = _scripts(dev.config(), POSTMASTER)
    assert scripts["surat-vacation"][1].endswith('include :personal :optional "surat-forward";\n')
    assert 'redirect :copy "friend@example.net";\n' in scripts["surat-forward"][1]
    assert scripts["surat-forward"][1].endswith('include :personal :optional "mine";\n')
    assert surat("--config", c, "user", "vacation", POSTMASTER, "off").out.endswith(
        "active script: surat-forward\n"
    )
    assert set(_scripts(dev.config(), POSTMASTER)) == {"mine", "surat-forward"}
    assert surat("--config", c, "user", "forward", POSTMASTER, "off").out.endswith("active script: mine\n")
    assert _scripts(dev.config(), POSTMASTER) == {"mine": (True, "keep;\n")}
    # Without a script of one's own, turning the last generated one off leaves none active.
    assert surat("--config", c, "sieve", "deactivate", POSTMASTER).code == 0
    assert surat("--config", c, "user", "forward", POSTMASTER, "x@example.net").code == 0
    assert surat("--config", c, "user", "forward", POSTMASTER, "off").out.endswith("active script: none\n")
    _one_line_error(surat("--config", c, "user", "vacation", POSTMASTER, "on", stdin=""), 2, "stdin")
