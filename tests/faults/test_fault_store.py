"""Store faults: another process holds the SQLite database locked. MOs must
be handed back for redelivery, submits still decided from memory, /readyz
must say so, and everything recovers without a restart."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from rules.model import Source
from rules.service import OptOutService
from tests.faults.harness import (
    INBOUND,
    Esme,
    SidecarProcess,
    record,
    rerun,
    sidecar_toml,
)

OPTED_OUT = "+14155550150"
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, response_timeout=15.0))
    await sim.start()
    yield sim
    await sim.stop()


async def readyz(sidecar: SidecarProcess) -> int:
    status, _ = await sidecar.http_get("/readyz")
    return status


async def wait_readyz(sidecar: SidecarProcess, expected: int, timeout: float = 10.0) -> float:
    """Seconds until /readyz answers `expected`."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await readyz(sidecar) != expected:
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_store_locked_by_another_process_hands_mos_back_and_recovers_alone(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a sidecar whose store knows one opted-out number
    db = tmp_path / "optout.db"
    service = await OptOutService.open(f"sqlite:///{db}")
    await service.create_address(INBOUND, "toll-free")
    await service.unsubscribe(OPTED_OUT, INBOUND, source=Source.API, reason="fault suite")
    await service.close()
    sidecar = await SidecarProcess.start(tmp_path, sidecar_toml(
        db, carrier.port, upstream={"reply_system_id": "optout", "reply_password": "optoutpw"}))
    locker: asyncio.subprocess.Process | None = None
    try:
        pid = sidecar.pid
        await wait_readyz(sidecar, 200)
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0
        # When another process takes the database's write lock
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(db),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert locker.stdout is not None and locker.stdin is not None
        assert (await asyncio.wait_for(locker.stdout.readline(), 10)).strip() == b"locked"
        # Then /readyz says not ready
        to_503 = await wait_readyz(sidecar, 503)
        # and a STOP is answered 0x64, so the carrier redelivers it later
        mo_started = time.monotonic()
        status = await carrier.inject_mo("14155550160", INBOUND.lstrip("+"), "STOP",
                                         system_id="optout", timeout=15)
        mo_took = time.monotonic() - mo_started
        assert status == 0x64
        # while submits are still decided from memory, at their usual speed
        started = time.monotonic()
        blocked = await asyncio.wait_for(esme.submit(OPTED_OUT.lstrip("+")), 5)
        allowed = await asyncio.wait_for(esme.submit("14155550170"), 5)
        decided_in = time.monotonic() - started
        assert (blocked.status, allowed.status) == (0x45, 0)
        assert decided_in < 0.5
        # When the other process lets go
        locker.stdin.write(b"done\n")
        await locker.stdin.drain()
        assert await asyncio.wait_for(locker.wait(), 10) == 0
        # Then the sidecar is ready again, the redelivered STOP is taken, and
        # it applies at once: all without a restart
        to_200 = await wait_readyz(sidecar, 200)
        assert await carrier.inject_mo("14155550160", INBOUND.lstrip("+"), "STOP",
                                       system_id="optout", timeout=15) == 0
        after = await asyncio.wait_for(esme.submit("14155550160"), 5)
        assert after.status == 0x45
        assert sidecar.pid == pid and sidecar.running
    finally:
        if locker is not None and locker.returncode is None:
            locker.kill()
            await locker.wait()
        await sidecar.kill()
    record(
        "store fails (locked by another process)",
        "MOs answered 0x64 and redelivered later; submits still decided from memory; "
        "`/readyz` 503; recovers without restart",
        f"/readyz 503 {to_503:.1f} s after the lock; a STOP answered 0x64 after "
        f"{mo_took:.1f} s (busy timeout 5 s) and taken on redelivery; submits decided in "
        f"{decided_in * 1000:.0f} ms meanwhile (blocked 0x45, allowed 0); /readyz 200 "
        f"{to_200:.1f} s after the lock went, same process",
        rerun("test_fault_store.py"),
        readyz_503_s=to_503, mo_0x64_s=mo_took, readyz_200_s=to_200,
    )
