"""ACME's state under data_dir/acme/, in files so that whichever worker process receives the CA's
HTTP-01 request can answer it, and every worker reloads the same certificate (docs/acme.md).

- `cert.pem` / `key.pem`: the served default certificate (config.py points [tls] at them); a
  self-signed placeholder until the first issuance, so the TLS listeners can start at all.
- `account.key`: the ACME account key (RFC 8555 §7.3), 0600.
- `challenges/TOKEN`: the key authorization of each pending HTTP-01 challenge (RFC 8555 §8.3).
- `status.json`: the renewal state (last success/failure, consecutive failures, next attempt), read
  by `surat check` and /metrics.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from surat import certs
from surat.config import ACME_CERT, ACME_DIR, ACME_KEY

# RFC 8555 §8.1/§8.3: a token is base64url (RFC 4648 §5) without padding, at least 128 bits of entropy.
TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# Bounds what a request to /.well-known/acme-challenge/ may make us look up: CAs send 43 characters
# (256 bits); anything longer than this is not a token we wrote.
MAX_TOKEN_LENGTH = 128
# A key authorization is token "." base64url(SHA-256 thumbprint) (RFC 8555 §8.1): under 200 octets.
MAX_KEY_AUTHORIZATION = 512
# Everything under data_dir/acme/ is the server user's alone, as the rest of data_dir (`surat check`
# warns about anything others may read there); the certificate too, though it is public.
FILE_MODE = 0o600

# RFC 5280 §5.3.1 reason codes an ACME client may give when revoking (RFC 8555 §7.6).
REVOCATION_REASONS = {"unspecified": 0, "keyCompromise": 1, "superseded": 4, "cessationOfOperation": 5}


def valid_token(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_LENGTH and all(c in TOKEN_ALPHABET for c in token)


@dataclass(frozen=True, slots=True)
class RenewalStatus:
    """What the last attempts came to; times are POSIX seconds."""

    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_attempt: float | None = None
    revoked_serial: int | None = None  # `surat acme revoke`: this certificate is to be replaced


class AcmeFiles:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / ACME_DIR
        self.cert = self.directory / ACME_CERT
        self.key = self.directory / ACME_KEY
        self.account_key = self.directory / "account.key"
        self.challenges = self.directory / "challenges"
        self.status_file = self.directory / "status.json"
        self._lock_file = self.directory / ".lock"

    def prepare(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.challenges.mkdir(mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while the certificate and key are written: workers starting at once must not each
        write half a placeholder pair (a key from one, a certificate from another)."""
        self.prepare()
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def ensure_placeholder(self, hostnames: Sequence[str]) -> bool:
        """A self-signed certificate for `hostnames` unless a certificate is there; whether one was
        written. The renewal sees it is self-signed and orders a real one at once."""
        with self.locked():
            if self.cert.exists() and self.key.exists():
                return False
            certs.write_self_signed_certificate(self.directory, hostnames, overwrite=True)
            self.cert.chmod(FILE_MODE)
            return True

    def install(self, fullchain_pem: bytes, key_pem: bytes) -> None:
        """The new certificate and key, each replaced in one rename. The key goes first: a worker
        reloading between the two renames sees the new key with the old certificate, which the TLS
        reload refuses as a mismatch (keeping what it serves); the reload asked for after this
        call sees both."""
        with self.locked():
            certs.replace_file(self.key, key_pem, secret=True)
            certs.replace_file(self.cert, fullchain_pem, secret=True)

    # RFC 8555 §8.3: the CA GETs http://NAME/.well-known/acme-challenge/TOKEN and expects the key
    # authorization as the body.
    def put_challenge(self, token: str, key_authorization: str) -> None:
        if not valid_token(token):
            raise ValueError(f"not an ACME token: {token!r}")
        self.prepare()
        certs.replace_file(self.challenges / token, key_authorization.encode("ascii"), secret=True)

    def challenge(self, token: str) -> bytes | None:
        """The key authorization for `token`, or None: unknown, or not token-shaped (then no file
        name is built from it at all)."""
        if not valid_token(token):
            return None
        try:
            with open(self.challenges / token, "rb") as file:
                return file.read(MAX_KEY_AUTHORIZATION)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove_challenge(self, token: str) -> None:
        if valid_token(token):
            (self.challenges / token).unlink(missing_ok=True)

    def read_status(self) -> RenewalStatus:
        try:
            data = json.loads(self.status_file.read_text("utf-8"))
            return RenewalStatus(**data)
        except (OSError, ValueError, TypeError):
            return RenewalStatus()

    def write_status(self, status: RenewalStatus) -> None:
        self.prepare()
        certs.replace_file(self.status_file, json.dumps(asdict(status)).encode("utf-8"), secret=True)


def status_lines(files: AcmeFiles, directory: str) -> tuple[list[str], list[str]]:
    """For `surat check`: lines describing the renewal state, and warnings (a failing renewal)."""
    status = files.read_status()

    def when(timestamp: float | None) -> str:
        return (
            "never" if timestamp is None else f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M} UTC"
        )

    lines = [
        f"acme:     {directory}",
        f"  acme: last issued {when(status.last_success)}, next check {when(status.next_attempt)}",
    ]
    warnings = []
    if status.consecutive_failures:
        warnings.append(
            f"warning: acme: {status.consecutive_failures} order(s) failed in a row, the last at "
            f"{when(status.last_failure)}: {status.last_error}; the current certificate stays served, "
            f"next attempt {when(status.next_attempt)}"
        )
    return lines, warnings
