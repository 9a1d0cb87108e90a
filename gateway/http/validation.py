"""Request validation whose rules are also the OpenAPI document's schemas.

Each request body and query string is declared once, as JSON Schema
fragments (`Body`, `Query`). The OpenAPI generator publishes exactly these
fragments, and `parse_body` / `parse_query` enforce them, so the document
cannot drift from what the server accepts.

Status codes (SPEC section 4 and the API's error contract):

* 400 - the request is malformed: not JSON, not an object, a field of the
  wrong type, an unknown or missing field, any bad query parameter;
* 422 - well-formed but meaningless: a value outside its enum (an unknown
  SMS type, match mode) or beyond a length bound, or a string that is not
  Unicode scalar values (JSON's "\\ud800" escape makes a lone surrogate,
  which nothing downstream can encode: checked once here, for every body
  and query string, so no handler ever sees one).

Only the small subset of JSON Schema used here is interpreted: `type`
(one or a list), `enum`, `minLength`, `maxLength`, `maxItems`, `items`,
`minimum`, `maximum`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.http.errors import ApiError, bad_request
from rules.model import is_scalar_text

__all__ = [
    "BODY_TIMEOUT_KEY",
    "Body",
    "Field",
    "Param",
    "Query",
    "iso_utc",
    "parse_body",
    "parse_query",
    "parse_time",
    "read_json",
]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "array": (list,),
    "object": (dict,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


@dataclass(frozen=True)
class Field:
    """One property of a JSON request body."""

    name: str
    schema: Mapping[str, Any]
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Body:
    """A JSON object request body; unknown properties are refused."""

    name: str  # component name in the OpenAPI document
    fields: tuple[Field, ...]
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        """The body as a JSON Schema object (`additionalProperties: false`)."""
        props: dict[str, Any] = {}
        for f in self.fields:
            prop = dict(f.schema)
            if f.description:
                prop["description"] = f.description
            props[f.name] = prop
        schema: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "required": [f.name for f in self.fields if f.required],
            "additionalProperties": False,
        }
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class Param:
    """One query-string parameter. `schema` type is "string" or "integer"."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Query:
    """The query parameters one operation accepts; any other is refused."""

    params: tuple[Param, ...]


#: Seconds a client has to send a request body once its head arrived (set
#: by `make_app`); a body dripped slower is a 408 and the connection closes.
BODY_TIMEOUT_KEY = web.AppKey("body_timeout", float)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON. 413 (via aiohttp's `client_max_size`) when
    too large, 400 when empty or not JSON, 408 when it does not arrive
    within the app's body timeout (a slow upload must not hold a
    connection and a handler for ever)."""
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT_KEY, 30.0)):
            raw = await request.read()
    except TimeoutError:
        # aiohttp closes the connection after the answer (the body is unread).
        raise ApiError(408, "request_timeout",
                       "The request body did not arrive in time.") from None
    if not raw.strip():
        raise bad_request("A JSON request body is required.", "malformed_json")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}", "malformed_json") from None
    except RecursionError:
        raise bad_request("Request body is nested too deeply.", "malformed_json") from None
    where = _lone_surrogate(data)
    if where is not None:
        raise _not_unicode(where)
    return data


def _not_unicode(where: str) -> ApiError:
    return ApiError(
        422, "invalid_text",
        f"{where} is not valid Unicode text (it holds a lone surrogate such as \\ud800).",
    )


def _lone_surrogate(data: Any) -> str | None:
    """Where in decoded JSON a string (value or key) holds a lone surrogate,
    as a person would name it ("Field 'text'", "Field 'opt_out[2]'"), or None.
    Iterative, so a deeply nested body cannot exhaust the stack, and each
    element's path is a link to its parent's (built into text only for the
    answer), so a wide body nested deep costs no more than its size."""
    Crumb = tuple[Any, str | int] | None  # (parent crumb, key or index)
    stack: list[tuple[Any, Crumb]] = [(data, None)]
    while stack:
        value, crumb = stack.pop()
        if isinstance(value, str):
            if not is_scalar_text(value):
                return f"Field '{_path(crumb)}'" if crumb else "The request body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not is_scalar_text(key):
                    return f"A field name in '{_path(crumb)}'" if crumb else "A field name"
                if isinstance(item, str | dict | list):
                    stack.append((item, (crumb, key)))
        elif isinstance(value, list):
            stack.extend((item, (crumb, i)) for i, item in enumerate(value)
                         if isinstance(item, str | dict | list))
    return None


def _path(crumb: Any) -> str:
    """'a.b[2].c' from a crumb chain, at most 80 characters."""
    parts: list[str] = []
    while crumb is not None:
        crumb, key = crumb
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".")[:80]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(spec: Body, data: Any) -> dict[str, Any]:
    """The validated fields of `data` (a decoded JSON body) by name.
    Optional fields that were absent are absent from the result."""
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object.", "wrong_type")
    known = {f.name for f in spec.fields}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise bad_request(
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(known))}.",
            "unknown_field",
        )
    out: dict[str, Any] = {}
    for f in spec.fields:
        if f.name not in data:
            if f.required:
                raise bad_request(f"Missing required field '{f.name}'.", "missing_field")
            continue
        _check(data[f.name], f.schema, f.name)
        out[f.name] = data[f.name]
    return out


def _type_ok(value: Any, types: str | Sequence[str]) -> bool:
    names = [types] if isinstance(types, str) else list(types)
    for name in names:
        if name in ("integer", "number") and isinstance(value, bool):
            continue  # JSON true is not a number
        if isinstance(value, _JSON_TYPES[name]):
            return True
    return False


def _check(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """Raise 400 for a type mismatch, 422 for a value outside its bounds."""
    if "type" in schema and not _type_ok(value, schema["type"]):
        expected = schema["type"]
        expected = expected if isinstance(expected, str) else " or ".join(expected)
        raise bad_request(f"Field '{where}' must be of type {expected}.", "wrong_type")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"] if v is not None)
        raise ApiError(
            422,
            "invalid_value",
            f"Field '{where}' has invalid value {value!r}; use one of {allowed}.",
        )
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", math.inf):
            raise ApiError(
                422,
                "too_long",
                f"Field '{where}' is longer than {schema['maxLength']} characters.",
            )
        if len(value) < schema.get("minLength", 0):
            raise ApiError(422, "invalid_value", f"Field '{where}' must not be empty.")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", math.inf):
            raise ApiError(
                422, "too_many", f"Field '{where}' has more than {schema['maxItems']} items."
            )
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{where}[{i}]")


def parse_query(request: web.Request, spec: Query) -> dict[str, Any]:
    """The validated query parameters by name (absent ones omitted); every
    problem - unknown, repeated, wrong type, out of range - is a 400."""
    by_name = {p.name: p for p in spec.params}
    out: dict[str, Any] = {}
    for key in request.query:
        if key not in by_name:
            allowed = ", ".join(sorted(by_name)) or "none"
            raise bad_request(
                f"Unknown query parameter {key[:40]!r}. Allowed: {allowed}.", "bad_query")
        values = request.query.getall(key)
        if not all(is_scalar_text(v) for v in values):
            raise _not_unicode(f"Query parameter '{key}'")
        if len(values) > 1:
            raise bad_request(f"Query parameter '{key}' given more than once.", "bad_query")
        out[key] = _query_value(by_name[key], values[0])
    return out


def _query_value(param: Param, raw: str) -> Any:
    schema = param.schema
    if schema.get("type") == "integer":
        try:
            value: Any = int(raw.strip(), 10)
        except ValueError:
            raise bad_request(
                f"Query parameter '{param.name}' must be an integer.", "bad_query"
            ) from None
        lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        if not lo <= value <= hi:
            raise bad_request(
                f"Query parameter '{param.name}' must be between {lo} and {hi}.", "bad_query"
            )
        return value
    if "enum" in schema and raw not in schema["enum"]:
        allowed = ", ".join(schema["enum"])
        raise bad_request(f"Query parameter '{param.name}' must be one of: {allowed}.", "bad_query")
    if len(raw) > schema.get("maxLength", math.inf):
        raise bad_request(f"Query parameter '{param.name}' is too long.", "bad_query")
    return raw


def parse_time(name: str, raw: str) -> float:
    """A time filter as unix seconds: unix seconds (int or decimal) or
    ISO-8601 (a missing offset means UTC). 400 otherwise."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and abs(value) < 1e11:
            return value
        raise bad_request(f"Query parameter '{name}' is not a plausible unix time.", "bad_query")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise bad_request(
            f"Query parameter '{name}' must be ISO-8601 (e.g. 2025-04-11T00:00:00Z) "
            "or unix seconds.",
            "bad_query",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        raise bad_request(f"Query parameter '{name}' is out of range.", "bad_query") from None


def iso_utc(unix: float) -> str:
    """Unix seconds as ISO-8601 UTC with a 'Z' (what the API returns)."""
    stamp = datetime.fromtimestamp(unix, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
