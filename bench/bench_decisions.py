"""Benchmark of the per-submit decision data path: the unsubscribed index
(`rules.index.UnsubscribedIndex`) and number handling (`rules.numbers`).

For each size it prints, from a fresh child process so memory figures are
not polluted by the previous size:

* load: seconds to build the index from a sorted packed array (what the store
  reads at start-up with ``SELECT packed ... ORDER BY packed``), from an
  unsorted one, and optionally (``--sqlite``) from a real SQLite file;
* memory: VmRSS growth per pair after loading, and peak RSS growth per pair;
* lookups/s of ``addresses_of`` for numbers that never opted out (miss, the
  common case) and for unsubscribed numbers (hit);
* submits/s of the whole per-submit number path: ``from_smpp`` (cached) ->
  ``in_scope`` -> ``to_key`` -> ``addresses_of``.

Usage: ``python bench/bench_decisions.py [--sizes 0,1000000,10000000] [--sqlite]``

``--workers W`` measures the shared on-disk snapshot instead
(`rules.snapshot`), for each size: a real SQLite store whose snapshot holds
that many pairs (the table itself stays nearly empty: a start-up with a
valid snapshot never reads it), then W processes that each open the real
service on it at once, as W workers do (`OptOutService.open`: lock, map,
checksum every page, addresses, feed), and answer look-ups from it. It
reports the slowest start-up and the memory the index costs the whole host:
the sum over the W processes of their PSS growth (/proc/PID/smaps_rollup,
read while all of them are mapped, so each shared page is counted once in
total), per pair; and the private part (USS) per process. ``--markdown``
prints that table for the README; ``--readme FILE`` writes it between the
``bench_snapshot`` markers of FILE.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.index import ADDRESS_BITS, UnsubscribedIndex
from rules.numbers import from_smpp, in_scope, to_key

PROBES = 200_000


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def vm_rss() -> int:
    """Current resident set size in bytes (Linux)."""
    return _status_bytes("VmRSS:")


def peak_rss() -> int:
    """Peak resident set size of this process image. VmHWM rather than
    getrusage's ru_maxrss, which Linux carries over from the parent across
    fork and exec."""
    return _status_bytes("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def nanp_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """Plausible US/CA numbers as `to_key` keys: 1 NXX NXX XXXX."""
    area = rng.integers(200, 1000, n, dtype=np.int64)
    exchange = rng.integers(200, 1000, n, dtype=np.int64)
    line = rng.integers(0, 10_000, n, dtype=np.int64)
    return 10_000_000_000 + area * 10_000_000 + exchange * 10_000 + line


def make_pairs(n: int, seed: int = 7) -> np.ndarray:
    """`n` distinct packed pairs, sorted: most numbers at one of 20 inbound
    addresses, some at two."""
    rng = np.random.default_rng(seed)
    out = np.zeros(0, dtype=np.int64)
    while out.size < n:
        need = int((n - out.size) * 1.05) + 16
        keys = nanp_keys(rng, need)
        addresses = rng.integers(1, 21, need, dtype=np.int64)
        out = np.unique(np.concatenate([out, (keys << ADDRESS_BITS) | addresses]))
    if out.size > n:
        out = np.sort(rng.choice(out, n, replace=False))
    return out


def rate(fn_calls: int, seconds: float) -> float:
    return fn_calls / seconds if seconds > 0 else float("inf")


def time_lookups(index: UnsubscribedIndex, keys: list[int]) -> float:
    lookup = index.addresses_of
    started = time.perf_counter()
    for key in keys:
        lookup(key)
    return rate(len(keys), time.perf_counter() - started)


def time_submit_path(index: UnsubscribedIndex, addresses: list[str]) -> float:
    """What the relay does per submit_sm destination, numbers cached."""
    lookup = index.addresses_of
    started = time.perf_counter()
    for addr in addresses:
        number = from_smpp(addr, 1, 1)
        if in_scope(number):
            lookup(to_key(number))
    return rate(len(addresses), time.perf_counter() - started)


def load_sqlite(packed: np.ndarray, workdir: Path) -> tuple[float, float]:
    """(seconds to write, seconds to load) through a real SQLite file."""
    path = workdir / "bench.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE unsub (packed INTEGER PRIMARY KEY) WITHOUT ROWID")
    started = time.perf_counter()
    db.executemany("INSERT INTO unsub VALUES (?)", ((int(v),) for v in packed))
    db.commit()
    wrote = time.perf_counter() - started
    db.close()
    gc.collect()
    db = sqlite3.connect(path)
    started = time.perf_counter()
    count = db.execute("SELECT count(*) FROM unsub").fetchone()[0]
    cursor = db.execute("SELECT packed FROM unsub ORDER BY packed")
    index = UnsubscribedIndex.from_rows(cursor, count)
    loaded = time.perf_counter() - started
    db.close()
    assert len(index) == packed.size
    return wrote, loaded


def measure(size: int, pairs_file: Path, with_sqlite: bool) -> dict[str, float]:
    """One size, in this fresh process. The pairs were generated by the
    parent, so that nothing freed here before the load can be reused by the
    index and hide its memory."""
    result: dict[str, float] = {"pairs": size}
    gc.collect()
    rss_before, peak_before = vm_rss(), peak_rss()
    # What the store hands over: a sorted int64 array the index takes as its own.
    packed = np.load(pairs_file)
    started = time.perf_counter()
    index = UnsubscribedIndex.from_sorted_pairs(packed)
    result["load_sorted_s"] = time.perf_counter() - started
    del packed
    gc.collect()
    grown = vm_rss() - rss_before
    result["rss_bytes_per_pair"] = grown / size if size else 0.0
    result["index_mb"] = grown / 2**20
    result["nbytes_per_pair"] = index.nbytes / size if size else 0.0
    peak_grown = max(0, peak_rss() - peak_before)
    result["peak_bytes_per_pair"] = peak_grown / size if size else 0.0

    pairs = index.to_packed()
    shuffled = np.random.default_rng(1).permutation(pairs)
    keys_in = [int(k) for k in np.unique(pairs >> ADDRESS_BITS)[:PROBES]]
    started = time.perf_counter()
    unsorted_index = UnsubscribedIndex.from_sorted_pairs(shuffled)
    result["load_unsorted_s"] = time.perf_counter() - started
    assert len(unsorted_index) == len(index)
    del unsorted_index, shuffled
    gc.collect()

    if with_sqlite and size:
        with tempfile.TemporaryDirectory() as tmp:
            result["sqlite_write_s"], result["load_sqlite_s"] = load_sqlite(pairs, Path(tmp))

    # Misses: random plausible numbers that are not in the index.
    rng = np.random.default_rng(99)
    present = set(keys_in) if size <= PROBES else None
    candidates = [int(k) for k in nanp_keys(rng, PROBES * 2)]
    if present is None:
        in_base = np.isin(np.array(candidates) << ADDRESS_BITS, pairs & ~np.int64(0x7FFF))
        misses = [k for k, hit in zip(candidates, in_base, strict=True) if not hit][:PROBES]
    else:
        misses = [k for k in candidates if k not in present][:PROBES]
    del pairs
    gc.collect()

    result["miss_lookups_per_s"] = max(time_lookups(index, misses) for _ in range(3))
    if keys_in:
        result["hit_lookups_per_s"] = max(time_lookups(index, keys_in) for _ in range(3))
        assert all(index.addresses_of(k) for k in keys_in[:1000])
    assert not any(index.addresses_of(k) for k in misses[:1000])

    # The whole number path per submit: 50k distinct destinations, 2% opted out.
    working_set = [str(k) for k in misses[:49_000]] + [str(k) for k in keys_in[:1000]]
    destinations = working_set * 4
    time_submit_path(index, working_set)  # warm the caches
    result["submit_path_per_s"] = max(time_submit_path(index, destinations) for _ in range(3))

    # Pending changes in the overlay must not slow misses down.
    for k in misses[-2000:]:
        index.add(k, 3)
    result["miss_lookups_per_s_with_overlay"] = max(
        time_lookups(index, misses[:-2000]) for _ in range(3)
    )
    started = time.perf_counter()
    index.compact()
    result["merge_2000_changes_s"] = time.perf_counter() - started
    return result


# --- the shared snapshot (--workers) ----------------------------------------------

START_MARK = "<!-- bench_snapshot:start -->"
END_MARK = "<!-- bench_snapshot:end -->"


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """/proc/PID/smaps_rollup in bytes (Pss, Private_Clean, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def make_snapshot_store(size: int, workdir: Path) -> str:
    """A real store with one address and one opt-out (a change to anchor the
    snapshot to), and a snapshot of `size` pairs at that change."""
    import asyncio

    from rules import snapshot
    from rules.index import build_filter
    from rules.model import Source
    from rules.service import OptOutService
    from rules.store import Change

    db = workdir / "snapshot.db"
    url = f"sqlite:///{db}"

    async def fill() -> None:
        service = await OptOutService.open(url, snapshot=False, follow=False)
        await service.create_address("+18005550100", "bench")
        await service.unsubscribe("+14155550123", "+18005550100", source=Source.API)
        await service.close()

    asyncio.run(fill())
    con = sqlite3.connect(db)
    cid, kind, payload, data = con.execute(
        "SELECT id, kind, payload, data FROM changes ORDER BY id DESC LIMIT 1").fetchone()
    con.close()
    fp = snapshot.fingerprint(Change(cid, kind, json.loads(payload), data))
    pairs = make_pairs(size) if size else np.zeros(0, dtype=np.int64)
    bits, m = build_filter(pairs, int(pairs.size))
    snapshot.write_snapshot(f"{db}.index", pairs, bits, m, cid, fp)
    return url


def snapshot_child(url: str) -> None:
    """One worker: open the service on the snapshot, answer look-ups, report,
    then hold the mapping until the parent has read everyone's memory."""
    import asyncio

    from rules.service import OptOutService

    async def run() -> None:
        gc.collect()
        before = smaps_rollup()
        started = time.perf_counter()
        service = await OptOutService.open(url, follow=False)
        startup = time.perf_counter() - started
        index = service._index
        assert index.shared, "the snapshot was not used"
        loop = asyncio.get_running_loop()
        print(json.dumps({"startup_s": startup, "pss_before": before["Pss"],
                          "uss_before": before["Private_Clean"] + before["Private_Dirty"]}),
              flush=True)
        # The parent reads every worker's memory now, before the look-up
        # probes below allocate anything.
        await loop.run_in_executor(None, sys.stdin.readline)
        rng = np.random.default_rng(os.getpid())
        probes = [int(k) for k in nanp_keys(rng, PROBES)]
        base = index._base
        step = max(1, base.size // PROBES)
        hits = [int(v) >> ADDRESS_BITS for v in base[::step][:PROBES]]
        result = {
            "lookups_per_s": max(time_lookups(index, probes) for _ in range(3)),
            "hit_lookups_per_s": max(time_lookups(index, hits) for _ in range(3)) if hits else 0,
        }
        print(json.dumps(result), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await service.close()

    asyncio.run(run())


def measure_snapshot(size: int, worker_counts: list[int]) -> list[dict[str, float]]:
    """One store with a snapshot of `size` pairs, opened by each number of
    workers in turn."""
    workdir = Path(tempfile.mkdtemp(prefix="bench_snapshot_"))
    try:
        url = make_snapshot_store(size, workdir)
        file_bytes = os.path.getsize(workdir / "snapshot.db.index")
        return [dict(_open_with_workers(url, size, workers),
                     file_bytes_per_pair=file_bytes / size if size else 0.0)
                for workers in worker_counts]
    finally:
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()


def _open_with_workers(url: str, size: int, workers: int) -> dict[str, float]:
    children = [
        subprocess.Popen([sys.executable, __file__, "--snapshot-child", url],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    reports = []
    for child in children:
        assert child.stdout is not None
        reports.append(json.loads(child.stdout.readline()))
    # Everyone is mapped now: PSS splits each shared page among them.
    now = [smaps_rollup(child.pid) for child in children]

    def tell_all() -> None:
        for child in children:
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()

    tell_all()  # go: look-ups
    for child, report in zip(children, reports, strict=True):
        assert child.stdout is not None
        report.update(json.loads(child.stdout.readline()))
    tell_all()  # done
    for child in children:
        child.wait(60)
    pss_grown = sum(n["Pss"] - r["pss_before"] for n, r in zip(now, reports, strict=True))
    uss_grown = max(n["Private_Clean"] + n["Private_Dirty"] - r["uss_before"]
                    for n, r in zip(now, reports, strict=True))
    return {
        "pairs": size,
        "workers": workers,
        "startup_s": max(r["startup_s"] for r in reports),
        "host_pss_bytes_per_pair": pss_grown / size if size else 0.0,
        "uss_bytes_per_pair_per_worker": uss_grown / size if size else 0.0,
        "lookups_per_s": min(r["lookups_per_s"] for r in reports),
        "hit_lookups_per_s": min(r["hit_lookups_per_s"] for r in reports),
    }


def snapshot_markdown(results: list[dict[str, float]]) -> str:
    lines = [
        "| pairs | workers | start-up, slowest worker | host memory (PSS) per pair "
        "| private per pair per worker | file per pair | look-ups/s per worker (random / hits) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['pairs']:,.0f} | {r['workers']:.0f} | {r['startup_s']:.2f} s "
            f"| **{r['host_pss_bytes_per_pair']:.1f} B** "
            f"| {r['uss_bytes_per_pair_per_worker']:.2f} B "
            f"| {r['file_bytes_per_pair']:.1f} B "
            f"| {r['lookups_per_s'] / 1e6:.2f} M / {r['hit_lookups_per_s'] / 1e6:.2f} M |")
    lines.append("")
    lines.append(f"(`python bench/bench_decisions.py --workers ...`, "
                 f"{time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]}, "
                 f"numpy {np.__version__}, {os.cpu_count()} CPUs)")
    return "\n".join(lines)


def replace_marked(path: Path, table: str) -> None:
    text = path.read_text()
    start, end = text.index(START_MARK), text.index(END_MARK)
    path.write_text(text[: start + len(START_MARK)] + "\n" + table + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0,1000000,10000000", help="comma-separated pair counts")
    parser.add_argument("--sqlite", action="store_true", help="also load through a SQLite file")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--pairs-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker counts: measure the shared snapshot")
    parser.add_argument("--markdown", action="store_true", help="(--workers) print the table")
    parser.add_argument("--readme", type=Path, help="(--workers) write the table into FILE")
    parser.add_argument("--snapshot-child", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()

    if args.snapshot_child is not None:
        snapshot_child(args.snapshot_child)
        return
    if args.workers is not None:
        results = []
        counts = [int(w) for w in args.workers.split(",")]
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            for result in measure_snapshot(size, counts):
                results.append(result)
                print(json.dumps(result), flush=True)
        table = snapshot_markdown(results)
        if args.markdown or args.readme is None:
            print(table)
        if args.readme is not None:
            replace_marked(args.readme, table)
        return

    if args.one is not None:
        print(json.dumps(measure(args.one, args.pairs_file, args.sqlite)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench_decisions_"))

    results = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        pairs_file = workdir / f"pairs_{size}.npy"
        np.save(pairs_file, make_pairs(size) if size else np.zeros(0, dtype=np.int64))
        command = [sys.executable, __file__, "--one", str(size), "--pairs-file", str(pairs_file)]
        if args.sqlite:
            command.append("--sqlite")
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        pairs_file.unlink()
        results.append(json.loads(out.strip().splitlines()[-1]))
        if args.json:
            print(out.strip(), flush=True)

    workdir.rmdir()
    if args.json:
        return
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    columns = [
        ("pairs", "{:>10,.0f}"),
        ("load_sorted_s", "{:>10.2f}"),
        ("load_unsorted_s", "{:>10.2f}"),
        ("sqlite_write_s", "{:>10.2f}"),
        ("load_sqlite_s", "{:>10.2f}"),
        ("rss_bytes_per_pair", "{:>10.1f}"),
        ("nbytes_per_pair", "{:>10.1f}"),
        ("index_mb", "{:>10.0f}"),
        ("peak_bytes_per_pair", "{:>10.1f}"),
        ("miss_lookups_per_s", "{:>10,.0f}"),
        ("miss_lookups_per_s_with_overlay", "{:>10,.0f}"),
        ("hit_lookups_per_s", "{:>10,.0f}"),
        ("submit_path_per_s", "{:>10,.0f}"),
        ("merge_2000_changes_s", "{:>10.3f}"),
    ]
    for name, fmt in columns:
        cells = []
        for result in results:
            value = result.get(name)
            cells.append(fmt.format(value) if value is not None else f"{'-':>10}")
        print(f"{name:<32}" + "  ".join(cells))


if __name__ == "__main__":
    main()
