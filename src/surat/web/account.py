"""The account pages on the https listener (issue 13): a user logs in with the mail address and the
account password, sees the quota usage, changes the password, makes and revokes app passwords, and
downloads the Apple configuration profile. Nothing of the admin console is here (surat.web.admin is
only on the admin listener).

- Login: surat.web.login.check_login, the IMAP password with the mail protocols' per-address failure
  blocking. Never an app password: those are for mail clients (surat.apppasswords), and one that
  leaks from a device must not be able to change the password or make more app passwords.
- Sessions: signed cookies (surat.web.sessions). A session is valid while its signature and expiry
  are and the account's password hash is the one it was issued for, so changing the password (here
  or with `surat user passwd`) ends every session of the account; this browser gets a new one.
- Every state-changing request is a POST carrying the session's CSRF token in a hidden field
  (sessions.CSRF_FIELD). The login form has no session yet: it and every other POST must not come
  from another site's page (`_check_origin`: Fetch Metadata, else Origin).
- Every value shown goes through jinja2's autoescaping (surat.web.templating).
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from surat import apppasswords
from surat.log import fields
from surat.passwords import MIN_PASSWORD_LENGTH, SASLprepError, set_password
from surat.store.base import MAX_APP_PASSWORDS, Account, AlreadyExists, LimitReached, NotFound
from surat.web.context import WebContext, context_of
from surat.web.hosts import client_config_host, request_host
from surat.web.login import LoginRefusal, LoginRefused, check_login
from surat.web.profile import CONTENT_TYPE as PROFILE_TYPE
from surat.web.profile import NoMailListener, apple_profile
from surat.web.sessions import (
    COOKIE_NAME,
    CSRF_FIELD,
    Session,
    SessionSigner,
    clear_session_cookie,
    credentials_fingerprint,
    set_session_cookie,
)
from surat.web.templating import STATIC_DIR, render

log = logging.getLogger(__name__)

PAGE = "/account"
# Longest values read from a form (the whole body is at most security.MAX_BODY): an address is at most
# 254 octets (RFC 5321 §4.5.3.1.3), a password here at most MAX_PASSWORD characters, so that nobody
# makes the server hash megabytes.
MAX_ADDRESS = 254
MAX_PASSWORD = 1024


class _FormRefused(Exception):
    """A form the page shows again with this message (and the HTTP status)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _signer(context: WebContext) -> SessionSigner:
    assert context.sessions is not None, "the web server makes the session signer at start"
    return context.sessions


async def _require_host(request: web.Request) -> WebContext:
    """The context, if the request names the server or a local domain's mail host; else 404, as
    every endpoint of the https listener does for other hosts."""
    context = context_of(request)
    if await client_config_host(context.store, request_host(request), context.config.hostname) is None:
        raise web.HTTPNotFound()
    return context


def _check_origin(request: web.Request) -> None:
    """Refuse a form another site's page made the browser send. Browsers say where a request comes
    from in `Sec-Fetch-Site` (W3C Fetch Metadata Request Headers §2.4: same-origin, same-site,
    cross-site, or none for one the user typed); older ones only in `Origin` (RFC 6454 §7), which is
    "null" under our `Referrer-Policy: no-referrer` and so says nothing then. Without either (not a
    browser, or a very old one) the request passes: the CSRF token still guards every form but the
    login."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise web.HTTPForbidden(text="cross-origin form refused\n")
        return
    origin = request.headers.get("Origin")
    if origin not in (None, "null", f"https://{request.host}"):
        raise web.HTTPForbidden(text="cross-origin form refused\n")


async def _session(request: web.Request, context: WebContext) -> tuple[Account, Session] | None:
    value = request.cookies.get(COOKIE_NAME)
    if not value:
        return None
    session = _signer(context).verify(value)
    if session is None:
        return None
    account = await context.store.get_account_by_id(session.account_id)
    found = await context.store.get_credentials(account.address) if account is not None else None
    if found is None:
        return None
    # A changed password hash ends the session (sessions.py: the fingerprint).
    if not hmac.compare_digest(credentials_fingerprint(found[1]), session.fingerprint):
        return None
    return found[0], session


async def _posted(request: web.Request, context: WebContext) -> tuple[Account, Session, dict[str, str]]:
    """The account, session and form fields of a state-changing POST: 403 without a session or with
    a wrong CSRF token."""
    _check_origin(request)
    current = await _session(request, context)
    if current is None:
        raise web.HTTPForbidden(text="not logged in (or the session ended): log in again\n")
    account, session = current
    form = {name: value for name, value in (await request.post()).items() if isinstance(value, str)}
    if not _signer(context).csrf_ok(session, form.get(CSRF_FIELD, "")):
        raise web.HTTPForbidden(text="the form is outdated or not from this site: reload the page\n")
    return account, session, form


async def _page(
    context: WebContext,
    account: Account,
    session: Session,
    *,
    status: int = 200,
    message: str = "",
    error: str = "",
    new_app_password: tuple[str, str] | None = None,
) -> web.Response:
    usage = await context.store.account_usage(account.id)
    return render(
        "account.html",
        status=status,
        hostname=context.config.hostname,
        account=account,
        usage=_size(usage),
        quota=_size(account.quota_bytes) if account.quota_bytes is not None else None,
        percent=round(100 * usage / account.quota_bytes) if account.quota_bytes else None,
        app_passwords=await context.store.list_app_passwords(account.id),
        max_app_passwords=MAX_APP_PASSWORDS,
        new_app_password=new_app_password,
        csrf_field=CSRF_FIELD,
        csrf=_signer(context).csrf_token(session),
        min_password=MIN_PASSWORD_LENGTH,
        message=message,
        error=error,
    )


def _login_page(
    context: WebContext, *, status: int = 200, error: str = "", address: str = ""
) -> web.Response:
    return render(
        "account_login.html", status=status, hostname=context.config.hostname, error=error, address=address
    )


# ----------------------------------------------------------------------------------------- handlers


async def overview(request: web.Request) -> web.Response:
    context = await _require_host(request)
    current = await _session(request, context)
    if current is None:
        response = _login_page(context)
        if COOKIE_NAME in request.cookies:
            clear_session_cookie(response)  # expired, forged or ended by a password change
        return response
    return await _page(context, *current)


async def login(request: web.Request) -> web.Response:
    context = await _require_host(request)
    _check_origin(request)
    form = await request.post()
    address, password = form.get("address", ""), form.get("password", "")
    if not isinstance(address, str) or not isinstance(password, str):
        raise web.HTTPBadRequest(text="address and password are text fields\n")
    address = address.strip()
    if not address or not password or len(address) > MAX_ADDRESS or len(password) > MAX_PASSWORD:
        return _login_page(
            context, status=400, error="Enter your mail address and password.", address=address[:MAX_ADDRESS]
        )
    ip = request.remote or ""
    try:
        account = await check_login(context, ip, address, password)
    except LoginRefused as exc:
        status = 429 if exc.refusal is LoginRefusal.BLOCKED else 401
        return _login_page(context, status=status, error=exc.refusal.value, address=address)
    found = await context.store.get_credentials(account.address)
    if found is None:  # deleted in between
        return _login_page(context, status=401, error=LoginRefusal.FAILED.value, address=address)
    log.info("web.login", extra=fields(ip=ip, user=account.address))
    response = _see_other()
    set_session_cookie(response, _signer(context).issue(account.id, found[1]))
    return response


async def logout(request: web.Request) -> web.Response:
    context = await _require_host(request)
    await _posted(request, context)
    response = _see_other()
    clear_session_cookie(response)
    return response


async def change_password(request: web.Request) -> web.Response:
    context = await _require_host(request)
    account, session, form = await _posted(request, context)
    old, new, again = form.get("old", ""), form.get("new", ""), form.get("again", "")
    try:
        if max(len(old), len(new), len(again)) > MAX_PASSWORD:
            raise _FormRefused(f"Passwords are at most {MAX_PASSWORD} characters here.")
        if new != again:
            raise _FormRefused("The two new passwords differ.")
        try:
            # The current password, checked as a login is (failures count towards the block): a
            # session left open on a shared computer must not be enough to take the account.
            await check_login(context, request.remote or "", account.address, old)
        except LoginRefused as exc:
            raise _FormRefused(
                "The current password is wrong." if exc.refusal is LoginRefusal.FAILED else exc.refusal.value,
                429 if exc.refusal is LoginRefusal.BLOCKED else 403,
            ) from None
        try:
            await set_password(
                context.store, account.address, new, scram_iterations=context.config.auth.scram_iterations
            )
        except SASLprepError as exc:
            raise _FormRefused(f"The new password cannot be used: {exc}.") from None
    except _FormRefused as exc:
        return await _page(context, account, session, status=exc.status, error=str(exc))
    found = await context.store.get_credentials(account.address)
    assert found is not None
    # Every other session ended with the old hash; this browser goes on with a new one.
    value = _signer(context).issue(account.id, found[1])
    fresh = _signer(context).verify(value)
    assert fresh is not None
    response = await _page(
        context, account, fresh, message="Password changed. Other browsers have been logged out."
    )
    set_session_cookie(response, value)
    return response


async def add_app_password(request: web.Request) -> web.Response:
    context = await _require_host(request)
    account, session, form = await _posted(request, context)
    name = form.get("name", "")
    try:
        created, password = await apppasswords.create(context.store, account, name)
    except apppasswords.AppPasswordNameError as exc:
        return await _page(context, account, session, status=400, error=f"App password name: {exc}.")
    except AlreadyExists:
        return await _page(
            context,
            account,
            session,
            status=409,
            error=f"You have an app password named {name.strip()} already.",
        )
    except LimitReached:
        return await _page(
            context,
            account,
            session,
            status=409,
            error=f"At most {MAX_APP_PASSWORDS} app passwords; revoke one first.",
        )
    return await _page(context, account, session, new_app_password=(created.name, password))


async def revoke_app_password(request: web.Request) -> web.Response:
    context = await _require_host(request)
    account, session, form = await _posted(request, context)
    try:
        await apppasswords.revoke(context.store, account, form.get("name", ""))
    except NotFound:
        return await _page(context, account, session, status=404, error="No app password of that name.")
    return _see_other()


async def profile(request: web.Request) -> web.Response:
    context = await _require_host(request)
    current = await _session(request, context)
    if current is None:
        raise web.HTTPSeeOther(PAGE)
    account, _ = current
    try:
        body = apple_profile(account.address, context.config.hostname, context.client_ports)
    except NoMailListener:
        raise web.HTTPNotFound(text="no IMAP or submission listener to describe\n") from None
    response = web.Response(body=body)
    response.headers["Content-Type"] = PROFILE_TYPE
    response.headers["Content-Disposition"] = 'attachment; filename="mail.mobileconfig"'
    return response


async def favicon(request: web.Request) -> web.Response:
    # Browsers ask for it on every site; "nothing" is an answer, a 404 would be an error in their console.
    await _require_host(request)
    return web.Response(status=204)


async def stylesheet(request: web.Request) -> web.FileResponse:
    await _require_host(request)
    return web.FileResponse(STATIC_DIR / "surat.css")


def routes() -> list[web.RouteDef]:
    return [
        web.get(PAGE, overview),
        web.get(f"{PAGE}/surat.css", stylesheet),
        web.get("/favicon.ico", favicon),
        web.post(f"{PAGE}/login", login),
        web.post(f"{PAGE}/logout", logout),
        web.post(f"{PAGE}/password", change_password),
        web.post(f"{PAGE}/app-passwords", add_app_password),
        web.post(f"{PAGE}/app-passwords/revoke", revoke_app_password),
        web.get("/profile.mobileconfig", profile),
    ]


def _see_other() -> web.Response:
    # 303: after a POST, the browser GETs the page (a reload does not post the form again).
    return web.Response(status=303, headers={"Location": PAGE})


def _size(size: int) -> str:
    """A size for people: 512 B, 1.5 KiB, 20.0 MiB..."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
