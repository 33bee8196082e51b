"""The admin console (issue 13) over real HTTP on the admin listener: login, sessions, CSRF, escaping,
and each form's effect in the store."""

from __future__ import annotations

import html
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_plus, urlencode

import pytest
from conftest import DOMAIN, PASSWORD, ROLES, USER, RunningServer, make_config
from test_relay import submit
from test_web import Answer, request

from surat import admin_ops
from surat.authlimit import BlockPolicy, StoreAuthLimiter
from surat.config import Config
from surat.passwords import authenticate, make_credentials
from surat.store.base import RecipientState, RecipientUpdate
from surat.web.sessions import COOKIE_NAME

ADMIN = "root@example.test"
ADMIN_PASSWORD = "admin password 1"
HOST = "127.0.0.1"


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    return make_config(
        tmp_path,
        listen={"admin": ["127.0.0.1:0"]},
        limits={"auth_max_failures": 3, "auth_failure_delay": 0.01},
    )


@pytest.fixture
def admin_server(server: RunningServer) -> RunningServer:
    server.add_user(ADMIN, ADMIN_PASSWORD)
    server.call(server.store.set_admin(ADMIN, True))
    return server


class Browser:
    """A cookie-keeping client of the admin listener, reading the CSRF token from the pages."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.cookie = ""
        self.csrf = ""

    def get(self, path: str) -> Answer:
        answer = request(self.server, "admin", "GET", path, HOST, headers=self._headers())
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', answer.text)
        if token:
            self.csrf = token.group(1)
        return answer

    def post(self, path: str, fields: dict[str, str], *, csrf: bool = True) -> Answer:
        body = urlencode({**fields, **({"csrf": self.csrf} if csrf else {})}).encode()
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded"}
        answer = request(self.server, "admin", "POST", path, HOST, body, headers)
        cookie = answer.headers.get("Set-Cookie", "")
        if cookie.startswith(COOKIE_NAME + "="):
            self.cookie = cookie.split(";", 1)[0].split("=", 1)[1].strip('"')
        return answer

    def login(self, address: str = ADMIN, password: str = ADMIN_PASSWORD) -> Answer:
        return self.post("/login", {"address": address, "password": password}, csrf=False)

    def act(self, path: str, fields: dict[str, str]) -> str:
        """POST a form of a page; the notice (or error) shown after the redirect."""
        answer = self.post(path, fields)
        assert answer.status == 303, answer
        location = answer.headers["Location"]
        kind, _, text = location.partition("?")[2].partition("=")
        return f"{kind}: {unquote_plus(text)}"

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.cookie}"} if self.cookie else {}


@pytest.fixture
def browser(admin_server: RunningServer) -> Iterator[Browser]:
    client = Browser(admin_server)
    answer = client.login()
    assert answer.status == 303 and answer.headers["Location"] == "/", answer
    assert client.get("/").status == 200
    yield client


PAGES = ["/", "/domains", f"/domains/{DOMAIN}", "/accounts", "/aliases", "/queue", "/queue/x", "/blocks"]


def test_pages_and_actions_need_an_admin_session(admin_server: RunningServer) -> None:
    for path in PAGES:
        answer = request(admin_server, "admin", "GET", path, HOST)
        assert (answer.status, answer.headers["Location"]) == (303, "/login"), path
    forged = {"Cookie": f"{COOKIE_NAME}=eyJ4Ijo.deadbeef"}
    assert request(admin_server, "admin", "GET", "/", HOST, headers=forged).headers["Location"] == "/login"
    answer = request(admin_server, "admin", "POST", "/domains/add", HOST, b"domain=new.test")
    assert (answer.status, answer.headers["Location"]) == (303, "/login")
    assert not admin_server.call(admin_server.store.is_local_domain("new.test"))
    login = request(admin_server, "admin", "GET", "/login", HOST)
    assert login.status == 200 and 'name="password"' in login.text
    # /metrics stays open to the scraper, as before the console
    assert request(admin_server, "admin", "GET", "/metrics", HOST).status == 200


def test_an_account_without_the_admin_flag_is_refused(admin_server: RunningServer) -> None:
    client = Browser(admin_server)
    answer = client.login(USER, PASSWORD)
    assert answer.status == 403 and "this account may not use the admin console" in answer.text
    assert client.cookie == ""


def test_login_is_blocked_after_failures_like_imap(admin_server: RunningServer) -> None:
    client = Browser(admin_server)
    for _ in range(3):  # auth_max_failures = 3
        answer = client.login(ADMIN, "wrong")
        assert answer.status == 403 and "wrong address or password" in answer.text
    answer = client.login()  # the right password, but from a blocked address
    assert answer.status == 429 and "too many failed logins" in answer.text
    assert client.cookie == ""
    blocked = admin_server.call(admin_server.store.list_auth_clients(blocked_after=time.time()))
    assert [state.key for state in blocked] == ["127.0.0.1"]


def test_a_wrong_or_missing_csrf_token_is_refused(browser: Browser) -> None:
    assert browser.post("/domains/add", {"domain": "new.test"}, csrf=False).status == 403
    answer = browser.post("/domains/add", {"domain": "new.test", "csrf": "0" * 64}, csrf=False)
    assert answer.status == 403 and "CSRF" in answer.text
    store = browser.server.store
    assert not browser.server.call(store.is_local_domain("new.test"))
    assert browser.act("/domains/add", {"domain": "new.test"}).startswith("notice: added domain new.test")
    assert browser.server.call(store.is_local_domain("new.test"))


def test_logout_ends_the_session_even_if_the_cookie_is_replayed(browser: Browser) -> None:
    cookie = browser.cookie
    answer = browser.post("/logout", {})
    assert (answer.status, answer.headers["Location"]) == (303, "/login")
    assert f"{COOKIE_NAME}=" in answer.headers["Set-Cookie"] and "Max-Age=0" in answer.headers["Set-Cookie"]
    browser.cookie = cookie
    assert browser.get("/").headers["Location"] == "/login"


def test_a_password_change_or_demotion_ends_the_session(browser: Browser) -> None:
    server = browser.server
    server.call(server.store.set_credentials(ADMIN, make_credentials("another password")))
    assert browser.get("/").headers["Location"] == "/login"
    browser.login(ADMIN, "another password")
    assert browser.get("/").status == 200
    server.call(server.store.set_admin(ADMIN, False))
    assert browser.get("/accounts").headers["Location"] == "/login"


def test_what_users_and_remote_servers_wrote_is_escaped(browser: Browser) -> None:
    script = "<script>alert(1)</script>"
    refused = browser.post("/login", {"address": f"{script}@example.test", "password": "x"}, csrf=False)
    assert script not in refused.text and "&lt;script&gt;alert(1)&lt;/script&gt;@example.test" in refused.text
    error = browser.act("/domains/add", {"domain": script})
    assert error.startswith("error: domain '<script>")
    page = browser.get("/domains?" + urlencode({"error": script}))
    assert script not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    # A remote server's reply, shown on the queue pages
    submit(browser.server, ["bob@remote.example"])
    (entry,) = browser.server.call(browser.server.store.list_queue())
    update = RecipientUpdate(0, RecipientState.PENDING, f"451 {script}")
    attempt = browser.server.call(
        browser.server.store.record_attempt(
            entry.id, datetime.now(UTC), f"{script}.example", datetime.now(UTC)
        )
    )
    browser.server.call(
        browser.server.store.finish_attempt(entry.id, attempt, "451 " + script, [update], datetime.now(UTC))
    )
    page = browser.get(f"/queue/{entry.id}")
    assert page.status == 200 and "<script>" not in page.text and "451 &lt;script&gt;" in page.text


def test_domain_forms(browser: Browser) -> None:
    store = browser.server.store
    assert browser.act("/domains/add", {"domain": "Neu.TEST"}).startswith("notice: added domain neu.test")
    assert browser.act("/domains/add", {"domain": "neu.test"}) == "error: domain neu.test already exists"
    page = browser.get("/domains/neu.test")
    assert page.status == 200
    keys = browser.server.call(store.keys.dkim_keys("neu.test"))
    assert len(keys) == 2 and all(key.selector in page.text for key in keys)
    # exactly what `surat dns neu.test` prints for this server (its ports as bound)
    shown = re.search(r'<pre class="records">(.*)</pre>', page.text, re.DOTALL)
    assert shown is not None
    ports = {role: browser.server.port(role) for role in ROLES}
    dkim_keys = browser.server.call(admin_ops.load_dkim_keys(store, "neu.test"))
    expected = admin_ops.dns_records("neu.test", "mail.example.test", ports, dkim_keys, browser.server.config)
    assert html.unescape(shown.group(1)) == expected
    assert "IN  MX" in expected
    assert browser.act("/domains/delete", {"domain": DOMAIN}).startswith(
        f"error: domain {DOMAIN} still has 2 account(s)"
    )
    assert browser.act("/domains/delete", {"domain": "neu.test"}).startswith(
        "notice: deleted domain neu.test"
    )
    assert not browser.server.call(store.is_local_domain("neu.test"))
    assert browser.get("/domains/neu.test").status == 404


def _shown_password(answer: Answer) -> str:
    assert answer.status == 200, answer
    match = re.search(r'<code class="password" id="password">([^<]+)</code>', answer.text)
    assert match is not None
    return match.group(1)


def test_account_forms(browser: Browser) -> None:
    server = browser.server
    store = server.store
    password = _shown_password(browser.post("/accounts/add", {"address": "Bob@Example.test", "quota": "1M"}))
    assert len(password) == 20
    account = server.call(authenticate(store, "bob@example.test", password))
    assert account is not None and account.quota_bytes == 1 << 20
    assert browser.act("/accounts/add", {"address": "bob@example.test"}) == (
        "error: account bob@example.test already exists"
    )
    assert browser.act("/accounts/add", {"address": "x+y@example.test"}).startswith("error: address x+y@")
    page = browser.get("/accounts")
    assert "bob@example.test" in page.text and 'value="1M"' in page.text

    new_password = _shown_password(browser.post("/accounts/password", {"address": "bob@example.test"}))
    assert new_password != password
    assert server.call(authenticate(store, "bob@example.test", password)) is None
    assert server.call(authenticate(store, "bob@example.test", new_password)) is not None

    assert (
        browser.act("/accounts/quota", {"address": "bob@example.test", "quota": "2G"})
        == "notice: quota of bob@example.test: 2G"
    )
    assert server.call(store.get_account("bob@example.test")).quota_bytes == 2 << 30
    assert browser.act("/accounts/quota", {"address": "bob@example.test", "quota": ""}).endswith("unlimited")
    assert browser.act("/accounts/quota", {"address": "bob@example.test", "quota": "lots"}).startswith(
        "error: 'lots'"
    )

    assert browser.act("/accounts/admin", {"address": "bob@example.test", "admin": "on"}).endswith(
        "is now an administrator"
    )
    assert server.call(store.get_account("bob@example.test")).is_admin
    assert browser.act("/accounts/admin", {"address": "bob@example.test", "admin": "off"}).endswith(
        "no longer an administrator"
    )
    assert not server.call(store.get_account("bob@example.test")).is_admin

    assert browser.act("/accounts/delete", {"address": "bob@example.test"}) == (
        "notice: deleted account bob@example.test and its mail"
    )
    assert server.call(store.get_account("bob@example.test")) is None
    assert browser.act("/accounts/delete", {"address": "bob@example.test"}) == (
        "error: account bob@example.test does not exist"
    )


def test_alias_forms(browser: Browser) -> None:
    store = browser.server.store
    assert browser.act("/aliases/add", {"source": "info@example.test", "target": USER}) == (
        f"notice: added alias info@example.test -> {USER}"
    )
    assert browser.act(
        "/aliases/add", {"source": "info@example.test", "target": "ext@remote.example"}
    ).startswith("notice:")
    assert browser.act("/aliases/add", {"source": "@Example.test", "target": USER}) == (
        f"notice: added alias @example.test -> {USER}"
    )
    assert browser.act("/aliases/add", {"source": USER, "target": "x@remote.example"}).startswith(
        "error: alice@example.test is an account"
    )
    page = browser.get("/aliases")
    assert "@example.test (catch-all)" in page.text
    assert sorted(browser.server.call(store.alias_targets("info@example.test"))) == [
        "alice@example.test",
        "ext@remote.example",
    ]
    assert browser.act("/aliases/remove", {"source": "info@example.test", "target": USER}).startswith(
        "notice:"
    )
    assert browser.server.call(store.alias_targets("info@example.test")) == ["ext@remote.example"]
    assert (
        browser.act("/aliases/remove", {"source": "@example.test", "target": ""})
        == "notice: deleted alias @example.test"
    )
    assert browser.server.call(store.alias_targets("@example.test")) == []


def test_queue_forms(browser: Browser) -> None:
    server = browser.server
    store = server.store
    submit(server, ["bob@remote.example"], subject="one")
    submit(server, ["carol@remote.example"], subject="two")
    first, second = sorted(server.call(store.list_queue()), key=lambda entry: entry.id)
    page = browser.get("/queue")
    assert first.id in page.text and "bob@remote.example (pending)" in page.text
    shown = browser.get(f"/queue/{first.id}")
    assert shown.status == 200 and "Attempts (" in shown.text
    assert browser.act("/queue/retry", {"id": first.id}) == f"notice: {first.id} due now"
    retried = server.call(store.get_queue_entry(first.id))
    # due now, or already taken by the queue runner and attempted once more
    assert retried.next_attempt_at <= datetime.now(UTC) or len(retried.attempts) > len(first.attempts)
    assert browser.act("/queue/drop", {"id": second.id}) == f"notice: dropped {second.id} (no bounce sent)"
    assert server.call(store.get_queue_entry(second.id)) is None
    assert browser.act("/queue/drop", {"id": second.id}) == f"error: no queued message {second.id}"
    assert browser.act("/queue/flush", {}) == "notice: 1 message(s) due now"


def test_block_forms_and_dashboard(browser: Browser) -> None:
    server = browser.server
    limiter = StoreAuthLimiter(server.store, BlockPolicy(max_failures=1))
    server.call(limiter.failure("192.0.2.7", "someone@example.test", "imap"))
    dashboard = browser.get("/").text
    assert 'id="blocked">1<' in dashboard
    # this very connection is open on no mail listener; each configured one is listed
    assert all(f"open connections: {role}</th>" in dashboard for role in ROLES)
    page = browser.get("/blocks")
    assert "192.0.2.7" in page.text
    assert browser.act("/blocks/lift", {"ip": "192.0.2.7"}) == "notice: lifted the block of 192.0.2.7"
    assert browser.act("/blocks/lift", {"ip": "192.0.2.7"}) == "error: 192.0.2.7 is not blocked"
    assert browser.act("/blocks/lift", {"ip": "nonsense"}) == "error: 'nonsense' is not an IP address"
    assert 'id="blocked">0<' in browser.get("/").text


def test_each_change_is_logged_with_who_did_it(browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="surat.admin_ops"):
        browser.act("/domains/add", {"domain": "logged.test"})
    (record,) = [r for r in caplog.records if r.getMessage() == "admin.change"]
    assert record.__dict__["kv"] == {"who": ADMIN, "what": "domain.add", "domain": "logged.test"}


def test_the_dashboard_counts_open_connections_per_listener(browser: Browser) -> None:
    def shown(role: str) -> str:
        match = re.search(rf"open connections: {role}</th><td class=\"num\">(\d+)<", browser.get("/").text)
        assert match is not None
        return match.group(1)

    before = int(shown("imap"))
    with socket.create_connection(("127.0.0.1", browser.server.port("imap")), timeout=10) as imap:
        assert imap.recv(1024).startswith(b"* OK")
        assert int(shown("imap")) == before + 1
    deadline = time.monotonic() + 10
    while int(shown("imap")) != before and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the close on its next read
    assert int(shown("imap")) == before
