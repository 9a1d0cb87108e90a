"""OptOutService admin operations: addresses, keywords, replies, rules,
unsubscribing by hand, listings with cursors, the history, the outbox --
on both store backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rules.keywords import DEFAULT_KEYWORDS
from rules.model import (
    ALL_SMS_TYPES,
    Conflict,
    InvalidNumber,
    InvalidValue,
    Keywords,
    MatchMode,
    NotFound,
    OutOfScope,
    Replies,
    SmsType,
    Source,
    Status,
)
from rules.service import OptOutService, ProgramInfo

TOLL_FREE = "+18005550199"
SHORT = "898211"
ALICE = "+14155550100"
BOB = "+16045550100"  # Vancouver


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_url(store_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return store_url


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[OptOutService]:
    svc = await OptOutService.open(db_url, program=ProgramInfo("Acme", "acme.example/help"))
    yield svc
    await svc.close()


# --- inbound addresses ---------------------------------------------------------


async def test_new_address_gets_defaults(service: OptOutService) -> None:
    created = await service.create_address("1 (800) 555-0199", "toll-free line")
    assert created.address == TOLL_FREE
    assert created.description == "toll-free line"
    assert created.keywords == DEFAULT_KEYWORDS
    assert created.default_rule == ALL_SMS_TYPES
    assert created.replies.opt_out is not None and created.replies.opt_out.startswith("Acme:")
    assert [a.address for a in await service.list_addresses()] == [TOLL_FREE]
    assert (await service.get_address("8005550199")).description == "toll-free line"


async def test_address_conflicts_and_validation(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    with pytest.raises(Conflict):
        await service.create_address("18005550199")
    with pytest.raises(OutOfScope):
        await service.create_address("+18765550100")  # Jamaica
    with pytest.raises(OutOfScope):
        await service.create_address("+442079460958")
    with pytest.raises(InvalidNumber):
        await service.create_address("hello")
    with pytest.raises(NotFound):
        await service.get_address("+18885550100")
    short = await service.create_address(SHORT, "short code")
    assert short.address == SHORT


async def test_edit_and_delete_address(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE, "old")
    assert (await service.update_address(TOLL_FREE, "new")).description == "new"
    await service.delete_address(TOLL_FREE)
    assert await service.list_addresses() == []
    with pytest.raises(NotFound):
        await service.delete_address(TOLL_FREE)
    with pytest.raises(NotFound):
        await service.update_address(TOLL_FREE, "x")


async def test_addresses_survive_a_restart(db_url: str) -> None:
    svc = await OptOutService.open(db_url)
    await svc.create_address(TOLL_FREE, "line")
    await svc.create_rule(TOLL_FREE, "app1", [SmsType.MARKETING])
    await svc.set_default_rule(TOLL_FREE, [SmsType.MARKETING, SmsType.NOTIFICATION])
    await svc.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
    await svc.close()

    again = await OptOutService.open(db_url)
    try:
        address = await again.get_address(TOLL_FREE)
        assert address.description == "line"
        assert [(r.app_id, r.sms_types) for r in address.rules] == [
            ("app1", frozenset({SmsType.MARKETING}))
        ]
        assert address.default_rule == {SmsType.MARKETING, SmsType.NOTIFICATION}
        assert again.unsubscribed_count() == 1
        assert not again.decide("app2", SmsType.NOTIFICATION, ALICE).allowed
    finally:
        await again.close()


# --- keywords and replies --------------------------------------------------------


async def test_keywords_round_trip_and_validation(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    kw = Keywords(
        opt_out=("STOP", " Halt "), opt_in=("START",), help=("HELP",), match=MatchMode.EXACT
    )
    saved = await service.set_keywords(TOLL_FREE, kw, allow_noncompliant=True)
    assert saved.opt_out == ("STOP", "Halt")
    assert await service.get_keywords(TOLL_FREE) == saved
    with pytest.raises(InvalidValue):
        await service.set_keywords(TOLL_FREE, Keywords(opt_out=(), opt_in=(), help=()))
    assert await service.get_keywords(TOLL_FREE) == saved  # unchanged by the bad edit


async def test_replies_edit_switch_off_and_default(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    defaults = await service.get_replies(TOLL_FREE)
    assert defaults.help == (
        "Acme: Help at acme.example/help. Msg&data rates may apply. Reply STOP to unsubscribe."
    )
    edited = await service.set_replies(
        TOLL_FREE, Replies(opt_out="  Bye from Acme.  ", opt_in=None, help=defaults.help)
    )
    assert edited == Replies(opt_out="Bye from Acme.", opt_in=None, help=defaults.help)
    assert await service.get_replies(TOLL_FREE) == edited
    with pytest.raises(InvalidValue):
        await service.set_replies(TOLL_FREE, Replies(opt_out="", opt_in=None, help=None))


async def test_default_texts_follow_the_configured_program(db_url: str) -> None:
    svc = await OptOutService.open(db_url, program=ProgramInfo("Old", "x"))
    await svc.create_address(TOLL_FREE)
    await svc.close()
    svc = await OptOutService.open(db_url, program=ProgramInfo("New", "y"))
    try:
        replies = await svc.get_replies(TOLL_FREE)
        assert replies.opt_out is not None and replies.opt_out.startswith("New:")
    finally:
        await svc.close()


# --- blocking rules --------------------------------------------------------------


async def test_rule_crud(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    rule = await service.create_rule(TOLL_FREE, "app1", ["marketing"])  # type: ignore[list-item]
    assert rule.sms_types == {SmsType.MARKETING}
    with pytest.raises(Conflict):
        await service.create_rule(TOLL_FREE, "app1", [SmsType.NOTIFICATION])
    replaced = await service.replace_rule(TOLL_FREE, "app1", [])
    assert replaced.sms_types == frozenset()
    with pytest.raises(NotFound):
        await service.replace_rule(TOLL_FREE, "app2", [SmsType.MARKETING])
    with pytest.raises(InvalidValue):
        await service.create_rule(TOLL_FREE, "app2", ["spam"])  # type: ignore[list-item]
    with pytest.raises(InvalidValue):
        await service.create_rule(TOLL_FREE, "  ", [SmsType.MARKETING])
    assert [r.app_id for r in await service.list_rules(TOLL_FREE)] == ["app1"]
    await service.delete_rule(TOLL_FREE, "app1")
    with pytest.raises(NotFound):
        await service.delete_rule(TOLL_FREE, "app1")
    assert await service.list_rules(TOLL_FREE) == []
    assert await service.set_default_rule(TOLL_FREE, [SmsType.VERIFICATION]) == {
        SmsType.VERIFICATION
    }
    assert await service.get_default_rule(TOLL_FREE) == {SmsType.VERIFICATION}


# --- unsubscribing by hand --------------------------------------------------------


async def test_manual_unsubscribe_and_resubscribe_are_recorded(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    record = await service.unsubscribe(
        "415-555-0100", TOLL_FREE, source=Source.CONSOLE, actor="ops", reason="asked by phone"
    )
    assert (record.phone_number, record.status, record.source, record.actor, record.reason) == (
        ALICE,
        Status.UNSUBSCRIBED,
        Source.CONSOLE,
        "ops",
        "asked by phone",
    )
    with pytest.raises(Conflict):
        await service.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
    assert service.unsubscribed_count() == 1

    back = await service.resubscribe(
        ALICE, TOLL_FREE, source=Source.API, actor="ops", reason="consent on the web form"
    )
    assert back.status is Status.SUBSCRIBED and back.reason == "consent on the web form"
    with pytest.raises(NotFound):
        await service.resubscribe(ALICE, TOLL_FREE, source=Source.API, reason="again")
    assert service.unsubscribed_count() == 0
    assert service.decide("app", SmsType.MARKETING, ALICE).allowed

    records, _ = await service.list_records(phone_number=ALICE)
    assert [r.status for r in records] == [Status.UNSUBSCRIBED, Status.SUBSCRIBED]
    assert await service.pending_replies() == []  # manual changes send no SMS


async def test_manual_unsubscribe_refuses_bad_input(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    with pytest.raises(OutOfScope):
        await service.unsubscribe("+18765550100", TOLL_FREE, source=Source.API)
    with pytest.raises(InvalidNumber):
        await service.unsubscribe("12", TOLL_FREE, source=Source.API)
    with pytest.raises(NotFound):
        await service.unsubscribe(ALICE, "+18885550100", source=Source.API)


# --- listings --------------------------------------------------------------------


async def test_unsubscribed_pages_are_stable_under_concurrent_inserts(
    service: OptOutService,
) -> None:
    await service.create_address(TOLL_FREE)
    await service.create_address(SHORT)
    numbers_ = [f"+1415555{i:04d}" for i in range(10, 40, 2)]  # 15 numbers
    for n in numbers_:
        await service.unsubscribe(n, TOLL_FREE, source=Source.API)
    await service.unsubscribe(numbers_[0], SHORT, source=Source.API)

    seen: list[tuple[str, str]] = []
    page, cursor = await service.list_unsubscribed(limit=4)
    seen += [(u.phone_number, u.inbound_address) for u in page]
    # Someone adds numbers that sort before and after the cursor.
    await service.unsubscribe("+14155550001", TOLL_FREE, source=Source.API)
    await service.unsubscribe("+14155559999", TOLL_FREE, source=Source.API)
    while cursor is not None:
        page, cursor = await service.list_unsubscribed(limit=4, cursor=cursor)
        seen += [(u.phone_number, u.inbound_address) for u in page]

    assert len(seen) == len(set(seen))  # nothing twice
    expected = {(n, TOLL_FREE) for n in numbers_} | {(numbers_[0], SHORT)}
    assert expected <= set(seen)
    assert ("+14155559999", TOLL_FREE) in seen  # after the cursor: seen
    assert ("+14155550001", TOLL_FREE) not in seen  # before the cursor: not repeated

    by_address, _ = await service.list_unsubscribed(inbound_address=SHORT)
    assert [(u.phone_number, u.source) for u in by_address] == [(numbers_[0], Source.API)]
    by_number, _ = await service.list_unsubscribed(phone_number="(415) 555-0010")
    assert {u.inbound_address for u in by_number} == {TOLL_FREE, SHORT}
    assert await service.list_unsubscribed(inbound_address="+18885550100") == ([], None)


async def test_bad_cursor_and_limit_are_invalid(service: OptOutService) -> None:
    with pytest.raises(InvalidValue):
        await service.list_unsubscribed(cursor="garbage!")
    with pytest.raises(InvalidValue):
        await service.list_records(limit=0)
    with pytest.raises(InvalidValue):
        await service.list_records(limit=100_000)
    _, cursor = await service.list_records()
    assert cursor is None
    # A records cursor is not an unsubscribed cursor.
    await service.create_address(TOLL_FREE)
    for n in (ALICE, BOB):
        await service.unsubscribe(n, TOLL_FREE, source=Source.API)
    _, records_cursor = await service.list_records(limit=1)
    assert records_cursor is not None
    with pytest.raises(InvalidValue):
        await service.list_unsubscribed(cursor=records_cursor)


async def test_records_filters_and_pages(db_url: str) -> None:
    clock = Clock(1000.0)
    svc = await OptOutService.open(db_url, clock=clock)
    try:
        await svc.create_address(TOLL_FREE)
        await svc.create_address(SHORT)
        for i, (n, a) in enumerate([(ALICE, TOLL_FREE), (BOB, TOLL_FREE), (ALICE, SHORT)]):
            clock.now = 1000.0 + i * 100
            await svc.unsubscribe(n, a, source=Source.API)
        clock.now = 1300.0
        await svc.resubscribe(ALICE, TOLL_FREE, source=Source.API, reason="consent")

        alice, _ = await svc.list_records(phone_number="4155550100")
        assert [(r.inbound_address, r.status) for r in alice] == [
            (TOLL_FREE, Status.UNSUBSCRIBED),
            (SHORT, Status.UNSUBSCRIBED),
            (TOLL_FREE, Status.SUBSCRIBED),
        ]
        window, _ = await svc.list_records(since=1100.0, until=1300.0)
        assert [r.at for r in window] == [1100.0, 1200.0]  # since inclusive, until exclusive
        at_short, _ = await svc.list_records(inbound_address=SHORT)
        assert len(at_short) == 1

        pages: list[int] = []
        cursor = None
        while True:
            page, cursor = await svc.list_records(limit=3, cursor=cursor)
            pages.append(len(page))
            if cursor is None:
                break
        assert pages == [3, 1]
        newest, _ = await svc.list_records(limit=2, newest_first=True)
        assert [r.at for r in newest] == [1300.0, 1200.0]
        assert [r.at async for r in svc.iter_records(phone_number=ALICE)] == [
            1000.0,
            1200.0,
            1300.0,
        ]
    finally:
        await svc.close()


async def test_deleting_an_address_keeps_every_record(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    await service.unsubscribe(BOB, TOLL_FREE, source=Source.API)
    before, _ = await service.list_records()

    released = await service.delete_address(TOLL_FREE, actor="ops", force=True)

    after, _ = await service.list_records(inbound_address=TOLL_FREE)
    assert released == 2
    assert after[:2] == before and len(before) == 2
    # each released number got its own record
    assert sorted((r.phone_number, r.status, r.reason, r.actor) for r in after[2:]) == [
        (n, Status.SUBSCRIBED, "inbound address deleted", "ops") for n in sorted([ALICE, BOB])
    ]
    assert service.unsubscribed_count() == 0
    assert service.decide("app", SmsType.MARKETING, ALICE).allowed
    assert await service.list_unsubscribed() == ([], None)
    # Re-creating the address starts clean (its old unsubscriptions are gone).
    await service.create_address(TOLL_FREE)
    assert service.decide("app", SmsType.MARKETING, BOB).allowed


async def test_many_addresses_reuse_ids_after_delete(service: OptOutService) -> None:
    for i in range(3):
        await service.create_address(f"+1800555{i:04d}")
    await service.delete_address("+18005550001")
    await service.create_address("+18005550009")
    await service.unsubscribe(ALICE, "+18005550009", source=Source.API)
    decision = service.decide("app", SmsType.MARKETING, ALICE)
    assert [b.inbound_address for b in decision.blocked_by] == ["+18005550009"]


# --- the reply outbox -----------------------------------------------------------


async def test_outbox_pending_and_mark_sent(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    woken: list[str] = []
    remove = service.add_reply_listener(lambda: woken.append("x"))
    first = await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    second = await service.handle_mo(TOLL_FREE, BOB, "HELP")
    assert woken == ["x", "x"]
    assert service.reply_queued.is_set()
    assert first.reply is not None and second.reply is not None

    pending = await service.pending_replies()
    assert [r.id for r in pending] == [first.reply.id, second.reply.id]  # oldest first
    assert pending[0].source_addr == TOLL_FREE and pending[0].destination_addr == ALICE

    await service.mark_reply_sent(first.reply.id, "abc123")
    await service.mark_reply_sent(first.reply.id, "abc123")  # idempotent
    assert [r.id for r in await service.pending_replies()] == [second.reply.id]
    with pytest.raises(NotFound):
        await service.mark_reply_sent(9999, None)
    records, _ = await service.list_records(phone_number=ALICE)
    assert records[0].reply_sent

    remove()
    await service.handle_mo(TOLL_FREE, BOB, "HELP")
    assert woken == ["x", "x"]


async def test_reply_queued_event_wakes_a_waiting_relay(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    service.reply_queued.clear()
    waiter = asyncio.create_task(service.reply_queued.wait())
    await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    await asyncio.wait_for(waiter, timeout=5)


async def test_ping_and_close(db_url: str) -> None:
    svc = await OptOutService.open(db_url)
    assert await svc.ping()
    await svc.close()
    assert not await svc.ping()


async def test_cancelled_caller_does_not_leave_memory_behind_disk(db_url: str) -> None:
    svc = await OptOutService.open(db_url)
    try:
        await svc.create_address(TOLL_FREE)
        task = asyncio.create_task(svc.handle_mo(TOLL_FREE, ALICE, "STOP"))
        await asyncio.sleep(0)  # let it start its transaction
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await svc.close()  # waits for the shielded write to finish
    finally:
        await svc.close()
    again = await OptOutService.open(db_url)
    try:
        on_disk, _ = await again.list_unsubscribed()
        # Whatever happened, the index loaded from disk agrees with the rows.
        assert again.unsubscribed_count() == len(on_disk) == 1
    finally:
        await again.close()


async def test_bad_source_is_invalid(service: OptOutService) -> None:
    await service.create_address(TOLL_FREE)
    with pytest.raises(InvalidValue):
        await service.unsubscribe(ALICE, TOLL_FREE, source="carrier")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "program",
    [ProgramInfo(), ProgramInfo("Acme Pharmacy Alerts", "help@acme-pharmacy.example")],
)
def test_default_replies_fit_one_sms(program: ProgramInfo) -> None:
    from rules.replies import default_replies, fits_one_sms

    replies = default_replies(program)
    for text in (replies.opt_out, replies.opt_in, replies.help):
        assert text is not None and fits_one_sms(text), text


def test_gsm_length_counts_extension_characters_twice() -> None:
    from rules.replies import fits_one_sms, gsm7_length

    assert gsm7_length("Reply STOP") == 10
    assert gsm7_length("{€}") == 6
    assert gsm7_length("ARRÊT") is None  # needs UCS-2
    assert fits_one_sms("x" * 160) and not fits_one_sms("x" * 161)
    assert fits_one_sms("Ê" * 70) and not fits_one_sms("Ê" * 71)
