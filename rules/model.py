"""The opt-out domain's vocabulary: value types shared by the store, the
decision, the MO handler, the SMPP relay and the HTTP API.

Nothing here knows about SMPP, HTTP or SQL. Every type is a frozen
dataclass or an enum so that it can be passed between layers without
anyone mutating it behind another's back.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class SmsType(enum.StrEnum):
    """The message categories a blocking rule can block (SPEC section 2)."""

    MARKETING = "marketing"
    NOTIFICATION = "notification"
    VERIFICATION = "verification"


ALL_SMS_TYPES: frozenset[SmsType] = frozenset(SmsType)


class Action(enum.StrEnum):
    """What an MO asked for. Also the `action` label of `optout_mo_total`."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    NONE = "none"


class Status(enum.StrEnum):
    """A subscriber's state at one inbound address."""

    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"


class Source(enum.StrEnum):
    """Where a status change came from (kept in every record)."""

    KEYWORD = "keyword"
    API = "api"
    CONSOLE = "console"
    IMPORT = "import"
    REVIEW = "review"  # an admin's decision on a logged inbound message


class ReviewDecision(enum.StrEnum):
    """What an admin decided about a logged inbound message."""

    OPT_OUT = "opt_out"
    DISMISSED = "dismissed"


class MatchMode(enum.StrEnum):
    """How opt-out keywords match: the whole message, or its first word."""

    EXACT = "exact"
    LEADING = "leading"


# --- errors -----------------------------------------------------------------


class DomainError(Exception):
    """Base of every error the domain raises on purpose.

    `code` is a stable machine-readable string (the HTTP API puts it in
    `{"error": {"code": ...}}`); the message is for a person.
    """

    code = "invalid"


class InvalidNumber(DomainError):
    """A phone number that cannot be parsed, or is not a possible number."""

    code = "invalid_number"


class OutOfScope(DomainError):
    """A valid number outside US/Canada opt-out handling (e.g. Jamaica)."""

    code = "out_of_scope"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class InvalidValue(DomainError):
    code = "invalid_value"


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_scalar_text(text: str) -> bool:
    """True when `text` is a sequence of Unicode scalar values, i.e. holds no
    lone surrogate (U+D800-U+DFFF). JSON's "\\ud800" escape and Python's
    surrogateescape produce such strings; they cannot be encoded as UTF-8,
    so SQLite, the SMPP encoder and Prometheus all fail on them later, far
    from where they came in. Refuse them at the door instead."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_scalar_text(text: str, field: str) -> str:
    """`text` unchanged, or InvalidValue naming `field` if it holds a lone
    surrogate (see `is_scalar_text`)."""
    if not is_scalar_text(text):
        raise InvalidValue(f"{field} is not valid Unicode (it holds a lone surrogate)")
    return text


def scalar_text(text: str) -> str:
    """`text` with any lone surrogate replaced by U+FFFD. For text we must
    keep rather than refuse (an MO's raw text: the STOP in it counts)."""
    if is_scalar_text(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


class NoncompliantKeywords(InvalidValue):
    """An opt-out keyword list without a word the FCC (24-24) and CTIA
    require; `missing` names them as the admin would type them."""

    code = "noncompliant_keywords"

    def __init__(self, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing


class AddressHasUnsubscribed(Conflict):
    """Deleting an inbound address would release `count` opt-outs."""

    code = "address_has_unsubscribed"

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class AlreadyReviewed(Conflict):
    code = "already_reviewed"


class ReasonRequired(InvalidValue):
    code = "reason_required"


class StoreUnavailable(Exception):
    """The store could not commit or read. Callers must treat the operation
    as not done (the SMPP relay answers the carrier with a temporary error so
    it redelivers)."""


# --- entities ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keywords:
    """Keyword lists of one inbound address. Stored as the admin typed them;
    matching normalises both sides."""

    opt_out: tuple[str, ...]
    opt_in: tuple[str, ...]
    help: tuple[str, ...]
    match: MatchMode = MatchMode.LEADING


@dataclass(frozen=True, slots=True)
class Replies:
    """Auto-reply texts of one inbound address; `None` switches one off."""

    opt_out: str | None
    opt_in: str | None
    help: str | None


@dataclass(frozen=True, slots=True)
class BlockingRule:
    """Which SMS types `app_id` may not send to numbers unsubscribed at
    `inbound_address`."""

    inbound_address: str
    app_id: str
    sms_types: frozenset[SmsType]


@dataclass(frozen=True, slots=True)
class InboundAddress:
    address: str  # E.164 (+1...) or a 5-6 digit short code
    description: str
    keywords: Keywords
    replies: Replies
    default_rule: frozenset[SmsType]
    rules: tuple[BlockingRule, ...] = ()
    created_at: float = 0.0
    near_miss_phrases: tuple[str, ...] = ()
    warnings: tuple[AddressWarning, ...] = ()


@dataclass(frozen=True, slots=True)
class Unsubscription:
    """One row of the unsubscribed-users list."""

    phone_number: str
    inbound_address: str
    since: float  # unix seconds
    source: Source
    reason: str = ""  # of the latest opt-out record: why the number is listed


@dataclass(frozen=True, slots=True)
class Record:
    """One immutable entry of the opt-out / opt-in history."""

    id: int
    phone_number: str
    inbound_address: str
    status: Status
    source: Source
    at: float  # unix seconds
    reason: str = ""
    actor: str | None = None
    raw_text: str | None = None
    keyword: str | None = None
    carrier_ids: str | None = None
    reply_sent: bool = False
    reply_sent_at: float | None = None  # when the carrier accepted the confirmation
    reply_message_id: str | None = None  # the carrier's id for the confirmation
    inbound_message_id: int | None = None  # the logged MO this change answers


@dataclass(frozen=True, slots=True)
class BlockedBy:
    """One reason a message is blocked: the address the subscriber left and
    the rule (an app's own, or the address default) that covers the type."""

    inbound_address: str
    rule: str  # the app_id whose rule matched, or "default"
    sms_types: frozenset[SmsType]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    in_scope: bool
    blocked_by: tuple[BlockedBy, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """An auto-reply to send to the end user from the inbound address."""

    id: int  # outbox id, to mark it sent
    source_addr: str  # the inbound address
    destination_addr: str  # the end user, E.164
    text: str
    action: Action
    created_at: float = 0.0  # when the MO that asked for it was committed


@dataclass(frozen=True, slots=True)
class Review:
    """An admin's decision on one logged inbound message."""

    decision: ReviewDecision
    actor: str | None
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One MO as the sidecar handled it (the inbound message log).

    `phone_number` and `inbound_address` are normalised when they could be,
    else kept as received (an unknown or malformed address is logged too)."""

    id: int
    at: float
    phone_number: str
    inbound_address: str
    text: str
    action: Action
    keyword: str | None
    near_miss: bool
    review: Review | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative change: who, when, what, and the state before and
    after (JSON-ready values, None for "did not exist")."""

    id: int
    at: float
    actor: str | None
    action: str
    target: str
    before: object
    after: object


@dataclass(frozen=True, slots=True)
class AddressWarning:
    """A configuration an admin may choose but should know about."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MoOutcome:
    """What `handle_mo` did with one MO."""

    action: Action
    keyword: str | None = None
    record: Record | None = None
    reply: Reply | None = None
    handled: bool = True  # False: address unknown or number out of scope
    notes: tuple[str, ...] = field(default=())
    near_miss: bool = False  # no keyword, but reads like an opt-out (rules.nearmiss)
    message_id: int | None = None  # its row in the inbound message log, if logged
    log_failed: bool = False  # the inbound message log could not be written
