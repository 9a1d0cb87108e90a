"""docs/RELIABILITY.md is written from the results file, never by hand."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.report import main


def test_report_has_one_row_per_scenario_with_the_latest_figure(tmp_path: Path) -> None:
    # Given a results file where one scenario was recorded twice
    results = tmp_path / "results.jsonl"
    base = {"promise": "p | q", "rerun": "python -m pytest x", "scale": 1.0,
            "at": "2026-11-30T10:00:00Z", "python": "3.11.2", "cpus": 2, "data": {}}
    rows = [
        {**base, "scenario": "SIGTERM under load", "figure": "old"},
        {**base, "scenario": "carrier never answers submits", "figure": "768 answered"},
        {**base, "scenario": "SIGTERM under load", "figure": "exit 0 after 4 s"},
    ]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "RELIABILITY.md"
    # When the report is generated
    assert main(["--results", str(results), "--output", str(output)]) == 0
    # Then each scenario has one row, in the order, with its latest figure
    text = output.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in table[1:]] == [
        "| carrier never answers submits", "| SIGTERM under load"]
    assert "exit 0 after 4 s" in text and "old" not in text
    assert "p \\| q" in text  # a pipe in a cell does not break the table
    assert "Not measured in this run:" in text


def test_report_without_results_says_how_to_get_them(tmp_path: Path) -> None:
    assert main(["--results", str(tmp_path / "none.jsonl"),
                 "--output", str(tmp_path / "out.md")]) == 1


def test_later_results_files_win_per_scenario(tmp_path: Path) -> None:
    # Given a CI-size run and a later full-size soak in its own file
    base = {"promise": "p", "rerun": "r", "scale": 1.0, "at": "2026-11-30T10:00:00Z",
            "python": "3.11.2", "cpus": 2, "data": {}}
    ci, full = tmp_path / "ci.jsonl", tmp_path / "full.jsonl"
    ci.write_text(json.dumps({**base, "scenario": "soak", "figure": "100,000 submits"}) + "\n"
                  + json.dumps({**base, "scenario": "SIGTERM under load", "figure": "exit 0"})
                  + "\n")
    full.write_text(json.dumps({**base, "scenario": "soak", "figure": "1,000,000 submits"}) + "\n")
    output = tmp_path / "out.md"
    # When both are merged
    assert main(["--results", str(ci), "--results", str(full), "--output", str(output)]) == 0
    # Then the soak row is the full run's, and the other rows stay
    text = output.read_text()
    assert "1,000,000 submits" in text and "100,000 submits" not in text
    assert "exit 0" in text
