"""The PostgreSQL schema, as an ordered list of migrations.

Same tables and meaning as `rules.store.migrations.sqlite` (read its
docstring); the differences are PostgreSQL's types and how append-only is
enforced. The version lives in the one-row table `schema_version`; several
sidecars starting at once against an empty database migrate it exactly once
because `rules.store.postgres` runs the migrations under a session-level
advisory lock.

* `record` refuses UPDATE, DELETE and TRUNCATE through triggers calling
  `record_append_only()`.
* `inbound_message` and `audit` (version 2, issue 10): as in SQLite; the
  audit log refuses UPDATE, DELETE and TRUNCATE like `record`.
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

_V2: Migration = (
    # The inbound message log (issue 10): every MO handled. The review
    # columns are set once; a trigger refuses any other UPDATE. Rows are
    # pruned by age, so DELETE is allowed.
    """
    CREATE TABLE inbound_message (
        id bigserial PRIMARY KEY,
        at double precision NOT NULL,
        phone_number text NOT NULL,
        inbound_address text NOT NULL,
        text text NOT NULL,
        action text NOT NULL,
        keyword text,
        near_miss boolean NOT NULL DEFAULT false,
        review_decision text,
        review_actor text,
        review_at double precision,
        review_reason text
    )
    """,
    "CREATE INDEX inbound_message_by_time ON inbound_message (at)",
    "CREATE INDEX inbound_message_by_number ON inbound_message (phone_number, id)",
    "CREATE INDEX inbound_message_by_address ON inbound_message (inbound_address, id)",
    "CREATE INDEX inbound_message_open ON inbound_message (at) "
    "WHERE near_miss AND review_decision IS NULL",
    """
    CREATE FUNCTION inbound_message_review_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.review_decision IS NOT NULL
           OR NEW.id IS DISTINCT FROM OLD.id OR NEW.at IS DISTINCT FROM OLD.at
           OR NEW.phone_number IS DISTINCT FROM OLD.phone_number
           OR NEW.inbound_address IS DISTINCT FROM OLD.inbound_address
           OR NEW.text IS DISTINCT FROM OLD.text OR NEW.action IS DISTINCT FROM OLD.action
           OR NEW.keyword IS DISTINCT FROM OLD.keyword
           OR NEW.near_miss IS DISTINCT FROM OLD.near_miss THEN
            RAISE EXCEPTION 'an inbound message is reviewed once and never edited';
        END IF;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER inbound_message_review_once BEFORE UPDATE ON inbound_message
    FOR EACH ROW EXECUTE FUNCTION inbound_message_review_once()
    """,
    # The audit log of administrative changes: append-only like `record`.
    """
    CREATE TABLE audit (
        id bigserial PRIMARY KEY,
        at double precision NOT NULL,
        actor text,
        action text NOT NULL,
        target text NOT NULL,
        before text,
        after text
    )
    """,
    "CREATE INDEX audit_by_actor ON audit (actor, id)",
    "CREATE INDEX audit_by_time ON audit (at)",
    """
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only()
    """,
    """
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()
    """,
    "ALTER TABLE record ADD COLUMN inbound_message_id bigint",
    "ALTER TABLE inbound_address ADD COLUMN near_miss_phrases text NOT NULL DEFAULT '[]'",
    "CREATE INDEX reply_outbox_sent ON reply_outbox (sent_at) WHERE sent_at IS NOT NULL",
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)
"""`MIGRATIONS[i]` upgrades a schema at version `i` to version `i + 1`."""

SCHEMA_VERSION = len(MIGRATIONS)
