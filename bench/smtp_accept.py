"""SMTP acceptance benchmark: N concurrent sessions send M messages of S bytes to an MX port.

Prints messages/s and p50/p99 acceptance latency (MAIL FROM sent -> 250 after the final dot).

    .venv/bin/python bench/smtp_accept.py                      # starts Surat in a subprocess on a temp dir
    .venv/bin/python bench/smtp_accept.py --peer postfix       # also a private Postfix (bench/peers.py), same load
    .venv/bin/python bench/smtp_accept.py --target 127.0.0.1:2525 --rcpt test@example.test
    .venv/bin/python bench/smtp_accept.py --signed --checks   # issue 6: cost of SPF/DKIM/DMARC checks
    .venv/bin/python bench/smtp_accept.py --new-connections --sessions 16 --workers 1 2 --peer postfix
                                                               # issue 12: [server] workers = 1, then 2
    .venv/bin/python bench/smtp_accept.py --sieve typical --rounds 3
                                                               # issue 14: cost of a Sieve script at delivery

--signed DKIM-signs the message (RSA 2048, relaxed/relaxed) for the --sender domain, whose SPF, DKIM key and
DMARC (p=reject) records a DNS server inside this script serves on 127.0.0.1; Surat is pointed at it.
--checks runs Surat twice on the same load, with `limits.mail_auth` off and then on, and prints both rates and
their ratio (--rounds N: N times each, alternating, the best of each reported, for a machine that is busy).
With both, every message passes SPF, DKIM and DMARC (counted from the server log). server_cpu_ms_per_msg is
the Surat process's CPU time per message, steadier than msgs/s on a shared machine. With --rounds N > 1 the
cost is also printed per round (each checked run against the unchecked run just before it) with its median.

--sieve FILE runs Surat twice on the same load like --checks: without a script, then with FILE (or
"typical": bench/sieve_eval.py's 20-rule script) stored and active for --rcpt, and prints the ratio.

Every server first gets --warmup untimed messages (default 500, counted in the log-line totals), so that
neither run pays for first use (DNS and key caches filling, the first parse of the DKIM key).

--workers N [N ...] runs Surat once per count (`[server] workers = N`), one after the other, and prints
the ratio of each to the peer; server_cpu_ms_per_msg then sums the supervisor and its workers.

--backend sqlite postgresql (issue 12) runs each --workers count on each store, one after the other:
postgresql starts a private cluster (bench/pg_common.py; fsync and synchronous_commit on), gives each
run a new database (`surat store init`, `surat domain add`, `surat user add`, as an operator does) and
stops the cluster at the end. For those runs it also prints postgres_cpu_ms_per_msg (every process of
the cluster), commits_per_msg (`pg_stat_database.xact_commit` of the run's database) and
wal_flushes_per_msg (`pg_stat_wal.wal_sync`), counted from the end of the warm-up to the stop of the
server (so a clean stop's few transactions are in; the warm-up's are published first by waiting
STATS_IDLE_FLUSH_SECONDS).

    PYTHONPATH=src .venv/bin/python bench/smtp_accept.py --new-connections --sessions 16 --messages 4000 \
        --backend sqlite postgresql --workers 1 2 --peer postfix

Bounded: at most --messages messages and --timeout seconds per target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    SURAT,
    add_user,
    free_port,
    single_listener_setup,
    stop_server,
    surat_env,
    use_postgresql,
    wait_port,
)
from peers import Postfix, missing_program
from pg_common import STATS_IDLE_FLUSH_SECONDS, BenchCluster, Counters
from sieve_eval import TYPICAL


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    latencies: list[float]
    errors: int
    cpu_seconds: float | None = None  # the server process's CPU time during the load, when known
    database_cpu_seconds: float | None = None  # PostgreSQL's processes, with --backend postgresql
    database_counters: Counters | None = None  # commits and WAL flushes during the load (PostgreSQL)

    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        rate = self.messages / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<10} messages={self.messages} errors={self.errors} secs={self.seconds:.2f} "
            f"msgs_per_sec={rate:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f}"
            + (
                f" server_cpu_ms_per_msg={1000 * self.cpu_seconds / self.messages:.2f}"
                if self.cpu_seconds is not None and self.messages
                else ""
            )
            + (
                f" postgres_cpu_ms_per_msg={1000 * self.database_cpu_seconds / self.messages:.2f}"
                if self.database_cpu_seconds is not None and self.messages
                else ""
            )
            + (
                f" commits_per_msg={self.database_counters.commits / self.messages:.3f}"
                f" wal_flushes_per_msg={self.database_counters.wal_syncs / self.messages:.3f}"
                if self.database_counters is not None and self.messages
                else ""
            )
        )


def make_message(size: int, sender: str, rcpt: str) -> bytes:
    head = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\nMessage-ID: <{{n}}@bench.test>\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head.encode() + body + b"\r\n"  # the final dot must follow a CRLF


DKIM_SELECTOR = "bench"


def setup_name(backend: str, workers: int, args: argparse.Namespace) -> str:
    """The name a run is reported under: `surat-w2`, `pg-w1` (backend named once several are run)."""
    prefix = "pg" if backend == "postgresql" else ("sqlite" if len(args.backend) > 1 else "surat")
    return f"{prefix}-w{workers}" if len(args.workers) > 1 or workers != 1 else prefix


def sign_message(message: bytes, domain: str) -> tuple[bytes, str]:
    """`message` with a DKIM-Signature for `domain`, and the key record (RFC 6376 §3.6.1) to publish."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = dkim.sign(
        message,
        DKIM_SELECTOR.encode(),
        domain.encode(),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + message, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


class LocalDNS:
    """A UDP DNS server on 127.0.0.1 (a thread) answering TXT queries from a dict; other names NXDOMAIN."""

    def __init__(self, txt: dict[str, str], ttl: int = 300) -> None:
        self.txt = {name.lower(): value for name, value in txt.items()}
        self.ttl = ttl
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, name="bench-dns", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rdtypes.ANY.TXT
        import dns.rrset

        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            self.queries += 1
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            if name not in self.txt:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                value = self.txt[name].encode()
                chunks = [value[i : i + 255] for i in range(0, len(value), 255)]  # RFC 1035 §3.3.14
                rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
                response.answer.append(dns.rrset.from_rdata(question.name, self.ttl, rdata))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def sender_records(domain: str, key_record: str) -> dict[str, str]:
    records = {domain: "v=spf1 ip4:127.0.0.1 -all", f"_dmarc.{domain}": "v=DMARC1; p=reject"}
    if key_record:
        records[f"{DKIM_SELECTOR}._domainkey.{domain}"] = key_record
    return records


class SMTPError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes) -> None:
    reply = await read_reply(reader)
    if not reply.startswith(code):
        raise SMTPError(reply.decode(errors="replace").strip())


async def session(
    host: str,
    port: int,
    count: int,
    message: bytes,
    sender: str,
    rcpt: str,
    per_message_connection: bool,
    latencies: list[float],
) -> int:
    errors = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    for _ in range(count):
        try:
            if writer is None or per_message_connection:
                reader, writer = await asyncio.open_connection(host, port)
                await expect(reader, b"220")
                writer.write(b"EHLO bench.example.test\r\n")
                await expect(reader, b"250")
            assert reader is not None
            start = time.perf_counter()
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await expect(reader, b"250")
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            await expect(reader, b"250")
            writer.write(b"DATA\r\n")
            await expect(reader, b"354")
            writer.write(message + b".\r\n")
            await expect(reader, b"250")
            latencies.append(time.perf_counter() - start)
            if per_message_connection:
                writer.write(b"QUIT\r\n")
                await expect(reader, b"221")
                writer.close()
                writer = None
        except (SMTPError, OSError) as exc:
            errors += 1
            if errors <= 3:
                print(f"  error: {exc}", file=sys.stderr)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.write(b"QUIT\r\n")
        writer.close()
    return errors


async def warm_up(host: str, port: int, args: argparse.Namespace, message: bytes) -> None:
    """Untimed messages first, so that no run pays for first use: caches filling, code paths warming."""
    if args.warmup:
        warm = argparse.Namespace(**{**vars(args), "messages": args.warmup})
        await run_load("warm-up", host, port, warm, message)


async def run_load(name: str, host: str, port: int, args: argparse.Namespace, message: bytes) -> Result:
    latencies: list[float] = []
    per_session = [args.messages // args.sessions] * args.sessions
    for i in range(args.messages % args.sessions):
        per_session[i] += 1
    start = time.perf_counter()
    tasks = [
        session(host, port, n, message, args.sender, args.rcpt, args.new_connections, latencies)
        for n in per_session
    ]
    errors = sum(await asyncio.wait_for(asyncio.gather(*tasks), args.timeout))
    seconds = time.perf_counter() - start
    return Result(name, len(latencies), seconds, latencies, errors)


class SuratProcess:
    """Surat in a subprocess with a fresh data dir and the MX listener on a free port."""

    def __init__(
        self,
        workdir: Path,
        domain: str,
        rcpt: str,
        *,
        mail_auth: bool = False,
        dns_port: int | None = None,
        workers: int = 1,
        dsn: str | None = None,
        sieve: str | None = None,
    ) -> None:
        """`dsn`: serve from that PostgreSQL database (empty: `surat store init` is run on it).
        `sieve`: a script stored and active for `rcpt`."""
        self.port = free_port()
        config = single_listener_setup(workdir, domain, "smtp", self.port)
        text = config.read_text()
        # The --dev config has mail_auth = false: issue 2 measures acceptance alone (issue 6 the checks).
        lines = text.splitlines()
        if dns_port is not None:
            lines = [
                f'nameservers = ["127.0.0.1:{dns_port}"]' if ln.startswith("nameservers ") else ln
                for ln in lines
            ]
        if mail_auth:
            lines = ["mail_auth = true" if ln.startswith("mail_auth ") else ln for ln in lines]
            if "mail_auth = true" not in lines:
                raise RuntimeError("quickstart config has no mail_auth line to switch on")
        if workers != 1:
            lines += ["[server]", f"workers = {workers}"]
        config.write_text("\n".join(lines) + "\n")
        if dsn is not None:
            use_postgresql(config, dsn, domain)
        self.server_log = workdir / "server.log"
        env = surat_env(config)
        add_user(config, rcpt, "bench-password")
        if sieve is not None:
            for command in (["sieve", "put", rcpt, "bench", "-"], ["sieve", "activate", rcpt, "bench"]):
                subprocess.run(
                    [*SURAT, *command], input=sieve, text=True, check=True, env=env, capture_output=True
                )
        self.log = self.server_log.open("w")
        self.proc = subprocess.Popen([*SURAT, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        if workers != 1:  # the port answers once the first worker is up: wait for all of them
            deadline = time.monotonic() + 60
            while self.server_log.read_text(errors="replace").count("worker.started") < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not start")
                time.sleep(0.1)
        # Let the server see the probe connection close: it counts toward the 20-per-IP limit.
        time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and its live children (workers) so far
        (Linux /proc; 0 elsewhere)."""
        pid = self.proc.pid
        try:
            children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            children = []
        return sum((_cpu_seconds(process) for process in [pid, *children]), 0.0)

    def log_count(self, check: str, result: str) -> int:
        """Transaction log lines whose `check` field starts with `result` (values with spaces are quoted)."""
        pattern = re.compile(rf'\b{check}="?{result}\b')
        return sum(
            1 for line in self.server_log.read_text(errors="replace").splitlines() if pattern.search(line)
        )

    def stop(self) -> None:
        stop_server(self.proc)
        self.log.close()


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    ticks = stat.rpartition(")")[2].split()
    return (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: proc(5)


def count_files(directory: Path) -> int:
    """How many messages a Maildir's new/ holds (0 before the first delivery creates it)."""
    return len(list(directory.iterdir())) if directory.is_dir() else 0


async def main_async(args: argparse.Namespace) -> None:
    domain = args.rcpt.rpartition("@")[2]
    print(
        f"load: {args.messages} messages x {args.size} B, {args.sessions} sessions, "
        f"{'one connection per message' if args.new_connections else 'connections reused'}"
    )
    results: list[Result] = []
    message = make_message(args.size, args.sender, args.rcpt)
    local_dns: LocalDNS | None = None
    if args.signed or args.checks:
        sender_domain = args.sender.rpartition("@")[2]
        key_record = ""
        if args.signed:
            message, key_record = sign_message(message, sender_domain)
        local_dns = LocalDNS(sender_records(sender_domain, key_record))
        print(
            (
                f"signed: DKIM rsa-sha256 d={sender_domain} s={DKIM_SELECTOR}, {len(message)} B; "
                if args.signed
                else ""
            )
            + f"SPF/DKIM/DMARC records for {sender_domain} served by DNS on 127.0.0.1:{local_dns.port}"
        )
    dns_port = local_dns.port if local_dns is not None else None
    sieve: str | None = None
    if args.sieve:
        sieve = TYPICAL if args.sieve == "typical" else Path(args.sieve).read_text()
        if args.checks:
            raise SystemExit("--sieve and --checks: one at a time")
    with tempfile.TemporaryDirectory(prefix="surat-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Postfix's unprivileged daemons must reach their queue below it
        if args.target:
            host, _, port = args.target.rpartition(":")
            await warm_up(host, int(port), args, message)
            results.append(await run_load("target", host, int(port), args, message))
        else:
            # --checks: off and on alternately, --rounds times; the best round of each counts, as the
            # one least disturbed by whatever else the machine was doing
            # --sieve likewise: without a script, then with it (the bool is "the second of a pair")
            runs = [("surat", False)]
            if args.checks:
                runs = [("surat", False), ("surat+checks", True)] * args.rounds
            elif sieve is not None:
                runs = [("surat", False), ("surat+sieve", True)] * args.rounds
            # (backend, workers) of each run; several when --backend or --workers name several
            setups = [(backend, count) for backend in args.backend for count in args.workers]
            if len(setups) > 1 or setups != [("sqlite", 1)]:
                if args.checks or sieve is not None:
                    raise SystemExit("--workers or --backend postgresql, and --checks/--sieve: one at a time")
                runs = [(setup_name(backend, count, args), False) for backend, count in setups]
            else:
                setups = setups * len(runs)
            cluster: BenchCluster | None = None
            if "postgresql" in args.backend:
                cluster = BenchCluster()
                cluster.start()
            best: dict[bool, Result] = {}
            round_costs: list[float] = []
            previous: Result | None = None
            by_count: list[Result] = []  # --workers/--backend: one result per setup
            try:
                for index, ((name, mail_auth), (backend, workers)) in enumerate(
                    zip(runs, setups, strict=True)
                ):
                    database, dsn = (
                        cluster.new_database() if cluster and backend == "postgresql" else ("", None)
                    )
                    surat = SuratProcess(
                        workdir / f"{name}-{index}",
                        domain,
                        args.rcpt,
                        mail_auth=mail_auth and args.checks,
                        dns_port=dns_port,
                        workers=workers,
                        dsn=dsn,
                        sieve=sieve if mail_auth else None,
                    )
                    counters_before: Counters | None = None
                    try:
                        await warm_up("127.0.0.1", surat.port, args, message)
                        if cluster is not None and dsn is not None:
                            # the warm-up's commits must be published before the first reading
                            await asyncio.sleep(STATS_IDLE_FLUSH_SECONDS)
                            counters_before = await cluster.counters(database)
                        database_cpu_before = cluster.cpu_seconds() if cluster is not None else 0.0
                        cpu_before = surat.cpu_seconds()
                        result = await run_load(name, "127.0.0.1", surat.port, args, message)
                        result.cpu_seconds = surat.cpu_seconds() - cpu_before
                        if cluster is not None and dsn is not None:
                            result.database_cpu_seconds = cluster.cpu_seconds() - database_cpu_before
                    finally:
                        surat.stop()
                    if cluster is not None and counters_before is not None:
                        # stopped: every connection closed and published its counts (plus the few
                        # transactions of a clean stop)
                        result.database_counters = (
                            await cluster.counters(database, settled=True) - counters_before
                        )
                    if (args.checks or sieve is not None) and len(runs) > 2:
                        print(f"round {index // 2 + 1}: {result.line()}", flush=True)
                    elif len(runs) > 1:
                        print(result.line(), flush=True)  # as it comes: the whole invocation takes minutes
                    if mail_auth and previous is not None and previous.rate():
                        round_costs.append(
                            1 - result.rate() / previous.rate()
                        )  # the run just before, unchecked
                    previous = result
                    by_count.append(result)
                    if mail_auth not in best or result.rate() > best[mail_auth].rate():
                        best[mail_auth] = result
                    if mail_auth and args.checks:
                        # the per-transaction log line carries the checks' results
                        print(
                            f"{name}: log lines with spf=pass {surat.log_count('spf', 'pass')}, "
                            f"dkim=pass {surat.log_count('dkim', 'pass')}, dmarc=pass {surat.log_count('dmarc', 'pass')}"
                            + (f"; DNS queries answered {local_dns.queries}" if local_dns is not None else "")
                        )
            finally:
                if cluster is not None:
                    cluster.stop()
            if args.checks or sieve is not None:
                results.extend(best[mode] for mode in (False, True) if mode in best)
            else:
                results.extend(by_count)  # one run, or one per --backend/--workers setup
            if len(round_costs) > 1:
                # each round's pair ran minutes apart at most, under the same conditions
                costs = ", ".join(f"{100 * cost:.0f}%" for cost in round_costs)
                print(
                    f"{'sieve' if sieve else 'checks'} cost per round: {costs}; median {100 * statistics.median(round_costs):.0f}%"
                )
        if args.peer == "postfix":
            missing = missing_program("postfix")
            if missing:
                print(missing)
            else:
                local = args.rcpt.partition("@")[0]
                postfix = Postfix(workdir / "postfix", free_port(), domain, users=(local,))
                delivered = postfix.maildir(local) / "new"
                try:
                    postfix.start()
                    await warm_up("127.0.0.1", postfix.port, args, message)
                    settled = time.monotonic() + 60
                    while count_files(delivered) < args.warmup and time.monotonic() < settled:
                        await asyncio.sleep(0.05)  # the warm-up's deliveries must not overlap the timed load
                    started = time.perf_counter()
                    result = await run_load("postfix", "127.0.0.1", postfix.port, args, message)
                    # Postfix says 250 once the message is in its queue (fsynced); delivery to the
                    # Maildir follows. Surat's 250 means "in the mailbox", so also report the time
                    # until Postfix has delivered everything.
                    deadline = time.monotonic() + args.timeout
                    while (
                        count_files(delivered) < args.warmup + result.messages and time.monotonic() < deadline
                    ):
                        await asyncio.sleep(0.05)
                    delivered_secs = time.perf_counter() - started
                    results.append(result)
                    in_maildir = count_files(delivered) - args.warmup
                    print(
                        f"postfix delivered to Maildir: {in_maildir} in {delivered_secs:.2f}s "
                        f"= {in_maildir / delivered_secs:.0f} msgs/s end to end"
                    )
                finally:
                    postfix.stop()
    if local_dns is not None:
        local_dns.close()
    for result in results:
        print(result.line())
    if (args.checks or sieve) and len(results) >= 2 and results[0].messages and results[1].messages:
        without = results[0].messages / results[0].seconds
        with_checks = results[1].messages / results[1].seconds
        cpu = [(r.cpu_seconds or 0.0) * 1000 / r.messages for r in results[:2]]
        print(
            f"{'sieve' if sieve else 'checks'}: {with_checks:.0f} msgs/s with, {without:.0f} without ="
            f" {with_checks / without:.2f} of the throughput (cost {100 * (1 - with_checks / without):.0f}%);"
            f" server CPU {cpu[1]:.2f} ms/msg with, {cpu[0]:.2f} without"
        )
        results = [results[0], *results[2:]]  # compare the peer with Surat as configured by default
    if args.peer and len(results) >= 2 and results[-1].rate():
        for result in results[:-1]:  # each Surat run against the peer, run last
            print(f"ratio {result.name}/{results[-1].name} = {result.rate() / results[-1].rate():.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--sender", default="bench@sender.test")
    parser.add_argument("--rcpt", default="test@example.test")
    parser.add_argument("--target", help="host:port of an already running server (skips starting Surat)")
    parser.add_argument("--peer", choices=["postfix"], help="also run the same load against this peer")
    parser.add_argument("--new-connections", action="store_true", help="one connection per message")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--warmup", type=int, default=500, help="untimed messages sent to each server before the timed load"
    )
    parser.add_argument(
        "--signed",
        action="store_true",
        help="DKIM-sign the message; serve the sender's records from a local DNS",
    )
    parser.add_argument(
        "--checks", action="store_true", help="run Surat with mail_auth off, then on (SPF/DKIM/ARC/DMARC)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --checks: alternate off/on this often, report the best of each",
    )
    parser.add_argument(
        "--sieve",
        metavar="FILE",
        help='a Sieve script for --rcpt ("typical": 20 rules); runs without, then with',
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        nargs="+",
        default=["sqlite"],
        help="Surat's store; postgresql: a private cluster started here, a new database per run; "
        "several run one after the other (e.g. --backend sqlite postgresql)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="[server] workers for Surat; several counts run one after the other (e.g. --workers 1 2)",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
