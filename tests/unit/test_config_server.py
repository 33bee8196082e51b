"""[server] workers: default 1, a whole number from 1 to 64, a typo hint for a misspelt key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from surat.config import MAX_WORKERS, ConfigError, ServerConfig, parse_config


def server(tmp_path: Path, **values: Any) -> ServerConfig:
    return parse_config({"hostname": "mail.example.com", "server": values}, tmp_path).server


def test_one_worker_by_default(tmp_path: Path) -> None:
    assert parse_config({"hostname": "mail.example.com"}, tmp_path).server == ServerConfig(workers=1)
    assert server(tmp_path).workers == 1


@pytest.mark.parametrize("workers", [1, 2, MAX_WORKERS])
def test_workers_in_range(tmp_path: Path, workers: int) -> None:
    assert server(tmp_path, workers=workers).workers == workers


@pytest.mark.parametrize(
    ("values", "key", "problem"),
    [
        ({"workers": 0}, "server.workers", "must be at least 1, got 0"),
        ({"workers": -3}, "server.workers", "must be at least 1, got -3"),
        ({"workers": 65}, "server.workers", "expected a whole number from 1 to 64, got 65"),
        ({"workers": 2.5}, "server.workers", "expected a whole number from 1 to 64, got 2.5"),
        ({"workers": "2"}, "server.workers", "expected a number, got '2'"),
        ({"workers": True}, "server.workers", "expected a number, got True"),
        ({"worker": 2}, "server.worker", "unknown setting (did you mean workers?)"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, values: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        server(tmp_path, **values)
    assert (caught.value.key, caught.value.problem) == (key, problem)


def test_a_misspelt_table_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"hostname": "mail.example.com", "sever": {"workers": 2}}, tmp_path)
    assert caught.value.key == "sever"
    assert "did you mean server?" in caught.value.problem
