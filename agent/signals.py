"""What staff see and hear: the LED and buzzer pattern of every signal and condition (pure data).

Staff in gloves and protective gear look at the person, not at the station, so the patterns are
built to be told apart by ear first: every one-shot signal has its own rhythm on a plain (active)
buzzer, and a passive buzzer adds pitch (high = good, low = refused, rising = opened, falling =
closed). Colours follow one rule: green = saved, red = not saved / act now, amber = look.
``docs/signals.md`` and the printable staff card describe the same patterns; a test keeps them in
step with this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.ports import Condition, Signal


class Light(enum.Enum):
    GREEN = "green"
    RED = "red"
    AMBER = "amber"


LOW_HZ = 440
MID_HZ = 1000
HIGH_HZ = 2000
TOP_HZ = 2700
TONE_RANGE_HZ = (250, 4000)
"""Every tone lies in this range (a ``TonalBuzzer`` centred on 1 kHz, two octaves each way)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a pattern: a light (or dark) and a tone (or silence) for ``ms`` milliseconds.

    An active buzzer sounds whenever ``tone_hz`` is set; a passive one plays that frequency.
    """

    ms: int
    light: Light | None = None
    tone_hz: int | None = None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A sequence of steps, and how staff would describe it (English, Vietnamese)."""

    steps: tuple[Step, ...]
    looks_en: str
    looks_vi: str

    @property
    def duration_ms(self) -> int:
        return sum(step.ms for step in self.steps)


def _p(looks_en: str, looks_vi: str, *steps: Step) -> Pattern:
    return Pattern(steps=steps, looks_en=looks_en, looks_vi=looks_vi)


G, R, A = Light.GREEN, Light.RED, Light.AMBER

SIGNALS: dict[Signal, Pattern] = {
    Signal.SAVED: _p(
        "green, one short high beep",
        "đèn xanh, một tiếng bíp ngắn, cao",
        Step(100, G, HIGH_HZ),
        Step(400, G),
    ),
    Signal.CONFIRMED: _p(
        "two quick green blinks, silent",
        "đèn xanh nháy nhanh hai lần, không có tiếng",
        Step(80, G),
        Step(80),
        Step(80, G),
    ),
    Signal.REJECTED: _p(
        "red, one long low buzz",
        "đèn đỏ, một tiếng bíp dài, trầm",
        Step(700, R, LOW_HZ),
        Step(300, R),
    ),
    Signal.DUPLICATE: _p(
        "red, two long low buzzes",
        "đèn đỏ, hai tiếng bíp dài, trầm",
        Step(300, R, LOW_HZ),
        Step(150, R),
        Step(300, R, LOW_HZ),
        Step(250, R),
    ),
    Signal.WARNING: _p(
        "green then amber, two short beeps",
        "đèn xanh rồi vàng, hai tiếng bíp ngắn",
        Step(100, G, HIGH_HZ),
        Step(100, A),
        Step(100, A, MID_HZ),
        Step(500, A),
    ),
    Signal.POOL_OPENED: _p(
        "amber then green, short then long beep, rising",
        "đèn vàng rồi xanh, bíp ngắn rồi dài, cao dần",
        Step(100, A, MID_HZ),
        Step(80, A),
        Step(300, G, TOP_HZ),
        Step(300, G),
    ),
    Signal.POOL_CLOSED: _p(
        "green then amber, long then short beep, falling",
        "đèn xanh rồi vàng, bíp dài rồi ngắn, thấp dần",
        Step(300, G, TOP_HZ),
        Step(80, G),
        Step(100, A, MID_HZ),
        Step(300, A),
    ),
    Signal.POOL_FULL: _p(
        "amber blinks three times, three short beeps",
        "đèn vàng nháy ba lần, ba tiếng bíp ngắn",
        Step(100, A, MID_HZ),
        Step(100),
        Step(100, A, MID_HZ),
        Step(100),
        Step(100, A, MID_HZ),
        Step(400, A),
    ),
    Signal.RETEST_POOL_FULL: _p(
        "green then amber, two short beeps, then three short beeps",
        "đèn xanh rồi vàng, hai tiếng bíp ngắn, rồi ba tiếng bíp ngắn",
        Step(100, G, HIGH_HZ),
        Step(100, A),
        Step(100, A, MID_HZ),
        Step(400, A),
        Step(100, A, MID_HZ),
        Step(100),
        Step(100, A, MID_HZ),
        Step(100),
        Step(100, A, MID_HZ),
        Step(400, A),
    ),
    Signal.UNDONE: _p(
        "amber, one medium beep falling",
        "đèn vàng, một tiếng bíp vừa, thấp dần",
        Step(250, A, MID_HZ),
        Step(250, A, LOW_HZ),
        Step(300, A),
    ),
    Signal.CARD_ACCEPTED: _p(
        "green, two very short beeps then a long high one",
        "đèn xanh, hai tiếng bíp rất ngắn rồi một tiếng dài, cao",
        Step(60, G, HIGH_HZ),
        Step(80, G),
        Step(60, G, HIGH_HZ),
        Step(80, G),
        Step(250, G, TOP_HZ),
        Step(200, G),
    ),
    Signal.NO_OPEN_TUBE: _p(
        "red and amber in turn, two short and one long low beep",
        "đèn đỏ và vàng luân phiên, hai bíp ngắn và một bíp dài, trầm",
        Step(100, R, LOW_HZ),
        Step(100, A),
        Step(100, R, LOW_HZ),
        Step(100, A),
        Step(500, R, LOW_HZ),
        Step(200, A),
    ),
    Signal.IDENTIFY: _p(
        "green, amber, red in turn for 10 seconds, a chirp every second",
        "đèn xanh, vàng, đỏ lần lượt trong 10 giây, mỗi giây một tiếng bíp",
        *((Step(50, G, TOP_HZ), Step(200, G), Step(250, A), Step(250, R), Step(250)) * 10),
    ),
    Signal.SELF_TEST: _p(
        "green, amber, red one after another, then three rising tones",
        "lần lượt đèn xanh, vàng, đỏ, rồi ba tiếng từ thấp lên cao",
        Step(400, G),
        Step(400, A),
        Step(400, R),
        Step(200),
        Step(200, None, LOW_HZ),
        Step(100),
        Step(200, None, MID_HZ),
        Step(100),
        Step(200, None, HIGH_HZ),
    ),
    Signal.STORAGE_FULL: _p(
        "red flashing fast, six short low beeps",
        "đèn đỏ nháy nhanh, sáu tiếng bíp ngắn, trầm",
        *((Step(100, R, LOW_HZ), Step(100)) * 6),
        Step(600, R),
    ),
}
"""The pattern of every one-shot signal."""

QUIET_SIGNALS = frozenset({Signal.CONFIRMED})
"""Signals that never cut another one short: they wait for the pattern playing to finish.

Server confirmations arrive at any time, often while the next scan's signal plays; replacing a
"rejected" with two green blinks would hide the one that matters.
"""

CONDITIONS: dict[Condition, Pattern] = {
    Condition.SCANNER_MISSING: _p(
        "red double blink every 3 seconds, with a soft chirp",
        "đèn đỏ nháy đôi mỗi 3 giây, kèm tiếng bíp nhỏ",
        Step(100, R, MID_HZ),
        Step(300),
        Step(100, R),
        Step(2500),
    ),
    Condition.AWAITING_SERVER: _p(
        "red and amber alternating, slowly, silent",
        "đèn đỏ và đèn vàng sáng luân phiên, chậm, không có tiếng",
        Step(500, R),
        Step(500, A),
    ),
    Condition.OUTBOX_NEARLY_FULL: _p(
        "amber triple blink every 2 seconds, silent",
        "đèn vàng nháy ba lần mỗi 2 giây, không có tiếng",
        Step(100, A),
        Step(150),
        Step(100, A),
        Step(150),
        Step(100, A),
        Step(1400),
    ),
    Condition.OFFLINE: _p(
        "amber single blink every 2 seconds, silent",
        "đèn vàng nháy một lần mỗi 2 giây, không có tiếng",
        Step(100, A),
        Step(1900),
    ),
}
"""The looping pattern of every lasting condition, in priority order (most urgent first)."""

IDLE = _p(
    "a brief green blink every 5 seconds",
    "đèn xanh chớp rất nhanh mỗi 5 giây",
    Step(4950),
    Step(50, G),
)
"""Shown when no signal plays and no condition holds: the station is on and ready."""
