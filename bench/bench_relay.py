"""Relay benchmark (SPEC section 5): what the sidecar's parsing hop costs.

Three separate processes -- the sink SMSC (`bench/sink.py`), the sidecar
(`optout-sidecar run --config FILE`) and the load generator
(`bench/loadgen.py`) -- so each has its own event loop and the two cores
are shared the way they would be in production. Runs, in this order:

1. direct:         load generator -> sink, window W, as fast as it goes
2. sidecar:        load generator -> sidecar -> sink (blocking on, nobody
                   unsubscribed: every submit is decided and forwarded)
3. direct@rate,    both at a fixed --rate (default 5,000 msg/s) for the
   sidecar@rate:   added-latency target (p99 via sidecar minus p99 direct)
4. sidecar+unsub:  with --unsubscribed N numbers preloaded into the store
                   at one inbound address whose default rule blocks all
                   types; --blocked-share of the destinations (10%) are
                   unsubscribed, so those submits are answered locally
                   with 0x45 (counted as completed requests)

and prints one table: throughput, ratio to direct, p50/p99 latency, CPU
per message of the sidecar. Targets: ratio >= 0.5 at window 64 (with N =
10 million), added p99 <= 2 ms at 5,000 msg/s.

Usage::

    python bench/bench_relay.py [--window 64] [--seconds 10] [--rate 5000]
                                [--unsubscribed 0] [--profile DIR]

`--profile DIR` samples the sidecar with py-spy during the full-speed
sidecar run (flame graph SVG and a raw collapsed-stack file in DIR).
Every child process is bounded in time and killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    INBOUND_ADDRESS,
    UNSUB_BASE,
    free_port,
    wait_for_port,
)

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SYSTEM_ID = "bench"
PASSWORD = "bench"
APP_ID = "1400000001"
_TICKS = os.sysconf("SC_CLK_TCK")


# --- child processes -------------------------------------------------------------


@dataclass
class Child:
    """A child process we must not leave behind."""

    name: str
    proc: subprocess.Popen[str]
    log_path: Path | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """user + system CPU time so far (Linux /proc), for CPU per message."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def child(name: str, argv: list[str], *, log_path: Path | None = None,
          stdout_pipe: bool = False, env: dict[str, str] | None = None) -> Iterator[Child]:
    """Start `argv`; always terminate it (then kill it) on the way out."""
    log = open(log_path, "w") if log_path is not None and not stdout_pipe else None  # noqa: SIM115
    if stdout_pipe:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    else:
        proc = subprocess.Popen(argv, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                text=True, env=env, start_new_session=True)
    c = Child(name, proc, log_path)
    try:
        yield c
    finally:
        c.stop()
        if log is not None:
            log.close()
        if proc.stdout is not None:
            proc.stdout.close()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or TimeoutError."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("child printed nothing in time")
    return proc.stdout.readline().strip()


def start_sink(stack: ExitStack, budget: float) -> tuple[Child, int]:
    sink = stack.enter_context(child(
        "sink",
        [sys.executable, str(HERE / "sink.py"), "--listen", f"{HOST}:0",
         "--max-seconds", str(budget)],
        stdout_pipe=True,
    ))
    line = read_line(sink.proc, 10)
    if not line.startswith("READY "):
        raise RuntimeError(f"sink did not start: {line!r}")
    return sink, int(line.split()[1])


def write_config(directory: Path, sink_port: int, log_level: str,
                 window: int | None) -> tuple[Path, int]:
    """A sidecar config: listener on a free port, the sink upstream, one
    account for the load generator, the store in `directory`."""
    smpp_port = free_port()
    http_port = free_port()
    db = directory / "bench.db"
    text = f"""\
[smpp]
listen = "{HOST}:{smpp_port}"
{f"window = {window}" if window else "# window: the default"}

[upstream]
address = "{HOST}:{sink_port}"

[http]
listen = "{HOST}:{http_port}"

[[http.tokens]]
name = "bench"
token = "bench-token-not-secret"
role = "admin"

[store]
url = "sqlite:///{db}"

[logging]
level = "{log_level}"

[[accounts]]
system_id = "{SYSTEM_ID}"
app_id = "{APP_ID}"
default_sms_type = "marketing"
"""
    path = directory / "sidecar.toml"
    path.write_text(text)
    return path, smpp_port


@contextmanager
def sidecar(directory: Path, sink_port: int, log_level: str,
            window: int | None,
            env: dict[str, str] | None = None) -> Iterator[tuple[Child, int, float]]:
    """Runs `optout-sidecar run` and yields (child, SMPP port, seconds until
    its SMPP port accepted connections)."""
    config, port = write_config(directory, sink_port, log_level, window)
    started = time.monotonic()
    with child("sidecar", sidecar_argv(config), log_path=directory / "sidecar.log",
               env=env) as proc:
        try:
            wait_for_port(HOST, port, timeout=120, alive=proc.alive)
        except (RuntimeError, TimeoutError):
            print((directory / "sidecar.log").read_text()[-3000:], file=sys.stderr)
            raise
        yield proc, port, time.monotonic() - started


def sidecar_argv(config: Path | None, command: str = "run") -> list[str]:
    tail = [command] if config is None else [command, "--config", str(config)]
    exe = Path(sys.executable).with_name("optout-sidecar")
    if exe.exists():
        return [str(exe), *tail]
    # Not installed (`pip install -e .` makes the console script): same entry point.
    return [sys.executable, "-m", "gateway.cli", *tail]


# --- implementations compared (--modes) --------------------------------------------

#: mode -> (OPTOUT_PURE_PYTHON, OPTOUT_EVENT_LOOP) for the sidecar process.
MODES: dict[str, tuple[str, str]] = {
    "pure": ("1", "asyncio"),
    "pure+uvloop": ("1", "uvloop"),
    "compiled": ("0", "asyncio"),
    "compiled+uvloop": ("0", "uvloop"),
}


@dataclass
class Mode:
    name: str
    env: dict[str, str]
    hot_path: str  # as `optout-sidecar version` reports it
    event_loop: str


def resolve_mode(name: str) -> Mode:
    """The environment for `name`, checked with `optout-sidecar version`
    under that environment: a "compiled" run that would in fact be pure
    Python (nothing compiled installed) is an error, not a mislabelled row."""
    if name not in MODES:
        raise SystemExit(f"--modes: unknown mode {name!r} (known: {', '.join(MODES)})")
    pure, loop = MODES[name]
    env = {**os.environ, "OPTOUT_PURE_PYTHON": pure, "OPTOUT_EVENT_LOOP": loop}
    hot_path, event_loop = describe(name, env)
    if name.startswith("compiled") and not hot_path.startswith("compiled"):
        raise SystemExit(f"mode {name}: the hot path here is {hot_path!r}; build it first "
                         "(`pip install .` with a C compiler, or in a checkout "
                         "`python setup.py build_ext --inplace`)")
    if "STALE" in hot_path:
        raise SystemExit(f"mode {name}: {hot_path}; rebuild before measuring")
    return Mode(name, env, hot_path, event_loop)


def describe(name: str, env: dict[str, str]) -> tuple[str, str]:
    """(hot path, event loop) as `optout-sidecar version` reports them under `env`."""
    done = subprocess.run(sidecar_argv(None, "version"), capture_output=True, text=True,
                          env=env, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"mode {name}: `optout-sidecar version` failed: {done.stderr.strip()}")
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return lines.get("hot path", "?"), lines.get("event loop", "?")


def installed_mode() -> Mode:
    """What a sidecar started without --modes' overrides runs (the rows that
    are not a --modes comparison)."""
    env = dict(os.environ)
    return Mode("installed", env, *describe("installed", env))


# --- preloading the store -----------------------------------------------------------


def preload(directory: Path, count: int) -> float:
    """Creates the inbound address through the service (so the row is
    exactly what the product writes), then inserts `count` unsubscribed
    numbers straight into the table (as `bench/bench_import.py` does; the
    CSV import path is ~20x slower). Returns the seconds taken."""
    from rules.service import OptOutService
    from rules.store import pack

    db = directory / "bench.db"
    started = time.perf_counter()

    async def create() -> None:
        service = await OptOutService.open(f"sqlite:///{db}")
        try:
            await service.create_address(INBOUND_ADDRESS, "bench")
        finally:
            await service.close()

    asyncio.run(create())
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (address_id,) = conn.execute(
            "SELECT id FROM inbound_address WHERE address = ?", (INBOUND_ADDRESS,)).fetchone()
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        chunk = 1_000_000
        for start in range(0, count, chunk):
            conn.executemany(
                "INSERT INTO unsubscribed (packed, address_id, number_key, since, source) "
                "VALUES (?, ?, ?, 1.7e9, 'import')",
                ((pack(UNSUB_BASE + i, address_id), address_id, UNSUB_BASE + i)
                 for i in range(start, min(count, start + chunk))),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


# --- load runs -------------------------------------------------------------------


def system_busy_seconds() -> float:
    """CPU time all processes of the machine have used (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass
class Result:
    label: str
    data: dict[str, Any] = field(default_factory=dict)
    sidecar_cpu: float | None = None
    background: float = 0.0
    """Share of the machine's CPU used by processes other than the benchmark's
    during the run: other work on a shared box makes a run meaningless."""
    note: str = ""
    #: --modes: the direct run this one is compared with, and its mode.
    paired: Result | None = None
    mode: Mode | None = None
    #: --modes with --repeat: every run of this mode (this one is the median).
    spread: list[Result] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return float(self.data.get("throughput", 0.0))

    @property
    def ratio_to_pair(self) -> float:
        assert self.paired is not None
        return self.throughput / self.paired.throughput if self.paired.throughput else 0.0


def run_load(label: str, port: int, args: argparse.Namespace, sink: Child, *,
             rate: float = 0.0, unsubscribed: int = 0, watch: Child | None = None,
             profile: Path | None = None) -> Result:
    argv = [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(port),
        "--window", str(args.window), "--seconds", str(args.seconds),
        "--warmup", str(args.warmup), "--rate", str(rate),
        "--destinations", str(args.destinations),
        "--unsubscribed", str(unsubscribed), "--blocked-share", str(args.blocked_share),
        "--system-id", SYSTEM_ID, "--password", PASSWORD,
    ]
    cpu_before = watch.cpu_seconds() if watch is not None else 0.0
    sink_before = sink.cpu_seconds()
    busy_before = system_busy_seconds()
    started = time.monotonic()
    spy: subprocess.Popen[str] | None = None
    if profile is not None and watch is not None:
        spy = start_py_spy(watch, profile, label, args)
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=args.warmup + args.seconds + 60)
    finally:
        if spy is not None:
            try:
                spy.wait(args.warmup + args.seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
    cpu = watch.cpu_seconds() - cpu_before if watch is not None else None
    wall = time.monotonic() - started
    busy = system_busy_seconds() - busy_before
    if done.returncode != 0:
        raise RuntimeError(f"{label}: load generator failed:\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print(f"{label}: {done.stderr.strip()}", file=sys.stderr)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    ours = (cpu or 0.0) + (sink.cpu_seconds() - sink_before) + float(data["cpu_seconds"])
    if spy is not None:
        ours = busy  # py-spy's own CPU is not ours to blame on anyone else
    background = max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))
    result = Result(label, data, cpu, background)
    # Where the CPUs went, per completed submit: on 2 cores the three
    # processes' sum against 2 x wall decides the throughput as much as the
    # sidecar's own share does.
    done_n = max(1, int(data.get("total_completed") or 0))
    shares = {"loadgen": float(data["cpu_seconds"]), "sink": sink.cpu_seconds() - sink_before}
    if cpu is not None:
        shares["sidecar"] = cpu
    split = ", ".join(f"{k} {v / done_n * 1e6:.1f}" for k, v in shares.items())
    # (Under py-spy `ours` is the whole machine's busy time, py-spy included.)
    busy_share = "" if spy is not None else f"; CPUs busy {ours / wall:.2f} of {os.cpu_count()}"
    print(f"  {label}: {result.throughput:,.0f} msg/s, p50 {result.data['p50_us']:,.0f} us, "
          f"p99 {result.data['p99_us']:,.0f} us, other load {background:.0%}; "
          f"CPU us/submit: {split}{busy_share}", flush=True)
    if background > 0.05:
        print(f"  WARNING: other processes used {background:.0%} of the CPUs during {label}; "
              "its numbers are not comparable", file=sys.stderr, flush=True)
    return result


def start_py_spy(target: Child, directory: Path, label: str,
                 args: argparse.Namespace) -> subprocess.Popen[str]:
    """py-spy over the measured part of the run (it starts with the warm-up,
    so it samples a little of that too). Non-blocking: it does not pause the
    sidecar to read its stacks, so it perturbs the measurement little."""
    directory.mkdir(parents=True, exist_ok=True)
    name = label.replace("@", "-").replace("+", "-")
    duration = int(args.warmup + args.seconds)
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(target.proc.pid), "--duration", str(duration),
         "--rate", "250", "--nonblocking", "--format", "raw",
         "--output", str(directory / f"{name}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


# --- the report --------------------------------------------------------------------


def print_table(results: list[Result], direct: Result, rate_direct: Result | None) -> None:
    header = (f"{'run':<28}{'msg/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'+p99 ms':>9}{'ok':>10}{'blocked':>9}{'errors':>8}{'sidecar CPU us/msg':>20}"
              f"{'other load':>12}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        d = r.data
        base = rate_direct if d.get("rate") and rate_direct is not None else direct
        if r.paired is not None:  # --modes: against its own direct run
            base = r.paired
        ratio = r.throughput / base.throughput if base.throughput and r is not base else None
        added = (d["p99_us"] - base.data["p99_us"]) / 1000 if r is not base else None
        completed = max(1, int(d.get("completed", 0)))
        cpu = (f"{r.sidecar_cpu / d['total_completed'] * 1e6:.1f}"
               if r.sidecar_cpu is not None and d.get("total_completed") else "")
        print(
            f"{r.label:<28}{r.throughput:>10,.0f}"
            f"{(f'{ratio:.2f}' if ratio is not None else '-'):>8}"
            f"{d['p50_us'] / 1000:>9.2f}{d['p99_us'] / 1000:>9.2f}"
            f"{(f'{added:+.2f}' if added is not None else '-'):>9}"
            f"{d['ok']:>10,}{d['blocked']:>9,}{d['errors']:>8,}{cpu:>20}"
            f"{r.background:>12.0%}"
        )
        if d.get("errors"):
            print(f"{'':<22}error statuses: {d['error_statuses']} (of {completed:,})")
        if r.note:
            print(f"{'':<22}{r.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="msg/s of the latency runs (0: skip them)")
    parser.add_argument("--unsubscribed", type=int, default=0,
                        help="numbers to preload for the blocking run (0: skip it)")
    parser.add_argument("--blocked-share", type=float, default=0.1,
                        help="share of destinations that are unsubscribed (blocking run)")
    parser.add_argument("--destinations", type=int, default=10_000,
                        help="distinct destination numbers the load generator cycles through")
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory for py-spy profiles of the sidecar runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each kind (direct and sidecar alternate); the median counts")
    parser.add_argument("--log-level", default="INFO",
                        help="the sidecar's [logging] level (INFO, the default, logs every "
                             "blocked submit)")
    parser.add_argument("--sidecar-window", type=int, default=None,
                        help="the sidecar's [smpp] window per leg (default: its own default)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the store, configs and logs in this directory")
    parser.add_argument("--modes", default="",
                        help="comma-separated sidecar implementations to compare, each "
                             f"paired with its own direct run: {', '.join(MODES)} "
                             "(default: whatever `optout-sidecar version` says runs)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the results as a Markdown table to this file")
    parser.add_argument("--readme", type=Path, default=None,
                        help="replace the table between the bench_relay markers in this "
                             "file (README.md) with the Markdown table")
    args = parser.parse_args()
    modes = [resolve_mode(m.strip()) for m in args.modes.split(",") if m.strip()]

    run_seconds = args.warmup + args.seconds + 15
    budget = 8 * args.repeat * run_seconds + 600 + args.unsubscribed / 100_000
    results: list[Result] = []
    rate_direct: Result | None = None
    direct: Result | None = None
    print(f"relay benchmark: window {args.window}, {args.seconds:g} s per run "
          f"(+{args.warmup:g} s warm-up), {os.cpu_count()} CPUs", flush=True)
    with ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-relay-")))
        sink, sink_port = start_sink(stack, budget)

        def median(label: str, port: int, watch: Child | None, *, rate: float = 0.0,
                   unsubscribed: int = 0, profile: Path | None = None) -> Result:
            """`--repeat` runs; the one with the median throughput (rate
            runs: the median p99) stands for them all."""
            runs = [run_load(label, port, args, sink, rate=rate, unsubscribed=unsubscribed,
                             watch=watch, profile=profile if i == 0 else None)
                    for i in range(args.repeat)]
            return pick(runs, "p99" if rate else "throughput")

        plain = work / "plain"
        plain.mkdir(exist_ok=True)
        if modes:
            # Each implementation against its own direct run, alternating.
            direct, mode_results = compare_modes(modes, plain, sink, sink_port, args)
            results += [direct, *mode_results]
        if args.rate or not modes:
            with sidecar(plain, sink_port, args.log_level,
                         args.sidecar_window) as (proc, port, ready):
                print(f"  sidecar (empty store) accepting after {ready:.2f} s", flush=True)
                if not modes:
                    # Alternate direct and via-sidecar runs so that drift on
                    # the box (other work, CPU frequency) hits both alike.
                    directs: list[Result] = []
                    vias: list[Result] = []
                    for i in range(args.repeat):
                        directs.append(run_load("direct", sink_port, args, sink))
                        vias.append(run_load("sidecar", port, args, sink, watch=proc,
                                             profile=args.profile if i == 0 else None))
                    direct = pick(directs, "throughput")
                    results += [direct, pick(vias, "throughput")]
                if args.rate:
                    rate_directs: list[Result] = []
                    rate_vias: list[Result] = []
                    for _ in range(args.repeat):
                        rate_directs.append(run_load("direct@rate", sink_port, args, sink,
                                                     rate=args.rate))
                        rate_vias.append(run_load("sidecar@rate", port, args, sink,
                                                  rate=args.rate, watch=proc))
                    rate_direct = pick(rate_directs, "p99")
                    results += [rate_direct, pick(rate_vias, "p99")]

        if args.unsubscribed:
            loaded = work / "unsub"
            loaded.mkdir(exist_ok=True)
            took = preload(loaded, args.unsubscribed)
            print(f"  preloaded {args.unsubscribed:,} unsubscribed numbers in {took:.1f} s",
                  flush=True)
            with sidecar(loaded, sink_port, args.log_level,
                         args.sidecar_window) as (proc, port, ready):
                rss = rss_mib(proc)
                print(f"  sidecar ({args.unsubscribed:,} unsubscribed) accepting after "
                      f"{ready:.2f} s, RSS {rss:,.0f} MiB", flush=True)
                r = median("sidecar+unsub", port, proc, unsubscribed=args.unsubscribed,
                           profile=args.profile)
                r.note = (f"{args.unsubscribed:,} unsubscribed, {args.blocked_share:.0%} of "
                          f"destinations blocked; preload {took:.1f} s; startup {ready:.2f} s; "
                          f"RSS {rss:,.0f} MiB. " + r.note)
                results.append(r)
                if args.rate:
                    results.append(median("sidecar+unsub@rate", port, proc, rate=args.rate,
                                          unsubscribed=args.unsubscribed))

    assert direct is not None
    print_table(results, direct, rate_direct)
    if args.markdown is not None or args.readme is not None:
        table = markdown_table(results, direct, rate_direct, installed_mode())
        if args.markdown is not None:
            args.markdown.write_text(table)
        if args.readme is not None:
            replace_marked(args.readme, table)
    print()
    print("ratio: throughput / direct throughput of this invocation (rate runs: / direct@rate); "
          "+p99: p99 minus the matching direct run's p99; "
          "sidecar CPU: sidecar process CPU time per completed submit; other load: CPU share "
          "used by processes outside the benchmark (should be ~0%).")
    return 0


def compare_modes(modes: list[Mode], work: Path, sink: Child, sink_port: int,
                  args: argparse.Namespace) -> tuple[Result, list[Result]]:
    """For each repetition, each mode: a direct run, then that mode's
    sidecar run; every sidecar run's ratio is to the direct run just before
    it (`Result.paired`), so load that comes and goes on a shared box hits a
    pair alike. Returns the median direct run and, per mode, the run with
    the median ratio."""
    directs: list[Result] = []
    runs: dict[str, list[Result]] = {m.name: [] for m in modes}
    # (`Result.spread` of each chosen run lists all its mode's runs.)
    for mode in modes:
        print(f"  mode {mode.name}: hot path {mode.hot_path}; event loop {mode.event_loop}",
              flush=True)
    for i in range(args.repeat):
        for mode in modes:
            folder = work / f"{mode.name.replace('+', '-')}-{i}"
            folder.mkdir(exist_ok=True)
            with sidecar(folder, sink_port, args.log_level, args.sidecar_window,
                         env=mode.env) as (proc, port, _ready):
                base = run_load("direct", sink_port, args, sink)
                via = run_load(f"sidecar ({mode.name})", port, args, sink, watch=proc,
                               profile=args.profile if i == 0 else None)
            via.paired = base
            via.mode = mode
            directs.append(base)
            runs[mode.name].append(via)
    chosen = []
    for mode in modes:
        ordered = sorted(runs[mode.name], key=lambda r: r.ratio_to_pair)
        pick_ = ordered[(len(ordered) - 1) // 2]
        pick_.spread = list(runs[mode.name])
        if len(ordered) > 1:
            pick_.note = (f"median of {len(ordered)} ratios: "
                          + ", ".join(f"{r.ratio_to_pair:.2f}" for r in runs[mode.name]))
        chosen.append(pick_)
    return pick(directs, "throughput"), chosen


def markdown_table(results: list[Result], direct: Result, rate_direct: Result | None,
                   installed: Mode) -> str:
    """The results as the README shows them (written by --markdown/--readme,
    never typed by hand)."""
    lines = [
        f"`python bench/bench_relay.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; load generator, sidecar and sink are three processes.",
        "",
        "| run | hot path | event loop | msg/s | ratio to direct | p99 | "
        "sidecar CPU per submit | other load | every run: ratio (rate runs: p99), CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d = r.data
        if r.paired is not None:
            ratio: float | None = r.ratio_to_pair
        else:
            base = rate_direct if d.get("rate") and rate_direct is not None else direct
            ratio = r.throughput / base.throughput if base.throughput and r is not base else None
        cpu = (f"{r.sidecar_cpu / d['total_completed'] * 1e6:.1f} µs"
               if r.sidecar_cpu is not None and d.get("total_completed") else "-")
        mode = r.mode if r.mode is not None else (installed if r.sidecar_cpu is not None
                                                  else None)
        hot = mode.hot_path.split(" (")[0] if mode is not None else "-"
        loop = mode.event_loop.split(" (")[0] if mode is not None else "-"
        every = ("; ".join(_run_summary(x, rate_direct if d.get("rate") else direct)
                           for x in r.spread)
                 if r.sidecar_cpu is not None else "")
        label = r.label + (f" @ {d['rate']:,.0f}/s" if d.get("rate") and "@" not in r.label
                           else "")
        lines.append(
            f"| {label} | {hot} | {loop} | {r.throughput:,.0f} | "
            f"{f'**{ratio:.2f}**' if ratio is not None else '-'} | "
            f"{d['p99_us'] / 1000:.2f} ms | {cpu} | {r.background:.0%} | "
            f"{every or '-'} |")
    lines += ["", "Ratio: sidecar throughput / the direct run just before it (same load "
              "generator and sink). Other load: CPU share used by processes outside the "
              "benchmark during the run (the machine is shared; above ~5% the row is noisy)."]
    return "\n".join(lines) + "\n"


def _run_summary(r: Result, base: Result | None) -> str:
    """One run of a row: its ratio (a rate run: its p99) and sidecar CPU."""
    cpu = (f", {r.sidecar_cpu / r.data['total_completed'] * 1e6:.1f} µs"
           if r.sidecar_cpu is not None and r.data.get("total_completed") else "")
    if r.data.get("rate"):
        return f"p99 {r.data['p99_us'] / 1000:.2f} ms{cpu}"
    if r.paired is not None:
        return f"{r.ratio_to_pair:.2f}{cpu}"
    ratio = r.throughput / base.throughput if base is not None and base.throughput else 0.0
    return f"{ratio:.2f}{cpu}"


START_MARK = "<!-- bench_relay:start -->"
END_MARK = "<!-- bench_relay:end -->"


def replace_marked(path: Path, table: str) -> None:
    """Put `table` between the bench_relay markers of `path`."""
    text = path.read_text()
    if START_MARK not in text or END_MARK not in text:
        raise SystemExit(f"{path}: no {START_MARK} ... {END_MARK} block to replace")
    head, rest = text.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    path.write_text(f"{head}{START_MARK}\n{table}{END_MARK}{tail}")


def pick(runs: list[Result], by: str) -> Result:
    """The run with the median throughput (by="throughput") or p99 (by="p99");
    its note lists all of them."""
    ordered = sorted(runs, key=(lambda r: r.throughput) if by == "throughput"
                     else (lambda r: float(r.data["p99_us"])))
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.spread = list(runs)
    if len(runs) > 1:
        chosen.note = (f"median of {len(runs)}: " + ", ".join(
            f"{r.throughput:,.0f}/s p99 {r.data['p99_us'] / 1000:.2f} ms" for r in runs))
    return chosen


def rss_mib(proc: Child) -> float:
    try:
        for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
