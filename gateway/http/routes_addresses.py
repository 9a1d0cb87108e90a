"""Handlers for inbound addresses and what hangs off them: keywords, reply
texts, blocking rules and the default rule (SPEC section 4).

Each handler validates the request, calls one `OptOutService` method with
the caller's token name as the actor, and renders the result. No opt-out
logic lives here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.http import schemas, views
from gateway.http.context import actor, body, change_source, path_number, query, service
from rules.model import Keywords, MatchMode, Replies, SmsType


def _sms_types(values: list[str]) -> frozenset[SmsType]:
    return frozenset(SmsType(v) for v in values)  # values were checked against the enum


async def list_addresses(request: web.Request) -> web.Response:
    items = await service(request).list_addresses()
    items.sort(key=lambda a: a.address)
    return web.json_response({"items": [views.address(a) for a in items]})


async def create_address(request: web.Request) -> web.Response:
    data = await body(request, schemas.ADDRESS_CREATE)
    created = await service(request).create_address(
        data["address"], data.get("description", ""), actor=actor(request)
    )
    return web.json_response(views.address(created), status=201)


async def get_address(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    return web.json_response(views.address(await service(request).get_address(address)))


async def update_address(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.ADDRESS_UPDATE)
    updated = await service(request).update_address(
        address, data["description"], actor=actor(request)
    )
    return web.json_response(views.address(updated))


async def delete_address(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    await service(request).delete_address(
        address,
        actor=actor(request),
        force=query(request).get("force") == "true",
        source=change_source(request),
    )
    return web.Response(status=204)


async def get_keywords(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    return web.json_response(views.keywords(await service(request).get_keywords(address)))


async def put_keywords(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.KEYWORDS_PUT)
    svc = service(request)
    # An omitted match mode keeps the current one.
    current = None if "match" in data else await svc.get_keywords(address)
    match = current.match if current is not None else MatchMode(data["match"])
    wanted = Keywords(
        opt_out=tuple(data["opt_out"]),
        opt_in=tuple(data["opt_in"]),
        help=tuple(data["help"]),
        match=match,
    )
    saved = await svc.set_keywords(
        address,
        wanted,
        actor=actor(request),
        allow_noncompliant=data.get("allow_noncompliant", False),
    )
    return web.json_response(views.keywords(saved))


async def get_replies(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    return web.json_response(views.replies(await service(request).get_replies(address)))


async def put_replies(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data: dict[str, Any] = await body(request, schemas.REPLIES_PUT)
    wanted = Replies(opt_out=data["opt_out"], opt_in=data["opt_in"], help=data["help"])
    saved = await service(request).set_replies(address, wanted, actor=actor(request))
    return web.json_response(views.replies(saved))


async def list_rules(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    rules = await service(request).list_rules(address)
    rules.sort(key=lambda r: r.app_id)
    return web.json_response({"items": [views.rule(r) for r in rules]})


async def create_rule(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.RULE_CREATE)
    created = await service(request).create_rule(
        address, data["app_id"], _sms_types(data["sms_types"]), actor=actor(request)
    )
    return web.json_response(views.rule(created), status=201)


async def replace_rule(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.RULE_PUT)
    saved = await service(request).replace_rule(
        address,
        request.match_info["app_id"],
        _sms_types(data["sms_types"]),
        actor=actor(request),
    )
    return web.json_response(views.rule(saved))


async def delete_rule(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    await service(request).delete_rule(address, request.match_info["app_id"], actor=actor(request))
    return web.Response(status=204)


async def get_default_rule(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    return web.json_response(views.default_rule(await service(request).get_default_rule(address)))


async def put_default_rule(request: web.Request) -> web.Response:
    address = path_number(request, "address")
    data = await body(request, schemas.DEFAULT_RULE_PUT)
    saved = await service(request).set_default_rule(
        address, _sms_types(data["sms_types"]), actor=actor(request)
    )
    return web.json_response(views.default_rule(saved))
