"""Which implementation runs (gateway/speed.py) and how the build decides
(buildtools/optout_build.py, setup.py).

The suite runs twice in CI: once as installed by `pip install -e` (pure
Python: an editable install never compiles) and once more, for the codec,
relay and enforcement tests, after `python setup.py build_ext --inplace`
with ``OPTOUT_EXPECT_COMPILED=1`` (.ci/run). The tests here hold in both.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from gateway import speed
from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import ConfigError, parse_config
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from tests.raw_smpp import RawPeer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "buildtools"))
import optout_build  # noqa: E402 - the build's own module, not a package

try:
    import uvloop  # noqa: F401
    HAVE_UVLOOP = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_UVLOOP = False


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in (speed.PURE_ENV, speed.LOOP_ENV)}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, env=environ, cwd=ROOT, timeout=120)


def fields(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


# --- optout-sidecar version ----------------------------------------------------------


def test_version_names_the_hot_path_and_the_event_loop() -> None:
    result = cli("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("optout-sidecar ")
    info = fields(result.stdout)
    status = speed.hot_path_status()
    assert info["hot path"].startswith("compiled" if status.kind == "compiled" else status.kind
                                       if status.kind == "mixed" else "pure Python")
    assert info["event loop"].startswith("uvloop" if HAVE_UVLOOP else "asyncio")


def test_pure_python_can_be_forced_at_run_time() -> None:
    """OPTOUT_PURE_PYTHON=1 loads the .py files even where compiled modules
    are installed (in CI's compiled pass this is the case that matters)."""
    info = fields(cli("version", OPTOUT_PURE_PYTHON="1").stdout)
    assert info["hot path"] == f"pure Python ({speed.PURE_ENV} is set)"


@pytest.mark.skipif(os.environ.get("OPTOUT_EXPECT_COMPILED") != "1",
                    reason="only in CI's compiled pass (OPTOUT_EXPECT_COMPILED=1)")
def test_the_compiled_pass_really_runs_compiled_code() -> None:
    """Guards the CI pass against testing pure Python twice."""
    status = speed.hot_path_status()
    assert status.kind == "compiled", status.describe()
    assert status.stale == (), status.describe()


def test_event_loop_switch() -> None:
    assert fields(cli("version", OPTOUT_EVENT_LOOP="asyncio").stdout)["event loop"] == (
        "asyncio (uvloop off by OPTOUT_EVENT_LOOP)")
    bad = cli("version", OPTOUT_EVENT_LOOP="tokio")
    assert bad.returncode == 2
    assert "OPTOUT_EVENT_LOOP must be one of auto, asyncio, uvloop" in bad.stderr


def test_event_loop_config_key_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smpp\.event_loop"):
        parse_config({"smpp": {"event_loop": "fast"}})
    config = tmp_path / "sidecar.toml"
    config.write_text('[smpp]\nevent_loop = "asyncio"\n')
    assert fields(cli("version", "--config", str(config)).stdout)["event loop"] == (
        "asyncio (uvloop off by [smpp] event_loop)")


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed: pip install -e '.[test]'")
async def test_a_sidecar_on_uvloop_relays_submits(tmp_path: Path) -> None:
    """The sidecar process on uvloop: bind, submit, answer, as on asyncio."""
    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    config = tmp_path / "sidecar.toml"
    config.write_text(textwrap.dedent(f"""
        [smpp]
        listen = "127.0.0.1:0"
        event_loop = "uvloop"
        allow_unknown_accounts = true
        [upstream]
        address = "127.0.0.1:{carrier.port}"
        [http]
        listen = "127.0.0.1:0"
        [[http.tokens]]
        name = "ops"
        token = "ops-token-0123456789"
        role = "admin"
        [store]
        url = "sqlite:///{tmp_path / 'optout.db'}"
    """))
    log = tmp_path / "sidecar.log"
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        async with asyncio.timeout(60):
            while "SMPP: point your binds at" not in log.read_text():
                assert proc.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        text = log.read_text()
        assert '"event_loop": "uvloop' in text, text
        host, port = text.split("point your binds at ")[1].split()[0].rsplit(":", 1)
        peer = await RawPeer.connect(host, int(port))
        try:
            assert (await peer.bind(system_id="any", password="pw")).command_status == 0
            await peer.send(codec.make_pdu(Command.SUBMIT_SM, dest_addr_ton=1,
                                           destination_addr=b"14155550100",
                                           short_message=b"hi"))
            resp = await peer.read_command(Command.SUBMIT_SM_RESP)
            assert resp.command_status == 0
            assert len(carrier.received) == 1
        finally:
            peer.close()
        # and its HTTP side serves (uvloop's transports are not asyncio's classes).
        metrics_url = text.split("metrics: ")[1].split()[0]
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as page:
            assert page.status == 200
            assert "optout_submit_total" in await page.text()
    finally:
        proc.terminate()
        await proc.wait()
        await carrier.stop()


# --- the build's decision --------------------------------------------------------------


def test_build_compiles_exactly_the_hot_path_modules() -> None:
    sources = optout_build.hot_path_sources()
    assert [s.removesuffix(".py").replace("/", ".") for s in sources] == list(
        speed.HOT_PATH_MODULES)
    for source in sources:
        assert (ROOT / source).is_file(), source


def test_build_stays_pure_when_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(optout_build.PURE_ENV, raising=False)
    assert not optout_build.plan(editable=True).compile  # editable: sources stay live
    monkeypatch.setenv("CC", "/nonexistent/cc")
    decision = optout_build.plan(editable=False)
    assert not decision.compile and "no C compiler" in decision.reason
    monkeypatch.delenv("CC")
    monkeypatch.setenv(optout_build.PURE_ENV, "1")
    assert not optout_build.plan(editable=False).compile
    # Metadata-only runs of setup.py never start mypyc.
    assert not optout_build.building_code(["setup.py", "egg_info"])
    assert not optout_build.building_code(["setup.py", "editable_wheel", "--dist-info-dir", "x"])
    assert optout_build.building_code(["setup.py", "bdist_wheel", "--dist-dir", "x"])


def test_a_failing_compile_leaves_a_working_pure_build(tmp_path: Path) -> None:
    """OptionalBuildExt with an extension that cannot compile: the build
    succeeds, says so, and leaves no half-built module behind."""
    (tmp_path / "broken.c").write_text("this is not C;\n")
    (tmp_path / "setup.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'buildtools')!r})
        import optout_build
        from setuptools import Extension, setup
        setup(name="broken", version="0", py_modules=[],
              ext_modules=[Extension("broken", ["broken.c"])],
              cmdclass={{"build_ext": optout_build.OptionalBuildExt}})
    """))
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "compiling the hot path failed" in result.stderr
    assert "installing the pure-Python modules" in result.stderr
    assert not list(tmp_path.glob("broken*.so"))
