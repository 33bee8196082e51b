"""The account pages in a real browser (issue 13): Debian's Chromium driven headless by Playwright. A
user logs in, changes the password (then IMAP works with the new one), creates an app password and
syncs with it through mbsync. Any JavaScript console error or failed request fails the test; a
screenshot of each page is saved (under $SURAT_SCREENSHOTS if set, else the test's directory).

Skipped when Chromium or Playwright is missing, except under CI=true, where that is a failure
(.ci/run installs both)."""

from __future__ import annotations

import imaplib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, USER, RunningServer, require_tool
from test_imap_basic import SIMPLE, deliver
from test_imap_mbsync import _config, _messages, _run
from test_web import HOSTNAME, server_config

__all__ = ["server_config"]  # conftest's `server` with the web listeners, from test_web

CHROMIUM = "/usr/bin/chromium"
NEW_PASSWORD = "browser-made passphrase"


def _playwright() -> Any:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright module")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need {' and '.join(missing)} under CI")
        pytest.skip(f"{' and '.join(missing)} not installed")
    return sync_playwright  # pytest.skip/fail raise: reached only when the import worked


def test_user_changes_password_and_syncs_with_an_app_password(server: RunningServer, tmp_path: Path) -> None:
    sync_playwright = _playwright()
    mbsync = require_tool("mbsync")
    shots = Path(os.environ.get("SURAT_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    base = f"https://{HOSTNAME}:{server.port('https')}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # the certificate's name resolves to this machine without touching /etc/hosts
            args=[f"--host-resolver-rules=MAP {HOSTNAME} 127.0.0.1"],
        )
        try:
            context = browser.new_context(ignore_https_errors=True)  # the dev CA is not in Chromium's store
            page = context.new_page()

            def console(message: Any) -> None:
                if message.type == "error":
                    problems.append(f"console: {message.text}")

            def response(answer: Any) -> None:
                if answer.status >= 400:
                    problems.append(f"{answer.status} {answer.url}")

            page.on("console", console)
            page.on("response", response)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))

            page.goto(f"{base}/account")
            page.screenshot(path=shots / "account-login.png", full_page=True)
            page.fill("input[name=address]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector(f"h1:text-is('{USER}')")
            page.screenshot(path=shots / "account-overview.png", full_page=True)

            page.fill("input[name=old]", PASSWORD)
            page.fill("input[name=new]", NEW_PASSWORD)
            page.fill("input[name=again]", NEW_PASSWORD)
            page.click("text=Change password")
            page.wait_for_selector("text=Password changed.")
            page.screenshot(path=shots / "account-password-changed.png", full_page=True)

            page.fill("input[name=name]", "laptop mbsync")
            page.click("text=Create app password")
            secret = page.inner_text("#new-app-password").strip()
            page.screenshot(path=shots / "account-app-password.png", full_page=True)
            assert len(secret) == 20
            assert page.inner_text("table").count("laptop mbsync") == 1
        finally:
            browser.close()
    assert problems == []
    assert [path.name for path in sorted(shots.iterdir())] == [
        "account-app-password.png",
        "account-login.png",
        "account-overview.png",
        "account-password-changed.png",
    ]

    with imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imaps"), ssl_context=server.client_tls(), timeout=10
    ) as imap:
        assert imap.login(USER, NEW_PASSWORD)[0] == "OK"
        imap.logout()
    deliver(server, [SIMPLE])
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    _run(mbsync, _config(server, maildir, password=secret, mechanism="PLAIN"))
    assert len(_messages(maildir / "INBOX")) == 1
    shutil.rmtree(maildir)
