"""The OpenAPI document matches the server, and the server keeps its
promises for inputs nobody wrote by hand.

* Every route in the aiohttp router is in the document and vice versa.
* The document is valid OpenAPI 3.1; request bodies refuse unknown fields.
* Schemathesis generates requests for every operation against the live app
  on a loopback port (admin token) and checks: no 5xx, only documented
  status codes and content types, responses that match their schemas.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from gateway.http import make_app
from gateway.http.openapi import build_document
from metrics import Metrics
from rules.model import Conflict, SmsType, Source
from rules.service import OptOutService

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import ADMIN, TOKENS  # noqa: E402
from tests.strategies import (  # noqa: E402
    has_surrogate,
    hostile_int,
    hostile_int_text,
    hostile_text,
)

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = make_app(object(), Metrics(), TOKENS)  # type: ignore[arg-type]
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method in METHODS and route.resource is not None
    }
    doc = build_document()
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    }
    assert routed == documented
    # the brief's contract, spelled out
    for must in [
        ("GET", "/api/v1/inbound-addresses"),
        ("POST", "/api/v1/inbound-addresses"),
        ("PATCH", "/api/v1/inbound-addresses/{address}"),
        ("PUT", "/api/v1/inbound-addresses/{address}/keywords"),
        ("PUT", "/api/v1/inbound-addresses/{address}/replies"),
        ("DELETE", "/api/v1/inbound-addresses/{address}/blocking-rules/{app_id}"),
        ("PUT", "/api/v1/inbound-addresses/{address}/default-rule"),
        ("DELETE", "/api/v1/unsubscribed/{inbound_address}/{phone_number}"),
        ("GET", "/api/v1/records"),
        ("POST", "/api/v1/check"),
        ("POST", "/api/v1/mo"),
        ("GET", "/api/v1/whoami"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/"),
    ]:
        assert must in documented, must


def test_document_is_valid_openapi_3_1() -> None:
    doc = build_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_request_bodies_refuse_unknown_fields_and_errors_share_one_shape() -> None:
    doc = build_document()
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody")
            if body is not None:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                schema = schemas[ref.rsplit("/", 1)[1]]
                assert schema["additionalProperties"] is False, (method, path)
                assert "413" in op["responses"] and "400" in op["responses"], (method, path)
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    media = response["content"]["application/json"]["schema"]
                    assert media == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])


async def test_document_is_served_without_a_token(aiohttp_client: Any, tmp_path: Any) -> None:
    service = await OptOutService.open(f"sqlite:///{tmp_path}/doc.db")
    try:
        client = await aiohttp_client(make_app(service, Metrics(), TOKENS))
        resp = await client.get("/api/v1/openapi.json")
        assert resp.status == 200
        assert await resp.json() == build_document()
    finally:
        await service.close()


# --- property-based run against the live server ---------------------------------------------

# Numbers as the API's users write them: mostly ones that exist in the
# seeded store (so operations get past 404), some new ones, some outside
# the US/Canada, some garbage. Registered for the document's "phone" format.
KNOWN_NUMBERS = ["+14155550100", "14155550100", "55555", "+14155550199", "(415) 555-0199"]
PHONE_STRATEGY = st.one_of(
    st.sampled_from(KNOWN_NUMBERS),
    st.from_regex(r"\A\+1[2-9][0-9]{2}[2-9][0-9]{6}\Z"),
    st.sampled_from(["+18765550100", "+442079460958", "12345678", "+1 415 555"]),
)
schemathesis.openapi.format("phone", PHONE_STRATEGY)

MAX_EXAMPLES = 30
NEGATIVE_EXAMPLES = 10
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance]


async def seed(service: OptOutService) -> None:
    """State for generated requests to find; idempotent, so it can restore
    what an earlier generated DELETE removed."""
    for address in ("+14155550100", "55555"):
        with contextlib.suppress(Conflict):
            await service.create_address(address, "fuzz target")
    with contextlib.suppress(Conflict):
        await service.create_rule("+14155550100", "1400000001", [SmsType.MARKETING])
    with contextlib.suppress(Conflict):
        await service.unsubscribe("+14155550199", "+14155550100", source=Source.API)
    # Near-misses waiting for review, so the review routes can succeed: the
    # document's example ids (1-6) are the first six logged messages.
    open_items, _ = await service.list_inbound_messages(near_miss=True, reviewed=False)
    for _ in range(6 - len(open_items)):
        await service.handle_mo("+14155550100", "+14155550123", "please stop")


@pytest.fixture
async def live_server(tmp_path: Any) -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """The app on a real loopback port, served by this test's event loop,
    and a function another thread calls to re-seed the store."""
    service = await OptOutService.open(f"sqlite:///{tmp_path}/fuzz.db")
    await seed(service)
    loop = asyncio.get_running_loop()

    def reseed() -> None:
        asyncio.run_coroutine_threadsafe(seed(service), loop).result(timeout=10)

    runner = web.AppRunner(make_app(service, Metrics(), TOKENS), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", reseed
    finally:
        await runner.cleanup()
        await service.close()


def _property_test(
    strategy: Any,
    examples: int,
    checks: list[Any],
    base_url: str,
    headers: dict[str, str],
    calls: list[int],
) -> Any:
    """A Hypothesis test that sends each generated case and checks the response."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        calls.append(response.status_code)
        case.validate_response(response, checks=checks)

    return run


def _fuzz(
    doc: dict[str, Any],
    base_url: str,
    reseed: Callable[[], None],
    calls: dict[str, list[int]],
) -> list[str]:
    """Run schemathesis over every operation; the failures as text. The
    statuses each operation answered in positive mode go to `calls`."""
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"Bearer {ADMIN.token}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"schemathesis could not load an operation: {result.err()}")
            continue
        operation = result.ok()
        for mode, examples, checks in (
            (GenerationMode.POSITIVE, MAX_EXAMPLES, POSITIVE_CHECKS),
            (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, NEGATIVE_CHECKS),
        ):
            reseed()
            strategy = operation.as_strategy(generation_mode=mode)
            try:
                seen = (
                    calls.setdefault(operation.label, []) if mode is GenerationMode.POSITIVE else []
                )
                _property_test(strategy, examples, checks, base_url, headers, seen)()
            except Unsatisfiable:
                # Negative mode has nothing to break in an operation without
                # parameters or body (GET /healthz).
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # one report per operation and mode
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures


async def test_schemathesis_finds_no_server_errors_or_schema_violations(
    live_server: tuple[str, Callable[[], None]],
) -> None:
    base_url, reseed = live_server
    started = time.monotonic()
    # Schemathesis is synchronous (requests); the server needs this loop.
    calls: dict[str, list[int]] = {}
    failures = await asyncio.to_thread(_fuzz, build_document(), base_url, reseed, calls)
    assert not failures, "\n\n".join(failures)
    # It really exercised the server: many requests, successes and refusals.
    assert sum(map(len, calls.values())) > 300
    # Generated requests got past validation into the domain: nearly every
    # operation succeeded at least once (random keyword lists rarely pass
    # keyword validation, so PUT .../keywords may only see 404/422).
    succeeded = {op for op, statuses in calls.items() if any(200 <= s < 300 for s in statuses)}
    assert len(succeeded) >= len(calls) - 2, sorted(set(calls) - succeeded)
    assert time.monotonic() - started < 120


# --- hostile inputs, aimed ------------------------------------------------------------------

#: Each paged listing and the cursor kinds it hands out (rules/service.py).
PAGED = {"/api/v1/records": ("r", "d"), "/api/v1/unsubscribed": ("u",)}


def _cursor_of(prefix: str, value: str) -> str:
    """A cursor shaped like the API's (base64 of "kind:value"), for any value."""
    raw = f"{prefix}:{value}".encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@st.composite
def paged_request(draw: st.DrawFn) -> tuple[str, str | None, str | None]:
    """(path, limit, cursor): mostly cursors of the listing's own kind that
    decode to hostile integers, some of another kind, some not base64."""
    path = draw(st.sampled_from(sorted(PAGED)))
    kinds = PAGED[path]
    cursor = draw(st.one_of(
        st.none(),
        st.tuples(st.sampled_from(kinds), hostile_int_text).map(lambda t: _cursor_of(*t)),
        st.tuples(st.sampled_from(kinds), hostile_int.map(str)).map(lambda t: _cursor_of(*t)),
        st.tuples(st.sampled_from(["x", "", *kinds]), hostile_text(max_size=8)).map(
            lambda t: _cursor_of(*t)),
        hostile_text(max_size=30),
    ))
    limit = draw(st.one_of(st.none(), hostile_int_text))
    return path, limit, cursor


def _request(method: str, url: str, **kw: Any) -> tuple[int, str]:
    import requests  # schemathesis's HTTP client; synchronous, run in a thread

    resp = requests.request(method, url, timeout=10,
                            headers={"Authorization": f"Bearer {ADMIN.token}"}, **kw)
    return resp.status_code, resp.text


async def test_hostile_limits_and_cursors_are_refused_never_a_server_error(
    live_server: tuple[str, Callable[[], None]],
) -> None:
    """Huge, negative and odd integers in `limit`, and cursors that decode to
    them (or to nothing): a page (only for a limit in 1..1000) or a 400."""
    base_url, _ = live_server

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(paged_request())
    def run(case: tuple[str, str | None, str | None]) -> None:
        path, limit, cursor = case
        params = {k: v.encode("utf-8", "surrogatepass") for k, v in
                  (("limit", limit), ("cursor", cursor)) if v is not None}
        status, text = _request("GET", base_url + path, params=params)
        assert status in (200, 400), (path, params, status, text[:300])
        if status == 200 and limit is not None:
            # Whatever spelling was let through, it was a page size in range.
            assert 1 <= int(limit) <= 1000, (path, params)

    await asyncio.to_thread(run)


async def test_hostile_text_in_bodies_is_answered_never_a_server_error(
    live_server: tuple[str, Callable[[], None]],
) -> None:
    """Lone surrogates, look-alikes, controls and full-width forms in every
    free-text field: a 2xx or a 4xx, never a 500."""
    base_url, _ = live_server
    addr = "%2B14155550100"

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(hostile_text(max_size=30), st.sampled_from(["mo", "describe", "reason", "reply"]))
    def run(text: str, where: str) -> None:
        method, path, body = {
            "mo": ("POST", "/api/v1/mo", {"from": "+14155550123", "to": "+14155550100",
                                         "text": text}),
            "describe": ("PATCH", f"/api/v1/inbound-addresses/{addr}", {"description": text}),
            "reason": ("POST", "/api/v1/unsubscribed",
                       {"phone_number": "+14155550124", "inbound_address": "+14155550100",
                        "reason": text}),
            "reply": ("PUT", f"/api/v1/inbound-addresses/{addr}/replies",
                      {"opt_out": text, "opt_in": None, "help": None}),
        }[where]
        # json.dumps escapes a lone surrogate as \\udXXX, which is what a client sends.
        status, out = _request(method, base_url + path, data=json.dumps(body))
        assert status < 500, (where, repr(text), status, out[:300])
        # A surrogate *pair* in the JSON text is one valid character once decoded
        # (\ud800\udc00 is U+10000): only what stays lone must be refused.
        if has_surrogate(json.loads(json.dumps(text))):
            assert status in (400, 422), (where, repr(text), status, out[:300])

    await asyncio.to_thread(run)
