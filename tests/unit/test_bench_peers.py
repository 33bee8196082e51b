"""bench/peers.py's check for the programs a peer needs: one line that names the Debian package to
install, or nothing when everything is there."""

from __future__ import annotations

import shutil

import peers
import pytest


def without(*missing: str) -> object:
    real_which = shutil.which

    def which(name: str) -> str | None:
        return None if name.rpartition("/")[2] in missing else real_which(name)

    return which


@pytest.mark.parametrize(
    ("program", "package"),
    [("dnsmasq", "dnsmasq-base"), ("smtp-sink", "postfix"), ("smtp-source", "postfix"), ("ip", "iproute2")],
)
def test_a_missing_program_is_named_with_its_package(
    monkeypatch: pytest.MonkeyPatch, program: str, package: str
) -> None:
    monkeypatch.setattr(shutil, "which", without(program))
    assert peers.missing_program("sh", program, "cat") == (
        f"{program}: not installed; install it with: apt-get install {package}"
    )


def test_nothing_is_said_when_every_program_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert peers.missing_program("dnsmasq", "ip", "postfix") is None


def test_the_first_missing_program_is_the_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", without("postfix", "dnsmasq"))
    assert peers.missing_program("ip", "dnsmasq", "postfix") == (
        "dnsmasq: not installed; install it with: apt-get install dnsmasq-base"
    )
