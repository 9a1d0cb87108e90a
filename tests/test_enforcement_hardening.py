"""Hardening of the SMPP data path against hostile or careless input
(issue 8, holes 3 and 4), end to end: smpplib or a raw peer as the sender,
the bundled simulator as the carrier, a real SQLite file.

* Any destination spelling a carrier could route to an opted-out subscriber
  is decided as that subscriber; anything that is not a clean number after
  normalisation is refused with ESME_RINVDSTADR and never forwarded.
* A failure while handling an MO answers the carrier 0x64 (it redelivers)
  and leaves every session bound and working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.smpp.constants import CommandStatus
from rules.model import MoOutcome
from tests.test_enforcement_e2e import (
    ALICE_DIGITS,
    BOB_DIGITS,
    World,
    bound_trx,
    mo,
    start_world,
    stop_world,
    submit,
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path)
    yield w
    await stop_world(w)


# --- hole 4: a failing MO handler --------------------------------------------------


async def test_an_mo_the_handler_cannot_take_gets_0x64_and_every_session_stays_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender bound as a transceiver, and an MO handler that fails once
    # (as it did for a stored reply text holding a lone surrogate).
    esme = await bound_trx(world)
    service = world.sidecar.service
    assert service is not None
    real = service.handle_mo
    failures = 0

    async def broken_once(*args: object, **kwargs: object) -> MoOutcome:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise UnicodeEncodeError("utf-8", "bye \ud800", 4, 5, "surrogates not allowed")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "handle_mo", broken_once)
    sessions_before = world.carrier.sessions

    # When the carrier delivers a STOP on the sender's session,
    # then the carrier is told to try again later (temporary error) ...
    status = await mo(world, "STOP", system_id="acme")
    assert status == CommandStatus.ESME_RX_T_APPN
    assert failures == 1

    # ... and nothing was closed: the redelivered STOP reaches the sender's
    # receiver and is committed, and the same bind still submits.
    redelivery = asyncio.create_task(mo(world, "STOP", system_id="acme"))
    forwarded = await asyncio.to_thread(esme.wait_deliver)
    assert forwarded.short_message == b"STOP"
    assert await redelivery == 0
    assert world.carrier.sessions == sessions_before
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45  # now opted out
    assert (await submit(esme, BOB_DIGITS)).status == 0
    esme.close()
