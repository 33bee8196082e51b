"""surat.web.sessions: signed session cookies with server-side expiry, and CSRF tokens."""

from __future__ import annotations

import pytest
from aiohttp import web

from surat.store.base import Credentials
from surat.web.sessions import (
    COOKIE_NAME,
    SESSION_LIFETIME,
    SessionSigner,
    clear_session_cookie,
    credentials_fingerprint,
    set_session_cookie,
)

CREDENTIALS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_verifies_until_it_expires() -> None:
    clock = Clock()
    signer = SessionSigner(SECRET, clock=clock)
    value = signer.issue(7, CREDENTIALS)
    session = signer.verify(value)
    assert session is not None
    assert (session.account_id, session.expires) == (7, int(clock.now) + SESSION_LIFETIME)
    assert session.fingerprint == credentials_fingerprint(CREDENTIALS)
    assert signer.issue(7, CREDENTIALS) != value  # each login its own nonce
    clock.now += SESSION_LIFETIME - 1
    assert signer.verify(value) == session
    clock.now += 1
    assert signer.verify(value) is None


def test_a_password_change_changes_the_fingerprint() -> None:
    assert credentials_fingerprint(CREDENTIALS) != credentials_fingerprint(Credentials("$argon2id$other"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),  # signature
        lambda v: "A" + v[1:],  # payload
        lambda v: v.partition(".")[0],  # no signature
        lambda v: "",
        lambda v: "%%%." + v.partition(".")[2],
        lambda v: v + "x" * 600,
    ],
)
def test_forged_values_are_refused(tamper: object) -> None:
    signer = SessionSigner(SECRET)
    value = signer.issue(7, CREDENTIALS)
    assert callable(tamper)
    assert signer.verify(tamper(value)) is None
    assert SessionSigner(b"another secret").verify(value) is None


def test_csrf_token_is_per_session() -> None:
    signer = SessionSigner(SECRET)
    first = signer.verify(signer.issue(7, CREDENTIALS))
    second = signer.verify(signer.issue(7, CREDENTIALS))
    assert first is not None and second is not None
    token = signer.csrf_token(first)
    assert signer.csrf_ok(first, token)
    assert not signer.csrf_ok(second, token)
    assert not signer.csrf_ok(first, "")
    assert not signer.csrf_ok(first, "é")


def test_cookie_attributes() -> None:
    response = web.Response()
    set_session_cookie(response, "value")
    header = response.cookies[COOKIE_NAME].output(header="")
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/", f"Max-Age={SESSION_LIFETIME}"):
        assert attribute in header, header
    cleared = web.Response()
    clear_session_cookie(cleared)
    assert "Max-Age=0" in cleared.cookies[COOKIE_NAME].output(header="")
