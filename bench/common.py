"""What the benchmarks share: free ports, waiting for a listener, a throwaway Surat setup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SURAT = [sys.executable, "-m", "surat"]
ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")


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
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def single_listener_setup(workdir: Path, domain: str, role: str, port: int) -> Path:
    """`surat quickstart --dev` into workdir, with only `role` listening, on `port`; the config file.

    Only one listener: the other dev ports may be taken by a developer's `make run`."""
    subprocess.run(
        [*SURAT, "quickstart", "--dev", "--domain", domain, "--dir", str(workdir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    config = workdir / "surat.toml"
    lines = []
    for line in config.read_text().splitlines():
        key = line.split("=")[0].strip()
        if key == role:
            lines.append(f'{role} = ["127.0.0.1:{port}"]')
        elif key in ROLES:
            lines.append(f"{key} = []")
        else:
            lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    return config


def surat_env(config: Path) -> dict[str, str]:
    return {**os.environ, "SURAT_CONFIG": str(config)}


def add_user(config: Path, address: str, password: str) -> None:
    result = subprocess.run(
        [*SURAT, "user", "add", address, "--password-stdin"],
        input=password + "\n",
        check=False,
        text=True,
        env=surat_env(config),
        capture_output=True,
    )
    if result.returncode != 0 and "exists" not in result.stderr:
        raise RuntimeError(result.stderr)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Surat shuts down cleanly), then SIGKILL if it takes over 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
