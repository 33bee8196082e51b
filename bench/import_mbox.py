"""`surat import` throughput and memory: an mbox of ``--count`` generated messages (bench/mailgen.py,
realistic sizes, capped at ``--max-kb``) into a fresh SQLite store, by the real `surat` program in a
child process. Prints messages/s, MB/s and the child's peak RSS (wait4's resource usage), for two
sizes of mbox when ``--also`` is given, so that "memory stays flat" is a measurement, not a claim.

    PYTHONPATH=src python bench/import_mbox.py --count 20000 --also 5000

The mbox is written to ``--dir`` (a temporary directory by default) with LF line ends and mboxrd
escaping, as mutt or Dovecot leave one. A second run of the same import (all messages skipped by
their digests) is timed too: what resuming an interrupted import costs before it reaches new mail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailgen import messages

from surat.mailfiles.mbox import is_escaped_from, separator_line

# The largest mbox this bench writes: it is generated on the machine's disk.
MAX_COUNT = 200_000
ADDRESS = "bench@example.test"


def write_mbox(path: Path, count: int, max_kb: int) -> int:
    start = datetime(2015, 1, 1, tzinfo=UTC)
    with path.open("wb") as file:
        for n, message in enumerate(messages(count, max_kb=max_kb)):
            file.write(separator_line(start + timedelta(minutes=n)))
            for line in message.replace(b"\r\n", b"\n").splitlines(keepends=True):
                file.write(b">" + line if is_escaped_from(line) else line)
            file.write(b"\n")
    return path.stat().st_size


def run_once(workdir: Path, count: int, max_kb: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "surat.toml"
    config.write_text('hostname = "mail.example.test"\ndata_dir = "data"\n')
    program = [sys.executable, "-m", "surat", "--config", str(config)]
    for command, stdin in (
        (["domain", "add", "example.test"], None),
        (["user", "add", ADDRESS, "--password-stdin"], "bench password\n"),
    ):
        subprocess.run([*program, *command], input=stdin, capture_output=True, text=True, check=True)
    mbox = workdir / "in.mbox"
    size = write_mbox(mbox, count, max_kb)
    print(f"{count} messages, mbox {size / 1e6:.1f} MB ({mbox})")
    for label in ("import", "re-run (all known)"):
        started = time.perf_counter()
        with tempfile.TemporaryFile() as out:
            child = subprocess.Popen(
                [*program, "import", ADDRESS, str(mbox)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            # wait4: the resource usage of this one child (its peak RSS), not of every child so far.
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - started
            out.seek(0)
            summary = out.read().decode().strip().splitlines()[-1]
        if child.returncode != 0:
            raise SystemExit(f"import failed: {summary}")
        print(
            f"  {label}: {seconds:.1f} s, {count / seconds:.0f} messages/s, {size / 1e6 / seconds:.1f} MB/s,"
            f" CPU {usage.ru_utime + usage.ru_stime:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB"
        )
        print("   ", summary)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--also", type=int, help="a second, smaller run first (peak RSS of both)")
    parser.add_argument("--max-kb", type=int, default=64)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    for count in (args.also, args.count):
        if count is None:
            continue
        if not 0 < count <= MAX_COUNT:
            parser.error(f"--count and --also: 1 to {MAX_COUNT}")
        with tempfile.TemporaryDirectory(prefix="surat-import-", dir=args.dir) as workdir:
            run_once(Path(workdir), count, args.max_kb)


if __name__ == "__main__":
    main()
