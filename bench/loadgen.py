"""SMPP load generator for the relay benchmark: one bind_transmitter that
keeps a window of submit_sm outstanding (or sends at a fixed rate) and
measures throughput and per-request latency.

Cheaper than what it measures, by construction:

* every submit_sm is encoded once at start-up with the project's codec
  (``gateway.smpp``); at run time only the 4-byte sequence number is
  written, as a separate piece of one joined write;
* responses are read by their 16-byte header only;
* all submits refilled after one read go out in one ``write``.

Latency is ``perf_counter_ns`` at the write that carried the submit to the
read that carried its response (one clock read per write and per read, which
is the resolution the event loop gives anyway). Only responses that arrive in
the measured interval (after ``--warmup``) are counted.

Usage (the orchestrator runs it)::

    python bench/loadgen.py --port 2775 [--window 64] [--seconds 10] [--rate 0]
        [--unsubscribed N --blocked-share 0.1] [--destinations 10000]

Prints one JSON line: throughput, latency percentiles, status counts, CPU.
A blocked submit (status 0x45, answered by the sidecar itself) counts as a
completed request; any other non-zero status counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BIND_TRANSMITTER,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESME_ROK,
    ESME_RSUBMITFAIL,
    GENERIC_NACK,
    HEADER,
    INBOUND_ADDRESS,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    UNBIND,
    UNBIND_RESP,
    allowed_number,
    percentile,
    unsubscribed_number,
)
from gateway.smpp import pdu as codec
from gateway.smpp.framing import FrameReader

_RING = 1 << 16  # send-time slots, indexed by sequence number; > any window
_TICK = 0.001  # rate mode: how often due submits are released


def build_submits(destinations: int, unsubscribed: int, blocked_share: float) -> list[bytes]:
    """`destinations` submit_sm PDUs (header with sequence number 0), each to
    a different subscriber. Every 1/blocked_share-th goes to one of the first
    `unsubscribed` preloaded numbers (spread over all of them), the rest to
    numbers that are never unsubscribed."""
    every = round(1 / blocked_share) if unsubscribed and blocked_share > 0 else 0
    source = INBOUND_ADDRESS.lstrip("+").encode()
    pdus = []
    for i in range(destinations):
        if every and i % every == 0:
            dest = unsubscribed_number((i // every * 7919) % unsubscribed)
        else:
            dest = allowed_number(i)
        pdu = codec.make_pdu(
            SUBMIT_SM,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=source,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=dest.encode(),
            short_message=b"Your ACME verification code is 482910. Reply STOP to opt out.",
        )
        pdus.append(codec.encode(pdu))
    return pdus


class LoadClient(asyncio.Protocol):
    """The client connection; `run()` drives it through bind, load, unbind."""

    def __init__(self, submits: list[bytes], window: int, rate: float) -> None:
        # Per submit: the first 12 header bytes (length, id, status) and the body.
        self._heads = [raw[:12] for raw in submits]
        self._bodies = [raw[16:] for raw in submits]
        self._next = 0
        self.window = window
        self.rate = rate
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.seq = 1  # 1 is the bind
        self.outstanding = 0
        self.sending = False
        self.measuring = False
        self.sent_at = array("q", bytes(8 * _RING))
        self.latencies: list[int] = []
        self.completed = 0
        self.total_done = 0  # warm-up and drain included (for CPU per message)
        self.ok = 0
        self.blocked = 0
        self.errors = 0
        self.error_statuses: dict[int, int] = {}
        self.late = 0  # rate mode: ticks on which the window was too full
        self.issued = 0
        self.rate_started = 0.0
        self.bind_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.unbind_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.drained = asyncio.Event()
        self.closed = False

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.bind_done.done():
            self.bind_done.set_result(-1)
        if not self.unbind_done.done():
            self.unbind_done.set_result(None)
        self.sending = False
        self.drained.set()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        reader = self.reader
        reader.feed(data)
        sent_at = self.sent_at
        measuring = self.measuring
        latencies = self.latencies
        unpack = HEADER.unpack_from
        done = 0
        while (frame := reader.next_frame()) is not None:
            _, command_id, status, seq = unpack(frame)
            if command_id in (SUBMIT_SM_RESP, GENERIC_NACK):
                done += 1
                if measuring:
                    latencies.append(now - sent_at[seq % _RING])
                    if status == ESME_ROK and command_id == SUBMIT_SM_RESP:
                        self.ok += 1
                    elif status == ESME_RSUBMITFAIL:
                        self.blocked += 1
                    else:
                        self.errors += 1
                        self.error_statuses[status] = self.error_statuses.get(status, 0) + 1
            elif command_id == ENQUIRE_LINK:
                assert self.transport is not None
                self.transport.write(HEADER.pack(16, ENQUIRE_LINK_RESP, 0, seq))
            elif command_id & RESPONSE_BIT:
                if command_id == BIND_TRANSMITTER | RESPONSE_BIT and not self.bind_done.done():
                    self.bind_done.set_result(status)
                elif command_id == UNBIND_RESP and not self.unbind_done.done():
                    self.unbind_done.set_result(None)
            elif command_id == UNBIND:
                assert self.transport is not None
                self.transport.write(HEADER.pack(16, UNBIND_RESP, 0, seq))
                self.sending = False
        if done:
            self.outstanding -= done
            self.total_done += done
            if measuring:
                self.completed += done
            if self.sending and not self.rate:
                self._send(done)
            elif self.outstanding == 0:
                self.drained.set()

    # --- sending ------------------------------------------------------------

    def _send(self, n: int) -> None:
        """Write `n` submits in one write."""
        transport = self.transport
        assert transport is not None
        heads, bodies = self._heads, self._bodies
        count = len(bodies)
        i = self._next
        seq = self.seq
        now = time.perf_counter_ns()
        sent_at = self.sent_at
        pieces: list[bytes] = []
        append = pieces.append
        for _ in range(n):
            seq += 1
            sent_at[seq % _RING] = now
            append(heads[i])
            append(seq.to_bytes(4, "big"))
            append(bodies[i])
            i += 1
            if i == count:
                i = 0
        self._next = i
        self.seq = seq
        self.outstanding += n
        transport.write(b"".join(pieces))

    def _tick(self) -> None:
        """Rate mode: release the submits that are due by now."""
        if not self.sending:
            return
        loop = asyncio.get_running_loop()
        due = int((loop.time() - self.rate_started) * self.rate) - self.issued
        room = self.window - self.outstanding
        n = min(due, room)
        if due > room:
            self.late += 1
        if n > 0:
            self.issued += n
            self._send(n)
        loop.call_later(_TICK, self._tick)

    # --- the run ------------------------------------------------------------------

    async def run(self, warmup: float, seconds: float, system_id: str, password: str) -> float:
        """Bind, load for warmup + seconds, drain, unbind. Returns the measured
        interval's exact length."""
        assert self.transport is not None
        bind = codec.make_pdu(BIND_TRANSMITTER, sequence_number=1, system_id=system_id.encode(),
                              password=password.encode(), interface_version=0x34)
        self.transport.write(codec.encode(bind))
        status = await asyncio.wait_for(self.bind_done, 10)
        if status == -1:
            raise ConnectionError("connection closed before the bind response")
        if status != 0:
            raise RuntimeError(f"bind refused with status {status:#x}")
        loop = asyncio.get_running_loop()
        self.sending = True
        if self.rate:
            self.rate_started = loop.time()
            self._tick()
        else:
            self._send(self.window)
        await asyncio.sleep(warmup)
        self.latencies.clear()
        start = time.perf_counter()
        self.measuring = True
        await asyncio.sleep(seconds)
        self.measuring = False
        elapsed = time.perf_counter() - start
        self.sending = False
        if self.closed:
            raise ConnectionError("the connection closed during the run")
        if self.outstanding:
            self.drained.clear()
            try:
                await asyncio.wait_for(self.drained.wait(), 10)
            except TimeoutError:
                print(f"loadgen: {self.outstanding} submits never answered", file=sys.stderr)
        unbind = HEADER.pack(16, UNBIND, 0, self.seq + 1)
        self.transport.write(unbind)
        try:
            await asyncio.wait_for(self.unbind_done, 5)
        except TimeoutError:
            print("loadgen: no unbind_resp", file=sys.stderr)
        self.transport.close()
        return elapsed


async def run(args: argparse.Namespace) -> dict[str, object]:
    submits = build_submits(args.destinations, args.unsubscribed, args.blocked_share)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: LoadClient(submits, args.window, args.rate), args.host, args.port)
    assert isinstance(client, LoadClient)
    elapsed = await client.run(args.warmup, args.seconds, args.system_id, args.password)
    lat = sorted(client.latencies)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "window": args.window,
        "rate": args.rate,
        "seconds": round(elapsed, 3),
        "completed": client.completed,
        "total_completed": client.total_done,
        "ok": client.ok,
        "blocked": client.blocked,
        "errors": client.errors,
        "error_statuses": {f"{k:#x}": v for k, v in client.error_statuses.items()},
        "throughput": round(client.completed / elapsed, 1),
        "p50_us": round(percentile(lat, 0.50) / 1000, 1),
        "p90_us": round(percentile(lat, 0.90) / 1000, 1),
        "p99_us": round(percentile(lat, 0.99) / 1000, 1),
        "p999_us": round(percentile(lat, 0.999) / 1000, 1),
        "max_us": round((lat[-1] if lat else 0) / 1000, 1),
        "late_ticks": client.late,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=int, default=64, help="submits outstanding at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured interval")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured lead-in")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="submits per second (0: as fast as the window allows)")
    parser.add_argument("--destinations", type=int, default=10_000,
                        help="distinct destination numbers, cycled")
    parser.add_argument("--unsubscribed", type=int, default=0,
                        help="preloaded unsubscribed numbers some traffic goes to")
    parser.add_argument("--blocked-share", type=float, default=0.1,
                        help="share of destinations that are unsubscribed numbers")
    parser.add_argument("--system-id", default="bench")
    parser.add_argument("--password", default="bench")
    args = parser.parse_args()
    if not 1 <= args.window < _RING // 2:
        parser.error(f"--window must be between 1 and {_RING // 2 - 1}")
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
