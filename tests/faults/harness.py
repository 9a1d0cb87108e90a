"""The fault suite's harness.

* `SidecarProcess`: the real sidecar as its own process (`python -m
  gateway.cli run --config ...`), with its JSON log in a file, its RSS and
  open file descriptors read from /proc, and its asyncio task count from the
  `stats` line it logs on SIGUSR1.
* `Esme`: a small asyncio SMPP sender on raw sockets (gateway.smpp codec),
  windowed, so one test process can push thousands of submits a second and
  see every response, unbind and close exactly as they arrive.
* `record`: one JSON line per scenario in the results file, which
  `python -m tests.faults.report` turns into docs/RELIABILITY.md.

Sizes scale with OPTOUT_FAULT_SCALE (1 = the CI size); see README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.smpp import pdu as codec
from gateway.smpp.constants import RESPONSE_BIT, Command
from gateway.smpp.errors import FramingError
from gateway.smpp.framing import FrameReader, encode_simple, parse_header

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("OPTOUT_FAULT_RESULTS", REPO / "build" / "fault-results.jsonl"))
SCALE = float(os.environ.get("OPTOUT_FAULT_SCALE", "1"))
TOKEN = "fault-suite-admin-token"
INBOUND = "+18005550100"


def scaled(n: int, minimum: int = 1) -> int:
    """`n` times OPTOUT_FAULT_SCALE (at least `minimum`)."""
    return max(minimum, int(n * SCALE))


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# --- the recorder --------------------------------------------------------------

#: Figures recorded in this pytest run, printed in the terminal summary.
RECORDED: list[dict[str, Any]] = []


def record(scenario: str, promise: str, figure: str, rerun: str, **data: Any) -> None:
    """Append one scenario's result (its promise held: the test asserted it
    before calling this) to the results file, and print its figure."""
    entry = {
        "scenario": scenario,
        "promise": promise,
        "figure": figure,
        "rerun": rerun,
        "scale": SCALE,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "data": data,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
    RECORDED.append(entry)
    print(f"[fault] {scenario}: {figure}")


def rerun(test: str, knobs: str = "") -> str:
    """The command that reruns one scenario."""
    env = f"{knobs} " if knobs else ""
    return f"{env}python -m pytest tests/faults/{test}"


# --- the sidecar as a process ----------------------------------------------------


def sidecar_toml(
    db: Path,
    carrier_port: int,
    *,
    smpp: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    accounts: list[dict[str, Any]] | None = None,
) -> str:
    """A configuration for the fault suite: loopback ports picked by the OS."""
    def table(values: dict[str, Any]) -> str:
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())

    accounts = accounts if accounts is not None else [
        {"system_id": "acme", "app_id": "1400000001"},
        {"system_id": "beta", "app_id": "1400000002"},
    ]
    text = (
        "[smpp]\n" + table({"listen": "127.0.0.1:0", **(smpp or {})})
        + "[upstream]\n" + table({"address": f"127.0.0.1:{carrier_port}", **(upstream or {})})
        + '[http]\nlisten = "127.0.0.1:0"\n'
        + f'[[http.tokens]]\nname = "ops"\ntoken = "{TOKEN}"\nrole = "admin"\n'
        + f'[store]\nurl = "sqlite:///{db}"\n'
    )
    for account in accounts:
        text += "[[accounts]]\n" + table(account)
    return text


@dataclass
class SidecarProcess:
    """`python -m gateway.cli run --config FILE`, started and watched."""

    config: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None
    smpp: tuple[str, int] = ("", 0)
    http: str = ""

    @classmethod
    async def start(cls, workdir: Path, toml: str, name: str = "sidecar") -> SidecarProcess:
        config = workdir / f"{name}.toml"
        config.write_text(toml)
        self = cls(config, workdir / f"{name}.log")
        await self.restart()
        return self

    async def restart(self) -> None:
        """Start (again) with the same configuration; returns once it listens."""
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO, env=env,
            )
        finally:
            log.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"sidecar exited at start; see {self.log}:\n"
                                       + self.log.read_text()[-3000:])
                if "point your binds at" in line:
                    host, _, port = line.split("at ", 1)[1].split()[0].rpartition(":")
                    self.smpp = (host, int(port))
                elif "console and API:" in line:
                    self.http = line.split("API: ", 1)[1].split()[0].rstrip("/")
                elif line.startswith("Stop with"):
                    break
        # Nothing more comes on stdout; keep the pipe drained anyway.
        asyncio.get_running_loop().create_task(self.proc.stdout.read())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def rss_kib(self) -> int:
        """Resident memory, from /proc/PID/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        """Open file descriptors, from /proc/PID/fd."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The sidecar's log events so far (JSON lines), optionally one kind."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and (name is None or item.get("event") == name):
                    out.append(item)
        return out

    async def stats(self) -> dict[str, int]:
        """Tasks, sessions, connections and outstanding requests, as the process
        logs them on SIGUSR1 (plus rss_kib and fds read from /proc)."""
        before = len(self.events("stats"))
        os.kill(self.pid, signal.SIGUSR1)
        async with asyncio.timeout(10):
            while len(found := self.events("stats")) <= before:
                await asyncio.sleep(0.02)
        stats = {k: int(v) for k, v in found[-1].items()
                 if k in ("tasks", "sessions", "connections", "outstanding")}
        stats["rss_kib"] = self.rss_kib()
        stats["fds"] = self.fds()
        return stats

    async def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            rc = await self.proc.wait()
        return rc, time.monotonic() - started

    async def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    async def http_get(self, path: str) -> tuple[int, Any]:
        return await http_request("GET", self.http + path)


async def http_request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request with the suite's admin token: (status, JSON or text)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.request(
        method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, await resp.text()


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> None:
    """Return once `predicate()` holds; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


# --- a windowed asyncio SMPP sender ------------------------------------------------


@dataclass
class Response:
    status: int
    raw: bytes
    at: float  # monotonic time it arrived


@dataclass
class Esme(asyncio.Protocol):
    """A sender on a raw socket: binds, submits with a window, answers
    deliver_sm (`deliver_status`, or `on_deliver`) and enquire_link, and notes
    an unbind from the other side (answered unless `answer_unbind` is off)."""

    deliver_status: int = 0
    answer_unbind: bool = True
    reading: bool = True
    transport: asyncio.Transport | None = None
    frames: FrameReader = field(default_factory=lambda: FrameReader(max_length=1 << 20))
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    pending: dict[int, asyncio.Future[Response]] = field(default_factory=dict)
    delivered: list[codec.Pdu] = field(default_factory=list)
    unbind_received: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    on_deliver: Callable[[codec.Pdu], int] | None = None
    received_bytes: int = 0

    @classmethod
    async def connect(cls, addr: tuple[str, int], **kwargs: Any) -> Esme:
        loop = asyncio.get_running_loop()
        _, esme = await loop.create_connection(lambda: cls(**kwargs), addr[0], addr[1])
        return esme

    def __hash__(self) -> int:
        return id(self)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_bytes += len(data)
        try:
            self.frames.feed(data)
            while (raw := self.frames.next_frame()) is not None:
                self._frame(raw)
        except FramingError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))
        self.pending.clear()

    def _frame(self, raw: bytes) -> None:
        header = parse_header(raw)
        cmd = header.command_id
        if cmd & RESPONSE_BIT:
            fut = self.pending.pop(header.sequence_number, None)
            if fut is not None and not fut.done():
                fut.set_result(Response(header.command_status, raw, time.monotonic()))
        elif cmd == Command.ENQUIRE_LINK:
            self._write(encode_simple(Command.ENQUIRE_LINK_RESP, 0, header.sequence_number))
        elif cmd == Command.UNBIND:
            self.unbind_received.set()
            if self.answer_unbind:
                self._write(encode_simple(Command.UNBIND_RESP, 0, header.sequence_number))
        elif cmd in (Command.DELIVER_SM, Command.DATA_SM):
            pdu = codec.decode(raw)
            self.delivered.append(pdu)
            status = self.on_deliver(pdu) if self.on_deliver else self.deliver_status
            body = b"\x00" if status == 0 else b""
            self._write(encode_simple(cmd | RESPONSE_BIT, status, header.sequence_number, body))
        else:
            self._write(encode_simple(Command.GENERIC_NACK, 3, header.sequence_number))

    def _write(self, raw: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(raw)

    def pause(self) -> None:
        """Stop reading (the socket's receive window fills up)."""
        assert self.transport is not None
        self.transport.pause_reading()

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def request(self, pdu: codec.Pdu) -> asyncio.Future[Response]:
        pdu.sequence_number = next(self.seq)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            fut.set_exception(ConnectionError("closed"))
            return fut
        self.pending[pdu.sequence_number] = fut
        self._write(codec.encode(pdu))
        return fut

    async def bind(self, system_id: str = "acme", password: str = "secret",
                   kind: int = Command.BIND_TRANSCEIVER, timeout: float = 15.0) -> int:
        async with asyncio.timeout(timeout):
            resp = await self.request(codec.make_pdu(
                kind, system_id=system_id.encode(), password=password.encode(),
                interface_version=0x34))
        return resp.status

    def submit(self, destination: str = "14155550123", text: bytes = b"hello",
               **params: Any) -> asyncio.Future[Response]:
        return self.request(codec.make_pdu(
            Command.SUBMIT_SM, source_addr_ton=1, source_addr_npi=1,
            source_addr=b"18005550100", dest_addr_ton=1, dest_addr_npi=1,
            destination_addr=destination.encode(), short_message=text, **params))

    async def unbind(self, timeout: float = 5.0) -> int:
        async with asyncio.timeout(timeout):
            return (await self.request(codec.make_pdu(Command.UNBIND))).status

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Pump:
    """Submits from one sender, `window` at a time, for as long as it runs."""

    esme: Esme
    window: int
    destination: Callable[[int], str] = lambda i: f"1415{5550000 + i % 10000:07d}"
    statuses: dict[int, int] = field(default_factory=dict)
    samples: dict[int, bytes] = field(default_factory=dict)  # one response per status
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    failed: int = 0  # no response: the connection closed first
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    async def run(self, total: int | None = None, **params: Any) -> None:
        slots = asyncio.Semaphore(self.window)
        inflight: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            started = time.monotonic()
            try:
                resp = await self.esme.submit(self.destination(i), **params)
            except ConnectionError:
                self.failed += 1
            else:
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                self.samples.setdefault(resp.status, resp.raw)
                self.latencies.append(resp.at - started)
            finally:
                slots.release()

        i = 0
        while not self.stop.is_set() and (total is None or i < total):
            await slots.acquire()
            if self.stop.is_set() or self.esme.closed.is_set():
                slots.release()
                break
            task = asyncio.create_task(one(i))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            self.sent += 1
            i += 1
        if inflight:
            await asyncio.gather(*inflight)
