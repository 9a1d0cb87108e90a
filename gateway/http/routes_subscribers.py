"""Handlers for unsubscribed users and the opt-out / opt-in history,
including the streamed CSV export of records."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from gateway.http import schemas, views
from gateway.http.context import (
    actor,
    body,
    change_source,
    metrics,
    path_number,
    query,
    service,
)
from gateway.http.errors import bad_request
from gateway.http.validation import parse_time
from rules import csvio, numbers
from rules.model import InvalidNumber, InvalidValue

T = TypeVar("T")

log = logging.getLogger("gateway.http")

# CSV is written to the socket in chunks of about this size: large enough
# to be efficient, small enough that an export of millions of records never
# sits in memory.
_CSV_CHUNK = 64 * 1024
# Rows per store read while exporting unsubscribed users.
_EXPORT_PAGE = 1000


def filter_number(params: dict[str, Any], name: str) -> str | None:
    """A number used as a filter, normalised; 400 if it is not a number."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return numbers.normalize(raw)
    except InvalidNumber as exc:
        raise bad_request(f"Query parameter '{name}': {exc}", "bad_query") from None


async def page(call: Awaitable[T], cursor: str | None) -> T:
    """Await a paged listing; a cursor the store refuses is the client's 400."""
    try:
        return await call
    except InvalidValue as exc:
        if cursor is None:
            raise
        raise bad_request(f"Invalid cursor: {exc}", "bad_cursor") from None


_PREFIX_CHARS = frozenset("+0123456789 ().-")


def _number_prefix(raw: str | None) -> str | None:
    """The digits a number must start with; 400 for anything but digits
    and the separators people type."""
    if raw is None or not raw.strip():
        return None
    if not set(raw) <= _PREFIX_CHARS or not any(c.isdigit() for c in raw):
        raise bad_request(
            "Query parameter 'number_prefix' takes digits (and + ( ) - . spaces).", "bad_query"
        )
    return raw


def _refresh_gauge(request: web.Request) -> None:
    metrics(request).unsubscribed.set(service(request).unsubscribed_count())


def _unsubscribed_filters(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "inbound_address": filter_number(params, "inbound_address"),
        "phone_number": filter_number(params, "phone_number"),
        "number_prefix": _number_prefix(params.get("number_prefix")),
        "order": params.get("sort", "number"),
    }


async def list_unsubscribed(request: web.Request) -> web.StreamResponse:
    params = query(request)
    filters = _unsubscribed_filters(params)
    if params.get("format") == "csv":
        return await stream_csv(
            request,
            "optout-unsubscribed",
            (*csvio.HEADER, *csvio.INFO_COLUMNS),
            _unsubscribed_rows(request, filters),
        )
    cursor = params.get("cursor")
    items, next_cursor = await page(
        service(request).list_unsubscribed(
            **filters, limit=params.get("limit", 100), cursor=cursor
        ),
        cursor,
    )
    return web.json_response(
        {"items": [views.unsubscription(u) for u in items], "next_cursor": next_cursor}
    )


async def _unsubscribed_rows(
    request: web.Request, filters: dict[str, Any]
) -> AsyncIterator[list[str]]:
    """Every matching unsubscription in the import file format (so an
    export can be re-imported with `optout-sidecar import`), page by page."""
    svc = service(request)
    cursor: str | None = None
    while True:
        items, cursor = await svc.list_unsubscribed(**filters, limit=_EXPORT_PAGE, cursor=cursor)
        for u in items:
            yield [
                u.phone_number,
                u.inbound_address,
                csvio.format_since(u.since),
                u.source.value,
                views.safe_text(u.reason),
            ]
        if cursor is None:
            return


async def add_unsubscribed(request: web.Request) -> web.Response:
    data = await body(request, schemas.UNSUBSCRIBE)
    record = await service(request).unsubscribe(
        data["phone_number"],
        data["inbound_address"],
        source=change_source(request),
        actor=actor(request),
        reason=data.get("reason", ""),
    )
    _refresh_gauge(request)
    return web.json_response(views.record(record), status=201)


async def remove_unsubscribed(request: web.Request) -> web.Response:
    address = path_number(request, "inbound_address")
    phone = path_number(request, "phone_number", "unsubscribed number")
    reason: str = query(request).get("reason", "")
    if request.can_read_body and (await request.read()).strip():
        data = await body(request, schemas.RESUBSCRIBE)
        if reason and reason != data["reason"]:
            raise bad_request("Give the reason once: ?reason= or the JSON body, not both.")
        reason = data["reason"]
    record = await service(request).resubscribe(
        phone, address, source=change_source(request), actor=actor(request), reason=reason
    )
    _refresh_gauge(request)
    return web.json_response(views.record(record))


def _record_filters(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "phone_number": filter_number(params, "phone_number"),
        "inbound_address": filter_number(params, "inbound_address"),
        "since": parse_time("since", params["since"]) if "since" in params else None,
        "until": parse_time("until", params["until"]) if "until" in params else None,
    }


async def list_records(request: web.Request) -> web.StreamResponse:
    params = query(request)
    filters = _record_filters(params)
    if params.get("format") == "csv":
        rows = (views.record_csv_row(r) async for r in service(request).iter_records(**filters))
        return await stream_csv(request, "optout-records", views.RECORD_CSV_COLUMNS, rows)
    cursor = params.get("cursor")
    items, next_cursor = await page(
        service(request).list_records(
            **filters, limit=params.get("limit", 100), cursor=cursor, newest_first=True
        ),
        cursor,
    )
    return web.json_response(
        {"items": [views.record(r) for r in items], "next_cursor": next_cursor}
    )


async def stream_csv(
    request: web.Request,
    name: str,
    header: Sequence[str],
    rows: AsyncIterator[Sequence[str]],
) -> web.StreamResponse:
    """Stream `rows` as a CSV download in bounded chunks, never holding the
    whole export in memory.

    The first row is read before the response starts, so a store that is
    down still gets a proper JSON 503 instead of a truncated download.
    """
    first = await anext(rows, None)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    try:
        if first is not None:
            writer.writerow(first)
            async for row in rows:
                writer.writerow(row)
                if buffer.tell() >= _CSV_CHUNK:
                    await response.write(buffer.getvalue().encode("utf-8"))
                    buffer.seek(0)
                    buffer.truncate()
        await response.write(buffer.getvalue().encode("utf-8"))
    except (ConnectionResetError, asyncio.CancelledError):
        raise  # the client went away
    except Exception:
        # Headers are gone, so no error response is possible. Cutting the
        # connection without the final chunk tells the client the download
        # is incomplete instead of handing it a silently truncated file.
        log.exception("CSV export failed mid-stream")
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
