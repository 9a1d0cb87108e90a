"""The index snapshot: a file next to the SQLite store, mapped read-only by
every process on it, with the feed's changes on top; fail-safe when the file
is damaged or belongs to another store."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from rules import snapshot
from rules.index import UnsubscribedIndex, build_filter, pack
from rules.model import SmsType, Source
from rules.service import OptOutService
from rules.service import snapshots as keeper
from rules.store import Change

TOLL_FREE = "+18005550199"
M = SmsType.MARKETING


def number(i: int) -> str:
    return f"+1415{5550000 + i:07d}"


def write(path: Path, packed: np.ndarray, position: int = 7) -> None:
    bits, m = build_filter(packed, int(packed.size))
    snapshot.write_snapshot(str(path), packed, bits, m, position,
                            snapshot.fingerprint(Change(position, "unsub", {"k": 1})))


# --- the file -------------------------------------------------------------------


def test_a_snapshot_maps_back_to_the_same_index(tmp_path: Path) -> None:
    # Given an index of 100k pairs written as a snapshot
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(10**9, 10**10, 100_000))
    packed = np.sort((keys << 15) | rng.integers(1, 4, keys.size))
    private = UnsubscribedIndex.from_sorted_pairs(packed.copy())
    path = tmp_path / "x.db.index"
    write(path, packed)
    # When it is mapped back
    snap = snapshot.open_snapshot(str(path))
    shared = UnsubscribedIndex.from_snapshot(snap.packed, snap.bits, snap.header.filter_m)
    # Then it holds the same pairs, read-only, at the position written
    assert snap.position == 7 and snap.header.count == keys.size and len(shared) == keys.size
    assert not snap.packed.flags.writeable and snap.bits.readonly
    for key in [int(k) for k in keys[:500]] + list(range(10**9, 10**9 + 500)):
        assert shared.addresses_of(key) == private.addresses_of(key)
    # And changes land in memory on top of it, including numbers the mapped
    # filter has no bit for
    fresh = 5_000_000_001
    assert shared.addresses_of(fresh) == ()
    assert shared.add(fresh, 9) and shared.addresses_of(fresh) == (9,)
    first = int(keys[0])
    assert shared.remove(first, private.addresses_of(first)[0])
    assert shared.addresses_of(first) == ()
    assert len(shared) == keys.size and shared.delta_size == 2
    # And the next snapshot of it, rebased, keeps only what changed since
    write(path, shared.packed_now(), position=9)
    newer = snapshot.open_snapshot(str(path))
    moved = shared.rebased(newer.packed, newer.bits, newer.header.filter_m)
    assert moved.delta_size == 0 and len(moved) == keys.size
    assert moved.addresses_of(fresh) == (9,) and moved.addresses_of(first) == ()


def test_remove_address_on_a_mapped_snapshot(tmp_path: Path) -> None:
    # Given a mapped snapshot with numbers at addresses 1 and 2
    packed = np.array(sorted(pack(k, a) for k in range(100, 120) for a in (1, 2)), dtype=np.int64)
    path = tmp_path / "y.db.index"
    write(path, packed)
    snap = snapshot.open_snapshot(str(path))
    index = UnsubscribedIndex.from_snapshot(snap.packed, snap.bits, snap.header.filter_m)
    index.add(500, 2)
    # When address 2 is deleted
    assert index.remove_address(2) == 21
    # Then only address 1 is left, and the file is untouched
    assert all(index.addresses_of(k) == (1,) for k in range(100, 120))
    assert index.addresses_of(500) == () and len(index) == 20
    assert snapshot.open_snapshot(str(path)).header.count == 40


@pytest.mark.parametrize("damage", ["flip", "truncate", "version", "empty"])
def test_a_damaged_snapshot_is_refused(tmp_path: Path, damage: str) -> None:
    # Given a snapshot file
    path = tmp_path / "z.db.index"
    write(path, np.arange(1, 50_000, dtype=np.int64) << 15 | 1)
    data = bytearray(path.read_bytes())
    # When it is damaged
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        del data[-100:]
    elif damage == "version":
        data[8] = 99
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    # Then opening it says why, instead of answering from it
    with pytest.raises(snapshot.SnapshotError, match={
            "flip": "checksum", "truncate": "size", "version": "version",
            "empty": "short"}[damage]):
        snapshot.open_snapshot(str(path))


# --- the service on a snapshot -----------------------------------------------------


async def fill(url: str, n: int, **kwargs: object) -> None:
    service = await OptOutService.open(url, snapshot=False, **kwargs)  # type: ignore[arg-type]
    try:
        if not await service.list_addresses():
            await service.create_address(TOLL_FREE, "toll-free")
        lines = ["phone_number,inbound_address"] + [f"{number(i)},{TOLL_FREE}" for i in range(n)]
        await service.import_csv(lines)
    finally:
        await service.close()


def blocked(service: OptOutService, i: int) -> bool:
    return not service.decide("app", M, number(i)).allowed


async def test_start_up_maps_the_snapshot_and_applies_the_feed_since(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store with 3,000 opt-outs, opened once (which writes the snapshot)
    db = tmp_path / "optout.db"
    url = f"sqlite:///{db}"
    await fill(url, 3000)
    first = await OptOutService.open(url, follow=False)
    await first.close()
    index_file = Path(f"{db}.index")
    assert index_file.exists() and oct(index_file.stat().st_mode & 0o777) == "0o600"
    # And changes made after it by a process that does not use snapshots
    other = await OptOutService.open(url, snapshot=False, follow=False)
    await other.resubscribe(number(5), TOLL_FREE, source=Source.API, reason="consent given")
    await other.unsubscribe(number(9999), TOLL_FREE, source=Source.API)
    await other.close()
    # When the sidecar starts again
    caplog.set_level(logging.INFO, logger="rules.service.snapshots")
    service = await OptOutService.open(url, follow=False)
    try:
        # Then it mapped the file instead of reading the table
        assert any("index mapped from" in r.getMessage() for r in caplog.records)
        assert service._index.shared
        # And decides with the changes made since the snapshot
        assert blocked(service, 0) and blocked(service, 2999) and blocked(service, 9999)
        assert not blocked(service, 5) and not blocked(service, 3000)
        assert service.unsubscribed_count() == 3000
    finally:
        await service.close()


@pytest.mark.parametrize("damage", ["checksum", "other_store"])
async def test_a_snapshot_that_does_not_fit_is_rebuilt_from_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    # Given a store whose snapshot is damaged, or another store's
    db = tmp_path / "optout.db"
    url = f"sqlite:///{db}"
    await fill(url, 500)
    index_file = Path(f"{db}.index")
    if damage == "checksum":
        service = await OptOutService.open(url, follow=False)
        await service.close()
        data = bytearray(index_file.read_bytes())
        data[-1] ^= 1
        index_file.write_bytes(bytes(data))
    else:
        elsewhere = tmp_path / "other.db"
        await fill(f"sqlite:///{elsewhere}", 10)
        service = await OptOutService.open(f"sqlite:///{elsewhere}", follow=False)
        await service.close()
        os.replace(f"{elsewhere}.index", index_file)
    # When the sidecar starts
    caplog.set_level(logging.INFO)
    service = await OptOutService.open(url, follow=False)
    try:
        # Then it said why it ignored the file, read the store, and decides right
        assert any("ignored" in r.getMessage() for r in caplog.records)
        assert blocked(service, 0) and blocked(service, 499) and not blocked(service, 500)
        assert service.unsubscribed_count() == 500
    finally:
        await service.close()
    # And a fresh snapshot was written for the next start
    assert snapshot.open_snapshot(str(index_file)).header.count == 500


async def test_processes_move_onto_the_snapshot_one_of_them_writes(tmp_path: Path) -> None:
    # Given two services (two workers' memory) on one store and its snapshot
    db = tmp_path / "optout.db"
    url = f"sqlite:///{db}"
    await fill(url, 100)
    a = await OptOutService.open(url, follow=False)
    b = await OptOutService.open(url, follow=False)
    try:
        assert a._index.shared and b._index.shared
        start = a._snapshots.position if a._snapshots else -1
        # When more than a rewrite's worth of numbers opt out through A
        await a.import_csv(["phone_number,inbound_address"]
                           + [f"{number(i)},{TOLL_FREE}" for i in range(100, 5000)])
        assert a._index.delta_size >= keeper.rewrite_at(len(a._index))
        assert a._snapshots is not None and b._snapshots is not None
        await a._snapshots.tick()
        # Then A wrote the next snapshot and moved onto it
        assert a._snapshots.position > start and a._index.delta_size == 0
        # And B, once its feed has reached that point, moves onto it too
        await b._feed.follow_once()
        await b._snapshots.tick()
        assert b._snapshots.position == a._snapshots.position and b._index.delta_size == 0
        for service in (a, b):
            assert blocked(service, 0) and blocked(service, 4999) and not blocked(service, 5000)
            assert service.unsubscribed_count() == 5000
    finally:
        await a.close()
        await b.close()


async def test_a_snapshot_that_cannot_be_written_means_no_snapshot_not_no_sidecar(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store whose snapshot lock cannot be opened (as in a read-only
    # directory; a directory in its place fails even for root)
    db = tmp_path / "optout.db"
    url = f"sqlite:///{db}"
    await fill(url, 50)
    Path(f"{db}.index.lock").mkdir()
    # When the sidecar starts
    caplog.set_level(logging.WARNING)
    service = await OptOutService.open(url, follow=False)
    # Then it says why, and decides from private memory
    try:
        assert any("not used" in r.getMessage() for r in caplog.records)
        assert not service._index.shared and blocked(service, 49) and not blocked(service, 50)
    finally:
        await service.close()
