"""The OpenAPI 3.1 document of the HTTP server, generated from the route
table (`routes.OPERATIONS`) and the schemas the handlers validate with, so
it describes exactly what the server does.

The server publishes it at `GET /api/v1/openapi.json`; `build_document()`
returns it for tools that want a file.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.http import schemas
from gateway.http.routes import API, OPERATIONS, Operation
from gateway.http.routes_system import CONSOLE_FILES

__all__ = ["build_document"]

_ERROR_TEXT = {
    400: "Malformed request: not JSON, wrong types, unknown or missing fields, bad query "
    "parameters or cursor.",
    401: "Missing or unknown bearer token.",
    403: "The token has the viewer role and the operation changes something.",
    404: "No such resource.",
    409: "Conflicts with what exists.",
    408: "The request body did not arrive within the body timeout.",
    413: "Request body too large.",
    422: "Well-formed but invalid: not a US/Canada number or short code, unknown SMS type, "
    "value out of bounds, text holding a lone surrogate (code invalid_text).",
    429: "Too many wrong tokens from this address (20 a minute); see Retry-After.",
    503: "The store is unavailable; retry later.",
}

_PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "address": (schemas.ADDRESS, "Inbound address, URL-encoded (%2B14155550100); '+' optional."),
    "inbound_address": (schemas.ADDRESS, "Inbound address, URL-encoded; '+' optional."),
    "phone_number": (schemas.PHONE, "Subscriber number, URL-encoded; '+' optional."),
    "app_id": (schemas.APP_ID, "Application ID."),
    "id": (
        {"type": "integer", "minimum": 1, "examples": [1, 2, 3, 4, 5, 6]},
        "Inbound message id (`id` of GET /inbound-messages).",
    ),
    "name": ({"type": "string", "enum": list(CONSOLE_FILES)}, "File name."),
}

_DESCRIPTION = """\
Manage MO opt-out for US/Canada SMS: inbound addresses, keywords, reply texts,
blocking rules, unsubscribed users and their history; check a send; deliver an
MO over HTTP.

Authenticate with `Authorization: Bearer <token>`. `admin` tokens may change
anything; `viewer` tokens may only read (and call `POST /check`). Every change
records the token's name as its actor.

Errors are JSON `{"error": {"code": "...", "message": "..."}}`.
"""


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_TEXT[status],
        "content": {"application/json": {"schema": schemas.ref("Error")}},
    }


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", op.path):
        schema, text = _PATH_PARAMS[name]
        params.append(
            {"name": name, "in": "path", "required": True, "schema": schema, "description": text}
        )
    for p in op.query.params:
        params.append(
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "schema": dict(p.schema),
                "description": p.description,
            }
        )
    return params


def _success(op: Operation) -> dict[str, Any]:
    if op.ok_status == 204:
        return {"description": "Done; no content."}
    if op.ok_schema is not None:
        content: dict[str, Any] = {"application/json": {"schema": schemas.ref(op.ok_schema)}}
    elif op.operation_id == "openapi":
        content = {"application/json": {"schema": {"type": "object"}}}
    else:
        content = {media: {"schema": {"type": "string"}} for media in op.ok_media}
    if op.operation_id in ("listRecords", "listUnsubscribed"):
        content["text/csv"] = {
            "schema": {"type": "string"},
        }
    return {"description": "OK" if op.ok_status == 200 else "Created", "content": content}


def _operation(op: Operation) -> dict[str, Any]:
    statuses = set(op.errors)
    in_api = op.path.startswith(API) and op.access != "public"
    if in_api:
        statuses |= {400, 401, 503}  # query strings are checked; the store may be down
    if in_api or op.access == "probe":
        statuses.add(429)  # too many wrong tokens from the client's address
    if op.access == "write":
        statuses.add(403)
    if op.body is not None:
        statuses |= {400, 408, 413}
    if op.body is not None or (in_api and op.query.params):
        statuses.add(422)  # text that is not Unicode scalar values (a lone surrogate)
    if op.access == "probe":
        statuses.add(401)  # when open_endpoints is off
    responses: dict[str, Any] = {str(op.ok_status): _success(op)}
    for status in sorted(statuses):
        if op.operation_id == "readyz" and status == 503:
            responses["503"] = {
                "description": "Not ready; `store` and `upstream` say which part is not.",
                "content": {"application/json": {"schema": schemas.ref("Readiness")}},
            }
        else:
            responses[str(status)] = _error(status)
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op),
        "responses": responses,
    }
    if op.description:
        doc["description"] = op.description
    if op.body is not None:
        doc["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": schemas.ref(op.body.name)}},
        }
    if op.access == "public":
        doc["security"] = []
    elif op.access == "probe":
        doc["security"] = [{}, {"bearer": []}]
    return doc


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a JSON-ready dict."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    components: dict[str, Any] = {name: schema for name, schema in schemas.RESPONSES.items()}
    for body in schemas.REQUEST_BODIES:
        components[body.name] = body.json_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "optout-sidecar API",
            "version": "1.0.0",
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from the config's [[http.tokens]].",
                }
            },
        },
        "security": [{"bearer": []}],
    }
