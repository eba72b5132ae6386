"""Which light and tone to show at each moment, given the signals and conditions (pure).

Feedback adapters (``agent.hw.gpio_feedback``) own a thread that asks ``PatternPlayer.at(now)``
what to show and until when, sets the outputs, and waits; time is always passed in, so tests step
through a pattern without sleeping.

Rules:
- a one-shot signal plays its pattern once; a new one replaces one still playing (after a short
  dark, silent break, so a beep running into the next is heard as two), except quiet signals
  (``CONFIRMED``), which wait for the pattern playing to finish;
- when no one-shot plays, the active conditions loop underneath, most urgent first, one cycle
  of each in turn; with no condition, the idle "ready" blink loops.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.ports import Condition, Signal
from agent.signals import CONDITIONS, IDLE, QUIET_SIGNALS, SIGNALS, Light, Step

# Times are float seconds; a step that ends within this of ``now`` has ended (rounding of
# start + duration must not make a step last forever).
_EPS = 1e-6
BREAK_S = 0.04
"""Dark and silent gap before a signal that cuts another one short."""
RESUME_S = 0.5
"""Dark gap after a one-shot before the conditions (or the idle blink) show again, so that
"saved" followed by "offline" is not read as green-then-amber "warning"."""


@dataclass(frozen=True, slots=True)
class Output:
    """What the outputs show now, and until when (``until`` on the caller's clock)."""

    light: Light | None
    tone_hz: int | None
    until: float
    signal: Signal | None = None
    """The one-shot signal playing, if any (None while conditions or idle show)."""


def _find(steps: tuple[Step, ...], offset_s: float) -> tuple[Step, float]:
    """The step at ``offset_s`` into ``steps`` and the offset at which it ends."""
    end = 0.0
    for step in steps:
        end += step.ms / 1000.0
        if offset_s < end - _EPS:
            return step, end
    return steps[-1], end


class PatternPlayer:
    """The state of the LEDs and buzzer over time. Not thread-safe: callers hold a lock."""

    def __init__(self, *, now: float = 0.0) -> None:
        self._signal: Signal | None = None
        self._signal_start = 0.0
        self._quiet_pending: Signal | None = None
        self._conditions: set[Condition] = set()
        self._background_start = now

    @property
    def conditions(self) -> frozenset[Condition]:
        return frozenset(self._conditions)

    def signal(self, signal: Signal, now: float) -> None:
        """Start ``signal``'s pattern at ``now`` (quiet signals wait for one playing)."""
        self._settle(now)
        if signal in QUIET_SIGNALS and self._signal is not None:
            self._quiet_pending = signal
            return
        cut_short = self._signal is not None
        self._signal = signal
        self._signal_start = now + BREAK_S if cut_short else now

    def set_condition(self, condition: Condition, active: bool, now: float) -> bool:
        """Show or clear ``condition``; returns whether anything changed."""
        if active == (condition in self._conditions):
            return False
        self._settle(now)
        if active:
            self._conditions.add(condition)
        else:
            self._conditions.discard(condition)
        if self._signal is None:
            self._background_start = now  # show the change at once, from the start of its loop
        return True

    def at(self, now: float) -> Output:
        """What to show at ``now``, and until when."""
        self._settle(now)
        if self._signal is not None:
            if now < self._signal_start - _EPS:
                return Output(None, None, self._signal_start, self._signal)
            steps = SIGNALS[self._signal].steps
            step, end = _find(steps, now - self._signal_start)
            return Output(step.light, step.tone_hz, self._signal_start + end, self._signal)
        if now < self._background_start - _EPS:
            return Output(None, None, self._background_start)
        steps = self._background_steps()
        cycle = sum(s.ms for s in steps) / 1000.0
        elapsed = now - self._background_start
        loops = int((elapsed + _EPS) // cycle) if elapsed > 0 else 0
        base = self._background_start + loops * cycle
        step, end = _find(steps, now - base)
        return Output(step.light, step.tone_hz, base + end)

    def _background_steps(self) -> tuple[Step, ...]:
        active = [CONDITIONS[c] for c in CONDITIONS if c in self._conditions]
        if not active:
            return IDLE.steps
        return tuple(step for pattern in active for step in pattern.steps)

    def _settle(self, now: float) -> None:
        """Finish one-shot patterns that ended by ``now``, starting a waiting quiet one."""
        while self._signal is not None:
            ends = self._signal_start + SIGNALS[self._signal].duration_ms / 1000.0
            if now < ends - _EPS:
                return
            if self._quiet_pending is not None:
                self._signal, self._quiet_pending = self._quiet_pending, None
                self._signal_start = ends
            else:
                self._signal = None
                self._background_start = ends + RESUME_S
