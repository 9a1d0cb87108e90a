"""The HTTP API against hostile input (issue 8, holes 4, 5 and 6): no string
that is not Unicode scalar values gets past the body and query parsing, no
cursor reaches SQLite unbounded, no client value becomes a metric label,
and none of it ever gives a 500 (`make_api` fails the test on any 500).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics import Metrics
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import VIEWER, Api, assert_error  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]

ADDR = "+14155550100"
ADDR_PATH = "%2B14155550100"
USER = "+14155550199"
LONE = "bye \ud800"  # a lone surrogate: JSON can say it, UTF-8 cannot


async def add_address(api: Api) -> None:
    reply = await api.post("/inbound-addresses", {"address": ADDR, "description": "Main"})
    assert reply.status == 201, reply.text


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- lone surrogates (holes 4 and 6) ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", f"/inbound-addresses/{ADDR_PATH}", {"description": LONE}),
        ("PUT", f"/inbound-addresses/{ADDR_PATH}/replies",
         {"opt_out": LONE, "opt_in": None, "help": None}),
        ("POST", "/unsubscribed", {"phone_number": USER, "inbound_address": ADDR,
                                   "reason": LONE}),
        ("POST", "/mo", {"from": USER, "to": ADDR, "text": "STOP \udfff"}),
        ("POST", "/check", {"app_id": "\ud800", "sms_type": "marketing",
                            "phone_number": USER}),
        ("POST", "/inbound-addresses", {"address": "+14155550111", "description": "\udc80"}),
        ("PUT", f"/inbound-addresses/{ADDR_PATH}/keywords",
         {"opt_out": ["STOP", "QUIT\ud83d"], "opt_in": [], "help": []}),
        ("POST", "/unsubscribed", {"phone_number": USER, "inbound_address": ADDR,
                                   "reason": "ok", "\ud800": 1}),
    ],
)
async def test_a_lone_surrogate_anywhere_in_a_body_is_a_422_and_changes_nothing(
    api: Api, service: OptOutService, method: str, path: str, body: dict[str, Any]
) -> None:
    # Given an address with its default reply texts and no opt-outs,
    await add_address(api)
    before = await service.get_address(ADDR)

    # when a client sends text that is not valid Unicode,
    reply = await api.call(method, path, body)

    # then it is refused as unprocessable, and nothing was stored.
    assert_error(reply, 422, "invalid_text")
    assert await service.get_address(ADDR) == before
    assert service.unsubscribed_count() == 0
    records, _ = await service.list_records()
    assert records == []


async def test_a_stop_still_works_after_a_bad_reply_text_was_refused(api: Api) -> None:
    # The story behind hole 4: a reply text with a lone surrogate used to be
    # stored, after which every STOP at the address failed.
    await add_address(api)
    bad = await api.put(f"/inbound-addresses/{ADDR_PATH}/replies",
                        {"opt_out": LONE, "opt_in": None, "help": None})
    assert_error(bad, 422, "invalid_text")
    stop = await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})
    assert stop.status == 200 and stop.body["action"] == "opt_out", stop.text
    assert stop.body["handled"] is True


async def test_paired_surrogate_escapes_are_ordinary_text(api: Api) -> None:
    # "\ud83d\ude00" in JSON is one emoji, not two lone surrogates.
    await add_address(api)
    raw = '{"description": "party \\ud83d\\ude00"}'
    reply = await api.patch(f"/inbound-addresses/{ADDR_PATH}", data=raw,
                            headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.text
    assert reply.body["description"] == "party \U0001f600"


# --- cursors (hole 6) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/records", cursor(f"d:{2**64}")),
        ("/records", cursor(f"d:{2**63}")),
        ("/records", cursor("d:" + "9" * 40)),
        ("/records", cursor("d:-1")),
        ("/records", cursor("d:+5")),
        ("/records", cursor("d: 5")),
        ("/records", cursor("d:1_000")),
        ("/records", "!!!"),
        ("/records", cursor("\u00e9:1")),
        ("/unsubscribed", cursor(f"u:{2**64}")),
        ("/unsubscribed", cursor(f"u:{2**63}")),
        ("/unsubscribed", cursor("u:-9223372036854775809")),
        ("/unsubscribed", cursor("u:abc")),
        ("/unsubscribed", cursor("r:1")),
    ],
)
async def test_a_cursor_this_api_never_made_is_a_400(api: Api, path: str, bad: str) -> None:
    reply = await api.get(f"{path}?cursor={bad}")
    assert_error(reply, 400, "bad_cursor")


async def test_the_cursors_the_api_makes_still_page(api: Api) -> None:
    await add_address(api)
    for i in range(3):
        await api.post("/mo", {"from": f"+1415555020{i}", "to": ADDR, "text": "STOP"})
    seen: list[str] = []
    page = await api.get("/unsubscribed?limit=2")
    seen += [item["phone_number"] for item in page.body["items"]]
    page = await api.get(f"/unsubscribed?limit=2&cursor={page.body['next_cursor']}")
    seen += [item["phone_number"] for item in page.body["items"]]
    assert seen == ["+14155550200", "+14155550201", "+14155550202"]
    assert page.body["next_cursor"] is None


# --- /metrics and /check (hole 5) ----------------------------------------------------


async def test_check_never_turns_client_input_into_a_label(api: Api, metrics: Metrics) -> None:
    # Given an opted-out user,
    await add_address(api)
    await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})

    # when a viewer asks about it with the bug's app_id and with made-up ones,
    lone = await api.post("/check", {"app_id": "\ud800", "sms_type": "marketing",
                                     "phone_number": USER}, token=VIEWER)
    assert_error(lone, 422, "invalid_text")
    for app_id in ("app-\u00e9\U0001f600", "x" * 64, "1400000001"):
        reply = await api.post("/check", {"app_id": app_id, "sms_type": "marketing",
                                          "phone_number": USER}, token=VIEWER)
        assert reply.status == 200 and reply.body["allowed"] is False, reply.text
    allowed = await api.post("/check", {"app_id": "a", "sms_type": "marketing",
                                        "phone_number": "+14155550188"}, token=VIEWER)
    assert allowed.body["allowed"] is True

    # then /metrics still answers, /check is counted in optout_check_total by
    # decision only, and optout_submit_total (SMPP only) saw none of it.
    scrape = await api.get("/metrics", token=None, prefix="")
    assert scrape.status == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    assert "app-" not in scrape.text and "x" * 64 not in scrape.text
    r = metrics.registry
    assert r.get_sample_value("optout_check_total", {"decision": "blocked"}) == 3
    assert r.get_sample_value("optout_check_total", {"decision": "allowed"}) == 1
    assert not [s for s in families["optout_submit"].samples if s.name == "optout_submit_total"]
    assert not [s for s in families["optout_submit_out_of_scope"].samples
                if s.name == "optout_submit_out_of_scope_total"]


async def test_a_lone_surrogate_in_a_query_string_is_refused_too(api: Api) -> None:
    # Percent-encoded UTF-8 of a surrogate is not UTF-8: the query parser
    # never hands a handler such a string, whatever the route.
    reply = await api.get("/unsubscribed?phone_number=%ED%A0%80")
    assert reply.status in (400, 422)
    assert set(reply.body) == {"error"}
