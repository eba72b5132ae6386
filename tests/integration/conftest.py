"""Prints the fault-injection suite's tally at the end of the run (``make chaos``); ends the
processes a test left running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.chaos_report import RESULTS
from tests.integration.harness import kill_leftovers


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Servers and agents a test started and did not stop (it failed half-way) end with it,
    with every process they started: nothing keeps running into the next test."""
    yield
    kill_leftovers()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    header = (
        f"{'scenario':<46} {'size':<6} {'saved':>7} {'stored':>7} {'duplicated':>10} "
        f"{'lost':>5} {'refused':>8} {'resent':>7} {'sent again':>10} {'unsignalled':>11}"
    )
    terminalreporter.section("fault injection: every SAVED scan in the database exactly once")
    terminalreporter.write_line(header)
    terminalreporter.write_line("-" * len(header))
    for r in RESULTS:
        terminalreporter.write_line(
            f"{r.scenario:<46} {r.size:<6} {r.saved:>7} {r.stored:>7} {r.duplicated:>10} "
            f"{r.lost:>5} {r.refused:>8} {r.resent:>7} {r.sent_again:>10} {r.unsignalled:>11}"
        )
    terminalreporter.write_line(
        "duplicated: saved scans stored more than once (must be 0); lost: saved scans not "
        "stored (must be 0); refused: scans refused with a signal (nothing stored); resent: "
        "copies the server received again and discarded (counted, never stored); sent again: "
        "records the stations sent again on the same connection because the server seemed to "
        "have lost them; unsignalled: "
        "stored although the station died before it could signal SAVED."
    )
