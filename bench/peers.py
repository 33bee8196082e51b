"""The benchmarks' peer servers, started from this checkout alone: a private Dovecot 2.3 instance.

Each instance lives in its own directory (config, runtime sockets, state, log, Maildirs) and never
touches /etc/dovecot or the system instance. It needs root (Dovecot drops to its own users, `dovenull`
for logins and `nobody` for the mail) and the Debian packages named in DOVECOT_PACKAGES.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from common import cpu_seconds, pss_kib

DOVECOT = Path("/usr/sbin/dovecot")
DOVECOT_PACKAGES = "dovecot-imapd dovecot-pop3d"
MAIL_OWNER = "nobody"
MAIL_GROUP = "nogroup"
START_SECONDS = 10  # to listen after `dovecot` returns (it forks and daemonizes)


def dovecot_missing() -> str | None:
    """None if Dovecot is installed, else the line telling what to install."""
    if DOVECOT.exists():
        return None
    return f"dovecot: not installed ({DOVECOT} missing); install it with: apt-get install {DOVECOT_PACKAGES}"


class Dovecot:
    """A private Dovecot: IMAP with STARTTLS on `imap_port` and/or POP3 with STLS on `pop3_port` (0: no
    such listener), any user name with one password, Maildirs under ROOT/mail/<user>/Maildir.

    `password` is what the static passdb compares: plaintext, or a scheme-prefixed hash such as
    "{ARGON2ID}$argon2id$..." (Surat's stored hash, so both servers do the same work at each login).
    `high_performance`: login processes serve many connections (service_count = 0), as in Dovecot's
    high-performance login mode; otherwise one login process per connection."""

    name = "dovecot"

    def __init__(
        self,
        root: Path,
        cert: Path,
        key: Path,
        password: str,
        *,
        imap_port: int = 0,
        pop3_port: int = 0,
        high_performance: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.config = self.root / "dovecot.conf"
        self.imap_port = imap_port
        self.pop3_port = pop3_port
        self.master = 0
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Dovecot's unprivileged processes must reach their Maildirs and sockets under root.
        self.root.chmod(0o755)
        subprocess.run(["chown", f"{MAIL_OWNER}:{MAIL_GROUP}", str(self.root / "mail")], check=True)
        self.config.write_text(self._config(cert, key, password, high_performance))

    def _config(self, cert: Path, key: Path, password: str, high_performance: bool) -> str:
        # High-performance mode: each login process serves many connections.
        login_service = "  service_count = 0\n  process_min_avail = 2\n" if high_performance else ""
        login_services = "".join(
            f"service {name}-login {{\n"
            f"  inet_listener {name} {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n"
            f"  inet_listener {name}s {{\n    port = 0\n  }}\n"
            f"{login_service}}}\n"
            for name, port in (("imap", self.imap_port), ("pop3", self.pop3_port))
            if port
        )
        protocols = " ".join(
            name for name, port in (("imap", self.imap_port), ("pop3", self.pop3_port)) if port
        )
        return f"""# written by bench/peers.py
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = surat-bench-{self.root.name}-{os.getpid()}
listen = 127.0.0.1
protocols = {protocols}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
log_path = {self.root}/dovecot.log
info_log_path = {self.root}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 5000
pop3_uidl_format = %08Xu%08Xv
# One imap process per connection: the default limit of 100 would stop a benchmark's idle phase.
default_process_limit = 2000
default_client_limit = 4000
service anvil {{
  # anvil hears from every login and imap process: more than the default client limit.
  client_limit = 4100
}}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={MAIL_OWNER} gid={MAIL_GROUP} home={self.root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
{login_services}"""

    def start(self) -> None:
        subprocess.run([str(DOVECOT), "-c", str(self.config)], check=True)
        deadline = time.monotonic() + START_SECONDS
        for port in (self.imap_port, self.pop3_port):
            while port:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                        if sock.recv(512).startswith((b"* OK", b"+OK")):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot not answering on port {port}; see {self.root}/dovecot.log")
                time.sleep(0.1)
        self.master = int((self.root / "run" / "master.pid").read_text().strip())

    def stop(self) -> None:
        if not self.master:
            return
        subprocess.run([str(DOVECOT), "-c", str(self.config), "stop"], check=False, capture_output=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and Path(f"/proc/{self.master}").exists():
            time.sleep(0.1)
        self.master = 0

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def fill(self, user: str, messages: Iterable[bytes]) -> int:
        """Write `messages` (CRLF line ends) into `user`'s Maildir/new, where Dovecot indexes them at the
        next SELECT or login; the number written. Maildir files hold LF line ends; the name carries the
        file size (S=) and the size with CRLF (W=, what RFC822.SIZE reports), as Dovecot's own names do."""
        maildir = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        stamp = int(time.time())
        count = 0
        for count, raw in enumerate(messages, 1):
            lf = raw.replace(b"\r\n", b"\n")
            name = f"{stamp}.M{count}P{os.getpid()}.bench,S={len(lf)},W={len(raw)}"
            (maildir / "tmp" / name).write_bytes(lf)
            (maildir / "tmp" / name).rename(maildir / "new" / name)
        subprocess.run(
            ["chown", "-R", f"{MAIL_OWNER}:{MAIL_GROUP}", str(self.root / "mail" / user)], check=True
        )
        return count

    def processes(self) -> list[int]:
        """The master and every process under it."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True)
        children: dict[int, list[int]] = {}
        for line in out.stdout.splitlines():
            pid, ppid = (int(x) for x in line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.master]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def memory_kib(self) -> int:
        """PSS summed over all processes (shared pages counted once)."""
        return sum(pss_kib(pid) for pid in self.processes())

    def cpu(self) -> float:
        """CPU of the live processes, plus what the master's exited children used."""
        return sum(cpu_seconds(pid, children=pid == self.master) for pid in self.processes())
