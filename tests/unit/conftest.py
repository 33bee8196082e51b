"""Fixtures shared by the unit tests: a real SQLite store in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fuzzing import bound_cpu_per_input
from pg_cluster import pg_cluster, pg_database
from surat.store.base import Account, Credentials
from surat.store.sqlite import SQLiteStore

__all__ = ["pg_cluster", "pg_database"]  # the PostgreSQL fixtures, imported so that pytest finds them

# a well-formed hash that no password matches: the store tests never log in
UNUSED_CREDENTIALS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def alice(store: SQLiteStore) -> Account:
    """alice@example.test, in the domain example.test."""
    await store.add_domain("example.test")
    return await store.add_account("alice@example.test", UNUSED_CREDENTIALS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fuzz test's per-input bound counts CPU time (tests/fuzzing.py explains why)."""
    for item in items:
        if item.get_closest_marker("fuzz") is None or not isinstance(item, pytest.Function):
            continue
        handle = getattr(item.obj, "hypothesis", None)
        if handle is not None and not getattr(handle.inner_test, "cpu_bounded", False):
            handle.inner_test = bound_cpu_per_input(handle.inner_test)
            handle.inner_test.cpu_bounded = True
