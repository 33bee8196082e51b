"""IMAP load benchmark: N sessions doing what mail clients do, each on its own view of the INBOX
(default), or all on ONE shared mailbox checking every response (--shared).

Default mode: N sessions on one 10 000-message INBOX. Each client connects, upgrades with STARTTLS,
logs in, SELECTs INBOX and then, until the time is up, repeats this cycle (message numbers drawn at
random):

    header  FETCH of the latest 50: (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])
    body    FETCH BODY[] of 3 messages (sets \\Seen, as a client opening mail does)
    store   STORE +FLAGS or -FLAGS (\\Flagged) on one message (the other sessions hear of it)
    search  SEARCH UNSEEN
    idle    IDLE, then DONE as soon as the server's continuation arrives

It prints operations/s and p50/p99 latency per operation kind and overall, with the CPU the server and
the client used; the time of `FETCH 1:* ENVELOPE` over the whole mailbox (the first one, then the best
of two more, no other load); the SELECT time; and the memory per idle authenticated connection
(server RSS before and after opening --idle connections, divided by their number, after a first
batch has warmed up the password-hashing threads; for Dovecot the PSS summed over all its processes,
as each connection gets its own imap process).

    .venv/bin/python bench/imap_load.py                      # Surat in a subprocess on a temp dir
    .venv/bin/python bench/imap_load.py --peer dovecot       # and a private Dovecot (peers.py), same run

Shared mode (--shared): --clients sessions (default 10) on ONE --messages INBOX (default 1 000) for
--duration seconds (default 20), logged in for the whole run, one command in flight each (no
pipelining, so "the command in progress" is never ambiguous), drawn at random with these weights
(imap_shared.SHARED_MIX; sequence numbers from 1..the count the session knows, UIDs from those it has
learnt, ranges of up to 20):

    append     APPEND INBOX (\\Seen) {n} of a 500-byte message (synchronizing literal)
    fetch      FETCH n (FLAGS UID) | FETCH a:b (UID FLAGS RFC822.SIZE) | FETCH n (UID RFC822.SIZE BODY.PEEK[HEADER])
    store      STORE n or a:b +FLAGS/-FLAGS (\\Flagged)
    delete     STORE n +FLAGS.SILENT (\\Deleted)
    expunge    EXPUNGE
    uid_fetch  UID FETCH u (FLAGS RFC822.SIZE) | UID FETCH u:u+20 (FLAGS)
    uid_store  UID STORE u +FLAGS/-FLAGS (\\Seen)
    search     SEARCH FLAGGED | UNSEEN | DELETED
    list       LIST "" "*"
    status     STATUS Archive (MESSAGES UIDNEXT UNSEEN)   (a second mailbox, created before the run)
    select     SELECT INBOX again
    noop       NOOP
    idle       IDLE for 50-200 ms, then DONE (its latency includes that wait)

Each session keeps a model of its view (sequence number -> UID, as the server told it; UIDs learnt from
FETCH responses that carry one) and checks every response against it (imap_view.py). The counters:

    exists_shrank               * N EXISTS below the known count with no EXPUNGE/VANISHED to explain it
                                (RFC 9051 §7.4.1, §2.3.1.2: numbers change only by expunges announced)
    bad_expunge                 * N EXPUNGE for a number outside 1..count (RFC 9051 §7.5.1)
    expunge_during_seq_command  * N EXPUNGE during FETCH, STORE or SEARCH by sequence number (RFC 9051
                                §7.5.1, §5.5: only their UID forms may carry one)
    bad_on_known_seq            BAD to FETCH/STORE whose numbers the session knows (a message expunged
                                by another session may get NO: counted as info no_on_fetch_store)
    fetch_out_of_range          * N FETCH beyond the known count (RFC 9051 §7.5.2; EXISTS comes first)
    search_out_of_range         a SEARCH result beyond the known count (same rule)
    uid_mismatch                a FETCH gives a number another UID than learnt, or one out of ascending
                                order with its neighbours (RFC 9051 §2.3.1.1)
    after_logout                after LOGOUT anything but * BYE then the tagged OK (RFC 9051 §6.1.3 asks
                                for the BYE; pending EXPUNGE/FETCH updates there are allowed by §7.5.1
                                but useless to a leaving client, so this counter asks for none)
    disconnects                 the connection closed or broke mid-command (the session reconnects)
    timeouts                    no tagged reply within 10 s (the session reconnects)
    other                       any other BAD, an unexpected NO, * BAD, a continuation request to a
                                command that sends no data, a response that does not parse

It prints commands/s (total and per kind), p50/p99 latency per kind, each counter, the info counts
(no_on_fetch_store, expunges, vanished, connects), server and client CPU, the first 3 examples of each
violation (the command, the offending response, the message count the session knew) and, with
--peer dovecot, the same for Dovecot and the two side by side. Dovecot must show no violations: one
there means the checker is wrong.

    .venv/bin/python bench/imap_load.py --shared --peer dovecot --duration 20

Both servers get the same messages (bench/mailgen.py, a deterministic mix of plain, alternative and
attachment messages, cached in /tmp/surat-bench-cache), the same STARTTLS with Surat's dev
certificate and the same argon2id password hash (Dovecot's static passdb is given the hash Surat
stores); in the default mode 100 unseen messages (the others get \\Seen before the run). Dovecot
(bench/peers.py: its own config in the temp dir, never the system instance; needs root and the
packages dovecot-imapd dovecot-pop3d) runs in its high-performance login mode (login processes
serve many connections).

The load client is one asyncio process with a minimal IMAP reader; its CPU use is printed so that one
can see whether it, rather than the server, was the limit (2 cores shared by client and server).
Bounded: --duration seconds of load, --timeout seconds for any single phase; in shared mode each
command has 10 s and each session sends one command at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ListenerSurat, LoadFigures, cpu_seconds, free_port, rss_kib
from imap_client import PER_SOURCE, Client, IMAPError, session, source_address
from imap_shared import SHARED_MIX, SharedLoad, compare_shared, prepare_shared, report_shared, run_shared
from mailgen import cached_messages
from peers import Dovecot, dovecot_missing
from pg_common import BenchCluster

from surat.passwords import make_credentials

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "example.test"
USER = f"bench@{DOMAIN}"
PASSWORD = "bench-password"
UNSEEN = 100
MESSAGES = 10_000
SHARED_MESSAGES = 1_000
KINDS = ("header", "body", "store", "search", "idle")
HEADER_ITEMS = b"(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"


# ------------------------------------------------------------------------------------------ phases


@dataclass
class Load(LoadFigures):
    errors: int = 0
    select_ms: list[float] = field(default_factory=list)
    octets: int = 0


@dataclass
class Result:
    name: str
    load: Load
    first_select_ms: float = 0.0
    envelope_ms: float = 0.0  # the first FETCH 1:* ENVELOPE
    envelope_again_ms: float = 0.0  # the best of the next two
    envelope_octets: int = 0
    idle_conns: int = 0
    idle_kib_per_conn: float = 0.0
    idle_note: str = ""


async def run_client(
    n: int, port: int, user: str, password: str, tls: ssl.SSLContext, load: Load, stop_at: float, seed: int
) -> None:
    rng = random.Random(seed)
    client = await session(port, user, password, tls, source_address(n))
    try:
        t0 = time.perf_counter()
        await client.command(b"SELECT INBOX")
        load.select_ms.append((time.perf_counter() - t0) * 1000)
        lat = load.latencies
        perf = time.perf_counter
        while perf() < stop_at:
            total = client.exists
            for kind in KINDS:
                t0 = perf()
                if kind == "header":
                    octets = await client.command(
                        b"FETCH %d:%d %s" % (max(1, total - 49), total, HEADER_ITEMS)
                    )
                    load.octets += octets
                elif kind == "body":
                    picks = sorted({rng.randint(1, total) for _ in range(3)})
                    octets = await client.command(b"FETCH %s BODY[]" % b",".join(b"%d" % p for p in picks))
                    load.octets += octets
                elif kind == "store":
                    sign = b"+" if rng.random() < 0.5 else b"-"
                    await client.command(b"STORE %d %sFLAGS (\\Flagged)" % (rng.randint(1, total), sign))
                elif kind == "search":
                    await client.command(b"SEARCH UNSEEN")
                else:
                    await client.idle()
                lat[kind].append(perf() - t0)
    except (IMAPError, OSError, asyncio.IncompleteReadError) as exc:
        load.errors += 1
        print(f"  client {n}: {exc}", file=sys.stderr)
    finally:
        await client.close()


async def run_load(
    ports: list[int], user: str, password: str, tls: ssl.SSLContext, clients: int, duration: float
) -> Load:
    """`clients` sessions, spread evenly over the nodes' `ports`."""
    load = Load({kind: [] for kind in KINDS})
    cpu0 = time.process_time()
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(
        *(
            run_client(n, ports[n % len(ports)], user, password, tls, load, stop_at, seed=n)
            for n in range(clients)
        )
    )
    load.seconds = time.perf_counter() - start
    load.client_cpu = time.process_time() - cpu0
    return load


async def prepare(port: int, user: str, password: str, tls: ssl.SSLContext) -> tuple[float, int]:
    """SELECT once (Dovecot builds its index here) and mark all but the last UNSEEN messages \\Seen."""
    client = await session(port, user, password, tls, source_address(0))
    try:
        t0 = time.perf_counter()
        await client.command(b"SELECT INBOX")
        first = (time.perf_counter() - t0) * 1000
        total = client.exists
        if total > UNSEEN:
            await client.command(b"STORE 1:%d +FLAGS.SILENT (\\Seen)" % (total - UNSEEN))
    finally:
        await client.close()
    return first, total


async def time_envelopes(
    port: int, user: str, password: str, tls: ssl.SSLContext
) -> tuple[float, float, int]:
    """The first FETCH 1:* ENVELOPE (what a new client's first sync costs) and the best of two more
    (with whatever the server cached from the first: Dovecot keeps envelopes in its index cache)."""
    client = await session(port, user, password, tls, source_address(0))
    times = []
    octets = 0
    try:
        await client.command(b"SELECT INBOX")
        for _ in range(3):
            t0 = time.perf_counter()
            octets = await client.command(b"FETCH 1:* ENVELOPE")
            times.append(time.perf_counter() - t0)
    finally:
        await client.close()
    return times[0] * 1000, min(times[1:]) * 1000, octets


async def open_idle(
    port: int, user: str, password: str, tls: ssl.SSLContext, count: int, first_source: int
) -> list[Client]:
    """`count` authenticated sessions, PER_SOURCE at a time from each source address."""
    clients: list[Client] = []
    for start in range(0, count, PER_SOURCE):
        batch = range(start, min(count, start + PER_SOURCE))
        base = (first_source + 1) * PER_SOURCE * 64  # clear of the load sessions' addresses
        clients += await asyncio.gather(
            *(session(port, user, password, tls, source_address(base + n)) for n in batch)
        )
    return clients


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


# ------------------------------------------------------------------------------------------ servers


class SuratProcess(ListenerSurat):
    """Surat in a subprocess with a fresh data dir and only the imap listener, on a free port; with a
    `cluster`, `nodes` processes on a new database of it (issue 12), each on its own port."""

    def __init__(self, workdir: Path, name: str, cluster: BenchCluster | None = None, nodes: int = 1) -> None:
        dsn = cluster.new_database()[1] if cluster is not None else None
        super().__init__(workdir, DOMAIN, "imap", USER, PASSWORD, dsn=dsn, nodes=nodes)
        self.name = name
        self.password = PASSWORD
        self.cluster = cluster

    def memory_kib(self) -> int:
        assert self.procs
        return sum(rss_kib(proc.pid) for proc in self.procs)

    def cpu(self) -> float:
        """Every node's CPU time (PostgreSQL's apart: database_cpu)."""
        assert self.procs
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def database_cpu(self) -> float | None:
        """The CPU time of PostgreSQL's processes so far; None on SQLite."""
        return self.cluster.cpu_seconds() if self.cluster is not None else None


class DovecotProcess(Dovecot):
    """The private Dovecot of peers.py with only IMAP, in its high-performance login mode (login processes
    serve many connections), given the argon2id hash Surat stores for the same password."""

    def __init__(self, workdir: Path, cert: Path, key: Path, password_hash: str) -> None:
        self.port = free_port()
        super().__init__(
            workdir / "dovecot",
            cert,
            key,
            "{ARGON2ID}" + password_hash,
            imap_port=self.port,
            high_performance=True,
        )
        self.user = "bench"
        self.password = PASSWORD
        self.ports = [self.port]


def database_cpu(server: SuratProcess | DovecotProcess) -> float | None:
    return server.database_cpu() if isinstance(server, SuratProcess) else None


def cpu_since(now: float | None, before: float | None) -> float | None:
    return now - before if now is not None and before is not None else None


# ------------------------------------------------------------------------------------------ main


async def measure(
    server: SuratProcess | DovecotProcess, tls: ssl.SSLContext, args: argparse.Namespace
) -> Result:
    user, password, port = server.user, server.password, server.port
    first, total = await asyncio.wait_for(prepare(port, user, password, tls), args.timeout)
    if total != args.messages:
        print(f"  {server.name}: INBOX holds {total} messages, not {args.messages}", file=sys.stderr)
    envelope_ms, envelope_again_ms, envelope_octets = await asyncio.wait_for(
        time_envelopes(port, user, password, tls), args.timeout
    )
    profiler = start_profiler(server, args)
    cpu0, database_cpu0 = server.cpu(), database_cpu(server)
    load = await asyncio.wait_for(
        run_load(server.ports, user, password, tls, args.clients, args.duration),
        args.duration + args.timeout,
    )
    load.server_cpu = server.cpu() - cpu0
    load.database_cpu = cpu_since(database_cpu(server), database_cpu0)
    if profiler is not None:
        profiler.wait(30)
    result = Result(server.name, load, first, envelope_ms, envelope_again_ms, envelope_octets)
    if args.idle:
        # A first batch of logins warms up what does not grow with connections (password-hashing
        # threads and their allocator arenas, Dovecot's login processes); then the measured ones.
        warm = await asyncio.wait_for(open_idle(port, user, password, tls, PER_SOURCE, 0), args.timeout)
        await asyncio.sleep(1)
        before = server.memory_kib()
        clients = await asyncio.wait_for(open_idle(port, user, password, tls, args.idle, 1), args.timeout)
        await asyncio.sleep(1)
        after = server.memory_kib()
        await close_all(clients + warm)
        result.idle_conns = len(clients)
        result.idle_kib_per_conn = (after - before) / len(clients)
        kind = "RSS" if isinstance(server, SuratProcess) else "PSS of all processes"
        result.idle_note = f"{kind} {before / 1024:.1f} -> {after / 1024:.1f} MiB"
    return result


def report(result: Result, duration: float) -> None:
    load = result.load
    print(
        f"{result.name}: {load.ops} ops in {load.seconds:.1f} s = {load.rate:.0f} ops/s, errors={load.errors}, "
        f"server CPU {load.server_cpu / load.seconds * 100:.0f}% and client CPU "
        f"{load.client_cpu / load.seconds * 100:.0f}% of a core, "
        f"{load.octets / load.seconds / 1e6:.1f} MB/s of FETCH responses"
        + (
            f", PostgreSQL CPU {load.database_cpu / load.seconds * 100:.0f}%"
            if load.database_cpu is not None
            else ""
        )
    )
    for line in load.latency_lines():
        print(line)
    selects = load.select_ms
    print(
        f"  SELECT of the mailbox: first {result.first_select_ms:.0f} ms, "
        f"then median {statistics.median(selects) if selects else 0:.0f} ms over {len(selects)} sessions"
    )
    print(
        f"  FETCH 1:* ENVELOPE: first {result.envelope_ms:.0f} ms, again {result.envelope_again_ms:.0f} ms "
        f"({result.envelope_octets / 1e6:.1f} MB)"
    )
    if result.idle_conns:
        print(
            f"  idle connections: {result.idle_conns}, {result.idle_kib_per_conn:.0f} KiB each ({result.idle_note})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20, help="seconds of load")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="all sessions on one mailbox with a random command mix, each checking the responses",
    )
    parser.add_argument("--messages", type=int, help="in the INBOX (default: 10000, with --shared 1000)")
    parser.add_argument(
        "--idle", type=int, default=200, help="idle connections for the memory figure (0: skip)"
    )
    parser.add_argument("--peer", choices=["dovecot"], help="also run the same load against this peer")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for any phase but the load")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        nargs="+",
        default=["sqlite"],
        help="Surat's store; several run one after the other on the same load (--backend sqlite postgresql)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="with --backend postgresql: surat serve processes on the one database, clients split evenly",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy Surat (its first node) during the load (collapsed stacks; FILE.NAME per run if several)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/probe/bin/py-spy")
    args = parser.parse_args()
    if args.messages is None:
        args.messages = SHARED_MESSAGES if args.shared else MESSAGES
    if not 1 <= args.clients <= 200 or not 1 <= args.duration <= 600:
        parser.error("--clients must be 1..200 and --duration 1..600")
    if not 100 < args.messages <= 100_000 or not 0 <= args.idle <= 1000:
        parser.error("--messages must be 101..100000 and --idle 0..1000")
    if not 1 <= args.nodes <= 4 or (args.nodes > 1 and "postgresql" not in args.backend):
        parser.error("--nodes must be 1..4, and more than 1 only with --backend postgresql")
    # Enough descriptors for the idle connections and the load sessions.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    if args.shared:
        print(
            f"load: {args.clients} sessions x {args.duration:.0f} s on ONE {args.messages}-message INBOX over "
            f"STARTTLS, each checking every response; mix: "
            + ", ".join(f"{kind} {weight}" for kind, weight in SHARED_MIX.items())
        )
    else:
        print(
            f"load: {args.clients} sessions x {args.duration:.0f} s on a {args.messages}-message INBOX over "
            f"STARTTLS; cycle: {', '.join(KINDS)}"
        )
    results: list[Result] = []
    shared: list[SharedLoad] = []
    cluster: BenchCluster | None = None
    if "postgresql" in args.backend:
        cluster = BenchCluster()
        cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="surat-bench-imap-") as tmp:
            workdir = Path(tmp)
            # Dovecot's unprivileged processes must reach their Maildir under this directory.
            workdir.chmod(0o755)
            servers: list[SuratProcess | DovecotProcess] = []
            for backend in args.backend:
                if backend == "postgresql":
                    name = f"pg-{args.nodes}node" + ("s" if args.nodes > 1 else "")
                    surat = SuratProcess(workdir / name, name, cluster, args.nodes)
                else:
                    name = "sqlite" if len(args.backend) > 1 else "surat"
                    surat = SuratProcess(workdir / name, name)
                t0 = time.perf_counter()
                surat.fill_inbox(cached_messages(args.messages))
                print(f"{name}: filled in {time.perf_counter() - t0:.1f} s", flush=True)
                servers.append(surat)
            first = servers[0]
            assert isinstance(first, SuratProcess)
            if args.peer == "dovecot":
                if missing := dovecot_missing():
                    print(missing)
                else:
                    cert, key = first.config.tls.cert, first.config.tls.key
                    assert cert is not None and key is not None
                    password_hash = make_credentials(PASSWORD).password_hash
                    dovecot = DovecotProcess(workdir, cert, key, password_hash)
                    dovecot.fill(dovecot.user, cached_messages(args.messages))
                    servers.append(dovecot)
            for server in servers:
                # Dovecot has the first Surat's certificate
                tls = server.tls() if isinstance(server, SuratProcess) else first.tls()
                server.start()
                try:
                    if args.shared:
                        load = asyncio.run(measure_shared(server, tls, args))
                        report_shared(load)
                        shared.append(load)
                    else:
                        result = asyncio.run(measure(server, tls, args))
                        report(result, args.duration)
                        results.append(result)
                finally:
                    server.stop()
    finally:
        if cluster is not None:
            cluster.stop()
    compare_all(shared, results, surat_runs=len(args.backend))


def compare_all(shared: list[SharedLoad], results: list[Result], surat_runs: int) -> None:
    """Each Surat run against the peer (run last), and each later Surat run against the first."""
    pairs = [(i, surat_runs) for i in range(surat_runs)] + [(i, 0) for i in range(1, surat_runs)]
    for mine, peer in pairs:
        if peer < len(shared):
            compare_shared(shared[mine], shared[peer])
        if peer < len(results):
            a, b = results[mine], results[peer]
            print(
                f"ratio {a.name}/{b.name}: ops/s {a.load.rate / b.load.rate:.2f}x, "
                f"FETCH ENVELOPE time first {a.envelope_ms / b.envelope_ms:.2f}x, "
                f"again {a.envelope_again_ms / b.envelope_again_ms:.2f}x"
            )


def start_profiler(
    server: SuratProcess | DovecotProcess, args: argparse.Namespace
) -> subprocess.Popen[bytes] | None:
    """py-spy on Surat for the load phase (--profile), or None."""
    if not (args.profile and isinstance(server, SuratProcess)):
        return None
    assert server.proc is not None  # the first node
    output = args.profile if len(args.backend) == 1 else f"{args.profile}.{server.name}"
    command = [args.py_spy, "record", "--pid", str(server.proc.pid), "--duration", str(int(args.duration))]
    command += ["--format", "raw", "--output", output, "--rate", "200", "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure_shared(
    server: SuratProcess | DovecotProcess, tls: ssl.SSLContext, args: argparse.Namespace
) -> SharedLoad:
    total = await asyncio.wait_for(prepare_shared(server, tls), args.timeout)
    if total != args.messages:
        print(f"  {server.name}: INBOX holds {total} messages, not {args.messages}", file=sys.stderr)
    profiler = start_profiler(server, args)
    database_cpu0 = database_cpu(server)
    load = await asyncio.wait_for(
        run_shared(server, tls, args.clients, args.duration), args.duration + args.timeout
    )
    load.database_cpu = cpu_since(database_cpu(server), database_cpu0)
    if profiler is not None:
        profiler.wait(30)
    return load


if __name__ == "__main__":
    main()
