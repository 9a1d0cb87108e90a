"""The HTTP listener's connection guard: at most `max_connections` at once,
and a deadline for the request head.

aiohttp parses HTTP but has no deadline for a client that opens a
connection and then sends its request line and headers slowly, or never
(slowloris): 50 such sockets used to stay open for minutes. `ConnectionGuard`
wraps aiohttp's protocol factory and

* answers a connection beyond `max_connections` with a JSON 503 and closes
  it at once (load shedding, like `[smpp] max_connections`), so idle
  sockets cannot exhaust file descriptors;
* closes a connection that has not delivered a complete request head
  (request line and headers, up to the blank line) within `header_timeout`
  seconds of opening, answering 408 first.

aiohttp answers a request it cannot parse itself, outside the application,
in plain text and with `Server: Python/3.x aiohttp/3.x`; the guard makes
those answers the API's JSON error shape without versions too
(`_QuietRequestHandler`).

Between requests on a kept-alive connection, aiohttp's own keep-alive
timeout (the server sets it to the same `header_timeout`) closes a
connection that has not completed its next request head: aiohttp closes an
idle connection when no complete request arrived in that time, however
many bytes of a partial one did.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import Counter

from gateway import logs

__all__ = ["SERVER_HEADER", "ConnectionGuard", "serve"]

log = logging.getLogger("gateway.http.guard")

_HEAD_END = b"\r\n\r\n"

#: The `Server` header of every answer: the product, no versions (aiohttp
#: would announce "Python/3.x aiohttp/3.x", a gift to anyone matching CVEs).
SERVER_HEADER = "optout-sidecar"


def _response(status: int, reason: str, code: str, message: str,
              extra: tuple[str, ...] = ()) -> bytes:
    """A complete HTTP/1.1 answer in the API's JSON error shape, closing."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close", f"Server: {SERVER_HEADER}",
            *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_TOO_MANY = _response(503, "Service Unavailable", "too_many_connections",
                      "Too many HTTP connections; retry shortly.", ("Retry-After: 1",))
_TOO_SLOW = _response(408, "Request Timeout", "request_timeout",
                      "The request head did not arrive in time.")


class _QuietRequestHandler(RequestHandler):
    """aiohttp's protocol, answering requests it could not parse (or whose
    handler failed outside the app's middlewares) in the API's JSON error
    shape with a `Server` header that names no versions."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        phrase = HTTPStatus(plain.status).phrase if plain.status in _STATUSES else "Error"
        text = (message or phrase).splitlines()[0][:200] if status != 500 else phrase
        resp = web.json_response(
            {"error": {"code": _CODES.get(plain.status, "http_error"), "message": text}},
            status=plain.status, headers={"Server": SERVER_HEADER})
        resp.force_close()
        return resp


_STATUSES = frozenset(s.value for s in HTTPStatus)
_CODES = {400: "bad_request", 413: "body_too_large", 414: "uri_too_long",
          431: "headers_too_large", 500: "internal", 504: "timeout"}


class ConnectionGuard:
    """A protocol factory for `loop.create_server` wrapping aiohttp's."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], *, max_connections: int,
                 header_timeout: float, closed: Counter | None = None) -> None:
        """`closed`: `optout_http_connections_closed_total`, counted by reason
        (`max_connections`, `header_timeout`) when given."""
        self._inner = inner
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        self.timed_out = 0
        self._closed = closed

    def count(self, reason: str) -> None:
        """One connection closed by the guard for `reason`."""
        if reason == "max_connections":
            self.refused += 1
        else:
            self.timed_out += 1
        if self._closed is not None:
            self._closed.labels(reason).inc()

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)


class _Guarded(asyncio.Protocol):
    """One connection: counts itself, watches for the end of the first
    request head, and otherwise passes every call to aiohttp's protocol."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # last bytes seen, so a blank line split over reads is found

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(asyncio.Transport): uvloop's transports are not subclasses.
        transport = cast(asyncio.Transport, transport)
        guard = self._guard
        self._transport = transport
        if guard.active >= guard.max_connections:
            guard.count("max_connections")
            transport.write(_TOO_MANY)
            transport.close()
            return
        guard.active += 1
        self._deadline = asyncio.get_running_loop().call_later(guard.header_timeout,
                                                               self._too_slow)
        inner = guard._inner()
        if type(inner) is RequestHandler:
            # Same slots, one method more: see _QuietRequestHandler. (aiohttp
            # builds its handler itself; this is the one place to swap it.)
            inner.__class__ = _QuietRequestHandler
        self._inner = inner
        inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._deadline = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._guard.count("header_timeout")
        peer = transport.get_extra_info("peername")
        logs.event(log, "http_header_timeout", logging.INFO,
                   peer=str(peer[0]) if peer else "unknown",
                   seconds=self._guard.header_timeout)
        transport.write(_TOO_SLOW)
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-(len(_HEAD_END) - 1):]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inner is None:
            return
        self._guard.active -= 1
        inner, self._inner = self._inner, None
        self._transport = None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


async def serve(factory: Callable[[], asyncio.Protocol], host: str, port: int, *,
                max_connections: int, header_timeout: float, closed: Counter | None = None,
                **kwargs: Any) -> tuple[asyncio.Server, ConnectionGuard]:
    """Listen on host:port with `factory` (e.g. an `AppRunner`'s `server`)
    behind a `ConnectionGuard`. Returns the server and the guard."""
    guard = ConnectionGuard(factory, max_connections=max_connections,
                            header_timeout=header_timeout, closed=closed)
    server = await asyncio.get_running_loop().create_server(guard, host, port, **kwargs)
    return server, guard
