"""The admin HTTP API (SPEC section 4) against a real SQLite store.

Each test is a small story an operator or an HTTP sender would live
through; every error is checked for its status and the JSON error shape.
`make_api` fails any test in which the server answered 500.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics import Metrics
from rules.service import OptOutService

# The shared fixtures (service, metrics, make_api, api) are a plugin module;
# registering it for assertion rewriting first keeps its asserts informative.
pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import ADMIN, VIEWER, Api, AppFactory, assert_error  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]

ADDR = "+14155550100"
ADDR_PATH = "%2B14155550100"
USER = "+14155550199"
CONSOLE = {"X-Optout-Client": "console"}
#: The opt-out words FCC 24-24 requires (PUT keywords refuses a list without them).
REQUIRED = ["STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE"]


async def add_address(api: Api, address: str = ADDR, description: str = "Main line") -> Any:
    reply = await api.post("/inbound-addresses", {"address": address, "description": description})
    assert reply.status == 201, reply.text
    return reply.body


# --- probes, metrics, OpenAPI -------------------------------------------------------


async def test_healthz_readyz_and_openapi_need_no_token(api: Api) -> None:
    health = await api.get("/healthz", token=None, prefix="")
    assert (health.status, health.body) == (200, {"status": "ok"})
    ready = await api.get("/readyz", token=None, prefix="")
    assert ready.status == 200
    assert ready.body == {"status": "ready", "store": True, "upstream": True}
    doc = await api.get("/openapi.json", token=None)
    assert doc.status == 200 and doc.body["openapi"].startswith("3.1")


async def test_readyz_is_503_and_says_the_upstream_is_down(make_api: AppFactory) -> None:
    api = await make_api(upstream_ready=lambda: False)
    ready = await api.get("/readyz", token=None, prefix="")
    assert ready.status == 503
    assert ready.body == {"status": "not_ready", "store": True, "upstream": False}


async def test_readyz_is_503_when_the_store_is_gone(
    make_api: AppFactory, service: OptOutService
) -> None:
    api = await make_api()
    await service.close()
    ready = await api.get("/readyz", token=None, prefix="")
    assert ready.status == 503
    assert ready.body["store"] is False and ready.body["upstream"] is True


async def test_probes_need_a_token_when_endpoints_are_closed(make_api: AppFactory) -> None:
    api = await make_api(open_endpoints=False)
    for path in ("/metrics", "/healthz", "/readyz"):
        assert_error(await api.get(path, token=None, prefix=""), 401, "unauthorized")
        assert (await api.get(path, token=VIEWER, prefix="")).status == 200


async def test_metrics_parse_and_count_checks_and_mos(api: Api, metrics: Metrics) -> None:
    await add_address(api)
    await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})
    await api.post(
        "/check", {"app_id": "1400000001", "sms_type": "marketing", "phone_number": USER}
    )
    reply = await api.get("/metrics", token=None, prefix="")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    assert {"optout_check", "optout_mo", "optout_unsubscribed_numbers"} <= set(families)
    r = metrics.registry
    assert r.get_sample_value("optout_unsubscribed_numbers") == 1
    assert (
        r.get_sample_value("optout_mo_total", {"inbound_address": ADDR, "action": "opt_out"}) == 1
    )
    assert r.get_sample_value("optout_check_total", {"decision": "blocked"}) == 1
    # optout_submit_total counts SMPP traffic only (SPEC section 7).
    assert not [s for s in families["optout_submit"].samples if s.name == "optout_submit_total"]


# --- authentication and roles ---------------------------------------------------------


async def test_requests_without_a_known_token_get_401(api: Api) -> None:
    missing = await api.get("/inbound-addresses", token=None)
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    unknown = await api.get(
        "/inbound-addresses", token=None, headers={"Authorization": "Bearer nope"}
    )
    assert_error(unknown, 401, "unauthorized")
    basic = await api.get(
        "/inbound-addresses", token=None, headers={"Authorization": "Basic YWRtaW4="}
    )
    assert_error(basic, 401)
    # an unknown API route does not tell strangers whether it exists
    assert_error(await api.get("/no-such-thing", token=None), 401)


async def test_whoami_names_the_token_and_its_role(api: Api) -> None:
    assert (await api.get("/whoami")).body == {"name": "ops-alice", "role": "admin"}
    assert (await api.get("/whoami", token=VIEWER)).body == {
        "name": "auditor-bob",
        "role": "viewer",
    }


async def test_viewer_reads_and_checks_but_cannot_change_anything(api: Api) -> None:
    await add_address(api)
    assert (await api.get("/inbound-addresses", token=VIEWER)).status == 200
    assert (await api.get(f"/inbound-addresses/{ADDR_PATH}", token=VIEWER)).status == 200
    check = await api.post(
        "/check",
        {"app_id": "a", "sms_type": "marketing", "phone_number": USER},
        token=VIEWER,
    )
    assert check.status == 200
    writes: list[tuple[str, str, Any]] = [
        ("POST", "/inbound-addresses", {"address": "+14155550101"}),
        ("PATCH", f"/inbound-addresses/{ADDR_PATH}", {"description": "x"}),
        ("DELETE", f"/inbound-addresses/{ADDR_PATH}", None),
        ("PUT", f"/inbound-addresses/{ADDR_PATH}/default-rule", {"sms_types": []}),
        (
            "POST",
            f"/inbound-addresses/{ADDR_PATH}/blocking-rules",
            {"app_id": "a", "sms_types": []},
        ),
        ("POST", "/unsubscribed", {"phone_number": USER, "inbound_address": ADDR}),
        ("POST", "/mo", {"from": USER, "to": ADDR, "text": "STOP"}),
    ]
    for method, path, body in writes:
        assert_error(await api.call(method, path, body, token=VIEWER), 403, "forbidden")
    # nothing changed
    assert (await api.get("/unsubscribed")).body["items"] == []
    assert len((await api.get("/inbound-addresses")).body["items"]) == 1


# --- inbound addresses ------------------------------------------------------------------


async def test_inbound_address_lifecycle(api: Api) -> None:
    created = await add_address(api, "+1 (415) 555-0100", "Main line")
    assert created["address"] == ADDR
    assert created["description"] == "Main line"
    assert created["default_rule"] == {"sms_types": ["marketing", "notification", "verification"]}
    assert "STOP" in created["keywords"]["opt_out"]
    assert created["keywords"]["match"] == "leading"
    assert created["replies"]["opt_out"]  # confirmations are on by default
    assert created["rules"] == []
    assert created["created_at"].endswith("Z")

    listed = await api.get("/inbound-addresses")
    assert [a["address"] for a in listed.body["items"]] == [ADDR]

    # the path accepts the address URL-encoded, without '+', or spelled loosely
    for spelling in (ADDR_PATH, "14155550100", "4155550100"):
        got = await api.get(f"/inbound-addresses/{spelling}")
        assert got.status == 200 and got.body["address"] == ADDR

    patched = await api.patch(f"/inbound-addresses/{ADDR_PATH}", {"description": "Support line"})
    assert patched.status == 200 and patched.body["description"] == "Support line"

    deleted = await api.delete(f"/inbound-addresses/{ADDR_PATH}")
    assert deleted.status == 204 and deleted.text == ""
    assert_error(await api.get(f"/inbound-addresses/{ADDR_PATH}"), 404, "not_found")
    assert_error(await api.delete(f"/inbound-addresses/{ADDR_PATH}"), 404)


async def test_short_codes_are_inbound_addresses_too(api: Api) -> None:
    created = await add_address(api, "55555", "Short code")
    assert created["address"] == "55555"
    assert (await api.get("/inbound-addresses/55555")).status == 200


async def test_duplicate_address_is_a_409(api: Api) -> None:
    await add_address(api)
    again = await api.post("/inbound-addresses", {"address": "14155550100"})
    assert_error(again, 409, "conflict")


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+18765550100", "out_of_scope"),  # Jamaica shares +1 but is out of scope
        ("+442079460958", "out_of_scope"),  # United Kingdom
        ("hello", "invalid_number"),
        ("+1 415 555", "invalid_number"),
    ],
)
async def test_addresses_outside_us_canada_are_422(api: Api, number: str, code: str) -> None:
    reply = await api.post("/inbound-addresses", {"address": number})
    assert_error(reply, 422, code)


async def test_unknown_addresses_in_paths_are_404(api: Api) -> None:
    assert_error(await api.get("/inbound-addresses/%2B14155550111"), 404)
    assert_error(await api.get("/inbound-addresses/not-a-number"), 404)
    assert_error(await api.get("/inbound-addresses/not-a-number/keywords"), 404)


# --- keywords, replies, rules ---------------------------------------------------------------


async def test_keywords_replace_and_keep_match_mode_when_omitted(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}/keywords"
    put = await api.put(
        base,
        {"opt_out": [*REQUIRED, "ARRET"], "opt_in": ["START"], "help": ["HELP"], "match": "exact"},
    )
    assert put.status == 200
    assert put.body == {
        "opt_out": [*REQUIRED, "ARRET"],
        "opt_in": ["START"],
        "help": ["HELP"],
        "match": "exact",
    }
    again = await api.put(base, {"opt_out": REQUIRED, "opt_in": ["START"], "help": ["INFO"]})
    assert again.body["match"] == "exact"
    assert (await api.get(base)).body == again.body
    assert_error(
        await api.put(base, {"opt_out": [], "opt_in": [], "help": [], "match": "fuzzy"}), 422
    )


async def test_replies_can_be_edited_and_switched_off(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}/replies"
    put = await api.put(
        base,
        {
            "opt_out": "You are unsubscribed. Text START to rejoin.",
            "opt_in": None,
            "help": "Call 555",
        },
    )
    assert put.status == 200
    assert put.body == {
        "opt_out": "You are unsubscribed. Text START to rejoin.",
        "opt_in": None,
        "help": "Call 555",
    }
    assert (await api.get(base)).body == put.body
    # a STOP now gets the edited confirmation
    mo = await api.post("/mo", {"from": USER, "to": ADDR, "text": "stop"})
    assert mo.body["reply"] == "You are unsubscribed. Text START to rejoin."


async def test_blocking_rules_lifecycle(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}/blocking-rules"
    created = await api.post(base, {"app_id": "1400000001", "sms_types": ["marketing"]})
    assert created.status == 201
    assert created.body == {
        "inbound_address": ADDR,
        "app_id": "1400000001",
        "sms_types": ["marketing"],
    }
    assert_error(
        await api.post(base, {"app_id": "1400000001", "sms_types": ["notification"]}),
        409,
        "conflict",
    )
    replaced = await api.put(
        f"{base}/1400000001", {"sms_types": ["verification", "marketing", "marketing"]}
    )
    assert replaced.body["sms_types"] == ["marketing", "verification"]
    listed = await api.get(base)
    assert listed.body == {"items": [replaced.body]}
    detail = await api.get(f"/inbound-addresses/{ADDR_PATH}")
    assert detail.body["rules"] == [replaced.body]
    assert (await api.delete(f"{base}/1400000001")).status == 204
    assert_error(await api.delete(f"{base}/1400000001"), 404)
    assert_error(await api.put(f"{base}/1400000001", {"sms_types": []}), 404)
    assert_error(await api.post(base, {"app_id": "x", "sms_types": ["spam"]}), 422, "invalid_value")


async def test_default_rule_can_be_narrowed(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}/default-rule"
    assert (await api.get(base)).body == {
        "sms_types": ["marketing", "notification", "verification"]
    }
    put = await api.put(base, {"sms_types": ["marketing"]})
    assert put.body == {"sms_types": ["marketing"]}
    assert (await api.get(base)).body == put.body


# --- unsubscribed users and records ----------------------------------------------------------


async def test_unsubscribe_by_hand_then_check_blocks_then_resubscribe(api: Api) -> None:
    await add_address(api)
    await api.post(
        f"/inbound-addresses/{ADDR_PATH}/blocking-rules",
        {"app_id": "1400000001", "sms_types": ["marketing"]},
    )
    added = await api.post(
        "/unsubscribed",
        {"phone_number": "(415) 555-0199", "inbound_address": ADDR, "reason": "asked on the phone"},
    )
    assert added.status == 201
    assert added.body["status"] == "unsubscribed"
    assert added.body["source"] == "api"
    assert added.body["actor"] == "ops-alice"
    assert_error(
        await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR}), 409
    )

    listed = await api.get("/unsubscribed")
    (item,) = listed.body["items"]
    assert item["phone_number"] == USER and item["inbound_address"] == ADDR
    assert item["source"] == "api" and item["since"].endswith("Z")
    assert listed.body["next_cursor"] is None

    def check(app_id: str, sms_type: str) -> dict[str, str]:
        return {"app_id": app_id, "sms_type": sms_type, "phone_number": "4155550199"}

    blocked = await api.post("/check", check("1400000001", "marketing"))
    assert blocked.body == {
        "allowed": False,
        "in_scope": True,
        "blocked_by": [{"inbound_address": ADDR, "rule": "1400000001", "sms_types": ["marketing"]}],
    }
    assert (await api.post("/check", check("1400000001", "notification"))).body["allowed"]
    other_app = await api.post("/check", check("1400000002", "notification"))
    assert other_app.body["allowed"] is False  # the default rule blocks everything
    assert other_app.body["blocked_by"][0]["rule"] == "default"

    removed = await api.delete(f"/unsubscribed/{ADDR_PATH}/%2B14155550199?reason=web+form+consent")
    assert removed.status == 200 and removed.body["status"] == "subscribed"
    assert (await api.get("/unsubscribed")).body["items"] == []
    assert (await api.post("/check", check("1400000001", "marketing"))).body["allowed"]
    assert_error(await api.delete(f"/unsubscribed/{ADDR_PATH}/%2B14155550199?reason=x"), 404)

    records = (await api.get("/records")).body
    statuses = [(r["status"], r["actor"], r["source"]) for r in records["items"]]
    assert statuses == [("subscribed", "ops-alice", "api"), ("unsubscribed", "ops-alice", "api")]
    assert records["items"][1]["reason"] == "asked on the phone"


async def test_console_changes_are_recorded_as_console(api: Api) -> None:
    await add_address(api)
    added = await api.post(
        "/unsubscribed", {"phone_number": USER, "inbound_address": ADDR}, headers=CONSOLE
    )
    assert added.body["source"] == "console"
    assert (await api.get("/unsubscribed")).body["items"][0]["source"] == "console"


async def test_check_out_of_scope_and_invalid_numbers(api: Api) -> None:
    jamaica = await api.post(
        "/check", {"app_id": "a", "sms_type": "marketing", "phone_number": "+18765550100"}
    )
    assert jamaica.body == {"allowed": True, "in_scope": False, "blocked_by": []}
    assert_error(
        await api.post("/check", {"app_id": "a", "sms_type": "marketing", "phone_number": "x"}),
        422,
        "invalid_number",
    )
    assert_error(
        await api.post("/check", {"app_id": "a", "sms_type": "spam", "phone_number": USER}),
        422,
    )


async def test_mo_stop_shows_in_unsubscribed_and_records(api: Api) -> None:
    await add_address(api)
    mo = await api.post("/mo", {"from": USER, "to": "14155550100", "text": "Stop."})
    assert mo.status == 200
    assert mo.body["action"] == "opt_out" and mo.body["handled"] is True
    assert mo.body["keyword"] == "STOP"
    assert isinstance(mo.body["reply"], str) and mo.body["reply"]

    (item,) = (await api.get(f"/unsubscribed?inbound_address={ADDR_PATH}")).body["items"]
    assert item["phone_number"] == USER and item["source"] == "keyword"

    (record,) = (await api.get(f"/records?phone_number={USER.replace('+', '%2B')}")).body["items"]
    assert record["status"] == "unsubscribed" and record["source"] == "keyword"
    assert record["raw_text"] == "Stop." and record["keyword"] == "STOP"
    assert record["actor"] is None

    # a second STOP is recorded but not answered again
    again = await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})
    assert again.body["reply"] is None

    start = await api.post("/mo", {"from": USER, "to": ADDR, "text": "start"})
    assert start.body["action"] == "opt_in"
    assert (await api.get("/unsubscribed")).body["items"] == []


async def test_mo_to_an_unknown_address_is_not_handled(api: Api) -> None:
    mo = await api.post("/mo", {"from": USER, "to": "+14155550123", "text": "STOP"})
    assert mo.status == 200
    assert mo.body["handled"] is False and mo.body["action"] == "opt_out"
    assert mo.body["notes"]


async def test_unsubscribed_search_and_pagination(api: Api) -> None:
    await add_address(api)
    await add_address(api, "+14155550101", "Second")
    numbers = [f"+1415555020{i}" for i in range(5)]
    for n in numbers:
        await api.post("/unsubscribed", {"phone_number": n, "inbound_address": ADDR})
    await api.post("/unsubscribed", {"phone_number": numbers[0], "inbound_address": "+14155550101"})

    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        path = "/unsubscribed?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(path)).body
        pages += 1
        assert len(page["items"]) <= 2
        seen += [(i["phone_number"], i["inbound_address"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 6 and len(set(seen)) == 6

    by_number = (await api.get("/unsubscribed?phone_number=4155550200")).body["items"]
    assert {i["inbound_address"] for i in by_number} == {ADDR, "+14155550101"}
    by_address = (await api.get("/unsubscribed?inbound_address=14155550101")).body["items"]
    assert [i["phone_number"] for i in by_address] == [numbers[0]]


async def test_records_filters_by_time(api: Api) -> None:
    await add_address(api)
    before = time.time() - 1
    await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR})
    after = time.time() + 1
    iso_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before))
    assert len((await api.get(f"/records?since={iso_before}")).body["items"]) == 1
    assert len((await api.get(f"/records?since={after:.3f}")).body["items"]) == 0
    assert len((await api.get(f"/records?until={int(before)}")).body["items"]) == 0
    both = await api.get(
        f"/records?since={int(before)}&until={int(after)}&inbound_address={ADDR_PATH}"
    )
    assert len(both.body["items"]) == 1


async def test_records_csv_streams_every_matching_record(api: Api, service: OptOutService) -> None:
    await add_address(api)
    # More rows than one page of the store's iterator.
    lines = ["phone_number,inbound_address"] + [f"+1415556{i:04d},{ADDR}" for i in range(2500)]
    report = await service.import_csv(lines, actor="importer")
    assert report.imported == 2500
    await api.post("/mo", {"from": USER, "to": ADDR, "text": "=cmd|' /C calc'!A0"})
    await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})

    async with api.client.get(
        "/api/v1/records?format=csv",
        headers={"Authorization": f"Bearer {ADMIN.token}"},
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "attachment" in resp.headers["Content-Disposition"]
        body = (await resp.read()).decode("utf-8")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["id", "at", "phone_number", "inbound_address"]
    assert len(rows) == 1 + 2500 + 1
    assert rows[1][2] == "+14155560000" and rows[1][5] == "import"
    last = dict(zip(rows[0], rows[-1], strict=True))
    assert last["phone_number"] == USER and last["keyword"] == "STOP"

    only_user = await api.get(f"/records?format=csv&phone_number={USER.replace('+', '%2B')}")
    assert only_user.text.count("\r\n") == 2


async def test_unsubscribed_csv_export_can_be_imported_elsewhere(api: Api, tmp_path: Any) -> None:
    await add_address(api)
    await add_address(api, "55555", "Short code")
    for number, address in [(USER, ADDR), ("+14155550198", ADDR), (USER, "55555")]:
        await api.post("/unsubscribed", {"phone_number": number, "inbound_address": address})

    export = await api.get("/unsubscribed?format=csv")
    assert export.status == 200 and export.headers["Content-Type"].startswith("text/csv")
    lines = export.text.splitlines()
    assert lines[0] == "phone_number,inbound_address,since,source,reason"
    assert len(lines) == 4
    only_short = await api.get("/unsubscribed?format=csv&inbound_address=55555")
    assert only_short.text.splitlines()[1:] == [line for line in lines[1:] if ",55555," in line]

    other = await OptOutService.open(f"sqlite:///{tmp_path}/other.db")
    try:
        await other.create_address(ADDR)
        await other.create_address("55555")
        report = await other.import_csv(lines)
        assert (report.imported, report.errors) == (3, ())
    finally:
        await other.close()


async def test_csv_neutralises_spreadsheet_formulas(api: Api, service: OptOutService) -> None:
    await add_address(api)
    await api.post(
        "/unsubscribed",
        {"phone_number": USER, "inbound_address": ADDR, "reason": '=HYPERLINK("http://x")'},
    )
    text = (await api.get("/records?format=csv")).text
    rows = list(csv.reader(io.StringIO(text)))
    assert dict(zip(rows[0], rows[1], strict=True))["reason"].startswith("'=")


# --- malformed requests --------------------------------------------------------------------


async def test_malformed_requests_are_400(api: Api) -> None:
    await add_address(api)
    cases: list[tuple[str, str, Any, bytes | None, str]] = [
        ("POST", "/inbound-addresses", None, b"{not json", "malformed_json"),
        ("POST", "/inbound-addresses", None, b"", "malformed_json"),
        ("POST", "/inbound-addresses", None, b"[1, 2]", "wrong_type"),
        ("POST", "/inbound-addresses", None, b'{"address": NaN}', "malformed_json"),
        ("POST", "/inbound-addresses", {"address": 14155550100}, None, "wrong_type"),
        ("POST", "/inbound-addresses", {"address": ADDR, "colour": "red"}, None, "unknown_field"),
        ("POST", "/inbound-addresses", {"description": "no address"}, None, "missing_field"),
        (
            "PUT",
            f"/inbound-addresses/{ADDR_PATH}/default-rule",
            {"sms_types": "marketing"},
            None,
            "wrong_type",
        ),
        (
            "PUT",
            f"/inbound-addresses/{ADDR_PATH}/replies",
            {"opt_out": 5, "opt_in": None, "help": None},
            None,
            "wrong_type",
        ),
        (
            "POST",
            "/check",
            {"app_id": "a", "sms_type": "marketing", "phone_number": True},
            None,
            "wrong_type",
        ),
        ("POST", "/mo", {"from": USER, "to": ADDR}, None, "missing_field"),
        ("GET", "/unsubscribed?limit=0", None, None, "bad_query"),
        ("GET", "/unsubscribed?limit=1001", None, None, "bad_query"),
        ("GET", "/unsubscribed?limit=ten", None, None, "bad_query"),
        ("GET", "/unsubscribed?cursor=bogus", None, None, "bad_cursor"),
        ("GET", "/records?cursor=%25%25%25", None, None, "bad_cursor"),
        ("GET", "/unsubscribed?colour=red", None, None, "bad_query"),
        ("GET", "/unsubscribed?limit=1&limit=2", None, None, "bad_query"),
        ("GET", "/unsubscribed?phone_number=hello", None, None, "bad_query"),
        ("GET", "/records?since=yesterday", None, None, "bad_query"),
        ("GET", "/records?format=xml", None, None, "bad_query"),
        ("GET", "/inbound-addresses?verbose=1", None, None, "bad_query"),
    ]
    for method, path, body, raw, code in cases:
        headers = {"Content-Type": "application/json"} if raw is not None else None
        reply = await api.call(method, path, body, data=raw, headers=headers)
        assert reply.status == 400, (method, path, reply.status, reply.text)
        assert_error(reply, 400, code)


async def test_a_cursor_from_another_listing_is_400(api: Api) -> None:
    await add_address(api)
    for n in range(3):
        await api.post(
            "/unsubscribed", {"phone_number": f"+1415555030{n}", "inbound_address": ADDR}
        )
    cursor = (await api.get("/unsubscribed?limit=1")).body["next_cursor"]
    assert cursor
    assert_error(await api.get(f"/records?cursor={cursor}"), 400, "bad_cursor")


async def test_oversized_body_is_413_json(make_api: AppFactory) -> None:
    api = await make_api(max_body_bytes=1024)
    big = {"address": ADDR, "description": "x" * 4000}
    assert_error(await api.post("/inbound-addresses", big), 413, "body_too_large")
    # a body under the limit still works
    assert (await api.post("/inbound-addresses", {"address": ADDR})).status == 201


async def test_too_long_values_are_422(api: Api) -> None:
    reply = await api.post("/inbound-addresses", {"address": ADDR, "description": "x" * 501})
    assert_error(reply, 422, "too_long")


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert_error(await api.get("/nope", prefix=""), 404, "not_found")
    wrong = await api.call("PATCH", "/unsubscribed")
    assert_error(wrong, 405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]


async def test_store_outage_is_503_not_500(api: Api, service: OptOutService) -> None:
    await add_address(api)
    await service.close()
    reply = await api.get("/records")
    assert_error(reply, 503, "store_unavailable")
    reply = await api.post("/mo", {"from": USER, "to": ADDR, "text": "STOP"})
    assert_error(reply, 503, "store_unavailable")


async def test_console_is_served_with_a_strict_content_security_policy(api: Api) -> None:
    page = await api.get("/", token=None, prefix="")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/app.js"' in page.text
    script = await api.get("/static/app.js", token=None, prefix="")
    assert script.status == 200 and "text/javascript" in script.headers["Content-Type"]
    assert_error(await api.get("/static/..%2Fapp.py", token=None, prefix=""), 404)
    assert_error(await api.get("/static/secret.txt", token=None, prefix=""), 404)


# --- small parts with a promise of their own ------------------------------------------------


def test_token_lookup_compares_every_token_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.http import auth

    compared: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    book = auth.TokenBook([ADMIN, VIEWER])
    assert book.lookup(ADMIN.token) == ADMIN  # a hit on the first token...
    assert len(compared) == 2  # ...still compares against every token
    assert book.lookup("nope") is None and len(compared) == 4
    assert "secret" not in repr(ADMIN)


