"""POP3 download benchmark: one session logs in, RETRs and DELEs every message, then QUITs.

Prints messages/s and MB/s (wire octets of the RETR responses) from connect to the QUIT reply,
which includes the login (where the server takes its snapshot of the maildrop).

    .venv/bin/python bench/pop3_fetch.py                   # Surat in a subprocess on a temp dir
    .venv/bin/python bench/pop3_fetch.py --peer dovecot    # and a private Dovecot (peers.py), same run

Both servers are measured over STLS on loopback with the same certificate: Surat refuses logins
before TLS, and the private Dovecot (bench/peers.py, its own config in the temp dir) gets Surat's dev
certificate; its static passdb is given the argon2id hash of the same password Surat stores (what
Surat verifies at every login), unless --dovecot-plaintext. Each run fills the mailbox afresh (Surat:
through its store while the server is stopped; Dovecot: files written into its Maildir, indexed at
login); runs alternate between the servers and the median of --runs is reported.
Bounded: at most --messages messages and --timeout seconds per run.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ListenerSurat, free_port
from peers import Dovecot, dovecot_missing

from surat.passwords import make_credentials

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "example.test"
USER = f"bench@{DOMAIN}"
PASSWORD = "bench-password"
DOVECOT_PASSWORD = "test"


def make_message(n: int, size: int) -> bytes:
    head = (
        f"From: <sender@example.net>\r\nTo: <{USER}>\r\nSubject: bench {n}\r\n"
        f"Message-ID: <bench-{n}@bench.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)] + b"\r\n"
    return head + body


# ------------------------------------------------------------------------------------------ client


class POP3Error(Exception):
    pass


class Client:
    """A lean blocking POP3 client, so the figures measure the server rather than poplib."""

    def __init__(self, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        )
        self.buf = bytearray()
        self.expect_ok()
        if tls is not None:
            self.command(b"STLS")
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise POP3Error("connection closed")
        self.buf += data

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    def expect_ok(self) -> bytes:
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise POP3Error(reply.decode(errors="replace"))
        return reply

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.expect_ok()

    def multiline(self) -> bytes:
        """The body of a multi-line response as sent (still dot-stuffed), without the terminator."""
        start = 0
        while True:
            if self.buf[:3] == b".\r\n":  # empty body
                del self.buf[:3]
                return b""
            end = self.buf.find(b"\r\n.\r\n", start)
            if end >= 0:
                out = bytes(self.buf[: end + 2])
                del self.buf[: end + 5]
                return out
            start = max(0, len(self.buf) - 4)
            self._fill()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Run:
    name: str
    messages: int
    octets: int
    seconds: float
    login_seconds: float
    mismatches: int  # RETR size differing from the LIST size

    def line(self) -> str:
        return (
            f"{self.name:<14} messages={self.messages} MB={self.octets / 1e6:.1f} secs={self.seconds:.3f} "
            f"login_ms={self.login_seconds * 1000:.0f} msgs_per_sec={self.rate:.0f} "
            f"MB_per_sec={self.octets / self.seconds / 1e6:.1f} size_mismatch={self.mismatches}"
        )

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def fetch_all(
    name: str, port: int, user: str, password: str, tls: ssl.SSLContext | None, args: argparse.Namespace
) -> Run:
    deadline = time.monotonic() + args.timeout
    start = time.perf_counter()
    client = Client(port, tls, args.timeout)
    try:
        client.command(b"USER " + user.encode())
        client.command(b"PASS " + password.encode())
        login = time.perf_counter() - start
        client.command(b"LIST")
        sizes = [int(entry.split()[1]) for entry in client.multiline().splitlines()]
        count = min(len(sizes), args.messages)
        octets = mismatches = 0
        for n in range(1, count + 1):
            client.command(b"RETR %d" % n)
            body = client.multiline()
            octets += len(body)
            # No stuffed lines in these messages: what came is the message itself.
            if len(body) != sizes[n - 1]:
                mismatches += 1
            client.command(b"DELE %d" % n)
            if time.monotonic() > deadline:
                print(f"{name}: timeout after {n} messages", file=sys.stderr)
                count = n
                break
        client.command(b"QUIT")
        seconds = time.perf_counter() - start
    finally:
        client.close()
    return Run(name, count, octets, seconds, login, mismatches)


# ------------------------------------------------------------------------------------------ servers


class SuratProcess(ListenerSurat):
    """Surat in a subprocess with a fresh data dir and only the pop3 listener, on a free port."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, DOMAIN, "pop3", USER, PASSWORD)

    def fill(self, count: int, size: int) -> None:
        self.fill_inbox(make_message(n, size) for n in range(count))


class DovecotProcess(Dovecot):
    """The private Dovecot of peers.py with only POP3 (one login process per connection)."""

    def __init__(self, workdir: Path, cert: Path, key: Path, password_hash: str | None) -> None:
        self.port = free_port()
        self.user = "bench"
        # The same argon2id hash Surat verifies, so both servers do the same work at login; or, with
        # --dovecot-plaintext, a plaintext password compared as it is.
        self.password = DOVECOT_PASSWORD if password_hash is None else PASSWORD
        passdb = DOVECOT_PASSWORD if password_hash is None else "{ARGON2ID}" + password_hash
        super().__init__(workdir / "dovecot", cert, key, passdb, pop3_port=self.port)


# ------------------------------------------------------------------------------------------ main


def summary(runs: list[Run]) -> Run:
    best = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10240, help="octets per message")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peer", choices=["dovecot"], help="also run the same download against this peer")
    parser.add_argument(
        "--dovecot-plaintext",
        action="store_true",
        help="keep the script's plaintext static password for Dovecot (default: Surat's argon2id hash)",
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds per run")
    args = parser.parse_args()
    if args.messages < 1 or args.messages > 100_000:
        parser.error("--messages must be between 1 and 100000")
    print(
        f"load: {args.messages} messages x {args.size} B, RETR + DELE each, one session over STLS, "
        f"{args.runs} runs"
    )
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="surat-bench-pop3-") as tmp:
        workdir = Path(tmp)
        # Dovecot's unprivileged processes must reach their Maildir under this directory.
        workdir.chmod(0o755)
        surat = SuratProcess(workdir / "surat")
        dovecot: DovecotProcess | None = None
        if args.peer == "dovecot":
            if missing := dovecot_missing():
                print(missing)
            else:
                cert, key = surat.config.tls.cert, surat.config.tls.key
                assert cert is not None and key is not None
                password_hash = None if args.dovecot_plaintext else make_credentials(PASSWORD).password_hash
                dovecot = DovecotProcess(workdir, cert, key, password_hash)
                dovecot.start()
        tls = surat.tls()
        try:
            for _ in range(args.runs):
                surat.fill(args.messages, args.size)
                surat.start()
                try:
                    run = fetch_all("surat", surat.port, USER, PASSWORD, tls, args)
                finally:
                    surat.stop()
                print(run.line())
                results.setdefault("surat", []).append(run)
                if dovecot is not None:
                    dovecot.fill(dovecot.user, (make_message(n, args.size) for n in range(args.messages)))
                    run = fetch_all("dovecot", dovecot.port, dovecot.user, dovecot.password, tls, args)
                    print(run.line())
                    results.setdefault("dovecot", []).append(run)
        finally:
            surat.stop()
            if dovecot is not None:
                dovecot.stop()
    print("median of runs:")
    medians = {name: summary(runs) for name, runs in results.items()}
    for run in medians.values():
        print(" ", run.line())
    if len(medians) == 2:
        mine, peer = medians.values()
        print(f"ratio {mine.name}/{peer.name} = {mine.rate / peer.rate:.2f}x (messages/s)")


if __name__ == "__main__":
    main()
