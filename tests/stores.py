"""Raw SQL against a test store of either backend, the way another process
(or an operator with psql/sqlite3) would reach it."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg

from rules.store import backend_for, parse_url


def _sqlite_execute(path: str, statements: tuple[str, ...]) -> None:
    with sqlite3.connect(path, isolation_level=None, timeout=10) as conn:
        for statement in statements:
            conn.execute(statement)


async def execute_raw(url: str, *statements: str) -> None:
    """Runs `statements` in autocommit on a separate connection to `url`."""
    if backend_for(url) == "sqlite":
        # In a thread: the event loop may host the store's writer, and a
        # blocking wait for its lock here would stall the very loop that
        # must release it.
        await asyncio.to_thread(_sqlite_execute, parse_url(url), statements)
        return
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
