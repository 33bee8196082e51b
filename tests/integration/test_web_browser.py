"""The admin console in a real browser (issue 13): Debian's Chromium, headless, driven by Playwright.

Playwright's own `playwright install` downloads browsers, which CI cannot; the test launches
/usr/bin/chromium (.ci/run installs the `chromium` package). Skipped locally when either is missing,
a failure under CI=true. Every page is screenshotted into the test's tmp dir (`screenshots/`); any
JavaScript console error, page error, failed request or HTTP error answer fails the test.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import USER, RunningServer, require_tool
from test_relay import submit
from test_web_admin import ADMIN, ADMIN_PASSWORD, admin_server, server_config  # noqa: F401  (fixtures)

from surat.authlimit import BlockPolicy, StoreAuthLimiter

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
# No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start; the rest keeps
# the browser from reaching out to the network (updates, sync, first-run pages).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _playwright_or_skip() -> None:
    require_tool(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "playwright is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


class Watched:
    """A browser page whose problems are collected: console errors, page errors, failed requests and
    HTTP error answers."""

    def __init__(self, page: Page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.problems: list[str] = []
        page.on(
            "console",
            lambda msg: self.problems.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: self.problems.append(f"request failed: {req.url} {req.failure}"))
        page.on(
            "response",
            lambda resp: (
                self.problems.append(f"HTTP {resp.status}: {resp.url}") if resp.status >= 400 else None
            ),
        )

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def notice(self) -> str:
        return self.page.locator("p.notice").inner_text()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Watched]:
    _playwright_or_skip()
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(15_000)
            watched = Watched(page, shots)
            yield watched
            assert watched.problems == []
        finally:
            chromium.close()


def _send(server: RunningServer, recipient: str) -> None:
    """One message to port 25, with swaks when it is installed (what an operator would use)."""
    port = server.port("smtp")
    if shutil.which("swaks"):
        subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "sender@remote.example",
             "--to", recipient, "--helo", "client.remote.example", "--header", "Subject: browser test"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    else:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("sender@remote.example", [recipient], b"Subject: browser test\r\n\r\nhi\r\n")


def _received(watched: Watched, base: str) -> int:
    """The dashboard's count of messages received on port 25."""
    watched.page.goto(base + "/")
    row = watched.page.locator("tr", has_text="messages received on port 25")
    return int(row.locator("td").inner_text())


def test_an_administrator_runs_the_server_from_the_browser(
    admin_server: RunningServer,  # noqa: F811
    browser_page: Watched,
) -> None:
    server = admin_server
    page = browser_page.page
    base = f"http://127.0.0.1:{server.port('admin')}"

    # Log in: every page sends the visitor to the login page first.
    page.goto(base + "/queue")
    assert page.url == base + "/login"
    browser_page.shot("login")
    page.fill("input[name=address]", ADMIN)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    assert page.url == base + "/"
    assert page.locator("h1").inner_text() == "Dashboard"
    browser_page.shot("dashboard")

    # A domain, and its DNS records.
    page.click("nav >> text=Domains")
    page.fill("form[action='/domains/add'] input[name=domain]", "shop.test")
    page.click("form[action='/domains/add'] button")
    assert browser_page.notice().startswith("added domain shop.test with DKIM selectors")
    browser_page.shot("domains")
    page.click("a:has-text('shop.test')")
    records = page.locator("pre.records").inner_text()
    assert "shop.test." in records and "IN  MX   10 mail.example.test." in records
    assert "_dmarc.shop.test." in records
    browser_page.shot("domain-dns")

    # An account, its password shown once; it receives mail and the dashboard counts it.
    page.click("nav >> text=Accounts")
    page.fill("form[action='/accounts/add'] input[name=address]", "buyer@shop.test")
    page.click("form[action='/accounts/add'] button")
    password = page.locator("#password").inner_text()
    assert len(password) == 20
    browser_page.shot("account-password")
    page.click("text=Back to the accounts")
    assert page.locator("td", has_text="buyer@shop.test").count() == 1
    browser_page.shot("accounts")
    before = _received(browser_page, base)
    _send(server, "buyer@shop.test")
    assert _received(browser_page, base) == before + 1

    # The queue: two messages for a domain whose DNS fails, one retried, one dropped.
    submit(server, ["bob@remote.example"], subject="first")
    submit(server, ["carol@remote.example"], subject="second")
    page.click("nav >> text=Queue")
    assert page.locator("tbody tr").count() == 2
    browser_page.shot("queue")
    first = page.locator("tbody tr", has_text="bob@remote.example")
    first_id = first.locator("td a").inner_text()
    first.locator("button:has-text('Retry now')").click()
    assert browser_page.notice() == f"{first_id} due now"
    second = page.locator("tbody tr", has_text="carol@remote.example")
    second_id = second.locator("td a").inner_text()
    page.click(f"a:has-text('{second_id}')")
    assert page.locator("h1").inner_text() == f"Queued message {second_id}"
    browser_page.shot("queue-entry")
    page.click("button:has-text('Drop')")
    assert browser_page.notice() == f"dropped {second_id} (no bounce sent)"
    assert server.call(server.store.get_queue_entry(second_id)) is None
    assert page.locator("tbody tr").count() == 1

    # A blocked address, lifted.
    limiter = StoreAuthLimiter(server.store, BlockPolicy(max_failures=1))
    server.call(limiter.failure("192.0.2.9", USER, "imap"))
    page.click("nav >> text=Blocked IPs")
    assert page.locator("td", has_text="192.0.2.9").count() >= 1
    browser_page.shot("blocks")
    page.click("button:has-text('Lift')")
    assert browser_page.notice() == "lifted the block of 192.0.2.9"
    assert page.locator("tbody td").first.inner_text() == "(none blocked)"

    # Log out: back to the login page, and the console is closed again.
    page.click("button:has-text('Log out')")
    assert page.url == base + "/login"
    page.goto(base + "/")
    assert page.url == base + "/login"
