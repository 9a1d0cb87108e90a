"""The `optout-sidecar` command as an operator runs it: import an existing
list, export it back, and `run` on embedded defaults."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from rules.service import OptOutService
from tests.raw_smpp import RawPeer

INBOUND = "+18005550100"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


async def test_import_reports_bad_rows_by_line_and_export_gives_the_list(tmp_path: Path) -> None:
    db = tmp_path / "optout.db"
    service = await OptOutService.open(f"sqlite:///{db}")
    await service.create_address(INBOUND)
    await service.close()
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    csv = tmp_path / "list.csv"
    csv.write_text("phone_number,inbound_address,since\n"
                   "+14155550100,+18005550100,2026-01-02T03:04:05Z\n"
                   "not-a-number,+18005550100,\n"
                   "(415) 555-0101,18005550100,\n"
                   "+18765550100,+18005550100,\n")

    imported = cli("import", str(csv), "--config", str(config), cwd=tmp_path)
    assert imported.returncode == 1  # some rows were rejected
    assert "imported 2" in imported.stdout and "rejected 2" in imported.stdout
    assert f"{csv}:3:" in imported.stderr and f"{csv}:5:" in imported.stderr
    assert "Jamaica" in imported.stderr

    exported = cli("export", "--config", str(config), cwd=tmp_path)
    assert exported.returncode == 0
    lines = exported.stdout.strip().splitlines()
    assert lines[0].startswith("phone_number,inbound_address,since")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["+14155550100", "+14155550101"]


async def test_run_on_embedded_defaults_prints_where_to_bind(tmp_path: Path) -> None:
    config = tmp_path / "ports.toml"
    # Embedded defaults, only on free ports so the test never collides.
    config.write_text('[smpp]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path}/demo.db"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin"},
    )
    assert proc.stdout is not None
    try:
        banner: list[str] = []
        async with asyncio.timeout(30):
            while not banner or not banner[-1].startswith("Stop with"):
                banner.append((await proc.stdout.readline()).decode().rstrip())
        text = "\n".join(banner)
        assert "bundled simulator" in text and "admin token" in text
        http = next(line for line in banner if "console and API" in line).split()[-3]
        async with aiohttp.ClientSession() as s, s.get(http + "healthz") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert await proc.wait() == 0  # SIGTERM is a clean stop


async def test_carrier_sim_fault_modes_from_the_command_line(tmp_path: Path) -> None:
    # Given the simulator started to refuse binds (one of its fault modes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "carrier-sim", "--listen", f"127.0.0.1:{port}",
        "--control", "127.0.0.1:0", "--bind-status", "0x0d", "--submit-status", "0x58",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None
        assert b"carrier simulator" in await asyncio.wait_for(proc.stdout.readline(), 30)
        # (it prints that line just before it listens)
        peer = None
        async with asyncio.timeout(30):
            while peer is None:
                try:
                    peer = await RawPeer.connect("127.0.0.1", port)
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
        # When a client binds, then it gets that status
        resp = await peer.bind(system_id="acme", password="secret")
        assert resp.command_status == 0x0D
        peer.close()
    finally:
        proc.terminate()
        await proc.wait()


def test_carrier_sim_refuses_a_status_that_is_not_a_number(tmp_path: Path) -> None:
    result = cli("carrier-sim", "--submit-status", "throttled", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a status" in result.stderr


def test_a_database_that_is_down_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # Given a fleet configuration whose PostgreSQL does not answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\nurl = "postgresql://optout:s3cret@127.0.0.1:{port}/optout"\n'
                      '[http]\nlisten = "127.0.0.1:0"\n[smpp]\nlisten = "127.0.0.1:0"\n')
    # When the sidecar starts, it says so in one line and exits 1 (the
    # orchestrator restarts it), without a traceback or the password.
    done = cli("run", "--config", str(config), cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 1
    assert "optout-sidecar: cannot start: cannot open store" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_output_to_a_reader_that_went_away_ends_quietly(tmp_path: Path) -> None:
    """`optout-sidecar version | head -0`: no traceback, the SIGPIPE status."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "version"], cwd=tmp_path,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""
