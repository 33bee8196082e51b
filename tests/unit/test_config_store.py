"""[store]: the backend, its dsn and the password file; one ConfigError naming the key for each mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from surat.config import ConfigError, StoreConfig, parse_config

DSN = "postgresql://surat@db.example.com:5432/surat"


def store(tmp_path: Path, **values: Any) -> StoreConfig:
    return parse_config({"hostname": "mail.example.com", "store": values}, tmp_path).store


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    assert parse_config({"hostname": "mail.example.com"}, tmp_path).store == StoreConfig("sqlite")
    assert store(tmp_path, backend="sqlite").describe() == "sqlite"


def test_postgresql_with_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "db.pw").write_text("s3cret\n")
    config = store(tmp_path, backend="postgresql", dsn=DSN, dsn_password_file="db.pw")
    assert (config.backend, config.dsn, config.dsn_password) == ("postgresql", DSN, "s3cret")
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(parse_config({"hostname": "m.example", "store": {
        "backend": "postgresql", "dsn": DSN, "dsn_password_file": "db.pw"}}, tmp_path))  # fmt: skip


@pytest.mark.parametrize(
    ("dsn", "described"),
    [
        (DSN, "postgresql user=surat dbname=surat host=db.example.com port=5432"),
        ("postgresql://surat:hunter22@db/surat", "postgresql user=surat dbname=surat host=db"),
        (
            "postgresql://surat@/surat?host=/run/postgresql",
            "postgresql user=surat dbname=surat host=/run/postgresql",
        ),
        ("host=db password=hunter22 dbname=surat", "postgresql dbname=surat host=db"),
    ],
)
def test_describe_never_shows_a_password(tmp_path: Path, dsn: str, described: str) -> None:
    assert store(tmp_path, backend="postgresql", dsn=dsn).describe() == described


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown backend",
        {"backend": "mysql"},
        "store.backend",
        "unknown backend 'mysql'; one of sqlite, postgresql",
    ),
    ("misspelt backend", {"backend": "postgres"}, "store.backend", "(did you mean postgresql?)"),
    (
        "postgresql without dsn",
        {"backend": "postgresql"},
        "store.dsn",
        'missing: backend = "postgresql" needs',
    ),
    ("dsn with sqlite", {"dsn": DSN}, "store.dsn", 'only for backend = "postgresql"'),
    ("password file with sqlite", {"dsn_password_file": "x"}, "store.dsn_password_file", "only for"),
    (
        "not a dsn",
        {"backend": "postgresql", "dsn": "db.example.com"},
        "store.dsn",
        "not a libpq connection string",
    ),
    (
        "two passwords",
        {"backend": "postgresql", "dsn": "postgresql://u:p@h/d", "dsn_password_file": "db.pw"},
        "store.dsn_password_file",
        "the dsn holds a password already",
    ),
    (
        "unreadable password file",
        {"backend": "postgresql", "dsn": DSN, "dsn_password_file": "missing.pw"},
        "store.dsn_password_file",
        "cannot read",
    ),
    (
        "misspelt key",
        {"backend": "postgresql", "dns": DSN},
        "store.dns",
        "unknown setting (did you mean dsn?)",
    ),
    ("backend not a string", {"backend": 1}, "store.backend", "expected a non-empty string"),
]


@pytest.mark.parametrize(("values", "key", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_store_config_names_the_key(
    tmp_path: Path, values: dict[str, Any], key: str, problem: str
) -> None:
    (tmp_path / "db.pw").write_text("pw\n")
    with pytest.raises(ConfigError) as info:
        store(tmp_path, **values)
    assert info.value.key == key
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


def test_a_bad_dsn_error_does_not_repeat_the_dsn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        store(tmp_path, backend="postgresql", dsn="password=hunter22 nonsense")
    assert "hunter22" not in str(info.value)


def test_an_empty_password_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "db.pw").write_text("\n")
    with pytest.raises(ConfigError, match=r"store.dsn_password_file: .* is empty"):
        store(tmp_path, backend="postgresql", dsn=DSN, dsn_password_file="db.pw")
