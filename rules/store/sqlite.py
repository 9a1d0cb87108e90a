"""The SQLite store backend (one host): aiosqlite, one file.

Theory of operation
-------------------
One connection, owned by aiosqlite's worker thread, and one `asyncio.Lock`.
Every operation -- read or write -- runs inside `Store.transaction()` (or
`Store.reading()`), which takes the lock, opens a SQLite transaction and
hands out a `Tx` with typed SQL helpers. Holding the lock across the whole
transaction is what makes "one write method = one transaction" true on a
single shared connection: no other coroutine can slip a statement into it.

Durability: WAL journal with `synchronous=FULL`, so when COMMIT returns the
WAL has been fsynced and a kill -9 (or power loss) cannot lose the change.
The caller learns of success only after COMMIT returned; callbacks that must
run on success (updating the in-memory index) are registered with
`Tx.after_commit` and run before the lock is released, so no other
transaction can observe the database and the index out of step.

Failures: any SQLite error (disk full, locked past `busy_timeout`, file
removed, connection closed) rolls the transaction back and surfaces as
`model.StoreUnavailable` with the cause chained. Domain errors raised by the
caller inside the block (Conflict, NotFound, ...) also roll back and
propagate unchanged. Nothing is ever half-applied.

The schema and its versions live in `rules.store.migrations.sqlite`; the
interface this implements, and its guarantees, in `rules.store.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite
import numpy as np
import numpy.typing as npt

from rules.mo import REASON_REPEATED_OPT_OUT
from rules.model import (
    Action,
    AuditEntry,
    InboundMessage,
    InvalidValue,
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
from rules.store.migrations import sqlite as schema

__all__ = ["SqliteStore", "SqliteTx", "parse_url"]

log = logging.getLogger(__name__)


def _quiet_aiosqlite() -> None:
    """aiosqlite logs every statement WITH its parameters at DEBUG: phone
    numbers and MO text. Unless someone configured its logger on purpose,
    keep it above DEBUG even when the application runs at DEBUG."""
    driver_log = logging.getLogger("aiosqlite")
    if driver_log.level == logging.NOTSET:
        driver_log.setLevel(logging.INFO)


_LOAD_CHUNK = 1 << 20
POLL_SECONDS = 0.1
"""How often a follower reads the feed of a SQLite file (other processes
on the same file cannot notify it)."""
_ROWS_PER_INSERT = 100


def parse_url(url: str) -> str:
    """The SQLite file name for a store URL (SPEC section 4):
    ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db`` or
    ``sqlite://:memory:``. Raises InvalidValue for anything else."""
    prefix = "sqlite://"
    if not url.startswith(prefix):
        raise InvalidValue(f"unsupported store URL {url!r}: expected sqlite:///path.db")
    rest = url[len(prefix) :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or len(rest) < 2:
        raise InvalidValue(
            f"unsupported store URL {url!r}: use sqlite:///relative.db, "
            "sqlite:////absolute.db or sqlite://:memory:"
        )
    return rest[1:]  # "/rel.db" -> "rel.db", "//abs.db" -> "/abs.db"


class SqliteTx:
    """Typed SQL helpers bound to one open transaction. Only valid inside the
    `async with` that produced it."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._after_commit: list[Callable[[], object]] = []
        self._changes: list[tuple[str, dict[str, Any], bytes | None]] = []

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once COMMIT has succeeded (never on rollback)."""
        self._after_commit.append(callback)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """(rows changed, last row id)."""
        async with self._conn.execute(sql, params) as cur:
            return cur.rowcount, cur.lastrowid

    # --- inbound addresses ---

    async def addresses(self) -> list[AddressRow]:
        rows = await self._all(f"SELECT {ADDRESS_COLUMNS} FROM inbound_address ORDER BY id")
        return [address_from(r) for r in rows]

    async def address(self, address_id: int) -> AddressRow | None:
        row = await self._one(
            f"SELECT {ADDRESS_COLUMNS} FROM inbound_address WHERE id = ?", (address_id,)
        )
        return None if row is None else address_from(row)

    async def insert_address(self, row: AddressRow) -> None:
        await self._run(
            f"INSERT INTO inbound_address ({ADDRESS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            address_values(row),
        )

    async def update_address(self, row: AddressRow) -> None:
        """Rewrites the editable columns of address `row.id`."""
        await self._run(
            "UPDATE inbound_address SET description = ?, keywords = ?, match_mode = ?, "
            "replies = ?, default_rule = ?, near_miss_phrases = ? WHERE id = ?",
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
        await self._run("DELETE FROM blocking_rule WHERE address_id = ?", (address_id,))
        removed, _ = await self._run("DELETE FROM unsubscribed WHERE address_id = ?", (address_id,))
        await self._run("DELETE FROM inbound_address WHERE id = ?", (address_id,))
        return removed

    # --- blocking rules ---

    async def rules(self) -> list[RuleRow]:
        rows = await self._all(
            "SELECT address_id, app_id, sms_types FROM blocking_rule ORDER BY address_id, app_id"
        )
        return [RuleRow(r[0], r[1], types_from_json(r[2])) for r in rows]

    async def insert_rule(self, rule: RuleRow) -> None:
        await self._run(
            "INSERT INTO blocking_rule (address_id, app_id, sms_types) VALUES (?, ?, ?)",
            (rule.address_id, rule.app_id, types_json(rule.sms_types)),
        )

    async def update_rule(self, rule: RuleRow) -> bool:
        changed, _ = await self._run(
            "UPDATE blocking_rule SET sms_types = ? WHERE address_id = ? AND app_id = ?",
            (types_json(rule.sms_types), rule.address_id, rule.app_id),
        )
        return changed > 0

    async def delete_rule(self, address_id: int, app_id: str) -> bool:
        changed, _ = await self._run(
            "DELETE FROM blocking_rule WHERE address_id = ? AND app_id = ?",
            (address_id, app_id),
        )
        return changed > 0

    # --- unsubscriptions ---

    async def unsubscription(self, packed: int) -> UnsubRow | None:
        row = await self._one(
            "SELECT packed, address_id, number_key, since, source FROM unsubscribed "
            "WHERE packed = ?",
            (packed,),
        )
        return None if row is None else unsub_from(row)

    async def insert_unsubscription(self, row: UnsubRow) -> None:
        await self._run(
            "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) "
            "VALUES (?, ?, ?, ?, ?)",
            (row.packed, row.address_id, row.number_key, row.since, row.source.value),
        )

    async def insert_unsubscriptions(self, rows: Iterable[UnsubRow]) -> None:
        await self._conn.executemany(
            "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) "
            "VALUES (?, ?, ?, ?, ?)",
            ((r.packed, r.address_id, r.number_key, r.since, r.source.value) for r in rows),
        )

    async def _insert_many(self, head: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
        """`head` + `row` repeated: multi-row VALUES, `_ROWS_PER_INSERT` rows
        per statement. SQLite's per-statement cost (reset, step, bind
        bookkeeping) then counts once per hundred rows instead of per row:
        about twice as fast as executemany of single rows for big imports."""
        per = _ROWS_PER_INSERT
        full = len(rows) - len(rows) % per
        if full:
            sql = head + ",".join([row] * per)
            await self._conn.executemany(
                sql,
                (
                    tuple(itertools.chain.from_iterable(rows[i : i + per]))
                    for i in range(0, full, per)
                ),
            )
        if full < len(rows):
            rest = rows[full:]
            await self._run(
                head + ",".join([row] * len(rest)), tuple(itertools.chain.from_iterable(rest))
            )

    async def insert_unsubscription_values(
        self, rows: Sequence[UnsubValues]
    ) -> None:
        """Bulk insert of (packed, address_id, number_key, since, source)."""
        await self._insert_many(
            "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) VALUES ",
            "(?,?,?,?,?)",
            rows,
        )

    async def insert_import_records(
        self, rows: Sequence[tuple[str, str]], *, at: float, actor: str | None
    ) -> None:
        """Bulk insert of "unsubscribed by import" records for (phone number,
        inbound address) pairs, all at `at` by `actor`. The constant columns
        are SQL literals so each row binds only what differs."""
        at_literal = repr(float(at))
        if not math.isfinite(float(at)):
            raise ValueError(f"record time must be finite, not {at_literal}")
        await self._insert_many(
            "INSERT INTO record (phone_number, inbound_address, status, source, at, reason, "
            "actor) VALUES ",
            f"(?,?,'{Status.UNSUBSCRIBED.value}','{Source.IMPORT.value}',{at_literal},"
            f"'imported',?)",
            [(phone, address, actor) for phone, address in rows],
        )

    async def delete_unsubscription(self, packed: int) -> bool:
        changed, _ = await self._run("DELETE FROM unsubscribed WHERE packed = ?", (packed,))
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

        The time orders have no index of their own: SQLite keeps only the
        page's rows while scanning (a top-N sort), which suits a console
        paging through a list of any size at a person's pace."""
        where: list[str] = []
        params: list[Any] = []
        if address_id is not None:
            where.append("address_id = ?")
            params.append(address_id)
        if packed_range is not None:
            where.append("packed >= ? AND packed < ?")
            params.extend(packed_range)
        if order == "number":
            if after is not None:
                where.append("packed > ?")
                params.append(after)
            ordering = "packed"
        else:
            op, direction = ("<", "DESC") if order == "newest" else (">", "ASC")
            if after is not None and after_since is not None:
                where.append(f"(since {op} ? OR (since = ? AND packed {op} ?))")
                params.extend((after_since, after_since, after))
            ordering = f"since {direction}, packed {direction}"
        sql = "SELECT packed, address_id, number_key, since, source FROM unsubscribed"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {ordering} LIMIT ?"
        params.append(limit)
        rows = await self._all(sql, params)
        return [unsub_from(r) for r in rows]

    async def unsubscribe_reasons(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The reason of the latest "unsubscribed" record of each (number,
        address) pair: why the number is on the list now."""
        found: dict[tuple[str, str], str] = {}
        for phone, address in pairs:
            row = await self._one(
                "SELECT reason FROM record WHERE phone_number = ? AND inbound_address = ? "
                "AND status = ? ORDER BY id DESC LIMIT 1",
                (phone, address, Status.UNSUBSCRIBED.value),
            )
            if row is not None:
                found[(phone, address)] = row[0]
        return found

    # --- records (append-only) ---

    async def insert_record(
        self, values: RecordValues, *, inbound_message_id: int | None = None
    ) -> int:
        _, rowid = await self._run(
            "INSERT INTO record (phone_number, inbound_address, status, source, at, reason, "
            "actor, raw_text, keyword, carrier_ids, inbound_message_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, inbound_message_id),
        )
        assert rowid is not None
        return rowid

    async def records(
        self, flt: RecordFilter, *, after: int | None, limit: int, newest_first: bool = False
    ) -> list[Record]:
        where: list[str] = []
        params: list[Any] = []
        if flt.phone_number is not None:
            where.append("r.phone_number = ?")
            params.append(flt.phone_number)
        if flt.inbound_address is not None:
            where.append("r.inbound_address = ?")
            params.append(flt.inbound_address)
        if flt.since is not None:
            where.append("r.at >= ?")
            params.append(flt.since)
        if flt.until is not None:
            where.append("r.at < ?")
            params.append(flt.until)
        if after is not None:
            where.append("r.id < ?" if newest_first else "r.id > ?")
            params.append(after)
        sql = f"SELECT {RECORD_COLUMNS} FROM record r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.id DESC LIMIT ?" if newest_first else " ORDER BY r.id LIMIT ?"
        params.append(limit)
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
        _, rowid = await self._run(
            "INSERT INTO reply_outbox (record_id, source_addr, destination_addr, text, action, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (record_id, source_addr, destination_addr, text, action.value, created_at),
        )
        assert rowid is not None
        return rowid

    async def pending_replies(self, limit: int) -> list[Reply]:
        rows = await self._all(
            f"SELECT {REPLY_COLUMNS} FROM reply_outbox "
            "WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [reply_from(r) for r in rows]

    async def claim_replies(
        self, owner: str, *, now: float, until: float, limit: int
    ) -> list[Reply]:
        """See `rules.store.base.Tx.claim_replies` (writes are serialised by
        SQLite's write lock, so a plain UPDATE ... RETURNING is exclusive)."""
        rows = await self._all(
            "UPDATE reply_outbox SET claimed_by = ?, claim_until = ? WHERE id IN ("
            "SELECT id FROM reply_outbox WHERE sent_at IS NULL AND "
            "(claim_until IS NULL OR claim_until < ? OR claimed_by = ?) ORDER BY id LIMIT ?) "
            f"RETURNING {REPLY_COLUMNS}",
            (owner, until, now, owner, limit),
        )
        return sorted((reply_from(r) for r in rows), key=lambda r: r.id)

    async def pending_reply_count(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM reply_outbox WHERE sent_at IS NULL")
        return int(row[0])

    async def reply_exists(self, reply_id: int) -> bool:
        row = await self._one("SELECT 1 FROM reply_outbox WHERE id = ?", (reply_id,))
        return row is not None

    # --- the change feed ---

    def add_change(self, kind: str, payload: dict[str, Any], data: bytes | None = None) -> None:
        """Append a change to the feed when (and only if) this transaction commits."""
        self._changes.append((kind, payload, data))

    async def changes_after(self, after: int, limit: int) -> list[Change]:
        rows = await self._all(
            "SELECT id, kind, payload, data FROM changes WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [Change(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def feed_head(self) -> int:
        row = await self._one("SELECT id FROM feed_head")
        return int(row[0])

    async def _flush_changes(self, at: float) -> list[Change]:
        """Writes the buffered changes after the head (the writer holds the
        write lock, so nobody else numbers changes meanwhile)."""
        if not self._changes:
            return []
        head = await self.feed_head()
        written = [
            Change(head + i, kind, payload, data)
            for i, (kind, payload, data) in enumerate(self._changes, 1)
        ]
        await self._conn.executemany(
            "INSERT INTO changes (id, at, kind, payload, data) VALUES (?, ?, ?, ?, ?)",
            [(c.id, at, c.kind, json.dumps(c.payload), c.data) for c in written],
        )
        new_head = written[-1].id
        await self._run("UPDATE feed_head SET id = ?", (new_head,))
        if new_head // PRUNE_EVERY != head // PRUNE_EVERY:
            await self._run(
                "DELETE FROM changes WHERE id <= ? AND at < ?",
                (new_head - FEED_KEEP, at - FEED_RETENTION),
            )
        return written

    async def packed_values(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending, as one int64 array:
        the in-memory index's bulk-load input.

        Start-up with ten million rows must take seconds (SPEC section 5), and
        one Python int per row is most of the cost of a plain fetch. So SQLite
        joins each chunk of values into one text (`group_concat` over an
        ordered keyset range of the rowid b-tree) and numpy parses it: about
        twice as fast, and memory stays bounded by the chunk.
        """
        chunks: list[npt.NDArray[np.int64]] = []
        after = -1
        while True:
            row = await self._one(
                "SELECT group_concat(packed), count(*), max(packed) FROM "
                "(SELECT packed FROM unsubscribed WHERE packed > ? "
                "ORDER BY packed LIMIT ?)",
                (after, _LOAD_CHUNK),
            )
            if row is None or not row[1]:
                break
            chunk = np.fromstring(row[0], dtype=np.int64, sep=",")
            if len(chunk) != row[1]:
                raise StoreUnavailable("store: unsubscribed.packed holds a non-integer")
            chunks.append(chunk)
            after = int(row[2])
            if row[1] < _LOAD_CHUNK:
                break
        if not chunks:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(chunks)

    async def mark_reply_sent(self, reply_id: int, message_id: str | None, at: float) -> bool:
        changed, _ = await self._run(
            "UPDATE reply_outbox SET sent_at = ?, message_id = ? WHERE id = ? AND sent_at IS NULL",
            (at, message_id, reply_id),
        )
        return changed > 0

    async def reply_created_at(self, reply_id: int) -> float | None:
        row = await self._one("SELECT created_at FROM reply_outbox WHERE id = ?", (reply_id,))
        return None if row is None else float(row[0])

    # --- the inbound message log ---

    async def insert_inbound_message(self, values: InboundValues) -> int:
        _, rowid = await self._run(
            "INSERT INTO inbound_message (at, phone_number, inbound_address, text, action, "
            "keyword, near_miss) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*values[:6], 1 if values[6] else 0),
        )
        assert rowid is not None
        return rowid

    async def try_insert_inbound_message(self, values: InboundValues) -> int | None:
        await self._conn.execute("SAVEPOINT inbound_log")
        try:
            message_id = await self.insert_inbound_message(values)
        except sqlite3.Error as exc:
            log.warning("store: inbound message not logged: %s", exc)
            await self._conn.execute("ROLLBACK TO inbound_log")
            await self._conn.execute("RELEASE inbound_log")
            return None
        await self._conn.execute("RELEASE inbound_log")
        return message_id

    async def inbound_message(self, message_id: int) -> InboundMessage | None:
        row = await self._one(
            f"SELECT {INBOUND_COLUMNS} FROM inbound_message WHERE id = ?", (message_id,)
        )
        return None if row is None else inbound_from(row)

    async def inbound_messages(
        self, flt: InboundFilter, *, before: int | None, limit: int
    ) -> list[InboundMessage]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("phone_number", flt.phone_number),
            ("inbound_address", flt.inbound_address),
            ("action", flt.action),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if flt.near_miss is not None:
            where.append("near_miss = ?")
            params.append(1 if flt.near_miss else 0)
        if flt.reviewed is not None:
            where.append(
                "review_decision IS NOT NULL" if flt.reviewed else "review_decision IS NULL"
            )
        if flt.since is not None:
            where.append("at >= ?")
            params.append(flt.since)
        if flt.until is not None:
            where.append("at < ?")
            params.append(flt.until)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        sql = f"SELECT {INBOUND_COLUMNS} FROM inbound_message"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [inbound_from(r) for r in await self._all(sql, params)]

    async def review_inbound_message(self, message_id: int, review: Review) -> bool:
        changed, _ = await self._run(
            "UPDATE inbound_message SET review_decision = ?, review_actor = ?, review_at = ?, "
            "review_reason = ? WHERE id = ? AND review_decision IS NULL",
            (review.decision.value, review.actor, review.at, review.reason, message_id),
        )
        return changed > 0

    async def prune_inbound_messages(self, before: float, limit: int) -> int:
        changed, _ = await self._run(
            "DELETE FROM inbound_message WHERE id IN (SELECT id FROM inbound_message "
            "WHERE at < ? AND NOT (near_miss = 1 AND review_decision IS NULL) "
            "ORDER BY at LIMIT ?)",
            (before, limit),
        )
        return changed

    async def open_near_misses(self) -> tuple[int, float | None]:
        row = await self._one(
            "SELECT count(*), min(at) FROM inbound_message "
            "WHERE near_miss = 1 AND review_decision IS NULL"
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
        _, rowid = await self._run(
            "INSERT INTO audit (at, actor, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, actor, action, target, json_or_null(before), json_or_null(after)),
        )
        assert rowid is not None
        return rowid

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
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if until is not None:
            where.append("at < ?")
            params.append(until)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [audit_from(r) for r in await self._all(sql, params)]

    # --- overview figures ---

    async def daily_changes(self, since: float) -> list[tuple[str, str, int]]:
        rows = await self._all(
            "SELECT date(at, 'unixepoch'), status, count(*) FROM record "
            "WHERE at >= ? AND NOT (source = ? AND reason = ?) GROUP BY 1, 2",
            (since, Source.KEYWORD.value, REASON_REPEATED_OPT_OUT),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def reply_latencies(self, since: float, within: float) -> tuple[int, int]:
        row = await self._one(
            "SELECT count(*), coalesce(sum(sent_at - created_at <= ?), 0) FROM reply_outbox "
            "WHERE action = ? AND created_at >= ? AND sent_at IS NOT NULL",
            (within, Action.OPT_OUT.value, since),
        )
        return int(row[0]), int(row[1])

    # --- releasing an address's opt-outs ---

    async def unsubscribed_keys(self, address_id: int) -> list[int]:
        rows = await self._all(
            "SELECT number_key FROM unsubscribed WHERE address_id = ? ORDER BY packed",
            (address_id,),
        )
        return [int(r[0]) for r in rows]

    async def count_unsubscribed(self, address_id: int) -> int:
        row = await self._one(
            "SELECT count(*) FROM unsubscribed WHERE address_id = ?", (address_id,)
        )
        return int(row[0])

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
        await self._insert_many(
            "INSERT INTO record (phone_number, inbound_address, status, source, at, reason, "
            "actor) VALUES ",
            "(?,?,?,?,?,?,?)",
            [
                (n, inbound_address, Status.SUBSCRIBED.value, source.value, at, reason, actor)
                for n in phone_numbers
            ],
        )


#: How long /readyz's write probe waits for the write lock.
_PROBE_BUSY_MS = 200

_DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
# aiosqlite raises a bare ValueError on a closed connection.
_DB_OR_CLOSED_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError, ValueError)


#: Mode of the store's files: they hold phone numbers and MO texts.
PRIVATE_MODE: Final = 0o600


def _make_private(path: str) -> None:
    """Create the database file readable and writable by its owner only,
    whatever the umask, before SQLite opens it. SQLite gives the -wal and
    -shm files it creates the database file's mode (it fchmods them past
    the umask), so they follow. An existing file that others can read is
    tightened, with a warning, rather than left exposed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        for name in (path, path + "-wal", path + "-shm"):
            try:
                mode = os.stat(name).st_mode & 0o777
            except FileNotFoundError:
                continue
            if mode & 0o077:
                os.chmod(name, PRIVATE_MODE)
                log.warning("store: %s was readable by others (mode %o); now %o",
                            name, mode, PRIVATE_MODE)
        return
    try:
        os.fchmod(fd, PRIVATE_MODE)  # os.open's mode was filtered by the umask
    finally:
        os.close(fd)


class SqliteStore:
    """The SQLite store. Open with `await SqliteStore.open(url)`."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._lock = asyncio.Lock()
        self._closed = False
        self._feed: FeedSink | None = None
        self._identity = self._file_identity()
        self._busy_timeout_ms = 5000

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database file; None for :memory: or gone."""
        if self._path == ":memory:":
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """SQLite keeps writing to a database file that was deleted or
        replaced under it, and those commits vanish at the next start. Refuse
        to commit then, so no change is acknowledged that cannot survive."""
        if self._path != ":memory:" and self._file_identity() != self._identity:
            raise StoreUnavailable(f"store file {self._path!r} was removed or replaced while open")

    @property
    def path(self) -> str:
        return self._path

    @classmethod
    async def open(cls, url: str, *, busy_timeout_ms: int = 5000) -> SqliteStore:
        """Opens (creating if needed) the store at `url`, switches on WAL and
        full fsync, and applies pending migrations in one transaction.

        Raises InvalidValue for a bad URL, StoreUnavailable when the file
        cannot be opened or migrated.
        """
        path = parse_url(url)
        _quiet_aiosqlite()
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _make_private(path)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except _DB_OR_CLOSED_ERRORS as exc:  # OSError included: mkdir, the file's mode
            raise StoreUnavailable(f"cannot open store {path!r}: {exc}") from exc
        store = cls(conn, path)
        try:
            await store._configure(busy_timeout_ms)
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def _configure(self, busy_timeout_ms: int) -> None:
        self._busy_timeout_ms = int(busy_timeout_ms)
        try:
            # busy_timeout first, so the journal-mode switch waits for others too.
            await self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            async with self._conn.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            mode = row[0] if row else None
            if self._path != ":memory:" and mode != "wal":
                raise StoreUnavailable(f"cannot switch {self._path!r} to WAL (got {mode!r})")
            # FULL: the WAL is fsynced at every commit, so a commit that
            # returned survives kill -9 and power loss (NORMAL would not).
            await self._conn.execute("PRAGMA synchronous = FULL")
            await self._conn.execute("PRAGMA foreign_keys = ON")
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"cannot configure store: {exc}") from exc

    async def _migrate(self) -> None:
        try:
            async with self._lock:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    async with self._conn.execute("PRAGMA user_version") as cur:
                        row = await cur.fetchone()
                    current = int(row[0]) if row else 0
                    try:
                        steps = migrations.pending(current, schema.MIGRATIONS)
                    except ValueError as exc:
                        raise StoreUnavailable(str(exc)) from exc
                    for version, statements in steps:
                        log.info("store: migrating schema to version %d", version)
                        for statement in statements:
                            await self._conn.execute(statement)
                    if steps:
                        await self._conn.execute(f"PRAGMA user_version = {steps[-1][0]}")
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._rollback_quietly()
                    raise
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"cannot migrate store: {exc}") from exc

    async def schema_version(self) -> int:
        async with self.reading() as tx:
            row = await tx._one("PRAGMA user_version")
            return int(row[0])

    async def _rollback_quietly(self) -> None:
        # No transaction left to roll back (SQLite already did), or the
        # connection is gone: either way nothing was committed.
        with contextlib.suppress(*_DB_OR_CLOSED_ERRORS):
            await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[SqliteTx]:
        if self._closed:
            raise StoreUnavailable("store is closed")
        async with self._lock:
            tx = SqliteTx(self._conn)
            try:
                await self._conn.execute(begin)
            except BaseException as exc:
                if isinstance(exc, _DB_ERRORS) or self._is_closed_error(exc):
                    raise StoreUnavailable(f"store: cannot begin a transaction: {exc}") from exc
                raise
            written: list[Change] = []
            try:
                write = begin != "BEGIN"
                if write and self._feed is not None:
                    await self._feed.catch_up(tx)
                yield tx
                if write:
                    written = await tx._flush_changes(time.time())
                    self._check_file()
                elif tx._changes:
                    raise RuntimeError("a read transaction cannot add changes")
                await self._conn.execute("COMMIT")
            except BaseException as exc:
                await self._rollback_quietly()
                if isinstance(exc, _DB_ERRORS) or self._is_closed_error(exc):
                    raise StoreUnavailable(f"store: {exc}") from exc
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

    def _is_closed_error(self, exc: BaseException) -> bool:
        """aiosqlite reports a closed connection as a bare ValueError."""
        return isinstance(exc, ValueError) and (
            self._closed or str(exc) in ("no active connection", "Connection closed")
        )

    def transaction(self) -> AbstractAsyncContextManager[SqliteTx]:
        """`async with store.transaction() as tx:` -- one write transaction
        (BEGIN IMMEDIATE: takes the write lock up front, so it cannot fail
        half-way on a lock upgrade)."""
        return self._transaction("BEGIN IMMEDIATE")

    def reading(self) -> AbstractAsyncContextManager[SqliteTx]:
        """`async with store.reading() as tx:` -- a consistent read."""
        return self._transaction("BEGIN")

    async def load_packed(self) -> npt.NDArray[np.int64]:
        """Every `unsubscribed.packed` value, ascending (`SqliteTx.packed_values`)."""
        async with self.reading() as tx:
            return await tx.packed_values()

    def set_feed(self, sink: FeedSink | None) -> None:
        """Register the sink write transactions keep up to date."""
        self._feed = sink

    async def wait_for_changes(self, timeout: float) -> None:
        """SQLite has no notifications across processes: followers poll the
        `changes` table (one indexed read of nothing, usually) this often."""
        await asyncio.sleep(min(timeout, POLL_SECONDS))

    async def ping(self) -> bool:
        """True when the store can take a commit now: a trivial query
        round-trips and the write lock can be had. Reads alone would pass
        while another process holds the database locked (WAL lets readers
        through), yet every MO would then be answered 0x64."""
        try:
            async with self.reading() as tx:
                await tx._one("SELECT 1")
            self._check_file()
        except StoreUnavailable:
            return False
        return await self._can_write()

    async def _can_write(self) -> bool:
        """Take the write lock and give it back at once, waiting at most
        `_PROBE_BUSY_MS` for it (not the full busy timeout writes wait)."""
        if self._closed:
            return False
        async with self._lock:
            try:
                await self._conn.execute(f"PRAGMA busy_timeout = {_PROBE_BUSY_MS}")
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                    await self._conn.execute("ROLLBACK")
                finally:
                    await self._conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            except _DB_OR_CLOSED_ERRORS:
                await self._rollback_quietly()
                return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            try:
                await self._conn.close()
            except _DB_OR_CLOSED_ERRORS as exc:
                log.warning("store: error while closing: %s", exc)
