"""The admin listener (loopback by default): the admin console and /metrics (issue 13).

No route here is ever added to the https application: the admin listener is the only way in.

Every page needs a session of an account with the admin flag (surat.web.sessions, checked at every
request against the account as stored: flag and password fingerprint). Every change is a POST
carrying the session's CSRF token, calls the same operation as the `surat` command
(surat.admin_ops), logs one `admin.change` line and redirects (POST/redirect/GET), except where a
generated password is shown: that page is the POST's answer itself, so the password is never kept
anywhere to be shown by a later GET.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from surat import admin_ops, metrics
from surat.admin_ops import InvalidInput, OperationError
from surat.config import MAIL_ROLES
from surat.log import fields
from surat.passwords import SASLprepError, generate_password, make_credentials
from surat.store.base import Account, Credentials, Store
from surat.web.context import context_of
from surat.web.login import LoginRefusal, LoginRefused, check_login
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

# A form field longer than this is refused before any work (addresses are at most 254 octets,
# passwords and queue ids far shorter); the whole body is bounded by security.MAX_BODY already.
MAX_FIELD = 1024
# Logged-out sessions remembered by this process, at most (each is forgotten when it would have
# expired anyway, so only more than this many logouts within SESSION_LIFETIME could reach it).
MAX_REVOKED = 10_000

# What aiohttp's request.post() returns: text fields (bytes or files only in multipart bodies).
FormData = MultiDictProxy[str | bytes | bytearray | FileField]


class Revocations:
    """Sessions ended by logging out, until they expire. A session is a signed cookie that any
    worker accepts, so logging out must also make this process refuse it if the cookie is replayed
    (the browser deletes it). This is per process: with `workers = N` another worker would still
    accept a replayed cookie until its expiry (at most SESSION_LIFETIME); the browser's copy is gone
    either way, and changing the password ends it everywhere."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._until: dict[str, int] = {}  # session nonce -> its expiry
        self._clock = clock

    def revoke(self, session: Session) -> None:
        now = self._clock()
        for nonce in [nonce for nonce, expires in self._until.items() if expires <= now]:
            del self._until[nonce]
        if len(self._until) >= MAX_REVOKED:  # bounded: drop the one that expires first
            del self._until[min(self._until, key=self._until.__getitem__)]
        self._until[session.nonce] = session.expires

    def revoked(self, session: Session) -> bool:
        return session.nonce in self._until


class AdminState:
    """What the admin application keeps: the session signer (keyed from the store's installation
    secret, so every worker and node signs alike) and this process's revocations."""

    def __init__(self) -> None:
        self._signer: SessionSigner | None = None
        self.revocations = Revocations()

    async def signer(self, store: Store) -> SessionSigner:
        if self._signer is None:
            self._signer = SessionSigner(await store.keys.installation_secret())
        return self._signer


ADMIN_STATE = web.AppKey("admin_state", AdminState)


@dataclass(frozen=True, slots=True)
class Visitor:
    """A logged-in administrator."""

    session: Session
    account: Account
    csrf: str


Page = Callable[[web.Request, Visitor], Awaitable[web.StreamResponse]]
# An action returns the notice to show after the redirect, or a whole page (a password shown once).
Action = Callable[[web.Request, Visitor, FormData], Awaitable[str | web.Response]]


def _to_login() -> web.HTTPSeeOther:
    response = web.HTTPSeeOther("/login")
    clear_session_cookie(response)
    return response


async def _visitor(request: web.Request) -> Visitor:
    """The administrator this request comes from; a redirect to the login page otherwise."""
    context = context_of(request)
    state = request.app[ADMIN_STATE]
    signer = await state.signer(context.store)
    cookie = request.cookies.get(COOKIE_NAME)
    session = signer.verify(cookie) if cookie else None
    if session is None or state.revocations.revoked(session):
        raise _to_login()
    account = await context.store.get_account_by_id(session.account_id)
    found = await context.store.get_credentials(account.address) if account is not None else None
    # The flag and the password as stored now: an account deleted, demoted or whose password changed
    # since the login has no session any more.
    if (
        account is None
        or not account.is_admin
        or found is None
        or credentials_fingerprint(found[1]) != session.fingerprint
    ):
        raise _to_login()
    return Visitor(session, account, signer.csrf_token(session))


def _page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        return await handler(request, await _visitor(request))

    return guarded


def _action(back: str, act: Action) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST handler: session and CSRF token checked before anything is read or done, then `act`,
    then a redirect to `back` with the notice (or the refusal) to show there."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        visitor = await _visitor(request)
        form = await request.post()
        token = form.get(CSRF_FIELD)
        signer = await request.app[ADMIN_STATE].signer(context_of(request).store)
        if not isinstance(token, str) or not signer.csrf_ok(visitor.session, token):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again\n")
        try:
            outcome = await act(request, visitor, form)
        except OperationError as exc:
            raise web.HTTPSeeOther(f"{back}?{urlencode({'error': exc.message})}") from None
        if isinstance(outcome, web.Response):
            return outcome
        raise web.HTTPSeeOther(f"{back}?{urlencode({'notice': outcome})}")

    return guarded


def _field(form: FormData, name: str, *, required: bool = True) -> str:
    value = form.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise InvalidInput(f"{name}: not a short text field")
    value = value.strip()
    if required and not value:
        raise InvalidInput(f"{name}: required")
    return value


def _changed(visitor: Visitor, what: str, **details: object) -> None:
    admin_ops.log_change(visitor.account.address, what, **details)


def _page_response(
    request: web.Request, visitor: Visitor | None, template: str, status: int = 200, **values: Any
) -> web.Response:
    context = context_of(request)
    return render(
        template,
        status=status,
        hostname=context.config.hostname,
        admin=visitor.account.address if visitor else None,
        csrf=visitor.csrf if visitor else "",
        csrf_field=CSRF_FIELD,
        notice=request.query.get("notice", ""),
        error=request.query.get("error", ""),
        **values,
    )


def _format_time(moment: datetime | float) -> str:
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ----------------------------------------------------------------------------------------- login


async def login_page(request: web.Request) -> web.Response:
    return _page_response(request, None, "admin_login.html", address="", refusal="")


async def login(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    form = await request.post()
    address = form.get("address", "")
    password = form.get("password", "")
    if not isinstance(address, str) or not isinstance(password, str) or len(address) > MAX_FIELD:
        raise web.HTTPBadRequest(text="address and password expected\n")
    try:
        # Password checked off the event loop, failures counted and delayed as for IMAP (web.login).
        account = await check_login(context, request.remote or "", address, password, admin=True)
    except LoginRefused as refused:
        status = 429 if refused.refusal is LoginRefusal.BLOCKED else 403
        return _page_response(
            request, None, "admin_login.html", status=status, address=address, refusal=refused.refusal.value
        )
    found = await context.store.get_credentials(account.address)
    if found is None:  # deleted between the check and now
        raise _to_login()
    signer = await request.app[ADMIN_STATE].signer(context.store)
    response = web.HTTPSeeOther("/")
    set_session_cookie(response, signer.issue(account.id, found[1]))
    log.info("admin.login", extra=fields(who=account.address, ip=request.remote))
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    return await _action("/login", _logout)(request)


async def _logout(request: web.Request, visitor: Visitor, form: FormData) -> web.Response:
    request.app[ADMIN_STATE].revocations.revoke(visitor.session)
    response = web.HTTPSeeOther("/login")
    clear_session_cookie(response)
    raise response


# ----------------------------------------------------------------------------------------- dashboard


@dataclass(frozen=True, slots=True)
class Count:
    label: str
    value: int


async def dashboard(request: web.Request, visitor: Visitor) -> web.Response:
    context = context_of(request)
    # Counters since the server started, added up over every worker of this machine (metrics'
    # multiprocess files, as /metrics serves them); queue and blocks are read from the store, which
    # every worker and node shares.
    samples = metrics.sample_values(metrics.counted_registry())

    def total(name: str, **labels: str) -> int:
        return round(
            sum(
                value
                for (sample, sample_labels), value in samples.items()
                if sample == name and labels.items() <= dict(sample_labels).items()
            )
        )

    traffic = [
        Count(
            "messages received on port 25", total("surat_smtp_transactions_total", role="smtp", reply="2xx")
        ),
        Count(
            "messages submitted by users",
            total("surat_smtp_transactions_total", role="submission", reply="2xx")
            + total("surat_smtp_transactions_total", role="submissions", reply="2xx"),
        ),
        Count(
            "recipients delivered to local mailboxes",
            total("surat_deliveries_total", kind="local", result="delivered"),
        ),
        Count(
            "recipients sent to other servers",
            total("surat_deliveries_total", kind="relay", result="delivered"),
        ),
        Count("recipients bounced (failed)", total("surat_deliveries_total", result="failed")),
        Count("delivery status notifications sent", total("surat_dsns_sent_total")),
    ]
    # Every mail listener configured, 0 until its first connection (the gauge has no sample before).
    connections = [
        Count(role, total("surat_connections_active", listener=role))
        for role in MAIL_ROLES
        if getattr(context.config.listen, role)
    ]
    summary = await context.store.queue_summary()
    blocked = await admin_ops.blocked_clients(context.store, context.config.limits)
    return _page_response(
        request,
        visitor,
        "admin_dashboard.html",
        traffic=traffic,
        connections=connections,
        queue_entries=summary.entries,
        queue_oldest=_format_time(summary.oldest) if summary.oldest else None,
        blocked=len(blocked),
    )


# ----------------------------------------------------------------------------------------- domains


async def domains_page(request: web.Request, visitor: Visitor) -> web.Response:
    store = context_of(request).store
    domains = sorted(await store.list_domains())
    return _page_response(request, visitor, "admin_domains.html", domains=domains)


async def domain_page(request: web.Request, visitor: Visitor) -> web.Response:
    context = context_of(request)
    try:
        domain = admin_ops.normalize_domain(request.match_info["domain"])
    except InvalidInput:
        raise web.HTTPNotFound(text="no such local domain\n") from None
    if not await context.store.is_local_domain(domain):
        raise web.HTTPNotFound(text="no such local domain\n")
    keys = await admin_ops.load_dkim_keys(context.store, domain)
    ports = dict(context.client_ports)
    if context.https_port is not None:
        ports["https"] = context.https_port
    records = admin_ops.dns_records(domain, context.config.hostname, ports, keys, context.config)
    return _page_response(request, visitor, "admin_domain.html", domain=domain, keys=keys, records=records)


async def _add_domain(request: web.Request, visitor: Visitor, form: FormData) -> str:
    domain = admin_ops.normalize_domain(_field(form, "domain"))
    keys = await admin_ops.add_domain(context_of(request).store, domain)
    _changed(visitor, "domain.add", domain=domain)
    return f"added domain {domain} with DKIM selectors {', '.join(key.selector for key in keys)}"


async def _delete_domain(request: web.Request, visitor: Visitor, form: FormData) -> str:
    domain = admin_ops.normalize_domain(_field(form, "domain"))
    kept = await admin_ops.delete_domain(context_of(request).store, domain)
    _changed(visitor, "domain.delete", domain=domain)
    return f"deleted domain {domain}" + (f"; its DKIM keys stay in {kept}" if kept else "")


# ----------------------------------------------------------------------------------------- accounts


@dataclass(frozen=True, slots=True)
class AccountRow:
    address: str
    quota: str
    used: int
    is_admin: bool


async def accounts_page(request: web.Request, visitor: Visitor) -> web.Response:
    store = context_of(request).store
    rows = [
        AccountRow(
            account.address,
            admin_ops.format_size(account.quota_bytes),
            await store.account_usage(account.id),
            account.is_admin,
        )
        for account in sorted(await store.list_accounts(), key=lambda a: a.address)
    ]
    return _page_response(request, visitor, "admin_accounts.html", accounts=rows)


async def _new_credentials(request: web.Request) -> tuple[str, Credentials]:
    """A generated password and its credentials; the hashing (Argon2, PBKDF2) runs off the loop."""
    password = generate_password()
    iterations = context_of(request).config.auth.scram_iterations
    try:
        credentials = await asyncio.to_thread(make_credentials, password, scram_iterations=iterations)
    except SASLprepError as exc:  # cannot happen with generated passwords; refused cleanly anyway
        raise OperationError(str(exc)) from None
    return password, credentials


def _quota(text: str) -> int | None:
    return None if text.lower() in ("", "none", "unlimited") else admin_ops.parse_size(text)


async def _add_account(request: web.Request, visitor: Visitor, form: FormData) -> web.Response:
    store = context_of(request).store
    address = admin_ops.normalize_address(_field(form, "address"))
    quota = _quota(_field(form, "quota", required=False))
    await admin_ops.check_new_account(store, address)  # before spending the hashing time
    password, credentials = await _new_credentials(request)
    await admin_ops.add_account(store, address, credentials, quota)
    _changed(visitor, "account.add", address=address)
    return _page_response(
        request, visitor, "admin_password.html", address=address, password=password, added=True
    )


async def _reset_password(request: web.Request, visitor: Visitor, form: FormData) -> web.Response:
    store = context_of(request).store
    address = admin_ops.normalize_address(_field(form, "address"))
    await admin_ops.existing_account(store, address)
    password, credentials = await _new_credentials(request)
    await admin_ops.set_password(store, address, credentials)
    _changed(visitor, "account.password", address=address)
    return _page_response(
        request, visitor, "admin_password.html", address=address, password=password, added=False
    )


async def _set_quota(request: web.Request, visitor: Visitor, form: FormData) -> str:
    address = admin_ops.normalize_address(_field(form, "address"))
    quota = _quota(_field(form, "quota", required=False))
    await admin_ops.set_quota(context_of(request).store, address, quota)
    _changed(visitor, "account.quota", address=address, quota=quota)
    return f"quota of {address}: {admin_ops.format_size(quota)}"


async def _set_admin(request: web.Request, visitor: Visitor, form: FormData) -> str:
    address = admin_ops.normalize_address(_field(form, "address"))
    state = _field(form, "admin")
    if state not in ("on", "off"):
        raise InvalidInput("admin: on or off")
    await admin_ops.set_admin(context_of(request).store, address, state == "on")
    _changed(visitor, "account.admin", address=address, admin=state)
    return f"{address} is {'now' if state == 'on' else 'no longer'} an administrator"


async def _delete_account(request: web.Request, visitor: Visitor, form: FormData) -> str:
    address = admin_ops.normalize_address(_field(form, "address"))
    dangling = await admin_ops.delete_account(context_of(request).store, address)
    _changed(visitor, "account.delete", address=address)
    note = f"; aliases still point to it: {', '.join(dangling)}" if dangling else ""
    return f"deleted account {address} and its mail{note}"


# ----------------------------------------------------------------------------------------- aliases


async def aliases_page(request: web.Request, visitor: Visitor) -> web.Response:
    aliases = sorted(await context_of(request).store.list_aliases(), key=lambda a: (a.source, a.target))
    return _page_response(request, visitor, "admin_aliases.html", aliases=aliases)


async def _add_alias(request: web.Request, visitor: Visitor, form: FormData) -> str:
    source = admin_ops.normalize_alias_source(_field(form, "source"))
    target = admin_ops.normalize_address(_field(form, "target"), "alias target")
    await admin_ops.add_alias(context_of(request).store, source, target)
    _changed(visitor, "alias.add", source=source, target=target)
    return f"added alias {source} -> {target}"


async def _remove_alias(request: web.Request, visitor: Visitor, form: FormData) -> str:
    source = admin_ops.normalize_alias_source(_field(form, "source"))
    target_text = _field(form, "target", required=False)
    target = admin_ops.normalize_address(target_text, "alias target") if target_text else None
    await admin_ops.delete_alias(context_of(request).store, source, target)
    _changed(visitor, "alias.delete", source=source, target=target or "*")
    return f"deleted alias {source}" + (f" -> {target}" if target else "")


# ----------------------------------------------------------------------------------------- queue


async def queue_page(request: web.Request, visitor: Visitor) -> web.Response:
    entries = await context_of(request).store.list_queue()
    return _page_response(request, visitor, "admin_queue.html", entries=entries, when=_format_time)


async def queue_entry_page(request: web.Request, visitor: Visitor) -> web.Response:
    try:
        entry = await admin_ops.queue_entry(context_of(request).store, request.match_info["id"])
    except OperationError:
        raise web.HTTPNotFound(text="no such queued message\n") from None
    return _page_response(request, visitor, "admin_queue_entry.html", entry=entry, when=_format_time)


async def _retry(request: web.Request, visitor: Visitor, form: FormData) -> str:
    queue_id = _field(form, "id")
    await admin_ops.retry_queue_entry(context_of(request).store, queue_id, datetime.now(UTC))
    _changed(visitor, "queue.retry", id=queue_id)
    return f"{queue_id} due now"


async def _drop(request: web.Request, visitor: Visitor, form: FormData) -> str:
    queue_id = _field(form, "id")
    await admin_ops.drop_queue_entry(context_of(request).store, queue_id)
    _changed(visitor, "queue.drop", id=queue_id)
    return f"dropped {queue_id} (no bounce sent)"


async def _flush(request: web.Request, visitor: Visitor, form: FormData) -> str:
    count = await admin_ops.flush_queue(context_of(request).store, datetime.now(UTC))
    _changed(visitor, "queue.flush", count=count)
    return f"{count} message(s) due now"


# ----------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True, slots=True)
class BlockRow:
    key: str
    ip: str
    until: str
    strikes: int


async def blocks_page(request: web.Request, visitor: Visitor) -> web.Response:
    context = context_of(request)
    rows = [
        BlockRow(state.key, state.ip, _format_time(state.blocked_until), state.strikes)
        for state in await admin_ops.blocked_clients(context.store, context.config.limits)
    ]
    return _page_response(request, visitor, "admin_blocks.html", blocks=rows)


async def _lift(request: web.Request, visitor: Visitor, form: FormData) -> str:
    context = context_of(request)
    key = await admin_ops.lift_block(context.store, context.config.limits, _field(form, "ip"))
    _changed(visitor, "block.lift", key=key)
    return f"lifted the block of {key}"


# ----------------------------------------------------------------------------------------- routes


async def no_favicon(request: web.Request) -> web.Response:
    # Browsers ask for /favicon.ico on their own; an empty answer rather than a 404 in their console.
    return web.Response(status=204)


async def metrics_text(request: web.Request) -> web.Response:
    context = context_of(request)
    acme_data_dir = context.config.data_dir if context.config.acme is not None else None
    body = await metrics.render(context.store, acme_data_dir)
    response = web.Response(body=body)
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


ACTIONS: dict[str, tuple[str, Action]] = {
    "/domains/add": ("/domains", _add_domain),
    "/domains/delete": ("/domains", _delete_domain),
    "/accounts/add": ("/accounts", _add_account),
    "/accounts/password": ("/accounts", _reset_password),
    "/accounts/quota": ("/accounts", _set_quota),
    "/accounts/admin": ("/accounts", _set_admin),
    "/accounts/delete": ("/accounts", _delete_account),
    "/aliases/add": ("/aliases", _add_alias),
    "/aliases/remove": ("/aliases", _remove_alias),
    "/queue/retry": ("/queue", _retry),
    "/queue/drop": ("/queue", _drop),
    "/queue/flush": ("/queue", _flush),
    "/blocks/lift": ("/blocks", _lift),
}


def setup(app: web.Application) -> None:
    """The admin console's routes and state on the admin listener's application."""
    app[ADMIN_STATE] = AdminState()
    app.add_routes(
        [
            web.get("/login", login_page),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/", _page(dashboard)),
            web.get("/domains", _page(domains_page)),
            web.get("/domains/{domain}", _page(domain_page)),
            web.get("/accounts", _page(accounts_page)),
            web.get("/aliases", _page(aliases_page)),
            web.get("/queue", _page(queue_page)),
            web.get("/queue/{id}", _page(queue_entry_page)),
            web.get("/blocks", _page(blocks_page)),
            *(web.post(path, _action(back, act)) for path, (back, act) in ACTIONS.items()),
            web.get("/metrics", metrics_text),
            web.get("/favicon.ico", no_favicon),
            web.static("/static", STATIC_DIR),
        ]
    )
