"""Proving that something did NOT reach the carrier.

An absence checked at once proves nothing: the sidecar may simply not have
sent it yet. So after the PDU that must not arrive, the test sends a
sentinel on the same session, a submit the sidecar allows, and waits for the
carrier to get it. A session's PDUs reach the carrier in order, so whatever
the sidecar would have forwarded before the sentinel has arrived by then;
only then is the absence asserted.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

from gateway.carrier_sim import CarrierSim
from gateway.smpp.pdu import Pdu
from tests.waiting import wait_for

_numbers = itertools.count(1)


def sentinel_text() -> bytes:
    """A message text no other PDU of the test carries."""
    return b"sentinel %d: must arrive" % next(_numbers)


async def arrivals_before_sentinel(
    carrier: CarrierSim, mark: int, send_sentinel: Callable[[bytes], Awaitable[object]],
    timeout: float = 5.0,
) -> list[Pdu]:
    """The PDUs the carrier received after the first `mark` and before the sentinel.

    `mark` is `len(carrier.received)` taken before the PDU under test was sent;
    `send_sentinel(text)` submits `text` to an allowed destination on the same
    session as that PDU.
    """
    text = sentinel_text()
    await send_sentinel(text)

    def arrived() -> int | None:
        for i, pdu in enumerate(carrier.received[mark:], start=mark):
            if pdu.message_bytes() == text:
                return i
        return None

    await wait_for(lambda: arrived() is not None, timeout)
    end = arrived()
    assert end is not None
    return carrier.received[mark:end]
