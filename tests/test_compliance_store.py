"""What the database itself guarantees for the compliance tables, on both
backends: the audit log is append-only, an inbound message is reviewed once
and never edited, a failing inbound log never costs an opt-out, and an
existing SQLite file from before issue 10 upgrades with its data."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.enforcement import count_mo_extras
from gateway.server import housekeeping
from metrics import Metrics
from rules.model import Action, Review, ReviewDecision, Status, StoreUnavailable
from rules.service import OptOutService
from rules.store import backend_for, open_store
from rules.store.migrations import sqlite as sqlite_schema
from tests.stores import execute_raw
from tests.waiting import wait_for

ADDR = "+18005550199"
ALICE = "+14155550100"


async def test_the_audit_log_cannot_be_rewritten_or_deleted(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            await tx.insert_audit(at=1.0, actor="ops", action="rule.replace",
                                  target=f"{ADDR} app", before={"sms_types": []},
                                  after={"sms_types": ["marketing"]})
        statements = ["UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"]
        if backend_for(store_url) == "postgresql":
            statements.append("TRUNCATE audit")
        for statement in statements:
            with pytest.raises(StoreUnavailable, match="append-only"):
                async with store.transaction() as tx:
                    await tx._run(statement)  # type: ignore[attr-defined]
        async with store.reading() as tx:
            (entry,) = await tx.audit_entries(actor=None, since=None, until=None, before=None,
                                              limit=10)
        assert (entry.actor, entry.after) == ("ops", {"sms_types": ["marketing"]})
    finally:
        await store.close()


async def test_an_inbound_message_is_reviewed_once_and_never_edited(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            message_id = await tx.insert_inbound_message(
                (1.0, ALICE, ADDR, "please stop", "none", None, True))
        first = Review(ReviewDecision.DISMISSED, "ops", 2.0, "chat")
        second = Review(ReviewDecision.OPT_OUT, "eve", 3.0, "")
        async with store.transaction() as tx:
            assert await tx.review_inbound_message(message_id, first)
        async with store.transaction() as tx:
            assert not await tx.review_inbound_message(message_id, second)
        # not even by hand
        for statement in ("UPDATE inbound_message SET text = 'hello'",
                          "UPDATE inbound_message SET review_decision = 'opt_out'"):
            with pytest.raises(StoreUnavailable, match="reviewed once"):
                async with store.transaction() as tx:
                    await tx._run(statement)  # type: ignore[attr-defined]
        async with store.reading() as tx:
            message = await tx.inbound_message(message_id)
        assert message is not None and message.text == "please stop"
        assert message.review == first
    finally:
        await store.close()


async def test_a_failing_inbound_log_never_costs_an_opt_out(store_url: str) -> None:
    # given an inbound log that refuses every row (a broken disk, a bad trigger)
    service = await OptOutService.open(store_url)
    metrics = Metrics()
    try:
        await service.create_address(ADDR)
        if backend_for(store_url) == "sqlite":
            await execute_raw(store_url, "CREATE TRIGGER broken BEFORE INSERT ON inbound_message "
                                         "BEGIN SELECT RAISE(ABORT, 'log broken'); END")
        else:
            await execute_raw(
                store_url,
                "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'log broken'; END $$",
                "CREATE TRIGGER broken BEFORE INSERT ON inbound_message "
                "FOR EACH ROW EXECUTE FUNCTION broken()",
            )
        # when a STOP and an ordinary text arrive
        stop = await service.handle_mo(ADDR, ALICE, "STOP")
        chat = await service.handle_mo(ADDR, ALICE, "see you")
        for outcome in (stop, chat):
            count_mo_extras(metrics, ADDR, outcome)
        # then the opt-out still committed (record, reply) and nothing failed
        assert stop.action is Action.OPT_OUT and stop.record is not None
        assert stop.record.status is Status.UNSUBSCRIBED and stop.reply is not None
        assert service.unsubscribed_count() == 1
        assert stop.log_failed and stop.message_id is None
        assert chat.log_failed and chat.action is Action.NONE
        # and the failures are counted for the store-errors alert
        assert metrics.registry.get_sample_value(
            "optout_store_errors_total", {"operation": "inbound_log"}) == 2
        assert (await service.list_inbound_messages()) == ([], None)
    finally:
        await service.close()


async def test_a_pre_compliance_sqlite_file_upgrades_with_its_data(tmp_path: Path) -> None:
    # given a store file at the schema version before issue 10, with data
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for version, statements in enumerate(sqlite_schema.MIGRATIONS[:2], 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO inbound_address (id, address, description, keywords, match_mode, "
            "replies, default_rule, created_at) VALUES (1, ?, '', ?, 'leading', '{}', "
            "'[\"marketing\"]', 0)",
            (ADDR, '{"opt_out": ["STOP"], "opt_in": [], "help": []}'),
        )
        conn.execute("INSERT INTO record (phone_number, inbound_address, status, source, at) "
                     "VALUES (?, ?, 'unsubscribed', 'api', 5)", (ALICE, ADDR))
    # when the new version opens it
    service = await OptOutService.open(f"sqlite:///{path}")
    try:
        # then it is migrated, the address and the history are intact
        assert await service.schema_version() == sqlite_schema.SCHEMA_VERSION
        address = await service.get_address(ADDR)
        assert address.near_miss_phrases == ()
        assert [w.code for w in address.warnings] == ["noncompliant_keywords"]
        records, _ = await service.list_records()
        assert [(r.phone_number, r.inbound_message_id, r.reply_sent_at) for r in records] == [
            (ALICE, None, None)]
        assert (await service.handle_mo(ADDR, ALICE, "stpo")).near_miss
    finally:
        await service.close()


async def test_housekeeping_prunes_the_log_and_refreshes_the_queue(store_url: str) -> None:
    # given an old ordinary message, and a near-miss another process reviews
    clock = Clock(1_700_000_000.0)
    service = await OptOutService.open(store_url, clock=clock)
    other = await OptOutService.open(store_url, clock=clock, follow=False)
    task: asyncio.Task[None] | None = None
    try:
        await service.create_address(ADDR)
        await service.handle_mo(ADDR, ALICE, "hello")
        near = await service.handle_mo(ADDR, ALICE, "please stop")
        assert near.message_id is not None and service.open_near_misses == 1
        clock.now += 91 * 86400
        await other.review_dismiss(near.message_id, actor="ops", reason="chat")
        # when housekeeping runs
        task = asyncio.create_task(housekeeping(service, 90, first=0, refresh_every=0.01))
        # then the old message is pruned and this process sees the review
        await wait_for(lambda: service.open_near_misses == 0)
        await wait_for(lambda: service.oldest_open_near_miss is None)
        items, _ = await service.list_inbound_messages()
        assert [m.text for m in items] == []  # the reviewed near-miss was old too
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await other.close()
        await service.close()


async def test_housekeeping_goes_on_after_a_failing_round() -> None:
    # given a store that is down for the first round and a bug in the second
    class Flaky:
        rounds = 0

        async def prune_inbound_messages(self, days: float) -> int:
            return 0

        async def refresh_near_misses(self) -> None:
            Flaky.rounds += 1
            if Flaky.rounds == 1:
                raise StoreUnavailable("database is down")
            if Flaky.rounds == 2:
                raise RuntimeError("a bug")

    task = asyncio.create_task(
        housekeeping(Flaky(), 90, first=0, refresh_every=0.001))  # type: ignore[arg-type]
    try:
        # then later rounds still run and the task is alive
        await wait_for(lambda: Flaky.rounds >= 4)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
