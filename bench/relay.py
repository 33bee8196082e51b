"""Outbound relay benchmark: N queued messages for D remote domains, MX via DNS, to Postfix's smtp-sink.

Both relays run in network namespace A (dnsmasq on 127.0.0.1:53 serves `MX dK.relay.test ->
mx.dK.relay.test`, every MX host an A record for namespace B); smtp-sink listens on B's port 25.
Each relay gets the same N messages of S bytes (one recipient each, spread over the D domains),
queued first and released at once, so the clock covers "queued -> delivered at the sink" only:

- Surat: the messages go into a fresh SQLiteStore through `Store.deliver` (what the MX/submission
  servers do after the final dot); the clock starts when `QueueRunner.start()` is called and stops
  when the queue table is empty (every entry is removed after the sink's 250).
- Postfix (a private instance, bench/peers.py, MX lookups by DNS): smtp-source submits the messages while every recipient gets
  HOLD (`check_recipient_access static:HOLD`); the clock starts at `postsuper -H ALL` +
  `postqueue -f` and stops when the maillog shows N `status=sent`.

    sudo .venv/bin/python bench/relay.py                     # Surat and Postfix, 10 000 x 4 KiB, 100 domains
    sudo .venv/bin/python bench/relay.py --only surat --messages 2000
    sudo .venv/bin/python bench/relay.py --signed queue --messages 2000   # a local sender: DKIM-signed

`--signed queue`: the sender's domain is local, so every message is DKIM-signed (RSA-2048 and
Ed25519) as submission does it, before it is queued; that step is timed apart ("sign+queue") and the
relay clock is the same as without signing. `--signed attempt`: queued unsigned, so the runner signs
each message at its first attempt, inside the relay clock (the path of entries queued before
schema 6). Either prints the CPU time per signed message (both signatures) and the event loop's
lag. `--sign-inline` signs on the event loop instead of in a thread. Postfix does not sign here.

Needs root (ip netns) and Debian's packages iproute2, dnsmasq-base and postfix (smtp-sink, smtp-source);
a missing program is named with its package. The peers are bench/peers.py's, started from this checkout.
Bounded: --messages messages, --timeout seconds per relay; everything is torn down at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peers import Daemon, Postfix, dnsmasq, in_netns, missing_program, netns_pair, smtp_sink

ROOT = Path(__file__).resolve().parent.parent
NS_A, NS_B, NET = "benchrlyA", "benchrlyB", "10.98.7"
SINK = f"{NET}.2"
SENDER = "bench@source.example"  # local only with --signed: then Surat DKIM-signs, Postfix does not
POSTFIX_PORT = 2599


def domain(k: int) -> str:
    return f"d{k}.relay.test"


def recipient(i: int, domains: int) -> str:
    return f"u{i}@{domain(i % domains)}"


def make_message(i: int, size: int, rcpt: str) -> bytes:
    head = (
        f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: relay bench {i}\r\n"
        f"Message-ID: <bench-{i}@source.example>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 70 + b"\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + body + b"\r\n"


def run(*cmd: str, ns: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        in_netns(ns, cmd), check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return done.stdout


# ---------------------------------------------------------------------------------------- Surat


class SigningMeter:
    """Wraps `dkim.sign` to add up its CPU time (`time.thread_time()` in whichever thread signs)."""

    def __init__(self) -> None:
        from surat.delivery import dkim

        self.calls = 0
        self.cpu = 0.0
        self.wall = 0.0
        self._sign = dkim.sign
        dkim.sign = self.sign  # looked up by name at every call: SigningKeys.sign uses this one

    def sign(self, *args: Any, **kwargs: Any) -> bytes:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return self._sign(*args, **kwargs)
        finally:
            self.cpu += time.thread_time() - cpu
            self.wall += time.perf_counter() - wall
            self.calls += 1


async def loop_lag(lags: list[float], interval: float = 0.001) -> None:
    """How late the event loop wakes a 1 ms sleep: what a stalled loop costs every connection."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        lags.append(loop.time() - before - interval)


def lag_figures(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags) or [0.0]
    return {
        "lag_p50_ms": ordered[len(ordered) // 2] * 1e3,
        "lag_p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
        "lag_max_ms": ordered[-1] * 1e3,
    }


async def surat_phase(
    messages: int, domains: int, size: int, timeout: float, work: Path, signed: str, sign_inline: bool
) -> dict[str, float]:
    """Runs inside namespace A (re-executed by `main` through `ip netns exec`)."""
    from surat.config import HostPort
    from surat.delivery.dkim import SigningKeys
    from surat.delivery.queue import QueueRunner, RunnerSettings
    from surat.dns.resolver import DnsResolver
    from surat.net.tls import client_context
    from surat.store.base import Delivery, OutboundMessage, OutboundRecipient
    from surat.store.sqlite import SQLiteStore

    logging.basicConfig(level=logging.WARNING)
    data = work / "surat-data"
    store = SQLiteStore(data)
    await store.open()
    meter = SigningMeter() if signed != "none" else None
    signing_keys = SigningKeys(store.keys, in_thread=not sign_inline)
    lags: list[float] = []
    lag_task = asyncio.create_task(loop_lag(lags))
    try:
        now = datetime.now(UTC)
        if signed != "none":
            await store.add_domain(domain_of(SENDER))
            await signing_keys.get(domain_of(SENDER), now)  # keys made and parsed before the clock

        async def queue_one(i: int) -> None:
            rcpt = recipient(i, domains)
            content = make_message(i, size, rcpt)
            # as the submission service does: signed before the message is queued (and the 250)
            signature = (
                await signing_keys.sign(content, domain_of(SENDER), now) if signed == "queue" else None
            )
            remote = OutboundMessage(
                sender=SENDER, recipients=(OutboundRecipient(rcpt),), dkim_signature=signature
            )
            await store.deliver(Delivery(None, len(content), now, remote=remote, content=content))

        queue_started = time.perf_counter()
        for start in range(0, messages, 500):
            await asyncio.gather(*(queue_one(i) for i in range(start, min(messages, start + 500))))
        queue_seconds = time.perf_counter() - queue_started
        queue_lags = lag_figures(lags)
        lags.clear()
        queued = count_queue(data)
        if queued != messages:
            raise SystemExit(f"surat: {queued} queued, expected {messages}")
        runner = QueueRunner(
            store,
            DnsResolver([HostPort("127.0.0.1", 53)]),
            RunnerSettings(
                hostname="surat-bench.source.example",
                mx_port=25,
                poll_interval=1.0,
                # the sink's address is private (NET exists only in the namespaces): without this the
                # runner refuses it (issue 11 item 11) and every message bounces at once
                allow_private_destinations=True,
            ),
            data_dir=data,
            tls_context=client_context(verify=False),
            signing_keys=signing_keys,
        )
        started = time.perf_counter()
        await runner.start()
        left = messages
        try:
            while left and time.perf_counter() - started < timeout:
                await asyncio.sleep(0.05)
                left = count_queue(data)
            seconds = time.perf_counter() - started
        finally:
            await runner.stop()
        result = {
            "messages": messages - left,
            "seconds": seconds,
            "left": left,
            "queue_seconds": queue_seconds,
        }
        result.update({f"queue_{name}": value for name, value in queue_lags.items()})
        result.update({f"relay_{name}": value for name, value in lag_figures(lags).items()})
        if meter is not None:
            result.update(
                signatures=meter.calls,
                sign_cpu_us=meter.cpu / max(meter.calls, 1) * 1e6,
                sign_wall_us=meter.wall / max(meter.calls, 1) * 1e6,
            )
        return result
    finally:
        lag_task.cancel()
        await store.close()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def count_queue(data: Path) -> int:
    conn = sqlite3.connect(f"file:{data / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        (n,) = conn.execute("SELECT count(*) FROM queue").fetchone()
        return int(n)
    finally:
        conn.close()


def run_surat(args: argparse.Namespace, work: Path) -> dict[str, float]:
    out = run(
        sys.executable,
        __file__,
        "--phase-surat",
        "--messages",
        str(args.messages),
        "--domains",
        str(args.domains),
        "--size",
        str(args.size),
        "--timeout",
        str(args.timeout),
        "--work",
        str(work),
        "--signed",
        args.signed,
        *(["--sign-inline"] if args.sign_inline else []),
        ns=NS_A,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------- Postfix


def run_postfix(args: argparse.Namespace, work: Path) -> dict[str, float]:
    postfix = Postfix(work / "postfix", POSTFIX_PORT, domain_of(SENDER), dns=True, netns=NS_A)
    try:
        postfix.start()
        # Park every message on hold while it is submitted: the clock then covers only the relay.
        postfix.postconf(
            "smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, reject"
        )
        time.sleep(1)
        per_domain = args.messages // args.domains
        procs = []
        for k in range(args.domains):
            count = per_domain + (1 if k < args.messages % args.domains else 0)
            source = ["/usr/sbin/smtp-source", "-s", "2", "-m", str(count), "-l", str(args.size)]
            procs.append(
                subprocess.Popen(
                    in_netns(
                        NS_A, [*source, "-f", SENDER, "-t", f"u@{domain(k)}", f"127.0.0.1:{POSTFIX_PORT}"]
                    ),
                    stdout=subprocess.DEVNULL,
                )
            )
            if len(procs) >= 10:
                for p in procs:
                    p.wait()
                procs = []
        for p in procs:
            p.wait()
        hold = postfix.root / "spool" / "hold"
        deadline = time.monotonic() + args.timeout
        while sum(len(f) for _, _, f in os.walk(hold)) < args.messages:
            if time.monotonic() > deadline:
                raise SystemExit("postfix: messages did not all reach the hold queue")
            time.sleep(0.2)
        started = time.perf_counter()
        postfix.command("postsuper", "-H", "ALL")
        postfix.command("postqueue", "-f")
        sent = 0
        with postfix.maillog.open("rb") as f:
            f.seek(0, os.SEEK_END)  # only what the release produces
            pattern = re.compile(rb"status=sent")
            partial = b""
            while sent < args.messages and time.perf_counter() - started < args.timeout:
                time.sleep(0.05)
                text = partial + f.read()
                complete, _, partial = text.rpartition(b"\n")  # a line may be half written
                sent += len(pattern.findall(complete))
        seconds = time.perf_counter() - started
        return {"messages": sent, "seconds": seconds, "left": args.messages - sent}
    finally:
        postfix.stop()


# ---------------------------------------------------------------------------------------- harness


def line(name: str, result: dict[str, float]) -> str:
    rate = result["messages"] / result["seconds"] if result["seconds"] else 0.0
    text = (
        f"{name:<8} delivered={int(result['messages'])} left={int(result['left'])} "
        f"secs={result['seconds']:.2f} msgs_per_sec={rate:.0f}"
    )
    extra = {k: v for k, v in result.items() if k not in ("messages", "left", "seconds")}
    return text + "".join(f" {k}={v:.3f}" if isinstance(v, float) else f" {k}={v}" for k, v in extra.items())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--only", choices=("surat", "postfix"))
    parser.add_argument(
        "--signed",
        choices=("none", "queue", "attempt"),
        default="none",
        help="Surat's sender is local: DKIM-sign when queueing (as submission does) or at the first attempt",
    )
    parser.add_argument("--sign-inline", action="store_true", help="sign on the event loop, not in a thread")
    parser.add_argument("--phase-surat", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_surat:
        result = asyncio.run(
            surat_phase(
                args.messages, args.domains, args.size, args.timeout, args.work, args.signed, args.sign_inline
            )
        )
        print(json.dumps(result))
        return 0
    # A SIGTERM (timeout(1)) must still run the teardown below.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2
    missing = missing_program("ip", "ss", "dnsmasq", "smtp-sink", "smtp-source", "postfix")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="surat-bench-relay-"))
    os.chmod(work, 0o755)
    mx_hosts = {domain(k): f"mx.{domain(k)}" for k in range(args.domains)}
    try:
        with netns_pair(NS_A, NS_B, NET):
            peers: list[Daemon] = []
            try:
                peers.append(dnsmasq(work, mx_hosts, dict.fromkeys(mx_hosts.values(), SINK), NS_A))
                peers.append(smtp_sink(work, SINK, 25, NS_B))
                return compare(args, work)
            finally:
                # every peer out of the namespaces before they go
                for peer in reversed(peers):
                    peer.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(args: argparse.Namespace, work: Path) -> int:
    print(
        f"relay: {args.messages} messages x {args.size} B, {args.domains} domains, MX via dnsmasq, "
        f"sink = smtp-sink {SINK}:25, Surat DKIM signing: {args.signed}"
        + (" (inline)" if args.sign_inline else "")
    )
    results = {}
    for name, fn in (("surat", run_surat), ("postfix", run_postfix)):
        if args.only in (None, name):
            results[name] = fn(args, work)
            print(line(name, results[name]), flush=True)
    if len(results) == 2:
        s, p = results["surat"], results["postfix"]
        ratio = (s["messages"] / s["seconds"]) / (p["messages"] / p["seconds"])
        print(f"surat/postfix = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
