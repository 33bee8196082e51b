"""surat.toml -> frozen dataclasses, validated.

Every problem is reported as one ConfigError naming the key, so `surat serve` and `surat check`
can print a single clear line (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from surat.proto.sasl import SCRAM_ITERATIONS, SCRAM_MIN_ITERATIONS

DEFAULT_CONFIG_NAME = "surat.toml"

# The [listen] roles: the mail protocols, then the web server's (surat.web).
MAIL_ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
WEB_ROLES = ("https", "http", "admin")
LISTEN_ROLES = MAIL_ROLES + WEB_ROLES


class ConfigError(Exception):
    """A bad configuration: `key` names the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, key: str) -> HostPort:
        """Parse "host:port", "[v6]:port"; a bad value raises ConfigError(key)."""
        if not isinstance(text, str):
            raise ConfigError(key, f'expected a "host:port" string, got {text!r}')
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
        else:
            host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ConfigError(key, f'{text!r} is not of the form "host:port"')
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port {port} out of range 0-65535")
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError(key, f"{host!r} is not an IPv6 address") from None
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """One `[[tls.certificates]]` entry: a certificate served to clients asking for one of its names."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None  # informational: the dev CA that signed `cert`, printed by quickstart
    # More certificates, chosen by the name a client sends (SNI, RFC 6066 §3) among each one's DNS
    # names; `cert` above serves every other name and clients sending none.
    certificates: tuple[CertificatePair, ...] = ()
    # Offer REQUIRETLS (RFC 8689) in TLS sessions on the SMTP listeners: the relay then passes such
    # mail on only over verified TLS to next hops that offer it too, else returns it (5.7.30).
    requiretls: bool = True


@dataclass(frozen=True, slots=True)
class ListenConfig:
    smtp: tuple[HostPort, ...] = ()
    submission: tuple[HostPort, ...] = ()
    submissions: tuple[HostPort, ...] = ()
    imap: tuple[HostPort, ...] = ()
    imaps: tuple[HostPort, ...] = ()
    pop3: tuple[HostPort, ...] = ()
    pop3s: tuple[HostPort, ...] = ()
    # The embedded web server (surat.web, issue 13): account pages, client autoconfiguration and the
    # MTA-STS policy over TLS; plain HTTP that redirects there (and answers ACME challenges); the admin
    # console and /metrics, loopback by default.
    https: tuple[HostPort, ...] = ()
    http: tuple[HostPort, ...] = ()
    admin: tuple[HostPort, ...] = ()

    def tls_needed(self) -> bool:
        # Port 25 works without TLS (STARTTLS is then not offered); every other mail role logs users
        # in, which is only allowed under TLS, so it needs a certificate; so does https.
        return any(
            (self.submission, self.submissions, self.imap, self.imaps, self.pop3, self.pop3s, self.https)
        )


def admin_url(listen: ListenConfig) -> str | None:
    """Where the admin console is, for people: the first admin listener, a wildcard host as loopback."""
    if not listen.admin:
        return None
    address = listen.admin[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)  # noqa: S104
    return f"http://{HostPort(host, address.port)}/"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: tuple[HostPort, ...] = ()
    timeout: float = 5.0
    # DANE (RFC 7672) for outbound mail: trust the AD bit of the nameservers' answers. Only for a
    # validating resolver on this machine (e.g. unbound on 127.0.0.1): the bit is not protected on
    # the way from anywhere else (RFC 6698 §4.1), so the nameservers must all be loopback addresses.
    dnssec_trusted: bool = False


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    message_size: int = 50 * 1024 * 1024
    recipients: int = 1000  # RFC 5321 §4.5.3.1.8 asks for at least 100
    smtp_idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7
    bad_commands: int = 10
    # NOOP, RSET, VRFY, EXPN, HELP (SMTP) and NOOP, RSET (POP3) past this many in one session each count
    # as a bad command (Postfix's smtpd_junk_command_limit, default 100).
    junk_commands: int = 100
    # Total seconds a session may last, however active (issue 11). Idle timers restart only when a
    # command completes, not at every octet, so a client that sends one octet before each timeout
    # cannot hold a slot for ever; this caps what a slowly completing client can take. SMTP and POP3
    # sessions are short (a few messages, a maildrop download); an hour covers a 50 MB message at
    # 100 kbit/s. IMAP clients keep a connection open in IDLE for hours (RFC 2177: they re-issue IDLE
    # every 29 minutes) and reconnect when it ends, so IMAP gets a day.
    smtp_session_deadline: float = 3600.0
    pop3_session_deadline: float = 3600.0
    imap_session_deadline: float = 86400.0
    auth_failure_delay: float = 1.0
    # Abuse protection (issue 6). Connections are counted per listener.
    connections_per_ip: int = 20
    connections_total: int = 1000
    # After auth_max_failures failed logins from one IP within auth_failure_window seconds, that IP may
    # not try again for auth_block seconds, doubled at each repeat up to auth_block_max (SMTP, IMAP, POP3).
    auth_max_failures: int = 5
    auth_failure_window: float = 900.0
    auth_block: float = 300.0
    auth_block_max: float = 86400.0
    # Per authenticated user, over any sliding hour: past them submission answers 451 4.7.1.
    messages_per_hour: int = 500
    recipients_per_hour: int = 2000
    # Port 25: seconds to wait before the greeting; a client that talks meanwhile is rejected. 0 = off.
    greet_pause: float = 1.0
    # Port 25: RCPT to this many unknown local users in one session ends it (directory harvesting).
    unknown_recipients: int = 10
    # Port 25: DNS blocklist zones (RFC 5782) to look the client up in; a listed client gets 554 5.7.1.
    dnsbl: tuple[str, ...] = ()
    # Port 25: SPF, DKIM, ARC and DMARC checks with an Authentication-Results header (issue 6).
    # Off only where DNS cannot be reached (an offline dev setup, a benchmark of acceptance alone).
    mail_auth: bool = True
    # Port 25: ARC sealers (RFC 8617 §7.2) whose recorded dmarc=pass overrides a DMARC reject, e.g. the
    # mailing lists users read that rewrite messages and so break DKIM. Domains (ARC-Seal d=).
    trusted_arc_sealers: tuple[str, ...] = ()


# [delivery] queue_lease bounds, in seconds. Below 10 s the heartbeat (a third of the lease) would
# have to get through every 3 s, and a database pause that short would hand live entries to another
# node (a duplicate delivery); above an hour a node that died holds mail longer than the first
# retries of the schedule wait.
QUEUE_LEASE_MIN = 10.0
QUEUE_LEASE_MAX = 3600.0


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    routes: Mapping[str, HostPort] = field(default_factory=dict)
    smarthost: HostPort | None = None
    # Seconds to wait after the 1st, 2nd... failed attempt; the last repeats (issue 5's default).
    retry_delays: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    expire_after: float = 5 * 86400.0  # RFC 5321 §4.5.4.1: give up after 4-5 days at least
    delay_notice_after: float = 4 * 3600.0  # RFC 3461 NOTIFY=DELAY: tell the sender once, after this long
    max_connections: int = 100  # outbound SMTP connections at once, all domains together
    max_connections_per_domain: int = 10  # ... and to one destination domain
    queue_poll_interval: float = 5.0  # also see `surat queue retry/flush` run by another process
    # Seconds a queue entry's claim lasts without renewal (surat.delivery.queue.LEASE: the runner
    # renews every third of it while delivering): how long a node that died keeps its entries.
    queue_lease: float = 120.0
    connect_timeout: float = 30.0
    # RFC 5321 §4.5.3.2 client timeouts, in seconds, overriding the defaults by phase name
    # (greeting, ehlo, starttls, auth, rset, mail, rcpt, data_init, data_block, data_end, quit).
    smtp_timeouts: Mapping[str, float] = field(default_factory=dict)
    # AUTH at the smarthost (RFC 4954), only over TLS; the password is read from a file so that the
    # config itself can be shown and shared.
    smarthost_user: str | None = None
    smarthost_password: str | None = field(default=None, repr=False)
    # Deliver to loopback, private, link-local... addresses when DNS or an address literal names them
    # (tests with a fake DNS on 127.0.0.1, a lab network). `routes` and `smarthost` are always trusted.
    allow_private_destinations: bool = False
    # Static transport security policy (issue 15): mail to these domains goes only over STARTTLS with a
    # certificate valid for the next hop's host name (the MX host), else it waits and finally bounces.
    # A domain's MTA-STS policy, when it publishes one, takes precedence. Lower-case A-labels.
    require_tls_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # PBKDF2 rounds of the SCRAM-SHA-256 keys made for new and changed passwords (RFC 7677 §4: at least
    # 4096); see surat.proto.sasl.SCRAM_ITERATIONS for the default and the client cap it respects.
    scram_iterations: int = SCRAM_ITERATIONS


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    # Load balancers allowed to send a HAProxy PROXY header (v1 or v2) before the protocol; from them
    # the header is required, from everyone else it is a protocol error. See surat.net.proxyheader.
    trusted: tuple[IPNetwork, ...] = ()

    def is_trusted(self, host: str) -> bool:
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in self.trusted)


STORE_BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # "sqlite": the embedded store in data_dir (one machine, no database server). "postgresql": one
    # database that several Surat processes and nodes share (issue 12).
    backend: str = "sqlite"
    # libpq connection string, URL ("postgresql://surat@db.example.com:5432/surat", a unix socket as
    # "postgresql://surat@/surat?host=/run/postgresql") or key=value form; postgresql only.
    dsn: str | None = field(default=None, repr=False)
    # Read from [store] dsn_password_file at load, so that the config can be shown and shared; never
    # logged or printed (repr=False keeps it out of tracebacks and debug output too).
    dsn_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The backend and where it is, for `surat check`: never a password, whether it came from
        dsn_password_file or was written into the dsn itself."""
        if self.dsn is None:
            return self.backend
        return f"{self.backend} {redacted_dsn(self.dsn)}"


def redacted_dsn(dsn: str) -> str:
    """`dsn` as libpq key=value pairs without the password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: PLC0415 (only with postgresql)

    params = {key: value for key, value in conninfo_to_dict(dsn).items() if key != "password"}
    return make_conninfo("", **params)


MTA_STS_MODES = ("testing", "enforce", "none")
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year); the RFC recommends weeks.
MTA_STS_MAX_AGE_LIMIT = 31557600


@dataclass(frozen=True, slots=True)
class MtaStsConfig:
    # RFC 8461 §5: "testing" lets senders deliver when the policy fails and only report (TLS-RPT);
    # the default, because a new setup's certificate is often a placeholder and "enforce" would then
    # make every MTA-STS sender queue our mail. "enforce" once the TLS reports are clean.
    mode: str = "testing"
    max_age: int = 604800  # one week, in seconds


@dataclass(frozen=True, slots=True)
class TlsReportsConfig:
    # Daily RFC 8460 aggregate reports to the domains that publish a TLS-RPT record. Off by default:
    # they are mail to third parties from this server's domain, which must have its DKIM record
    # published first (RFC 8460 §5.3: reports are DKIM-signed). Counting goes on either way, so a
    # report can be sent for the days (up to a week) counted before it was turned on.
    enabled: bool = False
    organization: str | None = None  # report organization-name (default: the submitter domain)
    contact: str | None = None  # report contact-info (default: the From address)
    # From address (default: noreply-smtp-tls-reporting@ the submitter domain); its domain must be
    # local, with a DKIM key
    sender: str | None = None


# RFC 8555 §7.1.1: the directory object every ACME client starts from. Let's Encrypt production.
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
# With [acme], the certificate and key it obtains are the served [tls] pair, at these places under
# data_dir (surat.acme.files writes them; docs/acme.md).
ACME_DIR = "acme"
ACME_CERT = "cert.pem"
ACME_KEY = "key.pem"


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """[acme]: certificates obtained and renewed by Surat itself (RFC 8555, HTTP-01). Off unless the
    table is present."""

    directory: str = LETS_ENCRYPT_DIRECTORY
    email: str | None = None  # the account's contact (RFC 8555 §7.3), for the CA's expiry notices
    # The names of the certificate; () = the hostname, plus mta-sts./autoconfig./autodiscover. of each
    # local domain when the https listener is on (computed from the store at each order).
    hostnames: tuple[str, ...] = ()
    # A CA bundle to trust for the ACME server's own HTTPS (a private CA such as Pebble's test CA);
    # added trust, never "no verification".
    ca_file: Path | None = None


MAX_WORKERS = 64  # [server] workers: more processes than this is a typo, not a deployment


@dataclass(frozen=True, slots=True)
class ServerConfig:
    # Processes serving the listeners and the store together (docs/workers.md); 1: one process, no
    # supervisor, as before.
    workers: int = 1


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str
    data_dir: Path
    tls: TLSConfig = TLSConfig()
    listen: ListenConfig = ListenConfig()
    dns: DnsConfig = DnsConfig()
    limits: LimitsConfig = LimitsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    auth: AuthConfig = AuthConfig()
    proxy: ProxyConfig = ProxyConfig()
    store: StoreConfig = StoreConfig()
    server: ServerConfig = ServerConfig()
    mta_sts: MtaStsConfig = MtaStsConfig()
    tls_reports: TlsReportsConfig = TlsReportsConfig()
    acme: AcmeConfig | None = None
    path: Path | None = None  # the file this was loaded from, if any


def config_path(explicit: str | None) -> Path:
    """--config, else $SURAT_CONFIG, else ./surat.toml."""
    return Path(explicit or os.environ.get("SURAT_CONFIG") or DEFAULT_CONFIG_NAME)


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "", f"config file {path} not found (run `surat quickstart` to create one)"
        ) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=path.resolve().parent, path=path)


def parse_config(data: Mapping[str, Any], base_dir: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths are resolved against base_dir."""
    reader = _Table(data, "")
    hostname = _normalize_hostname(reader.string("hostname", required=True), "hostname")
    data_dir = base_dir / reader.string("data_dir", default="data")

    tls_table = reader.table("tls")
    tls = TLSConfig(
        cert=_opt_path(tls_table.string("cert"), base_dir),
        key=_opt_path(tls_table.string("key"), base_dir),
        ca=_opt_path(tls_table.string("ca"), base_dir),
        certificates=tuple(_certificate_pair(entry, base_dir) for entry in tls_table.tables("certificates")),
        requiretls=tls_table.boolean("requiretls", TLSConfig().requiretls),
    )
    tls_table.finish()

    listen_table = reader.table("listen")
    listen = ListenConfig(**{name: listen_table.host_ports(name) for name in LISTEN_ROLES})
    listen_table.finish()

    dns_table = reader.table("dns")
    dns = DnsConfig(
        nameservers=dns_table.host_ports("nameservers"),
        timeout=dns_table.number("timeout", DnsConfig().timeout, minimum=0.1),
        dnssec_trusted=dns_table.boolean("dnssec_trusted", DnsConfig().dnssec_trusted),
    )
    dns_table.finish()
    if dns.dnssec_trusted and not (
        dns.nameservers and all(_is_loopback(server.host) for server in dns.nameservers)
    ):
        raise ConfigError(
            "dns.dnssec_trusted",
            "needs [dns] nameservers on loopback (a validating resolver on this machine, e.g. 127.0.0.1:53)",
        )

    limits_table = reader.table("limits")
    defaults = LimitsConfig()
    limits = LimitsConfig(
        message_size=int(limits_table.number("message_size", defaults.message_size, minimum=1024)),
        recipients=int(limits_table.number("recipients", defaults.recipients, minimum=100)),
        smtp_idle_timeout=limits_table.number("smtp_idle_timeout", defaults.smtp_idle_timeout, minimum=1),
        bad_commands=int(limits_table.number("bad_commands", defaults.bad_commands, minimum=1)),
        junk_commands=int(limits_table.number("junk_commands", defaults.junk_commands, minimum=1)),
        smtp_session_deadline=limits_table.number(
            "smtp_session_deadline", defaults.smtp_session_deadline, minimum=1
        ),
        pop3_session_deadline=limits_table.number(
            "pop3_session_deadline", defaults.pop3_session_deadline, minimum=1
        ),
        imap_session_deadline=limits_table.number(
            "imap_session_deadline", defaults.imap_session_deadline, minimum=1
        ),
        auth_failure_delay=limits_table.number("auth_failure_delay", defaults.auth_failure_delay, minimum=0),
        connections_per_ip=int(
            limits_table.number("connections_per_ip", defaults.connections_per_ip, minimum=1)
        ),
        connections_total=int(
            limits_table.number("connections_total", defaults.connections_total, minimum=1)
        ),
        auth_max_failures=int(
            limits_table.number("auth_max_failures", defaults.auth_max_failures, minimum=1)
        ),
        auth_failure_window=limits_table.number(
            "auth_failure_window", defaults.auth_failure_window, minimum=1
        ),
        auth_block=limits_table.number("auth_block", defaults.auth_block, minimum=1),
        auth_block_max=limits_table.number("auth_block_max", defaults.auth_block_max, minimum=1),
        messages_per_hour=int(
            limits_table.number("messages_per_hour", defaults.messages_per_hour, minimum=1)
        ),
        recipients_per_hour=int(
            limits_table.number("recipients_per_hour", defaults.recipients_per_hour, minimum=1)
        ),
        greet_pause=limits_table.number("greet_pause", defaults.greet_pause, minimum=0),
        unknown_recipients=int(
            limits_table.number("unknown_recipients", defaults.unknown_recipients, minimum=1)
        ),
        dnsbl=_domain_names(limits_table._get("dnsbl"), "limits.dnsbl", "DNS zones"),
        mail_auth=limits_table.boolean("mail_auth", defaults.mail_auth),
        trusted_arc_sealers=_domain_names(
            limits_table._get("trusted_arc_sealers"), "limits.trusted_arc_sealers", "domains"
        ),
    )
    limits_table.finish()

    delivery_table = reader.table("delivery")
    routes_table = delivery_table.table("routes")
    routes = {
        domain.lower().rstrip("."): HostPort.parse(value, f"delivery.routes.{domain}")
        for domain, value in routes_table.items()
    }
    smarthost_text = delivery_table.string("smarthost")
    smarthost_user = delivery_table.string("smarthost_user")
    password_file = _opt_path(delivery_table.string("smarthost_password_file"), base_dir)
    if (smarthost_user is None) != (password_file is None):
        raise ConfigError("delivery.smarthost_user", "smarthost_user and smarthost_password_file go together")
    if smarthost_user is not None and smarthost_text is None:
        raise ConfigError("delivery.smarthost_user", "needs delivery.smarthost")
    smarthost_password = None
    if password_file is not None:
        try:
            smarthost_password = password_file.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                "delivery.smarthost_password_file", f"cannot read {password_file}: {exc}"
            ) from None
    delivery_defaults = DeliveryConfig()
    delays = delivery_table._get("retry_delays")
    if delays is None:
        delays = list(delivery_defaults.retry_delays)
    if not isinstance(delays, list) or not delays:
        raise ConfigError("delivery.retry_delays", f"expected a non-empty list of seconds, got {delays!r}")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay <= 0:
            raise ConfigError("delivery.retry_delays", f"expected positive numbers of seconds, got {delay!r}")
    delivery = DeliveryConfig(
        routes=routes,
        smarthost=HostPort.parse(smarthost_text, "delivery.smarthost") if smarthost_text else None,
        retry_delays=tuple(float(delay) for delay in delays),
        expire_after=delivery_table.number("expire_after", delivery_defaults.expire_after, minimum=1),
        delay_notice_after=delivery_table.number(
            "delay_notice_after", delivery_defaults.delay_notice_after, minimum=1
        ),
        max_connections=int(
            delivery_table.number("max_connections", delivery_defaults.max_connections, minimum=1)
        ),
        max_connections_per_domain=int(
            delivery_table.number(
                "max_connections_per_domain", delivery_defaults.max_connections_per_domain, minimum=1
            )
        ),
        queue_poll_interval=delivery_table.number(
            "queue_poll_interval", delivery_defaults.queue_poll_interval, minimum=0.01
        ),
        connect_timeout=delivery_table.number(
            "connect_timeout", delivery_defaults.connect_timeout, minimum=0.1
        ),
        queue_lease=delivery_table.number(
            "queue_lease", delivery_defaults.queue_lease, minimum=QUEUE_LEASE_MIN, maximum=QUEUE_LEASE_MAX
        ),
        smarthost_user=smarthost_user,
        smarthost_password=smarthost_password,
        smtp_timeouts=_smtp_timeouts(delivery_table.table("smtp_timeouts")),
        allow_private_destinations=delivery_table.boolean(
            "allow_private_destinations", delivery_defaults.allow_private_destinations
        ),
        require_tls_domains=_domain_names(
            delivery_table._get("require_tls_domains"), "delivery.require_tls_domains", "domains"
        ),
    )
    delivery_table.finish()

    auth_table = reader.table("auth")
    auth = AuthConfig(
        scram_iterations=int(
            auth_table.number("scram_iterations", SCRAM_ITERATIONS, minimum=SCRAM_MIN_ITERATIONS)
        )
    )
    auth_table.finish()

    proxy_table = reader.table("proxy")
    proxy = ProxyConfig(trusted=_networks(proxy_table._get("trusted"), "proxy.trusted"))
    proxy_table.finish()
    store_table = reader.table("store")
    store = _store_config(store_table, base_dir)
    store_table.finish()
    server_table = reader.table("server")
    server = ServerConfig(workers=_workers(server_table))
    server_table.finish()
    mta_sts_table = reader.table("mta_sts")
    mta_sts = _mta_sts_config(mta_sts_table)
    mta_sts_table.finish()
    tls_reports_table = reader.table("tls_reports")
    tls_reports = TlsReportsConfig(
        enabled=tls_reports_table.boolean("enabled", TlsReportsConfig().enabled),
        organization=tls_reports_table.string("organization"),
        contact=tls_reports_table.string("contact"),
        sender=tls_reports_table.string("sender"),
    )
    tls_reports_table.finish()
    if tls_reports.sender is not None and not _is_address(tls_reports.sender):
        raise ConfigError(
            "tls_reports.sender", f"expected an address local@domain, got {tls_reports.sender!r}"
        )
    acme = None
    if "acme" in data:
        acme_table = reader.table("acme")
        acme = _acme_config(acme_table, base_dir)
        acme_table.finish()
        tls = _acme_tls(tls, data_dir)
    reader.finish()

    config = Config(
        hostname=hostname,
        data_dir=data_dir,
        tls=tls,
        listen=listen,
        dns=dns,
        limits=limits,
        delivery=delivery,
        auth=auth,
        proxy=proxy,
        store=store,
        server=server,
        mta_sts=mta_sts,
        tls_reports=tls_reports,
        acme=acme,
        path=path,
    )
    _check_tls_files(config)
    return config


def _mta_sts_config(table: _Table) -> MtaStsConfig:
    defaults = MtaStsConfig()
    mode = table.string("mode", default=defaults.mode)
    if mode not in MTA_STS_MODES:
        raise ConfigError("mta_sts.mode", f"expected one of {', '.join(MTA_STS_MODES)}, got {mode!r}")
    max_age = table.number("max_age", defaults.max_age, minimum=1)
    if not isinstance(max_age, int) or max_age > MTA_STS_MAX_AGE_LIMIT:
        raise ConfigError(
            "mta_sts.max_age",
            f"expected whole seconds up to {MTA_STS_MAX_AGE_LIMIT} (RFC 8461 §3.2), got {max_age!r}",
        )
    return MtaStsConfig(mode, max_age)


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and domain and "." in domain) and all(0x20 < ord(c) < 0x7F for c in text)


def _acme_config(table: _Table, base_dir: Path) -> AcmeConfig:
    directory = table.string("directory", default=LETS_ENCRYPT_DIRECTORY)
    # RFC 8555 §6.1: all ACME communication is over HTTPS.
    if not directory.startswith("https://"):
        raise ConfigError("acme.directory", f"expected an https:// URL, got {directory!r}")
    email = table.string("email")
    if email is not None and ("@" not in email or any(c.isspace() for c in email)):
        raise ConfigError("acme.email", f"expected an email address, got {email!r}")
    ca_file = _opt_path(table.string("ca_file"), base_dir)
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError("acme.ca_file", f"file {ca_file} does not exist")
    hostnames = _domain_names(table._get("hostnames"), "acme.hostnames", "host names")
    return AcmeConfig(directory=directory, email=email, hostnames=hostnames, ca_file=ca_file)


def _acme_tls(tls: TLSConfig, data_dir: Path) -> TLSConfig:
    """With [acme], the served default certificate is the one ACME obtains: data_dir/acme/. A [tls]
    cert/key as well would leave it unclear which one clients get, so that is refused;
    [[tls.certificates]] for other names stay as they are."""
    if tls.cert is not None or tls.key is not None:
        raise ConfigError(
            "tls.cert" if tls.cert is not None else "tls.key",
            "with [acme] the certificate is the one ACME obtains (data_dir/acme/); remove tls.cert and tls.key",
        )
    return replace(tls, cert=data_dir / ACME_DIR / ACME_CERT, key=data_dir / ACME_DIR / ACME_KEY)


def _workers(table: _Table) -> int:
    value = table.number("workers", ServerConfig().workers, minimum=1)
    if not isinstance(value, int) or value > MAX_WORKERS:
        raise ConfigError("server.workers", f"expected a whole number from 1 to {MAX_WORKERS}, got {value!r}")
    return value


def _store_config(table: _Table, base_dir: Path) -> StoreConfig:
    backend = table.string("backend", default=StoreConfig().backend)
    if backend not in STORE_BACKENDS:
        close = difflib.get_close_matches(backend, STORE_BACKENDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            "store.backend", f"unknown backend {backend!r}{hint}; one of {', '.join(STORE_BACKENDS)}"
        )
    dsn = table.string("dsn")
    password_file = _opt_path(table.string("dsn_password_file"), base_dir)
    if backend != "postgresql":
        for name, value in (("dsn", dsn), ("dsn_password_file", password_file)):
            if value is not None:
                raise ConfigError(f"store.{name}", 'only for backend = "postgresql"')
        return StoreConfig(backend)
    if dsn is None:
        table._misspelt("dsn")  # `dns = ...` is the likelier mistake than a forgotten dsn
        raise ConfigError(
            "store.dsn",
            'missing: backend = "postgresql" needs the database, e.g. "postgresql://surat@db.example.com:5432/surat"',
        )
    return postgresql_store(dsn, password_file)


def postgresql_store(
    dsn: str,
    password_file: Path | None,
    *,
    dsn_key: str = "store.dsn",
    file_key: str = "store.dsn_password_file",
) -> StoreConfig:
    """A postgresql StoreConfig for `dsn`, its password read from `password_file` (first line) if
    given. Errors name `dsn_key`/`file_key`: the config's keys, or a command's options (`surat
    store migrate --to DSN --password-file PATH` checks its target the same way)."""
    from psycopg import ProgrammingError  # noqa: PLC0415 (loaded only when the backend is used)
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        # psycopg's message quotes the string, which may hold a password: say only what is wrong.
        raise ConfigError(
            dsn_key, "not a libpq connection string (postgresql://user@host:port/database)"
        ) from None
    password = None
    if password_file is not None:
        if "password" in params:
            raise ConfigError(file_key, "the dsn holds a password already; keep one of them")
        try:
            password = password_file.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file_key, f"cannot read {password_file}: {exc}") from None
        if not password:
            raise ConfigError(file_key, f"{password_file} is empty")
    return StoreConfig("postgresql", dsn, password)


SMTP_TIMEOUT_PHASES = (
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "rset",
    "mail",
    "rcpt",
    "data_init",
    "data_block",
    "data_end",
    "quit",
)


def _smtp_timeouts(table: _Table) -> dict[str, float]:
    timeouts = {}
    for phase, _ in table.items():
        if phase not in SMTP_TIMEOUT_PHASES:
            raise ConfigError(
                f"delivery.smtp_timeouts.{phase}", f"unknown phase; one of {', '.join(SMTP_TIMEOUT_PHASES)}"
            )
        timeouts[phase] = float(table.number(phase, 0, minimum=1))
    return timeouts


def _check_tls_files(config: Config) -> None:
    tls = config.tls
    if config.listen.tls_needed() and (tls.cert is None or tls.key is None):
        raise ConfigError("tls.cert", "a certificate and key are required by the TLS listeners")
    if tls.certificates and tls.cert is None:
        raise ConfigError("tls.cert", "[[tls.certificates]] need a default certificate for other names")
    # With [acme] the default pair may not exist yet: the server writes a placeholder at start
    # (surat.acme.files) until the first certificate is issued.
    files = [] if config.acme is not None else [("tls.cert", tls.cert), ("tls.key", tls.key)]
    for index, pair in enumerate(tls.certificates):
        files += [
            (f"tls.certificates[{index}].cert", pair.cert),
            (f"tls.certificates[{index}].key", pair.key),
        ]
    for key, file in files:
        if file is not None and not file.is_file():
            raise ConfigError(key, f"file {file} does not exist")


def _networks(value: Any, key: str) -> tuple[IPNetwork, ...]:
    """A list of CIDRs ("10.0.0.0/8", "2001:db8::/32"; a bare address is one host)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, f'expected a list of CIDRs like ["10.0.0.0/8"], got {value!r}')
    networks: list[IPNetwork] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(key, f"expected CIDR strings, got {item!r}")
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as exc:
            # strict: "10.0.0.1/8" has host bits set, most likely a typo for one host or the network
            raise ConfigError(key, f"{item!r} is not a CIDR: {exc}") from None
    return tuple(networks)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _domain_names(value: Any, key: str, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of {what}, got {value!r}")
    names = []
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(key, f"expected a DNS name, got {name!r}")
        names.append(_normalize_hostname(name, key))
    return tuple(names)


def _normalize_hostname(name: str, key: str) -> str:
    """Lower-case A-label form without a trailing dot (it goes into banners, EHLO and Received)."""
    try:
        ascii_name = name.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ConfigError(key, f"{name!r} is not a valid host name") from None
    labels = ascii_name.split(".")
    # RFC 1123 §2.1 host name syntax: letters, digits and inner hyphens, 63 octets a label.
    if not ascii_name or any(
        not label
        or len(label) > 63
        or label.startswith("-")
        or label.endswith("-")
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    ):
        raise ConfigError(key, f"{name!r} is not a valid host name")
    return ascii_name


def _opt_path(text: str | None, base_dir: Path) -> Path | None:
    return None if text is None else base_dir / text


def _certificate_pair(entry: _Table, base_dir: Path) -> CertificatePair:
    pair = CertificatePair(
        cert=base_dir / entry.string("cert", required=True), key=base_dir / entry.string("key", required=True)
    )
    entry.finish()
    return pair


class _Table:
    """Reads one TOML table, tracking consumed keys so that unknown keys are errors."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(prefix.rstrip("."), "expected a table")
        self._data = data
        self._prefix = prefix
        self._seen: set[str] = set()

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def string(self, name: str, default: str | None = None, required: bool = False) -> Any:
        value = self._get(name)
        if value is None:
            if required:
                self._misspelt(name)
                raise ConfigError(self._key(name), "missing")
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(self._key(name), f"expected a non-empty string, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self._key(name), f"expected true or false, got {value!r}")
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float | None = None) -> Any:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self._key(name), f"expected a number, got {value!r}")
        if value < minimum:
            raise ConfigError(self._key(name), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(self._key(name), f"must be at most {maximum}, got {value}")
        return value

    def host_ports(self, name: str) -> tuple[HostPort, ...]:
        value = self._get(name)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(self._key(name), f'expected a list of "host:port", got {value!r}')
        return tuple(HostPort.parse(item, self._key(name)) for item in value)

    def table(self, name: str) -> _Table:
        value = self._get(name)
        return _Table(value if value is not None else {}, self._key(name) + ".")

    def tables(self, name: str) -> list[_Table]:
        """An array of tables (`[[name]]`), each read as `name[i].`."""
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(self._key(name), f"expected an array of tables ([[{self._key(name)}]])")
        return [_Table(item, f"{self._key(name)}[{index}].") for index, item in enumerate(value)]

    def items(self) -> list[tuple[str, Any]]:
        self._seen.update(self._data)
        return list(self._data.items())

    def _misspelt(self, name: str) -> None:
        """A required setting is missing: a key that looks like it is the likelier mistake, so report
        that one (`hostnam: unknown setting (did you mean hostname?)`) rather than "missing"."""
        close = difflib.get_close_matches(name, [k for k in self._data if isinstance(k, str)], n=1)
        if close:
            raise ConfigError(self._key(close[0]), f"unknown setting (did you mean {name}?)")

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = sorted(self._seen - set(unknown))
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(self._key(unknown[0]), f"unknown setting{hint}")
