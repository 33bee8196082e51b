"""SMTP acceptance benchmark: N concurrent sessions send M messages of S bytes to an MX port.

Prints messages/s and p50/p99 acceptance latency (MAIL FROM sent -> 250 after the final dot).

    .venv/bin/python bench/smtp_accept.py                      # starts Surat in a subprocess on a temp dir
    .venv/bin/python bench/smtp_accept.py --peer postfix       # also Postfix (../shared/peers), same load, same run
    .venv/bin/python bench/smtp_accept.py --target 127.0.0.1:2525 --rcpt test@example.test

Bounded: at most --messages messages and --timeout seconds per target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT.parent / "shared" / "peers"


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    latencies: list[float]
    errors: int

    def line(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        rate = self.messages / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<10} messages={self.messages} errors={self.errors} secs={self.seconds:.2f} "
            f"msgs_per_sec={rate:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f}"
        )


def make_message(size: int, sender: str, rcpt: str) -> bytes:
    head = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\nMessage-ID: <{{n}}@bench.test>\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head.encode() + body + b"\r\n"  # the final dot must follow a CRLF


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


async def run_load(name: str, host: str, port: int, args: argparse.Namespace) -> Result:
    message = make_message(args.size, args.sender, args.rcpt)
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
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class SuratProcess:
    """Surat in a subprocess with a fresh data dir and the MX listener on a free port."""

    def __init__(self, workdir: Path, domain: str, rcpt: str) -> None:
        self.port = free_port()
        surat = [sys.executable, "-m", "surat"]
        subprocess.run(
            [*surat, "quickstart", "--dev", "--domain", domain, "--dir", str(workdir)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        config = workdir / "surat.toml"
        text = config.read_text()
        text = text.replace('"127.0.0.1:2525"', f'"127.0.0.1:{self.port}"')
        # Only the MX listener: the other dev ports may be taken by a developer's `make run`.
        for role in ("submission", "submissions", "imap", "imaps", "pop3", "pop3s"):
            text = "\n".join(
                f"{role} = []" if line.strip().startswith(f"{role} ") else line for line in text.splitlines()
            )
        # The --dev config has mail_auth = false: issue 2 measures acceptance alone (issue 6 the checks).
        config.write_text(text + "\n")
        env = {**os.environ, "SURAT_CONFIG": str(config)}
        user = subprocess.run(
            [*surat, "user", "add", rcpt, "--password-stdin"],
            input="bench-password\n",
            check=False,
            text=True,
            env=env,
            capture_output=True,
        )
        if user.returncode != 0 and "exists" not in user.stderr:
            raise RuntimeError(user.stderr)
        self.log = (workdir / "server.log").open("w")
        self.proc = subprocess.Popen([*surat, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        # Let the server see the probe connection close: it counts toward the 20-per-IP limit.
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class PostfixProcess:
    def __init__(self, workdir: Path, domain: str, local: str) -> None:
        self.port = free_port()
        self.root = workdir / "postfix"
        script = PEERS / "postfix-up.sh"
        env = {**os.environ, "USERS": local}
        subprocess.run(
            ["bash", str(script), "start", str(self.port), str(self.root), domain],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port)
        self.maildir = self.root / "mail" / local / "Maildir" / "new"

    def delivered(self) -> int:
        return len(list(self.maildir.iterdir())) if self.maildir.is_dir() else 0

    def stop(self) -> None:
        subprocess.run(["bash", str(PEERS / "postfix-up.sh"), "stop", str(self.root)], check=False)


async def main_async(args: argparse.Namespace) -> None:
    domain = args.rcpt.rpartition("@")[2]
    print(
        f"load: {args.messages} messages x {args.size} B, {args.sessions} sessions, "
        f"{'one connection per message' if args.new_connections else 'connections reused'}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="surat-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Postfix's unprivileged daemons must reach their queue below it
        if args.target:
            host, _, port = args.target.rpartition(":")
            results.append(await run_load("target", host, int(port), args))
        else:
            surat = SuratProcess(workdir / "surat", domain, args.rcpt)
            try:
                results.append(await run_load("surat", "127.0.0.1", surat.port, args))
            finally:
                surat.stop()
        if args.peer == "postfix":
            if not shutil.which("postconf"):
                print("postfix: not installed (run ../shared/peers/install.sh)")
            else:
                postfix = PostfixProcess(workdir, domain, args.rcpt.partition("@")[0])
                try:
                    started = time.perf_counter()
                    result = await run_load("postfix", "127.0.0.1", postfix.port, args)
                    # Postfix says 250 once the message is in its queue (fsynced); delivery to the
                    # Maildir follows. Surat's 250 means "in the mailbox", so also report the time
                    # until Postfix has delivered everything.
                    deadline = time.monotonic() + args.timeout
                    while postfix.delivered() < result.messages and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    delivered_secs = time.perf_counter() - started
                    results.append(result)
                    print(
                        f"postfix delivered to Maildir: {postfix.delivered()} in {delivered_secs:.2f}s "
                        f"= {postfix.delivered() / delivered_secs:.0f} msgs/s end to end"
                    )
                finally:
                    postfix.stop()
    for result in results:
        print(result.line())
    if len(results) == 2 and results[1].seconds and results[0].seconds:
        ratio = (results[0].messages / results[0].seconds) / (results[1].messages / results[1].seconds)
        print(f"ratio {results[0].name}/{results[1].name} = {ratio:.2f}x")


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
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
