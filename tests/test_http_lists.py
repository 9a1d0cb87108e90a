"""The unsubscribed list as the console pages through it: newest first or
by number, searched by number prefix, each row with the reason of its
opt-out, and a CSV that carries source and reason yet still re-imports."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import Api, assert_error  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]

ADDR = "+14155550100"


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[OptOutService]:
    """Overrides tests/http_fixtures.py: the orders, the prefix search and the
    reasons are SQL of each backend, so every test here runs on both."""
    svc = await OptOutService.open(store_url)
    yield svc
    await svc.close()


async def given_unsubscribed(api: Api, numbers: list[str], reason: str = "") -> None:
    for n in numbers:
        reply = await api.post(
            "/unsubscribed", {"phone_number": n, "inbound_address": ADDR, "reason": reason or n}
        )
        assert reply.status == 201, reply.text


async def all_pages(api: Api, query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        more = f"&cursor={cursor}" if cursor else ""
        page = await api.get(f"/unsubscribed?{query}&limit=2{more}")
        assert page.status == 200, page.text
        items += page.body["items"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            return items


async def test_newest_first_pages_through_every_row_once(api: Api) -> None:
    # given five opt-outs made one after the other (out of number order)
    await api.post("/inbound-addresses", {"address": ADDR})
    made = ["+14155550305", "+14155550301", "+14155550309", "+14155550302", "+16045550100"]
    await given_unsubscribed(api, made)

    # when the console pages through them newest first, then oldest first
    newest = await all_pages(api, "sort=newest")
    oldest = await all_pages(api, "sort=oldest")

    # then each order is the order of the opt-outs, with no row lost or repeated
    assert [i["phone_number"] for i in newest] == made[::-1]
    assert [i["phone_number"] for i in oldest] == made
    since = [i["since"] for i in newest]
    assert since == sorted(since, reverse=True)
    # and the number order (the default) is unchanged
    assert [i["phone_number"] for i in await all_pages(api, "sort=number")] == sorted(made)


async def test_search_by_number_prefix(api: Api) -> None:
    await api.post("/inbound-addresses", {"address": ADDR})
    await given_unsubscribed(api, ["+14155550301", "+14155559999", "+16045550100"])

    async def matching(prefix: str) -> list[str]:
        reply = await api.get(f"/unsubscribed?number_prefix={prefix}&sort=newest")
        assert reply.status == 200, reply.text
        return sorted(i["phone_number"] for i in reply.body["items"])

    assert await matching("%2B1415") == ["+14155550301", "+14155559999"]
    assert await matching("415555999") == ["+14155559999"]  # area code, no country code
    assert await matching("(604)") == ["+16045550100"]
    assert await matching("%2B14155550301") == ["+14155550301"]
    assert await matching("1212") == []
    assert await matching("123456789012") == []  # longer than any number
    assert_error(await api.get("/unsubscribed?number_prefix=abc"), 400, "bad_query")
    assert_error(await api.get("/unsubscribed?sort=sideways"), 400, "bad_query")


async def test_a_cursor_of_another_order_is_refused(api: Api) -> None:
    await api.post("/inbound-addresses", {"address": ADDR})
    await given_unsubscribed(api, ["+14155550301", "+14155550302", "+14155550303"])
    by_number = await api.get("/unsubscribed?limit=1")
    cursor = by_number.body["next_cursor"]
    assert_error(await api.get(f"/unsubscribed?sort=newest&cursor={cursor}"), 400, "bad_cursor")


async def test_rows_and_csv_carry_source_and_reason_and_the_csv_reimports(
    api: Api, service: OptOutService, tmp_path: Any
) -> None:
    # given a number unsubscribed by hand with a reason, and one by STOP
    await api.post("/inbound-addresses", {"address": ADDR})
    await given_unsubscribed(api, ["+14155550301"], reason="=Asked by phone, ticket 4411")
    await api.post("/mo", {"from": "+14155550302", "to": ADDR, "text": "STOP"})

    # then the list shows why each number is there
    items = (await api.get("/unsubscribed?sort=oldest")).body["items"]
    assert [(i["source"], i["reason"]) for i in items] == [
        ("api", "=Asked by phone, ticket 4411"),
        ("keyword", items[1]["reason"]),
    ]
    assert items[1]["reason"]  # the keyword path records a reason too

    # and so does the CSV, with the free text made harmless for spreadsheets
    text = (await api.get("/unsubscribed?format=csv")).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["phone_number", "inbound_address", "since", "source", "reason"]
    assert rows[1][3:] == ["api", "'=Asked by phone, ticket 4411"]

    # and the file still imports elsewhere (source and reason are informative)
    other = await OptOutService.open(f"sqlite:///{tmp_path}/other.db")
    try:
        await other.create_address(ADDR)
        report = await other.import_csv(text.splitlines())
        assert (report.imported, report.errors) == (2, ())
    finally:
        await other.close()
