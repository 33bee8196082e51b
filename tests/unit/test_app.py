"""Start-up problems become one StartupError line naming the setting, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from surat.app import StartupError, SuratServer
from surat.config import parse_config


def test_a_nameserver_must_be_an_address(tmp_path: Path) -> None:
    config = parse_config(
        {"hostname": "mail.example.test", "dns": {"nameservers": ["ns.example.test:53"]}}, tmp_path
    )
    with pytest.raises(StartupError, match=r"^dns\.nameservers: "):
        SuratServer(config)


def test_configured_nameservers_need_no_system_resolver(tmp_path: Path) -> None:
    config = parse_config(
        {"hostname": "mail.example.test", "dns": {"nameservers": ["127.0.0.1:5353"]}}, tmp_path
    )
    assert SuratServer(config).resolver is not None
