"""Every request and response shape of the HTTP API, declared once.

Request bodies and query strings are `validation.Body` / `validation.Query`
objects: the handlers validate with them and the OpenAPI document publishes
them. Response shapes are JSON Schema dicts in `RESPONSES`; `views.py`
builds the matching JSON and the OpenAPI test checks live responses
against these schemas.
"""

from __future__ import annotations

from typing import Any

from gateway.http.validation import Body, Field, Param, Query
from rules.model import Action, MatchMode, ReviewDecision, SmsType, Source, Status

# --- shared fragments -----------------------------------------------------------

SMS_TYPE_VALUES = [t.value for t in SmsType]

ADDRESS: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "format": "phone",
    "description": "E.164 (+1...), 10/11 NANP digits, or a 5-6 digit short code.",
    "examples": ["+14155550100", "14155550100", "55555"],
}
PHONE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 32,
    "format": "phone",
    "description": "E.164, or a North American number as people write it.",
    "examples": ["+14155550199", "(415) 555-0199"],
}
APP_ID: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "examples": ["1400000001"],
}
SMS_TYPE: dict[str, Any] = {"type": "string", "enum": SMS_TYPE_VALUES}
SMS_TYPES: dict[str, Any] = {"type": "array", "items": SMS_TYPE, "maxItems": 16}
KEYWORD_LIST: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 64},
    "maxItems": 100,
}
REPLY_TEXT: dict[str, Any] = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": 1600,
    "description": "Reply text; null switches this reply off.",
}
DESCRIPTION: dict[str, Any] = {"type": "string", "maxLength": 500}
REASON: dict[str, Any] = {"type": "string", "maxLength": 500}
CURSOR: dict[str, Any] = {"type": "string", "maxLength": 512}
LIMIT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
TIME_FILTER: dict[str, Any] = {
    "type": "string",
    "maxLength": 64,
    "description": "ISO-8601 (UTC when no offset) or unix seconds.",
    "examples": ["2025-04-11T00:00:00Z", "1744329600"],
}

# --- request bodies ------------------------------------------------------------

ADDRESS_CREATE = Body(
    "InboundAddressCreate",
    (
        Field("address", ADDRESS, description="E.164 number (with or without '+') or short code."),
        Field("description", DESCRIPTION, required=False),
    ),
)
ADDRESS_UPDATE = Body("InboundAddressUpdate", (Field("description", DESCRIPTION),))
KEYWORDS_PUT = Body(
    "KeywordsUpdate",
    (
        Field("opt_out", KEYWORD_LIST),
        Field("opt_in", KEYWORD_LIST),
        Field("help", KEYWORD_LIST),
        Field(
            "match",
            {"type": "string", "enum": [m.value for m in MatchMode]},
            required=False,
            description="'leading': a message starting with an opt-out keyword opts out; "
            "'exact': only the whole message.",
        ),
        Field(
            "allow_noncompliant",
            {"type": "boolean", "default": False},
            required=False,
            description="Save an opt-out list that lacks one of STOP, QUIT, END, REVOKE, "
            "OPT OUT, CANCEL, UNSUBSCRIBE (otherwise 422 noncompliant_keywords). "
            "Recorded in the audit log.",
        ),
    ),
)
NEAR_MISS_PHRASES_PUT = Body(
    "NearMissPhrasesUpdate",
    (
        Field(
            "phrases",
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "maxItems": 100,
            },
            description="Extra phrases flagged as near-miss opt-outs at this address, on top "
            "of the built-in English, French and Spanish list.",
        ),
    ),
)
DISMISS = Body(
    "DismissRequest",
    (Field("reason", {"type": "string", "minLength": 1, "maxLength": 500},
           description="Why this message is not an opt-out."),),
)
RESUBSCRIBE = Body(
    "ResubscribeRequest",
    (Field("reason", {"type": "string", "minLength": 1, "maxLength": 500},
           description="The consent evidence (required here or as ?reason=)."),),
)
REPLIES_PUT = Body(
    "RepliesUpdate",
    (Field("opt_out", REPLY_TEXT), Field("opt_in", REPLY_TEXT), Field("help", REPLY_TEXT)),
)
RULE_CREATE = Body("BlockingRuleCreate", (Field("app_id", APP_ID), Field("sms_types", SMS_TYPES)))
RULE_PUT = Body("BlockingRuleUpdate", (Field("sms_types", SMS_TYPES),))
DEFAULT_RULE_PUT = Body("DefaultRuleUpdate", (Field("sms_types", SMS_TYPES),))
UNSUBSCRIBE = Body(
    "UnsubscribeRequest",
    (
        Field("phone_number", PHONE),
        Field("inbound_address", ADDRESS),
        Field("reason", REASON, required=False),
    ),
)
CHECK = Body(
    "CheckRequest",
    (Field("app_id", APP_ID), Field("sms_type", SMS_TYPE), Field("phone_number", PHONE)),
)
MO = Body(
    "MoRequest",
    (
        Field("from", PHONE, description="The end user who sent the MO."),
        Field("to", ADDRESS, description="The inbound address that received it."),
        Field("text", {"type": "string", "maxLength": 2000}),
    ),
)

REQUEST_BODIES: tuple[Body, ...] = (
    ADDRESS_CREATE,
    ADDRESS_UPDATE,
    KEYWORDS_PUT,
    REPLIES_PUT,
    RULE_CREATE,
    RULE_PUT,
    DEFAULT_RULE_PUT,
    UNSUBSCRIBE,
    CHECK,
    MO,
    NEAR_MISS_PHRASES_PUT,
    DISMISS,
    RESUBSCRIBE,
)

# --- query strings ----------------------------------------------------------------

NO_QUERY = Query(())
UNSUBSCRIBED_QUERY = Query(
    (
        Param("inbound_address", ADDRESS, "Only this inbound address."),
        Param("phone_number", PHONE, "Only this subscriber."),
        Param(
            "number_prefix",
            {"type": "string", "maxLength": 32},
            "Numbers starting with these digits (\"+1415\", \"415555\": an area code "
            "when the country code 1 is left out).",
        ),
        Param(
            "sort",
            {"type": "string", "enum": ["number", "newest", "oldest"], "default": "number"},
            "Order: by number, or by the time of the opt-out.",
        ),
        Param("limit", LIMIT, "Page size (1-1000)."),
        Param("cursor", CURSOR, "next_cursor of the previous page (same sort)."),
        Param(
            "format",
            {"type": "string", "enum": ["json", "csv"], "default": "json"},
            "csv streams every match in the import file format "
            "(phone_number,inbound_address,since) plus source and reason, which an "
            "import ignores.",
        ),
    )
)
RECORDS_QUERY = Query(
    (
        Param("phone_number", PHONE, "Only this subscriber."),
        Param("inbound_address", ADDRESS, "Only this inbound address."),
        Param("since", TIME_FILTER, "Records at or after this time."),
        Param("until", TIME_FILTER, "Records before this time."),
        Param("limit", LIMIT, "Page size (1-1000); ignored with format=csv."),
        Param("cursor", CURSOR, "next_cursor of the previous page."),
        Param(
            "format",
            {"type": "string", "enum": ["json", "csv"], "default": "json"},
            "csv streams every matching record as a CSV download.",
        ),
    )
)

_BOOL_FILTER: dict[str, Any] = {"type": "string", "enum": ["true", "false"]}
INBOUND_MESSAGES_QUERY = Query(
    (
        Param("inbound_address", ADDRESS, "Only this inbound address."),
        Param("phone_number", PHONE, "Only this sender."),
        Param("action", {"type": "string", "enum": [a.value for a in Action]},
              "Only this action."),
        Param("near_miss", _BOOL_FILTER, "Only flagged (true) or unflagged (false) messages."),
        Param("reviewed", _BOOL_FILTER, "Only reviewed (true) or unreviewed (false) messages."),
        Param("since", TIME_FILTER, "Messages at or after this time."),
        Param("until", TIME_FILTER, "Messages before this time."),
        Param("limit", LIMIT, "Page size (1-1000)."),
        Param("cursor", CURSOR, "next_cursor of the previous page."),
    )
)
AUDIT_QUERY = Query(
    (
        Param("actor", {"type": "string", "maxLength": 200}, "Only changes by this token name."),
        Param("since", TIME_FILTER, "Entries at or after this time."),
        Param("until", TIME_FILTER, "Entries before this time."),
        Param("limit", LIMIT, "Page size (1-1000)."),
        Param("cursor", CURSOR, "next_cursor of the previous page."),
    )
)
DELETE_ADDRESS_QUERY = Query(
    (
        Param("force", _BOOL_FILTER,
              "true: delete even if numbers are unsubscribed there (each released number "
              "gets a record)."),
    )
)
RESUBSCRIBE_QUERY = Query(
    (Param("reason", {"type": "string", "maxLength": 500},
           "The consent evidence (or in a JSON body {\"reason\"})."),)
)

# --- responses ----------------------------------------------------------------------

_TIME = {"type": "string", "format": "date-time", "description": "ISO-8601 UTC."}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_SMS_TYPES_OUT = {"type": "array", "items": SMS_TYPE}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


RESPONSES: dict[str, dict[str, Any]] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {"type": "string", "description": "For a person."},
                    "missing": {
                        **_STRINGS,
                        "description": "noncompliant_keywords: the required opt-out "
                        "keywords the list lacks.",
                    },
                    "unsubscribed": {
                        "type": "integer",
                        "description": "address_has_unsubscribed: how many opt-outs "
                        "deleting the address would release.",
                    },
                },
                required=["code", "message"],
            )
        }
    ),
    "Warning": _obj(
        {
            "code": {
                "type": "string",
                "enum": [
                    "noncompliant_keywords",
                    "opt_out_reply_off",
                    "help_reply_off",
                    "default_rule_blocks_nothing",
                    "rule_blocks_nothing",
                ],
            },
            "message": {"type": "string"},
        }
    ),
    "NearMissPhrases": _obj({"phrases": _STRINGS}),
    "InboundMessage": _obj(
        {
            "id": {"type": "integer"},
            "at": _TIME,
            "phone_number": {"type": "string", "description": "E.164 when it could be "
                             "normalised, else as received."},
            "inbound_address": {"type": "string"},
            "text": {"type": "string"},
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "keyword": {"type": ["string", "null"]},
            "near_miss": {"type": "boolean"},
            "review": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "decision": {
                                "type": "string",
                                "enum": [d.value for d in ReviewDecision],
                            },
                            "actor": {"type": ["string", "null"]},
                            "at": _TIME,
                            "reason": {"type": "string"},
                        }
                    ),
                ]
            },
        }
    ),
    "InboundMessagePage": _obj(
        {
            "items": {"type": "array", "items": ref("InboundMessage")},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "ReviewResult": _obj(
        {
            "message": ref("InboundMessage"),
            "record": {
                "oneOf": [{"type": "null"}, ref("Record")],
                "description": "The opt-out record (null for a dismissal).",
            },
        }
    ),
    "AuditEntry": _obj(
        {
            "id": {"type": "integer"},
            "at": _TIME,
            "actor": {"type": ["string", "null"]},
            "action": {"type": "string", "examples": ["keywords.update", "review.opt_out"]},
            "target": {"type": "string"},
            "before": {"description": "The state before (JSON), null when it did not exist."},
            "after": {"description": "The state after (JSON), null when it no longer exists."},
        }
    ),
    "AuditPage": _obj(
        {
            "items": {"type": "array", "items": ref("AuditEntry")},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "Stats": _obj(
        {
            "unsubscribed": _obj(
                {
                    "total": {"type": "integer"},
                    "by_address": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                }
            ),
            "daily": {
                "type": "array",
                "items": _obj(
                    {
                        "date": {"type": "string", "format": "date"},
                        "opt_outs": {"type": "integer"},
                        "opt_ins": {"type": "integer"},
                    }
                ),
                "description": "The last 30 UTC days, oldest first, zero-filled.",
            },
            "submits": {
                "type": "array",
                "items": _obj(
                    {
                        "app_id": {"type": "string"},
                        "sms_type": {"type": "string"},
                        "allowed": {"type": "integer"},
                        "blocked": {"type": "integer"},
                    }
                ),
                "description": "Since this process started (optout_submit_total).",
            },
            "near_miss_open": {"type": "integer"},
            "replies_pending": {"type": "integer"},
            "replies": _obj(
                {
                    "sent": {"type": "integer"},
                    "within_5_min": {"type": "integer"},
                },
            ),
        }
    ),
    "App": _obj({"app_id": {"type": "string"}, "system_ids": _STRINGS}),
    "AppList": _obj({"items": {"type": "array", "items": ref("App")}}),
    "Keywords": _obj(
        {
            "opt_out": _STRINGS,
            "opt_in": _STRINGS,
            "help": _STRINGS,
            "match": {"type": "string", "enum": [m.value for m in MatchMode]},
        }
    ),
    "Replies": _obj(
        {
            "opt_out": {"type": ["string", "null"]},
            "opt_in": {"type": ["string", "null"]},
            "help": {"type": ["string", "null"]},
        }
    ),
    "BlockingRule": _obj(
        {
            "inbound_address": {"type": "string"},
            "app_id": {"type": "string"},
            "sms_types": _SMS_TYPES_OUT,
        }
    ),
    "BlockingRuleList": _obj({"items": {"type": "array", "items": ref("BlockingRule")}}),
    "DefaultRule": _obj({"sms_types": _SMS_TYPES_OUT}),
    "InboundAddress": _obj(
        {
            "address": {"type": "string"},
            "description": {"type": "string"},
            "created_at": _TIME,
            "keywords": ref("Keywords"),
            "replies": ref("Replies"),
            "default_rule": ref("DefaultRule"),
            "rules": {"type": "array", "items": ref("BlockingRule")},
            "near_miss_phrases": _STRINGS,
            "warnings": {"type": "array", "items": ref("Warning")},
        }
    ),
    "InboundAddressList": _obj({"items": {"type": "array", "items": ref("InboundAddress")}}),
    "Unsubscription": _obj(
        {
            "phone_number": {"type": "string"},
            "inbound_address": {"type": "string"},
            "since": _TIME,
            "source": {"type": "string", "enum": [s.value for s in Source]},
            "reason": {"type": "string", "description": "Of the latest opt-out record."},
        }
    ),
    "UnsubscribedPage": _obj(
        {
            "items": {"type": "array", "items": ref("Unsubscription")},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "Record": _obj(
        {
            "id": {"type": "integer"},
            "phone_number": {"type": "string"},
            "inbound_address": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "source": {"type": "string", "enum": [s.value for s in Source]},
            "at": _TIME,
            "reason": {"type": "string"},
            "actor": {"type": ["string", "null"]},
            "raw_text": {"type": ["string", "null"]},
            "keyword": {"type": ["string", "null"]},
            "carrier_ids": {"type": ["string", "null"]},
            "reply_sent": {"type": "boolean"},
            "reply_sent_at": {
                **_TIME,
                "type": ["string", "null"],
                "description": "When the carrier accepted the confirmation (ISO-8601 UTC).",
            },
            "reply_message_id": {
                "type": ["string", "null"],
                "description": "The carrier's message id for the confirmation.",
            },
            "inbound_message_id": {
                "type": ["integer", "null"],
                "description": "The logged MO this change answers (keyword or review).",
            },
        }
    ),
    "RecordPage": _obj(
        {
            "items": {"type": "array", "items": ref("Record")},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "BlockedBy": _obj(
        {
            "inbound_address": {"type": "string"},
            "rule": {
                "type": "string",
                "description": "The app_id whose rule matched, or 'default'.",
            },
            "sms_types": _SMS_TYPES_OUT,
        }
    ),
    "Decision": _obj(
        {
            "allowed": {"type": "boolean"},
            "in_scope": {
                "type": "boolean",
                "description": "False outside US/Canada opt-out handling (always allowed).",
            },
            "blocked_by": {"type": "array", "items": ref("BlockedBy")},
        }
    ),
    "MoResult": _obj(
        {
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "keyword": {"type": ["string", "null"]},
            "handled": {
                "type": "boolean",
                "description": "False: unknown inbound address, or sender out of scope.",
            },
            "reply": {"type": ["string", "null"], "description": "The auto-reply queued, if any."},
            "notes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Why an MO was not handled, or other remarks.",
            },
        }
    ),
    "WhoAmI": _obj(
        {"name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "viewer"]}}
    ),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}),
    "Readiness": _obj(
        {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "store": {"type": "boolean"},
            "upstream": {"type": "boolean"},
        }
    ),
}
