"""surat.net.tlscontexts (SNI name index, certificate sets), the [[tls.certificates]] config, the pid
file, and `surat check` / `surat reload` on the command line."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from surat import cli
from surat.config import CertificatePair, TLSConfig
from surat.net.tls import TLSSetupError
from surat.net.tlscontexts import TlsContexts, _NameIndex, certificate_lines
from surat.pidfile import PID_FILE_NAME, AlreadyRunning, ServerPidFile, running_server_pid
from tls_certs import IssuedCertificate, make_certificate


def write_pair(directory: Path, label: str, certificate: IssuedCertificate) -> CertificatePair:
    pair = CertificatePair(directory / f"{label}.pem", directory / f"{label}.key")
    certificate.install(pair.cert, pair.key)
    return pair


# ------------------------------------------------------------------------------------- name index

ONE, TWO = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


@pytest.fixture
def index() -> _NameIndex:
    names = _NameIndex()
    assert names.add("mail.one.test", ONE, "tls.certificates[0]") is None
    assert names.add("*.two.test", TWO, "tls.certificates[1]") is None
    assert names.add("Exact.Two.Test.", ONE, "tls.certificates[0]") is None  # beats the wildcard
    return names


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("mail.one.test", ONE),
        ("MAIL.ONE.TEST", ONE),  # RFC 4343: DNS names compare case-insensitively
        ("mail.one.test.", ONE),  # a trailing dot names the same host
        ("x.two.test", TWO),
        ("exact.two.test", ONE),
        ("two.test", None),  # RFC 6125 §6.4.3: the wildcard stands for one label, not none...
        ("a.b.two.test", None),  # ...nor several
        ("*.two.test", TWO),  # the literal name a client should never send still finds only its label
        ("one.test", None),
        ("", None),
        (".", None),
        ("x" * 300, None),
    ],
)
def test_server_names_find_their_certificate(
    index: _NameIndex, server_name: str, expected: ssl.SSLContext | None
) -> None:
    assert index.find(server_name) is expected


def test_partial_label_wildcards_are_ignored_and_said_so() -> None:
    names = _NameIndex()
    assert names.add("m*.example.test", ONE, "tls.certificates[0]") == (
        "tls.certificates[0]: name m*.example.test ignored: a wildcard must be a whole left-most label"
    )
    assert names.find("mail.example.test") is None
    assert names.find("m*.example.test") is None


# ------------------------------------------------------------------------------------ certificate sets


def test_certificates_describe_what_is_served(tmp_path: Path) -> None:
    default, other = make_certificate(["mail.example.test"]), make_certificate(["a.test", "*.b.test"])
    tls = TLSConfig(
        cert=(pair := write_pair(tmp_path, "default", default)).cert,
        key=pair.key,
        certificates=(write_pair(tmp_path, "other", other),),
    )
    contexts = TlsContexts(tls)
    first, second = contexts.certificates
    assert (first.setting, first.names, first.sha256) == ("tls", ("mail.example.test",), default.sha256)
    assert (second.setting, second.names, second.sha256) == ("tls.certificates[0]", ("a.test", "*.b.test"), other.sha256)  # fmt: skip
    assert first.subject == "CN=mail.example.test"
    assert contexts.current.sni_callback is not None
    assert contexts.describe()["sni_certificates"] == 1
    assert certificate_lines(contexts.certificates) == [
        f"  tls: mail.example.test, not after {first.not_after:%Y-%m-%d %H:%M} UTC",
        f"  tls.certificates[0]: a.test, *.b.test, not after {second.not_after:%Y-%m-%d %H:%M} UTC",
    ]


def test_without_sni_certificates_no_callback_is_set(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, "default", make_certificate(["mail.example.test"]))
    assert TlsContexts(TLSConfig(cert=pair.cert, key=pair.key)).current.sni_callback is None


def test_a_name_repeated_in_one_certificate_is_fine(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, "default", make_certificate(["mail.example.test"]))
    other = write_pair(tmp_path, "other", make_certificate(["a.test", "A.test."]))
    contexts = TlsContexts(TLSConfig(cert=pair.cert, key=pair.key, certificates=(other,)))
    assert contexts.certificates[1].names == ("a.test", "A.test.")


def test_a_name_in_two_certificates_stays_with_the_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = write_pair(tmp_path, "default", make_certificate(["mail.example.test"]))
    first = write_pair(tmp_path, "first", make_certificate(["a.test", "*.b.test"]))
    second = write_pair(tmp_path, "second", make_certificate(["*.B.test", "c.test"]))
    contexts = TlsContexts(TLSConfig(cert=pair.cert, key=pair.key, certificates=(first, second)))
    assert contexts.ignored_names == (
        "tls.certificates[1]: name *.b.test ignored: tls.certificates[0] serves it",
    )
    choose = contexts.current.sni_callback
    assert choose is not None

    class Connection:  # what the callback sees of an ssl.SSLObject: a settable context
        context: ssl.SSLContext | None = None

    chosen = {}
    for name in ("x.b.test", "c.test", "a.test"):
        connection = Connection()
        choose(connection, name, contexts.current)  # type: ignore[arg-type]
        chosen[name] = connection.context
    assert chosen["x.b.test"] is chosen["a.test"] is not None
    assert chosen["c.test"] is not None and chosen["c.test"] is not chosen["a.test"]


def test_a_bad_sni_pair_names_its_own_setting(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, "default", make_certificate(["mail.example.test"]))
    other = write_pair(tmp_path, "other", make_certificate(["a.test"]))
    other.key.write_bytes(make_certificate(["a.test"]).key_pem)
    with pytest.raises(TLSSetupError) as info:
        TlsContexts(TLSConfig(cert=pair.cert, key=pair.key, certificates=(other,)))
    assert info.value.setting == "tls.certificates[0].key"
    assert str(info.value) == f"TLS private key {other.key} does not match the certificate {other.cert}"


# ----------------------------------------------------------------------------------------- pid file


def test_the_pid_file_is_held_while_the_server_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert running_server_pid(data_dir) is None
    held = ServerPidFile(data_dir)
    held.acquire()
    path = data_dir / PID_FILE_NAME
    assert path.read_text() == f"{os.getpid()}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert running_server_pid(data_dir) == os.getpid()
    with pytest.raises(AlreadyRunning) as info:
        ServerPidFile(data_dir).acquire()  # flock: another open file, even in this process, conflicts
    assert str(info.value) == f"another surat serve (pid {os.getpid()}) is running with data_dir {data_dir}"
    held.release()
    assert not path.exists()
    assert running_server_pid(data_dir) is None


def test_a_pid_file_left_by_a_dead_server_is_not_believed(tmp_path: Path) -> None:
    # kill -9 leaves the file but not the lock: its pid may belong to some other process by now.
    (tmp_path / PID_FILE_NAME).write_text("1\n")
    assert running_server_pid(tmp_path) is None
    taken = ServerPidFile(tmp_path)
    taken.acquire()  # a new server takes it over
    assert running_server_pid(tmp_path) == os.getpid()
    taken.release()


# ----------------------------------------------------------------------------------- surat check


def test_check_lists_every_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = write_pair(tmp_path, "default", make_certificate(["mail.example.test"]))
    other = write_pair(tmp_path, "other", make_certificate(["mail.other.test"]))
    overlapping = write_pair(tmp_path, "overlapping", make_certificate(["mail.other.test", "mx.other.test"]))
    config = tmp_path / "surat.toml"
    config.write_text(
        'hostname = "mail.example.test"\n'
        f'[tls]\ncert = "{default.cert}"\nkey = "{default.key}"\n'
        f'[[tls.certificates]]\ncert = "{other.cert}"\nkey = "{other.key}"\n'
        f'[[tls.certificates]]\ncert = "{overlapping.cert}"\nkey = "{overlapping.key}"\n'
        "[listen]\nsmtp = []\nsubmission = []\nsubmissions = []\nimap = []\nimaps = []\npop3 = []\npop3s = []\n"
    )
    assert cli.main(["--config", str(config), "check"]) == 0
    out = capsys.readouterr().out
    assert f"\ntls:      {default.cert}\n  tls: mail.example.test, not after " in out
    assert "\n  tls.certificates[0]: mail.other.test, not after " in out
    assert "\n  tls.certificates[1]: mail.other.test, mx.other.test, not after " in out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings[1:] == [  # after the default's "self-signed" one
        "warning: tls.certificates[1]: name mail.other.test ignored: tls.certificates[0] serves it"
    ]
    assert out.endswith("\nOK, with 2 warning(s)\n")
