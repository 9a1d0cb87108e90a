"""Domain objects as the JSON the API returns (shapes in `schemas.RESPONSES`).

SMS types are listed in a fixed order (marketing, notification,
verification) so that responses are stable and diffable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.http.validation import iso_utc
from rules.model import (
    AddressWarning,
    AuditEntry,
    BlockingRule,
    Decision,
    InboundAddress,
    InboundMessage,
    MoOutcome,
    Record,
    SmsType,
    Unsubscription,
)
from rules.service.core import keywords_json, replies_json, types_list

# The same JSON shapes the audit log records (one definition for both).
sms_types = types_list
keywords = keywords_json
replies = replies_json


def rule(r: BlockingRule) -> dict[str, Any]:
    return {
        "inbound_address": r.inbound_address,
        "app_id": r.app_id,
        "sms_types": sms_types(r.sms_types),
    }


def default_rule(types: Iterable[SmsType]) -> dict[str, Any]:
    return {"sms_types": sms_types(types)}


def address(a: InboundAddress) -> dict[str, Any]:
    return {
        "address": a.address,
        "description": a.description,
        "created_at": iso_utc(a.created_at),
        "keywords": keywords(a.keywords),
        "replies": replies(a.replies),
        "default_rule": default_rule(a.default_rule),
        "rules": [rule(r) for r in sorted(a.rules, key=lambda r: r.app_id)],
        "near_miss_phrases": list(a.near_miss_phrases),
        "warnings": [warning(w) for w in a.warnings],
    }


def warning(w: AddressWarning) -> dict[str, Any]:
    return {"code": w.code, "message": w.message}


def inbound_message(m: InboundMessage) -> dict[str, Any]:
    review = m.review
    return {
        "id": m.id,
        "at": iso_utc(m.at),
        "phone_number": m.phone_number,
        "inbound_address": m.inbound_address,
        "text": m.text,
        "action": m.action.value,
        "keyword": m.keyword,
        "near_miss": m.near_miss,
        "review": None
        if review is None
        else {
            "decision": review.decision.value,
            "actor": review.actor,
            "at": iso_utc(review.at),
            "reason": review.reason,
        },
    }


def audit_entry(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso_utc(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "before": e.before,
        "after": e.after,
    }


def unsubscription(u: Unsubscription) -> dict[str, Any]:
    return {
        "phone_number": u.phone_number,
        "inbound_address": u.inbound_address,
        "since": iso_utc(u.since),
        "source": u.source.value,
        "reason": u.reason,
    }


def record(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "phone_number": r.phone_number,
        "inbound_address": r.inbound_address,
        "status": r.status.value,
        "source": r.source.value,
        "at": iso_utc(r.at),
        "reason": r.reason,
        "actor": r.actor,
        "raw_text": r.raw_text,
        "keyword": r.keyword,
        "carrier_ids": r.carrier_ids,
        "reply_sent": r.reply_sent,
        "reply_sent_at": None if r.reply_sent_at is None else iso_utc(r.reply_sent_at),
        "reply_message_id": r.reply_message_id,
        "inbound_message_id": r.inbound_message_id,
    }


def decision(d: Decision) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "in_scope": d.in_scope,
        "blocked_by": [
            {
                "inbound_address": b.inbound_address,
                "rule": b.rule,
                "sms_types": sms_types(b.sms_types),
            }
            for b in d.blocked_by
        ],
    }


def mo_outcome(o: MoOutcome) -> dict[str, Any]:
    return {
        "action": o.action.value,
        "keyword": o.keyword,
        "handled": o.handled,
        "reply": o.reply.text if o.reply is not None else None,
        "notes": list(o.notes),
    }


# CSV export -----------------------------------------------------------------------

RECORD_CSV_COLUMNS = (
    "id",
    "at",
    "phone_number",
    "inbound_address",
    "status",
    "source",
    "keyword",
    "raw_text",
    "reason",
    "actor",
    "carrier_ids",
    "reply_sent",
    "reply_sent_at",
    "reply_message_id",
    "inbound_message_id",
)

# A cell starting with one of these is run as a formula by spreadsheet apps
# (CSV injection). Free text from end users (raw_text) and operators is
# neutralised with a leading quote; numbers (which start with '+') are
# written as they are since the API produced them.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def record_csv_row(r: Record) -> list[str]:
    return [
        str(r.id),
        iso_utc(r.at),
        r.phone_number,
        r.inbound_address,
        r.status.value,
        r.source.value,
        _safe(r.keyword),
        _safe(r.raw_text),
        _safe(r.reason),
        _safe(r.actor),
        _safe(r.carrier_ids),
        "true" if r.reply_sent else "false",
        "" if r.reply_sent_at is None else iso_utc(r.reply_sent_at),
        _safe(r.reply_message_id),
        "" if r.inbound_message_id is None else str(r.inbound_message_id),
    ]


def safe_text(text: str | None) -> str:
    """Free text (a reason, an MO) made safe for a CSV cell: no formula
    injection when the file is opened in a spreadsheet."""
    return _safe(text)
