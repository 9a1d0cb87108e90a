"""Handlers outside the JSON API proper: Prometheus metrics, liveness,
readiness, the OpenAPI document and the web console's static files."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.http.context import UPSTREAM_READY_KEY, metrics, service

log = logging.getLogger("gateway.http")

#: How long /readyz waits for the store before calling it not ready; a
#: probe that hangs is worse than one that says no.
PING_TIMEOUT = 2.0

STATIC_FILES_KEY = web.AppKey("static_files", dict)
OPENAPI_KEY = web.AppKey("openapi", dict)

#: The console's files and their content types: only these are served.
CONSOLE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# The console runs only its own script and styles; nothing from elsewhere,
# no inline script, no framing (clickjacking).
_CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def load_static_files() -> dict[str, bytes]:
    """The console's files (package data), read once when the app is built."""
    folder = resources.files("gateway.http") / "static"
    return {name: (folder / name).read_bytes() for name in CONSOLE_FILES}


def _static(request: web.Request, name: str) -> web.Response:
    files: dict[str, bytes] = request.app[STATIC_FILES_KEY]
    if name not in files:
        raise web.HTTPNotFound(reason=f"No console file {name[:40]!r}.")
    return web.Response(
        body=files[name], headers={"Content-Type": CONSOLE_FILES[name], **_CONSOLE_HEADERS}
    )


async def console_index(request: web.Request) -> web.Response:
    return _static(request, "index.html")


async def console_static(request: web.Request) -> web.Response:
    return _static(request, request.match_info["name"])


async def prometheus_metrics(request: web.Request) -> web.Response:
    m = metrics(request)
    try:
        # Fresh at scrape time, including opt-outs other sidecars wrote.
        m.unsubscribed.set(service(request).unsubscribed_count())
    except Exception:
        log.exception("could not read the unsubscribed count for /metrics")
    return web.Response(body=m.exposition(), headers={"Content-Type": m.content_type})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        store_ok = bool(await asyncio.wait_for(service(request).ping(), PING_TIMEOUT))
    except Exception:
        store_ok = False
    try:
        upstream_ok = bool(request.app[UPSTREAM_READY_KEY]())
    except Exception:
        log.exception("upstream_ready() raised")
        upstream_ok = False
    ready = store_ok and upstream_ok
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "store": store_ok,
        "upstream": upstream_ok,
    }
    return web.json_response(body, status=200 if ready else 503)


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])
