"""The aiohttp application factory of the admin API, console and probes.

`make_app` wires the collaborators it is given (an open `OptOutService`,
the process's `Metrics`, the configured tokens) into a fresh
`web.Application`; it opens nothing and owns nothing, so the CLI decides the
service's lifetime and tests build as many apps as they like.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiohttp import web

from gateway.http.auth import ApiToken, TokenBook, auth_middleware
from gateway.http.context import (
    APPS_KEY,
    METRICS_KEY,
    SERVICE_KEY,
    TOKENS_KEY,
    UPSTREAM_READY_KEY,
    AppInfo,
    check_query,
)
from gateway.http.errors import error_middleware
from gateway.http.guard import SERVER_HEADER
from gateway.http.openapi import build_document
from gateway.http.routes import API, OPERATIONS, Handler, Operation
from gateway.http.routes_system import OPENAPI_KEY, STATIC_FILES_KEY, load_static_files
from gateway.http.throttle import FailureThrottle
from gateway.http.validation import BODY_TIMEOUT_KEY
from metrics import Metrics
from rules.service import OptOutService

__all__ = ["SERVER_HEADER", "make_app"]


def _always_ready() -> bool:
    return True


def _with_query_check(op: Operation) -> Handler:
    """The operation's handler, preceded by validating its query string
    (unknown or malformed parameters are a 400 on every API route)."""
    inner = op.handler

    async def handler(request: web.Request) -> web.StreamResponse:
        check_query(request, op.query)
        return await inner(request)

    handler.__name__ = op.operation_id
    handler.__doc__ = inner.__doc__
    return handler


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    """API answers hold personal data: keep them out of caches."""
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers["Server"] = SERVER_HEADER


def make_app(
    service: OptOutService,
    metrics: Metrics,
    tokens: Sequence[ApiToken],
    *,
    upstream_ready: Callable[[], bool] = _always_ready,
    open_endpoints: bool = True,
    max_body_bytes: int = 1 << 20,
    auth_throttle: FailureThrottle | None = None,
    clock: Callable[[], float] = time.monotonic,
    body_timeout: float = 30.0,
    apps: Sequence[AppInfo] = (),
) -> web.Application:
    """Build the HTTP application: `/api/v1` (token required), `/` the web
    console, `/metrics`, `/healthz` and `/readyz` (without a token when
    `open_endpoints`, else any valid token).

    Request bodies over `max_body_bytes` get a JSON 413, bodies that take
    longer than `body_timeout` seconds to arrive a JSON 408. Wrong tokens are
    counted in `optout_http_auth_failures_total` and limited per client IP
    by `auth_throttle` (20 a minute unless given; `clock` drives it). `apps` are the
    configured accounts' application IDs, offered by `GET /api/v1/apps`.
    """
    book = TokenBook(tokens)
    public = frozenset(
        op.path
        for op in OPERATIONS
        if op.access == "public" or (op.access == "probe" and open_endpoints)
    )
    read_only = frozenset(
        (op.method, op.path) for op in OPERATIONS if op.access != "write" and op.method != "GET"
    )
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            error_middleware,
            auth_middleware(book, public_routes=public, read_only_routes=read_only,
                            throttle=auth_throttle, failures=metrics.http_auth_failures,
                            clock=clock),
        ],
    )
    app[BODY_TIMEOUT_KEY] = body_timeout
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = metrics
    app[TOKENS_KEY] = book
    app[UPSTREAM_READY_KEY] = upstream_ready
    app[APPS_KEY] = tuple(apps)
    app[STATIC_FILES_KEY] = load_static_files()
    app[OPENAPI_KEY] = build_document()
    for op in OPERATIONS:
        handler = _with_query_check(op) if op.path.startswith(API) else op.handler
        app.router.add_route(op.method, op.path, handler, name=op.operation_id)
    app.on_response_prepare.append(_no_store)
    return app
