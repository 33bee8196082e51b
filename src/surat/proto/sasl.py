"""Server-side SASL mechanisms as sans-IO step machines: PLAIN, LOGIN, SCRAM-SHA-256.

Shared by the SMTP (RFC 4954), IMAP (RFC 9051 §6.2.2) and POP3 (RFC 5034) shells. A shell:

    mech = server_mechanism(name)              # None: unknown mechanism
    step = mech.start(initial)                 # initial response, None if the client sent none
    loop:
        Challenge(data)    -> send encode_challenge(data) as a continuation; read a line;
                              data = decode_client_response(line) (None: the client cancelled with
                              "*"; SASLSyntaxError: bad base64); step = mech.respond(data)
        VerifyPassword(..) -> ok = verify_password(...) in an executor (unknown user: False, after a
                              dummy verification of the same cost); step = mech.password_result(ok)
        NeedScram(..)      -> creds = stored ScramCredentials or None; step = mech.scram_credentials(creds)
        Success(..)        -> authenticated as `authcid`. If `final_data` is not None, SMTP, IMAP and
                              POP3 cannot carry it with the success reply: send it as one more
                              challenge, and succeed only if the client answers with an empty line.
        Failure(reason)    -> reply with the protocol's failure; `reason` is for logs only.

Base64 belongs to the shells (helpers below); everything here works on decoded bytes. Nothing here
does I/O or touches the store; ScramCredentials arrive through the `ScramKeys` Protocol.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

__all__ = [
    "MECHANISMS",
    "SCRAM_ITERATIONS",
    "SCRAM_MIN_ITERATIONS",
    "Challenge",
    "Failure",
    "LoginMechanism",
    "Mechanism",
    "NeedScram",
    "PlainMechanism",
    "SASLStateError",
    "SASLSyntaxError",
    "ScramKeys",
    "ScramSha256Mechanism",
    "Step",
    "Success",
    "VerifyPassword",
    "decode_client_response",
    "encode_challenge",
    "same_identity",
    "scram_sha256_keys",
    "server_mechanism",
]

# RFC 4616 §2 asks servers to accept at least 255 octets per field; password managers produce longer
# passwords, so allow more, but bound everything a client can make us hold.
MAX_FIELD_OCTETS = 1024
MAX_RESPONSE_OCTETS = 4096

# RFC 7677 §4 asks for at least 4096. The server never runs PBKDF2 at login (only the client does,
# at each login), but whoever steals the stored keys can test guesses at the cost of one PBKDF2 run,
# so the stored keys are only as strong as this count. OWASP's Password Storage Cheat Sheet asks for
# 600 000 PBKDF2-HMAC-SHA256 iterations; clients cap the count, though: Cyrus SASL (used by mbsync,
# and by many other clients) refuses counts above 65536 ("iteration-count is too big", its
# plugins/scram.c MAX_ITERATION_COUNT 0x10000). The default is that cap, the highest count every
# client we know of accepts (6.5x the old 10 000, ~35 ms per derivation here); `[auth] scram_iterations`
# raises it where no Cyrus SASL client logs in. Changing it is safe: each account keeps the count it
# was derived with until its next password login re-derives it (surat.passwords.authenticate).
SCRAM_ITERATIONS = 65_536
SCRAM_MIN_ITERATIONS = 4096  # RFC 7677 §4, RFC 5802 §5.1
SCRAM_SALT_BYTES = 16

# ---------------------------------------------------------------------------------------- errors


class SASLSyntaxError(ValueError):
    """A client response that is not valid base64."""


class SASLStateError(RuntimeError):
    """A mechanism method called out of order: a bug in the shell, not in the client."""


# ---------------------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `data` to the client (base64, via `encode_challenge`) and feed its answer to `respond`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class VerifyPassword:
    """Check the password, then call `password_result(ok)`."""

    authcid: str
    authzid: str  # "" when the client asked for none; otherwise the same identity as authcid
    password: str = field(repr=False)  # never in logs or tracebacks


@dataclass(frozen=True, slots=True)
class NeedScram:
    """Look up the SCRAM-SHA-256 keys of `authcid`, then call `scram_credentials(keys or None)`."""

    authcid: str
    authzid: str


@dataclass(frozen=True, slots=True)
class Success:
    authcid: str
    authzid: str
    final_data: bytes | None = None  # additional data with success (SCRAM's "v=...")


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str  # for logs only; never tells the client whether the user exists
    # RFC 5802 §7 server-error ("e=...") for shells that send it as a last challenge; they may ignore it.
    final_data: bytes | None = None


Step = Challenge | VerifyPassword | NeedScram | Success | Failure


class ScramKeys(Protocol):
    """What SCRAM needs from the store; `surat.store.base.ScramCredentials` satisfies it."""

    @property
    def salt(self) -> bytes: ...
    @property
    def iterations(self) -> int: ...
    @property
    def stored_key(self) -> bytes: ...
    @property
    def server_key(self) -> bytes: ...


# ---------------------------------------------------------------------------------------- helpers


def decode_client_response(text: bytes) -> bytes | None:
    """Decode one base64 client response line (without CRLF).

    Returns None for "*" (the client cancels: RFC 4954 §4, RFC 9051 §6.2.2, RFC 5034 §4), b"" for an
    empty line or "=" (RFC 4954 §4: a zero-length initial response). Raises SASLSyntaxError otherwise
    when `text` is not strict base64.
    """
    text = text.strip(b" \t")
    if text == b"*":
        return None
    if text in (b"", b"="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SASLSyntaxError("client response is not valid base64") from exc


def encode_challenge(data: bytes) -> bytes:
    """Base64 for a continuation line; an empty challenge stays empty ("334 ", "+ ")."""
    return base64.b64encode(data)


def same_identity(a: str, b: str) -> bool:
    """Whether two addresses name the same user: local parts exact, domains case-insensitive."""
    local_a, at_a, domain_a = a.rpartition("@")
    local_b, at_b, domain_b = b.rpartition("@")
    if not at_a or not at_b:
        return a == b
    return local_a == local_b and domain_a.lower() == domain_b.lower()


def _check_authzid(authcid: str, authzid: str) -> str | None:
    """A failure reason when the client asks to act as someone else; we support no proxy auth."""
    if authzid and not same_identity(authcid, authzid):
        return "authorization identity differs from authentication identity"
    return None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scram_sha256_keys(normalized_password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """RFC 5802 §3: (StoredKey, ServerKey) for a password already normalized with SASLprep."""
    salted = hashlib.pbkdf2_hmac("sha256", normalized_password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return hashlib.sha256(client_key).digest(), server_key


# ---------------------------------------------------------------------------------------- mechanisms


class Mechanism(ABC):
    """One authentication exchange. Not reusable: create a new one per AUTHENTICATE/AUTH."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._done = False

    @property
    def done(self) -> bool:
        """True once a Success or Failure was returned."""
        return self._done

    @abstractmethod
    def start(self, initial: bytes | None) -> Step: ...

    @abstractmethod
    def respond(self, data: bytes) -> Step: ...

    def password_result(self, ok: bool) -> Step:
        raise SASLStateError(f"{self.name} did not ask for a password check")

    def scram_credentials(self, credentials: ScramKeys | None) -> Step:
        raise SASLStateError(f"{self.name} did not ask for SCRAM credentials")

    def _finish(self, step: Success | Failure) -> Step:
        self._done = True
        return step

    def _fail(self, reason: str, final_data: bytes | None = None) -> Step:
        return self._finish(Failure(reason, final_data))


class _PasswordMechanism(Mechanism):
    """Shared end of PLAIN and LOGIN: one password check, then Success or Failure."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: VerifyPassword | None = None

    def _verify(self, authcid: str, authzid: str, password: str) -> Step:
        if not authcid:
            return self._fail("empty authentication identity")
        if not password:
            return self._fail("empty password")
        reason = _check_authzid(authcid, authzid)
        if reason:
            return self._fail(reason)
        self._pending = VerifyPassword(authcid, authzid, password)
        return self._pending

    def password_result(self, ok: bool) -> Step:
        pending = self._pending
        if pending is None or self._done:
            raise SASLStateError(f"{self.name} did not ask for a password check")
        self._pending = None
        if not ok:
            return self._fail("invalid credentials")
        return self._finish(Success(pending.authcid, pending.authzid))


class PlainMechanism(_PasswordMechanism):
    """RFC 4616: one message `[authzid] NUL authcid NUL passwd`."""

    name = "PLAIN"

    def __init__(self) -> None:
        super().__init__()
        self._started = False

    def start(self, initial: bytes | None) -> Step:
        if self._started:
            raise SASLStateError("PLAIN already started")
        self._started = True
        if initial is None:
            # RFC 4422 §5: no initial response, so the client answers an empty challenge.
            return Challenge(b"")
        return self._message(initial)

    def respond(self, data: bytes) -> Step:
        if not self._started or self._done or self._pending is not None:
            raise SASLStateError("PLAIN is not waiting for a client response")
        return self._message(data)

    def _message(self, data: bytes) -> Step:
        if len(data) > MAX_RESPONSE_OCTETS:
            return self._fail("PLAIN message too long")
        parts = data.split(b"\x00")
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd; no NUL inside a field.
        if len(parts) != 3:
            return self._fail("PLAIN message does not have exactly three fields")
        if any(len(part) > MAX_FIELD_OCTETS for part in parts):
            return self._fail("PLAIN field too long")
        fields = [_utf8(part) for part in parts]
        authzid, authcid, password = fields
        if authzid is None or authcid is None or password is None:
            return self._fail("PLAIN message is not UTF-8")
        return self._verify(authcid, authzid, password)


class LoginMechanism(_PasswordMechanism):
    """draft-murchison-sasl-login: challenges "Username:" then "Password:"."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if self._started:
            raise SASLStateError("LOGIN already started")
        self._started = True
        if initial is None:
            return Challenge(b"Username:")
        # Some clients (Outlook, "AUTH LOGIN dXNlcg==") send the user name as initial response.
        return self._take_username(initial)

    def respond(self, data: bytes) -> Step:
        if not self._started or self._done or self._pending is not None:
            raise SASLStateError("LOGIN is not waiting for a client response")
        if self._username is None:
            return self._take_username(data)
        if len(data) > MAX_FIELD_OCTETS:
            return self._fail("LOGIN password too long")
        password = _utf8(data)
        if password is None:
            return self._fail("LOGIN password is not UTF-8")
        return self._verify(self._username, "", password)

    def _take_username(self, data: bytes) -> Step:
        if len(data) > MAX_FIELD_OCTETS:
            return self._fail("LOGIN user name too long")
        username = _utf8(data)
        if username is None:
            return self._fail("LOGIN user name is not UTF-8")
        if not username or "\x00" in username:
            return self._fail("LOGIN user name empty or with NUL")
        self._username = username
        return Challenge(b"Password:")


def _random_nonce() -> str:
    # 18 random bytes -> 24 base64 characters: printable and free of "," (RFC 5802 §5.1 "r=").
    return base64.b64encode(secrets.token_bytes(18)).decode("ascii")


# Per-process fallback for fake SCRAM salts; shells should pass a secret that survives restarts.
_PROCESS_SECRET = secrets.token_bytes(32)


class _ScramState(enum.Enum):
    START = "start"
    CLIENT_FIRST = "client-first"  # waiting for the client-first-message
    NEED_KEYS = "need-keys"  # waiting for scram_credentials()
    CLIENT_FINAL = "client-final"  # waiting for the client-final-message
    DONE = "done"


class ScramSha256Mechanism(Mechanism):
    """RFC 5802 + RFC 7677 server, without channel binding (we do not offer SCRAM-SHA-256-PLUS).

    An unknown user gets a challenge built from a fake salt derived from the user name and
    `secret`, stable across attempts, so the challenge does not tell whether the user exists;
    the exchange then fails at the proof like a wrong password.
    """

    name = "SCRAM-SHA-256"

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        nonce: Callable[[], str] | None = None,
        iterations: int = SCRAM_ITERATIONS,
    ) -> None:
        super().__init__()
        self._secret = _PROCESS_SECRET if secret is None else secret
        self._fake_iterations = iterations  # what an unknown user is offered: the count new accounts get
        self._new_nonce = nonce or _random_nonce
        self._state = _ScramState.START
        self._gs2_header = ""
        self._client_first_bare = ""
        self._client_nonce = ""
        self._authcid = ""
        self._authzid = ""
        self._server_first = ""
        self._keys: ScramKeys | None = None

    def start(self, initial: bytes | None) -> Step:
        if self._state != _ScramState.START:
            raise SASLStateError("SCRAM-SHA-256 already started")
        if initial is None:
            self._state = _ScramState.CLIENT_FIRST
            return Challenge(b"")
        return self._client_first(initial)

    def respond(self, data: bytes) -> Step:
        if self._state == _ScramState.CLIENT_FIRST:
            return self._client_first(data)
        if self._state == _ScramState.CLIENT_FINAL:
            return self._client_final(data)
        raise SASLStateError(f"SCRAM-SHA-256 is not waiting for a client response ({self._state.value})")

    def _error(self, reason: str, server_error: str) -> Step:
        self._state = _ScramState.DONE
        return self._fail(reason, b"e=" + server_error.encode("ascii"))

    # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
    def _client_first(self, data: bytes) -> Step:
        if len(data) > MAX_RESPONSE_OCTETS:
            return self._error("client-first-message too long", "other-error")
        text = _utf8(data)
        if text is None or "\x00" in text:
            return self._error("client-first-message is not UTF-8", "invalid-encoding")
        parts = text.split(",", 2)
        if len(parts) != 3:
            return self._error("malformed client-first-message", "other-error")
        cbind_flag, authzid_attr, bare = parts
        if cbind_flag.startswith("p="):
            # We never advertise -PLUS, so a client insisting on channel binding cannot proceed.
            return self._error("client requires channel binding", "channel-binding-not-supported")
        # "y": the client could bind but thinks we cannot, which is true (RFC 5802 §6).
        if cbind_flag not in ("n", "y"):
            return self._error("malformed gs2-cbind-flag", "other-error")
        authzid = ""
        if authzid_attr:
            if not authzid_attr.startswith("a="):
                return self._error("malformed gs2 authzid", "other-error")
            decoded = _decode_saslname(authzid_attr[2:])
            if not decoded:
                return self._error("malformed gs2 authzid", "invalid-encoding")
            authzid = decoded
        attrs = bare.split(",")
        # RFC 5802 §5.1: a "m" attribute must make authentication fail.
        if attrs[0].startswith("m="):
            return self._error("mandatory extension requested", "extensions-not-supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return self._error("malformed client-first-message-bare", "other-error")
        username = _decode_saslname(attrs[0][2:])
        if not username:
            return self._error("malformed user name", "invalid-username-encoding")
        client_nonce = attrs[1][2:]
        if not client_nonce or not _printable(client_nonce):
            return self._error("malformed client nonce", "other-error")
        reason = _check_authzid(username, authzid)
        if reason:
            return self._error(reason, "invalid-proof")
        self._gs2_header = f"{cbind_flag},{authzid_attr},"
        self._client_first_bare = bare
        self._client_nonce = client_nonce
        self._authcid = username
        self._authzid = authzid
        self._state = _ScramState.NEED_KEYS
        return NeedScram(username, authzid)

    def scram_credentials(self, credentials: ScramKeys | None) -> Step:
        if self._state != _ScramState.NEED_KEYS:
            raise SASLStateError("SCRAM-SHA-256 did not ask for credentials")
        if credentials is None:
            salt = hmac.digest(
                self._secret, b"scram-fake-salt\x00" + self._authcid.lower().encode(), "sha256"
            )
            salt = salt[:SCRAM_SALT_BYTES]
            iterations = self._fake_iterations
        else:
            salt, iterations = credentials.salt, credentials.iterations
        self._keys = credentials
        server_nonce = self._new_nonce()
        if not server_nonce or not _printable(server_nonce):
            raise ValueError("SCRAM server nonce must be printable ASCII without ','")
        self._server_first = (
            f"r={self._client_nonce}{server_nonce},s={base64.b64encode(salt).decode('ascii')},i={iterations}"
        )
        self._state = _ScramState.CLIENT_FINAL
        return Challenge(self._server_first.encode("ascii"))

    # RFC 5802 §7: client-final-message = client-final-message-without-proof "," proof
    def _client_final(self, data: bytes) -> Step:
        if len(data) > MAX_RESPONSE_OCTETS:
            return self._error("client-final-message too long", "other-error")
        text = _utf8(data)
        if text is None:
            return self._error("client-final-message is not UTF-8", "invalid-encoding")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            return self._error("client-final-message without proof", "other-error")
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            return self._error("malformed client-final-message", "other-error")
        try:
            cbind_input = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except (binascii.Error, ValueError):
            return self._error("bad base64 in client-final-message", "invalid-encoding")
        # Without channel binding, cbind-input is exactly the gs2 header we received (RFC 5802 §7).
        if cbind_input != self._gs2_header.encode():
            return self._error("channel binding data differs from gs2 header", "channel-bindings-dont-match")
        expected_nonce = "r=" + self._server_first.split(",", 1)[0][2:]
        if not hmac.compare_digest(attrs[1].encode(), expected_nonce.encode()):
            return self._error("nonce mismatch", "other-error")
        if any(attr.startswith("m=") for attr in attrs[2:]):
            return self._error("mandatory extension requested", "extensions-not-supported")
        keys = self._keys
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        # Unknown users go through the same computations with random keys, so the work and the
        # reply look the same as for a wrong password.
        stored_key = keys.stored_key if keys else secrets.token_bytes(32)
        server_key = keys.server_key if keys else secrets.token_bytes(32)
        client_signature = hmac.digest(stored_key, auth_message, "sha256")
        if len(proof) != len(client_signature):
            return self._error("client proof has the wrong length", "invalid-proof")
        client_key = bytes(p ^ s for p, s in zip(proof, client_signature, strict=True))
        valid = hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
        if keys is None:
            return self._error("unknown user", "invalid-proof")
        if not valid:
            return self._error("invalid proof", "invalid-proof")
        server_signature = hmac.digest(server_key, auth_message, "sha256")
        self._state = _ScramState.DONE
        return self._finish(Success(self._authcid, self._authzid, b"v=" + base64.b64encode(server_signature)))


def _printable(text: str) -> bool:
    # RFC 5802 §7: printable = %x21-2B / %x2D-7E (no ",")
    return all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in text)


def _decode_saslname(text: str) -> str | None:
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is an error."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "=":
            escape = text[i : i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                return None
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-256", "PLAIN", "LOGIN")  # advertised, strongest first


def server_mechanism(
    name: str,
    *,
    secret: bytes | None = None,
    nonce: Callable[[], str] | None = None,
    scram_iterations: int = SCRAM_ITERATIONS,
) -> Mechanism | None:
    """A fresh mechanism for `name` (case-insensitive, RFC 4422 §3.1), or None if unsupported.

    `secret` keys the fake salts handed to unknown users in SCRAM; pass one that is stable across
    restarts (otherwise a restart changes those salts, hinting that the user does not exist).
    `nonce` replaces the random SCRAM server nonce (tests). `scram_iterations` is the count offered
    to unknown users, the configured one, so that it does not tell them apart from new accounts.
    """
    upper = name.upper()
    if upper == "PLAIN":
        return PlainMechanism()
    if upper == "LOGIN":
        return LoginMechanism()
    if upper == "SCRAM-SHA-256":
        return ScramSha256Mechanism(secret=secret, nonce=nonce, iterations=scram_iterations)
    return None
