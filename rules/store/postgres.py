"""The PostgreSQL store backend (a fleet): asyncpg, one shared database.

Theory of operation
-------------------
A pool of asyncpg connections. Reads run in their own REPEATABLE READ,
READ ONLY transaction on any free connection. Writes are serialised twice:
an `asyncio.Lock` orders this process's writers (so after-commit callbacks
run before the next local writer starts, as on SQLite), and every write
transaction first locks the one row of `feed_head` (``SELECT ... FOR
UPDATE``), which orders the writers of the whole fleet. So one write method
of the service is one transaction with no other writer in between, exactly
as with SQLite's BEGIN IMMEDIATE, and the service's read-then-write logic
needs no second implementation. Writes here are small (an MO, an API edit,
an import batch), so one writer at a time costs little; it also hands out
change ids in commit order (`rules.service.feed`).

Durability: a commit returns after PostgreSQL flushed it (the server's
`synchronous_commit`; keep it on, and use synchronous replication if a
failover must not lose an acknowledged STOP).

Outages: every statement has a deadline (`timeout_ms`); a refused or lost
connection, a server restarting or a statement past its deadline becomes
`model.StoreUnavailable`. The pool replaces broken connections on the next
acquire, so service resumes by itself when the server is back. A COMMIT
whose answer is lost may or may not have happened: the caller is told it
failed (an MO is redelivered by the carrier and finds the number already
unsubscribed), and the change feed brings memory up to date either way.

Migrations (`rules.store.migrations.postgres`) run in one transaction under
a transaction-level advisory lock, so several sidecars starting at once
against an empty database migrate it exactly once.

Start-up loads every unsubscription with one binary COPY, parsed by numpy
(no Python object per row).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import asyncpg
import numpy as np
import numpy.typing as npt

from rules.mo import REASON_REPEATED_OPT_OUT
from rules.model import (
    Action,
    AuditEntry,
    InboundMessage,
    Record,
    Reply,
    Review,
    Source,
    Status,
    StoreUnavailable,
)
from rules.store import migrations
from rules.store.base import (
    ADDRESS_COLUMNS,
    AUDIT_COLUMNS,
    FEED_KEEP,
    FEED_RETENTION,
    INBOUND_COLUMNS,
    NOTIFY_CHANNEL,
    PRUNE_EVERY,
    RECORD_COLUMNS,
    REPLY_COLUMNS,
    AddressRow,
    Change,
    FeedSink,
    InboundFilter,
    InboundValues,
    RecordFilter,
    RecordValues,
    RuleRow,
    UnsubRow,
    UnsubValues,
    address_from,
    address_values,
    audit_from,
    inbound_from,
    json_or_null,
    keywords_json,
    record_from,
    reply_from,
    types_from_json,
    types_json,
    unsub_from,
)
from rules.store.migrations import postgres as schema

__all__ = ["DB_ERRORS", "PostgresStore", "PostgresTx"]

log = logging.getLogger(__name__)

MIGRATION_LOCK: Final = 0x6F70746F7574  # "optout": the advisory lock key of migrations
POOL_SIZE: Final = 8
CONNECT_TIMEOUT: Final = 5.0
LISTEN_RETRY: Final = 1.0
"""Seconds between attempts to (re)open the LISTEN connection."""

DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)
"""What a database that is down, restarting or refusing looks like."""
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, ValueError)

_UNSUB_COLUMNS: Final = ("packed", "address_id", "number_key", "since", "source")
_IMPORT_RECORD_COLUMNS: Final = (
    "phone_number",
    "inbound_address",
    "status",
    "source",
    "at",
    "reason",
    "actor",
)


def _count(status: str) -> int:
    """Rows changed, from a command tag such as "DELETE 3"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresTx:
    """Typed SQL helpers bound to one open transaction. Only valid inside the
    `async with` that produced it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._after_commit: list[Callable[[], object]] = []
        self._changes: list[tuple[str, dict[str, Any], bytes | None]] = []

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once COMMIT has succeeded (never on rollback)."""
        self._after_commit.append(callback)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.fetch(sql, *params))

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self._conn.fetchrow(sql, *params)

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """(rows changed, None): PostgreSQL has no last row id; use RETURNING."""
        return _count(await self._conn.execute(sql, *params)), None

    # --- inbound addresses ---

    async def addresses(self) -> list[AddressRow]:
        rows = await self._all(f"SELECT {ADDRESS_COLUMNS} FROM inbound_address ORDER BY id")
        return [address_from(r) for r in rows]

    async def address(self, address_id: int) -> AddressRow | None:
        row = await self._one(
            f"SELECT {ADDRESS_COLUMNS} FROM inbound_address WHERE id = $1", (address_id,)
        )
        return None if row is None else address_from(row)

    async def insert_address(self, row: AddressRow) -> None:
        await self._run(
            f"INSERT INTO inbound_address ({ADDRESS_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            address_values(row),
        )

    async def update_address(self, row: AddressRow) -> None:
        """Rewrites the editable columns of address `row.id`."""
        await self._run(
            "UPDATE inbound_address SET description = $1, keywords = $2, match_mode = $3, "
            "replies = $4, default_rule = $5, near_miss_phrases = $6 WHERE id = $7",
            (
                row.description,
                keywords_json(row.keywords),
                row.keywords.match.value,
                row.replies.to_json(),
                types_json(row.default_rule),
                json.dumps(list(row.near_miss_phrases)),
                row.id,
            ),
        )

    async def delete_address(self, address_id: int) -> int:
        """Deletes the address, its rules and its unsubscriptions (never
        records). Returns how many unsubscriptions went with it."""
        await self._run("DELETE FROM blocking_rule WHERE address_id = $1", (address_id,))
        removed, _ = await self._run(
            "DELETE FROM unsubscribed WHERE address_id = $1", (address_id,)
        )
        await self._run("DELETE FROM inbound_address WHERE id = $1", (address_id,))
        return removed

    # --- blocking rules ---

    async def rules(self) -> list[RuleRow]:
        rows = await self._all(
            "SELECT address_id, app_id, sms_types FROM blocking_rule ORDER BY address_id, app_id"
        )
        return [RuleRow(r[0], r[1], types_from_json(r[2])) for r in rows]

    async def insert_rule(self, rule: RuleRow) -> None:
        await self._run(
            "INSERT INTO blocking_rule (address_id, app_id, sms_types) VALUES ($1, $2, $3)",
            (rule.address_id, rule.app_id, types_json(rule.sms_types)),
        )

    async def update_rule(self, rule: RuleRow) -> bool:
        changed, _ = await self._run(
            "UPDATE blocking_rule SET sms_types = $1 WHERE address_id = $2 AND app_id = $3",
            (types_json(rule.sms_types), rule.address_id, rule.app_id),
        )
        return changed > 0

    async def delete_rule(self, address_id: int, app_id: str) -> bool:
        changed, _ = await self._run(
            "DELETE FROM blocking_rule WHERE address_id = $1 AND app_id = $2",
            (address_id, app_id),
        )
        return changed > 0

    # --- unsubscriptions ---

    async def unsubscription(self, packed: int) -> UnsubRow | None:
        row = await self._one(
            "SELECT packed, address_id, number_key, since, source FROM unsubscribed "
            "WHERE packed = $1",
            (packed,),
        )
        return None if row is None else unsub_from(row)

    async def insert_unsubscription(self, row: UnsubRow) -> None:
        await self._run(
            "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) "
            "VALUES ($1, $2, $3, $4, $5)",
            (row.packed, row.address_id, row.number_key, row.since, row.source.value),
        )

    async def insert_unsubscriptions(self, rows: Iterable[UnsubRow]) -> None:
        await self.insert_unsubscription_values(
            [(r.packed, r.address_id, r.number_key, r.since, r.source.value) for r in rows]
        )

    async def insert_unsubscription_values(self, rows: Sequence[UnsubValues]) -> None:
        """Bulk insert of (packed, address_id, number_key, since, source),
        as one binary COPY."""
        if rows:
            await self._conn.copy_records_to_table(
                "unsubscribed",
                records=[(p, a, k, float(s), src) for p, a, k, s, src in rows],
                columns=_UNSUB_COLUMNS,
                timeout=None,
            )

    async def insert_import_records(
        self, rows: Sequence[tuple[str, str]], *, at: float, actor: str | None
    ) -> None:
        """Bulk insert of "unsubscribed by import" records, as one binary COPY."""
        at = float(at)
        if not math.isfinite(at):
            raise ValueError(f"record time must be finite, not {at!r}")
        if not rows:
            return
        unsubscribed, imported = Status.UNSUBSCRIBED.value, Source.IMPORT.value
        await self._conn.copy_records_to_table(
            "record",
            records=[
                (phone, address, unsubscribed, imported, at, "imported", actor)
                for phone, address in rows
            ],
            columns=_IMPORT_RECORD_COLUMNS,
            timeout=None,
        )

    async def delete_unsubscription(self, packed: int) -> bool:
        changed, _ = await self._run("DELETE FROM unsubscribed WHERE packed = $1", (packed,))
        return changed > 0

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
        `after`)). `packed_range` is [lo, hi) (a number or a number prefix).
        The time orders have no index of their own: PostgreSQL keeps only
        the page's rows while scanning (a top-N heapsort)."""
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if address_id is not None:
            where.append(f"address_id = {param(address_id)}")
        if packed_range is not None:
            low, high = param(packed_range[0]), param(packed_range[1])
            where.append(f"packed >= {low} AND packed < {high}")
        if order == "number":
            if after is not None:
                where.append(f"packed > {param(after)}")
            ordering = "packed"
        else:
            op, direction = ("<", "DESC") if order == "newest" else (">", "ASC")
            if after is not None and after_since is not None:
                since, key = param(float(after_since)), param(after)
                where.append(f"(since {op} {since} OR (since = {since} AND packed {op} {key}))")
            ordering = f"since {direction}, packed {direction}"
        sql = "SELECT packed, address_id, number_key, since, source FROM unsubscribed"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {ordering} LIMIT {param(limit)}"
        return [unsub_from(r) for r in await self._all(sql, params)]

    async def unsubscribe_reasons(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The reason of the latest "unsubscribed" record of each (number,
        address) pair: why the number is on the list now. One query for
        the page (LATERAL: one index probe per pair)."""
        if not pairs:
            return {}
        rows = await self._all(
            "SELECT p.phone, p.address, r.reason "
            "FROM unnest($1::text[], $2::text[]) AS p(phone, address) "
            "CROSS JOIN LATERAL (SELECT reason FROM record "
            "WHERE phone_number = p.phone AND inbound_address = p.address AND status = $3 "
            "ORDER BY id DESC LIMIT 1) r",
            ([p for p, _ in pairs], [a for _, a in pairs], Status.UNSUBSCRIBED.value),
        )
        return {(r[0], r[1]): r[2] for r in rows}

    # --- records (append-only) ---

    async def insert_record(
        self, values: RecordValues, *, inbound_message_id: int | None = None
    ) -> int:
        record_id = await self._conn.fetchval(
            "INSERT INTO record (phone_number, inbound_address, status, source, at, reason, "
            "actor, raw_text, keyword, carrier_ids, inbound_message_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            *values,
            inbound_message_id,
        )
        return int(record_id)

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
        """One "subscribed" record per released number, as one binary COPY."""
        if not phone_numbers:
            return
        subscribed = Status.SUBSCRIBED.value
        await self._conn.copy_records_to_table(
            "record",
            records=[
                (n, inbound_address, subscribed, source.value, float(at), reason, actor)
                for n in phone_numbers
            ],
            columns=_IMPORT_RECORD_COLUMNS,
            timeout=None,
        )

    async def records(
        self, flt: RecordFilter, *, after: int | None, limit: int, newest_first: bool = False
    ) -> list[Record]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if flt.phone_number is not None:
            where.append(f"r.phone_number = {param(flt.phone_number)}")
        if flt.inbound_address is not None:
            where.append(f"r.inbound_address = {param(flt.inbound_address)}")
        if flt.since is not None:
            where.append(f"r.at >= {param(float(flt.since))}")
        if flt.until is not None:
            where.append(f"r.at < {param(float(flt.until))}")
        if after is not None:
            where.append(f"r.id {'<' if newest_first else '>'} {param(after)}")
        sql = f"SELECT {RECORD_COLUMNS} FROM record r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY r.id {'DESC' if newest_first else ''} LIMIT {param(limit)}"
        return [record_from(r) for r in await self._all(sql, params)]

    # --- reply outbox ---

    async def insert_reply(
        self,
        *,
        record_id: int | None,
        source_addr: str,
        destination_addr: str,
        text: str,
        action: Action,
        created_at: float,
    ) -> int:
        reply_id = await self._conn.fetchval(
            "INSERT INTO reply_outbox (record_id, source_addr, destination_addr, text, action, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            record_id,
            source_addr,
            destination_addr,
            text,
            action.value,
            created_at,
        )
        return int(reply_id)

    async def pending_replies(self, limit: int) -> list[Reply]:
        rows = await self._all(
            f"SELECT {REPLY_COLUMNS} FROM reply_outbox "
            "WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            (limit,),
        )
        return [reply_from(r) for r in rows]

    async def claim_replies(
        self, owner: str, *, now: float, until: float, limit: int
    ) -> list[Reply]:
        """See `rules.store.base.Tx.claim_replies`. FOR UPDATE SKIP LOCKED:
        a row another transaction is claiming is passed over, never waited
        for or taken twice."""
        rows = await self._all(
            "UPDATE reply_outbox SET claimed_by = $1, claim_until = $2 WHERE id IN ("
            "SELECT id FROM reply_outbox WHERE sent_at IS NULL AND "
            "(claim_until IS NULL OR claim_until < $3 OR claimed_by = $1) "
            "ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {REPLY_COLUMNS}",
            (owner, until, now, limit),
        )
        return sorted((reply_from(r) for r in rows), key=lambda r: r.id)

    async def pending_reply_count(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM reply_outbox WHERE sent_at IS NULL")
        return int(row[0])

    async def reply_exists(self, reply_id: int) -> bool:
        row = await self._one("SELECT 1 FROM reply_outbox WHERE id = $1", (reply_id,))
        return row is not None

    # --- the change feed ---

    def add_change(self, kind: str, payload: dict[str, Any], data: bytes | None = None) -> None:
        """Append a change to the feed when (and only if) this transaction commits."""
        self._changes.append((kind, payload, data))

    async def changes_after(self, after: int, limit: int) -> list[Change]:
        rows = await self._all(
            "SELECT id, kind, payload, data FROM changes WHERE id > $1 ORDER BY id LIMIT $2",
            (after, limit),
        )
        return [Change(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def feed_head(self) -> int:
        return int(await self._conn.fetchval("SELECT id FROM feed_head"))

    async def _flush_changes(self, at: float) -> list[Change]:
        """Writes the buffered changes after the head. This transaction has
        held `feed_head`'s row lock since it began, so ids are handed out in
        commit order with no gaps: no concurrent transaction can number a
        change until this one committed or rolled back (a rolled-back one
        gives its ids back). A reader that sees id N therefore already sees
        every id below N -- the follower never has to wait for a hole to
        fill, and never skips one."""
        if not self._changes:
            return []
        head = await self.feed_head()
        written = [
            Change(head + i, kind, payload, data)
            for i, (kind, payload, data) in enumerate(self._changes, 1)
        ]
        await self._conn.executemany(
            "INSERT INTO changes (id, at, kind, payload, data) VALUES ($1, $2, $3, $4, $5)",
            [(c.id, at, c.kind, json.dumps(c.payload), c.data) for c in written],
        )
        new_head = written[-1].id
        await self._conn.execute("UPDATE feed_head SET id = $1", new_head)
        if new_head // PRUNE_EVERY != head // PRUNE_EVERY:
            await self._conn.execute(
                "DELETE FROM changes WHERE id <= $1 AND at < $2",
                new_head - FEED_KEEP,
                at - FEED_RETENTION,
            )
        # Delivered at COMMIT, only if it commits.
        await self._conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(new_head))
        return written

    async def packed_values(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending, as one int64 array,
        streamed with one binary COPY (ten million rows in seconds)."""
        parser = _PackedCopy()
        await self._conn.copy_from_query(
            "SELECT packed FROM unsubscribed", output=parser.feed, format="binary", timeout=None
        )
        return parser.result()

    async def mark_reply_sent(self, reply_id: int, message_id: str | None, at: float) -> bool:
        changed, _ = await self._run(
            "UPDATE reply_outbox SET sent_at = $1, message_id = $2 "
            "WHERE id = $3 AND sent_at IS NULL",
            (at, message_id, reply_id),
        )
        return changed > 0

    async def reply_created_at(self, reply_id: int) -> float | None:
        row = await self._one("SELECT created_at FROM reply_outbox WHERE id = $1", (reply_id,))
        return None if row is None else float(row[0])

    # --- the inbound message log ---

    async def insert_inbound_message(self, values: InboundValues) -> int:
        message_id = await self._conn.fetchval(
            "INSERT INTO inbound_message (at, phone_number, inbound_address, text, action, "
            "keyword, near_miss) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            float(values[0]),
            *values[1:6],
            bool(values[6]),
        )
        return int(message_id)

    async def try_insert_inbound_message(self, values: InboundValues) -> int | None:
        try:
            async with self._conn.transaction():  # nested: a savepoint
                return await self.insert_inbound_message(values)
        except asyncpg.PostgresError as exc:
            log.warning("store: inbound message not logged: %s", exc)
            return None

    async def inbound_message(self, message_id: int) -> InboundMessage | None:
        row = await self._one(
            f"SELECT {INBOUND_COLUMNS} FROM inbound_message WHERE id = $1", (message_id,)
        )
        return None if row is None else inbound_from(row)

    async def inbound_messages(
        self, flt: InboundFilter, *, before: int | None, limit: int
    ) -> list[InboundMessage]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        for column, value in (
            ("phone_number", flt.phone_number),
            ("inbound_address", flt.inbound_address),
            ("action", flt.action),
        ):
            if value is not None:
                where.append(f"{column} = {param(value)}")
        if flt.near_miss is not None:
            where.append(f"near_miss = {param(flt.near_miss)}")
        if flt.reviewed is not None:
            where.append(
                "review_decision IS NOT NULL" if flt.reviewed else "review_decision IS NULL"
            )
        if flt.since is not None:
            where.append(f"at >= {param(float(flt.since))}")
        if flt.until is not None:
            where.append(f"at < {param(float(flt.until))}")
        if before is not None:
            where.append(f"id < {param(before)}")
        sql = f"SELECT {INBOUND_COLUMNS} FROM inbound_message"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id DESC LIMIT {param(limit)}"
        return [inbound_from(r) for r in await self._all(sql, params)]

    async def review_inbound_message(self, message_id: int, review: Review) -> bool:
        changed, _ = await self._run(
            "UPDATE inbound_message SET review_decision = $1, review_actor = $2, "
            "review_at = $3, review_reason = $4 WHERE id = $5 AND review_decision IS NULL",
            (review.decision.value, review.actor, float(review.at), review.reason, message_id),
        )
        return changed > 0

    async def prune_inbound_messages(self, before: float, limit: int) -> int:
        changed, _ = await self._run(
            "DELETE FROM inbound_message WHERE id IN (SELECT id FROM inbound_message "
            "WHERE at < $1 AND NOT (near_miss AND review_decision IS NULL) "
            "ORDER BY at LIMIT $2)",
            (float(before), limit),
        )
        return changed

    async def open_near_misses(self) -> tuple[int, float | None]:
        row = await self._one(
            "SELECT count(*), min(at) FROM inbound_message "
            "WHERE near_miss AND review_decision IS NULL"
        )
        return int(row[0]), (None if row[1] is None else float(row[1]))

    # --- the audit log (append-only) ---

    async def insert_audit(
        self,
        *,
        at: float,
        actor: str | None,
        action: str,
        target: str,
        before: object,
        after: object,
    ) -> int:
        entry_id = await self._conn.fetchval(
            "INSERT INTO audit (at, actor, action, target, before, after) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            float(at),
            actor,
            action,
            target,
            json_or_null(before),
            json_or_null(after),
        )
        return int(entry_id)

    async def audit_entries(
        self,
        *,
        actor: str | None,
        since: float | None,
        until: float | None,
        before: int | None,
        limit: int,
    ) -> list[AuditEntry]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if actor is not None:
            where.append(f"actor = {param(actor)}")
        if since is not None:
            where.append(f"at >= {param(float(since))}")
        if until is not None:
            where.append(f"at < {param(float(until))}")
        if before is not None:
            where.append(f"id < {param(before)}")
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id DESC LIMIT {param(limit)}"
        return [audit_from(r) for r in await self._all(sql, params)]

    # --- overview figures ---

    async def daily_changes(self, since: float) -> list[tuple[str, str, int]]:
        rows = await self._all(
            "SELECT to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, "
            "status, count(*) FROM record "
            "WHERE at >= $1 AND NOT (source = $2 AND reason = $3) GROUP BY day, status",
            (float(since), Source.KEYWORD.value, REASON_REPEATED_OPT_OUT),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def reply_latencies(self, since: float, within: float) -> tuple[int, int]:
        row = await self._one(
            "SELECT count(*), count(*) FILTER (WHERE sent_at - created_at <= $1) "
            "FROM reply_outbox WHERE action = $2 AND created_at >= $3 AND sent_at IS NOT NULL",
            (float(within), Action.OPT_OUT.value, float(since)),
        )
        return int(row[0]), int(row[1])

    # --- releasing an address's opt-outs ---

    async def unsubscribed_keys(self, address_id: int) -> list[int]:
        rows = await self._all(
            "SELECT number_key FROM unsubscribed WHERE address_id = $1 ORDER BY packed",
            (address_id,),
        )
        return [int(r[0]) for r in rows]

    async def count_unsubscribed(self, address_id: int) -> int:
        row = await self._one(
            "SELECT count(*) FROM unsubscribed WHERE address_id = $1", (address_id,)
        )
        return int(row[0])


class _PackedCopy:
    """Parses `COPY (SELECT packed ...) TO STDOUT (FORMAT binary)` as it
    streams in: a 19-byte header (plus an extension area), then per row a
    field count (int16 = 1), a length (int32 = 8) and the big-endian int64,
    then an int16 -1 trailer. Whole rows are cut out with one numpy view per
    chunk; memory holds the parsed int64 values plus one partial chunk."""

    _SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00"
    _ROW: Final = np.dtype([("fields", ">i2"), ("length", ">i4"), ("value", ">i8")])

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False
        self.chunks: list[npt.NDArray[np.int64]] = []

    async def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        if not self._header_done:
            if len(buf) < 19:
                return
            if bytes(buf[:11]) != self._SIGNATURE:
                raise StoreUnavailable("store: unexpected COPY header from PostgreSQL")
            start = 19 + int.from_bytes(buf[15:19], "big")
            if len(buf) < start:
                return
            self._header_done = True
        rows = (len(buf) - start) // self._ROW.itemsize
        if rows:
            view = np.frombuffer(buf, dtype=self._ROW, count=rows, offset=start)
            if not (np.all(view["fields"] == 1) and np.all(view["length"] == 8)):
                raise StoreUnavailable("store: unsubscribed.packed holds a non-integer")
            self.chunks.append(view["value"].astype(np.int64))
            del view
        del buf[: start + rows * self._ROW.itemsize]

    def result(self) -> npt.NDArray[np.int64]:
        # What is left is the 2-byte trailer (-1), and nothing else.
        if self._header_done and bytes(self._buf) not in (b"", b"\xff\xff"):
            raise StoreUnavailable("store: truncated COPY data from PostgreSQL")
        if not self.chunks:
            return np.empty(0, dtype=np.int64)
        values = np.concatenate(self.chunks)
        self.chunks = []
        values.sort()  # a sequential scan is faster than the index; sorting is cheap
        return values


class PostgresStore:
    """The PostgreSQL store. Open with `await PostgresStore.open(url)`."""

    backend = "postgresql"

    def __init__(self, pool: Any, dsn: str, timeout: float) -> None:
        self._pool = pool
        self._dsn = dsn
        self._timeout = timeout
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._feed: FeedSink | None = None
        self._listener: Any = None
        self._listen_retry_at = 0.0
        self._notified = asyncio.Event()

    @classmethod
    async def open(cls, url: str, *, timeout_ms: int = 5000) -> PostgresStore:
        """Connects a pool to `url` (``postgresql://`` or ``postgres://``) and
        applies pending migrations. StoreUnavailable when the server cannot
        be reached or the schema is newer than this code."""
        timeout = max(timeout_ms, 1) / 1000
        try:
            pool = await asyncpg.create_pool(
                dsn=url,
                min_size=1,
                max_size=POOL_SIZE,
                command_timeout=timeout,
                timeout=CONNECT_TIMEOUT,
            )
        except DB_ERRORS as exc:
            raise StoreUnavailable(f"cannot open store: {_describe(exc)}") from exc
        except ValueError as exc:  # a malformed DSN
            raise StoreUnavailable(f"cannot open store: {exc}") from exc
        store = cls(pool, url, timeout)
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def _migrate(self) -> None:
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn, conn.transaction():
                # Held until COMMIT: a second sidecar waits here, then finds
                # the schema current and runs nothing.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=None)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
                )
                current = await conn.fetchval("SELECT max(version) FROM schema_version")
                if current is None:
                    await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                    current = 0
                try:
                    steps = migrations.pending(int(current), schema.MIGRATIONS)
                except ValueError as exc:
                    raise StoreUnavailable(str(exc)) from exc
                for version, statements in steps:
                    log.info("store: migrating schema to version %d", version)
                    for statement in statements:
                        await conn.execute(statement, timeout=None)
                if steps:
                    await conn.execute("UPDATE schema_version SET version = $1", steps[-1][0])
        except DB_ERRORS as exc:
            raise StoreUnavailable(f"cannot migrate store: {_describe(exc)}") from exc

    async def schema_version(self) -> int:
        async with self.reading() as tx:
            row = await tx._one("SELECT max(version) FROM schema_version")
            return int(row[0])

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[PostgresTx]:
        if self._closed:
            raise StoreUnavailable("store is closed")
        lock = self._write_lock if write else contextlib.nullcontext()
        async with lock:
            conn, transaction = await self._begin(write)
            try:
                async with self._pg_transaction(conn, transaction, write) as tx:
                    yield tx
            finally:
                await self._release(conn)

    async def _begin(self, write: bool) -> tuple[Any, Any]:
        """A connection with a transaction begun (and, for a write, the
        writer lock held). After the server restarted, the pool's idle
        connections are dead and only say so when used: beginning is safe to
        repeat (nothing happened yet), so it is tried once more on a fresh
        connection before the caller is told the store is unavailable."""
        for attempt in (1, 2):
            try:
                conn = await self._pool.acquire(timeout=self._timeout)
            except DB_ERRORS as exc:
                raise StoreUnavailable(f"store: cannot connect: {_describe(exc)}") from exc
            if write:
                transaction = conn.transaction()
            else:
                transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            try:
                await transaction.start()
                if write:
                    # The fleet-wide writer lock (see the module docstring).
                    await conn.execute("SELECT id FROM feed_head FOR UPDATE")
                return conn, transaction
            except DB_ERRORS as exc:
                await _rollback_quietly(transaction)
                await self._release(conn)
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise StoreUnavailable(
                        f"store: cannot begin a transaction: {_describe(exc)}"
                    ) from exc
        raise AssertionError("unreachable")

    async def _release(self, conn: Any) -> None:
        try:
            await self._pool.release(conn, timeout=self._timeout)
        except DB_ERRORS:
            conn.terminate()  # broken: the pool opens a new one when needed

    @asynccontextmanager
    async def _pg_transaction(
        self, conn: Any, transaction: Any, write: bool
    ) -> AsyncIterator[PostgresTx]:
        """The caller's block in a begun transaction; after-commit callbacks
        run before the caller's write lock is released."""
        tx = PostgresTx(conn)
        written: list[Change] = []
        try:
            if write and self._feed is not None:
                await self._feed.catch_up(tx)
            yield tx
            if write:
                written = await tx._flush_changes(time.time())
            elif tx._changes:
                raise RuntimeError("a read transaction cannot add changes")
            await transaction.commit()
        except BaseException as exc:
            await _rollback_quietly(transaction)
            if isinstance(exc, DB_ERRORS):
                raise StoreUnavailable(f"store: {_describe(exc)}") from exc
            raise
        if written and self._feed is not None:
            try:
                self._feed.committed(written)
            except Exception:
                log.exception("store: applying committed changes failed")
        for callback in tx._after_commit:
            try:
                callback()
            except Exception:
                # The change IS committed; failing the caller now would
                # make it retry something that already happened.
                log.exception("store: after-commit callback failed")

    def transaction(self) -> AbstractAsyncContextManager[PostgresTx]:
        """`async with store.transaction() as tx:` -- one write transaction,
        serialised with every writer of the fleet."""
        return self._transaction(True)

    def reading(self) -> AbstractAsyncContextManager[PostgresTx]:
        """`async with store.reading() as tx:` -- a consistent read."""
        return self._transaction(False)

    async def load_packed(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending (`PostgresTx.packed_values`)."""
        async with self.reading() as tx:
            return await tx.packed_values()

    def set_feed(self, sink: FeedSink | None) -> None:
        """Register the sink write transactions keep up to date."""
        self._feed = sink

    async def wait_for_changes(self, timeout: float) -> None:
        """Sleeps until a NOTIFY on `NOTIFY_CHANNEL` or `timeout`. The
        listening connection is opened on first use and again after it was
        lost; without one this is a plain poll, so a missed notification
        only delays a follower, never loses a change (it reads by id)."""
        if self._listener is None and not self._closed:
            await self._listen()
        try:
            async with asyncio.timeout(timeout):
                await self._notified.wait()
        except TimeoutError:
            pass
        self._notified.clear()

    async def _listen(self) -> None:
        now = time.monotonic()
        if now < self._listen_retry_at:
            return
        self._listen_retry_at = now + LISTEN_RETRY
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        except _CONNECT_ERRORS as exc:
            log.debug("store: cannot listen for changes: %s", _describe(exc))
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except DB_ERRORS:
            conn.terminate()
            return
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        self._notified.set()  # changes may have been missed while not listening

    def _on_notify(self, *_: object) -> None:
        self._notified.set()

    def _on_listener_lost(self, *_: object) -> None:
        self._listener = None
        self._notified.set()

    async def ping(self) -> bool:
        """True when a trivial query round-trips."""
        try:
            async with self.reading() as tx:
                await tx._one("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*DB_ERRORS):
                await asyncio.wait_for(listener.close(), self._timeout)
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except DB_ERRORS as exc:
            log.warning("store: error while closing: %s", _describe(exc))
            self._pool.terminate()


async def _rollback_quietly(transaction: Any) -> None:
    # The connection may be gone; then nothing was committed either.
    with contextlib.suppress(*DB_ERRORS, asyncpg.exceptions.InterfaceError):
        await transaction.rollback()


def _describe(exc: BaseException) -> str:
    """A short cause for logs and errors (asyncpg's messages never carry
    parameters, so no phone number or MO text leaks through them)."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
