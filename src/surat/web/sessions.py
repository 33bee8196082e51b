"""Login sessions and CSRF tokens for the web pages (issue 13), ready for the admin console and the
account pages.

A session is a signed cookie, not a row: every worker and node verifies it with the installation's
secret (server.secret, shared as the store is), so nothing has to be kept in one process's memory
(ARCHITECTURE decision 10). What it holds:

    account id . expiry (epoch seconds) . nonce . credentials fingerprint . HMAC-SHA256 of those

- expiry is checked by the server at every request (the cookie's Max-Age only tells the browser);
- the fingerprint is taken from the account's password hash: changing the password ends every
  session of the account (the page layer compares it with the stored credentials);
- the nonce makes each login's session distinct and is what the CSRF token is derived from.
A session cannot be revoked before its expiry other than by a password change; hence the short
SESSION_LIFETIME. Logging out deletes the cookie.

CSRF: every state-changing form carries `csrf_token(session)` in a hidden field, checked with
`csrf_ok` (constant-time) before acting; the cookie's SameSite=Strict is the second line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from surat.store.base import Credentials

COOKIE_NAME = "surat_session"
SESSION_LIFETIME = 8 * 3600  # seconds from login; a working day
CSRF_FIELD = "csrf"
_KEY_LABEL = b"surat web session v1"  # the session key is derived from, never equal to, server.secret


@dataclass(frozen=True, slots=True)
class Session:
    account_id: int
    expires: int
    nonce: str
    fingerprint: str


def credentials_fingerprint(credentials: Credentials) -> str:
    return hashlib.sha256(credentials.password_hash.encode()).hexdigest()[:16]


class SessionSigner:
    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
        self._clock = clock

    def issue(self, account_id: int, credentials: Credentials) -> str:
        """The cookie value of a new session."""
        expires = int(self._clock()) + SESSION_LIFETIME
        payload = f"{account_id}.{expires}.{secrets.token_hex(16)}.{credentials_fingerprint(credentials)}"
        return f"{_b64(payload.encode())}.{self._sign(payload)}"

    def verify(self, value: str) -> Session | None:
        """The session of a cookie value; None if it is forged, malformed or expired."""
        if len(value) > 512:  # ours are about 150 octets; never hash or split more
            return None
        encoded, _, signature = value.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        account_id, expires, nonce, fingerprint = payload.split(".")  # ours: always four parts
        session = Session(int(account_id), int(expires), nonce, fingerprint)
        return session if session.expires > self._clock() else None

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf." + session.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).hexdigest()


def set_session_cookie(response: web.StreamResponse, value: str) -> None:
    # HttpOnly: no script reads it; Secure: only over TLS (browsers count http://127.0.0.1 and
    # http://localhost as secure, so the loopback admin listener works); SameSite=Strict: no other
    # site's page can make the browser send it.
    response.set_cookie(
        COOKIE_NAME, value, max_age=SESSION_LIFETIME, path="/", secure=True, httponly=True, samesite="Strict"
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="Strict")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
