"""The one facade of the opt-out domain.

The SMPP relay and the HTTP API both call this class and nothing below it,
so a decision or an MO is handled by exactly one implementation.

Theory of operation
-------------------
* **State.** The durable truth is the store (`rules.store`: SQLite for one
  host, PostgreSQL for a fleet; this package does not know which). Two
  in-memory copies serve the hot path without I/O: the `UnsubscribedIndex`
  (which addresses each number is unsubscribed at; loaded in bulk at
  start-up) and the address table (keywords, replies, blocking rules;
  small). Both are changed only by applying the change feed
  (`rules.service.feed`): a write's own changes right after its COMMIT and
  before any other local write starts, other processes' changes at the
  start of each write and, in between, as the follower reads them. So
  memory never shows a change the store does not have, never misses a
  local one for longer than the commit takes, and another process's within
  the follower's wake-up (a NOTIFY on PostgreSQL, a 100 ms poll on SQLite).
* **Writes.** Every write method is one store transaction. It runs as a
  shielded task: if the caller is cancelled half-way (an SMPP session
  dropped), the transaction still either commits *and* updates memory, or
  rolls back; it is never left with the disk and the index disagreeing.
* **Decisions.** `decide` is synchronous: a dict/array look-up in the index
  and, only for numbers that are unsubscribed somewhere, a pure evaluation
  of the rules (`rules.decision`). Rule edits swap in a new `RuleBook`, so
  they apply from the next send on.
* **MOs.** `handle_mo` classifies the text with the address's keywords,
  reads the current state inside the write transaction, and applies
  `rules.mo.plan_mo`: state change + record + reply outbox row, one commit.
* **Replies.** The outbox row is the reply. After a reply is committed the
  service calls every listener registered with `add_reply_listener` (no
  arguments) and sets `reply_queued`; the relay then drains
  `pending_replies()` and calls `mark_reply_sent()`.

Decisions an operator will notice
---------------------------------
* `unsubscribe` of a number already unsubscribed at that address raises
  Conflict (HTTP 409): the operator learns it was already there, and no
  misleading second record is written. `resubscribe` of a number that is not
  unsubscribed raises NotFound.
* Manual (API/console/import) changes never send a confirmation SMS;
  confirmations answer the end user's own keyword.
* Records are filtered with `since` inclusive and `until` exclusive.
* Deleting an address that still has unsubscribed numbers is refused
  (AddressHasUnsubscribed) unless forced; forced, each released number gets
  a "subscribed" record; earlier records stay, naming the address by its
  string. Re-subscribing by hand needs a reason.
* Every MO is written to the inbound message log (`handle_mo`); every
  administrative change to the audit log, in the change's own transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rules.model import InvalidValue, MatchMode
from rules.replies import ProgramInfo
from rules.service import snapshots
from rules.service.addresses import AddressCommands
from rules.service.bulk import BulkTransfer
from rules.service.compliance import ComplianceQueries
from rules.service.core import _DEFAULT_PROGRAM, MAX_PAGE, ImportReport, Stats
from rules.service.snapshots import SnapshotKeeper, snapshot_path
from rules.service.subscribers import SubscriberCommands
from rules.store import open_store

__all__ = ["MAX_PAGE", "ImportReport", "OptOutService", "ProgramInfo", "Stats"]

log = logging.getLogger(__name__)


class OptOutService(AddressCommands, SubscriberCommands, BulkTransfer, ComplianceQueries):
    """Open with `await OptOutService.open(url)`; close with `await close()`."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        program: ProgramInfo = _DEFAULT_PROGRAM,
        mo_match_default: str = "leading",
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
        follow: bool = True,
        snapshot: bool = True,
    ) -> OptOutService:
        """Open the store at `url` ("sqlite:///rel/path.db", "sqlite:////abs/path.db",
        "sqlite://:memory:", "postgresql://user:password@host:port/db"), apply
        migrations, load the in-memory index.

        `mo_match_default` is the keyword match mode new addresses get.
        `busy_timeout_ms` bounds how long a write waits for another process
        holding the file (PostgreSQL: how long any statement may take);
        `clock` (unix seconds) is injectable for tests. `follow` starts the
        task that applies other processes' changes (`rules.service.feed`);
        a one-shot command (import, export) does without. `snapshot`: keep
        the index on a mapped file next to an SQLite store, shared by every
        process on it (`rules.service.snapshots`).
        """
        try:
            match_default = MatchMode(mo_match_default)
        except ValueError:
            raise InvalidValue(
                f"mo_match_default must be 'leading' or 'exact', not {mo_match_default!r}"
            ) from None
        store = await open_store(url, busy_timeout_ms=busy_timeout_ms)
        path = snapshot_path(store) if snapshot else None
        try:
            if path is not None:
                state = await snapshots.load(cls, store, path)
            else:
                async with store.reading() as tx:
                    state = await cls._load_state(tx)
        except BaseException:
            await store.close()
            raise
        log.info(
            "store opened (%s): %d inbound addresses, %d unsubscriptions",
            store.backend,
            len(state.addresses),
            len(state.index),
        )
        service = cls(
            store,
            state,
            program=program,
            match_default=match_default,
            clock=clock,
        )
        try:
            # From a snapshot, memory starts at its position: catch up before
            # the first decision.
            await service._feed.follow_once()
        except BaseException:
            await store.close()
            raise
        if path is not None:
            service._snapshots = SnapshotKeeper(service, store, path, state.head)
            if follow:
                service._snapshots.start()
        if follow:
            service._feed.start()
        await service.refresh_near_misses()
        return service

