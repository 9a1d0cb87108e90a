"""Helpers shared by the relay benchmark's processes (sink, load generator,
orchestrator): the few SMPP byte layouts they hand-build, percentiles, and
waiting for a TCP port.

The load generator and the sink must cost less than the relay they measure,
so they do not decode PDUs with the table-driven codec on the hot path: they
read the 16-byte header with one `struct` call and answer with pre-built
bytes. The codec (`gateway.smpp`) builds the bodies once, at start-up.
"""

from __future__ import annotations

import math
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEADER = struct.Struct(">IIII")
"""command_length, command_id, command_status, sequence_number."""

RESPONSE_BIT = 0x80000000
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
BIND_COMMANDS = frozenset({BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER})

ESME_ROK = 0x00
ESME_RINVCMDID = 0x03
ESME_RSUBMITFAIL = 0x45
"""What the sidecar answers for a blocked submit (SPEC section 3 default)."""

# Synthetic number plan. Unsubscribed subscribers are keys
# UNSUB_BASE + i (i < N), i.e. +1 202 200 0000 upward: valid NANP shapes, US
# area codes. Subscribed (allowed) traffic goes to +1 646 2xx xxxx, which the
# preload never touches.
UNSUB_BASE = 12_022_000_000
ALLOWED_BASE = 16_462_000_000
INBOUND_ADDRESS = "+18005550199"


def unsubscribed_number(i: int) -> str:
    """The i-th preloaded unsubscribed number as SMPP international digits."""
    return str(UNSUB_BASE + i)


def allowed_number(i: int) -> str:
    """The i-th subscribed (never preloaded) number as SMPP international digits."""
    return str(ALLOWED_BASE + i)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence (0 if empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for configs that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None
) -> float:
    """Connects until `host:port` accepts (or `timeout` passes); returns the
    seconds waited. `alive`, if given, returns False once the process that
    should open the port has died, so a crash fails fast instead of waiting."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if alive is not None and not alive():
            raise RuntimeError(f"the process that should listen on {host}:{port} exited")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return time.monotonic() - started
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not accepting after {timeout:.0f} s") from None
            time.sleep(0.02)
