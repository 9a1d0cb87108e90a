"""Benchmarks of the subscription store's bulk paths (SPEC section 5).

1. CSV import: `OptOutService.import_csv` of N generated rows (default one
   million) into a fresh SQLite file; prints rows/s.
2. Start-up: `OptOutService.open` on a file holding M unsubscriptions
   (default ten million; target < 10 s) -- the bulk load of the in-memory
   index. The file is filled directly with SQL (fast), not through import.

Usage::

    python bench/bench_import.py [--import-rows N] [--load-rows M] [--dir DIR]

Numbers are synthetic (+1 415 2xx xxxx and up): valid NANP shapes, no real
subscriber. Only aggregate timings are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.service import OptOutService
from rules.store import pack

ADDRESSES = ("+18005550199", "898211")


def csv_lines(rows: int) -> Iterator[str]:
    yield "phone_number,inbound_address,since\n"
    for i in range(rows):
        # NPA 415.. with exchanges 200-999: always a well-formed NANP number.
        npa, rest = divmod(i, 8_000_000)
        nxx, line = divmod(rest, 10_000)
        address = ADDRESSES[i % len(ADDRESSES)]
        yield f"+1{415 + npa}{200 + nxx}{line:04d},{address},1700000000\n"


async def bench_import(directory: Path, rows: int) -> None:
    url = f"sqlite:///{directory / 'import.db'}"
    service = await OptOutService.open(url)
    try:
        for address in ADDRESSES:
            await service.create_address(address)
        started = time.perf_counter()
        report = await service.import_csv(csv_lines(rows))
        elapsed = time.perf_counter() - started
    finally:
        await service.close()
    print(
        f"import: {report.imported:,} rows in {elapsed:.2f} s = "
        f"{report.imported / elapsed:,.0f} rows/s "
        f"(skipped {report.skipped}, errors {report.error_count})"
    )


def fill(path: Path, rows: int) -> None:
    """Writes `rows` unsubscriptions straight into the schema."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        conn.executemany(
            "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) "
            "VALUES (?, ?, ?, ?, 'import')",
            (
                (
                    pack(12_002_000_000 + i // 2, 1 + i % 2),
                    1 + i % 2,
                    12_002_000_000 + i // 2,
                    1.7e9,
                )
                for i in range(start, min(rows, start + chunk))
            ),
        )
    conn.execute("COMMIT")
    conn.close()


async def bench_load(directory: Path, rows: int) -> None:
    path = directory / "load.db"
    url = f"sqlite:///{path}"
    service = await OptOutService.open(url)
    for address in ADDRESSES:
        await service.create_address(address)
    await service.close()
    started = time.perf_counter()
    fill(path, rows)
    print(f"load: wrote {rows:,} rows directly in {time.perf_counter() - started:.1f} s")

    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    service = await OptOutService.open(url)
    elapsed = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        count = service.unsubscribed_count()
        t0 = time.perf_counter()
        probes = 100_000
        blocked = 0
        for i in range(probes):
            key = 12_002_000_000 + (i * 7919) % (rows // 2)
            if not service.decide("app", "marketing", f"+{key}").allowed:  # type: ignore[arg-type]
                blocked += 1
        per_decide = (time.perf_counter() - t0) / probes
    finally:
        await service.close()
    verdict = "OK" if elapsed < 10 else "SLOWER THAN TARGET (10 s)"
    print(
        f"open: {count:,} unsubscriptions loaded in {elapsed:.2f} s [{verdict}]; "
        f"peak RSS grew {(rss_after - rss_before) / 1024:,.0f} MiB during open; "
        f"decide {per_decide * 1e6:.1f} us ({blocked:,}/{probes:,} blocked)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--load-rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        if args.import_rows:
            await bench_import(directory, args.import_rows)
        if args.load_rows:
            await bench_load(directory, args.load_rows)


if __name__ == "__main__":
    asyncio.run(main())
