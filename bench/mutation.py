"""Mutation testing with mutmut, one module at a time: `python bench/mutation.py`.

Why one module at a time: each module gets only the tests that exercise it
(mutmut then narrows further, per mutated function, to the tests that call
it), so a mutant costs a second, not the whole suite; and a run can be cut
off after any module without losing the others' results.

For each module the script makes a scratch copy of the project under
`.mutation/<module>/` (gitignored), writes that copy's `[tool.mutmut]`
(the module to mutate, its tests), runs `mutmut run` there and reads
mutmut's own result files (`mutants/<path>.meta`). The results are kept in
`docs/mutation-results.json` (so a run of some modules keeps the others'
rows) and rendered to `docs/MUTATION.md`, with the date and the command.

A survivor that cannot be killed because it changes nothing a caller can
observe is "equivalent": its one-line reason lives in the reviewed file
`bench/mutation_equivalent.toml`, keyed by mutant name, and the report
merges it. Every other survivor is listed as a hole to close with a test.

    python bench/mutation.py                          # every module (long)
    python bench/mutation.py --modules rules/decision.py gateway/http/auth.py
    python bench/mutation.py --modules rules/decision.py --sample 15
    python bench/mutation.py --report-only            # re-render docs/MUTATION.md

`--sample N` runs N mutants per module, chosen with a fixed seed, and the
report says the row is a sample. `--time-limit S` stops a module after S
seconds; the report then says it did not finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
RESULTS = ROOT / "docs" / "mutation-results.json"
REPORT = ROOT / "docs" / "MUTATION.md"
EQUIVALENT = ROOT / "bench" / "mutation_equivalent.toml"
SOURCES = ("gateway", "rules", "metrics")

#: mutmut's exit-code classification (mutmut/stats.py, status_by_exit_code).
_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
           34: "skipped", 35: "suspicious", 36: "timeout", 37: "caught by type check",
           -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
           -11: "segfault", -9: "segfault", 2: "interrupted", None: "not checked"}


@dataclass(frozen=True)
class Target:
    """A module to mutate and the tests that exercise it (and nothing slow:
    no subprocesses, no browser, no timing assertions)."""

    path: str
    tests: tuple[str, ...]
    #: Extra pytest arguments for this module's runs (e.g. a `-k` filter).
    pytest_args: tuple[str, ...] = ()


#: In the order to run them: smallest and most important first.
TARGETS: tuple[Target, ...] = (
    Target("rules/decision.py", ("tests/test_decision.py", "tests/test_service.py")),
    Target("gateway/http/auth.py", ("tests/test_http_auth.py", "tests/test_http_api.py",
                                    "tests/test_http_viewer.py", "tests/test_http_hardening.py")),
    Target("rules/numbers.py", ("tests/test_numbers.py",)),
    Target("rules/keywords.py", ("tests/test_keywords.py",)),
    Target("rules/mo.py", ("tests/test_mo.py",)),
    Target("gateway/smpp/framing.py", ("tests/test_smpp_framing.py", "tests/test_smpp_codec.py",
                                       "tests/test_relay.py")),
    Target("gateway/smpp/session.py", ("tests/test_smpp_session.py", "tests/test_relay.py")),
    Target("gateway/smpp/pdu.py", ("tests/test_smpp_codec.py", "tests/test_smpp_pdu_spec.py")),
    Target("gateway/enforcement.py", ("tests/test_enforcer.py", "tests/test_hot_path.py",
                                      "tests/test_enforcement_e2e.py",
                                      "tests/test_enforcement_hardening.py")),
    Target("rules/store/sqlite.py", ("tests/test_store.py", "tests/test_service.py",
                                   "tests/test_store_queries.py",
                                   "tests/test_compliance_store.py", "tests/test_outbox.py",
                                   "tests/test_http_compliance.py"),
           # The PostgreSQL cases run the other backend's code, and their
           # throwaway cluster's start and teardown outlast pytest's timeout
           # on a loaded machine.
           ("-k", "not postgresql")),
    Target("rules/store/base.py", ("tests/test_store.py", "tests/test_service.py",
                                   "tests/test_store_queries.py",
                                   "tests/test_compliance_store.py", "tests/test_outbox.py",
                                   "tests/test_http_compliance.py"),
           # The PostgreSQL cases run the other backend's code, and their
           # throwaway cluster's start and teardown outlast pytest's timeout
           # on a loaded machine.
           ("-k", "not postgresql")),
)
BY_PATH = {t.path: t for t in TARGETS}


def module_name(path: str) -> str:
    """`rules/decision.py` -> `rules.decision`, the prefix of its mutant names."""
    return path.removesuffix(".py").replace("/", ".")


def _scratch(target: Target, work_root: Path) -> Path:
    """A fresh copy of the project with `[tool.mutmut]` set for `target`."""
    work = work_root / module_name(target.path)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    # Compiled modules (`setup.py build_ext --inplace`) would be imported in
    # place of the mutated .py files: every mutant would survive.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "*.so")
    for name in (*SOURCES, "tests"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", pyproject)
    settings = {
        "source_paths": list(SOURCES),
        "only_mutate": [target.path],
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly", "-q",
                                *target.pytest_args],
        "pytest_add_cli_args_test_selection": list(target.tests),
        "use_git_change_detection": False,
        "use_setproctitle": False,
        # Fork isolation (mutmut's default): fast, but a table built at import
        # (session.py's transitions) or a functools cache filled before the
        # fork is not mutated; such survivors are listed, not excused. Tests
        # can undo it: tests/test_smpp_session.py rebuilds the tables and
        # tests/test_numbers.py empties the caches before each test.
        # "forkserver" with warmup "none" fixes that at ~10x the time and
        # turns slow imports into false timeouts.
    }
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (work / "pyproject.toml").write_text(pyproject.rstrip() + "\n\n" + "\n".join(lines) + "\n")
    return work


_GENERATE = """
import mutmut.__main__ as m
from pathlib import Path
m.set_mutant_under_test("mutant_generation")
Path("mutants").mkdir(exist_ok=True)
m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths()
m.create_mutants(1)
"""


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The scratch copy, not the worktree or the editable install, is imported
    # (mutmut then puts mutants/ first on sys.path).
    env["PYTHONPATH"] = str(work)
    env.pop("MUTANT_UNDER_TEST", None)
    return env


def _meta(work: Path, target: Target) -> dict[str, int | None]:
    path = work / "mutants" / (target.path + ".meta")
    if not path.exists():
        return {}
    codes: dict[str, int | None] = json.loads(path.read_text())["exit_code_by_key"]
    return codes


def _diff_line(work: Path, name: str) -> str:
    """The mutated line of a mutant, for the report (first '+' line of its diff)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                         env=_env(work), capture_output=True, text=True, timeout=120).stdout
    for line in out.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def run_target(target: Target, sample: int | None, time_limit: float | None,
               children: int, work_root: Path = WORK) -> dict[str, Any]:
    """Run mutmut on one module; its results as stored in the results file."""
    work = _scratch(target, work_root)
    env = _env(work)
    subprocess.run([sys.executable, "-c", _GENERATE], cwd=work, env=env, check=True,
                   capture_output=True, text=True)
    names = sorted(_meta(work, target))
    chosen = names
    if sample is not None and sample < len(names):
        chosen = sorted(random.Random(12).sample(names, sample))
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    if chosen != names:
        cmd += chosen
    started = dt.datetime.now(dt.UTC)
    finished = True
    log = work / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            finished = False
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    codes = _meta(work, target)
    statuses = {name: _STATUS.get(codes.get(name), "suspicious") for name in chosen}
    error = None
    if finished and proc.returncode != 0 and all(s == "not checked" for s in statuses.values()):
        # mutmut stops before mutating when the clean tests fail; say which.
        tail = log.read_text(errors="replace").splitlines()
        failed = [line for line in tail if line.startswith(("FAILED ", "ERROR "))]
        error = (failed[0] if failed else (tail[-1] if tail else "no output"))[:300]
        error = error.replace("|", "/")
        print(f"  mutmut could not run {target.path}: {error} (see {log})", flush=True)
    survivors = {n: _diff_line(work, n) for n, s in statuses.items() if s == "survived"}
    return {
        "module": target.path,
        "tests": list(target.tests),
        "generated": len(names),
        "run": len(chosen),
        "sample": sample is not None and len(chosen) < len(names),
        "finished": finished,
        "seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds()),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "statuses": statuses,
        "survivors": survivors,
        "error": error,
    }


def load_equivalent() -> dict[str, str]:
    """Mutant name -> the reviewed reason it is equivalent (cannot be killed)."""
    if not EQUIVALENT.exists():
        return {}
    data = tomllib.loads(EQUIVALENT.read_text())
    return {str(k): str(v) for k, v in data.get("equivalent", {}).items()}


def summarise(row: dict[str, Any], equivalent: dict[str, str]) -> dict[str, Any]:
    """Counts of one module's row, survivors split into equivalent and open."""
    statuses: dict[str, str] = row["statuses"]
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survived = [n for n, s in statuses.items() if s == "survived"]
    equiv = [n for n in survived if n in equivalent]
    checked = sum(c for s, c in counts.items() if s != "not checked")
    detected = counts.get("killed", 0) + counts.get("timeout", 0) \
        + counts.get("caught by type check", 0)
    scored = checked - len(equiv)
    return {
        "counts": counts,
        "survived": survived,
        "equivalent": equiv,
        "open": [n for n in survived if n not in equivalent],
        "checked": checked,
        "score": 100.0 * detected / scored if scored else 100.0,
    }


def render(results: dict[str, Any], equivalent: dict[str, str]) -> str:
    """docs/MUTATION.md from the stored results."""
    out = [
        "# Mutation testing",
        "",
        "Generated by `bench/mutation.py` from mutmut's own result files; do not edit by",
        "hand. Each module is mutated on its own, against the tests listed for it in",
        "`bench/mutation.py` (TARGETS); mutmut runs, per mutant, only the tests that",
        "reach the mutated function.",
        "",
        "*killed %* = (killed + timeout) / (mutants run - equivalent). A survivor is",
        "*equivalent* when it changes nothing a caller can observe; its reason is",
        "reviewed in `bench/mutation_equivalent.toml`. Goal: >= 90 % per module,",
        "100 % for `rules/decision.py` and `gateway/http/auth.py`.",
        "",
        "| module | mutants | run | killed | timeout | survived | equivalent | other |"
        " killed % | run on | seconds | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    rows = [results[t.path] for t in TARGETS if t.path in results]
    for row in rows:
        s = summarise(row, equivalent)
        c = s["counts"]
        other = s["checked"] - c.get("killed", 0) - c.get("timeout", 0) - c.get("survived", 0)
        notes = []
        if row["sample"]:
            notes.append(f"sample of {row['run']}")
        if row.get("error"):
            notes.append(f"NOT RUN: the clean test run failed: {row['error']}")
        if not row["finished"]:
            notes.append(f"NOT FINISHED: stopped after {row['seconds']} s, "
                         f"{c.get('not checked', 0)} not checked")
        out.append(
            f"| `{row['module']}` | {row['generated']} | {row['run']} | {c.get('killed', 0)} | "
            f"{c.get('timeout', 0)} | {c.get('survived', 0)} | {len(s['equivalent'])} | "
            f"{other} | {s['score']:.1f} | {row['date']} | {row['seconds']} | "
            f"{'; '.join(notes)} |")
    missing = [t.path for t in TARGETS if t.path not in results]
    if missing:
        out += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    out += ["", "## Survivors", ""]
    any_survivor = False
    for row in rows:
        s = summarise(row, equivalent)
        if not s["survived"]:
            continue
        any_survivor = True
        out += [f"### `{row['module']}`", ""]
        for name in s["survived"]:
            line = row["survivors"].get(name, "")
            if name in equivalent:
                out.append(f"* `{name}` (equivalent): {equivalent[name]}")
            else:
                out.append(f"* `{name}` (OPEN: needs a test): `{line}`")
        out.append("")
    if not any_survivor:
        out.append("None.")
    other_rows = [(row, n, st) for row in rows for n, st in row["statuses"].items()
                  if st not in ("killed", "survived", "timeout", "not checked")]
    if other_rows:
        out += ["", "## Other outcomes", ""]
        out += [f"* `{n}`: {st}" for _, n, st in other_rows]
    commands = sorted({row.get("command", "") for row in rows} - {""})
    out += ["", "## How these figures were made", ""]
    out += [f"* `{c}`" for c in commands]
    out += ["", "Show one mutant's diff: `cd .mutation/<module> && python -m mutmut show NAME`."]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", choices=[t.path for t in TARGETS],
                        help="modules to mutate (default: all, in TARGETS order)")
    parser.add_argument("--sample", type=int, help="run only N mutants per module")
    parser.add_argument("--time-limit", type=float, help="seconds per module before stopping")
    parser.add_argument("--children", type=int, default=2, help="mutmut worker processes")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="results file to update (tests use a scratch one)")
    parser.add_argument("--report", type=Path, default=REPORT, help="report to write")
    parser.add_argument("--workdir", type=Path, default=WORK,
                        help="where the scratch copies go (default .mutation/)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.results.exists():
        results = json.loads(args.results.read_text())
    command = "python bench/mutation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        for path in args.modules or [t.path for t in TARGETS]:
            print(f"mutating {path} ...", flush=True)
            row = run_target(BY_PATH[path], args.sample, args.time_limit, args.children,
                             args.workdir)
            row["command"] = command.strip()
            results[path] = row
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            s = summarise(row, load_equivalent())
            print(f"  {row['run']} run: {s['counts']} -> {s['score']:.1f} % killed; "
                  f"open survivors: {len(s['open'])}", flush=True)
            for name in s["open"]:
                print(f"    {name}: {row['survivors'].get(name, '')}")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render(results, load_equivalent()))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
