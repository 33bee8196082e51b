"""The account pages on the https listener (issue 13) over real sockets: login with the account
password (never an app password), password change then IMAP with the new one, app passwords made on
the page and used with imaplib, poplib and smtplib until revoked, CSRF and Origin checks, escaping,
and the Apple profile parsed with plistlib field by field."""

from __future__ import annotations

import html
import imaplib
import plistlib
import poplib
import re
import smtplib
import urllib.parse
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from conftest import DOMAIN, PASSWORD, USER, RunningServer
from test_web import HOSTNAME, Answer, request, server_config

from surat.web.sessions import COOKIE_NAME, CSRF_FIELD

__all__ = ["server_config"]  # conftest's `server` with the web listeners, from test_web

NEW_PASSWORD = "a much better passphrase"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Browser:
    """What a browser keeps between requests to the https listener: the session cookie."""

    def __init__(self, server: RunningServer, host: str = HOSTNAME) -> None:
        self.server = server
        self.host = host
        self.cookie: str | None = None
        self.set_cookie: str | None = None  # the last Set-Cookie header, attributes included

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        if self.cookie is not None:
            headers = {**headers, "Cookie": f"{COOKIE_NAME}={self.cookie}"}
        answer = request(self.server, "https", method, path, self.host, body=body, headers=headers)
        self.set_cookie = answer.headers["Set-Cookie"]
        if self.set_cookie is not None:
            value = self.set_cookie.split(";", 1)[0].partition("=")[2].strip('"')
            self.cookie = value or None
        return answer

    def get(self, path: str) -> Answer:
        return self._send("GET", path, None, {})

    def post(self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
        body = urllib.parse.urlencode(fields).encode()
        return self._send("POST", path, body, {**FORM, **(headers or {})})

    def csrf(self) -> str:
        page = self.get("/account")
        assert page.status == 200, page
        match = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', page.text)
        assert match is not None, page.text
        return match.group(1)

    def login(self, address: str = USER, password: str = PASSWORD) -> Answer:
        return self.post("/account/login", {"address": address, "password": password})


@pytest.fixture
def browser(server: RunningServer) -> Iterator[Browser]:
    yield Browser(server)


def _logged_in(server: RunningServer) -> Browser:
    browser = Browser(server)
    answer = browser.login()
    assert (answer.status, answer.headers["Location"]) == (303, "/account"), answer
    return browser


def _imap_login(server: RunningServer, user: str, password: str) -> bool:
    with imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10
    ) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        imap.logout()
        return True


def _pop3(server: RunningServer) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=server.client_tls(), timeout=10)


def _new_app_password(browser: Browser, name: str) -> str:
    answer = browser.post("/account/app-passwords", {CSRF_FIELD: browser.csrf(), "name": name})
    assert answer.status == 200, answer
    match = re.search(r'<code id="new-app-password">([A-Za-z0-9]{20})</code>', answer.text)
    assert match is not None, answer.text
    return match.group(1)


# ----------------------------------------------------------------------------------------- login


def test_login_page_then_session_cookie(browser: Browser) -> None:
    page = browser.get("/account")
    assert page.status == 200
    assert '<form method="post" action="/account/login">' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    wrong = browser.login(password="wrong password")
    assert wrong.status == 401 and "wrong address or password" in wrong.text
    assert browser.cookie is None
    unknown = browser.login(address=f"nobody@{DOMAIN}")
    assert unknown.status == 401 and "wrong address or password" in unknown.text
    answer = browser.login(address=USER.upper())
    assert (answer.status, answer.headers["Location"]) == (303, "/account")
    assert browser.set_cookie is not None
    attributes = {part.strip().split("=")[0].lower() for part in browser.set_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in browser.set_cookie
    page = browser.get("/account")
    assert page.status == 200
    assert f"<h1>{USER}</h1>" in page.text
    assert '<p id="usage">0 B used (no quota)</p>' in page.text
    assert 'href="/profile.mobileconfig"' in page.text


def test_quota_usage_is_shown(server: RunningServer) -> None:
    server.call(server.store.set_quota(USER, 2 << 20))
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.port("submissions"), context=server.client_tls(), timeout=10
    ) as smtp:
        smtp.login(USER, PASSWORD)
        smtp.sendmail(USER, [USER], f"From: {USER}\r\nSubject: x\r\n\r\n".encode() + b"y" * 3000 + b"\r\n")
    page = _logged_in(server).get("/account")
    assert re.search(r'<p id="usage">3\.\d KiB used of 2\.0 MiB \(0%\)</p>', page.text), page.text


def test_logout_needs_the_csrf_token_and_ends_the_cookie(server: RunningServer) -> None:
    browser = _logged_in(server)
    assert browser.post("/account/logout", {}).status == 403
    answer = browser.post("/account/logout", {CSRF_FIELD: browser.csrf()})
    assert answer.status == 303 and browser.cookie is None
    assert 'action="/account/login"' in browser.get("/account").text


def test_an_app_password_does_not_open_the_web_pages(server: RunningServer) -> None:
    secret = _new_app_password(_logged_in(server), "phone")
    other = Browser(server)
    answer = other.login(password=secret)
    assert answer.status == 401 and other.cookie is None
    assert _imap_login(server, USER, secret)  # while it works for IMAP


def test_a_cross_origin_login_is_refused(browser: Browser) -> None:
    evil = browser.post(
        "/account/login", {"address": USER, "password": PASSWORD}, {"Origin": "https://evil.example"}
    )
    assert evil.status == 403 and browser.cookie is None
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Origin": f"https://www.{DOMAIN}"},
    ):
        refused = browser.post("/account/login", {"address": USER, "password": PASSWORD}, headers)
        assert refused.status == 403 and browser.cookie is None
    # what browsers send for a form of the page itself (Origin is "null" under no-referrer)
    same = browser.post(
        "/account/login",
        {"address": USER, "password": PASSWORD},
        {"Sec-Fetch-Site": "same-origin", "Origin": "null"},
    )
    assert same.status == 303 and browser.cookie is not None
    old = Browser(browser.server)  # a browser without Fetch Metadata: Origin alone
    assert (
        old.post(
            "/account/login", {"address": USER, "password": PASSWORD}, {"Origin": f"https://{HOSTNAME}"}
        ).status
        == 303
    )


def test_pages_answer_only_for_local_hosts(server: RunningServer) -> None:
    assert Browser(server, host="www.example.net").get("/account").status == 404
    assert Browser(server, host=f"mail.{DOMAIN}").get("/account").status == 200


def test_a_forged_or_foreign_cookie_is_no_session(server: RunningServer) -> None:
    browser = _logged_in(server)
    assert browser.cookie is not None
    payload, _, signature = browser.cookie.partition(".")
    browser.cookie = f"{payload}.{'0' * len(signature)}"
    page = browser.get("/account")
    assert 'action="/account/login"' in page.text
    assert page.headers["Set-Cookie"] is not None  # the bad cookie is deleted


# ----------------------------------------------------------------------------------------- password


def test_password_change_then_imap_with_the_new_one(server: RunningServer) -> None:
    browser = _logged_in(server)
    elsewhere = _logged_in(server)  # another browser of the same user
    token = browser.csrf()
    fields = {"old": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD}
    assert browser.post("/account/password", fields).status == 403  # no CSRF token
    assert browser.post("/account/password", {**fields, CSRF_FIELD: "0" * 64}).status == 403
    assert browser.post("/account/password", {**fields, CSRF_FIELD: elsewhere.csrf()}).status == 403
    wrong = browser.post("/account/password", {**fields, "old": "not it", CSRF_FIELD: token})
    assert wrong.status == 403 and "The current password is wrong." in wrong.text
    differ = browser.post("/account/password", {**fields, "again": "something else", CSRF_FIELD: token})
    assert differ.status == 400 and "The two new passwords differ." in differ.text
    short = browser.post("/account/password", {**fields, "new": "short", "again": "short", CSRF_FIELD: token})
    assert short.status == 400 and "too short" in short.text
    assert _imap_login(server, USER, PASSWORD)  # nothing changed so far

    changed = browser.post("/account/password", {**fields, CSRF_FIELD: token})
    assert changed.status == 200 and "Password changed." in changed.text
    assert browser.get("/account").status == 200 and f"<h1>{USER}</h1>" in browser.get("/account").text
    # the other browser's session ended with the old password hash
    assert 'action="/account/login"' in elsewhere.get("/account").text
    assert _imap_login(server, USER, NEW_PASSWORD)
    assert not _imap_login(server, USER, PASSWORD)
    # SCRAM keys were derived again from the new password
    found = server.call(server.store.get_credentials(USER))
    assert found is not None and found[1].scram_sha256 is not None
    assert Browser(server).login(password=NEW_PASSWORD).status == 303


# ----------------------------------------------------------------------------------------- app passwords


def test_app_password_for_imap_pop3_and_smtp_until_revoked(server: RunningServer) -> None:
    browser = _logged_in(server)
    secret = _new_app_password(browser, "phone")
    page = browser.get("/account")
    assert secret not in page.text  # shown once
    assert re.search(r"<td>phone</td>\s*<td>[0-9-]+ [0-9:]+ UTC</td>\s*<td>never</td>", page.text), page.text

    with imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10
    ) as imap:
        assert imap.login(USER, secret)[0] == "OK"
        imap.logout()
    pop = _pop3(server)
    pop.user(USER)
    assert pop.pass_(secret).startswith(b"+OK")
    pop.quit()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = USER, USER, "sent with an app password"
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10) as smtp:
        smtp.starttls(context=server.client_tls())
        assert smtp.login(USER, secret)[0] == 235
        assert smtp.send_message(message) == {}
    page = browser.get("/account")
    assert not re.search(r"<td>phone</td>\s*<td>[^<]*</td>\s*<td>never</td>", page.text), page.text

    token = browser.csrf()
    assert browser.post("/account/app-passwords/revoke", {"name": "phone"}).status == 403  # no token
    assert browser.post("/account/app-passwords", {"name": "tablet"}).status == 403
    revoked = browser.post("/account/app-passwords/revoke", {CSRF_FIELD: token, "name": "phone"})
    assert (revoked.status, revoked.headers["Location"]) == (303, "/account")
    assert "<td>phone</td>" not in browser.get("/account").text
    assert not _imap_login(server, USER, secret)
    pop = _pop3(server)
    pop.user(USER)
    with pytest.raises(poplib.error_proto):
        pop.pass_(secret)
    pop.close()
    with (
        smtplib.SMTP_SSL(
            "127.0.0.1", server.port("submissions"), context=server.client_tls(), timeout=10
        ) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        smtp.login(USER, secret)
    missing = browser.post("/account/app-passwords/revoke", {CSRF_FIELD: token, "name": "phone"})
    assert missing.status == 404 and "No app password of that name." in missing.text


def test_app_password_names_are_escaped_and_checked(server: RunningServer) -> None:
    browser = _logged_in(server)
    name = "<script>alert(1)</script>"
    _new_app_password(browser, name)
    page = browser.get("/account")
    assert "<script>" not in page.text
    assert html.escape(name) in page.text
    token = browser.csrf()
    again = browser.post("/account/app-passwords", {CSRF_FIELD: token, "name": name})
    assert again.status == 409 and "<script>" not in again.text
    empty = browser.post("/account/app-passwords", {CSRF_FIELD: token, "name": "  "})
    assert empty.status == 400 and "the name is empty" in empty.text
    long = browser.post("/account/app-passwords", {CSRF_FIELD: token, "name": "x" * 65})
    assert long.status == 400 and "longer than 64" in long.text
    # revoking by the escaped name's real value works (the hidden field round-trips it)
    revoked = browser.post("/account/app-passwords/revoke", {CSRF_FIELD: token, "name": name})
    assert revoked.status == 303


# ----------------------------------------------------------------------------------------- Apple profile


def test_apple_profile_field_by_field(server: RunningServer) -> None:
    anonymous = Browser(server).get("/profile.mobileconfig")
    assert (anonymous.status, anonymous.headers["Location"]) == (303, "/account")
    browser = _logged_in(server)
    answer = browser.get("/profile.mobileconfig")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/x-apple-aspen-config"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="mail.mobileconfig"'
    assert answer.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
    profile = plistlib.loads(answer.body, fmt=plistlib.FMT_XML)
    (mail,) = profile.pop("PayloadContent")
    profile_uuid = profile.pop("PayloadUUID")
    assert re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", profile_uuid)
    assert profile == {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"test.example.mail.surat.profile.{profile_uuid.lower()}",
        "PayloadDisplayName": f"{USER} ({HOSTNAME})",
        "PayloadDescription": f"The mail account {USER} on {HOSTNAME}. You will be asked for its password.",
        "PayloadRemovalDisallowed": False,
    }
    mail_uuid = mail.pop("PayloadUUID")
    assert mail_uuid != profile_uuid
    assert mail == {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"test.example.mail.surat.mail.{mail_uuid.lower()}",
        "PayloadDisplayName": f"Mail: {USER}",
        "EmailAccountDescription": USER,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": USER,
        "IncomingMailServerHostName": HOSTNAME,
        "IncomingMailServerPortNumber": server.port("imaps"),
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": USER,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": HOSTNAME,
        "OutgoingMailServerPortNumber": server.port("submissions"),
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": USER,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    assert PASSWORD.encode() not in answer.body
    # the same identifiers on every download: installing again replaces the profile
    assert plistlib.loads(browser.get("/profile.mobileconfig").body)["PayloadUUID"] == profile_uuid


def test_nothing_of_the_account_pages_on_the_admin_listener(server: RunningServer) -> None:
    for path in ("/account", "/profile.mobileconfig"):
        assert request(server, "admin", "GET", path, "127.0.0.1").status == 404


def test_the_pages_stylesheet_without_the_static_directory(browser: Browser) -> None:
    assert '<link rel="stylesheet" href="/account/surat.css">' in browser.get("/account").text
    answer = browser.get("/account/surat.css")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/css")
    assert b".error" in answer.body
