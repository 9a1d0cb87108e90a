"""No acknowledged STOP is ever lost: the sidecar runs as its own process,
the carrier (the simulator, here in the test) delivers a stream of STOPs, and
the sidecar is SIGKILLed right after the carrier got a deliver_sm_resp. Every
STOP the carrier saw acknowledged must be in the store after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from gateway.carrier_sim import CarrierSim, SimConfig
from rules.model import SmsType
from rules.service import OptOutService

INBOUND = "+18005550100"


async def test_sigkill_after_deliver_sm_resp_loses_no_opt_out(tmp_path: Path) -> None:
    db = tmp_path / "optout.db"
    service = await OptOutService.open(f"sqlite:///{db}")
    await service.create_address(INBOUND, "toll-free")
    await service.close()

    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    config = tmp_path / "sidecar.toml"
    config.write_text(f"""
[smpp]
listen = "127.0.0.1:0"
[upstream]
address = "127.0.0.1:{carrier.port}"
reply_system_id = "optout"
reply_password = "optoutpw"
[http]
listen = "127.0.0.1:0"
[[http.tokens]]
name = "ops"
token = "ops-token-for-the-kill-test"
role = "admin"
[store]
url = "sqlite:///{db}"
""")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    acknowledged: list[str] = []
    try:
        await carrier.wait_for_sessions(1, timeout=30)  # the sidecar's own bind is up
        for i in range(40):
            number = f"1415555{i:04d}"
            if await carrier.inject_mo(number, INBOUND.lstrip("+"), "STOP",
                                       system_id="optout") == 0:
                acknowledged.append("+" + number)
        # One more in flight, and the kill lands right behind an acknowledgement.
        in_flight = asyncio.create_task(
            carrier.inject_mo("14155559999", INBOUND.lstrip("+"), "STOP", system_id="optout"))
        if await carrier.inject_mo("14155558888", INBOUND.lstrip("+"), "STOP",
                                   system_id="optout") == 0:
            acknowledged.append("+14155558888")
        os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            if await in_flight == 0:
                acknowledged.append("+14155559999")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await carrier.stop()

    # (No check of returncode: asyncio reports 255 when another test's child
    # reaping got there first; the kill itself is what matters.)
    assert len(acknowledged) >= 40
    reopened = await OptOutService.open(f"sqlite:///{db}")
    try:
        lost = [n for n in acknowledged
                if reopened.decide("any-app", SmsType.MARKETING, n).allowed]
        assert lost == []
        assert reopened.unsubscribed_count() >= len(acknowledged)
    finally:
        await reopened.close()
