"""The admin console's logout revocations: remembered until the session would expire, bounded."""

from __future__ import annotations

import pytest

from surat.web import admin
from surat.web.admin import Revocations
from surat.web.sessions import Session


def session(nonce: str, expires: int) -> Session:
    return Session(account_id=1, expires=expires, nonce=nonce, fingerprint="f")


def test_a_revoked_session_stays_revoked_until_it_expires() -> None:
    now = [1000.0]
    revocations = Revocations(clock=lambda: now[0])
    ended = session("a", 2000)
    revocations.revoke(ended)
    assert revocations.revoked(ended) and not revocations.revoked(session("b", 2000))
    now[0] = 2500.0  # past its expiry: the signer refuses it anyway, so it is forgotten at the next revoke
    revocations.revoke(session("c", 3000))
    assert not revocations.revoked(ended) and revocations.revoked(session("c", 3000))


def test_revocations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "MAX_REVOKED", 3)
    revocations = Revocations(clock=lambda: 0.0)
    for number, expires in enumerate([50, 10, 30, 40]):
        revocations.revoke(session(str(number), expires))
    # the one expiring first made room
    assert [revocations.revoked(session(str(n), 0)) for n in range(4)] == [True, False, True, True]
