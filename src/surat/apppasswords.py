"""App passwords (issue 13): named, revocable secrets an account's mail clients log in with, so that
a phone or a sync job never holds the account password, and losing one device means revoking one
name, not changing the password everywhere.

Where they count:
- IMAP LOGIN and AUTHENTICATE PLAIN, POP3 USER/PASS and AUTH PLAIN, SMTP AUTH PLAIN/LOGIN (every
  mechanism that hands the server the password itself): `authenticate_mail`, below;
- never the web login (surat.web.login checks the account password only): an app password that leaks
  from a device cannot change the password or make more app passwords;
- not SCRAM-SHA-256: the server's first message carries the salt and iteration count of one stored
  credential before the client has proved anything (RFC 5802 §5, §3), so the server must pick the
  credential from the user name alone; an app password would need its own user name. Clients that
  are given an app password use PLAIN over TLS (RFC 8314), as the autoconfiguration tells them.

How they are stored: the password is made by the server (`generate_password`, 20 characters of a
55-symbol alphabet, about 115 bits), and only its SHA-256 digest is kept. Argon2 (what account
passwords get) is there to slow the guessing of a secret a person chose; a random secret of 112 bits
or more needs no key stretching (NIST SP 800-63B §5.1.2.2, look-up secrets), so an unsalted fast hash
is enough. It also makes the check one indexed lookup instead of one Argon2 verification per app
password (at most MAX_APP_PASSWORDS of them): a failed login costs what it cost before, one Argon2
verification of the account password.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from surat.log import fields
from surat.passwords import authenticate, generate_password
from surat.store.base import MAX_APP_PASSWORD_NAME, Account, AppPassword, Store

log = logging.getLogger(__name__)

# Separates these digests from any other SHA-256 of the same text.
_DIGEST_LABEL = b"surat app password v1\x00"


class AppPasswordNameError(ValueError):
    """A name that is empty, too long or holds control characters (the message says which)."""


def digest(password: str) -> str:
    return hashlib.sha256(_DIGEST_LABEL + password.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """The name to store: `name` without surrounding white space; AppPasswordNameError if unusable."""
    name = name.strip()
    if not name:
        raise AppPasswordNameError("the name is empty")
    if len(name) > MAX_APP_PASSWORD_NAME:
        raise AppPasswordNameError(f"the name is longer than {MAX_APP_PASSWORD_NAME} characters")
    if not name.isprintable():
        raise AppPasswordNameError("the name holds control characters")
    return name


async def create(store: Store, account: Account, name: str) -> tuple[AppPassword, str]:
    """A new app password named `name` for `account`, and its secret: shown to the user once, kept
    nowhere. AppPasswordNameError, or the store's AlreadyExists / LimitReached / NotFound."""
    name = check_name(name)
    password = generate_password()
    created = await store.add_app_password(account.id, name, digest(password))
    log.info("app_password.created", extra=fields(user=account.address, name=name))
    return created, password


async def revoke(store: Store, account: Account, name: str) -> None:
    """NotFound if there is none of that name."""
    await store.delete_app_password(account.id, name)
    log.info("app_password.revoked", extra=fields(user=account.address, name=name))


async def authenticate_mail(
    store: Store, address: str, password: str, *, scram_iterations: int
) -> Account | None:
    """The password check of IMAP, POP3 and SMTP AUTH: an app password of `address`, else the
    account password (surat.passwords.authenticate, with its Argon2 cost and its timing for unknown
    addresses). The app password is looked up first: it is one indexed lookup, and a client using one
    then pays no Argon2 verification."""
    found = await store.find_app_password(address, digest(password))
    if found is not None:
        account, app_password = found
        await store.app_password_used(app_password.id, datetime.now(UTC))
        log.info("auth.app_password", extra=fields(user=account.address, name=app_password.name))
        return account
    return await authenticate(store, address, password, scram_iterations=scram_iterations)
