"""The PostgreSQL schema, as an ordered list of migrations.

Same tables and meaning as `rules.store.migrations.sqlite` (read its
docstring); the differences are PostgreSQL's types and how append-only is
enforced. The version lives in the one-row table `schema_version`; several
sidecars starting at once against an empty database migrate it exactly once
because `rules.store.postgres` runs the migrations under a session-level
advisory lock.

* `record` refuses UPDATE, DELETE and TRUNCATE through triggers calling
  `record_append_only()`.
* `feed_head` is one row: its row lock serialises every write transaction
  of the fleet, and it holds the id of the last change in `changes`, so
  change ids are handed out in commit order without gaps (see
  `rules.service.feed`).
"""

from __future__ import annotations

from rules.store.migrations import Migration

_V1: Migration = (
    """
    CREATE TABLE inbound_address (
        id integer PRIMARY KEY,
        address text NOT NULL UNIQUE,
        description text NOT NULL DEFAULT '',
        keywords text NOT NULL,
        match_mode text NOT NULL,
        replies text NOT NULL,
        default_rule text NOT NULL,
        created_at double precision NOT NULL
    )
    """,
    """
    CREATE TABLE blocking_rule (
        address_id integer NOT NULL REFERENCES inbound_address(id) ON DELETE CASCADE,
        app_id text NOT NULL,
        sms_types text NOT NULL,
        PRIMARY KEY (address_id, app_id)
    )
    """,
    """
    CREATE TABLE unsubscribed (
        packed bigint PRIMARY KEY,
        address_id integer NOT NULL,
        number_key bigint NOT NULL,
        since double precision NOT NULL,
        source text NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX unsubscribed_by_address ON unsubscribed (address_id, packed)",
    """
    CREATE TABLE record (
        id bigserial PRIMARY KEY,
        phone_number text NOT NULL,
        inbound_address text NOT NULL,
        status text NOT NULL,
        source text NOT NULL,
        at double precision NOT NULL,
        reason text NOT NULL DEFAULT '',
        actor text,
        raw_text text,
        keyword text,
        carrier_ids text
    )
    """,
    "CREATE INDEX record_by_number ON record (phone_number, id)",
    "CREATE INDEX record_by_address ON record (inbound_address, id)",
    "CREATE INDEX record_by_time ON record (at)",
    """
    CREATE FUNCTION record_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'records are append-only';
    END
    $$
    """,
    """
    CREATE TRIGGER record_no_update_or_delete BEFORE UPDATE OR DELETE ON record
    FOR EACH ROW EXECUTE FUNCTION record_append_only()
    """,
    """
    CREATE TRIGGER record_no_truncate BEFORE TRUNCATE ON record
    FOR EACH STATEMENT EXECUTE FUNCTION record_append_only()
    """,
    """
    CREATE TABLE reply_outbox (
        id bigserial PRIMARY KEY,
        record_id bigint,
        source_addr text NOT NULL,
        destination_addr text NOT NULL,
        text text NOT NULL,
        action text NOT NULL,
        created_at double precision NOT NULL,
        sent_at double precision,
        message_id text,
        claimed_by text,
        claim_until double precision
    )
    """,
    "CREATE INDEX reply_outbox_pending ON reply_outbox (id) WHERE sent_at IS NULL",
    "CREATE INDEX reply_outbox_by_record ON reply_outbox (record_id)",
    """
    CREATE TABLE feed_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        id bigint NOT NULL
    )
    """,
    "INSERT INTO feed_head (one, id) VALUES (true, 0)",
    """
    CREATE TABLE changes (
        id bigint PRIMARY KEY,
        at double precision NOT NULL,
        kind text NOT NULL,
        payload text NOT NULL,
        data bytea
    )
    """,
)

MIGRATIONS: tuple[Migration, ...] = (_V1,)
"""`MIGRATIONS[i]` upgrades a schema at version `i` to version `i + 1`."""

SCHEMA_VERSION = len(MIGRATIONS)
