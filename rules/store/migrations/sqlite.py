"""The SQLite schema, as an ordered list of migrations.

Theory of operation
-------------------
The schema version lives in SQLite's `PRAGMA user_version` (0 for a new,
empty file). `MIGRATIONS[i]` moves the schema from version `i` to `i + 1`.
At start-up the store applies every migration above the file's version, all
in ONE transaction together with the new `user_version`, so a crash half-way
leaves the file at its old version rather than at a version that lies about
its tables. Reopening an up-to-date file runs nothing.

Never edit a migration that has shipped: append a new one.

Tables
------
* `inbound_address`: one row per inbound address. `id` is small (< 2**15)
  because it is packed next to the number in the in-memory index; ids of
  deleted addresses are reused (nothing refers to them any more: records name
  the address by its string).
* `blocking_rule`: (address, app) -> JSON list of SMS types.
* `unsubscribed`: the current opt-outs. Its rowid IS the packed
  `number_key * 2**15 + address_id` value, so start-up loads the whole
  in-memory index with one ordered scan of one integer column.
* `record`: the append-only history. It names the address by string, not by
  foreign key, so deleting an address keeps its history; triggers refuse any
  UPDATE or DELETE so "records are never rewritten or lost" holds even
  against a careless future query.
* `reply_outbox`: auto-replies waiting for (or done with) the carrier. Reply
  state lives here, never in `record`. `claimed_by` / `claim_until`: the
  process sending it and its lease (version 2).
* `feed_head`, `changes` (version 2): the change feed, see `rules.store.base`.

Version 3 (compliance, issue 10):

* `inbound_message`: every MO handled, kept `[store] inbound_retention_days`.
  Its review columns are written once; a trigger refuses any other change.
* `audit`: every administrative change (who, what, before, after);
  append-only like `record`.
* `record.inbound_message_id`: the logged MO a review opt-out answers.
* `inbound_address.near_miss_phrases`: the address's extra phrases.
"""

from __future__ import annotations

from rules.store.migrations import Migration

_V1: Migration = (
    """
    CREATE TABLE inbound_address (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        keywords TEXT NOT NULL,
        match_mode TEXT NOT NULL,
        replies TEXT NOT NULL,
        default_rule TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE blocking_rule (
        address_id INTEGER NOT NULL REFERENCES inbound_address(id) ON DELETE CASCADE,
        app_id TEXT NOT NULL,
        sms_types TEXT NOT NULL,
        PRIMARY KEY (address_id, app_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE unsubscribed (
        packed INTEGER PRIMARY KEY,
        address_id INTEGER NOT NULL,
        number_key INTEGER NOT NULL,
        since REAL NOT NULL,
        source TEXT NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX unsubscribed_by_address ON unsubscribed (address_id, packed)",
    """
    CREATE TABLE record (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        phone_number TEXT NOT NULL,
        inbound_address TEXT NOT NULL,
        status TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        actor TEXT,
        raw_text TEXT,
        keyword TEXT,
        carrier_ids TEXT
    )
    """,
    "CREATE INDEX record_by_number ON record (phone_number, id)",
    "CREATE INDEX record_by_address ON record (inbound_address, id)",
    "CREATE INDEX record_by_time ON record (at)",
    """
    CREATE TRIGGER record_no_update BEFORE UPDATE ON record
    BEGIN SELECT RAISE(ABORT, 'records are append-only'); END
    """,
    """
    CREATE TRIGGER record_no_delete BEFORE DELETE ON record
    BEGIN SELECT RAISE(ABORT, 'records are append-only'); END
    """,
    """
    CREATE TABLE reply_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id INTEGER,
        source_addr TEXT NOT NULL,
        destination_addr TEXT NOT NULL,
        text TEXT NOT NULL,
        action TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL,
        message_id TEXT
    )
    """,
    "CREATE INDEX reply_outbox_pending ON reply_outbox (id) WHERE sent_at IS NULL",
    "CREATE INDEX reply_outbox_by_record ON reply_outbox (record_id)",
)

_V2: Migration = (
    # The change feed (`rules.store.base`, `rules.service.feed`): every
    # committed change, in commit order, for every process on this file.
    """
    CREATE TABLE feed_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        id INTEGER NOT NULL
    )
    """,
    "INSERT INTO feed_head (one, id) VALUES (1, 0)",
    """
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        data BLOB
    )
    """,
    # Outbox claims: which process is sending a reply, until when.
    "ALTER TABLE reply_outbox ADD COLUMN claimed_by TEXT",
    "ALTER TABLE reply_outbox ADD COLUMN claim_until REAL",
)

_V3: Migration = (
    # The inbound message log: every MO handled. The review columns are set
    # once (a trigger refuses any other UPDATE); rows are pruned by age.
    """
    CREATE TABLE inbound_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        phone_number TEXT NOT NULL,
        inbound_address TEXT NOT NULL,
        text TEXT NOT NULL,
        action TEXT NOT NULL,
        keyword TEXT,
        near_miss INTEGER NOT NULL DEFAULT 0,
        review_decision TEXT,
        review_actor TEXT,
        review_at REAL,
        review_reason TEXT
    )
    """,
    "CREATE INDEX inbound_message_by_time ON inbound_message (at)",
    "CREATE INDEX inbound_message_by_number ON inbound_message (phone_number, id)",
    "CREATE INDEX inbound_message_by_address ON inbound_message (inbound_address, id)",
    "CREATE INDEX inbound_message_open ON inbound_message (at) "
    "WHERE near_miss = 1 AND review_decision IS NULL",
    """
    CREATE TRIGGER inbound_message_review_once BEFORE UPDATE ON inbound_message
    WHEN OLD.review_decision IS NOT NULL
      OR NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at
      OR NEW.phone_number IS NOT OLD.phone_number
      OR NEW.inbound_address IS NOT OLD.inbound_address
      OR NEW.text IS NOT OLD.text OR NEW.action IS NOT OLD.action
      OR NEW.keyword IS NOT OLD.keyword OR NEW.near_miss IS NOT OLD.near_miss
    BEGIN SELECT RAISE(ABORT, 'an inbound message is reviewed once and never edited'); END
    """,
    # The audit log of administrative changes: append-only like `record`.
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after TEXT
    )
    """,
    "CREATE INDEX audit_by_actor ON audit (actor, id)",
    "CREATE INDEX audit_by_time ON audit (at)",
    """
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    # A review's opt-out names the message it answers.
    "ALTER TABLE record ADD COLUMN inbound_message_id INTEGER",
    # Per-address extra near-miss phrases (JSON list).
    "ALTER TABLE inbound_address ADD COLUMN near_miss_phrases TEXT NOT NULL DEFAULT '[]'",
    "CREATE INDEX reply_outbox_sent ON reply_outbox (sent_at) WHERE sent_at IS NOT NULL",
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3)
"""`MIGRATIONS[i]` upgrades a schema at version `i` to version `i + 1`."""

SCHEMA_VERSION = len(MIGRATIONS)
