"""Handlers for the operational calls: `POST /check` (the send-time
decision for HTTP senders), `POST /mo` (an MO delivered over HTTP) and
`GET /whoami` (who the token is, for the console).

Both `check` and `mo` go through the same service calls the SMPP relay
makes (`decide`, `handle_mo`), after the same number normalisation.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.enforcement import count_mo_extras
from gateway.http import schemas, views
from gateway.http.auth import principal
from gateway.http.context import body, metrics, service
from rules import numbers
from rules.model import SmsType


async def check(request: web.Request) -> web.Response:
    data = await body(request, schemas.CHECK)
    number = numbers.normalize(data["phone_number"])
    sms_type = SmsType(data["sms_type"])
    app_id: str = data["app_id"]
    started = time.perf_counter()
    decision = service(request).decide(app_id, sms_type, number)
    m = metrics(request)
    m.decision_seconds.observe(time.perf_counter() - started)
    # Counted apart from SMPP submits, and without the client's app_id as a
    # label: nothing a caller sends becomes a label value (SPEC section 7).
    m.check.labels("allowed" if decision.allowed else "blocked").inc()
    return web.json_response(views.decision(decision))


async def mo(request: web.Request) -> web.Response:
    data = await body(request, schemas.MO)
    svc = service(request)
    # Raw values, as the relay passes what the carrier sent: the service
    # normalises, and answers handled=False for senders it cannot handle.
    outcome = await svc.handle_mo(data["to"], data["from"], data["text"])
    # Only addresses the store knows become label values (bounded by config).
    label = numbers.normalize(data["to"]) if outcome.handled else "unknown"
    m = metrics(request)
    m.mo.labels(inbound_address=label, action=outcome.action.value).inc()
    count_mo_extras(m, label, outcome)
    m.unsubscribed.set(svc.unsubscribed_count())
    return web.json_response(views.mo_outcome(outcome))


async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"name": who.name, "role": who.role})
