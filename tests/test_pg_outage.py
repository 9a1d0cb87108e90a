"""PostgreSQL going away and coming back, seen from two services on one
database: memory keeps deciding, writes fail cleanly as StoreUnavailable,
and once the server is back the pool reconnects and the feed catches up,
with no reopen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rules.model import SmsType, Source, StoreUnavailable
from rules.service import OptOutService
from tests.pgserver import PgServer
from tests.waiting import wait_for

TOLL_FREE = "+18005550199"
ALICE = "+14155550100"
BOB = "+16045550100"
M = SmsType.MARKETING


@pytest.fixture
async def pair(
    managed_pg: PgServer, pg_url: str
) -> AsyncIterator[tuple[OptOutService, OptOutService]]:
    a = await OptOutService.open(pg_url, busy_timeout_ms=2000)
    b = await OptOutService.open(pg_url, busy_timeout_ms=2000)
    yield a, b
    await a.close()
    await b.close()


async def test_a_server_restart_is_ridden_out_without_reopening(
    pair: tuple[OptOutService, OptOutService], managed_pg: PgServer
) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    await a.handle_mo(TOLL_FREE, ALICE, "STOP")
    await wait_for(lambda: not b.decide("app", M, ALICE).allowed, 10)

    await asyncio.to_thread(managed_pg.stop)
    try:
        # Memory still decides; writes and reads fail as StoreUnavailable
        assert not a.decide("app", M, ALICE).allowed
        assert b.decide("app", M, BOB).allowed
        with pytest.raises(StoreUnavailable):
            await a.handle_mo(TOLL_FREE, BOB, "STOP")
        with pytest.raises(StoreUnavailable):
            await b.unsubscribe(BOB, TOLL_FREE, source=Source.API)
        assert not await a.ping()
        await wait_for(lambda: not b._feed.connected, 10)
    finally:
        await asyncio.to_thread(managed_pg.start)

    # The first write after the restart succeeds on a fresh connection (the
    # pool's old ones are dead), and the other service learns of it.
    await a.handle_mo(TOLL_FREE, BOB, "STOP")
    assert not a.decide("app", M, BOB).allowed
    await wait_for(lambda: not b.decide("app", M, BOB).allowed, 10)
    await wait_for(lambda: b._feed.connected, 10)
    assert await b.ping()
    # And a change made on B reaches A (its follower, and LISTEN, are back)
    await b.resubscribe(ALICE, TOLL_FREE, source=Source.API, reason="consent on file")
    await wait_for(lambda: a.decide("app", M, ALICE).allowed, 10)
