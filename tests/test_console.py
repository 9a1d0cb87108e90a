"""The web console in a real browser (Debian's Chromium driven by
Playwright), against the real app on a loopback port and a real SQLite file.

The story: an admin signs in, adds an inbound address, opens it, adds a
blocking rule that blocks marketing only, unsubscribes a number by hand,
finds the change in the records (source "console") and downloads them as
CSV; a viewer then sees the same pages without any edit control.

Screenshots of every page go to tmp_path, or to $OPTOUT_SCREENSHOTS when
set (e.g. tests/artifacts/, which git ignores), for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.http import make_app
from metrics import Metrics
from rules.model import Source
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.browser import NEEDS_CHROMIUM, chromium  # noqa: E402
from tests.http_fixtures import ADMIN, TOKENS, VIEWER  # noqa: E402

pytestmark = [
    NEEDS_CHROMIUM,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect


@pytest_asyncio.fixture(loop_scope="module")
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, OptOutService]]:
    service = await OptOutService.open(f"sqlite:///{tmp_path}/console.db")
    runner = web.AppRunner(make_app(service, Metrics(), TOKENS), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", service
    finally:
        await runner.cleanup()
        await service.close()


# One browser for the module; each test opens its own context.
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("OPTOUT_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def new_page(browser: Any, base_url: str, problems: list[str], **options: Any) -> Any:
    context = await browser.new_context(
        base_url=base_url, accept_downloads=True, viewport={"width": 1280, "height": 860}, **options
    )
    page = await context.new_page()
    # Script errors and CSP violations show up here; a working console has none.
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error"
            and "401" not in msg.text
            and "403" not in msg.text
            and "422" not in msg.text
            else None
        ),
    )
    return page


async def sign_in(page: Any, token: str) -> None:
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    # The Overview is the landing page; these stories start at the addresses.
    await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    await page.get_by_role("link", name="Inbound addresses", exact=True).click()
    await expect(page.get_by_role("heading", name="Inbound addresses", level=1)).to_be_visible()


async def test_admin_story_then_viewer_sees_no_edit_controls(
    server: tuple[str, OptOutService], browser: Any, shots: Path
) -> None:
    base_url, service = server
    problems: list[str] = []
    page = await new_page(browser, base_url, problems)

    # --- sign in ---
    await page.goto("/")
    await expect(page.get_by_label("API token")).to_be_visible()
    await page.screenshot(path=shots / "01-sign-in.png")
    await page.get_by_label("API token").fill("wrong-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not accepted")
    await sign_in(page, ADMIN.token)
    await expect(page.get_by_text("ops-alice")).to_be_visible()

    # --- add an inbound address ---
    await page.get_by_label("Address", exact=True).fill("+1 415 555 0100")
    await page.get_by_label("Description", exact=True).fill("Main toll-free line")
    await page.get_by_role("button", name="Add address").click()
    link = page.get_by_role("link", name="+14155550100")
    await expect(link).to_be_visible()
    await expect(page.get_by_role("cell", name="Main toll-free line")).to_be_visible()

    # an address outside the US/Canada is refused with the API's message
    await page.get_by_label("Address", exact=True).fill("+1 876 555 0100")
    await page.get_by_role("button", name="Add address").click()
    await expect(page.get_by_role("alert")).to_contain_text("Jamaica")
    await page.screenshot(path=shots / "02-addresses.png", full_page=True)

    # --- open it and add a rule blocking marketing only ---
    await link.click()
    await expect(page.get_by_role("heading", name="+14155550100", level=1)).to_be_visible()
    await page.get_by_label("App ID").fill("1400000001")
    await page.get_by_label("Marketing", exact=True).check()
    await page.get_by_role("button", name="Add rule").click()
    marketing = page.get_by_label("Block marketing for app 1400000001")
    await expect(marketing).to_be_checked()
    await expect(page.get_by_label("Block notification for app 1400000001")).not_to_be_checked()
    await expect(page.get_by_label("Block verification for app 1400000001")).not_to_be_checked()
    await expect(page.get_by_label("Block verification for other apps")).to_be_checked()
    await page.screenshot(path=shots / "03-address-detail.png", full_page=True)
    rule = (await service.get_address("+14155550100")).rules[0]
    assert (rule.app_id, {t.value for t in rule.sms_types}) == ("1400000001", {"marketing"})

    # --- unsubscribe a number by hand ---
    await page.get_by_role("link", name="Unsubscribed users", exact=True).click()
    await expect(page.get_by_role("heading", name="Unsubscribed users", level=1)).to_be_visible()
    await page.get_by_label("Phone number", exact=True).fill("+1 415 555 0199")
    await page.get_by_label("Inbound address", exact=True).select_option("+14155550100")
    await page.get_by_label("Reason", exact=True).fill("Asked by phone, ticket 4411")
    await page.get_by_role("button", name="Unsubscribe", exact=True).click()
    row = page.get_by_role("row", name=re.compile(r"\+14155550199"))
    await expect(row).to_contain_text("console")
    await page.screenshot(path=shots / "04-unsubscribed.png", full_page=True)

    # --- records show it, with source console and the actor ---
    await page.get_by_role("link", name="Records").click()
    await expect(page.get_by_role("heading", name="Records", level=1)).to_be_visible()
    record = page.get_by_role("row", name=re.compile(r"\+14155550199"))
    await expect(record).to_contain_text("console")
    await expect(record).to_contain_text("ops-alice")
    await expect(record).to_contain_text("unsubscribed")
    await page.screenshot(path=shots / "05-records.png", full_page=True)

    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download CSV").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".csv")
    csv_text = Path(await download.path()).read_text()
    assert "+14155550199" in csv_text and "console" in csv_text

    # --- a viewer sees everything but can change nothing ---
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, VIEWER.token)
    await expect(page.get_by_role("link", name="+14155550100")).to_be_visible()
    for name in ("Add address", "Edit", "Delete"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await page.screenshot(path=shots / "06-viewer-addresses.png", full_page=True)

    await page.get_by_role("link", name="+14155550100").click()
    await expect(page.get_by_label("Block marketing for app 1400000001")).to_be_disabled()
    for name in ("Add rule", "Save", "Save keywords", "Save replies", "Delete"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    await page.screenshot(path=shots / "07-viewer-address.png", full_page=True)

    await page.get_by_role("link", name="Unsubscribed users", exact=True).click()
    await expect(page.get_by_role("row", name=re.compile(r"\+14155550199"))).to_be_visible()
    await expect(page.get_by_role("button", name="Unsubscribe", exact=True)).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("Re-subscribe"))).to_have_count(0)
    await page.screenshot(path=shots / "08-viewer-unsubscribed.png", full_page=True)

    assert not problems, problems


async def test_admin_edits_keywords_replies_and_resubscribes(
    server: tuple[str, OptOutService], browser: Any, shots: Path
) -> None:
    base_url, service = server
    await service.create_address("+14155550100", "Support")
    await service.unsubscribe("+14155550199", "+14155550100", source=Source.API)
    problems: list[str] = []
    page = await new_page(browser, base_url, problems)
    await sign_in(page, ADMIN.token)

    await page.get_by_role("link", name="+14155550100").click()
    await page.get_by_label("Opt-out keywords").fill(
        "STOP\nQUIT\nEND\nREVOKE\nOPT OUT\nCANCEL\nUNSUBSCRIBE\nARRET\nBASTA"
    )
    await page.get_by_label("Whole message is the keyword").check()
    await page.get_by_role("button", name="Save keywords").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved the keywords")
    keywords = await service.get_keywords("+14155550100")
    assert keywords.opt_out[-2:] == ("ARRET", "BASTA") and keywords.match.value == "exact"

    await page.get_by_label("Send opt-in confirmation").uncheck()
    await page.get_by_label("Help reply text").fill("Acme alerts. Call 1-800-555-0100.")
    await page.get_by_role("button", name="Save replies").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved the replies")
    replies = await service.get_replies("+14155550100")
    assert replies.opt_in is None and replies.help == "Acme alerts. Call 1-800-555-0100."

    await page.get_by_label("Block notification for other apps").uncheck()
    await page.get_by_role("button", name="Save default rule").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved the default rule")
    assert {t.value for t in await service.get_default_rule("+14155550100")} == {
        "marketing",
        "verification",
    }
    await page.screenshot(path=shots / "09-address-edited.png", full_page=True)

    # re-subscribe asks first, then the row is gone and the record says console
    await page.get_by_role("link", name="Unsubscribed users", exact=True).click()
    await page.get_by_role("button", name="Re-subscribe +14155550199 at +14155550100").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await page.get_by_label("Reason (the consent evidence)").fill("signed up again on the web form")
    await page.screenshot(path=shots / "10-resubscribe-confirm.png")
    await page.get_by_role("button", name="Re-subscribe", exact=True).click()
    await expect(page.get_by_text("no unsubscribed users")).to_be_visible()
    records, _ = await service.list_records(phone_number="+14155550199")
    assert [r.source.value for r in records] == ["api", "console"]

    # the address list still works on a phone-sized screen
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("link", name="Inbound addresses").click()
    await expect(page.get_by_role("link", name="+14155550100")).to_be_visible()
    await page.screenshot(path=shots / "11-mobile-addresses.png", full_page=True)
    assert not problems, problems
