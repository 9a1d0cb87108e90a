"""No acknowledged STOP is ever lost, even to kill -9 (SPEC section 5).

A child process opens a real SQLite file and handles a stream of STOPs;
after each `handle_mo` returns it prints the number and flushes. The parent
SIGKILLs it mid-stream, reopens the store and checks that every number the
child acknowledged is unsubscribed, recorded and has its confirmation queued.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from rules.model import SmsType
from rules.service import OptOutService

REPO = Path(__file__).resolve().parent.parent
TOLL_FREE = "+18005550199"

CHILD = """
import asyncio, sys
from rules.service import OptOutService

async def main(url: str, start: int) -> None:
    service = await OptOutService.open(url)
    print("ready", flush=True)
    i = start
    while True:
        number = f"+1415{2_000_000 + i:07d}"
        outcome = await service.handle_mo("{toll_free}", number, "STOP")
        if not outcome.handled:
            sys.exit(f"not handled: {outcome.notes}")
        # Only now is the STOP acknowledged (the carrier would get its resp).
        sys.stdout.write(number + "\\n")
        sys.stdout.flush()
        i += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""".replace("{toll_free}", TOLL_FREE)

LINE_TIMEOUT = 20.0


async def run_and_kill(url: str, script: Path, start: int, kill_after: int) -> list[str]:
    """Runs the child until it acknowledged `kill_after` STOPs, SIGKILLs it,
    and returns every number it acknowledged (including any printed between
    the last read and the kill)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        url,
        str(start),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT)
        assert first == b"ready\n", first
        while len(acknowledged) < kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT)
            assert line, "child exited early"
            acknowledged.append(line.decode().strip())
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
    rest = await asyncio.wait_for(proc.stdout.read(), LINE_TIMEOUT)
    acknowledged += [n for n in rest.decode().splitlines() if n.strip()]
    assert await asyncio.wait_for(proc.wait(), LINE_TIMEOUT) == -signal.SIGKILL
    return acknowledged


@pytest.mark.timeout(120)
async def test_acknowledged_stops_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/durable.db"
    setup = await OptOutService.open(url)
    await setup.create_address(TOLL_FREE)
    await setup.close()
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    acknowledged: list[str] = []
    # Several kills at different points, each on the file the last one left.
    for round_, kill_after in enumerate((25, 7, 40)):
        acknowledged += await run_and_kill(url, script, round_ * 1_000_000, kill_after)

    service = await OptOutService.open(url)
    try:
        for number in acknowledged:
            assert not service.decide("app", SmsType.MARKETING, number).allowed, number
        listed, _ = await service.list_unsubscribed(limit=1000)
        assert set(acknowledged) <= {u.phone_number for u in listed}
        recorded = {r.phone_number async for r in service.iter_records()}
        assert set(acknowledged) <= recorded
        queued = {r.destination_addr for r in await service.pending_replies(limit=1000)}
        assert set(acknowledged) <= queued
        # The index loaded at start-up agrees with the rows on disk.
        assert service.unsubscribed_count() == len(listed)
    finally:
        await service.close()
