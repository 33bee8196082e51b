"""The `surat` command: quickstart, serve, reload, domain, user, alias, queue, blocks, dns, store, import, export, check.

Every failure ends as one line on stderr (`surat: ...`) and a non-zero exit status: 2 for usage
and configuration errors, 1 for everything else. Passwords are never taken from the command line
(they would show in `ps` and shell history): they are prompted for, or read as one line from stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

from surat import __version__, admin_ops, certs
from surat.acme.files import REVOCATION_REASONS, AcmeFiles, status_lines
from surat.apppasswords import AppPasswordNameError
from surat.apppasswords import create as create_app_password
from surat.apppasswords import revoke as revoke_app_password
from surat.config import (
    LISTEN_ROLES,
    Config,
    ConfigError,
    HostPort,
    ListenConfig,
    admin_url,
    config_path,
    load_config,
    postgresql_store,
    redacted_dsn,
)
from surat.delivery import dkim
from surat.dns.resolver import DnsResolver
from surat.dnscheck import check_records, format_checks
from surat.dnsrecords import PRODUCTION_PORTS, format_records, records_for
from surat.mailauth.mtasts import policy_id, published_policy
from surat.mailfiles.exporter import FORMATS, Exporter
from surat.mailfiles.importer import Importer, ImportProgress
from surat.net.tls import TLSSetupError, certificate_warnings
from surat.net.tlscontexts import TlsContexts, certificate_lines
from surat.passwords import (
    MIN_PASSWORD_LENGTH,
    SASLprepError,
    generate_password,
    make_credentials,
    set_password,
)
from surat.pidfile import PID_FILE_NAME, running_server_pid
from surat.proto.smtp.address import terminal_safe
from surat.sieve import SieveSyntaxError, parse_script
from surat.sieve.generated import (
    FORWARD_SCRIPT,
    GENERATED_SCRIPTS,
    VACATION_SCRIPT,
    forward_script,
    next_script,
    relink,
    vacation_script,
)
from surat.store.base import (
    AlreadyExists,
    InvalidScript,
    LimitReached,
    NotFound,
    QueueEntry,
    ScriptActive,
    StoreError,
)
from surat.store.filemodes import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, loose_modes
from surat.store.schema import SchemaTooNew
from surat.store.setup import (
    ConfiguredStore,
    SchemaStatus,
    configured_store,
    init_schema,
    schema_status,
    store_location,
)
from surat.store.sqlite import SQLiteStore

# Names the CLI shares with the admin console (surat.admin_ops), kept importable from here.
normalize_domain = admin_ops.normalize_domain
normalize_address = admin_ops.normalize_address
normalize_alias_source = admin_ops.normalize_alias_source
domain_of = admin_ops.domain_of
parse_size = admin_ops.parse_size
format_size = admin_ops.format_size

if TYPE_CHECKING:
    from surat.store.base import Store
    from surat.store.transfer import TransferStore


DEV_PORTS = {
    "smtp": 2525,
    "submission": 5870,
    "submissions": 4650,
    "imap": 1430,
    "imaps": 9930,
    "pop3": 1100,
    "pop3s": 9950,
    "https": 4443,
    "http": 8000,
    "admin": 8081,
}
# The web roles quickstart writes for production (the mail ones are dnsrecords.PRODUCTION_PORTS).
WEB_PRODUCTION_PORTS = {"https": 443, "http": 80, "admin": 8080}
# The admin console and /metrics listen on loopback only: reach them over SSH or a VPN, or put a
# reverse proxy with its own authentication in front (issue 13).
ADMIN_HOST = "127.0.0.1"
ROLE_DESCRIPTIONS = {
    "smtp": "MX: mail from the internet for local domains (STARTTLS offered, no AUTH)",
    "submission": "mail clients sending: STARTTLS, AUTH required",
    "submissions": "mail clients sending: implicit TLS, AUTH required",
    "imap": "IMAP, STARTTLS",
    "imaps": "IMAP, implicit TLS",
    "pop3": "POP3, STLS",
    "pop3s": "POP3, implicit TLS",
    "https": "web: client autoconfiguration, MTA-STS policy, account pages (TLS)",
    "http": "web: redirects to https",
    "admin": "web: admin console and /metrics (keep it on loopback)",
}


# The refusals of the shared operations are the CLI's own errors: one line, exit status 1 (2: usage).
CliError = admin_ops.OperationError
UsageError = admin_ops.InvalidInput


class _Parser(argparse.ArgumentParser):
    """argparse prints the whole usage block on an error; we want one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix('surat').strip() or 'usage'}: {message} (see --help)")


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ----------------------------------------------------------------------------------------- helpers


def command_prefix(config_file: str | Path | None) -> str:
    """How to run this `surat` again, for the hints we print: `surat` when that name on PATH is this
    program, else its path as typed (`.venv/bin/surat` after `make run`); plus `--config FILE` unless
    the file is the default ./surat.toml."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else "surat"
    on_path = shutil.which("surat")
    if Path(program).name != "surat" or (
        on_path is not None and Path(on_path).resolve() == Path(program).resolve()
    ):
        program = "surat"
    elif os.sep in program and not os.path.isabs(program):
        program = os.path.normpath(program)
    if config_file is None or Path(config_file) == Path("surat.toml"):
        return program
    return f"{program} --config {config_file}"


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(config_path(args.config))
    except ConfigError as exc:
        raise CliError(f"config: {exc}", 2) from None


def _with_store(store: ConfiguredStore, location: str, action: Callable[[Store], Awaitable[int]]) -> int:
    async def run() -> int:
        try:
            # No crash recovery: a running server's staged files would look like leftovers; `serve`
            # recovers at its start.
            await store.open(recover=False)
        except (OSError, StoreError, sqlite3.Error) as exc:
            raise CliError(f"cannot open the store {location}: {exc}") from None
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _schema_status(config: Config) -> SchemaStatus:
    return asyncio.run(schema_status(config))


def _usable_schema(args: argparse.Namespace, config: Config) -> SchemaStatus:
    """The configured store's schema, or one line saying why it cannot be used and what to run
    (surat.store.setup: only `surat store init` upgrades a schema)."""
    status = _schema_status(config)
    refusal = status.refusal(f"{command_prefix(args.config)} store init")
    if refusal is not None:
        raise CliError(refusal)
    return status


def _with_configured_store(
    args: argparse.Namespace, config: Config, action: Callable[[Store], Awaitable[int]]
) -> int:
    """`action` on the configured store (store.setup picks the backend), once its schema is known to
    be this Surat's."""
    _usable_schema(args, config)
    return _with_store(configured_store(config), store_location(config), action)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CliError("no password on standard input (expected one line)")
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask for the password on; use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise CliError("the two passwords differ")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"the password is too short (at least {MIN_PASSWORD_LENGTH} characters)")
    return password


def _listener_lines(listen: ListenConfig) -> list[str]:
    lines = []
    for role in LISTEN_ROLES:
        addresses = getattr(listen, role)
        if addresses:
            where = ", ".join(str(address) for address in addresses)
            lines.append(f"  {role:<12} {where:<22} {ROLE_DESCRIPTIONS[role]}")
    return lines or ["  (none: every [listen] list is empty)"]


def _client_ports(listen: ListenConfig) -> dict[str, int]:
    """The port clients should use per role: the first listener's, for DNS SRV records."""
    return {role: getattr(listen, role)[0].port for role in LISTEN_ROLES if getattr(listen, role)}


# ----------------------------------------------------------------------------------------- quickstart

_CONFIG_TEMPLATE = """\
# Surat configuration, written by `surat quickstart` on {date}.
# Every key and its default: README.md, "Configuration reference".
# Relative paths are relative to the directory of this file.

hostname = "{hostname}"  # SMTP banner and EHLO name; the MX record and the certificate name it
data_dir = "data"  # accounts, mailboxes, queue: SQLite database + message files

[tls]
cert = "{cert}"  # PEM: the certificate, then its chain
key  = "{key}"  # PEM private key, readable only by the user running surat
{ca_line}

[listen]  # each a list of "host:port"; [] disables that service; IPv6: "[::]:25"
smtp        = {smtp}  # MX: mail from the internet for local domains; no AUTH
submission  = {submission}  # mail clients sending: STARTTLS, then AUTH
submissions = {submissions}  # the same with implicit TLS (RFC 8314)
imap        = {imap}  # STARTTLS
imaps       = {imaps}  # implicit TLS
pop3        = {pop3}  # STLS
pop3s       = {pop3s}  # implicit TLS
https       = {https}  # autoconfig, autodiscover, MTA-STS policy, account pages
http        = {http}  # redirects to https
admin       = {admin}  # admin console and /metrics: loopback only

[dns]
nameservers = []  # [] = the system resolver; e.g. ["127.0.0.1:53"]
# timeout = 5.0  # seconds per DNS query

[limits]
message_size = 52428800  # bytes (50 MiB); announced with SIZE (RFC 1870)
# recipients = 1000  # per message; RFC 5321 §4.5.3.1.8 asks for at least 100
# smtp_idle_timeout = 300.0  # seconds without a command before 421 (RFC 5321 §4.5.3.2.7)
# bad_commands = 10  # bad commands in a row before 421 and close
# auth_failure_delay = 1.0  # seconds before answering a failed AUTH
{mail_auth_line}

[mta_sts]  # the RFC 8461 policy served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
mode = "testing"  # testing (report only), enforce (once TLS reports are clean) or none
# max_age = 604800  # seconds senders may cache the policy (one week)

[delivery]
# routes = {{ "example.net" = "127.0.0.1:2526" }}  # static next hop per domain (transport map)
# smarthost = "smtp.provider.example:587"  # relay all outbound mail through a provider
"""
_COMMENT_COLUMN = 36


def _align_comments(text: str) -> str:
    """Line up the trailing `# ...` comments of the template in one column."""
    lines = []
    for line in text.splitlines():
        code, sep, comment = line.partition("  # ")
        lines.append(f"{code:<{_COMMENT_COLUMN - 1}} # {comment}" if sep else line)
    return "\n".join(lines) + "\n"


def render_config(
    hostname: str,
    *,
    hosts: Sequence[str],
    ports: Mapping[str, int],
    cert: str,
    key: str,
    ca: str | None,
    dev: bool = False,
) -> str:
    """The commented surat.toml that quickstart writes; every role listens on each of `hosts`."""
    values = {
        role: "[" + ", ".join(f'"{HostPort(host, ports[role])}"' for host in hosts) + "]"
        for role in LISTEN_ROLES
        if role != "admin"
    }
    values["admin"] = f'["{HostPort(ADMIN_HOST, ports["admin"])}"]'
    ca_line = (
        f'ca   = "{ca}"  # the dev CA that signed cert: give it to test clients'
        if ca
        else '# ca = "tls/ca.pem"  # informational: the CA that signed cert, if it is a private one'
    )
    return _align_comments(
        _CONFIG_TEMPLATE.format(
            date=datetime.now(UTC).strftime("%Y-%m-%d"),
            hostname=hostname,
            cert=cert,
            key=key,
            ca_line=ca_line,
            mail_auth_line=(
                "mail_auth = false  # dev: no SPF/DKIM/DMARC lookups, DNS may be out of reach; true in production"
                if dev
                else "# mail_auth = true  # SPF, DKIM, ARC and DMARC checks on port 25 (needs working DNS)"
            ),
            **values,
        )
    )


def production_hosts() -> list[str]:
    """All IPv4 addresses, and all IPv6 addresses where this machine has IPv6 (a second listener on
    "::": asyncio sets IPV6_V6ONLY on it, so it does not collide with the IPv4 one)."""
    hosts = ["0.0.0.0"]  # noqa: S104 - a mail server listens on all addresses
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::", 0))
        except OSError:
            return hosts  # IPv6 disabled in the kernel or for this host
        hosts.append("::")
    return hosts


def web_hostnames(domain: str) -> list[str]:
    """The names the https listener answers for a domain, which its certificate must cover: the
    MTA-STS policy host (RFC 8461 §3.3) and the clients' autoconfiguration hosts."""
    return [f"{prefix}.{domain}" for prefix in ("mta-sts", "autoconfig", "autodiscover")]


@dataclass(frozen=True, slots=True)
class _Setup:
    config_file: Path
    password: str
    ca: Path | None
    dkim_keys: tuple[dkim.DkimKey, ...] = ()


def cmd_quickstart(args: argparse.Namespace) -> int:
    domain = normalize_domain(args.domain)
    hostname = normalize_domain(args.hostname, "hostname") if args.hostname else f"mail.{domain}"
    directory = Path(args.dir)
    config_file = directory / "surat.toml"
    data_dir = directory / "data"
    tls_dir = directory / "tls"
    if config_file.exists():
        raise CliError(
            f"{config_file} already exists; quickstart never overwrites a setup (use another --dir)"
        )
    if data_dir.exists() and any(data_dir.iterdir()):
        raise CliError(
            f"{data_dir} already holds data; quickstart never overwrites a setup (use another --dir)"
        )
    if tls_dir.exists() and any(tls_dir.iterdir()):
        raise CliError(
            f"{tls_dir} is not empty; quickstart never overwrites certificates (use another --dir)"
        )

    created = [d for d in (directory, tls_dir, data_dir) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        if args.dev:
            # Clients of a dev server connect to localhost, so the certificate names it too.
            paths = certs.write_dev_certificates(tls_dir, [hostname, "localhost", *web_hostnames(domain)])
        else:
            paths = certs.write_self_signed_certificate(tls_dir, [hostname, *web_hostnames(domain)])
        password = generate_password()
        credentials = make_credentials(password)  # a new config: the default count
        postmaster = f"postmaster@{domain}"

        keys: tuple[dkim.DkimKey, ...] = ()

        async def populate(store: Store) -> int:
            nonlocal keys
            await store.add_domain(domain)
            await store.add_account(postmaster, credentials)
            keys = await admin_ops.ensure_dkim_keys(store, domain)
            await store.set_admin(postmaster, True)  # issue 13: the first account runs the admin console
            return 0

        data_dir.mkdir(mode=0o700, exist_ok=True)
        _with_store(SQLiteStore(data_dir), f"sqlite {data_dir}", populate)  # quickstart writes SQLite

        def relative(path: Path) -> str:
            return os.path.relpath(path.resolve(), directory.resolve())

        text = render_config(
            hostname,
            hosts=["127.0.0.1"] if args.dev else production_hosts(),
            ports=DEV_PORTS if args.dev else {**PRODUCTION_PORTS, **WEB_PRODUCTION_PORTS},
            cert=relative(paths.cert),
            key=relative(paths.key),
            ca=relative(paths.ca) if paths.ca else None,
            dev=args.dev,
        )
        # "x": never replace a config that appeared meanwhile.
        with config_file.open("x", encoding="utf-8") as out:
            out.write(text)
        config_file.chmod(0o640)
    except BaseException:
        # Leave nothing half-made behind, so that quickstart can simply be run again.
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise

    try:
        config = load_config(config_file)
    except ConfigError as exc:  # a bug in the template; say so rather than leave a broken setup silently
        raise CliError(f"quickstart wrote a config that does not load ({exc}); please report this") from None

    _print_quickstart(args, config, _Setup(config_file, password, paths.ca, keys), postmaster)
    return 0


def _print_quickstart(args: argparse.Namespace, config: Config, setup: _Setup, postmaster: str) -> None:
    domain = domain_of(postmaster)
    surat = command_prefix(setup.config_file)
    out = [
        f"Wrote {setup.config_file} for domain {domain}, server name {config.hostname}.",
        "",
        f"Account {postmaster}, password (shown only this once, note it now):",
        f"    {setup.password}",
        f"Change it with: {surat} user passwd {postmaster}",
        "",
        "Listeners:",
        *_listener_lines(config.listen),
        "",
    ]
    url = admin_url(config.listen)
    if url is not None:
        out += [f"Admin console and metrics: {url} (metrics: {url}metrics)", ""]
    if args.dev and setup.ca is not None:
        ca = setup.ca
        out += [
            f"Dev CA: {ca.resolve()}",
            "The server certificate is signed by this CA and valid for localhost and "
            f"{config.hostname}; tell test clients to trust it:",
            f"  swaks --server localhost:{DEV_PORTS['submission']} --tls --tls-verify --tls-ca-path {ca} \\",
            f"        --auth-user {postmaster} --from {postmaster} --to {postmaster}",
            f"  curl --cacert {ca} --user {postmaster} imaps://localhost:{DEV_PORTS['imaps']}/INBOX",
            f'  python: ssl.create_default_context(cafile="{ca}")',
            "",
        ]
    else:
        out += [
            f"TLS: {config.tls.cert} is a self-signed placeholder. Install a real certificate for",
            f"{config.hostname}, e.g. from Let's Encrypt:",
            "    certbot certonly --standalone "
            + " ".join(f"-d {name}" for name in [config.hostname, *web_hostnames(domain)]),
            "then point [tls] cert at fullchain.pem and key at privkey.pem (readable by the surat user)",
            "and restart surat (it reads the certificate at start).",
            "",
        ]
    out += [
        (
            "Starting the server now (make run); later, `make run` again, or:"
            if os.environ.get("SURAT_MAKE_RUN") == "1"
            else "Start the server:"
        ),
        f"    {surat} serve",
        "",
        format_records(
            records_for(
                domain,
                config.hostname,
                _client_ports(config.listen),
                sts_id=policy_id(
                    published_policy(config.mta_sts.mode, config.mta_sts.max_age, config.hostname)
                ),
                dkim_keys=setup.dkim_keys,
            )
        ).rstrip("\n"),
    ]
    print("\n".join(out))


# ----------------------------------------------------------------------------------------- serve, check, dns


def run_server(config: Config) -> int:
    # Imported here so that the admin commands neither load nor depend on the whole server.
    from surat.app import run  # noqa: PLC0415

    return run(config)  # sets up logging itself


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    _check_tls(config)  # one clear line and exit 2 rather than a failed start
    _usable_schema(args, config)  # an unknown or old schema: one line naming `surat store init`
    return run_server(config)


def cmd_store(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.action == "migrate":
        return _store_migrate(args, config)
    if args.action == "verify":
        return _store_verify(args, config)
    location = store_location(config)
    try:
        found, now = asyncio.run(init_schema(config))
    except SchemaTooNew:
        # the same line as `serve` gives: what to run
        raise CliError(_schema_status(config).refusal("") or "store: schema too new") from None
    if found == now:
        print(f"store: {location}: schema version {now}, up to date")
    elif found == 0:
        print(f"store: {location}: created schema version {now}")
    else:
        print(f"store: {location}: upgraded schema from version {found} to {now}")
    return 0


def _store_migrate(args: argparse.Namespace, config: Config) -> int:
    """`surat store migrate --to DSN`: the configured SQLite store into an empty PostgreSQL database
    (surat.store.migrate does the copying and the checks; this reads options and prints)."""
    from surat.store.migrate import MigrationReport, Progress, migrate_to_postgresql  # noqa: PLC0415 (psycopg)

    if config.store.backend != "sqlite":
        raise CliError(
            f"store migrate: the configured store is {config.store.backend} already; it copies from sqlite"
        )
    password_file = Path(args.password_file) if args.password_file else None
    try:
        target = postgresql_store(args.to, password_file, dsn_key="--to", file_key="--password-file")
    except ConfigError as exc:
        raise CliError(f"store migrate: {exc}", 2) from None
    print(f"store migrate: {store_location(config)} -> {target.describe()}", flush=True)
    show_progress = sys.stderr.isatty()

    def progress(step: Progress) -> None:
        if show_progress:
            end = "\n" if step.bodies_done == step.bodies_total else ""
            megabytes = step.bodies_done and step.bytes_done / 1e6
            print(
                f"\r  bodies {step.bodies_done}/{step.bodies_total}, {megabytes:.1f} MB",
                end=end,
                file=sys.stderr,
                flush=True,
            )

    try:
        report: MigrationReport = asyncio.run(
            migrate_to_postgresql(
                config.data_dir,
                target,
                init_command=f"{command_prefix(args.config)} store init",
                progress=progress,
            )
        )
    except SchemaTooNew as exc:
        raise CliError(f"store migrate: target {exc}") from None
    except StoreError as exc:
        raise CliError(f"store migrate: {exc}") from None
    for table, rows in report.tables:
        print(f"  {table:<17} {rows:>9} rows")
    rate = report.messages / report.seconds if report.seconds > 0 else 0.0
    print(
        f"  {'message bodies':<17} {report.bodies:>9} ({report.body_bytes / 1e6:.1f} MB), SHA-256 verified\n"
        f"copied and verified in {report.seconds:.1f} s: {report.messages} messages, {rate:.0f} messages/s"
    )
    password_line = (
        f'\n  dsn_password_file = "{password_file.resolve()}"' if password_file is not None else ""
    )
    print(
        "next: stop surat (if it runs), set in the config\n"
        f'  [store]\n  backend = "postgresql"\n  dsn = "{redacted_dsn(target.dsn or "")}"{password_line}\n'
        "then start surat"
    )
    return 0


def _check_tls(config: Config) -> TlsContexts | None:
    """The certificates the server would serve, each checked as it would check them."""
    if config.tls.cert is None or config.tls.key is None:
        return None
    if config.acme is not None and not config.tls.cert.exists():
        return None  # [acme] before the first start: the server writes a placeholder, then orders
    try:
        return TlsContexts(config.tls)
    except TLSSetupError as exc:
        raise CliError(f"config: {exc.setting}: {exc}", 2) from None


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running `surat serve` to re-read its certificates (as SIGHUP does)."""
    config = _load(args)
    # The server would refuse these too (and keep its old ones): say why here, where it is seen.
    _check_tls(config)
    pid = _send_sighup(config, "reload")
    if pid is None:
        raise CliError(
            f"reload: no surat serve is running with data_dir {config.data_dir} "
            f"(it holds {PID_FILE_NAME} there while it runs)"
        )
    print(
        f"reload: asked surat serve (pid {pid}) to re-read its certificates; "
        "its log says tls.reloaded, or tls.reload_failed (then it keeps the old ones)"
    )
    return 0


def _transfer(store: Store) -> TransferStore:
    # Both backends implement TransferStore (store.setup.ConfiguredStore says so to mypy).
    return cast("TransferStore", store)


class _ProgressLine:
    """One line on stderr, rewritten at most every PROGRESS_INTERVAL seconds, when it is a terminal."""

    PROGRESS_INTERVAL = 0.2

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._shown = 0.0
        self._dirty = False

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._shown >= self.PROGRESS_INTERVAL):
            print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)
            self._shown, self._dirty = now, True

    def done(self) -> None:
        if self._dirty:
            print(file=sys.stderr, flush=True)
            self._dirty = False


def _import_progress_text(step: ImportProgress) -> str:
    megabytes = step.bytes_read / 1e6
    text = f"  {step.messages} imported, {step.skipped} already there, {step.broken} broken, {megabytes:.1f}"
    text += f" of {step.bytes_total / 1e6:.1f} MB"
    if 0 < step.bytes_read < step.bytes_total and step.seconds > 1:
        left = step.seconds * (step.bytes_total - step.bytes_read) / step.bytes_read
        text += f", ETA {int(left) // 60}:{int(left) % 60:02d}"
    return text


def cmd_import(args: argparse.Namespace) -> int:
    """`surat import ADDRESS PATH [--mailbox NAME]` (surat.mailfiles.importer does the work)."""
    config = _load(args)
    address = normalize_address(args.address)
    path = Path(args.path)
    if not path.exists():
        raise CliError(f"import: {path}: no such file or directory")
    line = _ProgressLine()

    async def act(store: Store) -> int:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"account {address} does not exist")
        importer = Importer(
            _transfer(store),
            account,
            size_limit=config.limits.message_size,
            progress=lambda step: line.show(_import_progress_text(step)),
        )
        try:
            summary = await importer.run(path, args.mailbox)
        finally:
            line.done()
        for broken in summary.broken:
            print(f"skipped {terminal_safe(broken)}", file=sys.stderr)
        rate = summary.imported / summary.seconds if summary.seconds > 0 else 0.0
        for name, count in sorted(summary.mailboxes.items()):
            print(f"  {terminal_safe(name)}: {count}")
        print(
            f"imported {summary.imported} message(s) ({summary.imported_bytes / 1e6:.1f} MB) into {address}"
            f" in {summary.seconds:.1f} s ({rate:.0f} messages/s); {summary.skipped} already imported,"
            f" {len(summary.broken)} skipped as broken"
        )
        if summary.stopped is not None:
            raise CliError(
                f"import stopped at {terminal_safe(summary.stopped)}; run it again once there is room"
            )
        return 0

    return _with_configured_store(args, config, act)


def cmd_export(args: argparse.Namespace) -> int:
    """`surat export ADDRESS DIR [--format maildir|mbox]` (surat.mailfiles.exporter)."""
    config = _load(args)
    address = normalize_address(args.address)

    async def act(store: Store) -> int:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"account {address} does not exist")
        try:
            summary = await Exporter(store, account, Path(args.dir), args.format).run()
        except FileExistsError as exc:
            raise CliError(f"export: {exc}") from None
        for warning in summary.warnings:
            print(f"warning: {terminal_safe(warning)}", file=sys.stderr)
        print(
            f"exported {summary.messages} message(s) ({summary.bytes / 1e6:.1f} MB) in {summary.mailboxes}"
            f" mailbox(es) of {address} to {args.dir} ({args.format})"
        )
        return 0

    return _with_configured_store(args, config, act)


def _store_verify(args: argparse.Namespace, config: Config) -> int:
    """`surat store verify [--repair]`: the checks are the store's (surat.store.transfer)."""
    line = _ProgressLine()

    async def act(store: Store) -> int:
        try:
            report = await _transfer(store).verify(
                repair=args.repair, progress=lambda done, total: line.show(f"  bodies {done}/{total}")
            )
        finally:
            line.done()
        for problem in report.problems:
            print(f"problem: {terminal_safe(problem)}")
        for repaired in report.repaired:
            print(f"repaired: {terminal_safe(repaired)}")
        print(
            f"store verify: {report.messages} message(s), {report.bodies} bodies ({report.body_bytes / 1e6:.1f} MB),"
            f" {report.digests_checked} checked by SHA-256; {len(report.problems)} problem(s)"
        )
        return 1 if report.problems and not args.repair else 0

    return _with_configured_store(args, config, act)


def _send_sighup(config: Config, command: str) -> int | None:
    """SIGHUP to the `surat serve` of this data_dir: its pid, or None when none runs."""
    pid = running_server_pid(config.data_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"{command}: surat serve (pid {pid}) has just stopped") from None
    except PermissionError:
        raise CliError(f"{command}: not allowed to signal surat serve (pid {pid}); run as its user") from None
    return pid


def cmd_acme(args: argparse.Namespace) -> int:
    """`surat acme revoke`: revoke the certificate ACME obtained (RFC 8555 §7.6) and have the running
    server order a new one now."""
    config = _load(args)
    if config.acme is None:
        raise CliError("acme: the config has no [acme] table")
    from surat.acme.issue import revoke  # noqa: PLC0415 (the acme library, only for this command)

    files = AcmeFiles(config.data_dir)
    try:
        revoked = revoke(config.acme, files, args.reason)
    except Exception as exc:  # the library's errors, network errors: one line, nothing recorded
        raise CliError(f"acme: revoke failed: {type(exc).__name__}: {exc}") from None
    # The renewal orders a replacement for this serial at its next check (SIGHUP: now).
    files.write_status(replace(files.read_status(), revoked_serial=revoked.serial_number))
    print(f"acme: revoked the certificate with serial {revoked.serial_number:x} ({args.reason})")
    pid = _send_sighup(config, "acme")
    if pid is None:
        print("acme: no surat serve is running; it orders a new certificate when it starts")
    else:
        print(f"acme: asked surat serve (pid {pid}) to order a new certificate; its log says acme.issued")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    tls = _check_tls(config)
    status = _usable_schema(args, config)

    def report(contents: str | None, has_domains: bool) -> int:
        acme_lines: list[str] = []
        acme_warnings: list[str] = []
        if config.acme is not None:
            acme_lines, acme_warnings = status_lines(AcmeFiles(config.data_dir), config.acme.directory)
        lines = [
            f"config:   {config.path}",
            f"hostname: {config.hostname}",
            f"tls:      {config.tls.cert or '(none)'}",
            *certificate_lines(tls.certificates if tls is not None else ()),
            *acme_lines,
            f"store:    {store_location(config)}, schema version {status.found}"
            + ("" if status.found else f" (version {status.expected} is created at the first start)"),
            f"data_dir: {config.data_dir}" + (f": {contents}" if contents else ""),
            "listeners:",
            *_listener_lines(config.listen),
            "proxy:    PROXY protocol from "
            + (", ".join(str(network) for network in config.proxy.trusted) or "(nobody)"),
        ]
        if not has_domains:
            lines.append(
                f"note: no local domains yet; add one with `{command_prefix(args.config)} domain add DOMAIN`"
            )
        warnings = []
        if config.tls.cert is not None and config.tls.cert.exists():
            warnings = [
                f"warning: tls.cert: {text}"
                for text in certificate_warnings(config.tls.cert, config.hostname, datetime.now(UTC))
            ]
        if tls is not None:
            warnings += [f"warning: {note}" for note in tls.ignored_names]
        warnings += acme_warnings
        # mail and password hashes: nobody but the server's user may read them (issue 11 item 12)
        for path, mode in loose_modes(config.data_dir):
            wanted = PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_FILE_MODE
            warnings.append(
                f"warning: {terminal_safe(str(path))} has mode {mode:04o}, others may read it; "
                f"chmod {wanted:04o} it"
            )
        lines += warnings
        lines.append(f"OK, with {len(warnings)} warning(s)" if warnings else "OK")
        print("\n".join(lines))
        return 0

    async def inspect(store: Store) -> int:
        domains = await store.list_domains()
        accounts = await store.list_accounts()
        queue = await store.list_queue()
        contents = f"{len(domains)} domain(s), {len(accounts)} account(s), {len(queue)} queued message(s)"
        return report(contents, has_domains=bool(domains))

    return _with_store(configured_store(config), store_location(config), inspect)


def cmd_dns(args: argparse.Namespace) -> int:
    domain = normalize_domain(args.domain)
    config: Config | None
    if args.hostname:
        hostname = normalize_domain(args.hostname, "hostname")
        ports = PRODUCTION_PORTS
        # The DKIM keys are in the data directory: read them when a config is at hand, but a
        # missing or broken one is no error here (--hostname is for use without a setup).
        path = config_path(args.config)
        try:
            config = load_config(path) if path.is_file() else None
        except ConfigError:
            config = None
    else:
        config = _load(args)
        hostname = config.hostname
        ports = _client_ports(config.listen)
    keys: tuple[dkim.DkimKey, ...] | None = None
    if config is not None:
        # The DKIM keys are in the store (files in the data directory, or the database).
        async def read_keys(store: Store) -> int:
            nonlocal keys
            if not args.force and not await store.is_local_domain(domain):
                raise CliError(
                    f"{domain} is not a local domain: add it with `{command_prefix(args.config)} domain add {domain}` first, "
                    "or pass --force to print its records anyway"
                )
            keys = await admin_ops.load_dkim_keys(store, domain)
            return 0

        _with_configured_store(args, config, read_keys)
    # Without a config (--hostname alone) the policy is the default [mta_sts] one for that host.
    record_set = admin_ops.dns_record_set(domain, hostname, ports, keys, config)
    if not args.check:
        print(format_records(record_set), end="")
        return 0
    # --check: each record against the live DNS, through [dns] nameservers (the system's without a
    # config), as the admin console shows it (surat.dnscheck).
    resolver = DnsResolver(config.dns.nameservers if config is not None else ())
    checks = asyncio.run(check_records(record_set, resolver))
    print(format_checks(checks), end="")
    failed = [check for check in checks if not check.passed]
    if failed:
        print(f"{len(failed)} of {len(checks)} records are not published as expected", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------- domains


def cmd_domain(args: argparse.Namespace) -> int:
    config = _load(args)
    action: str = args.action

    async def act(store: Store) -> int:
        if action == "list":
            for name in sorted(await store.list_domains()):
                print(name)
            return 0
        domain = normalize_domain(args.domain)
        if action == "add":
            keys = await admin_ops.add_domain(store, domain)
            print(f"added domain {domain}")
            print(
                f"DKIM keys (selectors {', '.join(key.selector for key in keys)}) are in "
                f"{store.keys.dkim_location(domain)}; publish them: {command_prefix(args.config)} dns {domain}"
            )
        else:
            kept = await admin_ops.delete_domain(
                store, domain, accounts_hint=f" ({command_prefix(args.config)} user list {domain})"
            )
            print(f"deleted domain {domain}")
            if kept is not None:
                print(f"note: its DKIM keys stay in {kept}; delete them yourself", file=sys.stderr)
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- users


def cmd_user(args: argparse.Namespace) -> int:
    config = _load(args)
    action: str = args.action
    if action in ("vacation", "forward"):
        return _user_sieve(args, config, normalize_address(args.address))
    if action == "app-password":
        return _app_password(args, config)
    address = normalize_address(args.address) if action in ("add", "passwd", "del", "quota", "admin") else ""
    quota: int | None = None
    if action == "quota":
        quota = None if args.bytes.strip().lower() in ("none", "unlimited") else parse_size(args.bytes)
    elif action == "add" and args.quota is not None:
        quota = parse_size(args.quota)
    if action == "add":
        admin_ops.check_account_address(address)

    credentials = None
    if action in ("add", "passwd"):
        # Check what can be checked before asking for a password nobody will use.
        def precheck(exists_wanted: bool) -> Callable[[Store], Awaitable[int]]:
            async def check(store: Store) -> int:
                if exists_wanted:
                    await admin_ops.existing_account(store, address)
                else:
                    hint = f"; add it first: {command_prefix(args.config)} domain add {domain_of(address)}"
                    await admin_ops.check_new_account(store, address, domain_hint=hint)
                return 0

            return check

        _with_configured_store(args, config, precheck(action == "passwd"))
        password = _read_password(args)
        if action == "add":
            try:
                credentials = make_credentials(password, scram_iterations=config.auth.scram_iterations)
            except SASLprepError as exc:
                raise CliError(str(exc)) from None

    async def act(store: Store) -> int:
        if action == "list":
            domain = normalize_domain(args.domain) if args.domain else None
            for account in sorted(await store.list_accounts(domain), key=lambda a: a.address):
                used = await store.account_usage(account.id)
                admin = "  admin" if account.is_admin else ""
                print(f"{account.address}  quota={format_size(account.quota_bytes)}  used={used}{admin}")
        elif action == "add":
            assert credentials is not None
            await admin_ops.add_account(store, address, credentials, quota)
            print(f"added account {address}")
        elif action == "passwd":
            try:  # the account pages change passwords through the same function
                await set_password(store, address, password, scram_iterations=config.auth.scram_iterations)
            except SASLprepError as exc:
                raise CliError(str(exc)) from None
            print(f"changed the password of {address}")
        elif action == "del":
            dangling = await admin_ops.delete_account(store, address)
            print(f"deleted account {address} and its mail")
            if dangling:
                print(f"note: aliases still point to it: {', '.join(dangling)}", file=sys.stderr)
        elif action == "admin":
            await admin_ops.set_admin(store, address, args.state == "on")
            print(f"{address} is {'now' if args.state == 'on' else 'no longer'} an administrator")
        else:
            await admin_ops.set_quota(store, address, quota)
            print(f"quota of {address}: {format_size(quota)}")
        return 0

    return _with_configured_store(args, config, act)


def _app_password(args: argparse.Namespace, config: Config) -> int:
    """`surat user app-password ADDRESS add NAME | list | revoke NAME` (issue 13)."""
    address = normalize_address(args.address)
    action: str = args.app_action

    async def act(store: Store) -> int:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"account {address} does not exist")
        if action == "list":
            for entry in await store.list_app_passwords(account.id):
                used = entry.last_used.isoformat(timespec="seconds") if entry.last_used else "never"
                created = entry.created_at.isoformat(timespec="seconds")
                print(f"{terminal_safe(entry.name)}  created={created}  last_used={used}")
        elif action == "add":
            try:
                _, password = await create_app_password(store, account, args.name)
            except AppPasswordNameError as exc:
                raise CliError(f"app password name: {exc}") from None
            except AlreadyExists:
                raise CliError(
                    f"{address} has an app password named {terminal_safe(args.name)} already"
                ) from None
            except LimitReached as exc:
                raise CliError(str(exc)) from None
            print(f"app password {terminal_safe(args.name.strip())} for {address} (shown only now):")
            print(password)
        else:
            try:
                await revoke_app_password(store, account, args.name)
            except NotFound:
                raise CliError(f"{address} has no app password named {terminal_safe(args.name)}") from None
            print(f"revoked app password {terminal_safe(args.name)} of {address}")
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- aliases


def cmd_alias(args: argparse.Namespace) -> int:
    config = _load(args)
    action: str = args.action

    async def act(store: Store) -> int:
        if action == "list":
            domain = normalize_domain(args.domain) if args.domain else None
            for alias in sorted(await store.list_aliases(domain), key=lambda a: (a.source, a.target)):
                print(f"{alias.source} -> {alias.target}")
            return 0
        source = normalize_alias_source(args.source)
        target = normalize_address(args.target, "alias target") if args.target else None
        if action == "add":
            assert target is not None
            await admin_ops.add_alias(store, source, target)
            print(f"added alias {source} -> {target}")
        else:
            await admin_ops.delete_alias(store, source, target)
            print(f"deleted alias {source}" + (f" -> {target}" if target else ""))
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- sieve


def _read_script_file(name: str) -> str:
    """A script from FILE, or from stdin for "-"; UTF-8 (RFC 5228 §2.1)."""
    if name == "-":
        return sys.stdin.read()
    data = Path(name).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{name}: not UTF-8 text (octet {exc.start})") from None


async def _account_id(store: Store, address: str) -> int:
    account = await store.get_account(address)
    if account is None:
        raise CliError(f"account {address} does not exist")
    return account.id


def cmd_sieve(args: argparse.Namespace) -> int:
    action: str = args.action
    if action == "check":
        # Parse only, no config or store: usable on any machine before `put`.
        try:
            parse_script(_read_script_file(args.file))
        except SieveSyntaxError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        print(f"{args.file}: ok")
        return 0
    config = _load(args)
    address = normalize_address(args.address)
    text = _read_script_file(args.file) if action == "put" else ""

    async def act(store: Store) -> int:
        account_id = await _account_id(store, address)
        if action == "put":
            try:
                script = await store.put_sieve_script(account_id, args.name, text)
            except InvalidScript as exc:
                raise CliError(f"script {args.name}: {exc}") from None
            state = "active" if script.active else f"not active; {command_prefix(args.config)} sieve activate"
            print(f"stored script {args.name} of {address} ({state})")
        elif action == "get":
            found = await store.get_sieve_script(account_id, args.name)
            if found is None:
                raise CliError(f"{address} has no script {args.name}")
            sys.stdout.write(found.text)
        elif action == "list":
            for script in await store.list_sieve_scripts(account_id):
                print(f"{script.name}{'  (active)' if script.active else ''}")
        elif action == "activate":
            await store.activate_sieve_script(account_id, args.name)
            print(f"script {args.name} of {address} is active")
        elif action == "deactivate":
            await store.activate_sieve_script(account_id, None)
            print(f"no script of {address} is active")
        else:
            try:
                await store.delete_sieve_script(account_id, args.name)
            except ScriptActive:
                raise CliError(
                    f"script {args.name} is active; deactivate it or activate another first (RFC 5804 §2.10)"
                ) from None
            print(f"deleted script {args.name} of {address}")
        return 0

    return _with_configured_store(args, config, act)


async def set_generated_script(
    store: Store, account_id: int, name: str, build: Callable[[str | None], str] | None
) -> str | None:
    """Write (`build(next)`) or remove (None) the generated script `name` and re-link the chain
    (surat.sieve.generated): vacation, then forward, then the user's own script, the first active.
    Returns the name of the script now active."""
    scripts = {script.name: script for script in await store.list_sieve_scripts(account_id)}
    active = next((script.name for script in scripts.values() if script.active), None)
    # The user's own script: the active one, or the one the chain of generated scripts hands on to.
    own = active
    for _ in GENERATED_SCRIPTS:  # bounded: the chain has at most one step per generated script
        if own is None or own not in GENERATED_SCRIPTS or own not in scripts:
            break
        own = next_script(scripts[own].text)
    if own in GENERATED_SCRIPTS or (own is not None and own not in scripts):
        own = None
    present = [
        n for n in GENERATED_SCRIPTS if (n == name and build is not None) or (n != name and n in scripts)
    ]
    for index, generated in enumerate(present):
        then = present[index + 1] if index + 1 < len(present) else own
        if generated == name:
            assert build is not None
            text = build(then)
        else:
            text = relink(scripts[generated].text, then)
        if generated == name or text != scripts[generated].text:
            await store.put_sieve_script(account_id, generated, text)
    head = present[0] if present else own
    if head != active:
        await store.activate_sieve_script(account_id, head)
    if build is None and name in scripts:
        await store.delete_sieve_script(account_id, name)
    return head


def _user_sieve(args: argparse.Namespace, config: Config, address: str) -> int:
    """`surat user vacation ...` and `surat user forward ...`: generated scripts."""
    action: str = args.action
    build: Callable[[str | None], str] | None = None
    if action == "vacation":
        name = VACATION_SCRIPT
        if args.state == "on":
            body = sys.stdin.read()
            if not body.strip():
                raise UsageError("user vacation: the reply's text comes on stdin (< body.txt)")
            subject: str = args.subject
            days: int = args.days
            if days < 1:
                raise UsageError("user vacation: --days is at least 1 (RFC 5230 §4.1)")
            build = lambda then: vacation_script(subject, days, body, then)  # noqa: E731
    else:
        name = FORWARD_SCRIPT
        if args.target.lower() != "off":
            target = normalize_address(args.target, "forward target")
            keep: bool = args.keep
            build = lambda then: forward_script(target, keep, then)  # noqa: E731

    async def act(store: Store) -> int:
        account_id = await _account_id(store, address)
        head = await set_generated_script(store, account_id, name, build)
        what = "on" if build is not None else "off"
        print(f"{action} of {address} is {what}; active script: {head or 'none'}")
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- queue


def _queue_line(entry: QueueEntry) -> str:
    recipients = ", ".join(f"{r.address} ({r.state.value})" for r in entry.recipients)
    return (
        f"{entry.id}  {_format_time(entry.created_at)}  {entry.size:>9}  "
        f"next {_format_time(entry.next_attempt_at)}  <{entry.sender}> -> {recipients}"
    )


def _queue_details(entry: QueueEntry) -> list[str]:
    lines = [
        f"id:           {entry.id}",
        f"sender:       <{entry.sender}>",
        f"size:         {entry.size}",
        f"created:      {_format_time(entry.created_at)}",
        f"next attempt: {_format_time(entry.next_attempt_at)}",
    ]
    if entry.authenticated_user:
        lines.append(f"submitted by: {entry.authenticated_user}")
    dsn = [f"envid={entry.envid}" if entry.envid else "", f"ret={entry.ret}" if entry.ret else ""]
    if any(dsn):
        lines.append("dsn:          " + " ".join(part for part in dsn if part))
    lines.append("recipients:")
    for recipient in entry.recipients:
        extra = f"  notify={','.join(recipient.notify)}" if recipient.notify else ""
        if recipient.delay_notified:
            extra += "  (delay notice sent)"
        lines.append(f"  {recipient.address}  {recipient.state.value}{extra}")
        if recipient.last_reply:
            lines.append(f"    last reply: {recipient.last_reply}")
    lines.append(f"attempts:     {len(entry.attempts)}")
    for attempt in entry.attempts:
        lines.append(
            f"  #{attempt.number} {_format_time(attempt.started_at)} {attempt.host or '-'}: "
            f"{attempt.result or '(in progress)'}"
        )
    return lines


def cmd_queue(args: argparse.Namespace) -> int:
    config = _load(args)
    action: str = args.action

    async def act(store: Store) -> int:
        # The server may be running: SQLite in WAL mode lets this process read and write beside it.
        now = datetime.now(UTC)
        if action == "list":
            entries = await store.list_queue()
            for queued in entries:
                # envelope addresses and remote replies are other people's text: no terminal escapes
                print(terminal_safe(_queue_line(queued)))
            print(f"{len(entries)} message(s) queued", file=sys.stderr)
            return 0
        if action == "flush":
            count = await admin_ops.flush_queue(store, now)
            print(f"{count} message(s) due now")
            return 0
        if action == "show":
            print("\n".join(map(terminal_safe, _queue_details(await admin_ops.queue_entry(store, args.id)))))
        elif action == "retry":
            await admin_ops.retry_queue_entry(store, args.id, now)
            print(f"{args.id} due now")
        else:
            await admin_ops.drop_queue_entry(store, args.id)
            print(f"dropped {args.id} (no bounce sent)")
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- blocks


def cmd_blocks(args: argparse.Namespace) -> int:
    """Addresses blocked after repeated failed logins (surat.authlimit), shared with the running server."""
    config = _load(args)
    action: str = args.action

    async def act(store: Store) -> int:
        if action == "list":
            blocked = await admin_ops.blocked_clients(store, config.limits)
            now = time.time()
            for state in blocked:
                until = datetime.fromtimestamp(state.blocked_until, UTC)
                left = max(1, round((state.blocked_until - now) / 60))
                shown = state.key if state.key == state.ip else f"{state.key} (last {state.ip})"
                print(f"{shown}  until {_format_time(until)} ({left} min)  blocks {state.strikes}")
            print(f"{len(blocked)} address(es) blocked", file=sys.stderr)
            return 0
        key = await admin_ops.lift_block(store, config.limits, args.ip)
        print(f"lifted the block of {key}")
        return 0

    return _with_configured_store(args, config, act)


# ----------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="surat", description="Surat, an all-in-one mail server.")
    parser.add_argument("--version", action="version", version=f"surat {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the config file (default: $SURAT_CONFIG, else ./surat.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser("quickstart", help="write a config, a certificate and a first account")
    quickstart.add_argument("--domain", required=True, help="the first mail domain, e.g. example.com")
    quickstart.add_argument("--hostname", help="this server's name (default: mail.DOMAIN)")
    quickstart.add_argument(
        "--dir", default=".", help="where to write surat.toml, tls/ and data/ (default: .)"
    )
    quickstart.add_argument(
        "--dev",
        action="store_true",
        help="loopback listeners on unprivileged ports and a dev CA, for trying Surat out",
    )
    quickstart.set_defaults(handler=cmd_quickstart)

    serve = commands.add_parser("serve", help="run the server until SIGINT/SIGTERM")
    serve.set_defaults(handler=cmd_serve)

    domain = commands.add_parser("domain", help="local mail domains")
    domain_actions = domain.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("add", "add a local domain"),
        ("del", "delete a domain without accounts (its DKIM keys stay on disk)"),
    ):
        domain_actions.add_parser(name, help=text).add_argument("domain", metavar="DOMAIN")
    domain_actions.add_parser("list", help="list the local domains")
    domain.set_defaults(handler=cmd_domain)

    user = commands.add_parser("user", help="accounts (mailboxes with a password)")
    user_actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    user_add = user_actions.add_parser("add", help="add an account (asks for its password)")
    user_add.add_argument("address", metavar="ADDRESS")
    user_add.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line from stdin"
    )
    user_add.add_argument("--quota", metavar="BYTES", help="storage quota, e.g. 2G (default: unlimited)")
    user_passwd = user_actions.add_parser("passwd", help="set an account's password")
    user_passwd.add_argument("address", metavar="ADDRESS")
    user_passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line from stdin"
    )
    user_actions.add_parser("del", help="delete an account and all its mail").add_argument(
        "address", metavar="ADDRESS"
    )
    user_actions.add_parser("list", help="list accounts").add_argument("domain", metavar="DOMAIN", nargs="?")
    user_quota = user_actions.add_parser("quota", help="set an account's quota")
    user_quota.add_argument("address", metavar="ADDRESS")
    user_quota.add_argument("bytes", metavar="BYTES|none", help="e.g. 1073741824, 500M, 2G, or none")
    user_admin = user_actions.add_parser("admin", help="let an account use the admin console, or stop it")
    user_admin.add_argument("address", metavar="ADDRESS")
    user_admin.add_argument("state", choices=("on", "off"), help="on: administrator; off: not")
    user_app = user_actions.add_parser(
        "app-password", help="passwords for mail clients (IMAP, POP3, SMTP), never for the web login"
    )
    user_app.add_argument("address", metavar="ADDRESS")
    app_actions = user_app.add_subparsers(dest="app_action", required=True, metavar="ACTION")
    app_actions.add_parser("add", help="make one and print it (only this once)").add_argument(
        "name", metavar="NAME", help="what it is for, e.g. phone"
    )
    app_actions.add_parser("list", help="names, creation and last use")
    app_actions.add_parser("revoke", help="delete one: clients using it can no longer log in").add_argument(
        "name", metavar="NAME"
    )
    user.set_defaults(handler=cmd_user)

    vacation = user_actions.add_parser(
        "vacation", help="an out-of-office reply (a generated Sieve script; the text on stdin)"
    )
    vacation.add_argument("address", metavar="ADDRESS")
    vacation.add_argument("state", choices=("on", "off"))
    vacation.add_argument("--subject", default="Out of office")
    vacation.add_argument("--days", type=int, default=7, help="at most one reply per sender in N days")
    forward = user_actions.add_parser(
        "forward", help="forward every message to TARGET, or 'off' (a generated Sieve script)"
    )
    forward.add_argument("address", metavar="ADDRESS")
    forward.add_argument("target", metavar="TARGET|off")
    forward.add_argument("--keep", action="store_true", help="keep a copy here too")

    sieve = commands.add_parser("sieve", help="Sieve filter scripts of an account (one active)")
    sieve_actions = sieve.add_subparsers(dest="action", required=True, metavar="ACTION")
    sieve_put = sieve_actions.add_parser("put", help="store a script from FILE ('-': stdin), checked first")
    sieve_put.add_argument("address", metavar="ADDRESS")
    sieve_put.add_argument("name", metavar="NAME")
    sieve_put.add_argument("file", metavar="FILE")
    for name, text in (
        ("get", "print a script"),
        ("activate", "make a script the active one"),
        ("del", "delete a script (not the active one)"),
    ):
        one = sieve_actions.add_parser(name, help=text)
        one.add_argument("address", metavar="ADDRESS")
        one.add_argument("name", metavar="NAME")
    sieve_actions.add_parser("list", help="list the scripts, marking the active one").add_argument(
        "address", metavar="ADDRESS"
    )
    sieve_actions.add_parser("deactivate", help="no script active").add_argument("address", metavar="ADDRESS")
    sieve_actions.add_parser("check", help="check a script's syntax ('-': stdin)").add_argument(
        "file", metavar="FILE"
    )
    sieve.set_defaults(handler=cmd_sieve)

    alias = commands.add_parser("alias", help="aliases; SOURCE may be @domain (catch-all)")
    alias_actions = alias.add_subparsers(dest="action", required=True, metavar="ACTION")
    alias_add = alias_actions.add_parser("add", help="deliver mail for SOURCE to TARGET")
    alias_add.add_argument("source", metavar="SOURCE")
    alias_add.add_argument("target", metavar="TARGET")
    alias_del = alias_actions.add_parser("del", help="delete an alias (all its targets if TARGET is omitted)")
    alias_del.add_argument("source", metavar="SOURCE")
    alias_del.add_argument("target", metavar="TARGET", nargs="?")
    alias_actions.add_parser("list", help="list aliases").add_argument("domain", metavar="DOMAIN", nargs="?")
    alias.set_defaults(handler=cmd_alias)

    queue = commands.add_parser("queue", help="the outbound queue")
    queue_actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    queue_actions.add_parser("list", help="list queued messages")
    for name, text in (
        ("show", "show one queued message"),
        ("retry", "make a message due now"),
        ("drop", "remove a message from the queue without a bounce"),
    ):
        queue_actions.add_parser(name, help=text).add_argument("id", metavar="ID")
    queue_actions.add_parser("flush", help="make every queued message due now")
    queue.set_defaults(handler=cmd_queue)

    blocks = commands.add_parser("blocks", help="addresses blocked after repeated failed logins")
    block_actions = blocks.add_subparsers(dest="action", required=True, metavar="ACTION")
    block_actions.add_parser("list", help="list the blocked addresses and when each block ends")
    block_actions.add_parser("lift", help="lift the block of an address now").add_argument(
        "ip", metavar="IP", help="the address (an IPv6 address lifts its /64)"
    )
    blocks.set_defaults(handler=cmd_blocks)

    dns = commands.add_parser("dns", help="print the DNS records to publish for a domain")
    dns.add_argument("domain", metavar="DOMAIN")
    dns.add_argument("--hostname", help="the MX host name (default: hostname from the config)")
    dns.add_argument("--force", action="store_true", help="print the records of a domain that is not local")
    dns.add_argument(
        "--check",
        action="store_true",
        help="look each record up in the live DNS ([dns] nameservers) and print ok/missing/different;"
        " exit status 1 unless all are ok (optional ones may be missing)",
    )
    dns.set_defaults(handler=cmd_dns)

    store = commands.add_parser("store", help="the store's schema")
    store_actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    store_actions.add_parser("init", help="create or upgrade the schema of the configured store")
    migrate = store_actions.add_parser(
        "migrate", help="copy the configured SQLite store into an empty PostgreSQL database, verified"
    )
    migrate.add_argument(
        "--to", required=True, metavar="DSN", help="the target database (libpq URL or key=value)"
    )
    migrate.add_argument(
        "--password-file",
        metavar="PATH",
        help="a file holding the target database's password (as [store] dsn_password_file)",
    )
    verify = store_actions.add_parser(
        "verify", help="check every body, the mailbox counters and quota usage; report orphan bodies"
    )
    verify.add_argument(
        "--repair", action="store_true", help="recount quota usage and remove orphan bodies (never a message)"
    )
    store.set_defaults(handler=cmd_store)

    reload = commands.add_parser(
        "reload", help="make the running server re-read its TLS certificates and keys (as SIGHUP does)"
    )
    reload.set_defaults(handler=cmd_reload)

    imports = commands.add_parser(
        "import", help="bring mail in: an mbox file, a Maildir(++) tree, .eml files"
    )
    imports.add_argument("address", metavar="ADDRESS")
    imports.add_argument("path", metavar="PATH")
    imports.add_argument("--mailbox", metavar="NAME", help="the mailbox for the top level (default: INBOX)")
    imports.set_defaults(handler=cmd_import)

    export = commands.add_parser("export", help="write every mailbox of an account as Maildir++ or mbox")
    export.add_argument("address", metavar="ADDRESS")
    export.add_argument("dir", metavar="DIR", help="an empty or new directory")
    export.add_argument("--format", choices=FORMATS, default="maildir", help="default: maildir")
    export.set_defaults(handler=cmd_export)

    acme = commands.add_parser("acme", help="the certificate obtained by [acme]")
    acme_actions = acme.add_subparsers(dest="action", required=True, metavar="ACTION")
    revoke = acme_actions.add_parser("revoke", help="revoke the served certificate and order a new one now")
    revoke.add_argument(
        "--reason",
        default="unspecified",
        choices=list(REVOCATION_REASONS),
        help="the RFC 5280 reason (default: unspecified)",
    )
    acme.set_defaults(handler=cmd_acme)

    check = commands.add_parser("check", help="validate the config, the TLS files and the store")
    check.set_defaults(handler=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except CliError as exc:
        print(f"surat: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (NotFound, AlreadyExists) as exc:
        print(f"surat: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"surat: store: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"surat:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("surat: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SURAT_DEBUG"):
            raise
        print(
            f"surat: unexpected error: {type(exc).__name__}: {exc} (SURAT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
