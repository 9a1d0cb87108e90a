"""Raw SQL against a test store of either backend, the way another process
(or an operator with psql/sqlite3) would reach it."""

from __future__ import annotations

import sqlite3

import asyncpg

from rules.store import backend_for, parse_url


async def execute_raw(url: str, *statements: str) -> None:
    """Runs `statements` in autocommit on a separate connection to `url`."""
    if backend_for(url) == "sqlite":
        with sqlite3.connect(parse_url(url), isolation_level=None) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
