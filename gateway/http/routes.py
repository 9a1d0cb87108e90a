"""The route table: every operation of the HTTP server, declared once.

`make_app` registers these operations and `openapi.build_document`
describes them, so the router and the published document list the same
routes with the same bodies, query parameters and responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway.http import (
    routes_addresses as addr,
)
from gateway.http import (
    routes_compliance as comp,
)
from gateway.http import (
    routes_ops as ops,
)
from gateway.http import (
    routes_subscribers as subs,
)
from gateway.http import (
    routes_system as system,
)
from gateway.http import (
    schemas,
)
from gateway.http.validation import Body, Query

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Who may call an operation:
#: "public" - anyone (console files, the OpenAPI document);
#: "probe" - anyone when `open_endpoints` is on, else any valid token;
#: "read" - any valid token; "write" - admin tokens only.
Access = Literal["public", "probe", "read", "write"]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    access: Access
    ok_status: int = 200
    ok_schema: str | None = None  # component name of the JSON success body
    ok_media: tuple[str, ...] = ("application/json",)
    body: Body | None = None
    query: Query = schemas.NO_QUERY
    errors: tuple[int, ...] = ()  # besides 400/401/403/413 that follow from access/body
    description: str = ""
    body_optional: bool = False  # `body` may be left out (e.g. given as a query parameter)


API = "/api/v1"
_ADDR = f"{API}/inbound-addresses/{{address}}"

_A = "Inbound addresses"
_R = "Blocking rules"
_U = "Unsubscribed users"
_H = "History"
_O = "Operations"
_S = "System"
_C = "Compliance"

OPERATIONS: tuple[Operation, ...] = (
    # --- inbound addresses ---
    Operation(
        "GET",
        f"{API}/inbound-addresses",
        addr.list_addresses,
        "listInboundAddresses",
        "List inbound addresses with their keywords and rules",
        _A,
        "read",
        ok_schema="InboundAddressList",
    ),
    Operation(
        "POST",
        f"{API}/inbound-addresses",
        addr.create_address,
        "createInboundAddress",
        "Add an inbound address",
        _A,
        "write",
        201,
        "InboundAddress",
        body=schemas.ADDRESS_CREATE,
        errors=(409, 422),
        description="409 if it exists; 422 if not a US/Canada number or short code.",
    ),
    Operation(
        "GET",
        _ADDR,
        addr.get_address,
        "getInboundAddress",
        "One inbound address with its keywords, replies, default rule and rules",
        _A,
        "read",
        ok_schema="InboundAddress",
        errors=(404,),
    ),
    Operation(
        "PATCH",
        _ADDR,
        addr.update_address,
        "updateInboundAddress",
        "Edit an inbound address's description",
        _A,
        "write",
        ok_schema="InboundAddress",
        body=schemas.ADDRESS_UPDATE,
        errors=(404, 422),
    ),
    Operation(
        "DELETE",
        _ADDR,
        addr.delete_address,
        "deleteInboundAddress",
        "Delete an inbound address (its history records are kept)",
        _A,
        "write",
        204,
        query=schemas.DELETE_ADDRESS_QUERY,
        errors=(404, 409),
        description="409 `address_has_unsubscribed` (with `unsubscribed`, the count) while "
        "numbers are unsubscribed there, unless `force=true`; forced, each released number "
        "gets a `subscribed` record (reason: inbound address deleted) with the caller as "
        "actor.",
    ),
    Operation(
        "GET",
        f"{_ADDR}/keywords",
        addr.get_keywords,
        "getKeywords",
        "Keywords of an inbound address",
        _A,
        "read",
        ok_schema="Keywords",
        errors=(404,),
    ),
    Operation(
        "PUT",
        f"{_ADDR}/keywords",
        addr.put_keywords,
        "putKeywords",
        "Replace the keywords of an inbound address",
        _A,
        "write",
        ok_schema="Keywords",
        body=schemas.KEYWORDS_PUT,
        errors=(404, 422),
        description="An omitted `match` keeps the current match mode. An opt-out list "
        "lacking any of STOP, QUIT, END, REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE is refused "
        "with 422 `noncompliant_keywords` (`missing` lists them) unless "
        '`"allow_noncompliant": true`; then it is saved and the audit entry says so.',
    ),
    Operation(
        "GET",
        f"{_ADDR}/near-miss-phrases",
        comp.get_near_miss_phrases,
        "getNearMissPhrases",
        "Extra phrases flagged as near-miss opt-outs at this address",
        _A,
        "read",
        ok_schema="NearMissPhrases",
        errors=(404,),
        description="On top of the built-in English, French and Spanish phrases.",
    ),
    Operation(
        "PUT",
        f"{_ADDR}/near-miss-phrases",
        comp.put_near_miss_phrases,
        "putNearMissPhrases",
        "Replace the address's extra near-miss phrases",
        _A,
        "write",
        ok_schema="NearMissPhrases",
        body=schemas.NEAR_MISS_PHRASES_PUT,
        errors=(404, 422),
    ),
    Operation(
        "GET",
        f"{_ADDR}/replies",
        addr.get_replies,
        "getReplies",
        "Auto-reply texts of an inbound address",
        _A,
        "read",
        ok_schema="Replies",
        errors=(404,),
    ),
    Operation(
        "PUT",
        f"{_ADDR}/replies",
        addr.put_replies,
        "putReplies",
        "Replace the auto-reply texts (null switches one off)",
        _A,
        "write",
        ok_schema="Replies",
        body=schemas.REPLIES_PUT,
        errors=(404, 422),
    ),
    # --- rules ---
    Operation(
        "GET",
        f"{_ADDR}/blocking-rules",
        addr.list_rules,
        "listBlockingRules",
        "Blocking rules of an inbound address",
        _R,
        "read",
        ok_schema="BlockingRuleList",
        errors=(404,),
    ),
    Operation(
        "POST",
        f"{_ADDR}/blocking-rules",
        addr.create_rule,
        "createBlockingRule",
        "Add a blocking rule for an application",
        _R,
        "write",
        201,
        "BlockingRule",
        body=schemas.RULE_CREATE,
        errors=(404, 409, 422),
        description="409 if the application already has a rule at this address.",
    ),
    Operation(
        "PUT",
        f"{_ADDR}/blocking-rules/{{app_id}}",
        addr.replace_rule,
        "replaceBlockingRule",
        "Replace the SMS types an application's rule blocks",
        _R,
        "write",
        ok_schema="BlockingRule",
        body=schemas.RULE_PUT,
        errors=(404, 422),
    ),
    Operation(
        "DELETE",
        f"{_ADDR}/blocking-rules/{{app_id}}",
        addr.delete_rule,
        "deleteBlockingRule",
        "Delete an application's rule (the default rule applies again)",
        _R,
        "write",
        204,
        errors=(404, 422),
    ),
    Operation(
        "GET",
        f"{_ADDR}/default-rule",
        addr.get_default_rule,
        "getDefaultRule",
        "The rule for applications without their own rule",
        _R,
        "read",
        ok_schema="DefaultRule",
        errors=(404,),
    ),
    Operation(
        "PUT",
        f"{_ADDR}/default-rule",
        addr.put_default_rule,
        "putDefaultRule",
        "Replace the default rule",
        _R,
        "write",
        ok_schema="DefaultRule",
        body=schemas.DEFAULT_RULE_PUT,
        errors=(404, 422),
    ),
    # --- unsubscribed users ---
    Operation(
        "GET",
        f"{API}/unsubscribed",
        subs.list_unsubscribed,
        "listUnsubscribed",
        "Unsubscribed users, searchable by number and address, paged; format=csv exports",
        _U,
        "read",
        ok_schema="UnsubscribedPage",
        query=schemas.UNSUBSCRIBED_QUERY,
    ),
    Operation(
        "POST",
        f"{API}/unsubscribed",
        subs.add_unsubscribed,
        "addUnsubscribed",
        "Unsubscribe a number at an inbound address by hand (recorded)",
        _U,
        "write",
        201,
        "Record",
        body=schemas.UNSUBSCRIBE,
        errors=(404, 409, 422),
        description="409 if the number is already unsubscribed there. "
        "Source `console` when the request carries "
        "`X-Optout-Client: console`, else `api`.",
    ),
    Operation(
        "DELETE",
        f"{API}/unsubscribed/{{inbound_address}}/{{phone_number}}",
        subs.remove_unsubscribed,
        "removeUnsubscribed",
        "Re-subscribe a number at an inbound address (recorded)",
        _U,
        "write",
        ok_schema="Record",
        body=schemas.RESUBSCRIBE,
        body_optional=True,
        query=schemas.RESUBSCRIBE_QUERY,
        errors=(404, 422),
        description="A reason (the consent evidence) is required, as `?reason=` or a JSON "
        'body `{"reason": ...}`: 422 `reason_required` without one.',
    ),
    # --- history ---
    Operation(
        "GET",
        f"{API}/records",
        subs.list_records,
        "listRecords",
        "Opt-out / opt-in history, newest first (format=csv: every match, oldest first)",
        _H,
        "read",
        ok_schema="RecordPage",
        query=schemas.RECORDS_QUERY,
    ),
    # --- compliance ---
    Operation(
        "GET",
        f"{API}/inbound-messages",
        comp.list_inbound_messages,
        "listInboundMessages",
        "Every MO handled (the inbound message log), newest first",
        _C,
        "read",
        ok_schema="InboundMessagePage",
        query=schemas.INBOUND_MESSAGES_QUERY,
        description="Kept `[store] inbound_retention_days` (near-misses awaiting review are "
        "kept until reviewed). `near_miss`: no keyword matched but the text reads like an "
        "opt-out; nothing is unsubscribed until an admin reviews it.",
    ),
    Operation(
        "POST",
        f"{API}/inbound-messages/{{id}}/opt-out",
        comp.review_opt_out,
        "reviewOptOut",
        "Review: unsubscribe the message's sender at its inbound address",
        _C,
        "write",
        ok_schema="ReviewResult",
        errors=(404, 409, 422),
        description="Records source `review`, the caller as actor and the message id. "
        "409 `already_reviewed` if reviewed before (or `conflict` if a keyword already acted "
        "on it); 422 if its address is not configured or the sender cannot be unsubscribed. "
        "No confirmation SMS is sent.",
    ),
    Operation(
        "POST",
        f"{API}/inbound-messages/{{id}}/dismiss",
        comp.review_dismiss,
        "reviewDismiss",
        "Review: the message is not an opt-out",
        _C,
        "write",
        ok_schema="ReviewResult",
        body=schemas.DISMISS,
        errors=(404, 409, 422),
        description="`reason` is required. 409 `already_reviewed` if reviewed before.",
    ),
    Operation(
        "GET",
        f"{API}/audit",
        comp.list_audit,
        "listAudit",
        "The audit log of administrative changes, newest first",
        _C,
        "read",
        ok_schema="AuditPage",
        query=schemas.AUDIT_QUERY,
    ),
    Operation(
        "GET",
        f"{API}/stats",
        comp.stats,
        "stats",
        "Overview figures",
        _C,
        "read",
        ok_schema="Stats",
        description="`daily`: the last 30 UTC days (zero-filled). `submits`: since this "
        "process started (from optout_submit_total; resets on restart). `replies`: opt-out "
        "confirmations of the last 30 days, sent and sent within 5 minutes of the MO.",
    ),
    Operation(
        "GET",
        f"{API}/apps",
        comp.list_apps,
        "listApps",
        "Application IDs of the configured accounts (for blocking rules)",
        _C,
        "read",
        ok_schema="AppList",
    ),
    # --- operations ---
    Operation(
        "POST",
        f"{API}/check",
        ops.check,
        "check",
        "May this application send this SMS type to this number?",
        _O,
        "read",
        ok_schema="Decision",
        body=schemas.CHECK,
        errors=(422,),
        description="The same decision the SMPP relay makes. Viewer tokens may call "
        "it (it changes nothing).",
    ),
    Operation(
        "POST",
        f"{API}/mo",
        ops.mo,
        "mo",
        "Deliver an MO over HTTP; handled like an SMPP MO",
        _O,
        "write",
        ok_schema="MoResult",
        body=schemas.MO,
        errors=(422,),
    ),
    Operation(
        "GET",
        f"{API}/whoami",
        ops.whoami,
        "whoami",
        "The calling token's name and role",
        _O,
        "read",
        ok_schema="WhoAmI",
    ),
    # --- system ---
    Operation(
        "GET",
        f"{API}/openapi.json",
        system.openapi_document,
        "openapi",
        "This OpenAPI document",
        _S,
        "public",
    ),
    Operation(
        "GET",
        "/metrics",
        system.prometheus_metrics,
        "metrics",
        "Prometheus metrics (text exposition format)",
        _S,
        "probe",
        ok_media=("text/plain",),
    ),
    Operation(
        "GET",
        "/healthz",
        system.healthz,
        "healthz",
        "Liveness: the process runs",
        _S,
        "probe",
        ok_schema="Health",
    ),
    Operation(
        "GET",
        "/readyz",
        system.readyz,
        "readyz",
        "Readiness: the store and the upstream carrier are reachable",
        _S,
        "probe",
        ok_schema="Readiness",
        errors=(503,),
        description="503 with `store`/`upstream` telling which one is not ready.",
    ),
    Operation(
        "GET",
        "/",
        system.console_index,
        "console",
        "The web console",
        _S,
        "public",
        ok_media=("text/html",),
    ),
    Operation(
        "GET",
        "/static/{name}",
        system.console_static,
        "consoleFile",
        "A file of the web console",
        _S,
        "public",
        ok_media=("text/html", "text/javascript", "text/css", "image/svg+xml"),
        errors=(404,),
    ),
)
