"""The peer servers the benchmarks (and the integration tests) run against, started from this checkout
alone: a private Dovecot 2.3, a private Postfix, Postfix's smtp-sink, dnsmasq as a fake authoritative
DNS, and a pair of network namespaces joined by a veth link.

Each instance lives in its own directory (config, runtime sockets, state, log, Maildirs) and never
touches /etc/dovecot, /etc/postfix or a system instance. They need root (the daemons drop to their own
users: `dovenull`, `postfix`, `nobody`) and the Debian packages that `missing_program` names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from common import cpu_seconds, pss_kib

DOVECOT = Path("/usr/sbin/dovecot")
DOVECOT_PACKAGES = "dovecot-imapd dovecot-pop3d"
MAIL_OWNER = "nobody"
MAIL_GROUP = "nogroup"
START_SECONDS = 10  # to listen after `dovecot` returns (it forks and daemonizes)


# The Debian package that provides each program a peer needs.
PACKAGES = {
    "postfix": "postfix",
    "postconf": "postfix",
    "postsuper": "postfix",
    "postqueue": "postfix",
    "smtp-sink": "postfix",
    "smtp-source": "postfix",
    "dnsmasq": "dnsmasq-base",
    "ip": "iproute2",
    "ss": "iproute2",
}


def missing_program(*programs: str) -> str | None:
    """None if every program is installed, else one line naming the first missing one and its package."""
    for program in programs:
        if shutil.which(program) is None and shutil.which(f"/usr/sbin/{program}") is None:
            package = PACKAGES.get(program, program)
            return f"{program}: not installed; install it with: apt-get install {package}"
    return None


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


# ---------------------------------------------------------------------------------------- Postfix

POSTFIX_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")  # the package's master.cf, which we adapt
PEER_START_SECONDS = 15  # for a peer to listen after it is started


def in_netns(netns: str | None, command: Sequence[str]) -> list[str]:
    """`command` run inside network namespace `netns` (None: this process's namespace)."""
    return ["ip", "netns", "exec", netns, *command] if netns else list(command)


def listening(port: int, netns: str, *, udp: bool = False) -> bool:
    """Whether something listens on `port` inside `netns` (ss(8) there: this process cannot connect)."""
    command = ["ss", "-H", "-N", netns, "-lun" if udp else "-ltn", f"sport = :{port}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return bool(done.stdout.strip())


def wait_until(ready: Callable[[], bool], what: str, log: Path | None) -> None:
    deadline = time.monotonic() + PEER_START_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not listening after {PEER_START_SECONDS}s: {tail(log)}")
        time.sleep(0.1)


def tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(errors="replace")[-2000:]


def smtp_banner(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(512).startswith(b"220")
    return False


class Postfix:
    """A private Postfix: SMTP on `host`:`port` for `domain`, delivering U@domain (U in `users`) to
    ROOT/mail/U/Maildir and any other local part to ROOT/mail/catchall/Maildir (virtual(8), as user
    nobody; virtual(8) cannot substitute a regexp's $1, so users are listed one by one). Mail for
    other domains from 127.0.0.0/8 is relayed: to `relayhost` if set, else to the MX that DNS names
    when `dns` is true (Postfix then uses the resolv.conf of its namespace), else by native lookups.
    `netns`: the network namespace the daemons run in. Log: ROOT/maillog."""

    name = "postfix"

    def __init__(
        self,
        root: Path,
        port: int,
        domain: str,
        *,
        host: str = "127.0.0.1",
        users: Sequence[str] = ("test",),
        dns: bool = False,
        relayhost: str = "",
        netns: str | None = None,
    ) -> None:
        self.root = root.resolve()
        self.port = port
        self.domain = domain
        self.host = host
        self.netns = netns
        self.maillog = self.root / "maillog"
        self.config = self.root / "etc"
        for sub in ("etc", "spool", "data", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Postfix's daemons run as other users and must reach the queue and Maildirs below root.
        self.root.chmod(0o755)
        shutil.chown(self.root / "data", "postfix")
        shutil.chown(self.root / "mail", "nobody", "nogroup")
        (self.config / "master.cf").write_text(self._master_cf())
        (self.config / "main.cf").write_text(self._main_cf(dns, relayhost))
        mailboxes = [f"{user}@{domain} {user}/Maildir/" for user in users]
        (self.config / "vmailbox").write_text("\n".join([*mailboxes, f"@{domain} catchall/Maildir/"]) + "\n")

    def _master_cf(self) -> str:
        """The package's master.cf with smtpd on host:port instead of port 25, and no service chrooted
        (a chroot would need a copy of /etc files inside the private queue directory)."""
        lines = []
        for line in POSTFIX_MASTER_CF.read_text().splitlines():
            fields = line.split()
            if line.startswith(("#", " ", "\t")) or len(fields) < 8:
                lines.append(line)
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"{self.host}:{self.port}"
            fields[4] = "n"  # the chroot column
            lines.append(" ".join(fields))
        return "\n".join(lines) + "\n"

    def _main_cf(self, dns: bool, relayhost: str) -> str:
        return f"""# written by bench/peers.py
compatibility_level = 3.6
queue_directory = {self.root}/spool
data_directory = {self.root}/data
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = peers-postfix.{self.domain}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = {relayhost}
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.root}/mail
virtual_mailbox_maps = texthash:{self.config}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
virtual_mailbox_limit = 0
smtpd_banner = $myhostname ESMTP
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
smtp_dns_support_level = {"enabled" if dns else "disabled"}
biff = no
append_dot_mydomain = no
"""

    def command(self, program: str, *args: str) -> str:
        """Runs one of Postfix's commands on this instance (inside its namespace); its output."""
        done = subprocess.run(
            in_netns(self.netns, [f"/usr/sbin/{program}", "-c", str(self.config), *args]),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)}: {done.stderr.strip()}\n{tail(self.maillog)}")
        return done.stdout

    def start(self) -> None:
        # `postfix check` creates the queue directories with their owners and modes.
        self.command("postfix", "check")
        self.command("postfix", "start")
        netns = self.netns
        if netns is None:
            wait_until(lambda: smtp_banner(self.port), "postfix", self.maillog)
        else:
            wait_until(lambda: listening(self.port, netns), "postfix", self.maillog)

    def postconf(self, setting: str) -> None:
        """Changes one main.cf `name = value` and has the running daemons read it."""
        self.command("postconf", "-e", setting)
        self.command("postfix", "reload")

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.command("postfix", "stop")
        pid_file = self.root / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + PEER_START_SECONDS
        while pid_file.exists() and time.monotonic() < deadline:
            pid = pid_file.read_text().strip()
            if not pid or not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


# ------------------------------------------------------------------- smtp-sink, dnsmasq, namespaces


class Daemon:
    """A peer program run in the foreground as our child (inside `netns`), its output in `log`."""

    def __init__(self, command: Sequence[str], log: Path, netns: str | None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                in_netns(netns, command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def ready(self, check: Callable[[], bool], what: str) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.process.returncode}: {tail(self.log)}")
            return check()

        wait_until(up, what, self.log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def smtp_sink(work: Path, host: str, port: int, netns: str) -> Daemon:
    """Postfix's smtp-sink on host:port inside `netns`: accepts every message and discards it (as user
    nobody; a listen backlog of 1024 so that a burst of connections is not refused)."""
    command = [
        "/usr/sbin/smtp-sink",
        "-u",
        "nobody",
        "-h",
        "smtp-sink.example.test",
        f"inet:{host}:{port}",
        "1024",
    ]
    sink = Daemon(command, work / "smtp-sink.log", netns)
    sink.ready(lambda: listening(port, netns), "smtp-sink")
    return sink


def dnsmasq(work: Path, mx_hosts: dict[str, str], addresses: dict[str, str], netns: str) -> Daemon:
    """dnsmasq as the only DNS server of `netns` (127.0.0.1:53, no upstream): MX `domain` -> `host`
    (preference 10) for each of `mx_hosts`, A `name` -> `address` for each of `addresses`, and
    NXDOMAIN for any other name under .test (--local)."""
    command = [
        "dnsmasq",
        "--keep-in-foreground",
        "--port=53",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--user=nobody",
        "--pid-file=",
        "--log-facility=-",
        "--local=/test/",
        *(f"--mx-host={domain},{host},10" for domain, host in mx_hosts.items()),
        *(f"--host-record={name},{address}" for name, address in addresses.items()),
    ]
    server = Daemon(command, work / "dnsmasq.log", netns)
    server.ready(lambda: listening(53, netns, udp=True), "dnsmasq")
    return server


@contextlib.contextmanager
def netns_pair(first: str, second: str, net: str) -> Iterator[None]:
    """Two network namespaces joined by a veth pair, `net`.1 in `first` and `net`.2 in `second` (a /24
    that exists only there), each with its loopback up and a resolv.conf naming 127.0.0.1 (what
    `ip netns exec` mounts over /etc/resolv.conf inside). Deleted on exit."""

    def ip(*args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    created: list[str] = []
    try:
        for name in (first, second):
            ip("netns", "add", name)
            created.append(name)
        ip("link", "add", f"v-{first}", "type", "veth", "peer", "name", f"v-{second}")
        for name, address in ((first, f"{net}.1"), (second, f"{net}.2")):
            ip("link", "set", f"v-{name}", "netns", name)
            ip("-n", name, "addr", "add", f"{address}/24", "dev", f"v-{name}")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "link", "set", f"v-{name}", "up")
            resolv = Path("/etc/netns") / name / "resolv.conf"
            resolv.parent.mkdir(parents=True, exist_ok=True)
            resolv.write_text("nameserver 127.0.0.1\n")
        yield
    finally:
        for name in created:
            # the veth pair goes with the namespaces
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only if no other namespace has a directory there
