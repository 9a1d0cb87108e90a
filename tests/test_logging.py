"""Logs are one JSON object per line, and by default they never carry a
subscriber's phone number or the text of a message (SPEC section 3)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import logs
from tests.test_enforcement_e2e import ALICE, ALICE_DIGITS, bound_trx, mo, start_world, stop_world

SECRET_TEXT = "Stop texting me about the zucchini sale"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logs.configure_masking(unmask=False)


async def run_story(tmp_path: Path) -> None:
    world = await start_world(tmp_path)
    try:
        esme = await bound_trx(world)
        assert await mo(world, SECRET_TEXT) == 0
        resp = await asyncio.to_thread(esme.submit, ALICE_DIGITS, b"zucchini sale today")
        assert resp.status == 0x45
        esme.close()
    finally:
        await stop_world(world)


async def test_numbers_and_text_are_masked_by_default(tmp_path: Path,
                                                      captured: io.StringIO) -> None:
    await run_story(tmp_path)
    lines = captured.getvalue().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    names = {e["event"] for e in events}
    assert {"mo_handled", "submit_blocked"} <= names
    text = captured.getvalue()
    assert ALICE_DIGITS not in text and ALICE not in text
    assert "zucchini" not in text
    mo_event = next(e for e in events if e["event"] == "mo_handled")
    assert mo_event["sender"] == logs.phone(ALICE) != ALICE
    assert mo_event["text"] == f"<{len(SECRET_TEXT)} chars>"


async def test_unmask_switch_shows_them_for_debugging(tmp_path: Path,
                                                      captured: io.StringIO) -> None:
    logs.configure_masking(unmask=True)
    await run_story(tmp_path)
    events = [json.loads(line) for line in captured.getvalue().splitlines()]
    mo_event = next(e for e in events if e["event"] == "mo_handled")
    assert mo_event["sender"] == ALICE
    assert mo_event["text"] == SECRET_TEXT


def test_throttle_logs_once_per_interval_and_counts_the_rest() -> None:
    from gateway.logs import Throttle

    now = [0.0]
    throttle = Throttle(interval=10.0, clock=lambda: now[0])
    assert throttle.allow("refused") == 0  # the first one is logged
    assert [throttle.allow("refused") for _ in range(500)] == [None] * 500
    assert throttle.allow("other") == 0  # keys are independent
    now[0] = 10.0
    assert throttle.allow("refused") == 500  # logged, with the count not logged
    assert throttle.allow("refused") is None
