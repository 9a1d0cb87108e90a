"""Hostile SMPP input at the real listener: the sidecar process answers or
closes each hostile connection, never hangs or crashes, and a well-behaved
sender on another connection never notices.

Cases per run: OPTOUT_FUZZ_SOCKET_CASES connections (default 300), drawn
from OPTOUT_FUZZ_SEED (default 8) by the same mutations as the codec fuzz.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from gateway.smpp.framing import FrameReader, encode_simple
from tests.faults.harness import Esme, SidecarProcess, env_int, record, rerun, sidecar_toml
from tests.faults.hostile import random_case

CASES = env_int("OPTOUT_FUZZ_SOCKET_CASES", 300)
SEED = env_int("OPTOUT_FUZZ_SEED", 8)
SENTINEL_SEQ = 0x7FFFFFF0
BIND = codec.encode(codec.make_pdu(Command.BIND_TRANSCEIVER, sequence_number=1,
                                   system_id=b"acme", password=b"secret",
                                   interface_version=0x34))


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, max_records=1000))
    await sim.start()
    yield sim
    await sim.stop()


async def one_case(addr: tuple[str, int], data: bytes, lies: bool, bind: bool) -> str:
    """Send `data` (after a bind, if asked) and a sentinel enquire_link; how the
    listener dealt with it: "answered", "closed", or "closed at EOF" (a lying
    length left it waiting for the rest of a frame until we stopped sending)."""
    reader, writer = await asyncio.open_connection(*addr)
    frames = FrameReader(max_length=1 << 20)
    try:
        if bind:
            writer.write(BIND)
        writer.write(data + encode_simple(Command.ENQUIRE_LINK, 0, SENTINEL_SEQ))
        try:
            await writer.drain()
        except ConnectionError:
            return "closed"
        half_closed = False
        for _ in range(2):
            try:
                async with asyncio.timeout(3.0):
                    while True:
                        chunk = await reader.read(65536)
                        if not chunk:
                            return "closed at EOF" if half_closed else "closed"
                        frames.feed(chunk)
                        while (item := frames.next_pdu()) is not None:
                            header, _ = item
                            if (header.command_id == Command.ENQUIRE_LINK_RESP
                                    and header.sequence_number == SENTINEL_SEQ):
                                return "answered"
            except ConnectionError:
                return "closed"
            except TimeoutError:
                if half_closed or not lies:
                    return "hung"
                # A length that promised more bytes: stop sending; it must close.
                writer.transport.write_eof()
                half_closed = True
        return "hung"
    finally:
        writer.close()


async def test_listener_answers_or_closes_every_hostile_connection(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given the sidecar, with a well-behaved sender bound beside the attacker
    sidecar = await SidecarProcess.start(tmp_path, sidecar_toml(
        tmp_path / "optout.db", carrier.port, smpp={"max_pdu_size": 4096}))
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    healthy_ok = 0
    try:
        healthy = await Esme.connect(sidecar.smpp)
        assert await healthy.bind("beta") == 0
        # When hostile connections arrive, a few at a time
        cases = [random_case(rng) for _ in range(CASES)]
        binds = [rng.random() < 0.5 for _ in range(CASES)]
        for start in range(0, CASES, 8):
            batch = range(start, min(start + 8, CASES))
            results = await asyncio.gather(*(
                one_case(sidecar.smpp, cases[i][0], cases[i][1], binds[i]) for i in batch))
            for i, outcome in zip(batch, results, strict=True):
                # Then each is answered or closed, never left hanging
                assert outcome != "hung", (cases[i], binds[i])
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            # and the well-behaved sender is served as if nothing happened
            resp = await asyncio.wait_for(healthy.submit("14155550123"), 5)
            assert resp.status == 0
            healthy_ok += 1
        # and the process is still up, with no internal error logged
        assert sidecar.running
        errors = [e for e in sidecar.events() if e.get("level") in ("error", "critical")]
        assert errors == []
        stats = await sidecar.stats()
    finally:
        await sidecar.kill()
    record(
        "hostile SMPP input: the listener",
        "the listener answers or closes, others unaffected",
        f"{CASES} hostile connections ({sum(binds)} after a bind): "
        + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
        + f", 0 hung; the bound sender's {healthy_ok} submits meanwhile all answered 0; "
        f"0 errors logged; {stats['connections']} connection(s) left open",
        rerun("test_fault_hostile_listener.py", "OPTOUT_FUZZ_SOCKET_CASES=5000"),
        outcomes=outcomes, cases=CASES,
    )


