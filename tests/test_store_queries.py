"""The store's queries, on both backends, at their edges: every filter of the
record, inbound-log and audit listings with its inclusive/exclusive bounds
and keyset cursors, the orders of the unsubscription list, the overview
figures, the outbox claims and the pruning rules.

The service and the HTTP API build on these; a bound that slips by one row
shows up there as a page that repeats or skips an entry, an opt-out
confirmation counted late, or an open near-miss pruned unread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rules.keywords import DEFAULT_KEYWORDS
from rules.mo import REASON_REPEATED_OPT_OUT
from rules.model import (
    ALL_SMS_TYPES,
    Action,
    Keywords,
    MatchMode,
    Review,
    ReviewDecision,
    SmsType,
    Source,
    Status,
)
from rules.replies import ReplyMode, ReplySetting, ReplySettings
from rules.store import InboundFilter, RecordFilter, Store, UnsubRow, open_store, pack
from rules.store.base import AddressRow, RuleRow, address_from, address_values

ALICE = "+14155550100"
BOB = "+14155550101"
LINE = "+18005550199"
OTHER_LINE = "+18005550198"
DAY = 86_400.0
T0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    yield s
    await s.close()


def address(address_id: int, number: str) -> AddressRow:
    return AddressRow(address_id, number, f"line {address_id}", DEFAULT_KEYWORDS,
                      ReplySettings(), ALL_SMS_TYPES, T0)


def record(phone: str, at: float, status: Status = Status.UNSUBSCRIBED,
           source: Source = Source.KEYWORD, reason: str = "texted STOP",
           line: str = LINE) -> tuple[str, str, str, str, float, str, None, None, None, None]:
    return (phone, line, status.value, source.value, at, reason, None, None, None, None)


# --- records ------------------------------------------------------------------------------


async def test_records_filter_by_number_address_and_half_open_time_range(store: Store) -> None:
    async with store.transaction() as tx:
        ids = [await tx.insert_record(record(ALICE, T0)),
               await tx.insert_record(record(BOB, T0 + 10)),
               await tx.insert_record(record(ALICE, T0 + 20, line=OTHER_LINE)),
               await tx.insert_record(record(ALICE, T0 + 30, Status.SUBSCRIBED))]

    async def listed(flt: RecordFilter, **kw: object) -> list[int]:
        async with store.reading() as tx:
            return [r.id for r in await tx.records(flt, **kw)]  # type: ignore[arg-type]

    everything = RecordFilter()
    assert await listed(everything, after=None, limit=10) == ids
    assert await listed(RecordFilter(phone_number=ALICE), after=None, limit=10) \
        == [ids[0], ids[2], ids[3]]
    assert await listed(RecordFilter(inbound_address=OTHER_LINE), after=None, limit=10) \
        == [ids[2]]
    # since is inclusive, until exclusive
    assert await listed(RecordFilter(since=T0 + 10, until=T0 + 30), after=None, limit=10) \
        == [ids[1], ids[2]]
    # the keyset cursor, oldest first and newest first
    assert await listed(everything, after=ids[1], limit=10) == [ids[2], ids[3]]
    assert await listed(everything, after=None, limit=2) == ids[:2]
    assert await listed(everything, after=None, limit=2, newest_first=True) \
        == [ids[3], ids[2]]
    assert await listed(everything, after=ids[2], limit=10, newest_first=True) \
        == [ids[1], ids[0]]
    async with store.reading() as tx:
        (first,) = await tx.records(RecordFilter(phone_number=BOB), after=None, limit=1)
    assert (first.phone_number, first.inbound_address, first.status, first.source, first.at,
            first.reason) == (BOB, LINE, Status.UNSUBSCRIBED, Source.KEYWORD, T0 + 10,
                              "texted STOP")
    assert not first.reply_sent and first.reply_sent_at is None


async def test_a_record_reads_back_with_its_mo_and_carrier_ids(store: Store) -> None:
    async with store.transaction() as tx:
        rid = await tx.insert_record((ALICE, LINE, "unsubscribed", "keyword", T0, "texted STOP",
                                      "ops", "Stop please", "STOP", "system_id=c1 seq=4"))
        reply = await tx.insert_reply(record_id=rid, source_addr=LINE, destination_addr=ALICE,
                                      text="bye", action=Action.OPT_OUT, created_at=T0)
        await tx.mark_reply_sent(reply, None, T0 + 1)  # the carrier gave no message id
        (rec,) = await tx.records(RecordFilter(), after=None, limit=5)
    assert (rec.actor, rec.raw_text, rec.keyword, rec.carrier_ids) == (
        "ops", "Stop please", "STOP", "system_id=c1 seq=4")
    assert (rec.reply_sent, rec.reply_sent_at, rec.reply_message_id) == (True, T0 + 1, None)


async def test_a_record_shows_when_its_confirmation_was_sent(store: Store) -> None:
    async with store.transaction() as tx:
        rid = await tx.insert_record(record(ALICE, T0))
        reply = await tx.insert_reply(record_id=rid, source_addr=LINE, destination_addr=ALICE,
                                      text="You are unsubscribed", action=Action.OPT_OUT,
                                      created_at=T0)
        assert await tx.mark_reply_sent(reply, "carrier-7", T0 + 2)
        assert not await tx.mark_reply_sent(reply, "carrier-8", T0 + 3)  # once only
        assert await tx.reply_created_at(reply) == T0
        assert await tx.reply_created_at(reply + 1) is None
        (rec,) = await tx.records(RecordFilter(), after=None, limit=5)
    assert (rec.reply_sent, rec.reply_sent_at, rec.reply_message_id) == (
        True, T0 + 2, "carrier-7")


async def test_the_reason_shown_is_the_latest_opt_outs(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_record(record(ALICE, T0, reason="texted STOP"))
        await tx.insert_record(record(ALICE, T0 + 1, Status.SUBSCRIBED, reason="texted START"))
        await tx.insert_record(record(ALICE, T0 + 2, source=Source.API, reason="asked by phone"))
        await tx.insert_record(record(BOB, T0, line=OTHER_LINE, reason="imported"))
        reasons = await tx.unsubscribe_reasons([(ALICE, LINE), (BOB, LINE), (BOB, OTHER_LINE)])
    assert reasons == {(ALICE, LINE): "asked by phone", (BOB, OTHER_LINE): "imported"}


# --- unsubscriptions ----------------------------------------------------------------------


async def test_unsubscriptions_page_by_number_and_by_time_both_ways(store: Store) -> None:
    rows = [UnsubRow(pack(key, aid), aid, key, since, Source.API) for key, aid, since in (
        (100, 1, T0 + 5), (100, 2, T0 + 1), (200, 1, T0 + 5), (300, 2, T0 + 3))]
    async with store.transaction() as tx:
        await tx.insert_address(address(1, LINE))
        await tx.insert_address(address(2, OTHER_LINE))
        await tx.insert_unsubscriptions(rows)
    a, b, c, d = rows

    async def page(**kw: object) -> list[UnsubRow]:
        args: dict[str, object] = {"address_id": None, "packed_range": None, "after": None,
                                   "limit": 10, **kw}
        async with store.reading() as tx:
            return await tx.unsubscriptions(**args)  # type: ignore[arg-type]

    assert await page() == [a, b, c, d]
    assert await page(address_id=2) == [b, d]
    assert await page(address_id=2, after=b.packed) == [d]
    assert await page(address_id=1, order="oldest", after=a.packed, after_since=a.since) == [c]
    assert await page(after=b.packed) == [c, d]
    assert await page(limit=1) == [a]
    # [lo, hi): a number's rows, not the next number's
    assert await page(packed_range=(pack(100, 0), pack(200, 0))) == [a, b]
    assert await page(packed_range=(pack(100, 2), pack(200, 1))) == [b]
    assert await page(packed_range=(pack(100, 2), pack(200, 2))) == [b, c]
    # newest first, ties by packed (descending); the cursor is (since, packed)
    assert await page(order="newest") == [c, a, d, b]
    assert await page(order="newest", after=a.packed, after_since=a.since) == [d, b]
    assert await page(order="newest", after=c.packed, after_since=c.since) == [a, d, b]
    assert await page(order="oldest") == [b, d, a, c]
    assert await page(order="oldest", after=a.packed, after_since=a.since) == [c]
    assert await page(order="oldest", after=d.packed, after_since=d.since) == [a, c]
    assert await page(order="oldest", after=d.packed) == [b, d, a, c]  # half a cursor: none
    async with store.transaction() as tx:
        assert await tx.unsubscription(c.packed) == c
        assert await tx.unsubscription(pack(999, 1)) is None
        assert await tx.unsubscribed_keys(1) == [100, 200]
        assert await tx.count_unsubscribed(2) == 2
        assert await tx.delete_unsubscription(c.packed)
        assert not await tx.delete_unsubscription(c.packed)
        assert await tx.delete_address(2) == 2  # its opt-outs go with it
        assert await tx.addresses() == [address(1, LINE)]
    assert await page() == [a]


async def test_rules_are_listed_updated_and_deleted_per_app(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_address(address(1, LINE))
        await tx.insert_rule(RuleRow(1, "app-b", frozenset({SmsType.MARKETING})))
        await tx.insert_rule(RuleRow(1, "app-a", frozenset()))
        assert await tx.update_rule(RuleRow(1, "app-a", frozenset({SmsType.NOTIFICATION})))
        assert not await tx.update_rule(RuleRow(1, "app-z", frozenset()))
        assert await tx.rules() == [RuleRow(1, "app-a", frozenset({SmsType.NOTIFICATION})),
                                    RuleRow(1, "app-b", frozenset({SmsType.MARKETING}))]
        assert await tx.delete_rule(1, "app-b")
        assert not await tx.delete_rule(1, "app-b")
        assert await tx.address(1) == address(1, LINE)
        assert await tx.address(2) is None


async def test_an_address_reads_back_as_written_and_as_updated(store: Store) -> None:
    written = AddressRow(
        7, LINE, "toll-free", Keywords(("QUIT", "END"), ("UNSTOP",), ("INFO",), MatchMode.EXACT),
        ReplySettings(opt_out=ReplySetting(ReplyMode.CUSTOM, "Bye from Acme"),
                      help=ReplySetting(ReplyMode.OFF)),
        frozenset({SmsType.MARKETING, SmsType.VERIFICATION}), T0 + 0.5, ("stahp", "no more"))
    updated = AddressRow(
        7, LINE, "renamed", Keywords(("CANCEL",), ("YES",), ("AIDE", "HELP")),
        ReplySettings(opt_in=ReplySetting(ReplyMode.OFF)), frozenset(), T0 + 0.5, ())
    async with store.transaction() as tx:
        await tx.insert_address(written)
        assert await tx.address(7) == written
        await tx.update_address(updated)
    async with store.reading() as tx:
        assert await tx.addresses() == [updated]


def test_an_address_change_written_before_near_miss_phrases_still_reads() -> None:
    # the feed keeps changes an older version wrote, with eight values
    row = address(3, LINE)
    assert address_from(address_values(row)[:8]) == row
    with_phrases = AddressRow(3, LINE, "x", DEFAULT_KEYWORDS, ReplySettings(), ALL_SMS_TYPES,
                              T0, ("stahp",))
    assert address_from(address_values(with_phrases)) == with_phrases


# --- the inbound message log ----------------------------------------------------------------


async def test_the_inbound_log_filters_on_every_field(store: Store) -> None:
    rows = [(T0, ALICE, LINE, "STOP", "opt_out", "STOP", False),
            (T0 + 10, BOB, LINE, "please stop", "none", None, True),
            (T0 + 20, ALICE, OTHER_LINE, "quit pls", "none", None, True),
            (T0 + 30, BOB, OTHER_LINE, "HELP", "help", "HELP", False)]
    async with store.transaction() as tx:
        ids = [await tx.insert_inbound_message(r) for r in rows]
        assert await tx.review_inbound_message(
            ids[2], Review(ReviewDecision.DISMISSED, "ops", T0 + 40, "not an opt-out"))
        # a review by the system (no actor) with no reason given
        assert await tx.review_inbound_message(ids[3], Review(ReviewDecision.OPT_OUT, None,
                                                              T0 + 50, ""))

    async def listed(before: int | None = None, limit: int = 10, **kw: object) -> list[int]:
        async with store.reading() as tx:
            found = await tx.inbound_messages(InboundFilter(**kw),  # type: ignore[arg-type]
                                              before=before, limit=limit)
        return [m.id for m in found]

    newest_first = ids[::-1]
    assert await listed() == newest_first
    assert await listed(phone_number=ALICE) == [ids[2], ids[0]]
    assert await listed(inbound_address=OTHER_LINE) == [ids[3], ids[2]]
    assert await listed(action="none") == [ids[2], ids[1]]
    assert await listed(near_miss=True) == [ids[2], ids[1]]
    assert await listed(near_miss=False) == [ids[3], ids[0]]
    assert await listed(reviewed=True) == [ids[3], ids[2]]
    assert await listed(reviewed=False) == [ids[1], ids[0]]
    assert await listed(since=T0 + 10, until=T0 + 30) == [ids[2], ids[1]]
    assert await listed(before=ids[2]) == [ids[1], ids[0]]
    assert await listed(limit=1) == [ids[3]]
    assert await listed(phone_number=BOB, near_miss=True, reviewed=False) == [ids[1]]
    async with store.reading() as tx:
        message = await tx.inbound_message(ids[1])
        assert await tx.inbound_message(ids[3] + 1) is None
        reviewed = await tx.inbound_message(ids[2])
        by_nobody = await tx.inbound_message(ids[3])
    assert message is not None and reviewed is not None
    assert (message.at, message.phone_number, message.inbound_address, message.text,
            message.action, message.keyword, message.near_miss, message.review) == (
        T0 + 10, BOB, LINE, "please stop", Action.NONE, None, True, None)
    assert reviewed.review == Review(ReviewDecision.DISMISSED, "ops", T0 + 40,
                                     "not an opt-out")
    assert by_nobody is not None
    assert by_nobody.review == Review(ReviewDecision.OPT_OUT, None, T0 + 50, "")


async def test_open_near_misses_are_counted_and_survive_pruning(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.open_near_misses() == (0, None)
        old_plain = await tx.insert_inbound_message((T0, ALICE, LINE, "hi", "none", None, False))
        old_open = await tx.insert_inbound_message((T0 + 1, BOB, LINE, "stahp", "none", None,
                                                    True))
        old_done = await tx.insert_inbound_message((T0 + 2, ALICE, LINE, "end", "none", None,
                                                    True))
        old_plain2 = await tx.insert_inbound_message((T0 + 3, BOB, LINE, "ok", "none", None,
                                                      False))
        new = await tx.insert_inbound_message((T0 + 10, BOB, LINE, "yo", "none", None, False))
        await tx.review_inbound_message(old_done, Review(ReviewDecision.OPT_OUT, "ops",
                                                         T0 + 5, ""))
        assert not await tx.review_inbound_message(old_done, Review(
            ReviewDecision.DISMISSED, "ops", T0 + 6, "again"))  # reviewed once only
        assert await tx.open_near_misses() == (1, T0 + 1)
        # the oldest go first, a batch at a time; up to `before`, exclusive
        assert await tx.prune_inbound_messages(T0 + 3, 1) == 1
        left = {m.id for m in await tx.inbound_messages(InboundFilter(), before=None, limit=9)}
        assert left == {old_open, old_done, old_plain2, new}
        assert await tx.prune_inbound_messages(T0 + 3, 10) == 1
        assert await tx.prune_inbound_messages(T0 + 10, 10) == 1
        left = {m.id for m in await tx.inbound_messages(InboundFilter(), before=None, limit=9)}
    assert left == {old_open, new}
    assert old_plain not in left


# --- the audit log ----------------------------------------------------------------------------


async def test_the_audit_log_filters_by_actor_and_half_open_time_range(store: Store) -> None:
    async with store.transaction() as tx:
        ids = [await tx.insert_audit(at=T0 + i * 10, actor=actor, action="address.update",
                                     target=LINE, before={"d": i}, after=None)
               for i, actor in enumerate(["ana", "ben", "ana", None])]

    async def listed(actor: str | None = None, since: float | None = None,
                     until: float | None = None, before: int | None = None,
                     limit: int = 10) -> list[int]:
        async with store.reading() as tx:
            found = await tx.audit_entries(actor=actor, since=since, until=until,
                                           before=before, limit=limit)
        return [e.id for e in found]

    assert await listed() == ids[::-1]
    assert await listed(actor="ana") == [ids[2], ids[0]]
    assert await listed(since=T0 + 10, until=T0 + 30) == [ids[2], ids[1]]
    assert await listed(before=ids[2]) == [ids[1], ids[0]]
    assert await listed(limit=2) == [ids[3], ids[2]]
    async with store.reading() as tx:
        (entry,) = await tx.audit_entries(actor="ben", since=None, until=None, before=None,
                                          limit=1)
    assert (entry.at, entry.actor, entry.action, entry.target, entry.before, entry.after) == (
        T0 + 10, "ben", "address.update", LINE, {"d": 1}, None)


# --- overview figures -------------------------------------------------------------------------


async def test_daily_changes_count_real_changes_per_utc_day(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_record(record(ALICE, T0 - 1))  # before the window
        await tx.insert_record(record(ALICE, T0))
        await tx.insert_record(record(BOB, T0 + DAY - 1))
        await tx.insert_record(record(BOB, T0 + 5, reason=REASON_REPEATED_OPT_OUT))
        await tx.insert_record(record(BOB, T0 + 6, source=Source.API,
                                      reason=REASON_REPEATED_OPT_OUT))
        await tx.insert_record(record(ALICE, T0 + DAY, Status.SUBSCRIBED))
        days = await tx.daily_changes(T0)
    assert sorted(days) == [("2023-11-15", "unsubscribed", 3),
                            ("2023-11-16", "subscribed", 1)]


async def test_reply_latencies_count_sent_opt_out_confirmations_within_the_bound(
        store: Store) -> None:
    async with store.transaction() as tx:
        async def reply(created: float, sent: float | None,
                        action: Action = Action.OPT_OUT) -> None:
            rid = await tx.insert_reply(record_id=None, source_addr=LINE,
                                        destination_addr=ALICE, text="bye", action=action,
                                        created_at=created)
            if sent is not None:
                await tx.mark_reply_sent(rid, None, sent)

        await reply(T0, T0 + 5)             # within 5 s, exactly
        await reply(T0 + 1, T0 + 7)         # late
        await reply(T0 + 2, None)           # not sent yet
        await reply(T0 + 3, T0 + 3, Action.HELP)
        await reply(T0 - 1, T0)             # before the window
        assert await tx.reply_latencies(T0, 5.0) == (2, 1)
        assert await tx.reply_latencies(T0 + 10, 5.0) == (0, 0)


# --- the outbox -------------------------------------------------------------------------------


async def test_claims_are_exclusive_until_they_expire(store: Store) -> None:
    async with store.transaction() as tx:
        for i in range(4):
            await tx.insert_reply(record_id=None, source_addr=LINE, destination_addr=ALICE,
                                  text=f"r{i}", action=Action.OPT_OUT, created_at=T0 + i)
        assert await tx.pending_reply_count() == 4
        first = await tx.claim_replies("a", now=T0, until=T0 + 30, limit=2)
        assert [r.text for r in first] == ["r0", "r1"]
        assert [r.text for r in await tx.claim_replies("b", now=T0, until=T0 + 30, limit=5)] \
            == ["r2", "r3"]
        assert await tx.claim_replies("c", now=T0 + 30, until=T0 + 60, limit=5) == []
        # a's own claims come back to a; expired ones go to anybody
        assert [r.text for r in await tx.claim_replies("a", now=T0 + 1, until=T0 + 30,
                                                       limit=5)] == ["r0", "r1"]
        await tx.mark_reply_sent(first[0].id, "m", T0 + 2)
        taken = await tx.claim_replies("c", now=T0 + 31, until=T0 + 90, limit=5)
        assert [r.text for r in taken] == ["r1", "r2", "r3"]
        assert await tx.pending_reply_count() == 3
        assert [r.text for r in await tx.pending_replies(2)] == ["r1", "r2"]
        assert await tx.reply_exists(first[0].id)
        assert not await tx.reply_exists(taken[-1].id + 1)
    assert (first[0].source_addr, first[0].destination_addr, first[0].action,
            first[0].created_at) == (LINE, ALICE, Action.OPT_OUT, T0)


# --- the change feed ----------------------------------------------------------------------


async def test_changes_are_numbered_in_commit_order_and_read_after_an_id(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.feed_head() == 0
        tx.add_change("a", {"n": 1})
        tx.add_change("b", {"n": 2}, b"\x01\x02")
    async with store.transaction() as tx:
        tx.add_change("c", {"n": 3})
    async with store.transaction() as tx:
        pass  # nothing to number
    async with store.reading() as tx:
        assert await tx.feed_head() == 3
        changes = await tx.changes_after(1, 10)
        assert [(c.id, c.kind, c.payload, c.data) for c in changes] == [
            (2, "b", {"n": 2}, b"\x01\x02"), (3, "c", {"n": 3}, None)]
        assert [c.id for c in await tx.changes_after(0, 2)] == [1, 2]
    with pytest.raises(RuntimeError, match="read transaction"):
        async with store.reading() as tx:
            tx.add_change("d", {})
