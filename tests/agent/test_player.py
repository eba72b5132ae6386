"""Which pattern shows when: one-shots replacing each other, quiet signals, conditions."""

from __future__ import annotations

from agent.player import BREAK_S, RESUME_S, PatternPlayer
from agent.ports import Condition, Signal
from agent.signals import CONDITIONS, HIGH_HZ, IDLE, LOW_HZ, SIGNALS, Light

G, R, A = Light.GREEN, Light.RED, Light.AMBER
Change = tuple[float, Light | None, int | None]


def timeline(player: PatternPlayer, start: float, end: float) -> list[Change]:
    """Every change of the outputs from ``start`` up to (not including) ``end``."""
    out: list[Change] = []
    t = start
    while t < end:
        o = player.at(t)
        if not out or (out[-1][1], out[-1][2]) != (o.light, o.tone_hz):
            out.append((round(t, 3), o.light, o.tone_hz))
        assert o.until > t
        t = o.until
    return out


def test_saved_then_idle_blink() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.SAVED, 0.0)
    assert timeline(p, 0.0, 12.0) == [
        (0.0, G, HIGH_HZ),
        (0.1, G, None),
        (0.5, None, None),
        (0.5 + RESUME_S + 4.95, G, None),  # idle: a 50 ms green blink every 5 s
        (0.5 + RESUME_S + 5.0, None, None),
        (0.5 + RESUME_S + 9.95, G, None),
        (0.5 + RESUME_S + 10.0, None, None),
    ]


def test_a_new_signal_cuts_the_playing_one_short_after_a_break() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.REJECTED, 0.0)
    assert p.at(0.2).light is R and p.at(0.2).tone_hz == LOW_HZ
    p.signal(Signal.SAVED, 0.2)
    assert timeline(p, 0.2, 0.8) == [
        (0.2, None, None),  # the break: the long buzz and the short beep are heard as two
        (round(0.2 + BREAK_S, 3), G, HIGH_HZ),
        (0.34, G, None),
        (0.74, None, None),
    ]


def test_signals_without_overlap_need_no_break() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.SAVED, 0.0)
    p.signal(Signal.SAVED, 2.0)
    assert p.at(2.0).light is G and p.at(2.0).tone_hz == HIGH_HZ


def test_confirmed_waits_for_the_playing_signal() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.REJECTED, 0.0)
    p.signal(Signal.CONFIRMED, 0.1)
    assert p.at(0.5).signal is Signal.REJECTED
    assert timeline(p, 0.5, 1.3) == [
        (0.5, R, LOW_HZ),
        (0.7, R, None),
        (1.0, G, None),  # confirmed starts when rejected ends: two quick green blinks
        (1.08, None, None),
        (1.16, G, None),
        (1.24, None, None),
    ]
    assert p.at(1.24 + RESUME_S).signal is None


def test_confirmed_plays_at_once_when_nothing_plays() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.CONFIRMED, 1.0)
    assert p.at(1.0).signal is Signal.CONFIRMED


def test_a_loud_signal_replaces_a_waiting_confirmed_but_it_still_plays_after() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.SAVED, 0.0)
    p.signal(Signal.CONFIRMED, 0.1)
    p.signal(Signal.DUPLICATE, 0.2)
    assert p.at(0.3).signal is Signal.DUPLICATE
    end = 0.2 + BREAK_S + SIGNALS[Signal.DUPLICATE].duration_ms / 1000
    assert p.at(end).signal is Signal.CONFIRMED


def test_condition_shows_underneath_and_resumes_after_a_signal() -> None:
    p = PatternPlayer(now=0.0)
    assert p.set_condition(Condition.OFFLINE, True, 0.0)
    assert not p.set_condition(Condition.OFFLINE, True, 0.1)
    assert timeline(p, 0.0, 2.1) == [(0.0, A, None), (0.1, None, None), (2.0, A, None)]
    p.signal(Signal.SAVED, 2.5)
    assert timeline(p, 2.5, 3.0 + RESUME_S + 0.2) == [
        (2.5, G, HIGH_HZ),
        (2.6, G, None),
        (3.0, None, None),  # a pause, so "saved" then "offline" does not read as "warning"
        (3.0 + RESUME_S, A, None),
        (3.0 + RESUME_S + 0.1, None, None),
    ]


def test_several_conditions_take_turns_most_urgent_first() -> None:
    p = PatternPlayer(now=0.0)
    p.set_condition(Condition.OFFLINE, True, 0.0)
    p.set_condition(Condition.SCANNER_MISSING, True, 0.0)
    missing = CONDITIONS[Condition.SCANNER_MISSING].duration_ms / 1000
    offline = CONDITIONS[Condition.OFFLINE].duration_ms / 1000
    changes = timeline(p, 0.0, missing + offline + 0.01)
    assert changes[0] == (0.0, R, 1000)  # scanner missing: red with a chirp
    assert (round(missing, 3), A, None) in changes  # then offline's amber blink
    assert changes[-1] == (round(missing + offline, 3), R, 1000)  # and round again
    p.set_condition(Condition.SCANNER_MISSING, False, 10.0)
    p.set_condition(Condition.OFFLINE, False, 10.0)
    assert timeline(p, 10.0, 15.1) == [(10.0, None, None), (14.95, G, None), (15.0, None, None)]
    assert IDLE.steps[-1].light is G


def test_late_steps_are_skipped_not_replayed() -> None:
    p = PatternPlayer(now=0.0)
    p.signal(Signal.IDENTIFY, 0.0)
    out = p.at(3.6)  # the thread was late: show what belongs to 3.6 s
    assert out.signal is Signal.IDENTIFY and out.light is R
    assert p.at(100.0).signal is None
