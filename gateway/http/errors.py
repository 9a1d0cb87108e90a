"""The HTTP API's error contract: every failure is JSON
`{"error": {"code": ..., "message": ...}}` with a status that says whose
fault it is.

`ApiError` carries its own status and code (like aiohttp's HTTP exceptions
carry theirs), so a handler raises and never builds an error response
itself. `error_middleware` is the single place that turns exceptions into
responses:

* `ApiError` -> its status;
* domain errors (`rules.model.DomainError` subclasses) -> 404/409/422 by
  type, with the domain's own `code`;
* `StoreUnavailable` -> 503 (the store, not the client, failed);
* aiohttp's own HTTP errors (unknown route 404, 405, 413 from
  `client_max_size`) -> the same JSON shape, headers such as `Allow` kept;
* anything else -> a logged JSON 500. The API promises never to answer a
  client's input with a 5xx, and the tests assert this branch is never hit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rules.model import (
    AddressHasUnsubscribed,
    Conflict,
    DomainError,
    InvalidNumber,
    InvalidValue,
    NoncompliantKeywords,
    NotFound,
    OutOfScope,
    StoreUnavailable,
)

__all__ = [
    "ApiError",
    "bad_request",
    "error_middleware",
    "error_response",
    "status_for_domain_error",
]

log = logging.getLogger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Most specific first: subclasses of these map through the first hit.
_DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidNumber, 422),
    (OutOfScope, 422),
    (InvalidValue, 422),
)

# Codes for aiohttp's own HTTP errors, so clients can switch on `code`.
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_value",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the HTTP layer raises on purpose, with its wire status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    """A 400: the request itself is malformed (syntax, types, unknown fields)."""
    return ApiError(400, code, message)


def status_for_domain_error(exc: DomainError) -> int:
    """The HTTP status of a domain error: 404, 409 or 422."""
    for kind, status in _DOMAIN_STATUS:
        if isinstance(exc, kind):
            return status
    return 422  # any other deliberate domain refusal is about the input's meaning


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """The one JSON error shape of the API (`extra`: documented optional
    members such as `missing` or `unsubscribed`)."""
    body: dict[str, Any] = {"error": {"code": code, "message": message, **(extra or {})}}
    return web.json_response(body, status=status, headers=headers)


def _details(exc: DomainError) -> dict[str, Any]:
    """Machine-readable details some refusals carry besides their message."""
    if isinstance(exc, NoncompliantKeywords):
        return {"missing": list(exc.missing)}
    if isinstance(exc, AddressHasUnsubscribed):
        return {"unsubscribed": exc.count}
    return {}


def _route_name(request: web.Request) -> str:
    """The matched route template (never the raw path: paths hold phone numbers)."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "<unmatched>"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the API's JSON error shape (see module doc)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except DomainError as exc:
        return error_response(
            status_for_domain_error(exc), exc.code, str(exc) or exc.code, extra=_details(exc)
        )
    except StoreUnavailable as exc:
        log.warning(
            "store unavailable",
            extra={"fields": {"route": _route_name(request), "error": str(exc)}},
        )
        return error_response(
            503, "store_unavailable", "The store is unavailable; try again shortly."
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        message = exc.reason
        if exc.status == 413:
            message = f"Request body too large (limit {request.client_max_size} bytes)."
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, message, headers)
    except ConnectionResetError:
        # The client went away mid-response (e.g. an aborted CSV download):
        # nothing can be sent back, so let aiohttp close the connection.
        raise
    except Exception:
        log.exception(
            "unhandled error in HTTP handler",
            extra={"fields": {"route": _route_name(request), "method": request.method}},
        )
        return error_response(500, "internal", "Internal error; it has been logged.")
