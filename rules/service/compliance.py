"""The compliance operator's side of the service (issue 10): the inbound
message log and its near-miss review, retention pruning, the audit log and
the overview figures.

Decisions an operator will notice
---------------------------------
* The near-miss flag never unsubscribes anyone: an admin's review does,
  with source `review`, the admin as actor and the message id in the
  record; no confirmation SMS is sent (manual changes never send one).
* A message can be reviewed once. Only messages whose action was "none" can
  be reviewed (a keyword already acted on the others).
* Pruning keeps near-misses that nobody has reviewed, whatever their age.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rules import numbers
from rules.model import (
    Action,
    AlreadyReviewed,
    AuditEntry,
    Conflict,
    DomainError,
    InboundMessage,
    InvalidValue,
    NotFound,
    Record,
    Review,
    ReviewDecision,
    Source,
    Status,
)
from rules.service import feed
from rules.service.core import (
    CONFIRMATION_LIMIT_SECONDS,
    STATS_DAYS,
    ServiceCore,
    Stats,
    _check_limit,
    _decode_cursor,
    _encode_cursor,
    _logged_address,
    _reason,
    _required_reason,
)
from rules.store import InboundFilter, RecordValues, Tx, UnsubRow, pack

log = logging.getLogger("rules.service")


class ComplianceQueries(ServiceCore):
    # --- the inbound message log and its review ---

    async def list_inbound_messages(
        self,
        *,
        inbound_address: str | None = None,
        phone_number: str | None = None,
        action: Action | str | None = None,
        near_miss: bool | None = None,
        reviewed: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[InboundMessage], str | None]:
        """One page of the inbound message log, newest first, and the next
        page's cursor. Numbers given as filters are normalised when they can
        be (unknown or malformed ones were logged as received)."""
        limit = _check_limit(limit)
        before = _decode_cursor("m", cursor)
        if action is not None:
            try:
                action = Action(action)
            except ValueError:
                raise InvalidValue(f"unknown action {str(action)[:20]!r}") from None
        flt = InboundFilter(
            phone_number=None if phone_number is None else _logged_address(phone_number),
            inbound_address=None if inbound_address is None else _logged_address(inbound_address),
            action=None if action is None else action.value,
            near_miss=near_miss,
            reviewed=reviewed,
            since=since,
            until=until,
        )
        async with self._store.reading() as tx:
            rows = await tx.inbound_messages(flt, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor("m", rows[-1].id) if more else None)

    async def get_inbound_message(self, message_id: int) -> InboundMessage:
        async with self._store.reading() as tx:
            found = await tx.inbound_message(message_id)
        if found is None:
            raise NotFound(f"inbound message {message_id} does not exist (or was pruned)")
        return found

    async def review_opt_out(
        self, message_id: int, *, actor: str | None, reason: str = ""
    ) -> tuple[InboundMessage, Record]:
        """An admin read a logged message as an opt-out: the sender is
        unsubscribed at its inbound address (source `review`, the admin as
        actor, the message linked in the record) and the message is marked
        reviewed, in one transaction. No confirmation SMS is sent (manual
        changes never send one). NotFound for an unknown message,
        AlreadyReviewed (409) if reviewed before, Conflict if its action was
        not "none" (the keyword already acted), InvalidValue if its address
        is not configured now or its sender cannot be unsubscribed. If the
        sender is already unsubscribed there, the decision and a record are
        still written (the request is evidence), the state is unchanged."""
        why = _reason(reason, f"opt-out on review of inbound message {message_id}")

        async def run() -> tuple[InboundMessage, Record]:
            async with self._store.transaction() as tx:
                message = await self._reviewable(tx, message_id)
                target = self._by_address.get(message.inbound_address)
                if target is None:
                    raise InvalidValue(
                        f"inbound address {message.inbound_address[:32]} is not configured: "
                        "nothing to unsubscribe from (dismiss it instead)"
                    )
                try:
                    number = numbers.require_in_scope(message.phone_number)
                    key = numbers.to_key(number)
                except (DomainError, ValueError) as exc:
                    raise InvalidValue(
                        f"the sender cannot be unsubscribed ({exc}); dismiss it instead"
                    ) from None
                now = self._clock()
                review = Review(ReviewDecision.OPT_OUT, actor, now, why)
                await tx.review_inbound_message(message_id, review)
                packed = pack(key, target.id)
                if await tx.unsubscription(packed) is None:
                    await tx.insert_unsubscription(
                        UnsubRow(packed, target.id, key, now, Source.REVIEW)
                    )
                    tx.add_change(feed.UNSUB, {"a": target.id, "k": key})
                values: RecordValues = (
                    number,
                    target.address,
                    Status.UNSUBSCRIBED.value,
                    Source.REVIEW.value,
                    now,
                    why,
                    actor,
                    message.text,
                    None,
                    None,
                )
                record_id = await tx.insert_record(values, inbound_message_id=message_id)
                await self._audit(
                    tx,
                    actor,
                    "review.opt_out",
                    f"inbound-message {message_id}",
                    None,
                    {"decision": "opt_out", "reason": why, "record_id": record_id},
                )
                tx.after_commit(lambda: self._near_miss_reviewed(message))
            record = Record(
                id=record_id,
                phone_number=number,
                inbound_address=target.address,
                status=Status.UNSUBSCRIBED,
                source=Source.REVIEW,
                at=now,
                reason=why,
                actor=actor,
                raw_text=message.text,
                inbound_message_id=message_id,
            )
            return replace(message, review=review), record

        result = await self._write(run())
        await self.refresh_near_misses()
        return result

    async def review_dismiss(
        self, message_id: int, *, actor: str | None, reason: str
    ) -> InboundMessage:
        """An admin read a logged message and decided it is not an opt-out.
        `reason` is required (ReasonRequired, 422, when blank). NotFound /
        AlreadyReviewed / Conflict as for `review_opt_out`."""
        why = _required_reason(reason)

        async def run() -> InboundMessage:
            async with self._store.transaction() as tx:
                message = await self._reviewable(tx, message_id)
                review = Review(ReviewDecision.DISMISSED, actor, self._clock(), why)
                await tx.review_inbound_message(message_id, review)
                await self._audit(
                    tx,
                    actor,
                    "review.dismiss",
                    f"inbound-message {message_id}",
                    None,
                    {"decision": "dismissed", "reason": why},
                )
                tx.after_commit(lambda: self._near_miss_reviewed(message))
            return replace(message, review=review)

        result = await self._write(run())
        await self.refresh_near_misses()
        return result

    async def _reviewable(self, tx: Tx, message_id: int) -> InboundMessage:
        message = await tx.inbound_message(message_id)
        if message is None:
            raise NotFound(f"inbound message {message_id} does not exist (or was pruned)")
        if message.review is not None:
            raise AlreadyReviewed(
                f"inbound message {message_id} was already reviewed "
                f"({message.review.decision.value} by {message.review.actor})"
            )
        if message.action is not Action.NONE:
            raise Conflict(
                f"inbound message {message_id} already acted as {message.action.value}; "
                "only messages without an action are reviewed"
            )
        return message

    def _near_miss_reviewed(self, message: InboundMessage) -> None:
        if message.near_miss:
            self._open_near_misses = max(0, self._open_near_misses - 1)

    async def prune_inbound_messages(self, retention_days: float, *, batch: int = 10_000) -> int:
        """Deletes logged messages older than `retention_days` (by the
        service clock), in transactions of `batch` rows so MOs never wait
        long for the write lock. Near-misses still awaiting review are kept
        whatever their age. Returns how many went."""
        if not retention_days > 0:
            raise InvalidValue("retention_days must be positive")
        cutoff = self._clock() - retention_days * 86400.0
        total = 0
        while True:

            async def run() -> int:
                async with self._store.transaction() as tx:
                    return await tx.prune_inbound_messages(cutoff, batch)

            removed = await self._write(run())
            total += removed
            if removed < batch:
                break
            await asyncio.sleep(0)
        if total:
            log.info("inbound message log: %d messages older than %g days pruned",
                     total, retention_days)
        return total

    # --- the audit log ---

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """One page of the audit log, newest first, and the next cursor."""
        limit = _check_limit(limit)
        before = _decode_cursor("a", cursor)
        async with self._store.reading() as tx:
            rows = await tx.audit_entries(
                actor=actor, since=since, until=until, before=before, limit=limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor("a", rows[-1].id) if more else None)

    # --- the overview ---

    async def stats(self, *, days: int = STATS_DAYS) -> Stats:
        """The figures of the console's Overview (see `Stats`)."""
        now = self._clock()
        today = datetime.fromtimestamp(now, UTC).date()
        first = today - timedelta(days=days - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
        async with self._store.reading() as tx:
            changes = await tx.daily_changes(since)
            sent, within = await tx.reply_latencies(since, CONFIRMATION_LIMIT_SECONDS)
            pending = await tx.pending_reply_count()
            open_count, _oldest = await tx.open_near_misses()
        per_day: dict[str, list[int]] = {
            (first + timedelta(days=i)).isoformat(): [0, 0] for i in range(days)
        }
        for date, status, count in changes:
            if date in per_day:
                per_day[date][0 if status == Status.UNSUBSCRIBED.value else 1] += count
        by_id = self._index.count_by_address()
        by_address = {
            a.address: by_id.get(a.id, 0)
            for a in sorted(self._by_address.values(), key=lambda a: a.address)
        }
        return Stats(
            unsubscribed_total=len(self._index),
            unsubscribed_by_address=by_address,
            daily=tuple((d, v[0], v[1]) for d, v in per_day.items()),
            near_miss_open=open_count,
            replies_pending=pending,
            replies_sent=sent,
            replies_within_limit=within,
        )
