"""mbsync (isync) syncing the server's mailboxes with a local Maildir, both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import PASSWORD, USER, RunningServer, require_tool
from test_imap_basic import SIMPLE, deliver, login


def _config(
    server: RunningServer, maildir: Path, password: str = PASSWORD, mechanism: str = "SCRAM-SHA-256"
) -> Path:
    # SCRAM-SHA-256 through Cyrus SASL, which mbsync uses: a real third-party SCRAM client (it refuses
    # iteration counts above 65536, which is why Surat's count stays below that). App passwords go
    # with PLAIN (surat.apppasswords: not SCRAM).
    config = maildir.parent / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount surat
Host localhost
Port {server.port("imaps")}
User {USER}
Pass "{password}"
SSLType IMAPS
AuthMechs {mechanism}
CertificateFile {server.ca_file}

IMAPStore remote
Account surat

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
Sync All
SyncState *
"""
    )
    return config


def _run(mbsync: str, config: Path) -> None:
    result = subprocess.run(
        [mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _subject(path: Path) -> bytes:
    for line in path.read_bytes().splitlines():
        if line.startswith(b"Subject: "):
            return line[9:]
    return b""


def _messages(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).iterdir())


def test_mbsync_both_ways(server: RunningServer, tmp_path: Path) -> None:
    mbsync = require_tool("mbsync")
    deliver(server, [SIMPLE, SIMPLE.replace(b"hello", b"second")])
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    config = _config(server, maildir)
    _run(mbsync, config)
    local = _messages(maildir / "INBOX")
    assert len(local) == 2
    # mbsync stores LF line ends locally and may add its X-TUID header while syncing.
    assert sorted(_subject(p) for p in local) == [b"hello", b"second"]
    assert any(p.read_bytes().endswith(b"\n\nHi there.\n") for p in local)
    assert (maildir / "Archive").is_dir()

    # Local changes go up: a new message, a flag, and a deletion.
    (maildir / "INBOX" / "new" / "1700000000.local.host").write_bytes(b"Subject: from maildir\n\nlocal\n")
    first, second = sorted(local, key=_subject)
    first.rename(first.with_name(first.name.split(":2,")[0] + ":2,FS"))
    second.unlink()
    _run(mbsync, config)
    client = login(server)
    client.select("INBOX")
    _typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = sorted(item[1].strip() for item in data if isinstance(item, tuple))
    assert subjects == [b"Subject: from maildir", b"Subject: hello"]
    flags = [item[0] for item in data if isinstance(item, tuple) and b"hello" in item[1]]
    assert b"\\Flagged" in flags[0] and b"\\Seen" in flags[0]

    # Server changes come down: an expunge and a delivery.
    client.store("1", "+FLAGS", "\\Deleted")
    client.expunge()
    client.logout()
    deliver(server, [b"Subject: third\r\n\r\nnew on the server\r\n"])
    _run(mbsync, config)
    assert sorted(_subject(p) for p in _messages(maildir / "INBOX")) == [b"from maildir", b"third"]
