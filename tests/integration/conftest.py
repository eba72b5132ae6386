"""Prints the fault-injection suite's tally at the end of the run (``make chaos``)."""

from __future__ import annotations

import pytest

from tests.integration.chaos_report import RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    header = (
        f"{'scenario':<34} {'size':<6} {'saved':>7} {'stored':>7} {'duplicated':>10} "
        f"{'lost':>5} {'refused':>8} {'resent':>7} {'unsignalled':>11}"
    )
    terminalreporter.section("fault injection: every SAVED scan in the database exactly once")
    terminalreporter.write_line(header)
    terminalreporter.write_line("-" * len(header))
    for r in RESULTS:
        terminalreporter.write_line(
            f"{r.scenario:<34} {r.size:<6} {r.saved:>7} {r.stored:>7} {r.duplicated:>10} "
            f"{r.lost:>5} {r.refused:>8} {r.resent:>7} {r.unsignalled:>11}"
        )
    terminalreporter.write_line(
        "duplicated: saved scans stored more than once (must be 0); lost: saved scans not "
        "stored (must be 0); refused: scans refused with a signal (nothing stored); resent: "
        "copies the server received again and discarded (counted, never stored); unsignalled: "
        "stored although the station died before it could signal SAVED."
    )
