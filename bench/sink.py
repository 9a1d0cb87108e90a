"""A minimal, fast SMSC for the relay benchmark: the "carrier" at the end.

It accepts any bind_*, answers every submit_sm at once with a fixed-width
unique message id (16 hex digits, like many carriers), answers enquire_link
and unbind, and refuses anything else with generic_nack. It never sends
receipts or MOs: the benchmark measures the submit path only.

Per read it answers every whole PDU received with one `write`, and it looks at
nothing but the 16-byte header, so it costs much less per message than the
relay in front of it. Usage (the orchestrator starts it)::

    python bench/sink.py --listen 127.0.0.1:0 [--max-seconds 600]

It prints ``READY <port>`` once listening, and on SIGTERM/SIGINT (or after
``--max-seconds``) one JSON line with what it answered and its CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BIND_COMMANDS,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESME_RINVCMDID,
    GENERIC_NACK,
    HEADER,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    UNBIND,
    UNBIND_RESP,
)
from gateway.smpp.framing import FrameReader

_SYSTEM_ID = b"benchsink\x00"
_MESSAGE_ID_LENGTH = 17  # 16 hex digits and the NUL
_SUBMIT_RESP_LENGTH = 16 + _MESSAGE_ID_LENGTH


class Counters:
    """What the sink did, for the summary line."""

    def __init__(self) -> None:
        self.submits = 0
        self.binds = 0
        self.connections = 0
        self.nacks = 0


class SinkProtocol(asyncio.Protocol):
    """One SMPP connection to the sink."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        reader = self.reader
        try:
            reader.feed(data)
        except Exception:
            transport.abort()
            return
        out: list[bytes] = []
        counters = self.counters
        pack = HEADER.pack
        unpack = HEADER.unpack_from
        close = False
        while True:
            try:
                frame = reader.next_frame()
            except Exception:
                transport.abort()
                return
            if frame is None:
                break
            _, command_id, _, seq = unpack(frame)
            if command_id == SUBMIT_SM:
                counters.submits += 1
                out.append(pack(_SUBMIT_RESP_LENGTH, SUBMIT_SM_RESP, 0, seq))
                out.append(b"%016x\x00" % counters.submits)
            elif command_id == ENQUIRE_LINK:
                out.append(pack(16, ENQUIRE_LINK_RESP, 0, seq))
            elif command_id in BIND_COMMANDS:
                counters.binds += 1
                out.append(pack(16 + len(_SYSTEM_ID), command_id | RESPONSE_BIT, 0, seq))
                out.append(_SYSTEM_ID)
            elif command_id == UNBIND:
                out.append(pack(16, UNBIND_RESP, 0, seq))
                close = True
                break
            elif command_id & RESPONSE_BIT:
                continue  # we send no requests; a stray response needs no answer
            else:
                counters.nacks += 1
                out.append(pack(16, GENERIC_NACK, ESME_RINVCMDID, seq))
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()


async def serve(host: str, port: int, max_seconds: float) -> Counters:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counters), host, port, backlog=128)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    server.close()
    return counters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="exit on its own after this long (a bound if the parent dies)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    counters = asyncio.run(serve(host, int(port), args.max_seconds))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "submits": counters.submits,
        "binds": counters.binds,
        "connections": counters.connections,
        "nacks": counters.nacks,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
