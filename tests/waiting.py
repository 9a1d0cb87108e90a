"""Waiting on state that has no event of its own (simulator counters,
registries, metrics), always with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once `predicate()` is true; TimeoutError after `timeout` seconds.
    Checks again after every short turn of the loop, where the state changes."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
