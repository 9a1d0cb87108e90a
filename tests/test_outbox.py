"""The reply outbox shared by a fleet: each confirmation is claimed by one
sidecar, a dead sidecar's claims are taken over after the lease, on both
store backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rules.service import OptOutService

TOLL_FREE = "+18005550199"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fleet(store_url: str, clock: Clock) -> AsyncIterator[tuple[OptOutService, OptOutService]]:
    a = await OptOutService.open(store_url, clock=clock)
    b = await OptOutService.open(store_url, clock=clock)
    await a.create_address(TOLL_FREE)
    yield a, b
    await a.close()
    await b.close()


async def stops(svc: OptOutService, n: int) -> None:
    for i in range(n):
        await svc.handle_mo(TOLL_FREE, f"+1415555{i:04d}", "STOP")


async def test_two_sidecars_claiming_at_once_split_the_outbox(
    fleet: tuple[OptOutService, OptOutService],
) -> None:
    a, b = fleet
    await stops(a, 30)
    # When both sidecars claim in small bites at the same time
    got_a: list[int] = []
    got_b: list[int] = []

    async def drain(svc: OptOutService, owner: str, into: list[int]) -> None:
        while claimed := await svc.claim_replies(owner, limit=4):
            into += [r.id for r in claimed]
            await svc.mark_replies_sent([(r.id, None) for r in claimed])

    await asyncio.gather(drain(a, "a", got_a), drain(b, "b", got_b))
    # Then every reply went to exactly one of them
    assert sorted(got_a + got_b) == sorted(set(got_a + got_b))
    assert len(got_a + got_b) == 30
    assert await a.pending_reply_count() == 0


async def test_a_claim_is_exclusive_until_its_lease_expires(
    fleet: tuple[OptOutService, OptOutService], clock: Clock
) -> None:
    a, b = fleet
    await stops(a, 3)
    held = await a.claim_replies("sidecar-a", lease=60)
    assert len(held) == 3
    # Another sidecar gets nothing while A's lease runs
    assert await b.claim_replies("sidecar-b", lease=60) == []
    clock.now += 59
    assert await b.claim_replies("sidecar-b", lease=60) == []
    # A (alive, retrying after a carrier error) gets its own claims again
    assert [r.id for r in await a.claim_replies("sidecar-a", lease=60)] == [r.id for r in held]
    # When A dies (stops renewing) and the lease runs out, B takes them over
    clock.now += 61
    taken = await b.claim_replies("sidecar-b", lease=60)
    assert [r.id for r in taken] == [r.id for r in held]
    assert await a.claim_replies("sidecar-a", lease=60) == []


async def test_a_sent_reply_is_never_claimed_again(
    fleet: tuple[OptOutService, OptOutService], clock: Clock
) -> None:
    a, b = fleet
    await stops(a, 2)
    first = await a.claim_replies("sidecar-a", limit=1)
    await a.mark_replies_sent([(first[0].id, "msg-1")])
    clock.now += 3600
    rest = await b.claim_replies("sidecar-b")
    assert [r.id for r in rest] == [first[0].id + 1]
    await b.mark_replies_sent([(rest[0].id, "msg-2")])
    clock.now += 3600
    assert await a.claim_replies("sidecar-a") == []
    assert await b.pending_reply_count() == 0
