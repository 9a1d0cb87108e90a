"""Debian's Chromium driven by Playwright, shared by the console tests.

`NEEDS_CHROMIUM` skips a module (saying how to get it) where the browser is
not installed; `.ci/run` installs it, so in CI nothing skips. `chromium()`
launches one headless browser and always closes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)"
)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium for as long as the block runs."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
