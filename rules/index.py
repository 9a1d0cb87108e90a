"""The in-memory index of unsubscribed (number, inbound address) pairs.

Every submit_sm asks "is this destination unsubscribed anywhere?", and with
10 million unsubscribed numbers that question has to be answered in well
under a microsecond, in pure Python, from less than 40 bytes per pair
(SPEC section 5). A Python ``set``/``dict`` of ints costs 60-100 bytes per
entry, so the index is built from three parts:

* **base**: an immutable, sorted numpy ``int64`` array of packed pairs
  (``key << 15 | address_id``, see `pack`): 8 bytes per pair. A number's
  pairs are adjacent, found with one ``searchsorted`` (about 1-2 us at 10M,
  dominated by cache misses) and read through a ``memoryview`` (which yields
  plain ints, cheaper than numpy scalars). ``int64`` rather than ``uint64``
  because SQLite integers are signed 64-bit, so the store can keep the same
  packed value in a column, and because numpy casts the whole array when a
  Python int is compared with ``uint64``.
* **filter**: a ``bytearray`` bitset indexed by ``key % m``, with about 32
  bits (4 bytes) per number. Most submits go to numbers that never opted
  out; for them a single bit test answers ``()`` without touching the array.
  About 3% of misses are false positives and pay for a ``searchsorted``.
  Bits are set on every add and never cleared until a rebuild, so the filter
  may say "maybe" but never "no" wrongly.
* **overlay**: a ``dict`` mapping a number key to its complete, current
  tuple of address ids, for numbers changed since the last merge (adds and
  removes alike). Lookups consult it before the base. When it holds more
  than ``max(4096, len/128)`` numbers it is merged into a new base array
  (O(N) copies: about 0.1 s at 10M pairs, amortised over >78k changes), so
  it never costs more than a byte or two per pair.

Measured with ``bench/bench_decisions.py`` on the shared 2-core
development box (Python 3.11, numpy 2.4; other jobs running, so rates vary
by about 2x between runs):

==========================  ==========  ==========  ===========
pairs                                0   1,000,000   10,000,000
load from sorted array (s)        0.00        0.05         0.42
load through SQLite (s)              -        0.43         5.52
RSS after load (B/pair)              -        13.4         12.1
peak RSS during load (B/pair)        -        29.4         14.5
misses (lookups/s)               6.3 M       3.9 M        1.7 M
hits (lookups/s)                     -       0.75 M       0.39 M
merge of 2,000 changes (s)       0.001       0.004        0.049
==========================  ==========  ==========  ===========

At 10M the 40 MB filter no longer fits a cache, so a miss costs one memory
access; real traffic repeats destinations and does better.

**Mapped** (`from_snapshot`): the base and the filter can instead be
read-only views of a snapshot file (`rules.snapshot`) that every worker
process maps, so the host holds one copy. Such an index never merges into
private memory: changes stay in the overlay (numbers added since have no
filter bit, so a miss then also asks the overlay, `_loose`) until the
service writes the next snapshot and moves onto it (`rebased`).

Limits: address ids are below 2**15 and number keys below 2**48 (every
in-scope key from `rules.numbers.to_key` is below 2**35). `add` refuses
anything else; `addresses_of` answers ``()`` for keys that cannot be stored.

Not thread-safe: one event loop owns the index. Merges and `remove_address`
run synchronously (tens to hundreds of milliseconds at 10M pairs).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, SupportsIndex

import numpy as np
import numpy.typing as npt

__all__ = [
    "ADDRESS_BITS",
    "MAX_ADDRESS_ID",
    "MAX_KEY",
    "UnsubscribedIndex",
    "pack",
    "unpack",
]

ADDRESS_BITS: Final = 15
MAX_ADDRESS_ID: Final = (1 << ADDRESS_BITS) - 1
MAX_KEY: Final = (1 << (63 - ADDRESS_BITS)) - 1  # packed values stay in int64
_ADDRESS_MASK: Final = MAX_ADDRESS_ID

#: Filter bits per number: ~3% false positives (1 - e^(-1/32)).
FILTER_BITS_PER_KEY: Final = 32
_MIN_FILTER_CAPACITY: Final = 65536
_FILTER_CHUNK: Final = 1 << 20
#: The overlay is merged into the base when it holds more numbers than this
#: or len/`_MERGE_FRACTION`, whichever is larger.
_MIN_MERGE_AT: Final = 4096
_MERGE_FRACTION: Final = 128

Packed = npt.NDArray[np.int64]


def pack(key: int, address_id: int) -> int:
    """One (number key, address id) pair as a single non-negative int64,
    ordered by key first: the store can SELECT it as one column."""
    if not 0 <= key <= MAX_KEY:
        raise ValueError(f"number key out of range: {key}")
    if not 0 <= address_id <= MAX_ADDRESS_ID:
        raise ValueError(f"address id out of range (0..{MAX_ADDRESS_ID}): {address_id}")
    return (key << ADDRESS_BITS) | address_id


def unpack(packed: int) -> tuple[int, int]:
    """The inverse of `pack`."""
    return packed >> ADDRESS_BITS, packed & _ADDRESS_MASK


def _empty() -> Packed:
    return np.zeros(0, dtype=np.int64)


def _as_sorted_unique(packed: npt.ArrayLike) -> Packed:
    """int64, strictly increasing, range-checked; sorts only if needed."""
    array = np.asarray(packed)
    if array.ndim != 1:
        raise ValueError("packed pairs must be a one-dimensional array")
    if array.size == 0:
        return _empty()
    if array.dtype.kind not in "iu":
        raise ValueError(f"packed pairs must be integers, not {array.dtype}")
    if array.dtype.kind == "u" and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError("packed pair out of range")
    array = array.astype(np.int64, copy=False)
    if int(array.min()) < 0:
        raise ValueError("packed pair out of range (negative)")
    if not bool(np.all(array[1:] > array[:-1])):
        array = np.sort(array)  # much faster than np.unique
        duplicate = array[1:] == array[:-1]
        if bool(duplicate.any()):
            array = array[np.concatenate(([True], ~duplicate))]
    return array


class UnsubscribedIndex:
    """Which (number key, address id) pairs are unsubscribed.

    Keys come from `rules.numbers.to_key`; address ids are the store's row
    ids of inbound addresses.
    """

    __slots__ = (
        "_base",
        "_bits",
        "_count",
        "_filter_capacity",
        "_loose",
        "_m",
        "_merge_at",
        "_over",
        "_searchsorted",
        "_shared",
        "_view",
    )

    _bits: bytearray | memoryview | bytes  # memoryview: a mapped, read-only snapshot

    def __init__(self) -> None:
        self._over: dict[int, tuple[int, ...]] = {}
        self._count = 0
        self._shared = False
        self._loose = False
        self._install_base(_empty())
        self._rebuild_filter()

    # --- construction -----------------------------------------------------------

    @classmethod
    def from_sorted_pairs(cls, packed: npt.ArrayLike) -> UnsubscribedIndex:
        """The fast start-up path: an array of `pack`ed pairs, ideally
        already sorted (``ORDER BY`` the packed column); unsorted input or
        duplicates are tolerated at the cost of a sort. The array is used as
        is when it already is sorted ``int64``: do not modify it afterwards.
        """
        base = _as_sorted_unique(packed)
        # cls() first (an empty base and a minimal filter, microseconds):
        # skipping __init__ with cls.__new__ is not possible once mypyc
        # compiles this class (gateway/speed.py).
        index = cls()
        index._count = int(base.size)
        index._install_base(base)
        index._rebuild_filter()
        return index

    @classmethod
    def from_snapshot(cls, packed: Packed, bits: memoryview | bytes | bytearray, m: int,
                      over: dict[int, tuple[int, ...]] | None = None) -> UnsubscribedIndex:
        """An index over a mapped snapshot (`rules.snapshot`): `packed` (sorted,
        unique) and the filter `bits` with modulus `m` are read-only and shared
        with every process mapping the same file; `over` holds the pairs of
        the numbers changed since (their complete current address tuples).
        Such an index never merges into private memory: the service writes a
        new snapshot when the changes grow (`delta_size`)."""
        index = cls()  # not cls.__new__: mypyc-compiled classes need __init__
        index._shared = True
        index._bits = bits
        index._m = m
        index._filter_capacity = max(_MIN_FILTER_CAPACITY, (m - 1) // FILTER_BITS_PER_KEY)
        index._count = int(packed.size)
        index._install_base(packed)
        index._merge_at = 1 << 62  # never: see above
        index._over = {}
        index._loose = False
        index._count = int(packed.size)
        for key, current in (over or {}).items():
            before = index._base_lookup(key)
            if current != before:
                index._over[key] = current
                index._count += len(current) - len(before)
                if current and not index._has_bit(key):
                    index._loose = True
        return index

    def rebased(self, packed: Packed, bits: memoryview | bytes | bytearray,
                m: int) -> UnsubscribedIndex:
        """This index's current content over a newer snapshot of it: valid
        when every number changed since that snapshot was written is in this
        index's overlay (true for a snapshot-based index whose snapshot is
        older than the new one, both taken from the same feed)."""
        return UnsubscribedIndex.from_snapshot(packed, bits, m, self._over)

    @property
    def shared(self) -> bool:
        """Whether the big arrays are a mapped snapshot (`from_snapshot`)."""
        return self._shared

    @property
    def delta_size(self) -> int:
        """Numbers changed since the base array was built or mapped."""
        return len(self._over)

    def _has_bit(self, key: int) -> bool:
        h = key % self._m
        return bool((self._bits[h >> 3] >> (h & 7)) & 1)

    @classmethod
    def bulk_load(cls, chunks: Iterable[npt.ArrayLike]) -> UnsubscribedIndex:
        """Build from several chunks of packed pairs (e.g. one per
        ``cursor.fetchmany``), in any order."""
        arrays = [np.asarray(chunk, dtype=np.int64) for chunk in chunks]
        if not arrays:
            return cls()
        return cls.from_sorted_pairs(np.concatenate(arrays))

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[int]], count: int = -1) -> UnsubscribedIndex:
        """Build from database rows whose first column is the packed pair,
        e.g. a sqlite3 cursor over ``SELECT packed FROM ... ORDER BY 1``.
        `count`, when known, lets numpy allocate once."""
        flat = (row[0] for row in rows)
        return cls.from_sorted_pairs(np.fromiter(flat, dtype=np.int64, count=count))

    def _install_base(self, base: Packed) -> None:
        self._base = base
        self._searchsorted = base.searchsorted
        self._view = base.data  # a memoryview: indexing yields plain ints
        self._merge_at = max(_MIN_MERGE_AT, self._count // _MERGE_FRACTION)

    def _rebuild_filter(self) -> None:
        """A fresh filter sized for the current count (drops stale bits)."""
        self._merge()
        capacity = max(_MIN_FILTER_CAPACITY, self._count)
        self._bits, self._m = build_filter(self._base, capacity)
        self._filter_capacity = capacity
        self._shared = False
        self._loose = False

    # --- queries (the hot path) ---------------------------------------------------

    def addresses_of(self, key: int) -> tuple[int, ...]:
        """The address ids `key` is unsubscribed at, sorted; ``()`` for the
        common case of a number that never opted out."""
        h = key % self._m
        if not (self._bits[h >> 3] >> (h & 7)) & 1:
            if self._loose:  # a mapped filter lacks bits of numbers added since
                return self._over.get(key, ())
            return ()
        current = self._over.get(key)
        if current is not None:
            return current
        return self._base_lookup(key)

    def _base_lookup(self, key: int) -> tuple[int, ...]:
        if not 0 <= key <= MAX_KEY:
            return ()
        low = key << ADDRESS_BITS
        high = low + _ADDRESS_MASK
        view = self._view
        i = int(self._searchsorted(low))
        size = len(view)
        if i >= size or view[i] > high:
            return ()  # a filter false positive
        found: list[int] = []
        while i < size:
            value = view[i]
            if value > high:
                break
            found.append(value - low)
            i += 1
        return tuple(found)

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        key, address_id = pair
        try:
            key = operator.index(key)  # ints and numpy integers alike
        except TypeError:
            return False
        return address_id in self.addresses_of(key)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """All (key, address id) pairs in key order (merges first)."""
        if not self._shared:
            self._merge()
        for value in self.packed_now().data:
            yield value >> ADDRESS_BITS, value & _ADDRESS_MASK

    def to_packed(self) -> Packed:
        """A sorted copy of all pairs, packed (merges first)."""
        if not self._shared:
            self._merge()
        return self.packed_now().copy()

    def count_by_address(self) -> dict[int, int]:
        """How many numbers are unsubscribed at each address id (ids with
        none are absent). Reads the array in chunks so no full-size
        temporary copy is made."""
        self._merge()
        counts = np.zeros(MAX_ADDRESS_ID + 1, dtype=np.int64)
        base = self._base
        step = 1 << 20
        for start in range(0, len(base), step):
            counts += np.bincount(base[start : start + step] & _ADDRESS_MASK,
                                  minlength=MAX_ADDRESS_ID + 1)
        return {int(i): int(counts[i]) for i in np.flatnonzero(counts)}

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: array, filter and an estimate of the
        overlay (~150 bytes per changed number)."""
        return int(self._base.nbytes) + len(self._bits) + 150 * len(self._over)

    # --- changes ------------------------------------------------------------------

    def add(self, key: SupportsIndex, address_id: SupportsIndex) -> bool:
        """Mark `key` unsubscribed at `address_id`; False if it already was."""
        key, address_id = operator.index(key), operator.index(address_id)
        pack(key, address_id)  # range check
        current = self.addresses_of(key)
        if address_id in current:
            return False
        self._over[key] = tuple(sorted((*current, address_id)))
        h = key % self._m
        if self._shared:
            if not (self._bits[h >> 3] >> (h & 7)) & 1:
                self._loose = True  # the mapped filter is read-only
        else:
            self._bits[h >> 3] |= 1 << (h & 7)  # type: ignore[index]
        self._count += 1
        self._after_change()
        return True

    def remove(self, key: SupportsIndex, address_id: int) -> bool:
        """Mark `key` subscribed again at `address_id`; False if it was not
        unsubscribed there."""
        key = operator.index(key)
        current = self.addresses_of(key)
        if address_id not in current:
            return False
        self._over[key] = tuple(a for a in current if a != address_id)
        self._count -= 1
        self._after_change()
        return True

    def remove_address(self, address_id: int) -> int:
        """Forget every pair at `address_id` (the address was deleted);
        returns how many were dropped. O(N)."""
        if not 0 <= address_id <= MAX_ADDRESS_ID:
            return 0
        if self._shared:
            return self._remove_address_over(address_id)
        self._merge()
        base = self._base
        hit = (base & _ADDRESS_MASK) == address_id
        dropped = int(np.count_nonzero(hit))
        if dropped:
            self._count -= dropped
            self._install_base(base[~hit])
            if dropped > self._count:  # most bits are stale now
                self._rebuild_filter()
        return dropped

    def _remove_address_over(self, address_id: int) -> int:
        """remove_address on a mapped snapshot: the numbers it held there go
        to the overlay (the next snapshot drops them for good)."""
        base = self._base
        keys = set((base[(base & _ADDRESS_MASK) == address_id] >> ADDRESS_BITS).tolist())
        keys.update(k for k, addresses in self._over.items() if address_id in addresses)
        dropped = 0
        for key in keys:
            current = self.addresses_of(key)
            if address_id in current:
                self._over[key] = tuple(a for a in current if a != address_id)
                dropped += 1
        self._count -= dropped
        return dropped

    def packed_now(self) -> Packed:
        """All pairs, sorted and packed, without changing the index (the
        content of the next snapshot); shares the base when nothing changed."""
        return _merged(self._base, self._over) if self._over else self._base

    def compact(self) -> None:
        """Fold pending changes into the sorted array now (normally done
        automatically once enough have accumulated), e.g. after an import.
        A mapped snapshot's index waits for its next snapshot instead."""
        if self._shared:
            return
        self._merge()
        if self._count > 2 * self._filter_capacity:
            self._rebuild_filter()  # keep the false-positive rate near 3%

    def _after_change(self) -> None:
        if len(self._over) >= self._merge_at:
            self.compact()

    def _merge(self) -> None:
        """Fold the overlay into a new base array (private memory)."""
        over = self._over
        if not over:
            return
        base = _merged(self._base, over)
        over.clear()
        if self._shared:
            # Leaving the mapped snapshot: the filter becomes private too.
            self._shared = False
            self._install_base(base)
            self._rebuild_filter()
            return
        self._install_base(base)


def build_filter(base: Packed, capacity: int) -> tuple[bytearray, int]:
    """The filter bitset of `base` sized for `capacity` numbers, and its
    modulus. Built in chunks straight into the bytearray (through a numpy
    view), so the temporaries stay a few MB whatever the size: the peak
    memory of a 10M load stays close to the steady state."""
    m = (FILTER_BITS_PER_KEY * max(_MIN_FILTER_CAPACITY, capacity)) | 1  # odd: spreads keys
    bits = bytearray((m + 7) >> 3)
    view = np.frombuffer(bits, dtype=np.uint8)
    for start in range(0, base.size, _FILTER_CHUNK):
        h = base[start : start + _FILTER_CHUNK] >> ADDRESS_BITS
        np.remainder(h, m, out=h)
        byte = h >> 3
        np.bitwise_and(h, 7, out=h)
        np.left_shift(1, h, out=h)
        np.bitwise_or.at(view, byte, h.astype(np.uint8))
    del view  # release the export so nothing pins the buffer
    return bits, m


def _merged(base: Packed, over: dict[int, tuple[int, ...]]) -> Packed:
    """`base` with the numbers in `over` replaced by their overlay tuples
    (a new array; `base` is not changed)."""
    keys = np.fromiter(over.keys(), dtype=np.int64, count=len(over))
    keys.sort()
    starts = base.searchsorted(keys << ADDRESS_BITS)
    ends = base.searchsorted((keys << ADDRESS_BITS) | _ADDRESS_MASK, side="right")
    lengths = ends - starts
    total = int(lengths.sum())
    if total:
        # Positions of every base pair of a changed number: the overlay
        # holds the whole truth for those numbers.
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        base = np.delete(base, offsets + np.arange(total))
    fresh = np.fromiter(
        itertools.chain.from_iterable(
            ((k << ADDRESS_BITS) | a for a in addresses) for k, addresses in over.items()
        ),
        dtype=np.int64,
    )
    if fresh.size:
        fresh.sort()
        base = np.insert(base, base.searchsorted(fresh), fresh)
    return base
