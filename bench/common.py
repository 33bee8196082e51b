"""What the benchmarks share: free ports, waiting for a listener, a throwaway Surat setup."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from surat.config import load_config
from surat.store.base import Delivery, MailboxTarget, Store
from surat.store.setup import configured_store

SURAT = [sys.executable, "-m", "surat"]
# Every listener role quickstart writes: single_listener_setup turns off all but one (the web ones
# too, or two nodes, or a bench beside a developer's `make run`, fail on the same fixed dev ports).
ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "https", "http", "admin")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (and, with ``children``, of its exited, reaped children)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # gone meanwhile
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0  # gone meanwhile
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def percentile_ms(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (seconds), in milliseconds; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


@dataclass
class LoadFigures:
    """What a timed load measured: latencies (seconds) per operation kind, and the CPU it took."""

    latencies: dict[str, list[float]]
    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float | None = None  # PostgreSQL's processes, when Surat runs on them

    @property
    def ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def latency_lines(self) -> Iterator[str]:
        """Per kind and overall: count, rate, p50 and p99."""
        everything = [x for v in self.latencies.values() for x in v]
        width = max(len(kind) for kind in [*self.latencies, "all"])
        for kind, values in [*self.latencies.items(), ("all", everything)]:
            yield (
                f"  {kind:<{width}} n={len(values):>6} ops/s={len(values) / self.seconds:>7.0f} "
                f"p50_ms={percentile_ms(values, 0.5):7.2f} p99_ms={percentile_ms(values, 0.99):7.2f}"
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def single_listener_setup(workdir: Path, domain: str, role: str, port: int) -> Path:
    """`surat quickstart --dev` into workdir, with only `role` listening, on `port`; the config file.

    Only one listener: the other dev ports may be taken by a developer's `make run`."""
    subprocess.run(
        [*SURAT, "quickstart", "--dev", "--domain", domain, "--dir", str(workdir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    config = workdir / "surat.toml"
    lines = []
    for line in config.read_text().splitlines():
        key = line.split("=")[0].strip()
        if key == role:
            lines.append(f'{role} = ["127.0.0.1:{port}"]')
        elif key in ROLES:
            lines.append(f"{key} = []")
        else:
            lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    return config


def surat_env(config: Path) -> dict[str, str]:
    return {**os.environ, "SURAT_CONFIG": str(config)}


def add_user(config: Path, address: str, password: str) -> None:
    result = subprocess.run(
        [*SURAT, "user", "add", address, "--password-stdin"],
        input=password + "\n",
        check=False,
        text=True,
        env=surat_env(config),
        capture_output=True,
    )
    if result.returncode != 0 and "exists" not in result.stderr:
        raise RuntimeError(result.stderr)


def use_postgresql(config: Path, dsn: str, domain: str) -> None:
    """Point `config` (a `surat quickstart` file) at the empty PostgreSQL database `dsn`, create the
    schema there (`surat store init`, as an operator does) and the local `domain` (quickstart made it
    in SQLite only)."""
    with config.open("a") as file:
        file.write(f'\n[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    env = surat_env(config)
    for command in (["store", "init"], ["domain", "add", domain]):
        result = subprocess.run([*SURAT, *command], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0 and "exists" not in result.stderr:
            raise RuntimeError(f"surat {' '.join(command)}: {result.stderr.strip()}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Surat shuts down cleanly), then SIGKILL if it takes over 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ListenerSurat:
    """Surat in a subprocess: a fresh data dir, one user, and only the `role` listener, on a free port.

    `dsn`: on that empty PostgreSQL database instead of SQLite, with `nodes` `surat serve` processes
    on it (issue 12: several nodes on one database), each listening on a port of its own (`ports`;
    `port` is the first node's). Their configs differ only in that port, and share the TLS files.

    The benchmarks' subclasses fill the store (while it is stopped) their own way."""

    def __init__(
        self,
        workdir: Path,
        domain: str,
        role: str,
        user: str,
        password: str,
        *,
        dsn: str | None = None,
        nodes: int = 1,
    ) -> None:
        if nodes != 1 and dsn is None:
            raise ValueError("several nodes share a PostgreSQL database: give its dsn")
        self.workdir = workdir
        self.user = user
        self.port = free_port()
        self.config_file = single_listener_setup(workdir, domain, role, self.port)
        if dsn is not None:
            use_postgresql(self.config_file, dsn, domain)
        self.ports = [self.port]
        self.node_configs = [self.config_file]
        text = self.config_file.read_text()
        for index in range(1, nodes):
            port = free_port()
            node_config = workdir / f"surat-node{index + 1}.toml"  # beside the first: same relative paths
            # A data_dir of its own: `surat serve` refuses one that another running node holds
            # (pidfile.py); on PostgreSQL the data lives in the database, not there.
            node_text = text.replace(f'{role} = ["127.0.0.1:{self.port}"]', f'{role} = ["127.0.0.1:{port}"]')
            node_config.write_text(
                re.sub(r'^data_dir = "([^"]*)"', rf'data_dir = "\1-node{index + 1}"', node_text, flags=re.M)
            )
            self.ports.append(port)
            self.node_configs.append(node_config)
        self.env = surat_env(self.config_file)
        add_user(self.config_file, user, password)
        self.config = load_config(self.config_file)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The first node's process while running."""
        return self.procs[0] if self.procs else None

    def tls(self) -> ssl.SSLContext:
        """A client context trusting the dev CA that `quickstart --dev` made."""
        assert self.config.tls.ca is not None
        return ssl.create_default_context(cafile=str(self.config.tls.ca))

    def start(self) -> None:
        self.log = (self.workdir / "server.log").open("a")  # every node's lines, each with its pid
        for config in self.node_configs:
            self.procs.append(
                subprocess.Popen(
                    [*SURAT, "serve"], env=surat_env(config), stdout=self.log, stderr=subprocess.STDOUT
                )
            )
        for port in self.ports:
            wait_port(port)

    def stop(self) -> None:
        if not self.procs:
            return
        for proc in self.procs:
            stop_server(proc)
        self.procs = []
        self.log.close()

    def fill_inbox(self, messages: Iterable[bytes]) -> None:
        """Deliver `messages` straight into the user's INBOX while the server is stopped."""

        async def run() -> None:
            store = configured_store(self.config)
            await store.open()
            try:
                account = await store.get_account(self.user)
                assert account is not None
                await deliver_all(store, account.id, messages)
            finally:
                await store.close()

        asyncio.run(run())


async def deliver_all(store: Store, account_id: int, messages: Iterable[bytes]) -> None:
    """Deliver `messages` into an account's INBOX, 200 at a time in flight so that the store groups them
    into few commits."""
    target = (MailboxTarget(account_id),)
    pending: set[asyncio.Task[object]] = set()
    for raw in messages:
        delivery = Delivery(None, len(raw), datetime.now(UTC), local=target, content=raw)
        pending.add(asyncio.ensure_future(store.deliver(delivery)))
        if len(pending) >= 200:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.gather(*pending)
