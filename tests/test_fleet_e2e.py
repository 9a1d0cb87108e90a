"""A fleet: two real sidecar processes on one PostgreSQL database, one
carrier. An opt-out taken by one is enforced by the other, rule edits
travel, each confirmation goes out once, a killed sidecar loses nothing,
and a database restart is survived without restarting the sidecars."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.smpp.constants import Command
from rules.service import OptOutService
from tests.faults.harness import TOKEN, Esme, SidecarProcess, http_request
from tests.pgserver import PgServer
from tests.waiting import wait_for

INBOUND = "+18005550100"
ALICE = "+14155550100"
BLOCKED = 0x45
PROPAGATION_TIMEOUT = 10.0  # generous for a loaded CI box; the benchmark measures it


def fleet_toml(url: str, carrier_port: int, *, lease: float = 3.0) -> str:
    return f"""
[smpp]
listen = "127.0.0.1:0"
response_timeout = 2
[upstream]
address = "127.0.0.1:{carrier_port}"
reply_system_id = "optout"
reply_password = "optoutpw"
[http]
listen = "127.0.0.1:0"
[[http.tokens]]
name = "ops"
token = "{TOKEN}"
role = "admin"
[store]
url = {json.dumps(url)}
reply_lease = {lease}
[[accounts]]
system_id = "acme"
app_id = "1400000001"
"""


@dataclass
class Fleet:
    url: str
    carrier: CarrierSim
    a: SidecarProcess
    b: SidecarProcess

    async def mo(self, sidecar: SidecarProcess, number: str, text: str = "STOP") -> int:
        status, _ = await http_request(
            "POST", sidecar.http + "/api/v1/mo", {"from": number, "to": INBOUND, "text": text}
        )
        return status

    def confirmations(self) -> Counter[str]:
        """Submits the carrier got from the sidecars' own reply binds, by destination."""
        return Counter(
            r.pdu.get_str("destination_addr") for r in self.carrier.records
            if r.pdu.command_id == Command.SUBMIT_SM and r.system_id == "optout"
        )


@pytest.fixture
async def fleet(pg_url: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    setup = await OptOutService.open(pg_url, follow=False)
    await setup.create_address(INBOUND)
    await setup.close()
    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    a = await SidecarProcess.start(tmp_path, fleet_toml(pg_url, carrier.port), "a")
    b = await SidecarProcess.start(tmp_path, fleet_toml(pg_url, carrier.port), "b")
    try:
        await carrier.wait_for_sessions(2, timeout=30)  # both reply binds are up
        yield Fleet(pg_url, carrier, a, b)
    finally:
        await a.kill()
        await b.kill()
        await carrier.stop()


async def submit_status(esme: Esme, number: str) -> int:
    resp = await asyncio.wait_for(esme.submit(number.lstrip("+")), 10)
    return resp.status


async def wait_submit_status(esme: Esme, number: str, wanted: int, timeout: float) -> float:
    """Submits to `number` until the answer is `wanted`; seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await submit_status(esme, number) != wanted:
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_an_opt_out_on_one_sidecar_blocks_on_the_other(fleet: Fleet) -> None:
    sender = await Esme.connect(fleet.b.smpp)
    assert await sender.bind() == 0
    assert await submit_status(sender, ALICE) == 0
    # When ALICE's STOP reaches sidecar A
    assert await fleet.mo(fleet.a, ALICE) == 200
    # Then the next submits to her through sidecar B are blocked
    took = await wait_submit_status(sender, ALICE, BLOCKED, PROPAGATION_TIMEOUT)
    print(f"opt-out on A blocked on B after {took * 1000:.0f} ms")
    sender.close()


async def test_a_rule_edit_on_one_sidecar_applies_on_the_other(fleet: Fleet) -> None:
    assert await fleet.mo(fleet.a, ALICE) == 200
    sender = await Esme.connect(fleet.b.smpp)
    assert await sender.bind() == 0
    await wait_submit_status(sender, ALICE, BLOCKED, PROPAGATION_TIMEOUT)
    # When A's API narrows the default rule to verification only
    status, body = await http_request(
        "PUT", fleet.a.http + f"/api/v1/inbound-addresses/{INBOUND}/default-rule",
        {"sms_types": ["verification"]},
    )
    assert status == 200, body
    # Then marketing to ALICE goes through B again
    await wait_submit_status(sender, ALICE, 0, PROPAGATION_TIMEOUT)
    sender.close()


async def test_stops_spread_over_both_give_exactly_one_confirmation_each(fleet: Fleet) -> None:
    numbers = [f"+1415555{i:04d}" for i in range(40)]
    statuses = await asyncio.gather(*(
        fleet.mo(fleet.a if i % 2 else fleet.b, n) for i, n in enumerate(numbers)
    ))
    assert statuses == [200] * len(numbers)
    await wait_for(lambda: sum(fleet.confirmations().values()) >= len(numbers), 30)
    # A sentinel STOP after the storm: its confirmation arriving means any
    # duplicate of the earlier ones would have arrived too.
    assert await fleet.mo(fleet.a, "+12125550100") == 200
    await wait_for(lambda: fleet.confirmations()["12125550100"] >= 1, 30)
    sent = fleet.confirmations()
    assert {n.lstrip("+"): sent[n.lstrip("+")] for n in numbers} == {
        n.lstrip("+"): 1 for n in numbers
    }


async def test_killing_one_sidecar_mid_storm_loses_nothing(fleet: Fleet) -> None:
    numbers = [f"+1646555{i:04d}" for i in range(60)]
    acknowledged: list[str] = []

    async def storm() -> None:
        for i, n in enumerate(numbers):
            target = fleet.a if i % 2 else fleet.b
            try:
                if await fleet.mo(target, n) == 200:
                    acknowledged.append(n)
            except Exception:
                pass  # A is gone: the carrier would redeliver to B

    task = asyncio.create_task(storm())
    await wait_for(lambda: len(acknowledged) >= 20, 30)
    await fleet.a.kill()  # SIGKILL mid-storm
    await task
    assert len(acknowledged) >= 40
    # Every acknowledged STOP is enforced by the survivor...
    sender = await Esme.connect(fleet.b.smpp)
    assert await sender.bind() == 0
    for n in acknowledged:
        assert await submit_status(sender, n) == BLOCKED, n
    sender.close()
    # ...and confirmed, A's unsent claims taken over once their lease ran out.
    await wait_for(
        lambda: all(fleet.confirmations()[n.lstrip("+")] >= 1 for n in acknowledged), 30
    )


async def test_a_database_restart_is_survived_without_restarting_the_sidecars(
    fleet: Fleet, managed_pg: PgServer
) -> None:
    assert await fleet.mo(fleet.a, ALICE) == 200
    sender = await Esme.connect(fleet.b.smpp)
    assert await sender.bind() == 0
    await wait_submit_status(sender, ALICE, BLOCKED, PROPAGATION_TIMEOUT)

    # When PostgreSQL goes away
    await asyncio.to_thread(managed_pg.stop)
    try:
        # Then submits are still decided from memory
        assert await submit_status(sender, ALICE) == BLOCKED
        assert await submit_status(sender, "+14155550199") == 0
        # MOs and API writes are refused with the JSON error shape, never a 500
        status, body = await http_request(
            "POST", fleet.a.http + "/api/v1/mo", {"from": "+13125550100", "to": INBOUND,
                                                 "text": "STOP"})
        assert status == 503, body
        assert body["error"]["code"] == "store_unavailable"
        status, body = await http_request(
            "POST", fleet.b.http + "/api/v1/unsubscribed",
            {"phone_number": "+13125550101", "inbound_address": INBOUND, "reason": "x"},
        )
        assert status == 503 and body["error"]["code"] == "store_unavailable", body
        # An MO over SMPP is answered 0x64 so the carrier redelivers it
        mo_status = await fleet.carrier.inject_mo(
            "13125550102", INBOUND.lstrip("+"), "STOP", system_id="optout")
        assert mo_status == 0x64
        # And neither sidecar says it is ready
        for sidecar in (fleet.a, fleet.b):
            status, body = await sidecar.http_get("/readyz")
            assert status == 503 and body["store"] is False, body
    finally:
        await asyncio.to_thread(managed_pg.start)

    # When it is back, everything resumes without a restart
    async def ready(sidecar: SidecarProcess) -> bool:
        status, _ = await sidecar.http_get("/readyz")
        return status == 200

    async with asyncio.timeout(30):
        while not (await ready(fleet.a) and await ready(fleet.b)):
            await asyncio.sleep(0.1)
    assert await fleet.mo(fleet.a, "+13125550100") == 200
    await wait_submit_status(sender, "+13125550100", BLOCKED, PROPAGATION_TIMEOUT)
    # The carrier's redelivery of the refused MO lands too
    assert await fleet.carrier.inject_mo(
        "13125550102", INBOUND.lstrip("+"), "STOP", system_id="optout") == 0
    await wait_submit_status(sender, "+13125550102", BLOCKED, PROPAGATION_TIMEOUT)
    sender.close()

