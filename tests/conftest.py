"""Fixtures shared by the whole suite: the store backends.

`store_url` runs a test once per backend (SQLite file, PostgreSQL
database): one suite, not two copies. The PostgreSQL cluster is started once
per session, only when a test asks for it (`tests/pgserver.py`); without
PostgreSQL on a developer's machine those tests skip saying how to get it,
and in CI (CI=true) they fail instead, so nothing skips there silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import HOW_TO_GET_IT, URL_ENV, PgServer, find_bindir

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get(URL_ENV)
    if external:
        yield PgServer.external(external)
        return
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(HOW_TO_GET_IT)
        pytest.skip(HOW_TO_GET_IT)
    server = PgServer.start_new(bindir)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def managed_pg(pg_server: PgServer) -> PgServer:
    """The session's server when the tests may stop and start it."""
    if not pg_server.managed:
        pytest.skip(f"{URL_ENV} points at a server these tests must not stop")
    return pg_server


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/optout.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return await server.new_database()


@pytest.fixture
async def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty PostgreSQL database."""
    return await pg_server.new_database()
