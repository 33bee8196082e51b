"""Password hashing (argon2id) and SCRAM-SHA-256 stored keys, from one SASLprep'd password.

`verify_password` costs ~30 ms of CPU on purpose: callers run it in an executor, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import stringprep
import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import Argon2Error

from surat.log import fields
from surat.proto.sasl import SCRAM_ITERATIONS, SCRAM_SALT_BYTES, scram_sha256_keys
from surat.store.base import Account, Credentials, InvalidName, ScramCredentials, Store, StoreError

log = logging.getLogger(__name__)

__all__ = [
    "ARGON2_MEMORY_KIB",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "MIN_PASSWORD_LENGTH",
    "SASLprepError",
    "generate_password",
    "make_credentials",
    "needs_rehash",
    "saslprep",
    "set_password",
    "verify_nonexistent",
    "verify_password",
]

# argon2id (RFC 9106) with OWASP's recommended memory (19 MiB), one pass more than its minimum:
# ~30 ms per verification on a 2-core VM, inside our 20-60 ms budget. One lane, because a mail
# server verifies many logins at once and parallel lanes would only contend for the same cores;
# 19 MiB per concurrent verification keeps a burst of logins from exhausting memory.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1

_HASHER = PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_KIB,
    parallelism=ARGON2_PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)

# Unambiguous when read aloud or copied by hand: no 0/O/o, 1/l/I/i; letters and digits only so the
# password survives shells, config files and URL encoding untouched. 55 symbols ** 20 ≈ 2**115.
_PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105
_PASSWORD_LENGTH = 20
# The shortest account password `surat user passwd` and the account pages accept.
MIN_PASSWORD_LENGTH = 8


class SASLprepError(ValueError):
    """A string that SASLprep (RFC 4013) prohibits."""


# RFC 4013 §2.3: the prohibited output tables of RFC 3454.
_PROHIBITED = (
    (stringprep.in_table_c12, "non-ASCII space"),
    (stringprep.in_table_c21, "ASCII control character"),
    (stringprep.in_table_c22, "non-ASCII control character"),
    (stringprep.in_table_c3, "private use character"),
    (stringprep.in_table_c4, "non-character code point"),
    (stringprep.in_table_c5, "surrogate code point"),
    (stringprep.in_table_c6, "character inappropriate for plain text"),
    (stringprep.in_table_c7, "character inappropriate for canonical representation"),
    (stringprep.in_table_c8, "change display property or deprecated character"),
    (stringprep.in_table_c9, "tagging character"),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """RFC 4013 SASLprep. `allow_unassigned=False` is the "stored strings" profile (RFC 3454 §7).

    Raises SASLprepError naming the problem. stringprep is pinned to Unicode 3.2, so normalization
    uses the same version (RFC 3454 §4).
    """
    # RFC 4013 §2.1: non-ASCII spaces map to SPACE, "commonly mapped to nothing" characters vanish.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # RFC 4013 §2.2: Unicode normalization form KC.
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in normalized:
        for in_table, what in _PROHIBITED:
            if in_table(ch):
                raise SASLprepError(f"prohibited {what} U+{ord(ch):04X}")
        # RFC 4013 §2.5: unassigned code points are prohibited in stored strings.
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SASLprepError(f"unassigned code point U+{ord(ch):04X}")
    # RFC 4013 §2.4 / RFC 3454 §6: bidirectional text rules.
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            raise SASLprepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SASLprepError("right-to-left text must start and end with a right-to-left character")
    return normalized


def _prepare(password: str) -> str:
    try:
        prepared = saslprep(password)
    except SASLprepError as exc:
        raise SASLprepError(f"password not allowed by SASLprep (RFC 4013): {exc}") from None
    if not prepared:
        raise SASLprepError("password is empty")
    return prepared


def make_credentials(password: str, *, scram_iterations: int = SCRAM_ITERATIONS) -> Credentials:
    """argon2id hash + SCRAM-SHA-256 keys (RFC 5802 §3, RFC 7677) of the SASLprep'd password.

    CPU-bound (argon2 and `scram_iterations` PBKDF2 rounds): from the event loop, run it in an executor.
    Raises SASLprepError (a ValueError) for an empty password or one SASLprep prohibits.
    """
    prepared = _prepare(password)
    salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    stored_key, server_key = scram_sha256_keys(prepared.encode("utf-8"), salt, scram_iterations)
    return Credentials(
        password_hash=_HASHER.hash(prepared),
        scram_sha256=ScramCredentials(
            salt=salt, iterations=scram_iterations, stored_key=stored_key, server_key=server_key
        ),
    )


def verify_password(credentials: Credentials, password: str) -> bool:
    """Whether `password` matches; False (never an exception) for a corrupt or foreign hash."""
    try:
        # Query semantics (RFC 3454 §7): an unassigned code point cannot match a stored password.
        prepared = saslprep(password, allow_unassigned=True)
        return _HASHER.verify(credentials.password_hash, prepared)
    except (Argon2Error, ValueError, TypeError):
        return False


_dummy_hash: str | None = None


def verify_nonexistent(password: str) -> bool:
    """Spend the time of one verification and return False: for users that do not exist.

    Without it, a wrong password for an existing user would answer ~30 ms later than any password
    for a missing one, telling an attacker which addresses exist.
    """
    global _dummy_hash  # noqa: PLW0603 - computed once, on first use, to keep imports cheap
    if _dummy_hash is None:
        _dummy_hash = _HASHER.hash(secrets.token_urlsafe(16))
    verify_password(Credentials(password_hash=_dummy_hash), password)
    return False


def needs_rehash(credentials: Credentials, *, scram_iterations: int = SCRAM_ITERATIONS) -> bool:
    """True when the stored values are weaker than what make_credentials makes today.

    After a successful password login the caller may store make_credentials(password) instead.
    """
    scram = credentials.scram_sha256
    if scram is None or scram.iterations < scram_iterations:
        return True
    try:
        return _HASHER.check_needs_rehash(credentials.password_hash)
    except (Argon2Error, ValueError):
        return True


def generate_password() -> str:
    """A random password of 20 unambiguous letters and digits (~115 bits), for quickstart."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_PASSWORD_LENGTH))


async def authenticate(
    store: Store, address: str, password: str, *, scram_iterations: int = SCRAM_ITERATIONS
) -> Account | None:
    """The account if `password` is its password, else None: the one password check of SMTP, IMAP
    and POP3. The hash check runs in an executor (it is CPU-bound by design), and an unknown or
    malformed address costs the same as a wrong password, so timing does not tell which accounts exist.

    After a success, credentials weaker than today's (fewer SCRAM iterations than `scram_iterations`,
    older argon2 parameters) are derived again from the password, known only now, in the executor too.
    """
    loop = asyncio.get_running_loop()
    try:
        found = await store.get_credentials(address)
    except InvalidName:
        found = None
    if found is None:
        await loop.run_in_executor(None, verify_nonexistent, password)
        return None
    account, credentials = found
    ok = await loop.run_in_executor(None, verify_password, credentials, password)
    if not ok:
        return None
    if needs_rehash(credentials, scram_iterations=scram_iterations):
        await _rederive(store, account, password, scram_iterations)
    return account


async def _rederive(store: Store, account: Account, password: str, scram_iterations: int) -> None:
    """Store credentials made with today's parameters; a failure is logged, the login still succeeds."""
    loop = asyncio.get_running_loop()
    try:
        fresh = await loop.run_in_executor(
            None, functools.partial(make_credentials, password, scram_iterations=scram_iterations)
        )
        await store.set_credentials(account.address, fresh)
    except (StoreError, ValueError):
        log.exception("auth.rederive_failed", extra=fields(user=account.address))
        return
    log.info("auth.rederived", extra=fields(user=account.address, scram_iterations=scram_iterations))


async def set_password(
    store: Store, address: str, password: str, *, scram_iterations: int = SCRAM_ITERATIONS
) -> None:
    """Give `address` the password `password`: a new Argon2 hash and SCRAM-SHA-256 keys with a new
    salt (RFC 5802 §3), derived in an executor. The one code path of `surat user passwd` and the
    account pages. The password hash changes, so every web session of the account ends
    (surat.web.sessions). SASLprepError (a ValueError) for a password that is too short or not
    allowed; NotFound for a missing account."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise SASLprepError(f"the password is too short (at least {MIN_PASSWORD_LENGTH} characters)")
    loop = asyncio.get_running_loop()
    credentials = await loop.run_in_executor(
        None, functools.partial(make_credentials, password, scram_iterations=scram_iterations)
    )
    await store.set_credentials(address, credentials)
    log.info("auth.password_changed", extra=fields(user=address))
