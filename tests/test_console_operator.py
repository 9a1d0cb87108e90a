"""The console as a compliance operator uses it (issue 10), in Debian's
Chromium driven by Playwright, against the real app on a loopback port and
a real SQLite file, at a laptop's size (1366x900) and a phone's (390x844).

Stories: the Overview after sign-in; the inbound message log and the
near-miss review queue (an admin opts a sender out or dismisses with a
reason, a viewer only reads); the audit log; the guardrails (address
warnings, noncompliant keywords saved only on purpose, re-subscribe with a
reason, a delete that says what it releases and wants the address typed);
the lists (newest first, sortable, number-prefix search, a number's
history, reason and source, reply sent and carrier ids, times with their
zone and a remembered UTC switch matching the CSV, date ranges checked,
toasts gone at sign-out, viewer controls readable).

Every page is checked for script errors and, at phone width, for
horizontal overflow; screenshots go to tmp_path, or to
$OPTOUT_SCREENSHOTS when set, for a person to look at. One browser serves
the whole module; each test opens one context per size.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.http import make_app
from gateway.http.context import AppInfo
from metrics import Metrics
from rules.model import SmsType, Source
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.browser import NEEDS_CHROMIUM, chromium  # noqa: E402
from tests.http_fixtures import ADMIN, TOKENS, VIEWER  # noqa: E402

SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
# Each size runs in a different zone, so "every time shows its zone" is
# checked against a zone that is not UTC.
ZONES = {"desktop": "America/New_York", "phone": "America/Los_Angeles"}
ZONE_NAMES = {"desktop": ("EST", "EDT"), "phone": ("PST", "PDT")}

pytestmark = [
    NEEDS_CHROMIUM,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),
]

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

ADDR = "+14155550100"
OTHER = "+18005550111"
APP = "1400000001"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, OptOutService, Metrics]]:
    service = await OptOutService.open(f"sqlite:///{tmp_path}/console.db")
    metrics = Metrics()
    apps = (AppInfo(APP, "acme"), AppInfo("1400000002", "globex"))
    runner = web.AppRunner(make_app(service, metrics, TOKENS, apps=apps), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", service, metrics
    finally:
        await runner.cleanup()
        await service.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("OPTOUT_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Errors the console provokes on purpose and shows to the user (a refused
# token, a viewer's 403, the 422 of noncompliant keywords).
EXPECTED_STATUS = ("401", "403", "422")


class Operator:
    """One browser context at one size: signs in, walks pages, and checks
    each page for script errors and (on a phone) horizontal overflow."""

    def __init__(self, page: Any, size: str, shots: Path) -> None:
        self.page = page
        self.size = size
        self.shots = shots
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and not any(s in msg.text for s in EXPECTED_STATUS)
                else None
            ),
        )

    @property
    def phone(self) -> bool:
        return self.size == "phone"

    async def sign_in(self, token: str) -> None:
        page = self.page
        await page.goto("/")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        # The Overview is the landing page.
        await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()

    async def sign_out(self) -> None:
        await self.page.get_by_role("button", name="Sign out").click()
        await expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible()

    async def open(self, hash_: str, heading: str | re.Pattern[str]) -> None:
        await self.page.goto(f"/{hash_}")
        await expect(self.page.get_by_role("heading", name=heading, level=1)).to_be_visible()

    async def check(self, name: str) -> None:
        """No script error so far; nothing off-screen sideways on a phone;
        a screenshot for a person to look at."""
        page = self.page
        await page.screenshot(path=self.shots / f"{self.size}-{name}.png", full_page=True)
        assert not self.problems, self.problems
        if self.phone:
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name}: {overflow}px of horizontal overflow at 390 px"
            # and no element sticks out of the viewport on the right
            wide = await page.evaluate(
                """() => [...document.querySelectorAll('main *')]
                    .filter((el) => el.getClientRects().length &&
                        el.getBoundingClientRect().right > innerWidth + 1)
                    .map((el) => el.tagName + '.' + el.className).slice(0, 5)"""
            )
            assert not wide, f"{name}: off-screen at 390 px: {wide}"


@pytest_asyncio.fixture(loop_scope="module", params=list(SIZES))
async def operator(request: Any, browser: Any, server: Any, shots: Path) -> AsyncIterator[Operator]:
    base_url = server[0]
    size = request.param
    context = await browser.new_context(
        base_url=base_url,
        viewport=SIZES[size],
        timezone_id=ZONES[size],
        accept_downloads=True,
    )
    try:
        yield Operator(await context.new_page(), size, shots)
    finally:
        await context.close()


async def given_addresses(service: OptOutService) -> None:
    await service.create_address(ADDR, "Main toll-free line")
    await service.create_address(OTHER, "Support line")


# --- the lists ----------------------------------------------------------------------------


async def test_unsubscribed_newest_first_sortable_searchable_with_history_links(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    made = ["+14155550305", "+14155550301", "+16045550309"]
    for n in made:
        await service.unsubscribe(n, ADDR, source=Source.API, reason=f"ticket for {n[-4:]}")
    await service.handle_mo(OTHER, "+14155550302", "STOP")
    page = operator.page
    await operator.sign_in(ADMIN.token)

    # newest first by default, with source and reason on every row
    await page.get_by_role("link", name="Unsubscribed users", exact=True).click()
    rows = page.locator("main tbody tr")
    await expect(rows).to_have_count(4)
    await expect(rows.nth(0)).to_contain_text("+14155550302")
    await expect(rows.nth(0)).to_contain_text("keyword")
    await expect(rows.nth(1)).to_contain_text("+16045550309")
    await expect(rows.nth(1)).to_contain_text("ticket for 0309")
    await expect(rows.nth(1)).to_contain_text("api")
    # (a phone hides the header row: the attribute is still the truth)
    since = page.locator("main thead th", has_text="Unsubscribed since")
    await expect(since).to_have_attribute("aria-sort", "descending")
    await operator.check("unsubscribed-newest")

    # the "since" header sorts oldest first; the number header by number
    # (on a phone, where rows are cards without a header, the Order field)
    async def sort(header: str, order: str) -> None:
        if operator.phone:
            await page.get_by_label("Order").select_option(label=order)
            await page.get_by_role("button", name="Search").click()
        else:
            column = page.get_by_role("columnheader", name=re.compile(header))
            await column.get_by_role("link").click()

    await sort("Unsubscribed since", "Oldest first")
    await expect(rows.nth(0)).to_contain_text("+14155550305")
    await expect(since).to_have_attribute("aria-sort", "ascending")
    await sort("Phone number", "By number")
    await expect(rows.nth(0)).to_contain_text("+14155550301")
    await expect(rows.nth(3)).to_contain_text("+16045550309")
    number_header = page.locator("main thead th", has_text="Phone number")
    await expect(number_header).to_have_attribute("aria-sort", "ascending")

    # search by number prefix (an area code is enough)
    await page.get_by_label("Number starts with").fill("415 555 030")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(3)
    await page.get_by_label("Number starts with").fill("604")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await operator.check("unsubscribed-prefix")

    # each number opens its history: the records of that number only
    await page.get_by_role("link", name="+16045550309").click()
    await expect(
        page.get_by_role("heading", name="History of +16045550309", level=1)
    ).to_be_visible()
    await expect(page.locator("main tbody tr")).to_have_count(1)
    await expect(page.locator("main tbody tr")).to_contain_text("ticket for 0309")
    await operator.check("number-history")


async def test_records_show_reply_sent_carrier_ids_and_zoned_times_with_a_utc_switch(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    await service.handle_mo(ADDR, "+14155550199", "STOP", carrier_ids="smsc-msg-77")
    for reply in await service.pending_replies():
        await service.mark_reply_sent(reply.id, "reply-1")
    page = operator.page
    await operator.sign_in(ADMIN.token)
    await operator.open("#/records", "Records")
    row = page.locator("main tbody tr").first
    await expect(row).to_contain_text("smsc-msg-77")

    # times name their zone (this browser runs in a US zone, not UTC)
    time_cell = row.locator("time").first
    shown = await time_cell.inner_text()
    assert shown.endswith(ZONE_NAMES[operator.size]), shown
    reply_cell = row.locator("[data-label='Reply sent'] time")
    await expect(reply_cell).to_have_text(re.compile(f"({'|'.join(ZONE_NAMES[operator.size])})$"))
    await operator.check("records-local")

    # the UTC switch shows the CSV's own text, and is remembered
    await page.get_by_label("Times in UTC").check()
    await expect(row.locator("time").first).to_have_text(re.compile(r"Z$"))
    utc_text = await row.locator("time").first.inner_text()
    await page.reload()
    await expect(page.get_by_label("Times in UTC")).to_be_checked()
    await expect(page.locator("main tbody tr").first.locator("time").first).to_have_text(utc_text)
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download CSV").click()
    text = Path(await (await info.value).path()).read_text()
    first = next(csv.DictReader(io.StringIO(text)))
    assert first["at"] == utc_text
    await operator.check("records-utc")

    # date ranges are checked before anything is searched
    await page.get_by_label(re.compile(r"^From")).fill("2026-03-02T10:00")
    await page.get_by_label(re.compile(r"^Until")).fill("2026-03-01T10:00")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("alert")).to_contain_text("“From” must be before “Until”")
    assert "since=" not in page.url
    await operator.check("records-bad-range")
    await page.get_by_label("Times in UTC").uncheck()


async def test_toasts_are_cleared_on_sign_out_and_viewer_controls_are_readable(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    await service.create_rule(ADDR, APP, {SmsType.MARKETING})
    page = operator.page
    await operator.sign_in(ADMIN.token)
    await operator.open("#/unsubscribed", "Unsubscribed users")
    await page.get_by_label("Phone number", exact=True).fill("+1 415 555 0177")
    await page.get_by_role("button", name="Unsubscribe", exact=True).click()
    toast = page.locator("#toast")
    await expect(toast).to_contain_text("+14155550177")
    await operator.sign_out()
    await expect(toast).to_be_hidden()
    assert await toast.inner_text() == ""

    # a viewer reads every setting: no faded text, and a reason why it is locked
    await operator.sign_in(VIEWER.token)
    await operator.open(f"#/addresses/{ADDR.replace('+', '%2B')}", ADDR)
    await expect(page.get_by_text("Read-only: your token has the viewer role.")).to_be_visible()
    box = page.get_by_label(f"Block marketing for app {APP}")
    await expect(box).to_be_disabled()
    await expect(box).to_have_attribute("title", re.compile("viewer role"))
    keywords = page.get_by_label("Opt-out keywords")
    style = await keywords.evaluate(
        "el => { const s = getComputedStyle(el); return [s.opacity, s.color, s.backgroundColor] }"
    )
    assert style[0] == "1"
    assert contrast(style[1], style[2]) >= 4.5, style
    await operator.check("viewer-address")


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb() colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# --- overview -------------------------------------------------------------------------------


async def test_overview_after_sign_in_shows_the_figures_and_a_chart_with_a_table(
    operator: Operator, server: Any
) -> None:
    _, service, metrics = server
    await given_addresses(service)
    await service.handle_mo(ADDR, "+14155550199", "STOP")
    await service.handle_mo(OTHER, "+14155550198", "STOP")
    await service.handle_mo(OTHER, "+14155550198", "START")
    await service.handle_mo(ADDR, "+14155550197", "please stop texting me")
    replies = await service.pending_replies()
    await service.mark_reply_sent(replies[0].id, "reply-1")
    metrics.submit.labels(app_id=APP, sms_type="marketing", decision="blocked").inc(3)
    metrics.submit.labels(app_id=APP, sms_type="marketing", decision="allowed").inc(9)
    page = operator.page
    await operator.sign_in(ADMIN.token)

    tiles = page.locator(".stats")
    await expect(tiles).to_contain_text("Unsubscribed numbers1")
    await expect(tiles).to_contain_text("Near-miss review queue1")
    await expect(tiles).to_contain_text(re.compile(r"Replies pending\s*2"))
    await expect(tiles).to_contain_text("100%")  # 1 of 1 confirmation within 5 minutes
    submits = page.get_by_role("row", name=re.compile(APP))
    await expect(submits).to_contain_text("9")
    await expect(submits).to_contain_text("25%")  # 3 of 12 blocked

    # the chart: an image with a title and a description, and a table of its numbers
    chart = page.get_by_role("img", name=re.compile("Opt-outs and opt-ins per day"))
    await expect(chart).to_be_visible()
    desc = await chart.locator("desc").text_content()
    assert desc is not None and "2 opt-outs and 1 opt-ins" in desc
    await page.get_by_text("Show the numbers as a table").click()
    days = page.locator(".chart-table tbody tr")
    await expect(days).to_have_count(30)
    await expect(days.last).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d\s*2\s*1"))
    await operator.check("overview")

    # the queue's size leads to the queue
    await page.get_by_role("link", name=re.compile("Near-miss review queue")).click()
    queue = page.get_by_role("heading", name="Near-miss review queue", level=1)
    await expect(queue).to_be_visible()
    await expect(page.locator("main tbody tr")).to_have_count(1)


# --- inbound messages and the review queue --------------------------------------------------


async def test_admin_reviews_the_near_miss_queue_and_a_viewer_only_reads_it(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    await service.handle_mo(ADDR, "+14155550199", "STOP")
    await service.handle_mo(ADDR, "+14155550198", "please stop texting me")
    await service.handle_mo(ADDR, "+14155550197", "STPO")
    page = operator.page
    await operator.sign_in(ADMIN.token)

    # the log lists every message, the filters narrow it
    await page.get_by_role("link", name="Inbound messages").click()
    rows = page.locator("main tbody tr")
    await expect(rows).to_have_count(3)
    await page.get_by_label("Action").select_option("opt_out")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("STOP")
    await operator.check("inbound-log")

    # the queue: opt out the first sender
    await page.get_by_role("link", name="Near-miss review queue").click()
    await expect(rows).to_have_count(2)
    await operator.check("review-queue")
    await page.get_by_role("button", name=f"Opt out +14155550198 at {ADDR}").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("please stop texting me")
    await dialog.get_by_role("button", name="Opt out").click()
    await expect(page.locator("#toast")).to_contain_text("Opted out +14155550198")
    await expect(rows).to_have_count(1)
    records, _ = await service.list_records(phone_number="+14155550198")
    assert [(r.source.value, r.actor) for r in records] == [("review", ADMIN.name)]

    # dismiss the other, with a reason, by keyboard only
    dismiss = page.get_by_role("button", name="Dismiss the message from +14155550197")
    for _ in range(80):
        await page.keyboard.press("Tab")
        if await dismiss.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the Dismiss button is not reachable with Tab")
    await page.keyboard.press("Enter")
    reason = page.get_by_label("Reason")
    await expect(reason).to_be_focused()
    ok = page.get_by_role("dialog").get_by_role("button", name="Dismiss")
    await expect(ok).to_be_disabled()  # no reason, no dismissal
    await page.keyboard.type("Asks about a parcel, not the texts")
    await expect(ok).to_be_enabled()
    await operator.check("dismiss-dialog")
    await page.keyboard.press("Tab")  # Cancel
    await page.keyboard.press("Tab")  # Dismiss
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("The review queue is empty.")).to_be_visible()

    # the log keeps both decisions, with who and why
    await page.get_by_role("link", name="All messages").click()
    await expect(page.get_by_role("row", name=re.compile("STPO"))).to_contain_text(
        "dismissed by ops-alice"
    )
    await expect(page.get_by_role("row", name=re.compile("STPO"))).to_contain_text("parcel")
    await expect(
        page.get_by_role("row", name=re.compile("please stop texting me"))
    ).to_contain_text("opted out by ops-alice")
    await operator.check("inbound-reviewed")

    # a viewer sees a waiting near-miss but no button to resolve it
    await service.handle_mo(ADDR, "+14155550196", "remove me from this list")
    await operator.sign_out()
    await operator.sign_in(VIEWER.token)
    await operator.open("#/inbound?near_miss=true&reviewed=false", "Near-miss review queue")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Awaiting an admin's review")
    await expect(page.locator("main button", has_text="Opt out")).to_have_count(0)
    await expect(page.locator("main button", has_text="Dismiss")).to_have_count(0)
    await operator.check("viewer-queue")


# --- guardrails and the audit log ------------------------------------------------------------


async def test_guardrails_on_the_address_page_and_their_audit_trail(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    page = operator.page
    await operator.sign_in(ADMIN.token)
    await operator.open(f"#/addresses/{ADDR.replace('+', '%2B')}", ADDR)
    await expect(page.locator(".warning-banner")).to_have_count(0)

    # app IDs of the configured accounts are offered
    options = await page.locator("datalist option").evaluate_all("os => os.map(o => o.value)")
    assert options == [APP, "1400000002"]

    # switching the confirmation off is allowed, and then shown as a warning
    await page.get_by_label("Send opt-out confirmation").uncheck()
    await page.get_by_role("button", name="Save replies").click()
    banner = page.locator(".warning-banner")
    await expect(banner).to_contain_text("opt-out confirmation is switched off")

    # keywords without the required words: refused, named, saved only on purpose
    await page.get_by_label("Opt-out keywords").fill("STOP\nARRET")
    await page.get_by_role("button", name="Save keywords").click()
    alert = page.get_by_role("alert").filter(has_text="noncompliant_keywords")
    await expect(alert).to_contain_text("QUIT")
    assert (await service.get_keywords(ADDR)).opt_out != ("STOP", "ARRET")
    await operator.check("noncompliant-keywords")
    await page.get_by_role("button", name="Save anyway").click()
    await expect(page.locator("#toast")).to_contain_text("audited")
    assert (await service.get_keywords(ADDR)).opt_out == ("STOP", "ARRET")
    await expect(banner).to_contain_text("lack QUIT")
    await operator.check("address-warnings")

    # extra near-miss phrases are saved per address
    await page.get_by_label("Extra near-miss phrases").fill("quit messaging\nbasta")
    await page.get_by_role("button", name="Save phrases").click()
    await expect(page.locator("#toast")).to_contain_text("near-miss phrases")
    assert list(await service.get_near_miss_phrases(ADDR)) == ["quit messaging", "basta"]

    # the audit log tells who did it, before and after
    await page.get_by_role("link", name="Audit log").click()
    entry = page.locator("main tbody tr", has_text="keywords.update")
    await expect(entry).to_contain_text("ops-alice")
    change = entry.get_by_role("listitem").filter(has_text="opt_out")
    await expect(change.locator("del")).to_contain_text("UNSUBSCRIBE")
    await expect(change.locator("ins")).to_have_text("STOP, ARRET")
    await operator.check("audit")
    await page.get_by_label("Actor (token name)").fill("auditor-bob")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("No audit entries match these filters.")).to_be_visible()
    await page.get_by_label(re.compile(r"^From")).fill("2026-05-02T00:00")
    await page.get_by_label(re.compile(r"^Until")).fill("2026-05-01T00:00")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("alert")).to_contain_text("must be before")


async def test_delete_says_what_it_releases_and_wants_the_address_typed(
    operator: Operator, server: Any
) -> None:
    _, service, _ = server
    await given_addresses(service)
    for n in ("+14155550301", "+14155550302"):
        await service.unsubscribe(n, OTHER, source=Source.API)
    page = operator.page
    await operator.sign_in(ADMIN.token)
    await operator.open(f"#/addresses/{OTHER.replace('+', '%2B')}", OTHER)
    await page.get_by_role("button", name="Delete address").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("2 unsubscribed numbers will be released")
    delete = dialog.get_by_role("button", name="Delete address")
    await expect(delete).to_be_disabled()
    await dialog.get_by_label(f"Type {OTHER} to confirm").fill(OTHER[:-1])
    await expect(delete).to_be_disabled()
    await operator.check("delete-dialog")
    await dialog.get_by_label(f"Type {OTHER} to confirm").fill(OTHER)
    await delete.click()
    await expect(page.get_by_role("heading", name="Inbound addresses", level=1)).to_be_visible()
    await expect(page.get_by_role("link", name=OTHER)).to_have_count(0)
    await expect(page.get_by_role("link", name=ADDR)).to_be_visible()
    records, _ = await service.list_records(inbound_address=OTHER)
    released = [r for r in records if r.status.value == "subscribed"]
    assert len(released) == 2 and all(r.actor == ADMIN.name for r in released)


async def test_resubscribe_needs_the_consent_evidence(operator: Operator, server: Any) -> None:
    _, service, _ = server
    await given_addresses(service)
    await service.unsubscribe("+14155550199", ADDR, source=Source.API)
    page = operator.page
    await operator.sign_in(ADMIN.token)
    await page.get_by_role("link", name="Unsubscribed users", exact=True).click()
    await page.get_by_role("button", name=f"Re-subscribe +14155550199 at {ADDR}").click()
    dialog = page.get_by_role("dialog")
    ok = dialog.get_by_role("button", name="Re-subscribe")
    await expect(ok).to_be_disabled()
    await dialog.get_by_label("Reason (the consent evidence)").fill("   ")
    await expect(ok).to_be_disabled()
    await dialog.get_by_label("Reason (the consent evidence)").fill("Texted START, ticket 5120")
    await operator.check("resubscribe-dialog")
    await ok.click()
    await expect(page.get_by_text("no unsubscribed users")).to_be_visible()
    records, _ = await service.list_records(phone_number="+14155550199")
    assert records[-1].reason == "Texted START, ticket 5120"
