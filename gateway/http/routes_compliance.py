"""Handlers for the compliance operator's views (issue 10, SPEC section 7):
the inbound message log and its near-miss review, the audit log, the
overview figures, the configured application IDs, and an address's extra
near-miss phrases.

As elsewhere, each handler validates, calls one `OptOutService` method with
the caller's token name as the actor, and renders; no opt-out logic here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.http import schemas, views
from gateway.http.context import (
    APPS_KEY,
    actor,
    body,
    metrics,
    path_number,
    query,
    service,
)
from gateway.http.errors import ApiError
from gateway.http.routes_subscribers import filter_number, page
from gateway.http.validation import parse_time

#: Largest id a path may name (SQLite rowids are 64-bit signed).
_MAX_ID = (1 << 63) - 1


def _flag(params: dict[str, Any], name: str) -> bool | None:
    value = params.get(name)
    return None if value is None else value == "true"


def _message_id(request: web.Request) -> int:
    """The `{id}` of the path; anything but a positive integer names no
    message, so it is a 404 like any other missing resource."""
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= _MAX_ID:
        raise ApiError(404, "not_found", f"No inbound message {raw[:40]!r}.")
    return int(raw)


async def list_inbound_messages(request: web.Request) -> web.Response:
    params = query(request)
    cursor = params.get("cursor")
    items, next_cursor = await page(
        service(request).list_inbound_messages(
            inbound_address=filter_number(params, "inbound_address"),
            phone_number=filter_number(params, "phone_number"),
            action=params.get("action"),
            near_miss=_flag(params, "near_miss"),
            reviewed=_flag(params, "reviewed"),
            since=parse_time("since", params["since"]) if "since" in params else None,
            until=parse_time("until", params["until"]) if "until" in params else None,
            limit=params.get("limit", 100),
            cursor=cursor,
        ),
        cursor,
    )
    return web.json_response(
        {"items": [views.inbound_message(m) for m in items], "next_cursor": next_cursor}
    )


async def review_opt_out(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    svc = service(request)
    message, record = await svc.review_opt_out(message_id, actor=actor(request))
    metrics(request).unsubscribed.set(svc.unsubscribed_count())
    return web.json_response(
        {"message": views.inbound_message(message), "record": views.record(record)}
    )


async def review_dismiss(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    data = await body(request, schemas.DISMISS)
    message = await service(request).review_dismiss(
        message_id, actor=actor(request), reason=data["reason"]
    )
    return web.json_response({"message": views.inbound_message(message), "record": None})


async def list_audit(request: web.Request) -> web.Response:
    params = query(request)
    cursor = params.get("cursor")
    items, next_cursor = await page(
        service(request).list_audit(
            actor=params.get("actor"),
            since=parse_time("since", params["since"]) if "since" in params else None,
            until=parse_time("until", params["until"]) if "until" in params else None,
            limit=params.get("limit", 100),
            cursor=cursor,
        ),
        cursor,
    )
    return web.json_response(
        {"items": [views.audit_entry(e) for e in items], "next_cursor": next_cursor}
    )


def _submits(request: web.Request) -> list[dict[str, Any]]:
    """Allowed and blocked submits per (app, SMS type), read from the
    `optout_submit_total` counters as /metrics shows them (with workers:
    every worker's, summed): since the process (or supervisor) started."""
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"allowed": 0, "blocked": 0}
    )
    text = metrics(request).exposition().decode("utf-8")
    for family in text_string_to_metric_families(text):
        if family.name != "optout_submit":
            continue
        for sample in family.samples:
            if sample.name != "optout_submit_total":
                continue
            labels = sample.labels
            decision = labels.get("decision")
            if decision in ("allowed", "blocked"):
                totals[(labels["app_id"], labels["sms_type"])][decision] += int(sample.value)
    return [
        {"app_id": app, "sms_type": sms_type, **counts}
        for (app, sms_type), counts in sorted(totals.items())
    ]


async def stats(request: web.Request) -> web.Response:
    figures = await service(request).stats()
    return web.json_response(
        {
            "unsubscribed": {
                "total": figures.unsubscribed_total,
                "by_address": figures.unsubscribed_by_address,
            },
            "daily": [
                {"date": date, "opt_outs": outs, "opt_ins": ins}
                for date, outs, ins in figures.daily
            ],
            "submits": _submits(request),
            "near_miss_open": figures.near_miss_open,
            "replies_pending": figures.replies_pending,
            "replies": {
                "sent": figures.replies_sent,
                "within_5_min": figures.replies_within_limit,
            },
        }
    )


async def list_apps(request: web.Request) -> web.Response:
    by_app: dict[str, list[str]] = defaultdict(list)
    for app in request.app[APPS_KEY]:
        by_app[app.app_id].append(app.system_id)
    return web.json_response(
        {
            "items": [
                {"app_id": app_id, "system_ids": sorted(system_ids)}
                for app_id, system_ids in sorted(by_app.items())
            ]
        }
    )


async def get_near_miss_phrases(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    phrases = await service(request).get_near_miss_phrases(address)
    return web.json_response({"phrases": list(phrases)})


async def put_near_miss_phrases(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.NEAR_MISS_PHRASES_PUT)
    saved = await service(request).set_near_miss_phrases(
        address, data["phrases"], actor=actor(request)
    )
    return web.json_response({"phrases": list(saved)})
