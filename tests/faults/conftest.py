"""Prints the figure of every fault scenario that ran, at the end of the run."""

from __future__ import annotations

from typing import Any

from tests.faults.harness import RECORDED, RESULTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECORDED:
        return
    terminalreporter.section("fault suite figures")
    for entry in RECORDED:
        terminalreporter.write_line(f"{entry['scenario']}: {entry['figure']}")
    terminalreporter.write_line(f"(appended to {RESULTS}; "
                                "`python -m tests.faults.report` writes docs/RELIABILITY.md)")
