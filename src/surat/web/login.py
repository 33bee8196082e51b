"""The password check of the web logins (admin console, account pages; issue 13): the same
passwords as IMAP, through the same checks (surat.passwords.authenticate: Argon2 off the event loop)
and the same per-address failure blocking (surat.authlimit), so a guesser cannot switch to the web
to get around a block, nor the other way round."""

from __future__ import annotations

import asyncio
import logging
from enum import Enum

from surat import metrics
from surat.log import fields
from surat.passwords import authenticate
from surat.store.base import Account
from surat.web.context import WebContext

log = logging.getLogger(__name__)

SERVICE = "web"  # the service name in auth.failed lines and the metrics' protocol label


class LoginRefusal(Enum):
    BLOCKED = "too many failed logins from your address, try later"
    FAILED = "wrong address or password"
    NOT_ADMIN = "this account may not use the admin console"


class LoginRefused(Exception):
    def __init__(self, refusal: LoginRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


async def check_login(
    context: WebContext, ip: str, address: str, password: str, *, admin: bool = False
) -> Account:
    """The account `address` if `password` is its password (and, with `admin`, it is an admin);
    LoginRefused otherwise. A blocked address is refused without checking the password."""
    if await context.auth_limiter.retry_after(ip) > 0:
        metrics.auth_attempt(SERVICE, "blocked")
        raise LoginRefused(LoginRefusal.BLOCKED)
    account = await authenticate(
        context.store, address, password, scram_iterations=context.config.auth.scram_iterations
    )
    if account is None:
        metrics.auth_attempt(SERVICE, "failed")
        await context.auth_limiter.failure(ip, address, SERVICE)
        # As the mail protocols do: slow down guessing (RFC 4954 §4 leaves the delay to the server).
        await asyncio.sleep(context.config.limits.auth_failure_delay)
        raise LoginRefused(LoginRefusal.FAILED)
    if admin and not account.is_admin:
        # The right password of an ordinary account: refused, but no guess, so not counted.
        log.info("web.admin_refused", extra=fields(ip=ip, user=account.address))
        metrics.auth_attempt(SERVICE, "not_admin")
        raise LoginRefused(LoginRefusal.NOT_ADMIN)
    metrics.auth_attempt(SERVICE, "ok")
    return account
