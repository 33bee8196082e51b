"""surat.web.login: web logins check the IMAP password and share its per-address blocking."""

from __future__ import annotations

from pathlib import Path

import pytest

from surat.authlimit import BlockPolicy, StoreAuthLimiter
from surat.config import parse_config
from surat.passwords import make_credentials
from surat.store.sqlite import SQLiteStore
from surat.web.context import WebContext
from surat.web.login import LoginRefusal, LoginRefused, check_login

PASSWORD = "correct horse battery staple"


async def test_logins_failures_blocks_and_the_admin_flag(store: SQLiteStore, tmp_path: Path) -> None:
    config = parse_config(
        {"hostname": "mail.example.test", "limits": {"auth_failure_delay": 0, "auth_max_failures": 3}},
        base_dir=tmp_path,
    )
    limiter = StoreAuthLimiter(store, BlockPolicy.from_config(config.limits))
    context = WebContext(config, store, {}, limiter)
    await store.add_domain("example.test")
    await store.add_account("alice@example.test", make_credentials(PASSWORD))
    await store.add_account("root@example.test", make_credentials(PASSWORD))
    await store.set_admin("root@example.test", True)

    assert (
        await check_login(context, "192.0.2.1", "Alice@example.test", PASSWORD)
    ).address == "alice@example.test"
    admin = await check_login(context, "192.0.2.1", "root@example.test", PASSWORD, admin=True)
    assert admin.is_admin
    with pytest.raises(LoginRefused) as refused:
        await check_login(context, "192.0.2.1", "alice@example.test", PASSWORD, admin=True)
    assert refused.value.refusal is LoginRefusal.NOT_ADMIN
    # a right password of an ordinary account is no guess: nothing counted
    assert await limiter.retry_after("192.0.2.1") == 0

    for password in ("wrong 1", "wrong 2", "wrong 3"):
        with pytest.raises(LoginRefused) as refused:
            await check_login(context, "192.0.2.1", "alice@example.test", password)
        assert refused.value.refusal is LoginRefusal.FAILED
    # blocked now, the right password included, here and (same limiter, same store) on IMAP/POP3/SMTP
    with pytest.raises(LoginRefused) as refused:
        await check_login(context, "192.0.2.1", "alice@example.test", PASSWORD)
    assert refused.value.refusal is LoginRefusal.BLOCKED
    assert await limiter.retry_after("192.0.2.1") > 0
    # another address is not
    assert await check_login(context, "192.0.2.2", "alice@example.test", PASSWORD)
