"""Fixtures shared by the HTTP API, OpenAPI and console tests: a real
SQLite store in tmp_path, a fresh Metrics registry, two tokens, and a small
JSON client that fails the test if the server ever answers 500."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http import ApiToken, make_app
from metrics import Metrics
from rules.service import OptOutService

ADMIN = ApiToken(name="ops-alice", token="admin-secret-token", role="admin")
VIEWER = ApiToken(name="auditor-bob", token="viewer-secret-token", role="viewer")
TOKENS = (ADMIN, VIEWER)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[OptOutService]:
    """A service over a real SQLite file (sqlite:// + absolute path)."""
    svc = await OptOutService.open(f"sqlite:///{tmp_path}/t.db")
    yield svc
    with contextlib.suppress(Exception):  # a test may have closed it (an outage)
        await svc.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


class CrashRecorder(logging.Handler):
    """Keeps every "unhandled error in HTTP handler" record logged while it
    is attached, whatever the test phase (setup, call or teardown)."""

    MESSAGE = "unhandled error in HTTP handler"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.crashes: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.MESSAGE:
            self.crashes.append(record)

    def check(self) -> None:
        """AssertionError naming the first crash, if there was one."""
        if self.crashes:
            first = self.crashes[0]
            detail = first.getMessage()
            if first.exc_info is not None and first.exc_info[1] is not None:
                detail = f"{detail}: {first.exc_info[1]!r}"
            raise AssertionError(f"HTTP handler crashed ({len(self.crashes)}x): {detail}")


@contextlib.contextmanager
def recording_crashes() -> Iterator[CrashRecorder]:
    """Attach a `CrashRecorder` to the HTTP logger for the `with` block.

    Why our own handler: `caplog.records` at teardown holds only teardown's
    records, so a 500 during the test itself went unseen.
    """
    logger = logging.getLogger("gateway.http")
    recorder = CrashRecorder()
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(old_level)


@pytest.fixture
def no_server_errors() -> Iterator[CrashRecorder]:
    """Fails the test if a handler raised something the error middleware
    had to turn into a 500 (the API promises never to), in any phase."""
    with recording_crashes() as recorder:
        yield recorder
    recorder.check()


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    text: str


class Api:
    """`await api.post("/inbound-addresses", {...})` -> Reply, with the admin
    token unless `token=` says otherwise (None: no Authorization header)."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token: ApiToken | None = ADMIN,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
        prefix: str = "/api/v1",
    ) -> Reply:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.setdefault("Authorization", f"Bearer {token.token}")
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.client.request(method, prefix + path, **kwargs) as resp:
            text = await resp.text()
            assert resp.status != 500, f"{method} {path} -> 500: {text}"
            body: Any = None
            if resp.content_type == "application/json" and text:
                body = await resp.json()
            return Reply(resp.status, body, resp.headers, text)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PUT", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)


AppFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_api(
    # First, so that it is set up before and torn down after the app and client.
    no_server_errors: CrashRecorder,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    service: OptOutService,
    metrics: Metrics,
) -> AppFactory:
    """Builds the app with `make_app` (keyword arguments passed through)
    and returns an `Api` bound to a test client."""

    async def build(**kwargs: Any) -> Api:
        app = make_app(service, metrics, TOKENS, **kwargs)
        return Api(await aiohttp_client(app))

    return build


@pytest.fixture
async def api(make_api: AppFactory) -> Api:
    return await make_api()


def assert_error(reply: Reply, status: int, code: str | None = None) -> None:
    """The reply is the API's JSON error shape with this status (and code)."""
    assert reply.status == status, (reply.status, reply.text)
    assert set(reply.body) == {"error"}, reply.body
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]
    if code is not None:
        assert reply.body["error"]["code"] == code, reply.body
