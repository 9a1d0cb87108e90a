"""The change feed: two services on one store (two processes' worth of
memory) see each other's changes without a restart, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rules.model import Action, SmsType, Source
from rules.service import OptOutService
from tests.waiting import wait_for

TOLL_FREE = "+18005550199"
SHORT = "898211"
ALICE = "+14155550100"
BOB = "+16045550100"
M = SmsType.MARKETING
V = SmsType.VERIFICATION

# Generous: a loaded CI box; the benchmark measures the real figure.
PROPAGATION_TIMEOUT = 5.0


@pytest.fixture
async def pair(store_url: str) -> AsyncIterator[tuple[OptOutService, OptOutService]]:
    """Sidecar A and sidecar B on the same store, both following the feed."""
    a = await OptOutService.open(store_url)
    b = await OptOutService.open(store_url)
    yield a, b
    await a.close()
    await b.close()


def blocked(svc: OptOutService, number: str, sms_type: SmsType = M) -> Callable[[], bool]:
    return lambda: not svc.decide("app", sms_type, number).allowed


async def test_an_mo_opt_out_on_a_blocks_on_b(pair: tuple[OptOutService, OptOutService]) -> None:
    a, b = pair
    # Given an address created on A, known to B through the feed
    await a.create_address(TOLL_FREE)
    await wait_for(lambda: b._lookup(TOLL_FREE) is not None, PROPAGATION_TIMEOUT)
    assert b.decide("app", M, ALICE).allowed
    # When ALICE texts STOP through A
    outcome = await a.handle_mo(TOLL_FREE, ALICE, "STOP")
    assert outcome.action is Action.OPT_OUT
    # Then A blocks at once and B within the propagation time
    assert not a.decide("app", M, ALICE).allowed
    await wait_for(blocked(b, ALICE), PROPAGATION_TIMEOUT)
    assert b.unsubscribed_count() == 1
    # And a START through B releases her on A
    await b.handle_mo(TOLL_FREE, ALICE, "START")
    await wait_for(lambda: a.decide("app", M, ALICE).allowed, PROPAGATION_TIMEOUT)


async def test_a_rule_edit_on_a_applies_on_b(pair: tuple[OptOutService, OptOutService]) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    await a.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
    await wait_for(blocked(b, ALICE, V), PROPAGATION_TIMEOUT)
    # When A narrows the default rule to marketing only
    await a.set_default_rule(TOLL_FREE, [M])
    # Then B lets verification through and still blocks marketing
    await wait_for(lambda: b.decide("app", V, ALICE).allowed, PROPAGATION_TIMEOUT)
    assert not b.decide("app", M, ALICE).allowed
    # And a per-app rule made on B applies on A
    await b.create_rule(TOLL_FREE, "otp-app", [])
    await wait_for(lambda: a.decide("otp-app", M, ALICE).allowed, PROPAGATION_TIMEOUT)
    assert [r.app_id for r in await a.list_rules(TOLL_FREE)] == ["otp-app"]


async def test_keywords_edited_on_a_are_matched_on_b(
    pair: tuple[OptOutService, OptOutService],
) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    kw = await a.get_keywords(TOLL_FREE)
    await a.set_keywords(TOLL_FREE, type(kw)(("HALT", "STOP"), kw.opt_in, kw.help, kw.match),
                         allow_noncompliant=True)
    await wait_for(
        lambda: (addr := b._lookup(TOLL_FREE)) is not None
        and "HALT" in addr.row.keywords.opt_out,
        PROPAGATION_TIMEOUT,
    )
    assert (await b.handle_mo(TOLL_FREE, ALICE, "halt")).action is Action.OPT_OUT
    await wait_for(blocked(a, ALICE), PROPAGATION_TIMEOUT)


async def test_deleting_an_address_on_a_releases_its_numbers_on_b(
    pair: tuple[OptOutService, OptOutService],
) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    await a.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
    await wait_for(blocked(b, ALICE), PROPAGATION_TIMEOUT)
    await a.delete_address(TOLL_FREE, force=True)
    await wait_for(lambda: b.decide("app", M, ALICE).allowed, PROPAGATION_TIMEOUT)
    assert b._lookup(TOLL_FREE) is None
    assert await b.list_addresses() == []


async def test_an_import_on_a_blocks_every_number_on_b(
    pair: tuple[OptOutService, OptOutService],
) -> None:
    a, b = pair
    await a.create_address(SHORT)
    lines = ["phone_number,inbound_address\n"] + [
        f"+1415555{i:04d},{SHORT}\n" for i in range(300)
    ]
    report = await a.import_csv(lines)
    assert report.imported == 300
    await wait_for(lambda: b.unsubscribed_count() == 300, PROPAGATION_TIMEOUT)
    assert all(not b.decide("app", M, f"+1415555{i:04d}").allowed for i in range(300))


async def test_a_reply_queued_on_a_wakes_the_reply_sender_of_b(
    pair: tuple[OptOutService, OptOutService],
) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    woken = asyncio.Event()
    b.add_reply_listener(woken.set)
    await a.handle_mo(TOLL_FREE, ALICE, "STOP")
    await asyncio.wait_for(woken.wait(), PROPAGATION_TIMEOUT)
    assert [r.destination_addr for r in await b.pending_replies()] == [ALICE]


async def test_writes_on_both_at_once_leave_both_memories_equal_to_the_store(
    pair: tuple[OptOutService, OptOutService], store_url: str
) -> None:
    a, b = pair
    await a.create_address(TOLL_FREE)
    await wait_for(lambda: b._lookup(TOLL_FREE) is not None, PROPAGATION_TIMEOUT)
    numbers = [f"+1212555{i:04d}" for i in range(40)]
    # Each number gets STOP on one sidecar and, for every third, START on
    # the other, all at once.
    ops = []
    for i, n in enumerate(numbers):
        first, second = (a, b) if i % 2 else (b, a)
        ops.append(first.handle_mo(TOLL_FREE, n, "STOP"))
        if i % 3 == 0:
            ops.append(second.unsubscribe(BOB, TOLL_FREE, source=Source.API))
    results = await asyncio.gather(*ops, return_exceptions=True)
    assert all(not isinstance(r, BaseException) or "already" in str(r) for r in results)
    fresh = await OptOutService.open(store_url, follow=False)
    try:
        truth = sorted(fresh._index)
    finally:
        await fresh.close()
    await wait_for(lambda: sorted(a._index) == truth and sorted(b._index) == truth,
                   PROPAGATION_TIMEOUT)
    assert len(truth) == 41


async def test_a_follower_cut_off_past_the_retention_reloads_everything(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep no history at all: every write prunes what came before it.
    for backend in ("sqlite", "postgres"):
        monkeypatch.setattr(f"rules.store.{backend}.FEED_KEEP", 0)
        monkeypatch.setattr(f"rules.store.{backend}.FEED_RETENTION", -1.0)
        monkeypatch.setattr(f"rules.store.{backend}.PRUNE_EVERY", 1)
    a = await OptOutService.open(store_url)
    b = await OptOutService.open(store_url, follow=False)  # B is "cut off"
    try:
        await a.create_address(TOLL_FREE)
        await a.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
        await a.unsubscribe(BOB, TOLL_FREE, source=Source.API)
        await a.resubscribe(ALICE, TOLL_FREE, source=Source.API, reason="consent on file")
        # When B reads the feed again, the changes it missed are gone
        await b._feed.follow_once()
        # Then it reloaded from the tables: same state as A
        assert b._lookup(TOLL_FREE) is not None
        assert b.decide("app", M, ALICE).allowed
        assert not b.decide("app", M, BOB).allowed
        assert b._feed.applied == a._feed.applied
    finally:
        await a.close()
        await b.close()


async def test_cli_import_into_a_running_sidecars_file_is_enforced_without_restart(
    tmp_path: Path,
) -> None:
    # Given a sidecar's service running on a SQLite file
    url = f"sqlite:///{tmp_path}/optout.db"
    running = await OptOutService.open(url)
    try:
        await running.create_address(SHORT)
        config = tmp_path / "c.toml"
        config.write_text(f'[store]\nurl = "{url}"\n')
        csv = tmp_path / "list.csv"
        csv.write_text(f"phone_number,inbound_address\n{ALICE},{SHORT}\n{BOB},{SHORT}\n")
        # When an operator imports a list with the CLI (another process)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "import", "--config", str(config), str(csv),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert b"imported 2" in out
        # Then the running service blocks both numbers, without a restart
        await wait_for(blocked(running, ALICE), PROPAGATION_TIMEOUT)
        await wait_for(blocked(running, BOB), PROPAGATION_TIMEOUT)
        assert time.monotonic() - started < 60
    finally:
        await running.close()


async def test_a_follower_that_hears_no_notification_still_gets_every_change(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given PostgreSQL followers whose LISTEN never works (lost notifications)
    from rules.store.postgres import PostgresStore

    async def deaf(self: PostgresStore) -> None:
        return None

    monkeypatch.setattr(PostgresStore, "_listen", deaf)
    a = await OptOutService.open(pg_url)
    b = await OptOutService.open(pg_url)
    try:
        await a.create_address(TOLL_FREE)
        for n in (ALICE, BOB):
            await a.unsubscribe(n, TOLL_FREE, source=Source.API)
        # Then B reads them from the table by id on its periodic look
        await wait_for(lambda: b.unsubscribed_count() == 2, PROPAGATION_TIMEOUT)
        assert not b.decide("app", M, ALICE).allowed and not b.decide("app", M, BOB).allowed
    finally:
        await a.close()
        await b.close()


async def test_closing_ends_the_follower_even_when_its_cancellation_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a follower waiting for changes in a call that loses a
    cancellation (as Python 3.11's wait_for does when its result is ready at
    that moment; asyncpg's connect uses it), when the service closes, then it
    closes at once instead of following the feed for ever."""
    svc = await OptOutService.open(f"sqlite:///{tmp_path}/s.db")
    store = svc._feed._store
    real = store.wait_for_changes
    waiting = asyncio.Event()

    async def loses_a_cancellation(timeout: float) -> None:
        waiting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await real(timeout)

    monkeypatch.setattr(store, "wait_for_changes", loses_a_cancellation)
    waiting.clear()
    await asyncio.wait_for(waiting.wait(), 5.0)

    await asyncio.wait_for(svc.close(), 3.0)
