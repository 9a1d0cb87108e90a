"""What every store backend offers: the row types and the `Store` / `Tx`
interfaces the service layer is written against.

Theory of operation
-------------------
The durable truth lives in a store: one SQLite file (`rules.store.sqlite`)
for one host, or one PostgreSQL database (`rules.store.postgres`) shared by
a fleet. Nothing above `rules.store` knows which one runs: the service asks
`rules.store.open_store(url)` for a `Store` and only ever talks to it
through the methods declared here.

* **Transactions.** Every operation runs in `Store.transaction()` (a write)
  or `Store.reading()` (a consistent read), each handing out a `Tx` with
  typed helpers. Write transactions are serialised: per process by a lock,
  and across processes by the database (SQLite's write lock; on PostgreSQL a
  row lock on the one-row `feed_head` table taken first). One write method
  of the service = one transaction, with no other writer in between -- the
  same guarantee on both backends, so the service's read-then-write logic
  (is this number already unsubscribed?) is race-free on both.
* **After commit.** `Tx.after_commit` callbacks run once COMMIT returned and
  before the next local write transaction starts, so memory never shows a
  change the database does not have.
* **Failures.** Any database error (disk full, lock timeout, connection
  lost, server down) rolls back and surfaces as `model.StoreUnavailable`
  with the cause chained. Domain errors raised by the caller inside the
  block (Conflict, NotFound, ...) roll back and propagate unchanged.
* **Records are append-only** in the database itself (triggers on both
  backends), not only by convention in this code.
* **The change feed.** A write transaction describes what it changed with
  `Tx.add_change`; the store appends those rows to the `changes` table in
  the same transaction, numbered from `feed_head` (which the writer holds
  locked), so ids are gap-free and in commit order: a reader that has seen
  id N has seen every change up to N. A `FeedSink` registered with
  `Store.set_feed` is brought up to date at the start of every write
  transaction (`catch_up`) and handed the transaction's own changes after
  COMMIT (`committed`); between writes a follower task reads the table by
  id (`rules.service.feed`). `Store.wait_for_changes` is the cheap wake-up:
  PostgreSQL LISTEN/NOTIFY, or a short poll on SQLite. Changes older than
  `FEED_RETENTION` seconds (and more than `FEED_KEEP` ids behind) are
  pruned; a process that fell further behind reloads everything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rules.index import ADDRESS_BITS, MAX_ADDRESS_ID, pack
from rules.model import (
    Action,
    AuditEntry,
    InboundMessage,
    Keywords,
    MatchMode,
    Record,
    Reply,
    Review,
    ReviewDecision,
    SmsType,
    Source,
    Status,
)
from rules.replies import ReplySettings

__all__ = [
    "ADDRESS_ID_LIMIT",
    "FEED_KEEP",
    "FEED_RETENTION",
    "PACK_SHIFT",
    "AddressRow",
    "Change",
    "FeedSink",
    "InboundFilter",
    "InboundValues",
    "RecordFilter",
    "RecordValues",
    "RuleRow",
    "Store",
    "Tx",
    "UnsubRow",
    "pack",
]

FEED_RETENTION = 3600.0
"""Seconds a change stays in the feed (at least)."""
FEED_KEEP = 10_000
"""Changes always kept behind the head, however old."""
PRUNE_EVERY = 256
"""A writer prunes the feed when its ids cross a multiple of this."""
NOTIFY_CHANNEL = "optout_changes"
"""PostgreSQL LISTEN/NOTIFY channel that wakes followers."""

PACK_SHIFT = ADDRESS_BITS
ADDRESS_ID_LIMIT = MAX_ADDRESS_ID + 1
"""Address ids are packed next to the number key in 15 bits (`rules.index`)."""


# --- row types ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressRow:
    id: int
    address: str
    description: str
    keywords: Keywords
    replies: ReplySettings
    default_rule: frozenset[SmsType]
    created_at: float
    near_miss_phrases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleRow:
    address_id: int
    app_id: str
    sms_types: frozenset[SmsType]


@dataclass(frozen=True, slots=True)
class UnsubRow:
    packed: int
    address_id: int
    number_key: int
    since: float
    source: Source


@dataclass(frozen=True, slots=True)
class RecordFilter:
    phone_number: str | None = None
    inbound_address: str | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive


RecordValues = tuple[str, str, str, str, float, str, str | None, str | None, str | None, str | None]
"""(phone_number, inbound_address, status, source, at, reason, actor,
raw_text, keyword, carrier_ids): one row for `Tx.insert_record`."""

@dataclass(frozen=True, slots=True)
class InboundFilter:
    phone_number: str | None = None
    inbound_address: str | None = None
    action: str | None = None
    near_miss: bool | None = None
    reviewed: bool | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive


InboundValues = tuple[float, str, str, str, str, str | None, bool]
"""(at, phone_number, inbound_address, text, action, keyword, near_miss):
one row of the inbound message log for `Tx.insert_inbound_message`."""

UnsubValues = tuple[int, int, int, float, str]
"""(packed, address_id, number_key, since, source) for bulk inserts."""


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of the feed. `kind` and `payload` (JSON) are
    the service's business (`rules.service.feed`); `data` carries bulk
    binary data (packed int64 values of an import batch)."""

    id: int
    kind: str
    payload: dict[str, Any]
    data: bytes | None = None


# --- column codecs shared by the backends (both keep JSON in text columns) -------


def types_json(types: Iterable[SmsType]) -> str:
    return json.dumps(sorted(t.value for t in types))


def types_from_json(data: str) -> frozenset[SmsType]:
    return frozenset(SmsType(t) for t in json.loads(data))


def keywords_json(kw: Keywords) -> str:
    return json.dumps({"opt_out": kw.opt_out, "opt_in": kw.opt_in, "help": kw.help})


def keywords_from(data: str, match_mode: str) -> Keywords:
    raw = json.loads(data)
    return Keywords(
        opt_out=tuple(raw["opt_out"]),
        opt_in=tuple(raw["opt_in"]),
        help=tuple(raw["help"]),
        match=MatchMode(match_mode),
    )


ADDRESS_COLUMNS = (
    "id, address, description, keywords, match_mode, replies, default_rule, created_at, "
    "near_miss_phrases"
)


def address_values(row: AddressRow) -> tuple[Any, ...]:
    """`row` in `ADDRESS_COLUMNS` order."""
    return (
        row.id,
        row.address,
        row.description,
        keywords_json(row.keywords),
        row.keywords.match.value,
        row.replies.to_json(),
        types_json(row.default_rule),
        row.created_at,
        json.dumps(list(row.near_miss_phrases)),
    )


def address_from(row: Sequence[Any]) -> AddressRow:
    return AddressRow(
        id=row[0],
        address=row[1],
        description=row[2],
        keywords=keywords_from(row[3], row[4]),
        replies=ReplySettings.from_json(row[5]),
        default_rule=types_from_json(row[6]),
        created_at=row[7],
        # A change written before the column existed has eight values.
        near_miss_phrases=tuple(json.loads(row[8])) if len(row) > 8 else (),
    )


_SENT_REPLY = (
    "FROM reply_outbox o WHERE o.record_id = r.id AND o.sent_at IS NOT NULL ORDER BY o.id LIMIT 1"
)
RECORD_COLUMNS = (
    "r.id, r.phone_number, r.inbound_address, r.status, r.source, r.at, r.reason, "
    "r.actor, r.raw_text, r.keyword, r.carrier_ids, "
    f"(SELECT o.sent_at {_SENT_REPLY}), (SELECT o.message_id {_SENT_REPLY}), "
    "r.inbound_message_id"
)
"""A record with when (and under which carrier id) its confirmation was
accepted, and the logged MO it answers."""


def record_from(row: Sequence[Any]) -> Record:
    return Record(
        id=row[0],
        phone_number=row[1],
        inbound_address=row[2],
        status=Status(row[3]),
        source=Source(row[4]),
        at=row[5],
        reason=row[6],
        actor=row[7],
        raw_text=row[8],
        keyword=row[9],
        carrier_ids=row[10],
        reply_sent=row[11] is not None,
        reply_sent_at=row[11],
        reply_message_id=row[12],
        inbound_message_id=row[13],
    )


REPLY_COLUMNS = "id, source_addr, destination_addr, text, action, created_at"


def reply_from(row: Sequence[Any]) -> Reply:
    return Reply(row[0], row[1], row[2], row[3], Action(row[4]), row[5])


INBOUND_COLUMNS = (
    "id, at, phone_number, inbound_address, text, action, keyword, near_miss, "
    "review_decision, review_actor, review_at, review_reason"
)


def inbound_from(row: Sequence[Any]) -> InboundMessage:
    review = None
    if row[8] is not None:
        review = Review(ReviewDecision(row[8]), row[9], float(row[10]), row[11] or "")
    return InboundMessage(
        id=row[0],
        at=row[1],
        phone_number=row[2],
        inbound_address=row[3],
        text=row[4],
        action=Action(row[5]),
        keyword=row[6],
        near_miss=bool(row[7]),
        review=review,
    )


def json_or_null(value: object) -> str | None:
    """An audit entry's before/after as stored (JSON text, or NULL)."""
    return None if value is None else json.dumps(value, sort_keys=True)


def audit_from(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=row[1],
        actor=row[2],
        action=row[3],
        target=row[4],
        before=None if row[5] is None else json.loads(row[5]),
        after=None if row[6] is None else json.loads(row[6]),
    )


AUDIT_COLUMNS = "id, at, actor, action, target, before, after"


def unsub_from(row: Sequence[Any]) -> UnsubRow:
    return UnsubRow(row[0], row[1], row[2], row[3], Source(row[4]))


# --- the interfaces ---------------------------------------------------------------


class Tx(Protocol):
    """Typed helpers bound to one open transaction. Only valid inside the
    `async with` that produced it."""

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once COMMIT has succeeded (never on rollback)."""

    # the change feed
    def add_change(self, kind: str, payload: dict[str, Any], data: bytes | None = None) -> None:
        """Append a change to the feed when (and only if) this transaction
        commits."""

    async def changes_after(self, after: int, limit: int) -> list[Change]:
        """Committed changes with id > `after`, ascending, at most `limit`."""

    async def feed_head(self) -> int:
        """The id of the last committed change (0 for none)."""

    async def packed_values(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending, in this transaction's
        view (the in-memory index's bulk-load input)."""

    # inbound addresses
    async def addresses(self) -> list[AddressRow]: ...
    async def address(self, address_id: int) -> AddressRow | None: ...
    async def insert_address(self, row: AddressRow) -> None: ...
    async def update_address(self, row: AddressRow) -> None:
        """Rewrites the editable columns of address `row.id`."""

    async def delete_address(self, address_id: int) -> int:
        """Deletes the address, its rules and its unsubscriptions (never
        records). Returns how many unsubscriptions went with it."""

    # blocking rules
    async def rules(self) -> list[RuleRow]: ...
    async def insert_rule(self, rule: RuleRow) -> None: ...
    async def update_rule(self, rule: RuleRow) -> bool: ...
    async def delete_rule(self, address_id: int, app_id: str) -> bool: ...

    # unsubscriptions
    async def unsubscription(self, packed: int) -> UnsubRow | None: ...
    async def insert_unsubscription(self, row: UnsubRow) -> None: ...
    async def insert_unsubscriptions(self, rows: Iterable[UnsubRow]) -> None: ...
    async def insert_unsubscription_values(self, rows: Sequence[UnsubValues]) -> None:
        """Bulk insert of (packed, address_id, number_key, since, source)."""

    async def insert_import_records(
        self, rows: Sequence[tuple[str, str]], *, at: float, actor: str | None
    ) -> None:
        """Bulk insert of "unsubscribed by import" records for (phone number,
        inbound address) pairs, all at `at` by `actor`."""

    async def delete_unsubscription(self, packed: int) -> bool: ...
    async def unsubscriptions(
        self,
        *,
        address_id: int | None,
        packed_range: tuple[int, int] | None,
        after: int | None,
        limit: int,
        order: str = "number",
        after_since: float | None = None,
    ) -> list[UnsubRow]:
        """Unsubscriptions after the keyset cursor, in `order`: "number"
        (`packed`: number, then address; cursor `after`), "newest" or
        "oldest" (by `since`, ties by `packed`; cursor (`after_since`,
        `after`)). `packed_range` is [lo, hi) (a number or a number prefix)."""

    async def unsubscribe_reasons(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The reason of the latest "unsubscribed" record of each (number,
        address) pair: why the number is on the list now."""

    # records (append-only)
    async def insert_record(
        self, values: RecordValues, *, inbound_message_id: int | None = None
    ) -> int: ...
    async def insert_release_records(
        self,
        phone_numbers: Sequence[str],
        *,
        inbound_address: str,
        at: float,
        source: Source,
        actor: str | None,
        reason: str,
    ) -> None:
        """One "subscribed" record per number released at once (an address
        deleted with its opt-outs)."""
    async def records(
        self, flt: RecordFilter, *, after: int | None, limit: int, newest_first: bool = False
    ) -> list[Record]: ...

    # reply outbox
    async def insert_reply(
        self,
        *,
        record_id: int | None,
        source_addr: str,
        destination_addr: str,
        text: str,
        action: Action,
        created_at: float,
    ) -> int: ...
    async def pending_replies(self, limit: int) -> list[Reply]: ...
    async def claim_replies(
        self, owner: str, *, now: float, until: float, limit: int
    ) -> list[Reply]:
        """Claims up to `limit` unsent replies, oldest first, for `owner`
        until `until`: those nobody holds, those whose claim expired before
        `now` (their sender died) and `owner`'s own. A reply claimed by a
        live sender is never handed to another one."""

    async def pending_reply_count(self) -> int: ...
    async def reply_exists(self, reply_id: int) -> bool: ...
    async def mark_reply_sent(self, reply_id: int, message_id: str | None, at: float) -> bool: ...
    async def reply_created_at(self, reply_id: int) -> float | None: ...

    # the inbound message log (issue 10)
    async def insert_inbound_message(self, values: InboundValues) -> int:
        """One logged MO; returns its id."""

    async def try_insert_inbound_message(self, values: InboundValues) -> int | None:
        """`insert_inbound_message` under a savepoint: if only this insert
        fails, it alone is undone and the surrounding transaction (an
        opt-out) goes on; returns None then."""

    async def inbound_message(self, message_id: int) -> InboundMessage | None: ...
    async def inbound_messages(
        self, flt: InboundFilter, *, before: int | None, limit: int
    ) -> list[InboundMessage]:
        """Newest first, ids below the keyset cursor `before`."""

    async def review_inbound_message(self, message_id: int, review: Review) -> bool:
        """Sets the review of a message not reviewed yet; False otherwise."""

    async def prune_inbound_messages(self, before: float, limit: int) -> int:
        """Deletes up to `limit` messages logged before `before`, except
        near-misses nobody has reviewed yet. Returns how many went."""

    async def open_near_misses(self) -> tuple[int, float | None]:
        """(count, time of the oldest) of near-misses awaiting review."""

    # the audit log (append-only)
    async def insert_audit(
        self,
        *,
        at: float,
        actor: str | None,
        action: str,
        target: str,
        before: object,
        after: object,
    ) -> int: ...
    async def audit_entries(
        self,
        *,
        actor: str | None,
        since: float | None,
        until: float | None,
        before: int | None,
        limit: int,
    ) -> list[AuditEntry]:
        """Newest first, ids below the keyset cursor `before`."""

    # overview figures
    async def daily_changes(self, since: float) -> list[tuple[str, str, int]]:
        """(UTC date YYYY-MM-DD, status, count) of status changes since
        `since`; repeated opt-outs (no change) are left out."""

    async def reply_latencies(self, since: float, within: float) -> tuple[int, int]:
        """(sent, sent within `within` seconds of the MO) of opt-out
        confirmations whose MO was committed since `since`."""

    # releasing an address's opt-outs
    async def unsubscribed_keys(self, address_id: int) -> list[int]: ...
    async def count_unsubscribed(self, address_id: int) -> int: ...


class FeedSink(Protocol):
    """What a store keeps up to date with the feed (the service's memory)."""

    async def catch_up(self, tx: Tx) -> None:
        """Apply every change committed since the last one applied; called
        at the start of each write transaction, under the writer lock."""

    def committed(self, changes: Sequence[Change]) -> None:
        """Apply a write transaction's own changes, right after its COMMIT."""


class Store(Protocol):
    """A durable store. Open one with `rules.store.open_store(url)`."""

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql" (for logs and metrics labels only)."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """`async with store.transaction() as tx:` -- one write transaction,
        serialised with every other writer (see the module docstring)."""

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """`async with store.reading() as tx:` -- a consistent read."""

    async def load_packed(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending, as one int64 array:
        the in-memory index's bulk-load input (seconds for ten million)."""

    async def ping(self) -> bool:
        """True when a trivial query round-trips."""

    def set_feed(self, sink: FeedSink | None) -> None:
        """Register the sink write transactions keep up to date."""

    async def wait_for_changes(self, timeout: float) -> None:
        """Return when another process may have committed changes, or after
        `timeout` seconds (never raises for an unreachable database)."""

    async def schema_version(self) -> int: ...
    async def close(self) -> None: ...
