"""How long an opt-out taken by one sidecar takes to block sends through another.

Two real sidecar processes share one store (a PostgreSQL database, or one
SQLite file for comparison) in front of the bundled carrier simulator. Each
trial opts a fresh number out through sidecar A -- an MO (`POST /mo`, the
same path as an SMPP MO) or the admin API (`POST /unsubscribed`) -- and, from
the moment A answered (the change is committed), keeps submitting to that
number through sidecar B until B answers "blocked". Trials start at random
moments (0-250 ms apart), as real opt-outs do. The time from A's answer
to B's first blocked answer is the propagation time; one submit round trip
(about a millisecond) is the resolution.

    python bench/bench_propagation.py                  # own throwaway PostgreSQL
    python bench/bench_propagation.py --trials 500 --write-readme
    OPTOUT_TEST_PG_URL=postgresql://u:p@host/postgres python bench/bench_propagation.py

`--write-readme` puts the table into README.md between the
`<!-- propagation:begin -->` and `<!-- propagation:end -->` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.carrier_sim import CarrierSim, SimConfig  # noqa: E402
from rules.service import OptOutService  # noqa: E402
from tests.faults.harness import Esme, SidecarProcess, http_request  # noqa: E402
from tests.pgserver import URL_ENV, PgServer, find_bindir  # noqa: E402
from tests.test_fleet_e2e import INBOUND, fleet_toml  # noqa: E402

BLOCKED = 0x45
BEGIN, END = "<!-- propagation:begin -->", "<!-- propagation:end -->"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def one_trial(a: SidecarProcess, sender: Esme, number: str, how: str) -> float:
    if how == "mo":
        status, body = await http_request(
            "POST", a.http + "/api/v1/mo", {"from": number, "to": INBOUND, "text": "STOP"})
    else:
        status, body = await http_request(
            "POST", a.http + "/api/v1/unsubscribed",
            {"phone_number": number, "inbound_address": INBOUND, "reason": "bench"})
    if status not in (200, 201):
        raise RuntimeError(f"opt-out through A failed: {status} {body}")
    committed = time.monotonic()
    async with asyncio.timeout(30):
        while True:
            resp = await sender.submit(number.lstrip("+"))
            if resp.status == BLOCKED:
                return resp.at - committed
            if resp.status != 0:
                raise RuntimeError(f"unexpected submit status {resp.status:#x}")


async def measure(backend: str, url: str, trials: int, workdir: Path) -> dict[str, list[float]]:
    setup = await OptOutService.open(url, follow=False)
    await setup.create_address(INBOUND)
    await setup.close()
    carrier = CarrierSim(SimConfig(port=0, receipts=False))
    await carrier.start()
    a = await SidecarProcess.start(workdir, fleet_toml(url, carrier.port, lease=60), f"{backend}-a")
    b = await SidecarProcess.start(workdir, fleet_toml(url, carrier.port, lease=60), f"{backend}-b")
    results: dict[str, list[float]] = {"mo": [], "api": []}
    try:
        sender = await Esme.connect(b.smpp)
        if await sender.bind() != 0:
            raise RuntimeError("bind to B refused")
        base = 13_125_000_000 if backend == "postgresql" else 13_135_000_000
        rng = random.Random(7)
        for i in range(trials):
            # Opt-outs arrive at random moments, not in step with B's last
            # look at the feed (which a back-to-back loop would be).
            await asyncio.sleep(rng.uniform(0, 0.25))
            how = "mo" if i % 2 == 0 else "api"
            results[how].append(await one_trial(a, sender, f"+{base + i}", how))
        sender.close()
    finally:
        await a.kill()
        await b.kill()
        await carrier.stop()
    return results


def table(rows: list[tuple[str, str, list[float]]], trials: int) -> str:
    lines = [
        f"Opt-out through sidecar A → first blocked submit through sidecar B "
        f"(`python bench/bench_propagation.py --trials {trials}`; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, shared with the store and the carrier):",
        "",
        "| store | opt-out via | trials | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for store, how, values in rows:
        lines.append(
            f"| {store} | {how} | {len(values)} | {statistics.median(values) * 1000:.0f} ms "
            f"| {percentile(values, 99) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
    readme.write_text(content[:start] + "\n" + text + "\n" + content[end:])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200,
                        help="opt-outs per store (half MO, half API)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite comparison")
    parser.add_argument("--write-readme", action="store_true", help="update README.md's table")
    args = parser.parse_args()

    server: PgServer | None = None
    external = os.environ.get(URL_ENV)
    if external:
        server = PgServer.external(external)
    else:
        bindir = find_bindir()
        if bindir is None:
            sys.exit("PostgreSQL is not installed: apt-get install postgresql (or set "
                     f"{URL_ENV})")
        server = PgServer.start_new(bindir)
    rows: list[tuple[str, str, list[float]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="optout-prop-") as tmp:
            work = Path(tmp)
            pg = await measure("postgresql", await server.new_database("bench"), args.trials, work)
            rows += [("PostgreSQL (LISTEN/NOTIFY)", "MO", pg["mo"]),
                     ("PostgreSQL (LISTEN/NOTIFY)", "API", pg["api"])]
            if not args.no_sqlite:
                lite = await measure("sqlite", f"sqlite:///{work}/fleet.db", args.trials, work)
                rows += [("SQLite, one file (100 ms poll)", "MO", lite["mo"]),
                         ("SQLite, one file (100 ms poll)", "API", lite["api"])]
    finally:
        server.destroy()
    text = table(rows, args.trials)
    print(text)
    if args.write_readme:
        write_readme(text)
        print("README.md updated")


if __name__ == "__main__":
    asyncio.run(main())
