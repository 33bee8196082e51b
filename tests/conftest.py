"""Fixtures for unit and integration tests alike: the private PostgreSQL cluster (tests/pg_cluster.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pg_cluster import PostgresCluster, PostgresUnavailable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole session, started on first use. Without the PostgreSQL programs the
    tests that need it are skipped with the reason, or fail under CI=true (.ci/run installs them)."""
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> str:
    """The name of a new, empty database in the cluster, for one test."""
    return pg_cluster.new_database()
