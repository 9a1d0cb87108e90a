"""MO handling, unsubscribing by hand, the unsubscribed list, the history and
the reply outbox."""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Final

from rules import nearmiss, numbers
from rules.keywords import DEFAULT_KEYWORDS, classify
from rules.mo import plan_mo
from rules.model import (
    Action,
    Conflict,
    InvalidNumber,
    InvalidValue,
    MoOutcome,
    NotFound,
    Record,
    Reply,
    Source,
    Status,
    StoreUnavailable,
    Unsubscription,
    scalar_text,
)
from rules.service import feed
from rules.service.core import (
    _RECORD_PAGE,
    MAX_CARRIER_IDS_CHARS,
    MAX_PAGE,
    MAX_RAW_TEXT_CHARS,
    ServiceCore,
    _Address,
    _check_limit,
    _decode_cursor,
    _encode_cursor,
    _logged_address,
    _reason,
    _required_reason,
    _source,
    _storable,
)
from rules.store import (
    PACK_SHIFT,
    InboundValues,
    RecordFilter,
    RecordValues,
    UnsubRow,
    pack,
)

REPLY_LEASE: Final = 60.0
"""Seconds a claimed reply stays with its sender before another may take it
over: longer than the carrier's answer can take, short enough that a
confirmation whose sidecar died still goes out well within 5 minutes."""

log = logging.getLogger("rules.service")

_UNSUB_ORDERS: Final = ("number", "newest", "oldest")
# Every in-scope subscriber is a NANP number: "+1" and ten digits.
_NANP_DIGITS: Final = 11


def _prefix_keys(prefix: str) -> tuple[int, int] | None:
    """[lo, hi) of the number keys starting with `prefix` ("+1 415",
    "415", "1415-55"); None when no in-scope number can start so. A
    prefix without the leading country code 1 is read as an area code."""
    digits = "".join(ch for ch in prefix if ch.isascii() and ch.isdigit())
    if not digits.startswith("1"):
        digits = "1" + digits
    if len(digits) > _NANP_DIGITS:
        return None
    scale = 10 ** (_NANP_DIGITS - len(digits))
    return int(digits) * scale, (int(digits) + 1) * scale


def _encode_unsub_cursor(order: str, row: UnsubRow) -> str:
    if order == "number":
        return _encode_cursor("u", row.packed)
    # repr() of a float round-trips exactly, so ties on `since` page correctly.
    text = f"{order[0]}:{row.since!r}:{row.packed}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_unsub_cursor(order: str, cursor: str | None) -> tuple[int | None, float | None]:
    if order == "number":
        return _decode_cursor("u", cursor), None
    if cursor is None or cursor == "":
        return None, None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        kind, since, packed = text.split(":")
        if kind != order[0]:
            raise ValueError(kind)
        when = float(since)
        if not math.isfinite(when):
            raise ValueError(since)
        return int(packed), when
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidValue("cursor is not one this listing returned") from None


class SubscriberCommands(ServiceCore):
    # --- MO handling ---

    async def handle_mo(
        self,
        inbound_address: str,
        from_number: str,
        text: str,
        *,
        carrier_ids: str | None = None,
    ) -> MoOutcome:
        """Classify, change state, record, queue the reply in the outbox and
        log the message, all committed durably before returning. Raises
        StoreUnavailable if the state change could not commit (nothing
        changed then).

        An unknown inbound address, or a sender that is not a valid in-scope
        number, gives `handled=False` and changes nothing (the action is
        still classified, with the default keywords for an unknown address,
        so the caller can count it); the message is still logged.

        Every MO is written to the inbound message log. When the MO changes
        anything, the log row is part of that transaction (under a savepoint:
        if only the log row fails, the change still commits). Otherwise the
        row has a transaction of its own, and if that fails the MO still
        succeeds, with `log_failed=True` for the caller to count: the log
        must never cost an opt-out or make the carrier redeliver."""
        address = self._lookup(inbound_address)
        if address is None:
            action, keyword = classify(text, DEFAULT_KEYWORDS)
            outcome = MoOutcome(action, keyword, handled=False, notes=("unknown inbound address",))
            return await self._log_only(outcome, inbound_address, from_number, text)
        action, keyword = classify(text, address.row.keywords)
        try:
            subscriber = numbers.normalize(from_number)
        except InvalidNumber:
            outcome = MoOutcome(action, keyword, handled=False, notes=("sender is not a number",))
            return await self._log_only(outcome, address.address, from_number, text)
        if not numbers.in_scope(subscriber):
            outcome = MoOutcome(
                action, keyword, handled=False, notes=("sender outside US/Canada opt-out scope",)
            )
            return await self._log_only(outcome, address.address, subscriber, text)
        if action is Action.NONE:
            hit = nearmiss.detect(text, address.row.keywords, address.row.near_miss_phrases)
            outcome = MoOutcome(Action.NONE, near_miss=hit is not None)
            return await self._log_only(outcome, address.address, subscriber, text)
        return await self._write(
            self._apply_mo(address, subscriber, action, keyword, text, carrier_ids)
        )

    def _inbound_values(
        self, at: float, inbound: str, sender: str, text: str, outcome: MoOutcome
    ) -> InboundValues:
        return (
            at,
            _logged_address(sender),
            _logged_address(inbound),
            _storable(text[:MAX_RAW_TEXT_CHARS]),
            outcome.action.value,
            outcome.keyword,
            outcome.near_miss,
        )

    async def _log_only(
        self, outcome: MoOutcome, inbound: str, sender: str, text: str
    ) -> MoOutcome:
        """Logs an MO that changes nothing, best effort (see `handle_mo`)."""

        async def run() -> int:
            async with self._store.transaction() as tx:
                now = self._clock()
                message_id = await tx.insert_inbound_message(
                    self._inbound_values(now, inbound, sender, text, outcome)
                )
                if outcome.near_miss:
                    tx.after_commit(lambda: self._near_miss_logged(now))
            return message_id

        try:
            message_id = await self._write(run())
        except StoreUnavailable as exc:
            log.warning("inbound message not logged: %s", exc)
            return replace(outcome, log_failed=True)
        return replace(outcome, message_id=message_id)

    async def _apply_mo(
        self,
        address: _Address,
        subscriber: str,
        action: Action,
        keyword: str | None,
        text: str,
        carrier_ids: str | None,
    ) -> MoOutcome:
        key = numbers.to_key(subscriber)
        # Kept, not refused: the keyword in it has already been acted on.
        text = scalar_text(text[:MAX_RAW_TEXT_CHARS])
        if carrier_ids is not None:
            carrier_ids = scalar_text(carrier_ids[:MAX_CARRIER_IDS_CHARS])
        async with self._store.transaction() as tx:
            try:
                current = self._current(address)
            except NotFound:
                gone = MoOutcome(action, keyword, handled=False, notes=("address just deleted",))
                message_id = await tx.try_insert_inbound_message(
                    self._inbound_values(self._clock(), address.address, subscriber, text, gone)
                )
                return replace(gone, message_id=message_id, log_failed=message_id is None)
            packed = pack(key, current.id)
            unsubscribed = await tx.unsubscription(packed) is not None
            plan = plan_mo(action, unsubscribed, current.row.replies.effective(self._program))
            now = self._clock()
            message_id = await tx.try_insert_inbound_message(
                self._inbound_values(
                    now, current.address, subscriber, text, MoOutcome(action, keyword)
                )
            )
            if plan.new_status is Status.UNSUBSCRIBED:
                await tx.insert_unsubscription(
                    UnsubRow(packed, current.id, key, now, Source.KEYWORD)
                )
                tx.add_change(feed.UNSUB, {"a": current.id, "k": key})
            elif plan.new_status is Status.SUBSCRIBED:
                await tx.delete_unsubscription(packed)
                tx.add_change(feed.RESUB, {"a": current.id, "k": key})
            record: Record | None = None
            if plan.record_status is not None:
                values: RecordValues = (
                    subscriber,
                    current.address,
                    plan.record_status.value,
                    Source.KEYWORD.value,
                    now,
                    plan.reason,
                    None,
                    text,
                    keyword,
                    carrier_ids,
                )
                record_id = await tx.insert_record(values, inbound_message_id=message_id)
                record = Record(
                    id=record_id,
                    phone_number=subscriber,
                    inbound_address=current.address,
                    status=plan.record_status,
                    source=Source.KEYWORD,
                    at=now,
                    reason=plan.reason,
                    raw_text=text,
                    keyword=keyword,
                    carrier_ids=carrier_ids,
                    inbound_message_id=message_id,
                )
            reply: Reply | None = None
            if plan.reply_text is not None and plan.reply_action is not None:
                reply_id = await tx.insert_reply(
                    record_id=record.id if record else None,
                    source_addr=current.address,
                    destination_addr=subscriber,
                    text=plan.reply_text,
                    action=plan.reply_action,
                    created_at=now,
                )
                reply = Reply(
                    reply_id,
                    current.address,
                    subscriber,
                    plan.reply_text,
                    plan.reply_action,
                    now,
                )
                tx.add_change(feed.REPLY, {"id": reply_id})
        return MoOutcome(
            action,
            keyword,
            record=record,
            reply=reply,
            notes=plan.notes,
            message_id=message_id,
            log_failed=message_id is None,
        )

    # --- unsubscribed users ---

    async def unsubscribe(
        self,
        phone_number: str,
        inbound_address: str,
        *,
        source: Source,
        actor: str | None = None,
        reason: str = "",
    ) -> Record:
        """Unsubscribes by hand (no confirmation SMS). InvalidNumber /
        OutOfScope for the number, NotFound for the address, Conflict if the
        number is already unsubscribed there."""
        number = numbers.require_in_scope(phone_number)
        target = self._require(inbound_address)
        source = _source(source)
        why = _reason(reason, f"unsubscribed via {source.value}")
        return await self._write(
            self._manual(number, target, Status.UNSUBSCRIBED, source, actor, why)
        )

    async def resubscribe(
        self,
        phone_number: str,
        inbound_address: str,
        *,
        source: Source,
        actor: str | None = None,
        reason: str = "",
    ) -> Record:
        """NotFound if the number is not unsubscribed at that address.
        `reason` is required (ReasonRequired when blank): re-subscribing by
        hand needs the consent evidence, e.g. "signed up again on the web
        form, 2026-11-30"."""
        number = numbers.normalize(phone_number)
        target = self._require(inbound_address)
        source = _source(source)
        why = _required_reason(reason)
        return await self._write(
            self._manual(number, target, Status.SUBSCRIBED, source, actor, why)
        )

    async def _manual(
        self,
        number: str,
        target: _Address,
        status: Status,
        source: Source,
        actor: str | None,
        reason: str,
    ) -> Record:
        try:
            key = numbers.to_key(number)
        except ValueError:
            raise InvalidNumber(f"{numbers.mask(number)} cannot be stored") from None
        async with self._store.transaction() as tx:
            current = self._current(target)
            packed = pack(key, current.id)
            exists = await tx.unsubscription(packed) is not None
            now = self._clock()
            if status is Status.UNSUBSCRIBED:
                if exists:
                    raise Conflict(
                        f"{numbers.mask(number)} is already unsubscribed at {current.address}"
                    )
                await tx.insert_unsubscription(UnsubRow(packed, current.id, key, now, source))
                tx.add_change(feed.UNSUB, {"a": current.id, "k": key})
            else:
                if not exists:
                    raise NotFound(
                        f"{numbers.mask(number)} is not unsubscribed at {current.address}"
                    )
                await tx.delete_unsubscription(packed)
                tx.add_change(feed.RESUB, {"a": current.id, "k": key})
            values: RecordValues = (
                number,
                current.address,
                status.value,
                source.value,
                now,
                reason,
                actor,
                None,
                None,
                None,
            )
            record_id = await tx.insert_record(values)
            await self._audit(
                tx,
                actor,
                "unsubscribed.add" if status is Status.UNSUBSCRIBED else "unsubscribed.remove",
                f"{current.address} {number}",
                {"status": (Status.SUBSCRIBED if status is Status.UNSUBSCRIBED
                            else Status.UNSUBSCRIBED).value},
                {"status": status.value, "reason": reason, "source": source.value,
                 "record_id": record_id},
            )
        return Record(
            id=record_id,
            phone_number=number,
            inbound_address=current.address,
            status=status,
            source=source,
            at=now,
            reason=reason,
            actor=actor,
        )

    async def list_unsubscribed(
        self,
        *,
        inbound_address: str | None = None,
        phone_number: str | None = None,
        number_prefix: str | None = None,
        order: str = "number",
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Unsubscription], str | None]:
        """One page and the cursor of the next page (None at the end),
        ordered by number then address, or by `since` ("newest" /
        "oldest"). `number_prefix` keeps numbers whose E.164 form starts
        with those digits. Keyset pagination: rows inserted while paging
        never shift or repeat a page. An unknown address gives an empty
        page; a malformed number InvalidNumber. Each item carries the
        reason of its latest opt-out record."""
        limit = _check_limit(limit)
        if order not in _UNSUB_ORDERS:
            raise InvalidValue(f"order must be one of {', '.join(_UNSUB_ORDERS)}")
        after, after_since = _decode_unsub_cursor(order, cursor)
        address_id: int | None = None
        if inbound_address is not None:
            found = self._lookup_strict(inbound_address)
            if found is None:
                return [], None
            address_id = found.id
        packed_range: tuple[int, int] | None = None
        if phone_number is not None:
            try:
                key = numbers.to_key(numbers.normalize(phone_number))
            except ValueError:
                return [], None
            packed_range = (key << PACK_SHIFT, (key + 1) << PACK_SHIFT)
        elif number_prefix is not None:
            keys = _prefix_keys(number_prefix)
            if keys is None:
                return [], None
            packed_range = (keys[0] << PACK_SHIFT, keys[1] << PACK_SHIFT)
        async with self._store.reading() as tx:
            rows = await tx.unsubscriptions(
                address_id=address_id,
                packed_range=packed_range,
                after=after,
                after_since=after_since,
                order=order,
                limit=limit + 1,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            items = [i for i in (self._unsubscription(r) for r in rows) if i is not None]
            reasons = await tx.unsubscribe_reasons(
                [(i.phone_number, i.inbound_address) for i in items]
            )
        items = [
            replace(i, reason=reasons.get((i.phone_number, i.inbound_address), ""))
            for i in items
        ]
        next_cursor = _encode_unsub_cursor(order, rows[-1]) if more else None
        return items, next_cursor

    def unsubscribed_count(self) -> int:
        """(number, address) pairs unsubscribed now; O(1), from memory."""
        return len(self._index)

    # --- history ---

    def _record_filter(
        self,
        phone_number: str | None,
        inbound_address: str | None,
        since: float | None,
        until: float | None,
    ) -> RecordFilter:
        return RecordFilter(
            phone_number=None if phone_number is None else numbers.normalize(phone_number),
            inbound_address=None if inbound_address is None else numbers.normalize(inbound_address),
            since=since,
            until=until,
        )

    async def list_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[Record], str | None]:
        """One page of the history (oldest first unless `newest_first`) and
        the next page's cursor. `since` is inclusive, `until` exclusive
        (unix seconds). Addresses deleted since still match by string."""
        limit = _check_limit(limit)
        kind = "d" if newest_first else "r"
        after = _decode_cursor(kind, cursor)
        flt = self._record_filter(phone_number, inbound_address, since, until)
        async with self._store.reading() as tx:
            rows = await tx.records(flt, after=after, limit=limit + 1, newest_first=newest_first)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor(kind, rows[-1].id) if more else None)

    async def iter_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[Record]:
        """All matching records, oldest first, read in pages (for CSV export)."""
        flt = self._record_filter(phone_number, inbound_address, since, until)
        after: int | None = None
        while True:
            async with self._store.reading() as tx:
                rows = await tx.records(flt, after=after, limit=_RECORD_PAGE)
            for row in rows:
                yield row
            if len(rows) < _RECORD_PAGE:
                return
            after = rows[-1].id

    # --- reply outbox ---

    async def pending_replies(self, limit: int = 100) -> list[Reply]:
        """Unsent replies, oldest first (at most `limit`, capped at MAX_PAGE)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        async with self._store.reading() as tx:
            return await tx.pending_replies(limit)

    async def claim_replies(
        self, owner: str, limit: int = 100, *, lease: float = REPLY_LEASE
    ) -> list[Reply]:
        """Unsent replies for `owner` (one sidecar process) to send, oldest
        first: no other sidecar gets them until `lease` seconds have passed
        without them being marked sent (then their sender is presumed dead
        and they are handed to the next one that asks). `owner` gets its own
        unsent claims again, so a reply the carrier refused is retried."""
        limit = max(1, min(int(limit), MAX_PAGE))

        async def run() -> list[Reply]:
            async with self._store.transaction() as tx:
                now = self._clock()
                return await tx.claim_replies(owner, now=now, until=now + lease, limit=limit)

        return await self._write(run())

    async def pending_reply_count(self) -> int:
        async with self._store.reading() as tx:
            return await tx.pending_reply_count()

    async def mark_reply_sent(self, reply_id: int, message_id: str | None) -> float | None:
        """Marks a reply as accepted by the carrier and returns the seconds
        since its MO was committed (for `optout_reply_seconds`). NotFound
        for an unknown id; marking an already sent reply again changes
        nothing and returns None."""

        async def run() -> float | None:
            async with self._store.transaction() as tx:
                now = self._clock()
                marked = await tx.mark_reply_sent(reply_id, message_id, now)
                created = await tx.reply_created_at(reply_id)
                if created is None:
                    raise NotFound(f"reply {reply_id} does not exist")
            return max(0.0, now - created) if marked else None

        return await self._write(run())

    async def mark_replies_sent(self, sent: Sequence[tuple[int, str | None]]) -> list[float]:
        """Marks replies accepted by the carrier, `(reply_id, message_id)` each,
        in one transaction: one commit for a window of confirmations instead of
        one each, so marking keeps up with the carrier. Unknown ids are skipped.
        Returns, for each reply newly marked, the seconds since its MO was
        committed (for `optout_reply_seconds`)."""

        async def run() -> list[float]:
            latencies: list[float] = []
            async with self._store.transaction() as tx:
                at = self._clock()
                for reply_id, message_id in sent:
                    if await tx.mark_reply_sent(reply_id, message_id, at):
                        created = await tx.reply_created_at(reply_id)
                        if created is not None:
                            latencies.append(max(0.0, at - created))
            return latencies

        return await self._write(run())
