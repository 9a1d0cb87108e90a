"""The on-disk snapshot of the unsubscribed index, mapped read-only.

With `[smpp] workers = N` every worker keeps an index of every unsubscribed
number. Built in private memory that costs N times 12 bytes a pair; mapped
from one file it costs 12 bytes a pair for the whole host, because the
kernel keeps one copy of a file's pages in its page cache for every process
that maps it. So the index's two big parts -- the sorted packed pairs and
the filter bitset (`rules.index`) -- live in a file next to the store, and
each process keeps only the changes since the file's feed position in
memory (`UnsubscribedIndex.from_snapshot`).

File layout (little-endian; sections start at 4096-byte boundaries, so the
arrays are aligned and the header can grow)::

    0   magic       8 bytes  b"OPTOUTIX"
    8   version     u32      FORMAT_VERSION
    12  addr_bits   u32      rules.index.ADDRESS_BITS (the packing)
    16  position    i64      id of the last change of the feed it reflects
    24  count       u64      packed pairs
    32  filter_m    u64      the filter's modulus
    40  filter_len  u64      filter bytes
    48  fingerprint 16 bytes blake2b of change `position` (which store it is)
    64  checksum    u32      crc32 of bytes 0..64 and every section
    4096                     count x int64 packed pairs, ascending
    4096 + pad(8 * count)    filter_len bytes

A snapshot is only a cache: one whose magic, version, packing, size or
checksum is wrong, or whose change `position` the store no longer holds
with the same fingerprint (another database, or pruned from the feed), is
ignored and written again from the store. Writing is atomic: a temporary
file in the same directory, fsync, rename, fsync of the directory; a
process that crashes half-way leaves the previous snapshot (or none).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from rules.index import ADDRESS_BITS
from rules.store import Change

__all__ = [
    "FORMAT_VERSION",
    "Snapshot",
    "SnapshotError",
    "fingerprint",
    "lock",
    "open_snapshot",
    "read_header",
    "unlock",
    "write_snapshot",
]

log = logging.getLogger("rules.snapshot")

MAGIC: Final = b"OPTOUTIX"
FORMAT_VERSION: Final = 1
PAGE: Final = 4096
_HEADER = struct.Struct("<8sIIqQQQ16s")  # up to the checksum (64 bytes)
_CHECKSUM = struct.Struct("<I")
_CRC_CHUNK: Final = 1 << 24


class SnapshotError(Exception):
    """The file is not a usable snapshot (the reason is the message)."""


def _pad(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def fingerprint(change: Change | None) -> bytes:
    """16 bytes naming change `change` of one particular store: a snapshot
    at position P is only used on a store whose change P is the same."""
    if change is None:
        return b"\0" * 16
    h = hashlib.blake2b(digest_size=16)
    h.update(str(change.id).encode())
    h.update(change.kind.encode())
    h.update(json.dumps(change.payload, sort_keys=True).encode())
    h.update(change.data or b"")
    return h.digest()


@dataclass(frozen=True)
class Header:
    position: int
    count: int
    filter_m: int
    filter_len: int
    fingerprint: bytes


@dataclass(frozen=True)
class Snapshot:
    """A mapped snapshot: `packed` and `bits` are read-only views of the
    file's pages (kept mapped for as long as they are referenced)."""

    path: str
    header: Header
    packed: npt.NDArray[np.int64]
    bits: memoryview

    @property
    def position(self) -> int:
        return self.header.position


def read_header(path: str) -> Header:
    """Just the header (cheap: whether a newer snapshot was written)."""
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size)
    return _parse(raw)


def _parse(raw: bytes) -> Header:
    if len(raw) < _HEADER.size:
        raise SnapshotError("too short for a header")
    magic, version, bits, position, count, m, flen, fp = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise SnapshotError("not an index snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"format version {version}, this program reads {FORMAT_VERSION}")
    if bits != ADDRESS_BITS:
        raise SnapshotError(f"packed with {bits} address bits, not {ADDRESS_BITS}")
    return Header(position, count, m, flen, fp)


def _crc(data: memoryview, crc: int = 0) -> int:
    for start in range(0, len(data), _CRC_CHUNK):
        crc = zlib.crc32(data[start : start + _CRC_CHUNK], crc)
    return crc


def open_snapshot(path: str) -> Snapshot:
    """Map the snapshot at `path` read-only and check it whole (every page
    is read once, which also warms the page cache the workers share).
    SnapshotError (or OSError) when it cannot be used."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < PAGE:
            raise SnapshotError("too short for a header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    try:
        header = _parse(bytes(view[: _HEADER.size]))
        base_len = 8 * header.count
        filter_at = PAGE + _pad(base_len)
        if size != filter_at + header.filter_len or header.filter_len * 8 < header.filter_m:
            raise SnapshotError("size does not match the header (truncated?)")
        (stored,) = _CHECKSUM.unpack_from(view, _HEADER.size)
        crc = _crc(view[PAGE:], _crc(view[: _HEADER.size]))
        if crc != stored:
            raise SnapshotError("checksum mismatch")
        packed = np.frombuffer(mm, dtype="<i8", count=header.count, offset=PAGE)
        bits = view[filter_at : filter_at + header.filter_len]
    except BaseException:
        view.release()
        with contextlib.suppress(BufferError):
            mm.close()
        raise
    return Snapshot(path, header, packed.view(np.int64), bits)


def write_snapshot(path: str, packed: npt.NDArray[np.int64], bits: bytes | bytearray,
                   filter_m: int, position: int, fp: bytes) -> None:
    """Write a snapshot atomically (temporary file, fsync, rename, fsync of
    the directory). Blocking: call it off the event loop."""
    packed = np.ascontiguousarray(packed, dtype="<i8")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, ADDRESS_BITS, position, packed.size,
                          filter_m, len(bits), fp)
    body = memoryview(packed.data).cast("B")
    gap = b"\0" * (_pad(len(body)) - len(body))
    # What open_snapshot checks: the header fields, then everything after
    # the first page.
    crc = _crc(memoryview(header))
    for part in (body, memoryview(gap), memoryview(bits)):
        crc = _crc(part, crc)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            out.write(_CHECKSUM.pack(crc))
            out.write(b"\0" * (PAGE - _HEADER.size - _CHECKSUM.size))
            out.write(body)
            out.write(gap)
            out.write(bits)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def lock(path: str) -> int:
    """Take the snapshot's lock file (one writer per host at a time; the
    others wait, then find the fresh snapshot). Blocking: call it off the
    event loop. Returns the descriptor to pass to `unlock`."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock
