"""The mutation-testing command works from a clean checkout, and a fixed
sample of mutants of the decision rule is killed by the suite.

The full run (`python bench/mutation.py`, every module) takes far too long
for CI; this runs 12 mutants of rules/decision.py through the same script,
so a broken setup or a new blind spot in the decision tests shows up here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mutmut") is None,
    reason="mutmut is not installed (pip install -e '.[test]')",
)


def test_a_fixed_sample_of_decision_mutants_is_all_killed(tmp_path: Path) -> None:
    # given the script, pointed at scratch results so docs/ stays as it is
    results, report = tmp_path / "results.json", tmp_path / "MUTATION.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # when it mutates a fixed sample of rules/decision.py
    done = subprocess.run(
        [sys.executable, "bench/mutation.py", "--modules", "rules/decision.py",
         "--sample", "12", "--results", str(results), "--report", str(report),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # then every sampled mutant was run and killed, and the report says so
    row = json.loads(results.read_text())["rules/decision.py"]
    assert row["run"] == 12 and row["sample"] and row["finished"]
    assert set(row["statuses"].values()) == {"killed"}, row["statuses"]
    text = report.read_text()
    assert "| `rules/decision.py` |" in text and "sample of 12" in text
