"""The HTTP listener against guessing and slow clients (issue 8, hole 7):
wrong tokens are counted, logged masked and throttled per IP; connections
that do not send a request head in time are closed; connections are capped;
no answer names the software's versions.

The throttle is pure logic tested with a fake clock; the listener is tested
with raw sockets on loopback against the real app and `gateway.http.guard`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import ConfigError, load_config
from gateway.http import make_app
from gateway.http.guard import ConnectionGuard, serve
from gateway.http.throttle import FailureThrottle
from metrics import Metrics
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import ADMIN, TOKENS, Api, AppFactory, assert_error  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the throttle, pure -----------------------------------------------------------


def test_twenty_failures_in_a_minute_refuse_that_source_until_the_oldest_ages_out() -> None:
    throttle = FailureThrottle(limit=20, window=60.0)
    for i in range(19):
        assert throttle.failed("10.0.0.1", 1000.0 + i) is False
    assert throttle.retry_after("10.0.0.1", 1019.0) == 0.0
    assert throttle.failed("10.0.0.1", 1019.0) is True  # the 20th
    assert throttle.retry_after("10.0.0.1", 1019.0) == pytest.approx(41.0)
    assert throttle.retry_after("10.0.0.2", 1019.0) == 0.0  # other sources unaffected
    # Sliding: when the first failure is a minute old, one more attempt is allowed.
    assert throttle.retry_after("10.0.0.1", 1060.0) == 0.0
    assert throttle.failed("10.0.0.1", 1060.0) is True
    assert throttle.retry_after("10.0.0.1", 1060.0) == pytest.approx(1.0)


def test_failures_spread_over_more_than_a_minute_are_never_refused() -> None:
    throttle = FailureThrottle(limit=20, window=60.0)
    for i in range(200):
        assert throttle.failed("10.0.0.1", 1000.0 + i * 3.5) is False


def test_the_throttle_forgets_old_sources_and_stays_bounded() -> None:
    throttle = FailureThrottle(limit=20, window=60.0, max_sources=100)
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000.0)
    assert len(throttle) == 100
    throttle.failed("a", 1000.0)
    assert throttle.retry_after("a", 2000.0) == 0.0  # aged out, and forgotten
    assert len(throttle) <= 100


# --- the API, throttled ------------------------------------------------------------


async def test_wrong_tokens_are_counted_logged_masked_and_throttled(
    make_api: AppFactory, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a client guessing tokens from one address,
    clock = FakeClock()
    api = await make_api(auth_throttle=FailureThrottle(limit=20, window=60.0), clock=clock)
    caplog.set_level(logging.WARNING, logger="gateway.http.auth")
    guesses = [f"guess-{i:04d}-not-a-real-token" for i in range(25)]

    # when it tries 25 wrong tokens in a few seconds,
    replies = []
    for i, guess in enumerate(guesses):
        clock.now += 0.1
        replies.append(await api.get("/inbound-addresses", token=None,
                                     headers={"Authorization": f"Bearer {guess}"}))
        del i

    # then the first 20 are 401, each counted and logged without the token,
    for reply in replies[:20]:
        assert_error(reply, 401, "unauthorized")
    assert metrics.registry.get_sample_value("optout_http_auth_failures_total") == 20
    lines = [r for r in caplog.records if r.getMessage() == "http_auth_failed"]
    assert len(lines) == 20
    logged = " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert not any(guess[:10] in logged for guess in guesses)
    assert all(r.fields["token"].startswith("sha256:")  # type: ignore[attr-defined]
               and len(r.fields["token"]) == 15 for r in lines)  # type: ignore[attr-defined]

    # and the rest get 429 with Retry-After, in the API's error shape.
    for reply in replies[20:]:
        assert_error(reply, 429, "too_many_auth_failures")
        assert 1 <= int(reply.headers["Retry-After"]) <= 60

    # Even the right token is refused from that address while throttled (so
    # a guess cannot succeed), but public probes still answer.
    assert_error(await api.get("/inbound-addresses"), 429)
    assert (await api.get("/healthz", token=None, prefix="")).status == 200

    # A minute after the guesses, the real token works again.
    clock.now += 61
    assert (await api.get("/inbound-addresses", token=ADMIN)).status == 200


async def test_the_openapi_document_lists_429_for_token_routes(api: Api) -> None:
    doc = (await api.get("/openapi.json", token=None)).body
    get_list = doc["paths"]["/api/v1/inbound-addresses"]["get"]["responses"]
    assert "429" in get_list
    assert "429" not in doc["paths"]["/api/v1/openapi.json"]["get"]["responses"]


# --- the listener: slow clients, connection cap, Server header ----------------------


@dataclass
class Listener:
    host: str
    port: int
    guard: ConnectionGuard

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


ListenerFactory = Callable[..., "asyncio.Future[Listener]"]


@pytest.fixture
async def listen(service: OptOutService,
                 metrics: Metrics) -> AsyncIterator[Callable[..., object]]:
    """Start the real app behind the guard on a loopback port."""
    started: list[tuple[web.AppRunner, asyncio.Server]] = []

    async def start(*, max_connections: int = 100, header_timeout: float = 0.5,
                    body_timeout: float = 30.0) -> Listener:
        app = make_app(service, metrics, TOKENS, body_timeout=body_timeout)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
        await runner.setup()
        assert runner.server is not None
        server, guard = await serve(runner.server, "127.0.0.1", 0,
                                    max_connections=max_connections,
                                    header_timeout=header_timeout,
                                    closed=metrics.http_connections_closed)
        started.append((runner, server))
        return Listener("127.0.0.1", server.sockets[0].getsockname()[1], guard)

    yield start
    for runner, server in started:
        server.close()
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent until it closed (a reset counts as closed:
    a server closing on a client still sending makes the kernel send RST)."""
    got = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


async def drip(writer: asyncio.StreamWriter, data: bytes, every: float,
               stop: asyncio.Event) -> None:
    """Send `data` one byte at a time until the peer closes or `stop` is set."""
    for byte in data:
        if stop.is_set() or writer.is_closing():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


def closed_count(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value(
        "optout_http_connections_closed_total", {"reason": reason}) or 0.0


async def test_connections_that_send_headers_slowly_are_closed(
    listen: ListenerFactory, metrics: Metrics
) -> None:
    # Given a listener with a 0.5 s head deadline,
    listener = await listen(header_timeout=0.5)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400 + b"\r\n\r\n"

    # when 50 clients send their headers a byte every 50 ms (and one never sends),
    conns = [await listener.connect() for _ in range(51)]
    stop = asyncio.Event()
    drips = [asyncio.create_task(drip(w, head, 0.05, stop)) for _, w in conns[:50]]
    started = time.monotonic()

    # then every one is answered 408 and closed soon after the deadline,
    answers = await asyncio.gather(*(read_until_closed(r, 3.0) for r, _ in conns))
    took = time.monotonic() - started
    stop.set()
    await asyncio.gather(*drips)
    # (The 408 may be lost to the reset of a client still sending.)
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:80]
    assert took < 2.5
    assert listener.guard.timed_out == 51
    assert closed_count(metrics, "header_timeout") == 51
    await wait_for(lambda: listener.guard.active == 0)  # connection_lost callbacks
    for _, writer in conns:
        writer.close()

    # while a client that sends its request promptly is served.
    reader, writer = await listener.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await read_until_closed(reader, 3.0)
    assert answer.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_a_kept_alive_connection_dripping_its_next_request_is_closed(
    listen: ListenerFactory,
) -> None:
    listener = await listen(header_timeout=0.5)
    reader, writer = await listener.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await reader.readuntil(b'"ok"}')
    assert first.startswith(b"HTTP/1.1 200 ")
    stop = asyncio.Event()
    slow = asyncio.create_task(drip(writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" * 20,
                                    0.05, stop))
    started = time.monotonic()
    await read_until_closed(reader, 3.0)
    assert time.monotonic() - started < 2.5
    stop.set()
    await slow
    writer.close()


async def test_a_body_dripped_slower_than_the_body_timeout_gets_408(
    listen: ListenerFactory,
) -> None:
    # Given a 0.5 s body timeout, and a client whose headers arrive at once
    # but whose 200-byte body comes a byte every 50 ms,
    listener = await listen(header_timeout=5.0, body_timeout=0.5)
    reader, writer = await listener.connect()
    body = b'{"address": "+14155550100", "description": "' + b"x" * 150 + b'"}'
    writer.write(b"POST /api/v1/inbound-addresses HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + ADMIN.token.encode() + b"\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    stop = asyncio.Event()
    slow = asyncio.create_task(drip(writer, body, 0.05, stop))

    # then it is answered 408 in the JSON error shape well before the body is done.
    started = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert time.monotonic() - started < 2.0
    stop.set()
    await slow
    writer.close()


async def test_connections_beyond_the_cap_get_503_and_are_closed(
    listen: ListenerFactory, metrics: Metrics
) -> None:
    # Given a cap of 3 and three idle connections,
    listener = await listen(max_connections=3, header_timeout=30.0)
    idle = [await listener.connect() for _ in range(3)]
    await wait_for(lambda: listener.guard.active == 3)

    # a fourth is answered 503 (JSON, Retry-After) and closed,
    reader, writer = await listener.connect()
    answer = await read_until_closed(reader, 3.0)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 1" in answer and b'"too_many_connections"' in answer
    assert closed_count(metrics, "max_connections") == 1
    writer.close()

    # and once one idle connection goes, a new client is served again.
    idle[0][1].close()
    await wait_for(lambda: listener.guard.active == 2)
    reader, writer = await listener.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await read_until_closed(reader, 3.0)).startswith(b"HTTP/1.1 200 ")
    for _, w in [*idle[1:], (reader, writer)]:
        w.close()


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     b"GET /api/v1/inbound-addresses HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     b"BROKEN\r\n\r\n"],
)
async def test_no_answer_announces_software_versions(listen: ListenerFactory,
                                                     request_bytes: bytes) -> None:
    listener = await listen(header_timeout=5.0)
    reader, writer = await listener.connect()
    writer.write(request_bytes)
    answer = await read_until_closed(reader, 3.0)
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1."), head
    assert "Server: optout-sidecar" in head.splitlines()
    assert "aiohttp" not in head.lower() and "python" not in head.lower(), head
    body = answer.split(b"\r\n\r\n", 1)[1]
    if not head.startswith("HTTP/1.1 200"):
        assert b'{"error": {"code": ' in body, body  # the API's error shape
    writer.close()


# --- configuration ----------------------------------------------------------------


def test_http_guard_keys_parse_and_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[http]\nheader_timeout = 2.5\nmax_connections = 10\n")
    config = load_config(path)
    assert (config.http.header_timeout, config.http.max_connections) == (2.5, 10)
    for bad in ("header_timeout = 0", "max_connections = 0"):
        path.write_text(f"[http]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"http\."):
            load_config(path)
    path.write_text("")
    defaults = load_config(path).http
    assert (defaults.header_timeout, defaults.max_connections) == (10.0, 256)
