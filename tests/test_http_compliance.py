"""The compliance operator's API (issue 10, SPEC section 7) against a real
SQLite store: the inbound message log, near-miss review, guardrails, the
audit log, the overview figures and the application list.

Each test is a story an operator lives through; every refusal is checked
for its status, code and the JSON error shape, and viewers are refused
every write. `make_api` fails any test in which the server answered 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http import make_app
from gateway.http.context import AppInfo
from gateway.server import watch_service
from metrics import Metrics
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import (  # noqa: E402
    ADMIN,
    TOKENS,
    VIEWER,
    Api,
    AppFactory,
    assert_error,
)

pytest_plugins = ["tests.http_fixtures"]


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[OptOutService]:
    """These stories run on both store backends (SQLite file, PostgreSQL)."""
    svc = await OptOutService.open(store_url)
    yield svc
    await svc.close()

ADDR = "+14155550100"
ADDR_PATH = quote(ADDR, safe="")
OTHER = "+18005550199"
USER = "+14155550199"
USER2 = "+16045550123"
REQUIRED = ["STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE"]


async def add_address(api: Api, address: str = ADDR) -> None:
    reply = await api.post("/inbound-addresses", {"address": address, "description": "line"})
    assert reply.status == 201, reply.text


async def mo(api: Api, text: str, sender: str = USER, to: str = ADDR) -> Any:
    reply = await api.post("/mo", {"from": sender, "to": to, "text": text})
    assert reply.status == 200, reply.text
    return reply.body


async def messages(api: Api, query: str = "", **kw: Any) -> list[dict[str, Any]]:
    reply = await api.get(f"/inbound-messages{query}", **kw)
    assert reply.status == 200, reply.text
    items: list[dict[str, Any]] = reply.body["items"]
    return items


async def audit(api: Api, query: str = "") -> list[dict[str, Any]]:
    reply = await api.get(f"/audit{query}")
    assert reply.status == 200, reply.text
    items: list[dict[str, Any]] = reply.body["items"]
    return items


# --- the inbound message log ------------------------------------------------------------


async def test_every_mo_is_logged_matched_or_not(api: Api) -> None:
    # given one configured address
    await add_address(api)
    # when MOs of every kind arrive, at the configured address and elsewhere
    await mo(api, "STOP")
    await mo(api, "HELP")
    await mo(api, "see you at noon")
    await mo(api, "please stop texting me", sender=USER2)
    await mo(api, "STOP", to="+18885550100")  # an address nobody configured
    await mo(api, "STOP", sender="+442079460958")  # outside US/Canada
    await mo(api, "START")
    # then every one is in the log, newest first, as it was handled
    items = await messages(api)
    seen = [(m["phone_number"], m["inbound_address"], m["text"], m["action"], m["keyword"],
             m["near_miss"]) for m in items]
    assert seen == [
        (USER, ADDR, "START", "opt_in", "START", False),
        ("+442079460958", ADDR, "STOP", "opt_out", "STOP", False),
        (USER, "+18885550100", "STOP", "opt_out", "STOP", False),
        (USER2, ADDR, "please stop texting me", "none", None, True),
        (USER, ADDR, "see you at noon", "none", None, False),
        (USER, ADDR, "HELP", "help", "HELP", False),
        (USER, ADDR, "STOP", "opt_out", "STOP", False),
    ]
    assert all(m["review"] is None and m["at"].endswith("Z") for m in items)
    assert len({m["id"] for m in items}) == 7
    # and the keyword opt-out's record links the message it answered
    records = (await api.get("/records")).body["items"]
    stop_record = records[-1]
    assert stop_record["inbound_message_id"] == items[-1]["id"]


async def test_log_filters_and_cursor_pages(api: Api) -> None:
    await add_address(api)
    await add_address(api, OTHER)
    await mo(api, "STOP")
    await mo(api, "STPO", sender=USER2)
    await mo(api, "hello", to=OTHER)
    await mo(api, "HELP", sender=USER2, to=OTHER)

    def texts(items: list[dict[str, Any]]) -> list[str]:
        return [m["text"] for m in items]

    assert texts(await messages(api, f"?inbound_address={quote(OTHER)}")) == ["HELP", "hello"]
    assert texts(await messages(api, "?phone_number=(604)%20555-0123")) == ["HELP", "STPO"]
    assert texts(await messages(api, "?action=none")) == ["hello", "STPO"]
    assert texts(await messages(api, "?near_miss=true")) == ["STPO"]
    assert texts(await messages(api, "?near_miss=false")) == ["HELP", "hello", "STOP"]
    assert texts(await messages(api, "?reviewed=false&near_miss=true")) == ["STPO"]
    assert await messages(api, "?reviewed=true") == []
    assert await messages(api, "?since=2000-01-01T00:00:00Z&until=2001-01-01") == []
    assert len(await messages(api, "?since=1000000000")) == 4

    # pages of one, newest first, each page once
    pages: list[str] = []
    cursor = ""
    while True:
        reply = await api.get(f"/inbound-messages?limit=1{cursor}")
        pages += texts(reply.body["items"])
        if reply.body["next_cursor"] is None:
            break
        cursor = f"&cursor={reply.body['next_cursor']}"
    assert pages == ["HELP", "hello", "STPO", "STOP"]

    for bad in ("?near_miss=maybe", "?action=shout", "?limit=0", "?cursor=nonsense",
                "?since=yesterday", "?phone_number=abc", "?colour=red"):
        assert_error(await api.get(f"/inbound-messages{bad}"), 400)


async def test_viewers_read_the_log_but_never_review(api: Api) -> None:
    await add_address(api)
    await mo(api, "please stop")
    (item,) = await messages(api, token=VIEWER)
    assert item["near_miss"] is True
    for path, body in ((f"/inbound-messages/{item['id']}/opt-out", None),
                       (f"/inbound-messages/{item['id']}/dismiss", {"reason": "chat"})):
        assert_error(await api.post(path, body, token=VIEWER), 403, "forbidden")
    assert (await messages(api))[0]["review"] is None
    assert_error(await api.get("/inbound-messages", token=None), 401)


async def test_numbers_and_texts_never_reach_the_logs(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_address(api)
    await mo(api, "please stop texting me about the sale")
    await mo(api, "STOP", to="+18885550100")
    (item, *_) = await messages(api)
    await api.post(f"/inbound-messages/{item['id']}/dismiss", {"reason": "wrong person"})
    logged = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    for secret in ("4155550199", "5550199", "texting me about", "8885550100"):
        assert secret not in logged


# --- near-miss review ---------------------------------------------------------------------


async def test_review_opt_out_unsubscribes_with_source_review(
    api: Api, metrics: Metrics
) -> None:
    # given a near-miss at a configured address
    await add_address(api)
    body = await mo(api, "please STOP sending these")
    assert body["action"] == "none"
    (item,) = await messages(api, "?near_miss=true&reviewed=false")
    assert metrics.registry.get_sample_value(
        "optout_near_miss_total", {"inbound_address": ADDR}) == 1
    # when an admin reviews it as an opt-out
    reply = await api.post(f"/inbound-messages/{item['id']}/opt-out")
    # then the sender is unsubscribed, recorded with source review, the
    # reviewer as actor and the message linked
    assert reply.status == 200, reply.text
    record = reply.body["record"]
    assert (record["phone_number"], record["inbound_address"], record["status"],
            record["source"], record["actor"], record["inbound_message_id"]) == (
        USER, ADDR, "unsubscribed", "review", ADMIN.name, item["id"])
    review = reply.body["message"]["review"]
    assert review["decision"] == "opt_out" and review["actor"] == ADMIN.name
    (unsub,) = (await api.get("/unsubscribed")).body["items"]
    assert unsub["phone_number"] == USER and unsub["source"] == "review"
    check = await api.post("/check", {"app_id": "a", "sms_type": "marketing",
                                      "phone_number": USER})
    assert check.body["allowed"] is False
    assert await messages(api, "?near_miss=true&reviewed=false") == []
    assert (await messages(api, "?reviewed=true"))[0]["review"]["decision"] == "opt_out"
    # a second review of the same message is a conflict, either way
    assert_error(await api.post(f"/inbound-messages/{item['id']}/opt-out"), 409,
                 "already_reviewed")
    assert_error(await api.post(f"/inbound-messages/{item['id']}/dismiss",
                                {"reason": "oops"}), 409, "already_reviewed")
    # and the decision is in the audit log
    (entry, *_) = await audit(api)
    assert (entry["action"], entry["actor"], entry["after"]["record_id"]) == (
        "review.opt_out", ADMIN.name, record["id"])


async def test_nothing_is_unsubscribed_by_the_flag_alone(api: Api) -> None:
    await add_address(api)
    await mo(api, "STPO")
    await mo(api, "remove me from this list")
    assert len(await messages(api, "?near_miss=true")) == 2
    assert (await api.get("/unsubscribed")).body["items"] == []
    assert (await api.get("/records")).body["items"] == []


async def test_dismiss_needs_a_reason_and_is_recorded(api: Api) -> None:
    await add_address(api)
    await mo(api, "I'll stop by the shop")
    (item,) = await messages(api)
    url = f"/inbound-messages/{item['id']}/dismiss"
    assert_error(await api.post(url, {}), 400, "missing_field")
    assert_error(await api.post(url, {"reason": ""}), 422)
    assert_error(await api.post(url, {"reason": "   "}), 422, "reason_required")
    reply = await api.post(url, {"reason": "a visit, not an opt-out"})
    assert reply.status == 200, reply.text
    assert reply.body["record"] is None
    assert reply.body["message"]["review"]["decision"] == "dismissed"
    assert reply.body["message"]["review"]["reason"] == "a visit, not an opt-out"
    assert (await api.get("/unsubscribed")).body["items"] == []
    assert_error(await api.post(url, {"reason": "again"}), 409, "already_reviewed")
    (entry, *_) = await audit(api)
    assert entry["action"] == "review.dismiss" and entry["after"]["reason"].startswith("a visit")


async def test_review_refusals(api: Api) -> None:
    await add_address(api)
    await mo(api, "STOP")  # acted by keyword
    await mo(api, "please stop", to="+18885550100")  # an address nobody configured
    await mo(api, "please stop", sender="+442079460958")  # outside US/Canada
    acted, unknown, foreign = sorted(m["id"] for m in await messages(api))
    assert_error(await api.post(f"/inbound-messages/{acted}/opt-out"), 409, "conflict")
    assert_error(await api.post(f"/inbound-messages/{unknown}/opt-out"), 422)
    assert_error(await api.post(f"/inbound-messages/{foreign}/opt-out"), 422)
    for missing in ("999", "0", "-1", "abc", "1e3", "99999999999999999999"):
        assert_error(await api.post(f"/inbound-messages/{missing}/opt-out"), 404)
    # the unknown-address one can still be dismissed
    assert (await api.post(f"/inbound-messages/{unknown}/dismiss",
                           {"reason": "not our number"})).status == 200


async def test_review_of_someone_already_unsubscribed_records_but_changes_nothing(
    api: Api,
) -> None:
    await add_address(api)
    await mo(api, "STOP")
    await mo(api, "please stop!!")
    near = (await messages(api, "?near_miss=true"))[0]
    reply = await api.post(f"/inbound-messages/{near['id']}/opt-out")
    assert reply.status == 200
    assert len((await api.get("/unsubscribed")).body["items"]) == 1
    assert [r["source"] for r in (await api.get("/records")).body["items"]] == [
        "review", "keyword"]


async def test_near_miss_metrics_and_the_oldest_open_gauge(
    make_api: AppFactory, service: OptOutService, metrics: Metrics
) -> None:
    watch_service(metrics, service)
    api = await make_api()
    await add_address(api)
    await mo(api, "hello")
    await mo(api, "STPO", to="+18885550100")  # unknown address: no flag, no label
    assert metrics.registry.get_sample_value("optout_near_miss_open") == 0
    assert metrics.registry.get_sample_value(
        "optout_near_miss_oldest_open_timestamp_seconds") == 0
    await mo(api, "no more texts please")
    await mo(api, "wrong number", sender=USER2)
    assert metrics.registry.get_sample_value(
        "optout_near_miss_total", {"inbound_address": ADDR}) == 2
    assert metrics.registry.get_sample_value(
        "optout_near_miss_total", {"inbound_address": "unknown"}) is None
    assert metrics.registry.get_sample_value("optout_near_miss_open") == 2
    first, second = sorted(await messages(api, "?near_miss=true"), key=lambda m: m["id"])
    oldest = metrics.registry.get_sample_value("optout_near_miss_oldest_open_timestamp_seconds")
    assert oldest is not None and oldest > 1.7e9
    await api.post(f"/inbound-messages/{first['id']}/dismiss", {"reason": "chat"})
    assert metrics.registry.get_sample_value("optout_near_miss_open") == 1
    newer = metrics.registry.get_sample_value("optout_near_miss_oldest_open_timestamp_seconds")
    assert newer is not None and newer >= oldest
    await api.post(f"/inbound-messages/{second['id']}/opt-out")
    assert metrics.registry.get_sample_value("optout_near_miss_open") == 0
    assert metrics.registry.get_sample_value(
        "optout_near_miss_oldest_open_timestamp_seconds") == 0


async def test_extra_near_miss_phrases_per_address(api: Api) -> None:
    await add_address(api)
    url = f"/inbound-addresses/{ADDR_PATH}/near-miss-phrases"
    assert (await api.get(url)).body == {"phrases": []}
    put = await api.put(url, {"phrases": ["  halt the promos ", "HALT the promos!"]})
    assert put.status == 200 and put.body == {"phrases": ["halt the promos"]}
    assert (await api.get(url, token=VIEWER)).body == {"phrases": ["halt the promos"]}
    assert (await api.get(f"/inbound-addresses/{ADDR_PATH}")).body["near_miss_phrases"] == [
        "halt the promos"]
    await mo(api, "Halt the promos, thanks")
    assert (await messages(api))[0]["near_miss"] is True
    assert_error(await api.put(url, {"phrases": ["!!!"]}), 422)
    assert_error(await api.put(url, {"phrases": "halt"}), 400)
    assert_error(await api.put(url, {"phrases": []}, token=VIEWER), 403)
    assert_error(await api.get("/inbound-addresses/%2B18885550100/near-miss-phrases"), 404)
    (entry, *_) = await audit(api)
    assert entry["action"] == "near_miss_phrases.update"
    assert entry["before"] == {"phrases": []} and entry["after"] == {
        "phrases": ["halt the promos"]}


# --- guardrails -----------------------------------------------------------------------------


async def test_noncompliant_keywords_are_refused_unless_allowed(api: Api) -> None:
    await add_address(api)
    url = f"/inbound-addresses/{ADDR_PATH}/keywords"
    lists = {"opt_out": ["STOP", "Opt-Out", "ARRET"], "opt_in": ["START"], "help": ["HELP"]}
    # when an admin drops required words
    refused = await api.put(url, lists)
    # then it is refused, naming what is missing
    assert_error(refused, 422, "noncompliant_keywords")
    assert refused.body["error"]["missing"] == ["QUIT", "END", "REVOKE", "CANCEL", "UNSUBSCRIBE"]
    assert "QUIT" in refused.body["error"]["message"]
    assert (await api.get(url)).body["opt_out"] == [
        "STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
        "OPTOUT", "OPT OUT", "ARRET"]
    # unless they insist: then it is saved, warned about and audited
    saved = await api.put(url, {**lists, "allow_noncompliant": True})
    assert saved.status == 200 and saved.body["opt_out"] == ["STOP", "Opt-Out", "ARRET"]
    warnings = (await api.get(f"/inbound-addresses/{ADDR_PATH}")).body["warnings"]
    assert [w["code"] for w in warnings] == ["noncompliant_keywords"]
    (entry, *_) = await audit(api)
    assert entry["action"] == "keywords.update" and entry["actor"] == ADMIN.name
    assert entry["after"]["allow_noncompliant"] is True
    assert entry["after"]["missing"] == ["QUIT", "END", "REVOKE", "CANCEL", "UNSUBSCRIBE"]
    assert "OPTOUT" in entry["before"]["opt_out"]
    # a compliant list needs no flag, and clears the warning
    ok = await api.put(url, {"opt_out": [*REQUIRED, "ARRET"], "opt_in": [], "help": ["HELP"]})
    assert ok.status == 200
    assert (await api.get(f"/inbound-addresses/{ADDR_PATH}")).body["warnings"] == []
    assert_error(await api.put(url, {**lists, "allow_noncompliant": "yes"}), 400)


async def test_warnings_show_risky_choices(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}"
    assert (await api.get(base)).body["warnings"] == []
    await api.put(f"{base}/replies", {"opt_out": None, "opt_in": "Welcome back", "help": None})
    await api.put(f"{base}/default-rule", {"sms_types": []})
    await api.post(f"{base}/blocking-rules", {"app_id": "app-b", "sms_types": []})
    await api.post(f"{base}/blocking-rules", {"app_id": "app-a", "sms_types": ["marketing"]})
    got = (await api.get(base, token=VIEWER)).body["warnings"]
    assert [w["code"] for w in got] == [
        "opt_out_reply_off", "help_reply_off", "default_rule_blocks_nothing",
        "rule_blocks_nothing"]
    assert "app-b" in got[-1]["message"]
    listed = (await api.get("/inbound-addresses")).body["items"][0]["warnings"]
    assert listed == got


async def test_resubscribing_by_hand_needs_a_reason(api: Api) -> None:
    await add_address(api)
    await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR})
    url = f"/unsubscribed/{ADDR_PATH}/{quote(USER)}"
    assert_error(await api.delete(url), 422, "reason_required")
    assert_error(await api.delete(url + "?reason=%20%20"), 422, "reason_required")
    assert_error(await api.delete(url, json={}), 400)
    assert_error(await api.delete(url, json={"reason": ""}), 422)
    assert_error(await api.delete(url + "?reason=a", json={"reason": "b"}), 400)
    assert_error(await api.delete(url, json={"reason": "x"}, token=VIEWER), 403)
    # by query string
    done = await api.delete(url + "?reason=signed+up+again+on+the+web+form")
    assert done.status == 200 and done.body["reason"] == "signed up again on the web form"
    # or by JSON body
    await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR})
    done = await api.delete(url, json={"reason": "consent by phone, call 42"})
    assert done.status == 200 and done.body["reason"] == "consent by phone, call 42"
    entries = await audit(api)
    assert [e["action"] for e in entries[:2]] == ["unsubscribed.remove", "unsubscribed.add"]
    assert entries[0]["after"]["reason"] == "consent by phone, call 42"


async def test_deleting_an_address_with_opt_outs_needs_force(api: Api) -> None:
    await add_address(api)
    await mo(api, "STOP")
    await api.post("/unsubscribed", {"phone_number": USER2, "inbound_address": ADDR})
    # refused, with the count
    refused = await api.delete(f"/inbound-addresses/{ADDR_PATH}")
    assert_error(refused, 409, "address_has_unsubscribed")
    assert refused.body["error"]["unsubscribed"] == 2
    assert (await api.get(f"/inbound-addresses/{ADDR_PATH}")).status == 200
    assert_error(await api.delete(f"/inbound-addresses/{ADDR_PATH}?force=yes"), 400)
    assert_error(await api.delete(f"/inbound-addresses/{ADDR_PATH}?force=true",
                                  token=VIEWER), 403)
    # forced: gone, and each released number has its own record
    gone = await api.delete(f"/inbound-addresses/{ADDR_PATH}?force=true",
                            headers={"X-Optout-Client": "console"})
    assert gone.status == 204
    assert_error(await api.get(f"/inbound-addresses/{ADDR_PATH}"), 404)
    records = (await api.get(f"/records?inbound_address={ADDR_PATH}")).body["items"]
    released = [(r["phone_number"], r["status"], r["reason"], r["actor"], r["source"])
                for r in records[:2]]
    assert sorted(released) == [
        (n, "subscribed", "inbound address deleted", ADMIN.name, "console")
        for n in sorted([USER, USER2])]
    (entry, *_) = await audit(api)
    assert entry["action"] == "address.delete" and entry["after"] == {"released": 2}
    assert entry["before"]["address"] == ADDR
    # an address without opt-outs is deleted without force
    await add_address(api, OTHER)
    assert (await api.delete(f"/inbound-addresses/{quote(OTHER)}")).status == 204


async def test_app_ids_come_from_the_configured_accounts(make_api: AppFactory) -> None:
    api = await make_api(apps=[AppInfo("1400000002", "beta"), AppInfo("1400000001", "acme"),
                               AppInfo("1400000001", "acme-2")])
    reply = await api.get("/apps", token=VIEWER)
    assert reply.status == 200
    assert reply.body == {"items": [
        {"app_id": "1400000001", "system_ids": ["acme", "acme-2"]},
        {"app_id": "1400000002", "system_ids": ["beta"]},
    ]}
    empty = await (await make_api()).get("/apps")
    assert empty.body == {"items": []}


# --- the audit log --------------------------------------------------------------------------


async def test_every_administrative_change_is_audited(api: Api) -> None:
    await add_address(api)
    base = f"/inbound-addresses/{ADDR_PATH}"
    await api.patch(base, {"description": "Renamed"})
    await api.put(f"{base}/keywords", {"opt_out": REQUIRED, "opt_in": ["START"], "help": []})
    await api.put(f"{base}/replies", {"opt_out": "Bye", "opt_in": None, "help": "Call us"})
    await api.post(f"{base}/blocking-rules", {"app_id": "app-1", "sms_types": ["marketing"]})
    await api.put(f"{base}/blocking-rules/app-1", {"sms_types": ["notification"]})
    await api.delete(f"{base}/blocking-rules/app-1")
    await api.put(f"{base}/default-rule", {"sms_types": ["marketing"]})
    await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR})
    await api.delete(f"/unsubscribed/{ADDR_PATH}/{quote(USER)}?reason=consent")
    await mo(api, "STOP", sender=USER2)  # an end user's MO is not an admin change
    await api.delete(f"{base}?force=true")
    entries = list(reversed(await audit(api)))
    assert [(e["action"], e["target"]) for e in entries] == [
        ("address.create", ADDR),
        ("address.update", ADDR),
        ("keywords.update", ADDR),
        ("replies.update", ADDR),
        ("rule.create", f"{ADDR} app-1"),
        ("rule.replace", f"{ADDR} app-1"),
        ("rule.delete", f"{ADDR} app-1"),
        ("default_rule.update", ADDR),
        ("unsubscribed.add", f"{ADDR} {USER}"),
        ("unsubscribed.remove", f"{ADDR} {USER}"),
        ("address.delete", ADDR),
    ]
    assert all(e["actor"] == ADMIN.name and e["at"].endswith("Z") for e in entries)
    by_action = {e["action"]: e for e in entries}
    # "who changed the rule that let this message through, and when?"
    assert by_action["rule.replace"]["before"] == {"sms_types": ["marketing"]}
    assert by_action["rule.replace"]["after"] == {"sms_types": ["notification"]}
    assert by_action["rule.delete"]["after"] is None
    assert by_action["rule.create"]["before"] is None
    assert by_action["address.update"]["before"] == {"description": "line"}
    assert by_action["default_rule.update"]["before"] == {
        "sms_types": ["marketing", "notification", "verification"]}
    assert by_action["replies.update"]["after"] == {"opt_out": "Bye", "opt_in": None,
                                                    "help": "Call us"}


async def test_audit_filters_pages_and_roles(make_api: AppFactory) -> None:
    api = await make_api()
    await add_address(api)
    await add_address(api, OTHER)
    await add_address(api, "55555")
    assert len(await audit(api, f"?actor={ADMIN.name}")) == 3
    assert await audit(api, "?actor=somebody-else") == []
    assert await audit(api, "?until=2000-01-01") == []
    assert len(await audit(api, "?since=2000-01-01")) == 3
    first = await api.get("/audit?limit=2", token=VIEWER)
    assert first.status == 200 and len(first.body["items"]) == 2
    rest = await api.get(f"/audit?limit=2&cursor={first.body['next_cursor']}")
    assert [e["target"] for e in first.body["items"] + rest.body["items"]] == [
        "55555", OTHER, ADDR]
    assert rest.body["next_cursor"] is None
    for bad in ("?limit=5000", "?cursor=xyz", "?since=soon", "?who=me"):
        assert_error(await api.get(f"/audit{bad}"), 400)
    assert_error(await api.get("/audit", token=None), 401)


# --- the overview ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(
    store_url: str,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    no_server_errors: None,
) -> AsyncIterator[tuple[Api, OptOutService, Clock, Metrics]]:
    """The API over a service whose clock the test moves."""
    clock = Clock(1_764_460_800.0)  # 2025-11-30T00:00:00Z
    service = await OptOutService.open(store_url, clock=clock)
    metrics = Metrics()
    client = await aiohttp_client(make_app(service, metrics, TOKENS))
    yield Api(client), service, clock, metrics
    await service.close()


async def test_stats_overview(
    clocked: tuple[Api, OptOutService, Clock, Metrics],
) -> None:
    api, service, clock, metrics = clocked
    day = 86400.0
    await add_address(api)
    await add_address(api, OTHER)
    # 40 days ago (outside the window), then 2 days ago, then today
    clock.now -= 40 * day
    await mo(api, "STOP", sender="+14155550001")
    clock.now += 38 * day
    await mo(api, "STOP")
    await mo(api, "STOP", sender=USER2)
    await mo(api, "STOP")  # repeated: not an opt-out, nothing changed
    clock.now += 2 * day + 3600
    await mo(api, "START")
    await mo(api, "STOP", to=OTHER)
    await mo(api, "please stop")  # near-miss, open
    # confirmations: one accepted 2 minutes after its MO, one after 10 minutes
    pending = await service.pending_replies()
    assert len(pending) == 5  # 4 opt-out confirmations and one opt-in
    opt_outs = [r for r in pending if r.action.value == "opt_out"]
    clock.now = opt_outs[-1].created_at + 120
    await service.mark_reply_sent(opt_outs[-1].id, "m-1")
    clock.now = opt_outs[-2].created_at + 600
    await service.mark_reply_sent(opt_outs[-2].id, "m-2")
    clock.now = 1_764_460_800.0 + 7200  # 2025-11-30T02:00:00Z
    metrics.submit.labels(app_id="1400000001", sms_type="marketing", decision="allowed").inc(7)
    metrics.submit.labels(app_id="1400000001", sms_type="marketing", decision="blocked").inc(2)
    metrics.submit.labels(app_id="1400000002", sms_type="verification", decision="allowed").inc()

    reply = await api.get("/stats", token=VIEWER)
    assert reply.status == 200, reply.text
    stats = reply.body
    assert stats["unsubscribed"] == {"total": 3, "by_address": {ADDR: 2, OTHER: 1}}
    daily = stats["daily"]
    assert len(daily) == 30
    assert daily[-1]["date"] == "2025-11-30" and daily[0]["date"] == "2025-11-01"
    assert {d["date"]: (d["opt_outs"], d["opt_ins"]) for d in daily if d["opt_outs"] or
            d["opt_ins"]} == {"2025-11-28": (2, 0), "2025-11-30": (1, 1)}
    assert stats["submits"] == [
        {"app_id": "1400000001", "sms_type": "marketing", "allowed": 7, "blocked": 2},
        {"app_id": "1400000002", "sms_type": "verification", "allowed": 1, "blocked": 0},
    ]
    assert stats["near_miss_open"] == 1
    assert stats["replies_pending"] == 3
    # the 40-day-old STOP's confirmation is outside the 30-day window
    assert stats["replies"] == {"sent": 2, "within_5_min": 1}


async def test_records_show_when_the_confirmation_was_accepted(
    clocked: tuple[Api, OptOutService, Clock, Metrics],
) -> None:
    api, service, clock, _ = clocked
    await add_address(api)
    await mo(api, "STOP")
    (reply,) = await service.pending_replies()
    clock.now += 42.5
    latency = await service.mark_reply_sent(reply.id, "carrier-7f3a")
    assert latency == 42.5
    assert await service.mark_reply_sent(reply.id, "carrier-7f3a") is None  # once
    (record,) = (await api.get("/records")).body["items"]
    assert record["reply_sent"] is True
    assert record["reply_sent_at"] == "2025-11-30T00:00:42.500Z"
    assert record["reply_message_id"] == "carrier-7f3a"
    csv_text = (await api.get("/records?format=csv")).text
    header, row = csv_text.splitlines()[:2]
    assert header.endswith("reply_sent,reply_sent_at,reply_message_id,inbound_message_id")
    linked = record["inbound_message_id"]
    assert row.endswith(f"true,2025-11-30T00:00:42.500Z,carrier-7f3a,{linked}")


async def test_the_log_is_pruned_by_age_but_open_near_misses_stay(
    clocked: tuple[Api, OptOutService, Clock, Metrics],
) -> None:
    api, service, clock, _ = clocked
    await add_address(api)
    await mo(api, "hello")  # old, ordinary
    await mo(api, "please stop")  # old near-miss, never reviewed
    await mo(api, "wrong number")  # old near-miss, dismissed
    old_dismissed = (await messages(api))[0]["id"]
    await api.post(f"/inbound-messages/{old_dismissed}/dismiss", {"reason": "chat"})
    clock.now += 91 * 86400
    await mo(api, "thanks")  # recent
    assert await service.prune_inbound_messages(90) == 2
    assert [m["text"] for m in await messages(api)] == ["thanks", "please stop"]
    assert await service.prune_inbound_messages(90) == 0
    # records are history and are never pruned
    with pytest.raises(Exception, match="positive"):
        await service.prune_inbound_messages(0)
