"""The README's development samples, run as written against a dev server.

Every fenced block in README.md preceded by `<!-- README test: dev -->` is run here, in a directory
holding a real `surat quickstart --dev` setup in `var/` (what `make run` writes), with only these
changes: the dev ports become free ones (a `make run` server may hold the real ones),
`THE-PRINTED-PASSWORD` becomes the password quickstart printed, and `.venv/bin/surat` becomes this
interpreter's `-m surat` (the checkout under test). A block that fails, or a sample that stops being
marked, fails the test: the README's newcomer path cannot rot unnoticed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RunningServer, inbox, require_tool

import surat
from surat.cli import DEV_PORTS
from surat.cli import main as surat_main
from surat.config import load_config

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- README test: dev -->"
POSTMASTER = "postmaster@example.test"
# The samples run in another directory: make `-m surat` import this checkout's package.
ENV = {**os.environ, "PYTHONPATH": str(Path(surat.__file__).resolve().parents[1])}


@dataclass(frozen=True, slots=True)
class Sample:
    language: str  # "sh" or "python"
    code: str
    line: int  # where it starts in README.md


def readme_samples() -> list[Sample]:
    lines = README.read_text(encoding="utf-8").splitlines()
    samples = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[index + 1]
        assert fence.startswith("```"), f"README.md:{index + 2}: the marker must precede a fenced block"
        end = lines.index("```", index + 2)
        samples.append(Sample(fence[3:].strip(), "\n".join(lines[index + 2 : end]) + "\n", index + 3))
    return samples


@dataclass
class DevSetup:
    directory: Path  # holds var/, as the repository root does after `make run`
    password: str
    ports: dict[int, int]  # dev port -> the port this test's server listens on
    server: RunningServer

    def adapt(self, code: str) -> str:
        code = code.replace("THE-PRINTED-PASSWORD", self.password)
        code = code.replace(".venv/bin/surat", f"{shlex.quote(sys.executable)} -m surat")
        for dev, actual in self.ports.items():
            code = code.replace(f"localhost:{dev}", f"localhost:{actual}")
            code = code.replace(f'"localhost", {dev}', f'"localhost", {actual}')
        return code


@pytest.fixture
def dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[DevSetup]:
    monkeypatch.delenv("SURAT_CONFIG", raising=False)
    assert (
        surat_main(["quickstart", "--dev", "--domain", "example.test", "--dir", str(tmp_path / "var")]) == 0
    )
    printed = capsys.readouterr().out
    password = re.search(rf"Account {POSTMASTER}, password .*\n\s+(\S+)\n", printed)
    assert password is not None, printed
    config_file = tmp_path / "var" / "surat.toml"
    text = config_file.read_text()
    ports: dict[int, int] = {}
    for port in DEV_PORTS.values():
        text = text.replace(f'"127.0.0.1:{port}"', '"127.0.0.1:0"')
    config_file.write_text(text)
    server = RunningServer(load_config(config_file))
    try:
        for role, port in DEV_PORTS.items():
            ports[port] = server.port(role)
        yield DevSetup(tmp_path, password.group(1), ports, server)
    finally:
        server.stop()


def test_the_readme_marks_its_dev_samples() -> None:
    kinds = [sample.language for sample in readme_samples()]
    assert kinds.count("sh") >= 4 and kinds.count("python") >= 1, kinds


def test_the_readme_dev_samples_run_as_written(dev: DevSetup) -> None:
    require_tool("swaks")
    require_tool("curl")
    outputs = []
    for sample in readme_samples():
        code = dev.adapt(sample.code)
        if sample.language == "python":
            command = [sys.executable, "-c", code]
        else:
            assert sample.language == "sh", f"README.md:{sample.line}: unknown language {sample.language}"
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        result = subprocess.run(
            command, cwd=dev.directory, env=ENV, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, (
            f"README.md:{sample.line} failed:\n{code}\n{result.stdout}\n{result.stderr}"
        )
        outputs.append(result.stdout)
    # Three messages arrived (swaks through submission and the MX, smtplib), and curl saw them.
    stored = inbox(dev.server, POSTMASTER)
    assert len(stored) == 3
    assert any(
        b"\r\nSubject: hello\r\n" in message and message.endswith(b"It works.\r\n") for message in stored
    )
    everything = "".join(outputs)
    assert "* SEARCH 1 2 3" in everything
    assert "postmaster@example.test" in everything  # `user list`
