"""Keeping the index on a shared, mapped snapshot (`rules.snapshot`).

Start-up (`load`): under the snapshot's lock, a snapshot whose feed
position the store still holds with the same fingerprint is mapped, and
memory starts at that position: the feed then applies the changes since
(`ServiceFeed.follow_once`, before the service serves), so the store's
`unsubscribed` table is not read at all. Anything else (no file, a bad
checksum or version, another store, a position pruned from the feed) is
logged and ignored: the index is read from the store and a snapshot written
for the next process.

Running (`SnapshotKeeper.run`, once a second, off the feed's path so a
write never delays an opt-out): when another process wrote a newer snapshot
that this process's feed has reached, the index moves onto it (its overlay
shrinks to what changed since); when this process's overlay outgrows
`rewrite_at`, it writes the next snapshot from its own memory (in a thread:
the merge and the file are O(N)), under the lock so one process per host
writes while the others pick it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Final

import numpy as np

from rules import snapshot
from rules.index import UnsubscribedIndex, _merged, build_filter
from rules.store import Store, Tx

if TYPE_CHECKING:
    from rules.service.core import ServiceCore, StoreState

log = logging.getLogger("rules.service.snapshots")

CHECK_EVERY: Final = 1.0
"""Seconds between looks at the snapshot file and this process's overlay."""
FAILURE_PAUSE: Final = 60.0
"""Seconds before trying again after the upkeep failed."""
MIN_REWRITE_AT: Final = 4096
REWRITE_FRACTION: Final = 512
"""A new snapshot is written once max(MIN_REWRITE_AT, count / REWRITE_FRACTION)
numbers changed since the current one: ~0.3 B per pair per process at most."""


def snapshot_path(store: Store) -> str | None:
    """Where the store's snapshot lives: next to an SQLite file. None (no
    snapshot) for an in-memory database or another backend."""
    if store.backend != "sqlite":
        return None
    path = getattr(store, "path", ":memory:")
    if not isinstance(path, str) or path == ":memory:":
        return None
    return f"{path}.index"


def rewrite_at(count: int) -> int:
    return max(MIN_REWRITE_AT, count // REWRITE_FRACTION)


async def fingerprint_at(tx: Tx, position: int) -> bytes | None:
    """The fingerprint of change `position` in `tx`, None if it is gone."""
    if position < 1:
        return None
    changes = await tx.changes_after(position - 1, 1)
    if not changes or changes[0].id != position:
        return None
    return snapshot.fingerprint(changes[0])


def _open(path: str) -> snapshot.Snapshot | None:
    try:
        return snapshot.open_snapshot(path)
    except FileNotFoundError:
        return None
    except (OSError, snapshot.SnapshotError) as exc:
        log.warning("index snapshot %s ignored: %s", path, exc)
        return None


def _index_of(snap: snapshot.Snapshot) -> UnsubscribedIndex:
    return UnsubscribedIndex.from_snapshot(snap.packed, snap.bits, snap.header.filter_m)


def _write(path: str, base: np.ndarray, over: dict[int, tuple[int, ...]], position: int,
           fp: bytes) -> None:
    """Blocking: merge, build the filter, write the file."""
    packed = _merged(base, over) if over else base
    bits, m = build_filter(packed, int(packed.size))
    snapshot.write_snapshot(path, packed, bits, m, position, fp)


async def load(core_cls: type[ServiceCore], store: Store, path: str) -> StoreState:
    """The start-up state, on the snapshot at `path` when it is usable (see
    the module docstring); its `head` is the snapshot's position then."""
    from rules.service.core import StoreState

    started = time.monotonic()
    try:
        fd = await asyncio.to_thread(snapshot.lock, path)
    except OSError as exc:  # e.g. a read-only directory: no snapshot, same index
        log.warning("index snapshot %s not used: %s", path, exc)
        async with store.reading() as tx:
            return await core_cls._load_state(tx)
    try:
        snap = await asyncio.to_thread(_open, path)
        async with store.reading() as tx:
            if snap is not None:
                fp = await fingerprint_at(tx, snap.position)
                if fp is not None and fp == snap.header.fingerprint:
                    state = await core_cls._load_state(tx, packed=False)
                    log.info("index mapped from %s at change %d (%d pairs) in %.2f s",
                             path, snap.position, snap.header.count,
                             time.monotonic() - started)
                    return StoreState(_index_of(snap), state.addresses, snap.position)
                log.warning("index snapshot %s ignored: change %d is %s", path,
                            snap.position, "gone from the feed" if fp is None
                            else "another store's")
            state = await core_cls._load_state(tx)
            fp = await fingerprint_at(tx, state.head)
        if fp is None:
            return state  # no change yet to anchor a snapshot to
        index = state.index
        try:
            await asyncio.to_thread(_write, path, index.packed_now(), {}, state.head, fp)
        except OSError as exc:
            log.warning("cannot write the index snapshot %s: %s", path, exc)
            return state
        fresh = await asyncio.to_thread(_open, path)
        if fresh is None:
            return state
        log.info("index snapshot written to %s at change %d (%d pairs)",
                 path, state.head, fresh.header.count)
        return StoreState(_index_of(fresh), state.addresses, state.head)
    finally:
        snapshot.unlock(fd)


class SnapshotKeeper:
    """Moves one service's index onto newer snapshots and writes them."""

    def __init__(self, core: ServiceCore, store: Store, path: str, position: int) -> None:
        self._core = core
        self._store = store
        self.path = path
        self.position = position
        """Feed position of the snapshot the index is mapped from."""
        self._seen: tuple[int, int] | None = self._stat()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="optout-snapshot")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        pause = CHECK_EVERY
        while True:
            await asyncio.sleep(pause)
            try:
                await self.tick()
                pause = CHECK_EVERY
            except Exception as exc:
                # E.g. a read-only directory: the index works from private
                # memory meanwhile; try again now and then, log each time.
                pause = FAILURE_PAUSE
                log.warning("index snapshot upkeep failed (again in %.0f s): %s",
                            pause, exc, exc_info=not isinstance(exc, OSError))

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    async def tick(self) -> None:
        """One look: adopt a newer snapshot, or write one when due."""
        seen = self._stat()
        if seen is not None and seen != self._seen:
            moved, settled = await self._adopt()
            if settled:
                self._seen = seen  # nothing newer to wait for in this file
            if moved:
                return
        index = self._core._index
        if not index.shared or index.delta_size >= rewrite_at(len(index)):
            await self.write()

    async def _adopt(self) -> tuple[bool, bool]:
        """Move onto the file's snapshot if it is newer and this process's
        feed has reached it. (moved, settled): settled is False while the
        file is newer than this process's feed (look again later)."""
        index = self._core._index
        try:
            header = await asyncio.to_thread(snapshot.read_header, self.path)
        except (OSError, snapshot.SnapshotError):
            return False, True  # a broken file: the next write replaces it
        if header.position <= self.position or not index.shared:
            return False, True
        if header.position > self._core._feed.applied:
            return False, False
        snap = await asyncio.to_thread(_open, self.path)
        if snap is None or snap.position != header.position:
            return False, True
        return self._install(snap, index), True

    def _install(self, snap: snapshot.Snapshot, was: UnsubscribedIndex) -> bool:
        """Switch to `snap` (synchronous: no change can slip in between)."""
        core = self._core
        if core._index is not was:
            return False  # reloaded meanwhile: the next tick decides again
        if was.shared:
            # Everything changed since the older snapshot is in the overlay.
            core._index = was.rebased(snap.packed, snap.bits, snap.header.filter_m)
        elif core._feed.applied == snap.position:
            core._index = _index_of(snap)
        else:
            return False  # a private index moved on during the write: write again later
        self.position = snap.position
        log.info("index moved onto the snapshot at change %d (%d pairs, %d changed since)",
                 snap.position, snap.header.count, core._index.delta_size)
        return True

    async def write(self) -> None:
        """Write the next snapshot from this process's memory and move onto
        it (or onto a newer one another process wrote meanwhile)."""
        fd = await asyncio.to_thread(snapshot.lock, self.path)
        try:
            if (await self._adopt())[0]:
                self._seen = self._stat()
                return
            index = self._core._index
            position = self._core._feed.applied
            # Captured now: the base array never changes in place, the
            # overlay copy is this moment's (`position`'s) truth.
            base, over = index._base, dict(index._over)
            async with self._store.reading() as tx:
                fp = await fingerprint_at(tx, position)
            if fp is None or (position <= self.position and index.shared):
                return
            await asyncio.to_thread(_write, self.path, base, over, position, fp)
            snap = await asyncio.to_thread(_open, self.path)
            self._seen = self._stat()
            if snap is not None:
                self._install(snap, index)
        finally:
            snapshot.unlock(fd)
