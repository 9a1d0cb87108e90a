"""The change feed, service side: what a change says, and the follower that
keeps this process's memory in step with every other process on the store.

Theory of operation
-------------------
Every write method describes its effect on memory as changes
(`Tx.add_change`), committed with it into the store's `changes` table
(`rules.store.base`). Memory -- the unsubscribed index and the address
table with its rules -- is changed ONLY by applying changes, in id order,
whichever process wrote them:

* **Own writes.** Right after COMMIT the store hands the transaction's
  changes to `ServiceFeed.committed`; the MO that wrote them is blocked in
  memory before its caller hears "done".
* **Others' writes.** At the start of every write transaction the store
  calls `ServiceFeed.catch_up` (under the writer lock, so nothing is in
  flight): the service then decides on memory equal to the database. In
  between, `ServiceFeed.run` follows the table: it waits on
  `Store.wait_for_changes` (PostgreSQL NOTIFY, or a 100 ms poll on SQLite,
  and a 1 s poll on PostgreSQL as a safety net) and reads every change with
  an id above the last one applied.
* **Ordering.** Ids are gap-free and in commit order (each writer numbers
  its changes while holding the fleet-wide writer lock), so "apply id N
  only after N - 1" is all it takes: a missed notification only delays a
  change, a duplicate is skipped, nothing is skipped. If the next id is
  gone (pruned after `FEED_RETENTION` because this process was cut off for
  that long), the process reloads everything in a write transaction, so no
  change can land between the snapshot and the switch.

Changes carry the new state, not a diff to re-read: an address change holds
the whole row and its rules, an opt-out the (number key, address id) pair,
an import batch its packed values as little-endian int64 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from rules.model import StoreUnavailable
from rules.store import ADDRESS_ID_LIMIT, PACK_SHIFT, Change, Store, Tx
from rules.store.base import address_from, address_values, types_from_json, types_json

if TYPE_CHECKING:
    from rules.service.core import ServiceCore, _Address

__all__ = [
    "ADDRESS",
    "ADDRESS_DELETED",
    "BULK_UNSUB",
    "REPLY",
    "RESUB",
    "UNSUB",
    "ServiceFeed",
    "address_payload",
]

log = logging.getLogger("rules.service.feed")

UNSUB: Final = "unsub"
"""{"a": address id, "k": number key}: unsubscribed there."""
RESUB: Final = "resub"
"""{"a": address id, "k": number key}: no longer unsubscribed there."""
BULK_UNSUB: Final = "bulk_unsub"
"""{"n": count}, data = packed values (int64 little-endian): an import batch."""
ADDRESS: Final = "address"
"""{"row": [...], "rules": {app: [types]}}: an address created or edited."""
ADDRESS_DELETED: Final = "address_deleted"
"""{"a": address id}: the address, its rules and unsubscriptions are gone."""
REPLY: Final = "reply"
"""{"id": reply id}: a reply waits in the outbox (wakes every reply sender)."""

_ADDRESS_MASK: Final = ADDRESS_ID_LIMIT - 1

READ_BATCH: Final = 1000
"""Changes read per query while catching up."""
FOLLOW_POLL: Final = 1.0
"""Seconds a follower waits for a notification before reading anyway."""
RETRY_SECONDS: Final = 0.5
"""Seconds between attempts while the store is unreachable."""


def address_payload(address: _Address) -> dict[str, Any]:
    """The change payload that installs `address` (row and rules) anywhere."""
    return {
        "row": list(address_values(address.row)),
        "rules": {app: types_json(types) for app, types in address.rules.items()},
    }


class ServiceFeed:
    """Applies the feed to one service's memory (the store's `FeedSink`)."""

    def __init__(self, core: ServiceCore, store: Store, applied: int) -> None:
        self._core = core
        self._store = store
        self.applied = applied
        """Id of the last change applied to memory."""
        self.connected = True
        """False while the follower cannot read the store."""
        self._task: asyncio.Task[None] | None = None
        # Set by stop(): the loop ends on it even when the cancellation stop()
        # also sends is lost (3.11's wait_for, inside asyncpg's connect, drops
        # a cancel that lands as its result is ready), so close() cannot hang.
        self._stopping = False
        self.caught_up = asyncio.Event()
        """Set after each successful read of the feed (tests wait on it)."""

    # --- FeedSink ---

    async def catch_up(self, tx: Tx) -> None:
        """Apply every change committed since the last one applied (under
        the writer lock); reload everything if some are gone."""
        if await self._read(tx):
            await self._reload(tx)

    def committed(self, changes: Sequence[Change]) -> None:
        """A local write transaction's own changes, right after COMMIT."""
        self._apply(changes)

    # --- following ---

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="optout-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Follows the feed until stopped; survives any store outage."""
        while not self._stopping:
            try:
                await self.follow_once()
                self.connected = True
                self.caught_up.set()
                await self._store.wait_for_changes(FOLLOW_POLL)
            except StoreUnavailable as exc:
                if self.connected:
                    log.warning("feed: store unreachable, serving from memory: %s", exc)
                self.connected = False
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                log.exception("feed: follower failed; retrying")
                await asyncio.sleep(RETRY_SECONDS)

    async def follow_once(self) -> None:
        """Reads and applies what others committed since the last change
        applied. StoreUnavailable when the store cannot be read."""
        async with self._store.reading() as tx:
            gap = await self._read(tx)
        if gap:
            # catch_up runs at the start of every write transaction and
            # reloads there, where no writer can slip in between.
            async with self._store.transaction():
                pass

    # --- internals ---

    async def _read(self, tx: Tx) -> bool:
        """Applies the changes after `applied` that `tx` sees; True when the
        next one is missing (pruned), i.e. memory must be reloaded."""
        head = await tx.feed_head()  # one cheap read when nothing changed
        while self.applied < head:
            changes = await tx.changes_after(self.applied, READ_BATCH)
            if not changes or changes[0].id != self.applied + 1:
                return True
            self._apply(changes)
        return False

    def _apply(self, changes: Sequence[Change]) -> None:
        core = self._core
        for change in changes:
            if change.id <= self.applied:
                continue  # already applied (our own, or read twice)
            if change.id != self.applied + 1:
                # Cannot happen for contiguous reads; the next read fills it.
                log.error("feed: change %d arrived before %d", change.id, self.applied + 1)
                return
            try:
                self._apply_one(core, change)
            except Exception:
                # A change this version cannot read must not stop the feed:
                # the database has it; a restart reloads it from the tables.
                log.exception("feed: cannot apply change %d (%s)", change.id, change.kind)
            self.applied = change.id

    @staticmethod
    def _apply_one(core: ServiceCore, change: Change) -> None:
        kind, payload = change.kind, change.payload
        if kind == UNSUB:
            core._index.add(int(payload["k"]), int(payload["a"]))
        elif kind == RESUB:
            core._index.remove(int(payload["k"]), int(payload["a"]))
        elif kind == BULK_UNSUB:
            if change.data:
                packed = np.frombuffer(change.data, dtype="<i8")
                add = core._index.add
                for value in packed.tolist():
                    add(value >> PACK_SHIFT, value & _ADDRESS_MASK)
        elif kind == ADDRESS:
            rules = {app: types_from_json(t) for app, t in payload["rules"].items()}
            core._put_row(address_from(payload["row"]), rules)
        elif kind == ADDRESS_DELETED:
            core._forget(int(payload["a"]))
        elif kind == REPLY:
            core._queued()
        else:
            log.warning("feed: change %d has an unknown kind %r (newer version?)", change.id, kind)

    async def _reload(self, tx: Tx) -> None:
        log.warning("feed: changes after %d are gone; reloading from the tables", self.applied)
        state = await self._core._load_state(tx)
        self._core._install(state)
        self.applied = state.head
        self._core._queued()  # replies may have been committed meanwhile
