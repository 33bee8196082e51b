"""Certificates reloaded without a restart, and chosen by SNI (issue 15, "Reload without restart").

Every test reads the certificate a real client was shown (its SHA-256 fingerprint) over a real
connection: implicit TLS (IMAPS, SMTPS, POP3S) and STARTTLS (submission, IMAP).
"""

from __future__ import annotations

import imaplib
import logging
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from conftest import (
    DOMAIN,
    PASSWORD,
    USER,
    RunningServer,
    free_port,
    make_config,
    serve_in_subprocess,
    wait_listening,
)

from surat.pidfile import PID_FILE_NAME
from tls_certs import IssuedCertificate, any_certificate_client, make_certificate, peer_fingerprint

NAME = "mail.example.test"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """The [tls] cert and key of the server under test: files of its own, which the tests replace."""
    directory = tmp_path / "tls"
    directory.mkdir()
    return directory / "cert.pem", directory / "key.pem"


def start(tmp_path: Path, tls: Mapping[str, object]) -> RunningServer:
    # The https listener too: aiohttp keeps the context it was given (TlsContexts.front_context).
    running = RunningServer(make_config(tmp_path, tls=dict(tls), listen={"https": ["127.0.0.1:0"]}))
    running.add_domain(DOMAIN)
    running.add_user(USER)
    return running


@pytest.fixture
def running(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> Iterator[tuple[RunningServer, IssuedCertificate]]:
    """A server whose default certificate is a fresh one, returned with it."""
    first = make_certificate([NAME])
    first.install(*tls_files)
    server = start(tmp_path, {"cert": str(tls_files[0]), "key": str(tls_files[1])})
    try:
        yield server, first
    finally:
        server.stop()


def reload(server: RunningServer) -> bool:
    async def on_its_loop() -> bool:
        return server.server.reload_certificates()

    return server.call(on_its_loop())


# ---------------------------------------------------------------------------------------- clients


def implicit_tls_fingerprint(port: int, server_name: str | None = None) -> str:
    """Handshake on an implicit-TLS port, sending `server_name` as SNI (none when None)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        any_certificate_client().wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        return peer_fingerprint(tls)


def submission_starttls_fingerprint(port: int, server_name: str | None = None) -> str:
    """EHLO, STARTTLS on submission, then the handshake with `server_name` as SNI."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = reader.readline()
                if line[3:4] != b"-":
                    return line

        assert reply().startswith(b"220 ")
        sock.sendall(b"EHLO client.example\r\n")
        assert reply().startswith(b"250 ")
        sock.sendall(b"STARTTLS\r\n")
        assert reply() == b"220 2.0.0 Ready to start TLS\r\n"
        with any_certificate_client().wrap_socket(sock, server_hostname=server_name) as tls:
            fingerprint = peer_fingerprint(tls)
            tls.sendall(b"EHLO client.example\r\n")
            assert tls.recv(4096).startswith(b"250-")  # the session goes on over TLS
            return fingerprint


def imap_starttls_fingerprint(port: int) -> str:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        client.starttls(ssl_context=any_certificate_client())
        return peer_fingerprint(client.sock)
    finally:
        client.logout()


# ------------------------------------------------------------------------------------------ reload


def test_reload_serves_the_new_certificate_to_new_connections_and_leaves_open_ones_alone(
    running: tuple[RunningServer, IssuedCertificate], tls_files: tuple[Path, Path]
) -> None:
    server, first = running
    # Connections opened before the reload, one per way TLS starts.
    imaps = imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imaps"), ssl_context=any_certificate_client(), timeout=10
    )
    imaps.login(USER, PASSWORD)
    smtps = smtplib.SMTP_SSL(
        "127.0.0.1", server.port("submissions"), context=any_certificate_client(), timeout=10
    )
    submission = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10)
    submission.starttls(context=any_certificate_client())
    try:
        for client in (imaps, smtps, submission):
            assert peer_fingerprint(client.sock) == first.sha256
        second = make_certificate([NAME])
        second.install(*tls_files)

        assert reload(server) is True

        # New connections, every listener kind: the new certificate.
        assert implicit_tls_fingerprint(server.port("imaps")) == second.sha256
        assert implicit_tls_fingerprint(server.port("submissions")) == second.sha256
        assert implicit_tls_fingerprint(server.port("pop3s")) == second.sha256
        assert implicit_tls_fingerprint(server.port("https")) == second.sha256
        assert submission_starttls_fingerprint(server.port("submission")) == second.sha256
        assert imap_starttls_fingerprint(server.port("imap")) == second.sha256
        pop3 = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
        try:
            pop3.stls(context=any_certificate_client())
            assert peer_fingerprint(pop3.sock) == second.sha256
        finally:
            pop3.quit()
        # The connections opened before keep their session (and its certificate) and keep working.
        assert imaps.select("INBOX") == ("OK", [b"0"])
        assert imaps.noop()[0] == "OK"
        assert peer_fingerprint(imaps.sock) == first.sha256
        assert smtps.ehlo()[0] == 250
        assert submission.noop() == (250, b"2.0.0 OK")
        assert peer_fingerprint(submission.sock) == first.sha256
    finally:
        imaps.logout()
        smtps.quit()
        submission.quit()


def test_reload_logs_the_new_certificate(
    running: tuple[RunningServer, IssuedCertificate],
    tls_files: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = running
    second = make_certificate([NAME, "imap.example.test"])
    second.install(*tls_files)
    with caplog.at_level(logging.INFO, logger="surat"):
        assert reload(server) is True
    (line,) = [record for record in caplog.records if record.getMessage().startswith("tls.")]
    assert line.getMessage() == "tls.reloaded"
    assert line.levelno == logging.INFO
    fields = getattr(line, "kv")  # noqa: B009 - set through `extra`
    assert fields["subject"] == f"CN={NAME}"
    assert fields["sha256"] == second.sha256
    assert fields["pid"] == os.getpid()
    assert fields["sni_certificates"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["not_after"])


BROKEN: dict[str, tuple[Callable[[Path, Path], object], str, str]] = {
    # name: (what to do to the files, the setting named, what the log line says)
    "key of another certificate": (
        lambda cert, key: key.write_bytes(make_certificate([NAME]).key_pem),
        "tls.key",
        "does not match the certificate",
    ),
    "key missing": (lambda cert, key: key.unlink(), "tls.key", "cannot read TLS private key"),
    "certificate not PEM": (
        lambda cert, key: cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n"),
        "tls.cert",
        "contains no valid PEM certificate",
    ),
    "certificate expired": (
        lambda cert, key: make_certificate([NAME], expired=True).install(cert, key),
        "tls.cert",
        "expired on",
    ),
}


@pytest.mark.parametrize("breakage", list(BROKEN))
def test_a_broken_new_certificate_is_refused_in_one_line_and_the_old_one_stays(
    running: tuple[RunningServer, IssuedCertificate],
    tls_files: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
    breakage: str,
) -> None:
    server, first = running
    damage, setting, reason = BROKEN[breakage]
    damage(*tls_files)
    with caplog.at_level(logging.INFO, logger="surat"):
        assert reload(server) is False
    lines = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert [record.getMessage() for record in lines] == ["tls.reload_failed"]
    fields = getattr(lines[0], "kv")  # noqa: B009 - set through `extra`
    assert fields["setting"] == setting
    assert reason in fields["reason"]
    # The file at fault is named: the key for key problems, the certificate otherwise.
    assert str(tls_files[1] if setting == "tls.key" else tls_files[0]) in fields["reason"]
    assert implicit_tls_fingerprint(server.port("imaps")) == first.sha256
    assert submission_starttls_fingerprint(server.port("submission")) == first.sha256


def test_a_later_good_reload_after_a_refused_one_applies(
    running: tuple[RunningServer, IssuedCertificate], tls_files: tuple[Path, Path]
) -> None:
    server, first = running
    tls_files[1].write_bytes(make_certificate([NAME]).key_pem)
    assert reload(server) is False
    assert implicit_tls_fingerprint(server.port("imaps")) == first.sha256
    fixed = make_certificate([NAME])
    fixed.install(*tls_files)
    assert reload(server) is True
    assert implicit_tls_fingerprint(server.port("imaps")) == fixed.sha256


# --------------------------------------------------------------------------------------------- SNI


@pytest.fixture
def sni_server(
    tmp_path: Path,
) -> Iterator[tuple[RunningServer, dict[str, IssuedCertificate], dict[str, Path]]]:
    """Default certificate for mail.example.test; one for mail.one.test; one for *.two.test."""
    directory = tmp_path / "tls"
    directory.mkdir()
    certificates = {
        "default": make_certificate([NAME]),
        "one": make_certificate(["mail.one.test", "imap.one.test"]),
        "two": make_certificate(["*.two.test"]),
    }
    paths = {}
    for label, certificate in certificates.items():
        paths[f"{label}.cert"], paths[f"{label}.key"] = directory / f"{label}.pem", directory / f"{label}.key"
        certificate.install(paths[f"{label}.cert"], paths[f"{label}.key"])
    tls = {
        "cert": str(paths["default.cert"]),
        "key": str(paths["default.key"]),
        "certificates": [
            {"cert": str(paths["one.cert"]), "key": str(paths["one.key"])},
            {"cert": str(paths["two.cert"]), "key": str(paths["two.key"])},
        ],
    }
    server = start(tmp_path, tls)
    try:
        yield server, certificates, paths
    finally:
        server.stop()


SNI_CASES = [
    ("mail.one.test", "one"),
    ("IMAP.One.Test", "one"),  # DNS names compare case-insensitively (RFC 4343)
    ("smtp.two.test", "two"),  # the wildcard's one label
    ("a.b.two.test", "default"),  # RFC 6125 §6.4.3: a wildcard is one label, not several
    ("two.test", "default"),  # nor none
    ("mail.example.test", "default"),
    ("unknown.example", "default"),
    (None, "default"),  # no SNI at all
]


@pytest.mark.parametrize(("server_name", "expected"), SNI_CASES)
def test_sni_chooses_the_certificate_on_implicit_tls_and_starttls(
    sni_server: tuple[RunningServer, dict[str, IssuedCertificate], dict[str, Path]],
    server_name: str | None,
    expected: str,
) -> None:
    server, certificates, _ = sni_server
    wanted = certificates[expected].sha256
    assert implicit_tls_fingerprint(server.port("imaps"), server_name) == wanted
    assert implicit_tls_fingerprint(server.port("pop3s"), server_name) == wanted
    assert implicit_tls_fingerprint(server.port("https"), server_name) == wanted
    assert submission_starttls_fingerprint(server.port("submission"), server_name) == wanted


def test_sni_certificates_are_reloaded_too(
    sni_server: tuple[RunningServer, dict[str, IssuedCertificate], dict[str, Path]],
) -> None:
    server, certificates, paths = sni_server
    renewed = make_certificate(["mail.one.test"])
    renewed.install(paths["one.cert"], paths["one.key"])
    assert reload(server) is True
    assert implicit_tls_fingerprint(server.port("imaps"), "mail.one.test") == renewed.sha256
    # imap.one.test left the renewed certificate: the default serves it now.
    assert implicit_tls_fingerprint(server.port("imaps"), "imap.one.test") == certificates["default"].sha256
    assert implicit_tls_fingerprint(server.port("imaps"), "x.two.test") == certificates["two"].sha256

    # A broken SNI pair refuses the whole reload: nothing changes, not even the good pairs.
    newer_default = make_certificate([NAME])
    newer_default.install(paths["default.cert"], paths["default.key"])
    paths["two.key"].write_bytes(make_certificate(["*.two.test"]).key_pem)
    assert reload(server) is False
    assert implicit_tls_fingerprint(server.port("imaps")) == certificates["default"].sha256
    assert implicit_tls_fingerprint(server.port("imaps"), "x.two.test") == certificates["two"].sha256


# ------------------------------------------------------------------- surat serve, surat reload, SIGHUP


def write_config(base: Path, cert: Path, key: Path, ports: dict[str, int], workers: int = 1) -> Path:
    config = base / "surat.toml"
    listen = "".join(
        f'{role} = ["127.0.0.1:{ports[role]}"]\n' if role in ports else f"{role} = []\n"
        for role in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
    )
    config.write_text(
        f'hostname = "{NAME}"\ndata_dir = "data"\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        f"[listen]\n{listen}"
        "[limits]\ngreet_pause = 0\n"
        f"[server]\nworkers = {workers}\n"
    )
    return config


def surat(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surat", *args],
        env={**os.environ, "SURAT_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_for_log(log: Path, pattern: re.Pattern[bytes], count: int) -> list[re.Match[bytes]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = list(pattern.finditer(log.read_bytes()))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern.pattern!r} x{count} not logged: {log.read_bytes()[-3000:]!r}")


RELOADED = re.compile(rb"tls\.reloaded .*?pid=(\d+)")


def test_surat_reload_signals_the_running_server(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    first = make_certificate([NAME])
    first.install(*tls_files)
    ports = {"imaps": free_port(), "submission": free_port()}
    config = write_config(tmp_path, *tls_files, ports)
    pid_file = tmp_path / "data" / PID_FILE_NAME

    stopped = surat(config, "reload")
    assert (stopped.returncode, stopped.stdout) == (1, "")
    assert stopped.stderr == (
        f"surat: reload: no surat serve is running with data_dir {tmp_path / 'data'} "
        f"(it holds {PID_FILE_NAME} there while it runs)\n"
    )

    proc = serve_in_subprocess(config)
    try:
        wait_listening(ports["imaps"], proc, config)
        assert pid_file.read_text() == f"{proc.pid}\n"
        assert pid_file.stat().st_mode & 0o777 == 0o600
        imaps = imaplib.IMAP4_SSL(
            "127.0.0.1", ports["imaps"], ssl_context=any_certificate_client(), timeout=10
        )
        assert peer_fingerprint(imaps.sock) == first.sha256

        second = make_certificate([NAME])
        second.install(*tls_files)
        done = surat(config, "reload")
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == (
            f"reload: asked surat serve (pid {proc.pid}) to re-read its certificates; "
            "its log says tls.reloaded, or tls.reload_failed (then it keeps the old ones)\n"
        )
        (reloaded,) = wait_for_log(tmp_path / "server.log", RELOADED, 1)
        assert int(reloaded.group(1)) == proc.pid
        assert implicit_tls_fingerprint(ports["imaps"]) == second.sha256
        assert submission_starttls_fingerprint(ports["submission"]) == second.sha256
        assert imaps.noop()[0] == "OK"  # opened before, still served

        # `surat reload` checks the files first: a mismatched key is reported there, no signal sent.
        tls_files[1].write_bytes(make_certificate([NAME]).key_pem)
        refused = surat(config, "reload")
        assert refused.returncode == 2
        assert refused.stderr == (
            f"surat: config: tls.key: TLS private key {tls_files[1]} does not match the certificate "
            f"{tls_files[0]}\n"
        )
        # The same through SIGHUP straight to the process: the server refuses it in one line.
        os.kill(proc.pid, signal.SIGHUP)
        wait_for_log(tmp_path / "server.log", re.compile(rb"tls\.reload_failed setting=tls\.key"), 1)
        assert implicit_tls_fingerprint(ports["imaps"]) == second.sha256
        imaps.logout()

        # One server per data_dir: a second one is refused before it touches the store.
        second.install(*tls_files)
        second_server = surat(config, "serve")
        assert second_server.returncode == 1
        assert f"another surat serve (pid {proc.pid}) is running" in second_server.stderr
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert not pid_file.exists()  # removed at a clean stop


@pytest.mark.slow
def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    first = make_certificate([NAME])
    first.install(*tls_files)
    ports = {"imaps": free_port(), "submission": free_port()}
    config = write_config(tmp_path, *tls_files, ports, workers=2)
    log = tmp_path / "server.log"
    proc = serve_in_subprocess(config)
    try:
        wait_listening(ports["imaps"], proc, config)
        started = wait_for_log(log, re.compile(rb"worker\.started index=(\d+) pid=(\d+)"), 2)
        workers = {int(match.group(2)) for match in started}
        assert implicit_tls_fingerprint(ports["imaps"]) == first.sha256

        second = make_certificate([NAME])
        second.install(*tls_files)
        os.kill(proc.pid, signal.SIGHUP)

        # One line per worker, each from its own process; the supervisor holds no certificate.
        reloaded = wait_for_log(log, RELOADED, 2)
        assert {int(match.group(1)) for match in reloaded} == workers
        for _ in range(8):  # whichever worker accepts, the new certificate
            assert implicit_tls_fingerprint(ports["imaps"]) == second.sha256
            assert submission_starttls_fingerprint(ports["submission"]) == second.sha256
    finally:
        proc.terminate()
        assert proc.wait(40) == 0
