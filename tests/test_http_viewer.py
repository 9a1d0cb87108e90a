"""Viewer tokens may read but never change anything, on EVERY write route.

The cases are generated from the route table (`gateway.http.routes.OPERATIONS`,
from which `make_app` builds the router and the OpenAPI document), so a new
route is tried the day it is added. Only the routes listed in
`VIEWER_MAY_CALL` may be called by a viewer with a method other than GET.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.http.routes import OPERATIONS, Operation
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import ADMIN, VIEWER, Api, AppFactory, assert_error  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]

ADDR = "+14155550100"
USER = "+14155550199"
APP = "app-1"

#: Non-GET routes a viewer may call: they answer a question and change nothing
#: (see gateway/http/auth.py). Everything else that is not GET/HEAD is a write.
VIEWER_MAY_CALL = frozenset({("POST", "/api/v1/check")})

#: Values for the route templates' path parameters: entities the fixture
#: creates, so that the admin's call really changes something.
PATH_VALUES = {
    "address": ADDR,
    "inbound_address": ADDR,
    "phone_number": USER,
    "app_id": APP,
    "id": "1",  # the near-miss MO the fixture logs first
}

#: Query strings some writes need to succeed for the admin.
QUERIES = {"deleteInboundAddress": "?force=true"}

#: A valid body per write operation, so that the admin's call succeeds. A new
#: write route without one is still tried (viewer 403, admin not refused).
BODIES: dict[str, Any] = {
    "createInboundAddress": {"address": "+14155550101", "description": "Second line"},
    "updateInboundAddress": {"description": "Renamed"},
    "putKeywords": {"opt_out": ["STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL",
                                "UNSUBSCRIBE", "HALT"], "opt_in": ["START"], "help": ["HELP"]},
    "putNearMissPhrases": {"phrases": ["halt the texts"]},
    "removeUnsubscribed": {"reason": "signed up again on the web form"},
    "reviewDismiss": {"reason": "a conversation, not an opt-out"},
    "putReplies": {"opt_out": "Bye.", "opt_in": "Welcome back.", "help": "Call 555"},
    "createBlockingRule": {"app_id": "app-2", "sms_types": ["marketing"]},
    "replaceBlockingRule": {"sms_types": ["notification"]},
    "putDefaultRule": {"sms_types": ["notification"]},
    "addUnsubscribed": {"phone_number": "+14155550198", "inbound_address": ADDR},
    "mo": {"from": "+14155550197", "to": ADDR, "text": "STOP"},
}

WRITES = [op for op in OPERATIONS
          if op.method not in ("GET", "HEAD") and (op.method, op.path) not in VIEWER_MAY_CALL]


def _url(op: Operation) -> str:
    """The operation's path with its parameters filled in (percent-encoded)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PATH_VALUES, f"add a value for path parameter {{{name}}} to PATH_VALUES"
        return quote(PATH_VALUES[name], safe="")

    return re.sub(r"\{([^}:]+)\}", fill, op.path) + QUERIES.get(op.operation_id, "")


def _snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store, to compare before and after."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(map(tuple, conn.execute(f'SELECT * FROM "{t}"')), key=repr)
                for t in tables}


@pytest.fixture
async def populated(make_api: AppFactory, service: OptOutService) -> Api:
    """An address with a blocking rule for APP, one unsubscribed user, and
    one logged near-miss MO (inbound message 1)."""
    api = await make_api()
    assert (await api.post("/inbound-addresses", {"address": ADDR})).status == 201
    rule = await api.post(f"/inbound-addresses/{quote(ADDR)}/blocking-rules",
                          {"app_id": APP, "sms_types": ["marketing"]})
    assert rule.status == 201, rule.text
    unsub = await api.post("/unsubscribed", {"phone_number": USER, "inbound_address": ADDR})
    assert unsub.status == 201, unsub.text
    mo = await api.post("/mo", {"from": "+14155550196", "to": ADDR, "text": "please stop"})
    assert mo.status == 200 and mo.body["action"] == "none", mo.text
    return api


def test_the_router_serves_exactly_the_route_table() -> None:
    """The cases below come from OPERATIONS: no route may bypass it."""
    from gateway.http import make_app
    from metrics import Metrics

    class _NoService:  # routes are registered without touching the service
        pass

    app = make_app(_NoService(), Metrics(), [ADMIN, VIEWER])  # type: ignore[arg-type]
    served = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    assert served == {(op.method, op.path) for op in OPERATIONS}
    assert len(WRITES) >= 12  # sanity: the table was read (12 writes in v1)


@pytest.mark.parametrize("op", WRITES, ids=[f"{op.method} {op.path}" for op in WRITES])
async def test_a_viewer_is_refused_every_write_and_nothing_changes(
    populated: Api, op: Operation, tmp_path: Path
) -> None:
    api, url, body = populated, _url(op), BODIES.get(op.operation_id, {})
    before = _snapshot(tmp_path / "t.db")

    # when a viewer tries the write
    reply = await api.call(op.method, url, body, token=VIEWER, prefix="")
    # then it is refused, and the store is exactly as it was
    assert_error(reply, 403, "forbidden")
    assert _snapshot(tmp_path / "t.db") == before

    # while the admin, making the same call, is not refused (the case is not vacuous)
    reply = await api.call(op.method, url, body, token=ADMIN, prefix="")
    assert reply.status not in (401, 403), (reply.status, reply.text)
    if op.operation_id in BODIES or op.body is None:
        assert 200 <= reply.status < 300, (reply.status, reply.text)
        assert _snapshot(tmp_path / "t.db") != before, "the admin's write changed nothing"


@pytest.mark.parametrize("method_path", sorted(VIEWER_MAY_CALL))
async def test_the_read_only_posts_stay_open_to_viewers(
    populated: Api, method_path: tuple[str, str]
) -> None:
    method, path = method_path
    body = {"app_id": APP, "sms_type": "marketing", "phone_number": USER}
    reply = await populated.call(method, path, body, token=VIEWER, prefix="")
    assert reply.status == 200, reply.text
