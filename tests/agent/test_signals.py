"""Every signal has a distinct, learnable pattern, and the staff documentation shows each one."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from agent.ports import Condition, Signal
from agent.signals import CONDITIONS, IDLE, QUIET_SIGNALS, SIGNALS, TONE_RANGE_HZ, Pattern
from tests.browser import chromium

DOCS = Path(__file__).resolve().parents[2] / "docs"


def rhythm(pattern: Pattern) -> tuple[tuple[bool, int], ...]:
    """What an active buzzer makes of a pattern: runs of sound and silence, in ms."""
    runs: list[tuple[bool, int]] = []
    for step in pattern.steps:
        on = step.tone_hz is not None
        if runs and runs[-1][0] == on:
            runs[-1] = (on, runs[-1][1] + step.ms)
        else:
            runs.append((on, step.ms))
    while runs and not runs[-1][0]:
        runs.pop()
    return tuple(runs)


def test_every_signal_and_condition_has_a_pattern() -> None:
    assert set(SIGNALS) == set(Signal)
    assert set(CONDITIONS) == set(Condition)


def test_patterns_are_well_formed() -> None:
    low, high = TONE_RANGE_HZ
    for pattern in [*SIGNALS.values(), *CONDITIONS.values(), IDLE]:
        assert pattern.steps and all(step.ms > 0 for step in pattern.steps)
        assert all(low <= s.tone_hz <= high for s in pattern.steps if s.tone_hz is not None)
        assert pattern.looks_en and pattern.looks_vi
    assert all(p.duration_ms <= 10_000 for p in SIGNALS.values())
    assert all(p.duration_ms <= 1_000 for s, p in SIGNALS.items() if s in {Signal.SAVED})


def test_every_sounding_signal_has_its_own_rhythm_on_an_active_buzzer() -> None:
    sounding = {s: rhythm(p) for s, p in SIGNALS.items() if rhythm(p)}
    assert set(SIGNALS) - set(sounding) == QUIET_SIGNALS  # only "confirmed" is silent
    by_rhythm: dict[tuple[tuple[bool, int], ...], Signal] = {}
    for signal, r in sounding.items():
        assert r not in by_rhythm, f"{signal} sounds like {by_rhythm[r]}"
        by_rhythm[r] = signal


def test_all_patterns_differ() -> None:
    patterns = [p.steps for p in [*SIGNALS.values(), *CONDITIONS.values(), IDLE]]
    assert len(set(patterns)) == len(patterns)
    descriptions = [p.looks_en for p in [*SIGNALS.values(), *CONDITIONS.values(), IDLE]]
    assert len(set(descriptions)) == len(descriptions)


ALL = [*SIGNALS.items(), *CONDITIONS.items(), ("idle", IDLE)]


def _name(key: object) -> str:
    return key.value if isinstance(key, Signal | Condition) else str(key)


@pytest.mark.parametrize(("key", "pattern"), ALL, ids=[_name(k) for k, _ in ALL])
def test_signals_doc_has_a_row_per_signal(key: object, pattern: Pattern) -> None:
    doc = (DOCS / "signals.md").read_text()
    row = re.search(rf"^\| `{_name(key)}` \| ([^|]+) \|", doc, flags=re.M)
    assert row is not None, f"docs/signals.md has no row for {_name(key)}"
    assert row[1].strip() == pattern.looks_en


@pytest.mark.parametrize(("key", "pattern"), ALL, ids=[_name(k) for k, _ in ALL])
def test_staff_card_shows_every_signal_in_vietnamese_and_english(
    key: object, pattern: Pattern
) -> None:
    card = html.unescape((DOCS / "signals-card.html").read_text())
    row = re.search(rf'<tr data-signal="{_name(key)}">(.*?)</tr>', card, flags=re.S)
    assert row is not None, f"signals-card.html has no row for {_name(key)}"
    assert f'<span class="looks">{pattern.looks_vi}</span>' in row[1]
    assert f"({pattern.looks_en})" in row[1]


@pytest.mark.browser
def test_staff_card_prints_on_one_a4_page() -> None:
    from playwright.sync_api import sync_playwright

    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=flags)
        try:
            page = browser.new_page()
            page.goto((DOCS / "signals-card.html").resolve().as_uri())
            pdf = page.pdf(prefer_css_page_size=True)
        finally:
            browser.close()
    assert re.findall(rb"/Count (\d+)", pdf) == [b"1"]
