"""A private Postfix for the integration tests that deliver to a real MTA: bench/peers.py's `Postfix`
(its own config, queue and Maildirs in a temporary directory, never /etc/postfix's instance), which
the benchmarks use too.

It accepts mail for one domain on a loopback port and delivers `test@DOMAIN` to ROOT/mail/test/Maildir
and any other local part to ROOT/mail/catchall/Maildir (virtual(8), as user nobody). Needs root and
Debian's `postfix` package (.ci/run installs it); skipped without it, a failure under CI=true.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conftest import free_port, require_tool
from peers import Postfix


@contextlib.contextmanager
def postfix_peer(domain: str) -> Iterator[tuple[int, Path]]:
    """A private Postfix receiving mail for `domain` into Maildirs: yields its port and its root
    directory (test@domain's Maildir is ROOT/mail/test/Maildir), and stops it afterwards."""
    require_tool("postfix")
    # pytest's tmp tree is private to root (0700), where Postfix's daemons could not reach their
    # queue: the instance lives in its own directory, which Postfix makes world-readable.
    root = Path(tempfile.mkdtemp(prefix="surat-postfix-"))
    postfix = Postfix(root, free_port(), domain)
    try:
        postfix.start()
        yield postfix.port, postfix.root
    finally:
        postfix.stop()
        shutil.rmtree(root, ignore_errors=True)
