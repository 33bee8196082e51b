"""A private Postfix for the integration tests that deliver to a real MTA, set up from this checkout
alone: its own config, queue and Maildirs in a temporary directory, never /etc/postfix's instance.

It accepts mail for one domain on a loopback port and delivers `test@DOMAIN` to ROOT/mail/test/Maildir
and any other local part to ROOT/mail/catchall/Maildir (virtual(8), as user nobody). Needs root and
Debian's `postfix` package (.ci/run installs it); skipped without it, a failure under CI=true.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import free_port, require_tool

POSTFIX = "postfix"
MASTER_CF = Path("/usr/share/postfix/master.cf.dist")  # the package's master.cf, which we adapt
START_SECONDS = 15  # for the SMTP banner after `postfix start`
USERS = ("test",)


def master_cf(port: int) -> str:
    """The package's master.cf with smtpd on 127.0.0.1:`port` instead of port 25, and no service
    chrooted (a chroot would need a copy of /etc files inside the private queue directory)."""
    lines = []
    for line in MASTER_CF.read_text().splitlines():
        fields = line.split()
        if line.startswith(("#", " ", "\t")) or len(fields) < 8:
            lines.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"  # the chroot column
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


def main_cf(root: Path, domain: str) -> str:
    return f"""compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = peers-postfix.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
virtual_mailbox_limit = 0
smtpd_banner = $myhostname ESMTP
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtp_dns_support_level = disabled
biff = no
append_dot_mydomain = no
"""


def _postfix(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POSTFIX, "-c", str(root / "etc"), *args], check=False, capture_output=True, text=True, timeout=60
    )


def _maillog(root: Path) -> str:
    log = root / "maillog"
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no maillog)"


def _wait_banner(port: int, root: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if sock.recv(512).startswith(b"220"):
                return
        time.sleep(0.1)
    raise AssertionError(f"postfix not answering on port {port}:\n{_maillog(root)}")


@contextlib.contextmanager
def postfix_peer(domain: str) -> Iterator[tuple[int, Path]]:
    """A private Postfix receiving mail for `domain` into Maildirs: yields its port and its root
    directory (test@domain's Maildir is ROOT/mail/test/Maildir), and stops it afterwards."""
    require_tool(POSTFIX)
    port = free_port()
    # Postfix's daemons run as other users and must reach the queue and Maildirs: pytest's tmp
    # tree is private to root (0700), so the instance lives in its own world-readable directory.
    root = Path(tempfile.mkdtemp(prefix="surat-postfix-"))
    root.chmod(0o755)
    try:
        for sub in ("etc", "spool", "data", "mail"):
            (root / sub).mkdir()
        shutil.chown(root / "data", "postfix")
        shutil.chown(root / "mail", "nobody", "nogroup")
        (root / "etc" / "master.cf").write_text(master_cf(port))
        (root / "etc" / "main.cf").write_text(main_cf(root, domain))
        mailboxes = [f"{user}@{domain} {user}/Maildir/" for user in USERS]
        (root / "etc" / "vmailbox").write_text("\n".join([*mailboxes, f"@{domain} catchall/Maildir/"]) + "\n")
        # `postfix check` creates the queue directories with their owners and modes.
        for step in ("check", "start"):
            result = _postfix(root, step)
            assert result.returncode == 0, f"postfix {step}: {result.stderr}\n{_maillog(root)}"
        _wait_banner(port, root)
        yield port, root
    finally:
        _postfix(root, "stop")
        pid_file = root / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + START_SECONDS
        while pid_file.exists() and time.monotonic() < deadline:
            pid = pid_file.read_text().strip()
            if not pid or not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
