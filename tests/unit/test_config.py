"""surat.config: tables of good and bad configurations, as TOML text and as parsed dicts."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from surat.config import (
    CertificatePair,
    Config,
    ConfigError,
    HostPort,
    LimitsConfig,
    TlsReportsConfig,
    config_path,
    load_config,
    parse_config,
)
from surat.delivery.queue import RunnerSettings


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    # The loader only checks that the files exist; their contents are `surat check`'s business.
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("cert")
    (tmp_path / "tls" / "key.pem").write_text("key")
    return tmp_path


def _load(directory: Path, text: str) -> Config:
    path = directory / "surat.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path)


FULL = """
    hostname = "Mail.Example.COM"
    data_dir = "var/data"
    [tls]
    cert = "tls/cert.pem"
    key = "tls/key.pem"
    ca = "tls/ca.pem"
    [listen]
    smtp = ["0.0.0.0:25", "[::]:25"]
    submission = ["127.0.0.1:587"]
    submissions = ["0.0.0.0:465"]
    imap = []
    imaps = ["[2001:db8::1]:993"]
    pop3 = "0.0.0.0:110"
    pop3s = ["0.0.0.0:0"]
    [dns]
    nameservers = ["127.0.0.1:5353"]
    timeout = 2.5
    [limits]
    message_size = 1048576
    recipients = 100
    smtp_idle_timeout = 60
    bad_commands = 3
    auth_failure_delay = 0
    [delivery]
    routes = { "Example.NET." = "127.0.0.1:2526" }
    smarthost = "smtp.provider.example:587"
"""


def test_full_config(tls_dir: Path) -> None:
    config = _load(tls_dir, FULL)
    assert config.hostname == "mail.example.com"
    assert config.data_dir == tls_dir.resolve() / "var" / "data"
    assert config.path == tls_dir / "surat.toml"
    assert config.tls.cert == tls_dir.resolve() / "tls" / "cert.pem"
    assert config.tls.key == tls_dir.resolve() / "tls" / "key.pem"
    assert config.tls.ca == tls_dir.resolve() / "tls" / "ca.pem"  # informational: need not exist
    assert config.listen.smtp == (HostPort("0.0.0.0", 25), HostPort("::", 25))
    assert config.listen.submission == (HostPort("127.0.0.1", 587),)
    assert config.listen.imap == ()
    assert config.listen.imaps == (HostPort("2001:db8::1", 993),)
    assert config.listen.pop3 == (HostPort("0.0.0.0", 110),)  # a single string is accepted
    assert config.listen.pop3s == (HostPort("0.0.0.0", 0),)  # port 0: tests bind ephemeral ports
    assert config.dns.nameservers == (HostPort("127.0.0.1", 5353),)
    assert config.dns.timeout == 2.5
    assert config.limits == LimitsConfig(
        message_size=1048576, recipients=100, smtp_idle_timeout=60, bad_commands=3, auth_failure_delay=0
    )
    assert dict(config.delivery.routes) == {"example.net": HostPort("127.0.0.1", 2526)}
    assert config.delivery.smarthost == HostPort("smtp.provider.example", 587)


def test_session_limits(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'hostname = "mx.example.org"\n[limits]\njunk_commands = 20\nsmtp_session_deadline = 600\n'
        "pop3_session_deadline = 900.5\nimap_session_deadline = 7200\n",
    )
    assert config.limits.junk_commands == 20
    assert config.limits.smtp_session_deadline == 600
    assert config.limits.pop3_session_deadline == 900.5
    assert config.limits.imap_session_deadline == 7200
    # The defaults: Postfix's junk command limit; an hour for SMTP and POP3; a day for IMAP (IDLE).
    defaults = LimitsConfig()
    assert defaults.junk_commands == 100
    assert (defaults.smtp_session_deadline, defaults.pop3_session_deadline) == (3600, 3600)
    assert defaults.imap_session_deadline == 86400


def test_minimal_config_uses_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, 'hostname = "mx.example.org"\n')
    assert config.data_dir == tmp_path.resolve() / "data"
    assert config.tls.cert is None
    assert config.listen.smtp == ()
    assert config.dns.nameservers == ()
    assert config.limits == LimitsConfig()
    assert config.limits.message_size == 52428800
    assert config.limits.recipients == 1000
    assert dict(config.delivery.routes) == {}
    assert config.delivery.smarthost is None


def test_default_dns_timeout(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).dns.timeout == 5.0


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    config = _load(tmp_path, f'hostname = "mx.example.org"\ndata_dir = "{tmp_path / "elsewhere"}"\n')
    assert config.data_dir == tmp_path / "elsewhere"


def test_hostport_str_round_trip() -> None:
    for text in ("0.0.0.0:25", "[::1]:993", "mail.example.com:587"):
        assert str(HostPort.parse(text, "k")) == text


BASE: dict[str, Any] = {"hostname": "mail.example.com"}
WITH_TLS: dict[str, Any] = {**BASE, "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"}}

# (name, document, key the error must name, a word of the problem)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("no hostname", {}, "hostname", "missing"),
    ("empty hostname", {"hostname": ""}, "hostname", "non-empty"),
    ("hostname not a string", {"hostname": 5}, "hostname", "string"),
    ("hostname with underscore", {"hostname": "mail_1.example.com"}, "hostname", "valid host name"),
    ("hostname with space", {"hostname": "mail example.com"}, "hostname", "valid host name"),
    ("hostname empty label", {"hostname": "mail..example.com"}, "hostname", "valid host name"),
    ("hostname long label", {"hostname": "a" * 64 + ".example.com"}, "hostname", "valid host name"),
    ("imap without a certificate", {**BASE, "listen": {"imap": ["0.0.0.0:143"]}}, "tls.cert", "required"),
    (
        "unknown top-level key",
        {**BASE, "hostnme": "x"},
        "hostnme",
        "unknown setting (did you mean hostname?)",
    ),
    # a typo of a required key is reported as the typo, not as the key missing
    (
        "misspelt hostname",
        {"hostnam": "mail.example.com"},
        "hostnam",
        "unknown setting (did you mean hostname?)",
    ),
    (
        "misspelt limits key",
        {**BASE, "limits": {"mesage_size": 5}},
        "limits.mesage_size",
        "did you mean message_size?",
    ),
    ("unknown listen role", {**BASE, "listen": {"smtpx": ["0.0.0.0:25"]}}, "listen.smtpx", "unknown"),
    ("unknown limits key", {**BASE, "limits": {"size": 5}}, "limits.size", "unknown"),
    ("unknown tls key", {**WITH_TLS, "tls": {**WITH_TLS["tls"], "chain": "x"}}, "tls.chain", "unknown"),
    ("unknown delivery key", {**BASE, "delivery": {"relay": "x"}}, "delivery.relay", "unknown"),
    ("listen is not a table", {**BASE, "listen": "0.0.0.0:25"}, "listen", "table"),
    ("address without port", {**BASE, "listen": {"smtp": ["0.0.0.0"]}}, "listen.smtp", "host:port"),
    ("address without host", {**BASE, "listen": {"smtp": [":25"]}}, "listen.smtp", "host:port"),
    ("port not a number", {**BASE, "listen": {"smtp": ["0.0.0.0:smtp"]}}, "listen.smtp", "host:port"),
    ("port out of range", {**BASE, "listen": {"smtp": ["0.0.0.0:65536"]}}, "listen.smtp", "range"),
    ("negative port", {**BASE, "listen": {"imap": ["0.0.0.0:-1"]}}, "listen.imap", "host:port"),
    ("bad IPv6", {**BASE, "listen": {"imap": ["[::g]:143"]}}, "listen.imap", "IPv6"),
    ("listener not a string", {**BASE, "listen": {"imap": [143]}}, "listen.imap", "host:port"),
    ("listen list is a number", {**BASE, "listen": {"imap": 143}}, "listen.imap", "list"),
    ("bad nameserver", {**BASE, "dns": {"nameservers": ["8.8.8.8"]}}, "dns.nameservers", "host:port"),
    ("dns timeout too small", {**BASE, "dns": {"timeout": 0}}, "dns.timeout", "at least"),
    # DANE trusts the AD bit only from a resolver on this machine (issue 15)
    (
        "dnssec_trusted, system resolver",
        {**BASE, "dns": {"dnssec_trusted": True}},
        "dns.dnssec_trusted",
        "loopback",
    ),
    (
        "dnssec_trusted, remote resolver",
        {**BASE, "dns": {"dnssec_trusted": True, "nameservers": ["127.0.0.1:53", "192.0.2.53:53"]}},
        "dns.dnssec_trusted",
        "loopback",
    ),
    (
        "require_tls_domains not a list",
        {**BASE, "delivery": {"require_tls_domains": "example.com"}},
        "delivery.require_tls_domains",
        "list",
    ),
    ("message_size a string", {**BASE, "limits": {"message_size": "50M"}}, "limits.message_size", "number"),
    ("message_size a bool", {**BASE, "limits": {"message_size": True}}, "limits.message_size", "number"),
    ("message_size too small", {**BASE, "limits": {"message_size": 10}}, "limits.message_size", "at least"),
    ("recipients below 100", {**BASE, "limits": {"recipients": 99}}, "limits.recipients", "at least"),
    ("bad_commands zero", {**BASE, "limits": {"bad_commands": 0}}, "limits.bad_commands", "at least"),
    (
        "negative auth delay",
        {**BASE, "limits": {"auth_failure_delay": -1}},
        "limits.auth_failure_delay",
        "least",
    ),
    (
        "connections_per_ip zero",
        {**BASE, "limits": {"connections_per_ip": 0}},
        "limits.connections_per_ip",
        "least",
    ),
    (
        "connections_total a string",
        {**BASE, "limits": {"connections_total": "9"}},
        "limits.connections_total",
        "number",
    ),
    (
        "auth_max_failures zero",
        {**BASE, "limits": {"auth_max_failures": 0}},
        "limits.auth_max_failures",
        "least",
    ),
    ("auth_block zero", {**BASE, "limits": {"auth_block": 0}}, "limits.auth_block", "least"),
    (
        "messages_per_hour zero",
        {**BASE, "limits": {"messages_per_hour": 0}},
        "limits.messages_per_hour",
        "least",
    ),
    (
        "recipients_per_hour bool",
        {**BASE, "limits": {"recipients_per_hour": True}},
        "limits.recipients_per_hour",
        "number",
    ),
    ("greet_pause negative", {**BASE, "limits": {"greet_pause": -1}}, "limits.greet_pause", "least"),
    ("junk_commands zero", {**BASE, "limits": {"junk_commands": 0}}, "limits.junk_commands", "at least"),
    (
        "smtp_session_deadline zero",
        {**BASE, "limits": {"smtp_session_deadline": 0}},
        "limits.smtp_session_deadline",
        "at least",
    ),
    (
        "pop3_session_deadline a string",
        {**BASE, "limits": {"pop3_session_deadline": "1h"}},
        "limits.pop3_session_deadline",
        "number",
    ),
    (
        "imap_session_deadline a bool",
        {**BASE, "limits": {"imap_session_deadline": True}},
        "limits.imap_session_deadline",
        "number",
    ),
    (
        "misspelled session deadline",
        {**BASE, "limits": {"session_deadline": 60}},
        "limits.session_deadline",
        "unknown",
    ),
    ("mail_auth not a boolean", {**BASE, "limits": {"mail_auth": "no"}}, "limits.mail_auth", "true or false"),
    (
        "unknown_recipients zero",
        {**BASE, "limits": {"unknown_recipients": 0}},
        "limits.unknown_recipients",
        "least",
    ),
    ("dnsbl a string", {**BASE, "limits": {"dnsbl": "zen.example"}}, "limits.dnsbl", "list"),
    ("dnsbl bad zone", {**BASE, "limits": {"dnsbl": ["bad zone"]}}, "limits.dnsbl", "host name"),
    (
        "trusted_arc_sealers a string",
        {**BASE, "limits": {"trusted_arc_sealers": "lists.example"}},
        "limits.trusted_arc_sealers",
        "list",
    ),
    (
        "trusted_arc_sealers bad name",
        {**BASE, "limits": {"trusted_arc_sealers": ["lists example"]}},
        "limits.trusted_arc_sealers",
        "host name",
    ),
    (
        "trusted_arc_sealers not a string",
        {**BASE, "limits": {"trusted_arc_sealers": [1]}},
        "limits.trusted_arc_sealers",
        "DNS name",
    ),
    (
        "TLS listener without cert",
        {**BASE, "listen": {"submissions": ["0.0.0.0:465"]}},
        "tls.cert",
        "required",
    ),
    (
        "cert file missing",
        {**BASE, "tls": {"cert": "nope.pem", "key": "tls/key.pem"}},
        "tls.cert",
        "not exist",
    ),
    (
        "key file missing",
        {**BASE, "tls": {"cert": "tls/cert.pem", "key": "nope.pem"}},
        "tls.key",
        "not exist",
    ),
    ("cert path empty", {**BASE, "tls": {"cert": ""}}, "tls.cert", "non-empty"),
    (
        "bad route",
        {**BASE, "delivery": {"routes": {"example.net": "relay"}}},
        "delivery.routes.example.net",
        "",
    ),
    (
        "route not a string",
        {**BASE, "delivery": {"routes": {"example.net": 25}}},
        "delivery.routes.example.net",
        "",
    ),
    ("bad smarthost", {**BASE, "delivery": {"smarthost": "provider"}}, "delivery.smarthost", "host:port"),
    ("data_dir not a string", {**BASE, "data_dir": 1}, "data_dir", "string"),
    (
        "tls.certificates a table",
        {**BASE, "tls": {**WITH_TLS["tls"], "certificates": {"cert": "tls/cert.pem"}}},
        "tls.certificates",
        "array of tables",
    ),
    (
        "tls.certificates of strings",
        {**BASE, "tls": {**WITH_TLS["tls"], "certificates": ["tls/cert.pem"]}},
        "tls.certificates[0]",
        "expected a table",
    ),
    (
        "tls.certificates without key",
        {**BASE, "tls": {**WITH_TLS["tls"], "certificates": [{"cert": "tls/cert.pem"}]}},
        "tls.certificates[0].key",
        "missing",
    ),
    (
        "tls.certificates unknown key",
        {**BASE, "tls": {**WITH_TLS["tls"], "certificates": [{**WITH_TLS["tls"], "names": ["a"]}]}},
        "tls.certificates[0].names",
        "unknown setting",
    ),
    (
        "tls.certificates file missing",
        {
            **BASE,
            "tls": {
                **WITH_TLS["tls"],
                "certificates": [WITH_TLS["tls"], {**WITH_TLS["tls"], "cert": "two.pem"}],
            },
        },
        "tls.certificates[1].cert",
        "does not exist",
    ),
    (
        "tls.certificates without a default",
        {**BASE, "tls": {"certificates": [WITH_TLS["tls"]]}},
        "tls.cert",
        "need a default certificate",
    ),
]


def test_tls_certificates_are_read_relative_to_the_config(tls_dir: Path) -> None:
    pair = {"cert": "tls/cert.pem", "key": "tls/key.pem"}  # the loader checks only that files exist
    config = parse_config({**WITH_TLS, "tls": {**WITH_TLS["tls"], "certificates": [pair]}}, tls_dir)
    assert config.tls.certificates == (CertificatePair(tls_dir / "tls/cert.pem", tls_dir / "tls/key.pem"),)
    assert parse_config(WITH_TLS, tls_dir).tls.certificates == ()


@pytest.mark.parametrize(("document", "key", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(tls_dir: Path, document: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document, tls_dir)
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value)


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("only hostname", BASE),
    ("hostname with trailing dot", {"hostname": "mail.example.com."}),
    ("hostname single label", {"hostname": "localhost"}),
    ("port 25 alone needs no cert", {**BASE, "listen": {"smtp": ["0.0.0.0:25"]}}),
    ("every role disabled", {**BASE, "listen": {r: [] for r in ("smtp", "submission", "imaps")}}),
    (
        "TLS listeners with cert",
        {**WITH_TLS, "listen": {"submissions": ["0.0.0.0:465"], "imaps": ["[::]:993"]}},
    ),
    ("float sizes", {**BASE, "limits": {"message_size": 1e6, "smtp_idle_timeout": 0.5 + 1}}),
    ("empty tables", {**BASE, "tls": {}, "listen": {}, "dns": {}, "limits": {}, "delivery": {"routes": {}}}),
]


@pytest.mark.parametrize("document", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_config(tls_dir: Path, document: dict[str, Any]) -> None:
    config = parse_config(document, tls_dir)
    assert config.hostname.rstrip(".") == document["hostname"].lower().rstrip(".")
    assert config.data_dir == tls_dir / "data"


def test_abuse_limits(tmp_path: Path) -> None:
    text = """hostname = "mx.example.org"
[limits]
connections_per_ip = 5
connections_total = 50
auth_max_failures = 3
auth_failure_window = 60
auth_block = 30
auth_block_max = 3600
messages_per_hour = 10
recipients_per_hour = 40
greet_pause = 0
unknown_recipients = 4
dnsbl = ["Zen.Example.", "bl.example"]
"""
    limits = _load(tmp_path, text).limits
    assert (limits.connections_per_ip, limits.connections_total) == (5, 50)
    assert (limits.auth_max_failures, limits.auth_failure_window) == (3, 60)
    assert (limits.auth_block, limits.auth_block_max) == (30, 3600)
    assert (limits.messages_per_hour, limits.recipients_per_hour) == (10, 40)
    assert (limits.greet_pause, limits.unknown_recipients) == (0, 4)
    assert limits.dnsbl == ("zen.example", "bl.example")


def test_abuse_limit_defaults() -> None:
    # issue 6's documented defaults
    limits = LimitsConfig()
    assert (limits.connections_per_ip, limits.connections_total) == (20, 1000)
    assert (limits.auth_max_failures, limits.auth_failure_window) == (5, 900)
    assert (limits.messages_per_hour, limits.recipients_per_hour) == (500, 2000)
    assert limits.dnsbl == ()  # DNSBL lookups are off unless zones are configured


def test_hostname_trailing_dot_is_dropped(tmp_path: Path) -> None:
    assert parse_config({"hostname": "mail.example.com."}, tmp_path).hostname == "mail.example.com"


def test_hostname_is_stored_as_a_label(tmp_path: Path) -> None:
    # RFC 5321 §2.3.5: the EHLO domain is in A-label form (RFC 6531 §3.3 keeps it so with SMTPUTF8).
    config = parse_config({"hostname": "mail.bücher.example"}, tmp_path)
    assert config.hostname == "mail.xn--bcher-kva.example"


def test_hostname_label_with_edge_hyphen_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_config({"hostname": "-mail.example.com"}, tmp_path)


def test_missing_file_suggests_quickstart(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "surat.toml")
    assert info.value.key == ""
    assert "not found" in str(info.value)
    assert "quickstart" in str(info.value)


def test_invalid_toml_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, 'hostname = "unterminated\n')
    assert "not valid TOML" in str(info.value)


def test_non_utf8_file_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "surat.toml"
    path.write_bytes(b'hostname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid TOML" in str(info.value)


def test_unreadable_path_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert "cannot read" in str(info.value)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.pem").write_text("c")
    (tmp_path / "etc" / "k.pem").write_text("k")
    monkeypatch.chdir(tmp_path)
    config = _load(tmp_path / "etc", 'hostname = "a.example"\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n')
    assert config.tls.cert == (tmp_path / "etc" / "c.pem").resolve()
    assert config.data_dir == (tmp_path / "etc" / "data").resolve()


def test_unknown_keys_reported_in_sorted_order(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "zeta": 1, "alpha": 2}, tmp_path)
    assert info.value.key == "alpha"


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURAT_CONFIG", raising=False)
    assert config_path(None) == Path("surat.toml")
    monkeypatch.setenv("SURAT_CONFIG", "/etc/surat/surat.toml")
    assert config_path(None) == Path("/etc/surat/surat.toml")
    assert config_path("other.toml") == Path("other.toml")


def test_delivery_queue_settings(tmp_path: Path) -> None:
    defaults = parse_config(BASE, tmp_path).delivery
    assert defaults.retry_delays == (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    assert (defaults.expire_after, defaults.max_connections, defaults.max_connections_per_domain) == (
        432000.0,
        100,
        10,
    )
    delivery = {
        "retry_delays": [1, 2.5],
        "expire_after": 60,
        "max_connections": 5,
        "max_connections_per_domain": 2,
        "queue_poll_interval": 0.5,
        "connect_timeout": 3,
    }
    config = parse_config({**BASE, "delivery": delivery}, tmp_path).delivery
    assert config.retry_delays == (1.0, 2.5)
    assert (config.expire_after, config.max_connections, config.max_connections_per_domain) == (60, 5, 2)
    assert (config.queue_poll_interval, config.connect_timeout) == (0.5, 3)


def test_queue_lease_default_and_runner_setting(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).delivery.queue_lease == 120.0
    config = parse_config({**BASE, "delivery": {"queue_lease": 10}}, tmp_path)
    assert config.delivery.queue_lease == 10
    assert RunnerSettings.from_config(config).lease == timedelta(seconds=10)
    assert parse_config({**BASE, "delivery": {"queue_lease": 3600}}, tmp_path).delivery.queue_lease == 3600


@pytest.mark.parametrize(
    ("delivery", "key", "problem"),
    [
        ({"retry_delays": []}, "delivery.retry_delays", "non-empty list"),
        ({"retry_delays": "60"}, "delivery.retry_delays", "non-empty list"),
        ({"retry_delays": [60, 0]}, "delivery.retry_delays", "positive"),
        ({"retry_delays": [True]}, "delivery.retry_delays", "positive"),
        ({"expire_after": 0}, "delivery.expire_after", "at least"),
        ({"max_connections": 0}, "delivery.max_connections", "at least"),
        ({"max_connections_per_domain": "2"}, "delivery.max_connections_per_domain", "number"),
        ({"queue_poll_interval": 0}, "delivery.queue_poll_interval", "at least"),
        ({"connect_timeout": -1}, "delivery.connect_timeout", "at least"),
        ({"queue_lease": 9.5}, "delivery.queue_lease", "must be at least 10.0, got 9.5"),
        ({"queue_lease": 3601}, "delivery.queue_lease", "must be at most 3600.0, got 3601"),
        ({"queue_lease": "120"}, "delivery.queue_lease", "expected a number"),
    ],
)
def test_bad_delivery_queue_settings(
    tmp_path: Path, delivery: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "delivery": delivery}, tmp_path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_smarthost_credentials(tmp_path: Path) -> None:
    (tmp_path / "relay.pw").write_text("s3cret\n")
    delivery = {
        "smarthost": "smtp.provider.example:587",
        "smarthost_user": "me",
        "smarthost_password_file": "relay.pw",
    }
    config = parse_config({**BASE, "delivery": delivery}, tmp_path).delivery
    assert (config.smarthost_user, config.smarthost_password) == ("me", "s3cret")
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("delivery", "key", "problem"),
    [
        ({"smarthost": "relay.example:587", "smarthost_user": "me"}, "delivery.smarthost_user", "together"),
        (
            {"smarthost_user": "me", "smarthost_password_file": "relay.pw"},
            "delivery.smarthost_user",
            "smarthost",
        ),
        (
            {
                "smarthost": "relay.example:587",
                "smarthost_user": "me",
                "smarthost_password_file": "missing.pw",
            },
            "delivery.smarthost_password_file",
            "cannot read",
        ),
    ],
)
def test_bad_smarthost_credentials(tmp_path: Path, delivery: dict[str, Any], key: str, problem: str) -> None:
    (tmp_path / "relay.pw").write_text("pw")
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "delivery": delivery}, tmp_path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_trusted_arc_sealers(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).limits.trusted_arc_sealers == ()  # no override unless configured
    limits = {"trusted_arc_sealers": ["Lists.Example.", "groups.example"]}
    parsed = parse_config({**BASE, "limits": limits}, tmp_path).limits
    assert parsed.trusted_arc_sealers == ("lists.example", "groups.example")


def test_mail_auth_defaults_on_and_can_be_turned_off(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).limits.mail_auth is True
    assert parse_config({**BASE, "limits": {"mail_auth": False}}, tmp_path).limits.mail_auth is False


def test_delay_notice_after(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).delivery.delay_notice_after == 4 * 3600
    config = parse_config({**BASE, "delivery": {"delay_notice_after": 600}}, tmp_path)
    assert config.delivery.delay_notice_after == 600
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "delivery": {"delay_notice_after": 0}}, tmp_path)
    assert info.value.key == "delivery.delay_notice_after"


def test_smtp_timeouts(tmp_path: Path) -> None:
    from surat.delivery.queue import RunnerSettings

    assert parse_config(BASE, tmp_path).delivery.smtp_timeouts == {}
    config = parse_config(
        {**BASE, "delivery": {"smtp_timeouts": {"greeting": 60, "data_end": 900}}}, tmp_path
    )
    assert dict(config.delivery.smtp_timeouts) == {"greeting": 60.0, "data_end": 900.0}
    timeouts = RunnerSettings.from_config(config).timeouts
    assert (timeouts.greeting, timeouts.data_end, timeouts.mail) == (60.0, 900.0, 300.0)  # RFC 5321 §4.5.3.2
    for bad, key in (
        ({"hello": 5}, "delivery.smtp_timeouts.hello"),
        ({"mail": 0}, "delivery.smtp_timeouts.mail"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**BASE, "delivery": {"smtp_timeouts": bad}}, tmp_path)
        assert info.value.key == key


def test_scram_iterations(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).auth.scram_iterations == 65_536
    config = parse_config({**BASE, "auth": {"scram_iterations": 600_000}}, tmp_path)
    assert config.auth.scram_iterations == 600_000
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "auth": {"scram_iterations": 4095}}, tmp_path)  # RFC 7677 §4
    assert info.value.key == "auth.scram_iterations"
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "auth": {"scram_rounds": 5000}}, tmp_path)
    assert info.value.key == "auth.scram_rounds"


def test_allow_private_destinations(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).delivery.allow_private_destinations is False
    config = parse_config({**BASE, "delivery": {"allow_private_destinations": True}}, tmp_path)
    assert config.delivery.allow_private_destinations is True
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "delivery": {"allow_private_destinations": "yes"}}, tmp_path)
    assert info.value.key == "delivery.allow_private_destinations"


def test_proxy_trusted_networks(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).proxy.trusted == ()
    proxy = parse_config(
        {**BASE, "proxy": {"trusted": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}}, tmp_path
    ).proxy
    assert [str(network) for network in proxy.trusted] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
    assert proxy.is_trusted("10.1.2.3")
    assert proxy.is_trusted("::ffff:10.1.2.3")  # an IPv4 peer on a dual-stack socket
    assert proxy.is_trusted("2001:db8::5")
    assert proxy.is_trusted("192.0.2.7")
    assert not proxy.is_trusted("192.0.2.8")
    assert not proxy.is_trusted("11.0.0.1")
    assert not proxy.is_trusted("unknown")


@pytest.mark.parametrize(
    ("proxy", "key", "problem"),
    [
        ({"trusted": "10.0.0.0/8"}, "proxy.trusted", "expected a list of CIDRs"),
        ({"trusted": [10]}, "proxy.trusted", "expected CIDR strings"),
        ({"trusted": ["10.0.0.0/33"]}, "proxy.trusted", "'10.0.0.0/33' is not a CIDR"),
        ({"trusted": ["10.0.0.1/8"]}, "proxy.trusted", "has host bits set"),
        ({"trusted": ["lb.example"]}, "proxy.trusted", "is not a CIDR"),
        ({"trusted": []}, "", ""),
        ({"trustd": ["10.0.0.0/8"]}, "proxy.trustd", "unknown setting (did you mean trusted?)"),
    ],
)
def test_bad_proxy_trusted(tmp_path: Path, proxy: dict[str, Any], key: str, problem: str) -> None:
    if not key:
        assert parse_config({**BASE, "proxy": proxy}, tmp_path).proxy.trusted == ()
        return
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "proxy": proxy}, tmp_path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_dnssec_trusted_and_require_tls_domains(tmp_path: Path) -> None:
    config = parse_config(
        {
            **BASE,
            "dns": {"nameservers": ["127.0.0.1:53", "[::1]:53"], "dnssec_trusted": True},
            "delivery": {"require_tls_domains": ["Example.COM.", "bücher.example"]},
        },
        base_dir=tmp_path,
    )
    assert config.dns.dnssec_trusted is True
    assert config.delivery.require_tls_domains == ("example.com", "xn--bcher-kva.example")
    assert parse_config(BASE, base_dir=tmp_path).dns.dnssec_trusted is False


def test_mta_sts_and_web_listeners() -> None:
    config = parse_config(
        {**BASE, "listen": {"admin": ["127.0.0.1:8080"]}, "mta_sts": {"mode": "enforce", "max_age": 86400}},
        base_dir=Path("/srv"),
    )
    assert config.listen.admin == (HostPort("127.0.0.1", 8080),)
    assert (config.mta_sts.mode, config.mta_sts.max_age) == ("enforce", 86400)
    assert parse_config(BASE, base_dir=Path("/srv")).mta_sts.mode == "testing"
    for bad, key in (
        ({"mode": "strict"}, "mta_sts.mode"),
        ({"max_age": 31557601}, "mta_sts.max_age"),
        ({"max_age": 1.5}, "mta_sts.max_age"),
        ({"mod": "none"}, "mta_sts.mod"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**BASE, "mta_sts": bad}, base_dir=Path("/srv"))
        assert info.value.key == key


def test_tls_reports_and_requiretls() -> None:
    default = parse_config(BASE, base_dir=Path("/srv"))
    assert not default.tls_reports.enabled and default.tls.requiretls
    config = parse_config(
        {
            **BASE,
            "tls": {"requiretls": False},
            "tls_reports": {
                "enabled": True,
                "organization": "Org",
                "contact": "ops@example.com",
                "sender": "r@example.com",
            },
        },
        base_dir=Path("/srv"),
    )
    assert not config.tls.requiretls
    assert config.tls_reports == TlsReportsConfig(True, "Org", "ops@example.com", "r@example.com")
    for bad, key in (
        ({"sender": "nobody"}, "tls_reports.sender"),
        ({"sender": "a b@example.com"}, "tls_reports.sender"),
        ({"enabled": "yes"}, "tls_reports.enabled"),
        ({"enable": True}, "tls_reports.enable"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**BASE, "tls_reports": bad}, base_dir=Path("/srv"))
        assert info.value.key == key
