"""`[smpp] workers = 2`: the real sidecar as a supervisor and two worker
processes sharing its ports, between real SMPP peers and a real SQLite file.

Which worker a connection lands on is the kernel's choice (SO_REUSEPORT), so
the tests open several connections and read each worker's pid from the log
lines it writes (every line carries `worker` and `pid`)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import ConfigError, load_config, resolve_workers
from tests.faults.harness import (
    INBOUND,
    Esme,
    SidecarProcess,
    http_request,
    sidecar_toml,
    wait_until,
)
from tests.faults.test_fault_process import make_store

BLOCKED = 0x45
SENDERS = 12  # all on one worker by chance: 2 * 2**-12


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0))
    await sim.start()
    yield sim
    await sim.stop()


async def start_workers(tmp_path: Path, carrier: CarrierSim) -> SidecarProcess:
    db = tmp_path / "optout.db"
    await make_store(db)
    return await SidecarProcess.start(
        tmp_path, sidecar_toml(db, carrier.port, smpp={"workers": 2, "drain_timeout": 2},
                               accounts=[{"system_id": "acme", "app_id": "1400000001",
                                          "max_binds": 100}]))


def worker_pids(sidecar: SidecarProcess) -> list[int]:
    """The pids of the workers that are up now, from the supervisor's log."""
    alive: dict[int, int] = {}
    for event in sidecar.events():
        if event.get("event") in ("workers_started",):
            alive = dict(enumerate(event["pids"]))
        elif event.get("event") == "worker_started":
            alive[event["worker"]] = event["worker_pid"]
    return list(alive.values())


async def bind_many(sidecar: SidecarProcess, n: int) -> list[Esme]:
    senders = []
    for _ in range(n):
        esme = await Esme.connect(sidecar.smpp)
        assert await esme.bind("acme") == 0
        senders.append(esme)
    return senders


async def metrics_text(sidecar: SidecarProcess) -> str:
    status, body = await http_request("GET", sidecar.http + "/metrics")
    assert status == 200
    assert isinstance(body, str)
    return body


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


async def test_two_workers_share_binds_opt_outs_and_metrics(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a sidecar with two workers and a dozen senders bound through its one port
    sidecar = await start_workers(tmp_path, carrier)
    try:
        pids = worker_pids(sidecar)
        assert len(pids) == 2 and sidecar.pid not in pids
        # And both map the one index snapshot next to the store (shared pages)
        for pid in pids:
            assert str(tmp_path / "optout.db.index") in Path(f"/proc/{pid}/maps").read_text()
        senders = await bind_many(sidecar, SENDERS)
        # Then the binds landed on both workers
        bound_on = {e["pid"] for e in sidecar.events("bound")}
        assert bound_on == set(pids)

        # When each sender submits five messages
        for esme in senders:
            for resp in await asyncio.gather(*(esme.submit("14155550001") for _ in range(5))):
                assert resp.status == 0
        # Then /metrics, whichever worker answers, counts all of them and every session
        for _ in range(4):  # several scrapes: each may land on either worker
            text = await metrics_text(sidecar)
            assert sample(text, "optout_submit_total", decision="allowed") == SENDERS * 5
            assert sample(text, "optout_sessions", side="sender") == SENDERS

        # When a user texts STOP (taken by whichever worker answers the API)
        status, body = await http_request("POST", sidecar.http + "/api/v1/mo", {
            "from": "+14155550002", "to": INBOUND, "text": "STOP"})
        assert status == 200, body
        taken = time.monotonic()
        # Then within a second a submit to that number is blocked on every sender,
        # so on both workers
        waiting = set(senders)
        async with asyncio.timeout(1.0):
            while waiting:
                for esme in list(waiting):
                    if (await esme.submit("14155550002")).status == BLOCKED:
                        waiting.discard(esme)
                await asyncio.sleep(0.02)
        assert time.monotonic() - taken < 1.0
        # And the host's unsubscribed count shows it once, not once per worker
        text = await metrics_text(sidecar)
        assert sample(text, "optout_unsubscribed_numbers") == 1
        for esme in senders:
            esme.close()
    finally:
        await sidecar.kill()


async def test_a_killed_worker_is_restarted_and_sigterm_drains_all(
    tmp_path: Path, carrier: CarrierSim
) -> None:
    # Given a sidecar with two workers and senders bound on both
    sidecar = await start_workers(tmp_path, carrier)
    try:
        first, second = worker_pids(sidecar)
        senders = await bind_many(sidecar, SENDERS)
        on_first = [e for e in sidecar.events("bound") if e["pid"] == first]
        assert on_first and len(on_first) < SENDERS

        # When one worker is killed
        os.kill(first, signal.SIGKILL)
        # Then its senders lose their connection, the others keep theirs
        await wait_until(lambda: sum(e.closed.is_set() for e in senders) == len(on_first), 10)
        survivors = [e for e in senders if not e.closed.is_set()]
        for esme in survivors:
            assert (await esme.submit("14155550001")).status == 0
        # And new binds are served while it is down or restarting
        late = await bind_many(sidecar, 3)
        for esme in late:
            assert (await esme.submit("14155550001")).status == 0
        # And /metrics no longer counts the dead worker's sessions, but keeps its submits
        await wait_until(lambda: first not in worker_pids(sidecar), 30)
        text = await metrics_text(sidecar)
        assert sample(text, "optout_sessions", side="sender") == len(survivors) + len(late)
        assert sample(text, "optout_submit_total") == len(survivors) + len(late)
        # And the supervisor starts a new worker in its place
        await wait_until(lambda: first not in worker_pids(sidecar)
                         and len(worker_pids(sidecar)) == 2, 30)
        replacement = (set(worker_pids(sidecar)) - {second}).pop()
        died = sidecar.events("worker_died")
        assert died[0]["worker_pid"] == first and died[0]["how"] == "signal 9"
        # and senders reconnecting reach it again
        async with asyncio.timeout(30):
            while not any(e["pid"] == replacement for e in sidecar.events("bound")):
                (await bind_many(sidecar, 1))[0].close()
        assert sidecar.running

        # When the supervisor gets SIGTERM
        rc, _ = await sidecar.terminate(timeout=30)
        # Then every worker drains and it exits 0
        assert rc == 0
        assert {e["pid"] for e in sidecar.events("stopped")} >= {second, replacement}
        for pid in (second, replacement):
            assert not Path(f"/proc/{pid}").exists()
    finally:
        await sidecar.kill()


def test_workers_config(tmp_path: Path) -> None:
    # Given configuration files with each spelling of [smpp] workers
    def load(value: str, upstream: bool = True) -> object:
        path = tmp_path / "c.toml"
        path.write_text(f"[smpp]\nworkers = {value}\n"
                        + ('[upstream]\naddress = "127.0.0.1:2776"\n' if upstream else ""))
        return load_config(path).smpp.workers

    # Then numbers and "auto" load, "auto" being the cores this process may use
    assert load("3") == 3
    assert load('"auto"') == "auto"
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
    assert resolve_workers(4) == 4
    # And anything else names the key
    for bad in ('"many"', "0", "true", "1000", "2.5"):
        with pytest.raises(ConfigError, match=r"smpp\.workers"):
            load(bad)
    # And several workers need a real carrier (the bundled simulator is one process's)
    with pytest.raises(ConfigError, match="upstream"):
        load("2", upstream=False)
    assert load("1", upstream=False) == 1
