"""The monitoring files against the real thing.

* Every `optout_*` series the Grafana dashboard and the alert rules use is on
  the `/metrics` page of a running sidecar that has seen a little traffic,
  with the labels the queries filter and group by (tests/test_deploy.py
  checks the same against the metric definitions; this checks what is
  actually served).
* A real Prometheus server (Debian's `prometheus`) scrapes a real sidecar
  process with deploy/prometheus/alerts.yml loaded, and sees
  OptoutUpstreamDown go pending when the carrier process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import parse_config
from gateway.server import Sidecar
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from metrics import Metrics
from tests.raw_smpp import RawPeer
from tests.test_deploy import (
    ALERTS,
    IN_CI,
    alert_rules,
    check_metric_use,
    dashboard_exprs,
    needs_yaml,
)
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
INBOUND = "+18005550100"
INBOUND_DIGITS = "18005550100"
ALICE_DIGITS = "14155550123"
BOB_DIGITS = "14155550124"
CAROL_DIGITS = "14155550125"
JAMAICA_DIGITS = "18765550100"  # +1 but not US/CA: out of opt-out scope
APP = "1400000001"
TOKEN = "ops-token-0123456789"

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and not IN_CI,
    reason="Prometheus server not installed: apt-get install prometheus",
)


# --- what a live /metrics page serves ----------------------------------------------


def live_series(text: str) -> dict[str, set[str]]:
    """Series names on a /metrics page (NAME_total, NAME_bucket, ...), each
    with the label names its samples carry."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def submit(peer: RawPeer, destination: str) -> int:
    """One submit_sm; its response's status."""
    seq = await peer.send(codec.make_pdu(
        Command.SUBMIT_SM, dest_addr_ton=1, dest_addr_npi=1,
        destination_addr=destination.encode(), short_message=b"Big sale"))
    resp = await peer.read_command(Command.SUBMIT_SM_RESP)
    assert resp.sequence_number == seq
    return resp.command_status


@contextlib.asynccontextmanager
async def locked_database(path: Path) -> AsyncIterator[None]:
    """Another process's write transaction on the store file, held: the
    sidecar's writes wait `busy_timeout`, then fail (a real store error)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
        yield
    finally:
        await asyncio.to_thread(conn.rollback)
        conn.close()


@needs_yaml
async def test_every_metric_the_dashboard_and_alerts_use_is_served(tmp_path: Path) -> None:
    # Given a carrier and a sidecar with its own reply bind, a window of one
    # and a one-second response timeout (so back-pressure and timeouts happen
    # on a small scale).
    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    db = tmp_path / "optout.db"
    sidecar = Sidecar(parse_config({
        "smpp": {"listen": "127.0.0.1:0", "window": 1, "response_timeout": 1},
        "upstream": {"address": f"127.0.0.1:{carrier.port}",
                     "reply_system_id": "optout", "reply_password": "optoutpw"},
        "http": {"listen": "127.0.0.1:0",
                 "tokens": [{"name": "ops", "token": TOKEN, "role": "admin"}]},
        "store": {"url": f"sqlite:///{db}"},
        "accounts": [{"system_id": "acme", "app_id": APP}],
    }), metrics=Metrics())
    registry = sidecar.metrics.registry
    peers: list[RawPeer] = []
    try:
        addrs = await sidecar.start()
        assert sidecar.service is not None
        await sidecar.service.create_address(INBOUND, "toll-free")
        await carrier.wait_for_sessions(1)

        # When a sender binds and traffic of every kind an operator watches flows:
        sender = await RawPeer.connect(*addrs.smpp)
        peers.append(sender)
        assert (await sender.bind()).command_status == 0
        # a STOP (recorded, confirmed through the reply bind) ...
        assert await carrier.inject_mo(ALICE_DIGITS, INBOUND_DIGITS, "STOP",
                                       system_id="optout") == 0
        await wait_for(lambda: (registry.get_sample_value(
            "optout_replies_total", {"action": "opt_out", "result": "sent"}) or 0) >= 1)
        # ... an allowed, a blocked and an out-of-scope submit ...
        assert await submit(sender, BOB_DIGITS) == 0
        assert await submit(sender, ALICE_DIGITS) == 0x45
        assert await submit(sender, JAMAICA_DIGITS) == 0
        # ... three submits at once into a window of one (back-pressure) ...
        burst = [codec.make_pdu(Command.SUBMIT_SM, sequence_number=100 + i, dest_addr_ton=1,
                                destination_addr=BOB_DIGITS.encode(), short_message=b"x")
                 for i in range(3)]
        await sender.send_bytes(b"".join(codec.encode(p) for p in burst))
        for _ in burst:
            assert (await sender.read_command(Command.SUBMIT_SM_RESP)).command_status == 0
        # ... an MO relayed to a sender that never answers it (a timeout) ...
        relayed = asyncio.create_task(carrier.inject_mo(
            CAROL_DIGITS, INBOUND_DIGITS, "hello", system_id="acme", timeout=10))
        await sender.read_command(Command.DELIVER_SM)
        await wait_for(lambda: registry.get_sample_value(
            "optout_response_timeouts_total", {"side": "sender"}) is not None, timeout=10)
        await relayed
        # ... a peer that does not speak SMPP (command_length 5) ...
        garbage = await RawPeer.connect(*addrs.smpp)
        peers.append(garbage)
        await garbage.send_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x04" + b"\x00" * 8)
        assert await garbage.closed()
        # ... and a STOP while another process holds the store's write lock.
        async with locked_database(db):
            status = await carrier.inject_mo(BOB_DIGITS, INBOUND_DIGITS, "STOP",
                                             system_id="optout", timeout=15)
        assert status == 0x64  # temporary: the carrier will redeliver

        # Then the /metrics page serves every series the dashboard and the
        # alerts query, with the labels they use.
        http = f"http://{addrs.http[0]}:{addrs.http[1]}"
        served = live_series(await scrape(f"{http}/metrics"))
        exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
        problems = {expr: check_metric_use(expr, served) for expr in exprs}
        assert {e: p for e, p in problems.items() if p} == {}
        # (and the checker sees something: it is not vacuously empty)
        assert check_metric_use("optout_store_errors_total{operation=\"x\"}", {}) != []
    finally:
        for peer in peers:
            peer.close()
        await sidecar.stop()
        await carrier.stop()


# --- a real Prometheus ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json()


async def poll(what: str, check: Any, timeout: float) -> Any:
    """Call `await check()` until it returns something truthy (a real server's
    state: nothing to wait on but its API); TimeoutError naming `what`."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                found = await check()
                if found:
                    return found
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise TimeoutError(f"waited {timeout} s for {what}") from None


async def start_process(name: str, *args: str, cwd: Path) -> asyncio.subprocess.Process:
    """`args` as a child process whose output goes to `cwd/name.log` (a file,
    not a pipe, so a chatty child never blocks on a full pipe)."""
    with open(cwd / f"{name}.log", "wb") as out:
        return await asyncio.create_subprocess_exec(
            *args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


async def line_with(log: Path, needle: str, timeout: float) -> str:
    """The first line of a child's log containing `needle`, once written."""
    async def find() -> str | None:
        text = log.read_text(errors="replace") if log.exists() else ""
        return next((line for line in text.splitlines() if needle in line), None)

    found: str = await poll(f"{needle!r} in {log.name}", find, timeout)
    return found


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


@needs_prometheus
async def test_prometheus_sees_the_upstream_down_alert_when_the_carrier_dies(
    tmp_path: Path,
) -> None:
    assert PROMETHEUS is not None, "apt-get install prometheus"
    procs: list[asyncio.subprocess.Process] = []
    try:
        # Given a carrier simulator and a sidecar (holding its own carrier
        # bind), each its own process, ...
        smpp_port, control_port = free_port(), free_port()
        carrier = await start_process(
            "carrier", sys.executable, "-m", "gateway.cli", "carrier-sim",
            "--listen", f"127.0.0.1:{smpp_port}", "--control", f"127.0.0.1:{control_port}",
            cwd=tmp_path)
        procs.append(carrier)
        await line_with(tmp_path / "carrier.log", "carrier simulator", 30)
        config = tmp_path / "sidecar.toml"
        config.write_text(f"""
[smpp]
listen = "127.0.0.1:0"
[upstream]
address = "127.0.0.1:{smpp_port}"
reply_system_id = "optout"
reply_password = "optoutpw"
[http]
listen = "127.0.0.1:0"
[[http.tokens]]
name = "ops"
token = "{TOKEN}"
role = "admin"
[store]
url = "sqlite:///{tmp_path / 'optout.db'}"
""")
        sidecar = await start_process(
            "sidecar", sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
            cwd=tmp_path)
        procs.append(sidecar)
        line = await line_with(tmp_path / "sidecar.log", "metrics: http://", 60)
        metrics_url = line.split("metrics: ")[1].strip()
        target = metrics_url.removeprefix("http://").removesuffix("/metrics")

        # ... and Prometheus scraping it every second with the shipped alert
        # rules, evaluated every second.
        prom_port = free_port()
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "optout-sidecar",
                                "static_configs": [{"targets": [target]}]}],
        }))
        prometheus = await start_process(
            "prometheus", PROMETHEUS, f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", cwd=tmp_path)
        procs.append(prometheus)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        async with aiohttp.ClientSession() as http:
            async def upstream_up() -> list[Any]:
                with contextlib.suppress(aiohttp.ClientError):
                    data = await get_json(http, f"{api}/query?query=optout_upstream_up")
                    return [r for r in data["data"]["result"] if r["value"][1] == "1"]
                return []

            async def upstream_alerts() -> list[dict[str, Any]]:
                data = await get_json(http, f"{api}/alerts")
                return [a for a in data["data"]["alerts"]
                        if a["labels"]["alertname"] == "OptoutUpstreamDown"]

            # Prometheus has scraped the sidecar bound to its carrier: no alert.
            await poll("Prometheus to scrape optout_upstream_up 1", upstream_up, 60)
            assert await upstream_alerts() == []

            # When the carrier process dies,
            carrier.kill()
            await carrier.wait()

            # then the upstream-down alert goes pending (it fires after its
            # `for: 5m`) for this sidecar.
            alerts = await poll("OptoutUpstreamDown to become pending", upstream_alerts, 60)
            (alert,) = alerts
            assert alert["state"] in ("pending", "firing")
            assert alert["labels"]["instance"] == target
            assert alert["labels"]["severity"] == "critical"
    finally:
        for proc in reversed(procs):
            await stop_process(proc)
        for log in sorted(tmp_path.glob("*.log")):  # shown by pytest on failure
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
