"""Soak: submits from two senders, STOP/START MOs from the carrier and API
writes, all at once, against the sidecar process. Nothing may accumulate:
RSS grows less than 10 % after warm-up, and open fds and asyncio tasks come
back to where they were before the traffic.

Sizes: OPTOUT_SOAK_SUBMITS (default 100,000; the full soak is 1,000,000),
MOs a fiftieth of that, API writes a thousandth (20,000 and 1,000 at full size).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.carrier_sim import CarrierSim, NoReceiverError, SimConfig
from gateway.smpp.errors import SmppError
from rules.service import OptOutService
from tests.faults.harness import (
    INBOUND,
    TOKEN,
    Esme,
    Pump,
    SidecarProcess,
    env_int,
    record,
    rerun,
    sidecar_toml,
)

SUBMITS = env_int("OPTOUT_SOAK_SUBMITS", 100_000)
MOS = max(100, SUBMITS // 50)
API_WRITES = max(20, SUBMITS // 1000)


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, max_records=1000, receipts=False,
                               response_timeout=30.0))
    await sim.start()
    yield sim
    await sim.stop()


async def mo_traffic(carrier: CarrierSim, count: int, counts: dict[str, int]) -> None:
    """STOP then START from a rotating set of numbers, four at a time."""
    todo = list(range(count))

    async def worker() -> None:
        while todo:
            i = todo.pop()
            number = f"1415{7000000 + (i // 2) % 5000:07d}"
            text = "STOP" if i % 2 == 0 else "START"
            try:
                status = await carrier.inject_mo(number, INBOUND.lstrip("+"), text,
                                                 system_id="optout", timeout=30)
            except (NoReceiverError, TimeoutError, ConnectionError, SmppError):
                status = -1
            key = "ok" if status == 0 else "failed"
            counts[key] = counts.get(key, 0) + 1

    await asyncio.gather(*(worker() for _ in range(4)))


async def api_traffic(base: str, count: int, counts: dict[str, int]) -> None:
    """Add and remove numbers by hand through the API, one write at a time."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(count):
            number = f"+1415{8000000 + (i // 2) % 500:07d}"
            if i % 2 == 0:
                req = http.post(f"{base}/api/v1/unsubscribed", json={
                    "phone_number": number, "inbound_address": INBOUND, "reason": "soak"})
            else:
                req = http.delete(f"{base}/api/v1/unsubscribed/{INBOUND}/{number}",
                                  json={"reason": "soak"})
            async with req as resp:
                body = await resp.read()
                ok = resp.status in (200, 201, 204)
                key = "ok" if ok else f"{resp.status} {body[:200]!r}"
                counts[key] = counts.get(key, 0) + 1


async def test_soak_leaves_no_growth_and_no_leaked_fd_or_task(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    db = tmp_path / "optout.db"
    service = await OptOutService.open(f"sqlite:///{db}")
    await service.create_address(INBOUND, "toll-free")
    await service.close()
    sidecar = await SidecarProcess.start(tmp_path, sidecar_toml(
        db, carrier.port, upstream={"reply_system_id": "optout", "reply_password": "optoutpw"}))
    try:
        await carrier.wait_for_sessions(1, timeout=15)
        senders = [await Esme.connect(sidecar.smpp) for _ in range(2)]
        assert [await e.bind(s) for e, s in zip(senders, ("acme", "beta"), strict=True)] == [0, 0]
        idle = await sidecar.stats()
        # Given steady traffic of every kind at once
        pumps = [Pump(e, window=64, destination=lambda i: f"1415{7000000 + i % 6000:07d}")
                 for e in senders]
        mo_counts: dict[str, int] = {}
        api_counts: dict[str, int] = {}
        started = time.monotonic()
        work = [asyncio.create_task(p.run(total=SUBMITS // 2)) for p in pumps]
        work.append(asyncio.create_task(mo_traffic(carrier, MOS, mo_counts)))
        work.append(asyncio.create_task(api_traffic(sidecar.http, API_WRITES, api_counts)))
        # When it has warmed up (a tenth of the submits done)
        async with asyncio.timeout(600):
            while sum(p.answered for p in pumps) < SUBMITS // 10:
                await asyncio.sleep(0.1)
        warm = await sidecar.stats()
        peak_rss = warm["rss_kib"]
        async with asyncio.timeout(1800):
            while not all(t.done() for t in work):
                await asyncio.sleep(0.5)
                peak_rss = max(peak_rss, sidecar.rss_kib())
        for t in work:
            t.result()
        elapsed = time.monotonic() - started
        # Then every submit, MO and API write was answered
        statuses: dict[int, int] = {}
        for p in pumps:
            assert p.failed == 0
            for status, n in p.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        assert sum(statuses.values()) == SUBMITS // 2 * 2
        assert set(statuses) <= {0, 0x45}, statuses
        assert mo_counts == {"ok": MOS}, mo_counts
        assert set(api_counts) == {"ok"}, api_counts
        # and once the confirmations are out, fds and tasks are back to idle
        end: dict[str, Any] = {}
        async with asyncio.timeout(60):
            while True:
                end = await sidecar.stats()
                if (end["fds"] == idle["fds"] and end["tasks"] == idle["tasks"]
                        and end["outstanding"] == 0):
                    break
                await asyncio.sleep(0.5)
        growth = (end["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"]
        assert growth < 0.10, f"RSS {warm['rss_kib']} -> {end['rss_kib']} KiB"
    finally:
        await sidecar.kill()
    rate = SUBMITS / elapsed
    record(
        "soak",
        "RSS growth < 10 % after warm-up; fds and tasks back to baseline",
        f"{SUBMITS:,} submits ({statuses.get(0x45, 0):,} blocked), {MOS:,} MOs, "
        f"{API_WRITES:,} API writes in {elapsed:.0f} s ({rate:,.0f} submits/s); RSS "
        f"{warm['rss_kib'] / 1024:.1f} MiB warm -> {end['rss_kib'] / 1024:.1f} MiB at the end "
        f"({growth:+.1%}, peak {peak_rss / 1024:.1f} MiB); fds {end['fds']} "
        f"(idle {idle['fds']}), tasks {end['tasks']} (idle {idle['tasks']})",
        rerun("test_fault_soak.py", "OPTOUT_SOAK_SUBMITS=1000000"),
        submits=SUBMITS, mos=MOS, api_writes=API_WRITES, seconds=elapsed,
        rss_warm_kib=warm["rss_kib"], rss_end_kib=end["rss_kib"], growth=growth,
    )
