"""The in-memory unsubscribed index answers like a plain set of pairs, before
and after its pending changes are merged, at every size."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rules import index as index_module
from rules.index import MAX_ADDRESS_ID, MAX_KEY, UnsubscribedIndex, pack, unpack
from rules.numbers import normalize, to_key

ALICE = to_key(normalize("+1 415 555 0100"))
BOB = to_key(normalize("+1 604 555 0199"))
SHORT = to_key("898211")


def test_an_empty_index_knows_nobody() -> None:
    index = UnsubscribedIndex()
    assert index.addresses_of(ALICE) == ()
    assert len(index) == 0
    assert (ALICE, 1) not in index
    assert list(index) == []


def test_add_lookup_remove() -> None:
    index = UnsubscribedIndex()
    assert index.add(ALICE, 7) is True
    assert index.add(ALICE, 7) is False  # already unsubscribed there
    assert index.add(ALICE, 2) is True
    assert index.add(SHORT, 7) is True
    assert index.addresses_of(ALICE) == (2, 7)
    assert index.addresses_of(BOB) == ()
    assert (ALICE, 7) in index
    assert (BOB, 7) not in index
    assert len(index) == 3

    assert index.remove(ALICE, 7) is True
    assert index.remove(ALICE, 7) is False
    assert index.remove(BOB, 1) is False
    assert index.addresses_of(ALICE) == (2,)
    assert len(index) == 2


def test_numpy_integers_are_plain_keys() -> None:
    index = UnsubscribedIndex()
    assert index.add(np.int64(ALICE), np.int16(4))
    assert index.addresses_of(ALICE) == (4,)
    assert (np.int64(ALICE), 4) in index
    assert ("+14155550100", 4) not in index
    assert index.remove(np.int64(ALICE), 4)
    with pytest.raises(TypeError):
        index.add(1.5, 1)  # type: ignore[arg-type]


def test_changes_survive_a_merge_and_can_be_undone_after_it() -> None:
    index = UnsubscribedIndex()
    index.add(ALICE, 1)
    index.add(ALICE, 3)
    index.compact()  # now in the sorted array, not the overlay
    assert index.addresses_of(ALICE) == (1, 3)
    assert index.remove(ALICE, 1) is True  # removing from the array goes via the overlay
    assert index.addresses_of(ALICE) == (3,)
    index.compact()
    assert index.addresses_of(ALICE) == (3,)
    assert index.to_packed().tolist() == [pack(ALICE, 3)]
    assert len(index) == 1


def test_the_overlay_merges_itself_when_it_grows() -> None:
    index = UnsubscribedIndex()
    threshold = index_module._MIN_MERGE_AT
    for i in range(threshold - 1):
        index.add(ALICE + i, 1)
    assert len(index._over) == threshold - 1
    assert index._base.size == 0
    index.add(ALICE + threshold, 1)  # the change that crosses the threshold
    assert len(index._over) == 0
    assert index._base.size == threshold
    assert all(index.addresses_of(ALICE + i) == (1,) for i in range(threshold - 1))
    assert index.addresses_of(ALICE + threshold - 1) == ()


def test_the_filter_grows_with_the_index() -> None:
    index = UnsubscribedIndex()
    capacity = index._filter_capacity
    keys = range(ALICE, ALICE + 2 * capacity + 10_000)
    for key in keys:
        index.add(key, 5)
    assert index._filter_capacity > capacity
    assert len(index) == len(keys)
    assert all(index.addresses_of(key) == (5,) for key in keys[::997])
    # Few misses should reach the array: the filter stays selective.
    probes = range(BOB, BOB + 20_000)
    false_positives = sum(index._bits[(k % index._m) >> 3] >> ((k % index._m) & 7) & 1
                          for k in probes)  # fmt: skip
    assert false_positives < 0.1 * len(probes)
    assert all(index.addresses_of(k) == () for k in probes)


def test_remove_address_drops_every_pair_there() -> None:
    index = UnsubscribedIndex.from_sorted_pairs(
        np.array(sorted([pack(ALICE, 1), pack(ALICE, 2), pack(BOB, 2), pack(SHORT, 3)]))
    )
    index.add(BOB, 1)  # pending in the overlay
    assert index.remove_address(2) == 2
    assert index.remove_address(2) == 0
    assert index.remove_address(MAX_ADDRESS_ID + 1) == 0
    assert index.addresses_of(ALICE) == (1,)
    assert index.addresses_of(BOB) == (1,)
    assert index.addresses_of(SHORT) == (3,)
    assert len(index) == 3
    assert index.remove_address(1) == 2
    assert sorted(index) == [(SHORT, 3)]


def test_loading_sorted_unsorted_and_duplicated_input() -> None:
    pairs = [pack(BOB, 2), pack(ALICE, 1), pack(BOB, 2), pack(ALICE, 9)]
    for packed in (np.array(pairs, dtype=np.uint64), pairs, np.array(sorted(set(pairs)))):
        index = UnsubscribedIndex.from_sorted_pairs(packed)
        assert len(index) == 3
        assert index.addresses_of(ALICE) == (1, 9)
        assert index.addresses_of(BOB) == (2,)
    chunks = [np.array(pairs[:2]), np.array(pairs[2:]), np.array([], dtype=np.int64)]
    assert UnsubscribedIndex.bulk_load(chunks).to_packed().tolist() == sorted(set(pairs))
    assert len(UnsubscribedIndex.bulk_load([])) == 0


@pytest.mark.parametrize(
    "bad",
    [np.array([[1, 2]]), np.array([1.5]), np.array([-1]), np.array([2**64 - 1], dtype=np.uint64)],
)
def test_loading_refuses_garbage(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        UnsubscribedIndex.from_sorted_pairs(bad)


def test_loading_from_a_real_sqlite_file(tmp_path: Path) -> None:
    """The start-up path the store uses: one packed integer column."""
    db = sqlite3.connect(tmp_path / "optout.db")
    db.execute("CREATE TABLE unsub (number_key INTEGER, address_id INTEGER, packed INTEGER)")
    rows = [(ALICE + i, 1 + i % 3, pack(ALICE + i, 1 + i % 3)) for i in range(5000)]
    db.executemany("INSERT INTO unsub VALUES (?, ?, ?)", rows)
    db.commit()
    count = db.execute("SELECT count(*) FROM unsub").fetchone()[0]
    cursor = db.execute("SELECT packed FROM unsub ORDER BY packed")
    index = UnsubscribedIndex.from_rows(cursor, count)
    db.close()
    assert len(index) == 5000
    assert index.addresses_of(ALICE + 4) == (2,)
    assert index.addresses_of(ALICE + 5000) == ()


def test_pack_bounds() -> None:
    assert unpack(pack(MAX_KEY, MAX_ADDRESS_ID)) == (MAX_KEY, MAX_ADDRESS_ID)
    assert pack(MAX_KEY, MAX_ADDRESS_ID) < 2**63  # fits an SQLite INTEGER
    for key, address_id in [(-1, 1), (MAX_KEY + 1, 1), (1, -1), (1, MAX_ADDRESS_ID + 1)]:
        with pytest.raises(ValueError):
            pack(key, address_id)
    index = UnsubscribedIndex()
    with pytest.raises(ValueError):
        index.add(MAX_KEY + 1, 1)
    assert index.addresses_of(MAX_KEY + 1) == ()
    assert index.addresses_of(-5) == ()
    assert len(index) == 0


def test_every_e164_number_of_the_region_fits() -> None:
    # The biggest in-scope key, and a 15-digit foreign number, are packable.
    assert to_key("+19999999999") <= MAX_KEY
    assert to_key("+999999999999999") > MAX_KEY  # out of scope; never stored


def test_extreme_keys_and_addresses() -> None:
    index = UnsubscribedIndex()
    for key, address_id in [(0, 0), (MAX_KEY, MAX_ADDRESS_ID), (MAX_KEY, 0), (1, MAX_ADDRESS_ID)]:
        assert index.add(key, address_id)
    index.compact()
    assert index.addresses_of(MAX_KEY) == (0, MAX_ADDRESS_ID)
    assert index.addresses_of(0) == (0,)
    assert index.addresses_of(1) == (MAX_ADDRESS_ID,)
    assert index.remove(MAX_KEY, 0)
    index.compact()
    assert index.addresses_of(MAX_KEY) == (MAX_ADDRESS_ID,)


@given(st.sets(st.tuples(st.integers(0, 10**11), st.integers(0, MAX_ADDRESS_ID)), max_size=200))
def test_a_loaded_index_equals_its_input(pairs: set[tuple[int, int]]) -> None:
    index = UnsubscribedIndex.from_sorted_pairs(
        np.array([pack(k, a) for k, a in pairs], dtype=np.int64)
    )
    assert sorted(index) == sorted(pairs)
    assert len(index) == len(pairs)
    for key, address_id in pairs:
        assert (key, address_id) in index
        assert address_id in index.addresses_of(key)


# --- model-based test -------------------------------------------------------------

# Few keys and addresses, so that operations collide; one huge key range
# so that filter positions differ.
KEYS = st.one_of(st.integers(ALICE, ALICE + 40), st.integers(0, MAX_KEY))
ADDRESSES = st.integers(1, 6)


class IndexMatchesASet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = UnsubscribedIndex()
        self.model: set[tuple[int, int]] = set()
        self.seen_keys: list[int] = []

    @rule(key=KEYS, address_id=ADDRESSES)
    def add(self, key: int, address_id: int) -> None:
        assert self.index.add(key, address_id) == ((key, address_id) not in self.model)
        self.model.add((key, address_id))
        self.seen_keys.append(key)

    @precondition(lambda self: bool(self.seen_keys))
    @rule(data=st.data(), address_id=ADDRESSES)
    def remove_known(self, data: st.DataObject, address_id: int) -> None:
        key = data.draw(st.sampled_from(self.seen_keys))
        assert self.index.remove(key, address_id) == ((key, address_id) in self.model)
        self.model.discard((key, address_id))

    @rule(key=KEYS, address_id=ADDRESSES)
    def remove_any(self, key: int, address_id: int) -> None:
        assert self.index.remove(key, address_id) == ((key, address_id) in self.model)
        self.model.discard((key, address_id))

    @rule(address_id=ADDRESSES)
    def remove_address(self, address_id: int) -> None:
        expected = {pair for pair in self.model if pair[1] == address_id}
        assert self.index.remove_address(address_id) == len(expected)
        self.model -= expected

    @rule()
    def compact(self) -> None:
        self.index.compact()

    @rule()
    def reload(self) -> None:
        """What a restart does: load the persisted pairs into a new index."""
        self.index = UnsubscribedIndex.from_sorted_pairs(self.index.to_packed())

    @rule(key=KEYS)
    def lookup(self, key: int) -> None:
        expected = tuple(sorted(a for k, a in self.model if k == key))
        assert self.index.addresses_of(key) == expected

    @invariant()
    def same_size_and_known_keys_agree(self) -> None:
        assert len(self.index) == len(self.model)
        for key in self.seen_keys[-5:]:
            expected = tuple(sorted(a for k, a in self.model if k == key))
            assert self.index.addresses_of(key) == expected


TestIndexMatchesASet = IndexMatchesASet.TestCase
TestIndexMatchesASet.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_model_with_a_tiny_merge_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same state machine, merging every few changes."""
    monkeypatch.setattr(index_module, "_MIN_MERGE_AT", 3)
    monkeypatch.setattr(index_module, "_MIN_FILTER_CAPACITY", 4)
    monkeypatch.setattr(index_module, "_FILTER_CHUNK", 3)
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        IndexMatchesASet, settings=settings(max_examples=100, stateful_step_count=60, deadline=None)
    )
