"""Carrier faults: the sidecar runs as its own process between a sender on a
raw socket and the carrier simulator, and the carrier misbehaves."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from rules.service import OptOutService
from tests.faults.harness import (
    INBOUND,
    Esme,
    Pump,
    SidecarProcess,
    http_request,
    record,
    rerun,
    scaled,
    sidecar_toml,
    wait_until,
)
from tests.waiting import wait_for

WINDOW = 64


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, max_records=1000))
    await sim.start()
    yield sim
    await sim.stop()


async def start_sidecar(tmp_path: Path, carrier: CarrierSim, **smpp: object) -> SidecarProcess:
    toml = sidecar_toml(tmp_path / "optout.db", carrier.port, smpp={"window": WINDOW, **smpp})
    return await SidecarProcess.start(tmp_path, toml)


async def test_carrier_that_never_answers_gets_each_submit_answered_0x08_with_bounded_memory(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a carrier that takes binds and submits but never answers a submit
    carrier.config.answer_submits = False
    sidecar = await start_sidecar(tmp_path, carrier, response_timeout=1.0)
    try:
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0
        # When a sender keeps sending, far past the window, for a few seconds
        pump = Pump(esme, window=8 * WINDOW)
        running = asyncio.create_task(pump.run())
        # (memory is measured from when the first timeouts are being answered)
        await wait_for(lambda: pump.statuses.get(0x08, 0) > 0, timeout=10)
        rss_early = sidecar.rss_kib()
        rss_peak = rss_early
        deadline = time.monotonic() + scaled(4)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            rss_peak = max(rss_peak, sidecar.rss_kib())
        stats_during = await sidecar.stats()
        pump.stop.set()
        async with asyncio.timeout(10):
            await running
        # Then every submit was answered 0x08 (ESME_RSYSERR), none before the
        # response timeout, and the sidecar held no more than its window
        assert pump.failed == 0
        assert pump.statuses == {0x08: pump.sent}
        assert min(pump.latencies) >= 1.0
        # (the first window was read at once: its answers show the timeout itself;
        # later submits also waited in the socket while the sidecar held them)
        first = pump.latencies[:WINDOW]
        assert max(first) < 1.5, max(first)  # was up to 2 s with a 1 s tick
        assert stats_during["outstanding"] <= WINDOW
        growth = rss_peak - rss_early
        assert growth < 4096, f"RSS grew {growth} KiB while the carrier never answered"
    finally:
        await sidecar.kill()
    fastest, slowest = min(first), max(first)
    record(
        "carrier never answers submits",
        "each submit answered 0x08 after `response_timeout`; memory bounded while the "
        "sender keeps sending",
        f"{pump.sent} submits (sender window {pump.window}) all answered 0x08, none before "
        f"1 s; the first window after {fastest:.2f}-{slowest:.2f} s (response_timeout 1 s); "
        f"at most {stats_during['outstanding']} outstanding; RSS +{growth} KiB over "
        f"{scaled(4)} s of sending",
        rerun("test_fault_carrier.py -k never_answers", "OPTOUT_FAULT_SCALE=5"),
        sent=pump.sent, min_latency=fastest, max_latency=slowest, rss_growth_kib=growth,
    )


async def test_carrier_that_drops_with_a_full_window_closes_the_sender_and_leaks_nothing(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a carrier holding a full window of unanswered submits
    carrier.config.answer_submits = False
    sidecar = await start_sidecar(tmp_path, carrier)
    try:
        baseline = await sidecar.stats()
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0
        futures = [esme.submit(f"1415555{i:04d}") for i in range(WINDOW)]
        await carrier.wait_for_submits(WINDOW, timeout=10)
        loaded = await sidecar.stats()
        assert loaded["outstanding"] == WINDOW
        # When the carrier's connection drops
        dropped_at = time.monotonic()
        await carrier.drop_connections()
        # Then within 1 s every outstanding submit is answered or the sender's
        # session is closed
        async with asyncio.timeout(1.0):
            await asyncio.wait(futures)
            await esme.closed.wait()
        reacted = time.monotonic() - dropped_at
        answers = [f.result().status for f in futures if f.exception() is None]
        assert set(answers) <= {0x08}
        # and the sidecar is back to where it was: no task, fd or request left
        async with asyncio.timeout(5):
            while True:
                after = await sidecar.stats()
                if all(after[k] == baseline[k] for k in ("fds", "tasks", "outstanding",
                                                         "connections", "sessions")):
                    break
                await asyncio.sleep(0.1)
    finally:
        await sidecar.kill()
    record(
        "carrier drops with a full window outstanding",
        "every outstanding submit answered or the sender session closed within 1 s; "
        "no task, fd or map entry left",
        f"{WINDOW} outstanding: {len(answers)} answered 0x08, sender session closed "
        f"{reacted * 1000:.0f} ms after the drop; fds {after['fds']} (baseline "
        f"{baseline['fds']}), tasks {after['tasks']} ({baseline['tasks']}), "
        f"outstanding {after['outstanding']}",
        rerun("test_fault_carrier.py -k drops"),
        reacted_s=reacted, baseline=baseline, after=after,
    )


async def test_slow_carrier_at_full_window_gives_window_over_latency_without_errors(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a carrier that answers every submit after 1 s
    latency = 1.0
    carrier.config.submit_delay = latency
    sidecar = await start_sidecar(tmp_path, carrier)
    try:
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0
        # When a sender offers more than the window allows, for a few rounds
        rounds = scaled(5, minimum=3)
        pump = Pump(esme, window=2 * WINDOW)
        started = time.monotonic()
        async with asyncio.timeout(rounds * latency * 3 + 10):
            await pump.run(total=rounds * WINDOW)
        elapsed = time.monotonic() - started
    finally:
        await sidecar.kill()
    # Then throughput is the window over the latency, and nothing failed
    throughput = pump.answered / elapsed
    ideal = WINDOW / latency
    assert pump.statuses == {0: rounds * WINDOW}
    assert pump.failed == 0
    assert 0.8 * ideal <= throughput <= 1.05 * ideal, (throughput, ideal)
    record(
        "slow carrier (answers after 1 s) at full window",
        "throughput ≈ window / latency, no errors",
        f"{throughput:.1f} msg/s at window {WINDOW} and 1 s latency (ideal {ideal:.0f}, "
        f"ratio {throughput / ideal:.2f}); {pump.answered} submits, 0 errors",
        rerun("test_fault_carrier.py -k slow_carrier"),
        throughput=throughput, ideal=ideal,
    )


async def test_throttled_carrier_0x58_reaches_the_sender_unchanged_and_is_never_retried(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a carrier that answers every submit 0x58 (ESME_RTHROTTLED)
    carrier.config.submit_status = 0x58
    sidecar = await start_sidecar(tmp_path, carrier)
    try:
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0
        n = scaled(2000)
        pump = Pump(esme, window=WINDOW)
        # When the sender submits
        async with asyncio.timeout(60):
            await pump.run(total=n)
        # Then each answer is the carrier's, status and body as it sent them
        assert pump.statuses == {0x58: n}
        # and nothing was retried by the sidecar: once the carrier is healthy
        # again, one more submit is the carrier's n+1-th, not later
        carrier.config.submit_status = 0
        sentinel = await asyncio.wait_for(esme.submit("14155550999"), 10)
        assert sentinel.status == 0
        assert carrier.submit_count == n + 1
        # (the simulator answers 0x58 with a bare header, as many SMSCs do)
        assert pump.samples[0x58][:12] == bytes.fromhex("00000010 80000004 00000058")
    finally:
        await sidecar.kill()
    record(
        "carrier answers 0x58 (throttled) to everything",
        "passed to the sender unchanged, nothing retried or converted by the sidecar",
        f"{n}/{n} submits answered 0x58 to the sender; the carrier saw {n} submits "
        "(0 retries); a sentinel submit after recovery was the carrier's next",
        rerun("test_fault_carrier.py -k throttled"),
        submits=n, carrier_saw=n,
    )


async def test_carrier_that_refuses_then_restarts_binds_pass_back_and_confirmations_follow(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a sidecar with its own reply bind, and a carrier refusing every bind
    db = tmp_path / "optout.db"
    service = await OptOutService.open(f"sqlite:///{db}")
    await service.create_address(INBOUND, "toll-free")
    await service.close()
    carrier.config.bind_status = 0x0E  # ESME_RINVPASWD
    port = carrier.port
    sidecar = await SidecarProcess.start(tmp_path, sidecar_toml(
        db, port, upstream={"reply_system_id": "optout", "reply_password": "optoutpw"}))
    try:
        # When a sender binds, it gets the carrier's own status back
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind() == 0x0E
        # and a STOP arriving meanwhile (over HTTP) is committed, its
        # confirmation queued, since no carrier session can carry it
        status, body = await http_request("POST", sidecar.http + "/api/v1/mo",
                                          {"from": "+14155550101", "to": INBOUND,
                                           "text": "STOP"})
        assert status == 200 and body["action"] == "opt_out"
        # while the reply bind retries with a growing backoff
        await wait_until(lambda: len(reply_binds(carrier)) >= 3, timeout=15)
        times = [t for t, _, _ in reply_binds(carrier)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[1] > 1.5 * gaps[0], gaps
        # When the carrier accepts binds again
        carrier.config.bind_status = 0
        # Then the reply bind comes back and the queued confirmation goes out
        await wait_until(lambda: destinations(carrier).count("14155550101") == 1, timeout=20)
        back_after = time.monotonic() - times[-1]
        # When the carrier restarts (its process dies and comes back on its port)
        before = len(reply_binds(carrier))
        await carrier.stop()
        restarted = CarrierSim(SimConfig(port=port, max_records=1000))
        await restarted.start()
        restarted_at = time.monotonic()
        try:
            # Then the reply bind reconnects by itself, a sender can bind
            # again, and confirmations flow through the new carrier session
            await restarted.wait_for_sessions(1, timeout=15)
            esme2 = await Esme.connect(sidecar.smpp)
            assert await esme2.bind() == 0
            status, _ = await http_request("POST", sidecar.http + "/api/v1/mo",
                                           {"from": "+14155550102", "to": INBOUND,
                                            "text": "STOP"})
            assert status == 200
            await wait_until(lambda: "14155550102" in destinations(restarted), timeout=15)
            reconnect = reply_binds(restarted)[0][0]
        finally:
            await restarted.stop()
    finally:
        await sidecar.kill()
    assert before >= 4
    record(
        "carrier refuses binds",
        "the sender's bind gets the carrier's status; the reply bind reconnects with backoff; "
        "queued confirmations go out after",
        f"sender's bind answered 0x0E as the carrier did; reply bind retried after "
        f"{', '.join(f'{g:.1f}' for g in gaps)} s; the queued confirmation went out "
        f"{back_after:.1f} s after the last refusal, once the carrier accepted",
        rerun("test_fault_carrier.py -k refuses_then_restarts"),
        gaps=gaps,
    )
    record(
        "carrier restarts",
        "the reply bind reconnects; senders bind again; confirmations go out after",
        f"reply bind back {reconnect - restarted_at:.1f} s after the carrier "
        "came back; a new sender bind got 0; the next confirmation went out through the "
        "new session",
        rerun("test_fault_carrier.py -k refuses_then_restarts"),
    )


def reply_binds(carrier: CarrierSim) -> list[tuple[float, str, int]]:
    return [entry for entry in carrier.bind_log if entry[1] == "optout"]


def destinations(carrier: CarrierSim) -> list[str]:
    return [p.get_str("destination_addr") for p in carrier.received]
