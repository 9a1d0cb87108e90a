"""MO handling: the pure plan table, then whole MOs through the service,
including a store that fails mid-transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rules.mo import REASON_OPT_IN, REASON_OPT_OUT, REASON_REPEATED_OPT_OUT, plan_mo
from rules.model import Action, Replies, SmsType, Source, Status, StoreUnavailable
from rules.service import OptOutService, ProgramInfo
from rules.store import backend_for
from tests.stores import execute_raw

REPLIES = Replies(opt_out="bye", opt_in="hi", help="help text")
OFF = Replies(opt_out=None, opt_in=None, help=None)

# action, unsubscribed now -> (new status, record status, reason, reply text)
PLAN_CASES = [
    (Action.OPT_OUT, False, Status.UNSUBSCRIBED, Status.UNSUBSCRIBED, REASON_OPT_OUT, "bye"),
    (Action.OPT_OUT, True, None, Status.UNSUBSCRIBED, REASON_REPEATED_OPT_OUT, None),
    (Action.OPT_IN, True, Status.SUBSCRIBED, Status.SUBSCRIBED, REASON_OPT_IN, "hi"),
    (Action.OPT_IN, False, None, None, "", None),
    (Action.HELP, False, None, None, "", "help text"),
    (Action.HELP, True, None, None, "", "help text"),
    (Action.NONE, False, None, None, "", None),
    (Action.NONE, True, None, None, "", None),
]


@pytest.mark.parametrize(("action", "unsub", "new", "record", "reason", "reply"), PLAN_CASES)
def test_plan_table(
    action: Action,
    unsub: bool,
    new: Status | None,
    record: Status | None,
    reason: str,
    reply: str | None,
) -> None:
    plan = plan_mo(action, unsub, REPLIES)
    assert (plan.new_status, plan.record_status, plan.reason, plan.reply_text) == (
        new,
        record,
        reason,
        reply,
    )


def test_switched_off_reply_still_changes_state() -> None:
    plan = plan_mo(Action.OPT_OUT, False, OFF)
    assert plan.new_status is Status.UNSUBSCRIBED and plan.reply_text is None
    assert plan_mo(Action.HELP, False, OFF).writes is False


# What an operator reads in `POST /mo`'s answer: which reply goes out, and
# when none does, why (so "no confirmation" is never a mystery).
EXPLAINED_CASES = [
    (Action.OPT_OUT, False, REPLIES, Action.OPT_OUT, ()),
    (Action.OPT_OUT, True, REPLIES, None,
     ("already unsubscribed: recorded, no second confirmation",)),
    (Action.OPT_OUT, False, OFF, None, ("opt_out reply switched off",)),
    (Action.OPT_IN, True, REPLIES, Action.OPT_IN, ()),
    (Action.OPT_IN, False, REPLIES, None, ("already subscribed: nothing changed",)),
    (Action.OPT_IN, True, OFF, None, ("opt_in reply switched off",)),
    (Action.HELP, False, REPLIES, Action.HELP, ()),
    (Action.HELP, True, OFF, None, ("help reply switched off",)),
    (Action.NONE, False, REPLIES, None, ()),
]


@pytest.mark.parametrize(("action", "unsub", "replies", "reply_action", "notes"),
                         EXPLAINED_CASES)
def test_the_plan_says_which_reply_goes_out_or_why_none(
    action: Action, unsub: bool, replies: Replies, reply_action: Action | None,
    notes: tuple[str, ...],
) -> None:
    plan = plan_mo(action, unsub, replies)
    assert (plan.reply_action, plan.notes) == (reply_action, notes)


# --- through the service ---------------------------------------------------------

TOLL_FREE = "+18005550199"
ALICE = "+14155550100"
M = SmsType.MARKETING


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mo.db"


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[OptOutService]:
    svc = await OptOutService.open(store_url, program=ProgramInfo("Acme", "x"))
    await svc.create_address(TOLL_FREE)
    yield svc
    await svc.close()


async def test_stop_unsubscribes_records_and_queues_one_confirmation(
    service: OptOutService,
) -> None:
    # SMPP-style spellings of both addresses normalise to the same subscriber.
    outcome = await service.handle_mo("18005550199", "4155550100", "Stop.", carrier_ids="m-1")
    assert outcome.handled and outcome.action is Action.OPT_OUT and outcome.keyword == "STOP"
    assert outcome.record is not None
    assert (
        outcome.record.phone_number,
        outcome.record.source,
        outcome.record.raw_text,
        outcome.record.carrier_ids,
    ) == (ALICE, Source.KEYWORD, "Stop.", "m-1")
    assert outcome.reply is not None and outcome.reply.destination_addr == ALICE
    assert outcome.reply.text.startswith("Acme: You are unsubscribed")
    assert not service.decide("app", M, ALICE).allowed

    again = await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    assert again.record is not None and again.record.reason == REASON_REPEATED_OPT_OUT
    assert again.reply is None
    assert len(await service.pending_replies()) == 1  # one confirmation per revocation
    records, _ = await service.list_records(phone_number=ALICE)
    assert [r.reason for r in records] == [REASON_OPT_OUT, REASON_REPEATED_OPT_OUT]


async def test_leading_keyword_opts_out(service: OptOutService) -> None:
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "Stop texting me")
    assert outcome.action is Action.OPT_OUT
    assert not service.decide("app", M, ALICE).allowed


async def test_start_from_subscribed_changes_nothing(service: OptOutService) -> None:
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "START")
    assert outcome.handled and outcome.action is Action.OPT_IN
    assert outcome.record is None and outcome.reply is None
    assert await service.list_records() == ([], None)
    assert await service.pending_replies() == []


async def test_start_after_stop_resubscribes_and_confirms(service: OptOutService) -> None:
    await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "unstop")
    assert outcome.record is not None and outcome.record.status is Status.SUBSCRIBED
    assert outcome.reply is not None and outcome.reply.action is Action.OPT_IN
    assert service.decide("app", M, ALICE).allowed
    assert service.unsubscribed_count() == 0


async def test_help_replies_even_to_a_never_subscribed_number(service: OptOutService) -> None:
    outcome = await service.handle_mo(TOLL_FREE, "+12125550100", "help")
    assert outcome.action is Action.HELP and outcome.record is None
    assert outcome.reply is not None and outcome.reply.text.startswith("Acme: Help at x.")
    assert await service.list_records() == ([], None)


async def test_other_text_does_nothing(service: OptOutService) -> None:
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "we must stop this")
    assert outcome.handled and outcome.action is Action.NONE
    assert service.decide("app", M, ALICE).allowed


async def test_unknown_address_and_out_of_scope_sender_store_nothing(
    service: OptOutService,
) -> None:
    unknown = await service.handle_mo("+18885550100", ALICE, "STOP")
    assert not unknown.handled and unknown.action is Action.OPT_OUT
    jamaica = await service.handle_mo(TOLL_FREE, "+18765550100", "STOP")
    assert not jamaica.handled and jamaica.action is Action.OPT_OUT
    junk = await service.handle_mo(TOLL_FREE, "ACME", "STOP")
    assert not junk.handled
    assert await service.list_records() == ([], None)
    assert await service.pending_replies() == []
    assert service.unsubscribed_count() == 0


async def test_switched_off_confirmation(service: OptOutService) -> None:
    await service.set_replies(TOLL_FREE, Replies(opt_out=None, opt_in="hi", help=None))
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    assert outcome.record is not None and outcome.reply is None
    assert not service.decide("app", M, ALICE).allowed


async def test_custom_keywords_apply(service: OptOutService) -> None:
    from rules.model import Keywords, MatchMode

    await service.set_keywords(
        TOLL_FREE,
        Keywords(opt_out=("HALT",), opt_in=("GO",), help=("SOS",), match=MatchMode.EXACT),
        allow_noncompliant=True,
    )
    assert (await service.handle_mo(TOLL_FREE, ALICE, "STOP")).action is Action.NONE
    assert (await service.handle_mo(TOLL_FREE, ALICE, "halt now")).action is Action.NONE
    assert (await service.handle_mo(TOLL_FREE, ALICE, "halt")).action is Action.OPT_OUT


FAIL_OUTBOX = {
    "sqlite": [
        "CREATE TRIGGER fail_outbox BEFORE INSERT ON reply_outbox "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$",
        "CREATE TRIGGER fail_outbox BEFORE INSERT ON reply_outbox "
        "FOR EACH ROW EXECUTE FUNCTION fail()",
    ],
}
UNFAIL_OUTBOX = {
    "sqlite": ["DROP TRIGGER fail_outbox"],
    "postgresql": ["DROP TRIGGER fail_outbox ON reply_outbox"],
}


async def test_store_failure_mid_transaction_changes_nothing(
    service: OptOutService, store_url: str
) -> None:
    # Another process makes the last write of the MO (the outbox row) fail,
    # after the unsubscription and the record were written.
    backend = backend_for(store_url)
    await execute_raw(store_url, *FAIL_OUTBOX[backend])
    with pytest.raises(StoreUnavailable, match="disk on fire"):
        await service.handle_mo(TOLL_FREE, ALICE, "STOP")

    assert service.decide("app", M, ALICE).allowed  # the index did not change
    assert service.unsubscribed_count() == 0
    assert await service.list_unsubscribed() == ([], None)
    assert await service.list_records() == ([], None)
    assert await service.pending_replies() == []

    await execute_raw(store_url, *UNFAIL_OUTBOX[backend])
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "STOP")  # the carrier redelivers
    assert outcome.reply is not None  # and the confirmation is owed exactly once
    assert not service.decide("app", M, ALICE).allowed


async def test_closed_store_raises_and_decisions_keep_working(service: OptOutService) -> None:
    await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    await service.close()
    with pytest.raises(StoreUnavailable):
        await service.handle_mo(TOLL_FREE, "+12125550100", "STOP")
    assert service.decide("app", M, "+12125550100").allowed
    assert not service.decide("app", M, ALICE).allowed  # memory still serves sends


async def test_write_lock_held_elsewhere_is_store_unavailable(db_path: Path) -> None:
    svc = await OptOutService.open(f"sqlite:///{db_path}")
    await svc.create_address(TOLL_FREE)
    await svc.close()
    svc2 = await OptOutService.open(f"sqlite:///{db_path}", busy_timeout_ms=50)
    try:
        # Another process holds the write lock for longer than busy_timeout.
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable):
                await svc2.handle_mo(TOLL_FREE, ALICE, "STOP")
            assert svc2.decide("app", M, ALICE).allowed
        finally:
            other.execute("ROLLBACK")
            other.close()
        await svc2.handle_mo(TOLL_FREE, ALICE, "STOP")
        assert not svc2.decide("app", M, ALICE).allowed
    finally:
        await svc2.close()


async def test_deleted_database_file_refuses_to_acknowledge(db_path: Path) -> None:
    service = await OptOutService.open(f"sqlite:///{db_path}")
    await service.create_address(TOLL_FREE)
    # SQLite would happily commit into the unlinked file; those STOPs would
    # be gone at the next start, so they must not be acknowledged.
    db_path.unlink()
    with pytest.raises(StoreUnavailable, match="removed or replaced"):
        await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    assert service.decide("app", M, ALICE).allowed
    assert not await service.ping()
    await service.close()


async def test_concurrent_stops_confirm_once(service: OptOutService) -> None:
    # A carrier redelivering in parallel, over several binds.
    outcomes = await asyncio.gather(
        *(service.handle_mo(TOLL_FREE, ALICE, "STOP") for _ in range(10))
    )
    assert sum(o.reply is not None for o in outcomes) == 1
    assert sum(o.record is not None for o in outcomes) == 10
    assert len(await service.pending_replies()) == 1
    assert service.unsubscribed_count() == 1


async def test_huge_mo_text_is_bounded_in_the_record(service: OptOutService) -> None:
    outcome = await service.handle_mo(TOLL_FREE, ALICE, "STOP " + "x" * 100_000)
    assert outcome.record is not None and outcome.record.raw_text is not None
    records, _ = await service.list_records()
    assert records[0].raw_text is not None and len(records[0].raw_text) <= 4096


async def test_new_addresses_get_the_configured_match_mode(store_url: str) -> None:
    svc = await OptOutService.open(store_url, mo_match_default="exact")
    try:
        await svc.create_address("+18885550100")
        assert (await svc.get_keywords("+18885550100")).match == "exact"
        outcome = await svc.handle_mo("+18885550100", ALICE, "Stop texting me")
        assert outcome.action is Action.NONE
    finally:
        await svc.close()
