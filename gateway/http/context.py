"""What handlers need from the application and the request: the typed
`web.AppKey`s under which `make_app` stores its collaborators, and small
accessors that turn request parts into domain arguments (who is acting,
from where, about which address)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.http.auth import TokenBook, principal
from gateway.http.errors import ApiError
from gateway.http.validation import Body, Query, parse_body, parse_query, read_json
from metrics import Metrics
from rules import numbers
from rules.model import InvalidNumber, Source
from rules.service import OptOutService

__all__ = [
    "APPS_KEY",
    "METRICS_KEY",
    "QUERY_KEY",
    "SERVICE_KEY",
    "TOKENS_KEY",
    "UPSTREAM_READY_KEY",
    "AppInfo",
    "actor",
    "body",
    "change_source",
    "check_query",
    "metrics",
    "path_number",
    "query",
    "service",
]

SERVICE_KEY = web.AppKey("service", OptOutService)
METRICS_KEY = web.AppKey("metrics", Metrics)
TOKENS_KEY = web.AppKey("tokens", TokenBook)
UPSTREAM_READY_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("upstream_ready")


@dataclass(frozen=True)
class AppInfo:
    """A configured account's application ID (offered by `GET /apps`)."""

    app_id: str
    system_id: str


APPS_KEY: web.AppKey[tuple[AppInfo, ...]] = web.AppKey("apps")

#: Header the web console sends so its changes are recorded as `console`.
CLIENT_HEADER = "X-Optout-Client"


def service(request: web.Request) -> OptOutService:
    return request.app[SERVICE_KEY]


def metrics(request: web.Request) -> Metrics:
    return request.app[METRICS_KEY]


def actor(request: web.Request) -> str:
    """The name of the token making the change (recorded as the actor)."""
    return principal(request).name


def change_source(request: web.Request) -> Source:
    """`console` for changes made in the web console, `api` otherwise."""
    if request.headers.get(CLIENT_HEADER, "").strip().lower() == "console":
        return Source.CONSOLE
    return Source.API


def path_number(request: web.Request, name: str, what: str = "inbound address") -> str:
    """A phone number or address from the URL path, normalised.

    A path segment that is not a number names nothing that can exist, so it
    is a 404 rather than a 422: the client asked for a missing resource.
    """
    raw = request.match_info[name]
    try:
        return numbers.normalize(raw)
    except InvalidNumber:
        raise ApiError(404, "not_found", f"No {what} {raw[:40]!r}.") from None


async def body(request: web.Request, spec: Body) -> dict[str, Any]:
    """The request's JSON body, validated against `spec`."""
    return parse_body(spec, await read_json(request))


#: The validated query string of the request (set by the route table's wrapper).
QUERY_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("query")


def query(request: web.Request) -> dict[str, Any]:
    """The request's validated query parameters (absent ones omitted)."""
    params: dict[str, Any] = request.get(QUERY_KEY, {})
    return params


def check_query(request: web.Request, spec: Query) -> None:
    """Validate the query string against `spec` and keep the result."""
    request[QUERY_KEY] = parse_query(request, spec)
