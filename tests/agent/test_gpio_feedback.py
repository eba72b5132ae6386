"""GpioFeedback on gpiozero's MockFactory, comparing the complete list of every pin's states.

gpiozero's own ``assert_states`` compares with ``zip`` and lets a list of the wrong length pass,
so the lists are compared whole here. The player thread is off (``background=False``): the test
steps through time itself, so nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import parse_config
from agent.errors import FeedbackError
from agent.hw.gpio_feedback import GpioFeedback
from agent.ports import Condition, Signal

GREEN, RED, AMBER, BLUE, BUZZER = 17, 27, 22, 23, 18


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ToneRecordingPin(MockPWMPin):  # type: ignore[misc]
    """A MockPWMPin that also records every frequency set (a TonalBuzzer's pitch)."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.frequencies: list[float | None] = []

    def _set_frequency(self, value: float | None) -> None:
        if value != self._frequency:
            self.frequencies.append(None if value is None else round(value))
        super()._set_frequency(value)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=ToneRecordingPin)
    yield f
    f.reset()


def states(factory: MockFactory, pin: int) -> list[Any]:
    return [s.state for s in factory.pin(pin).states]


def run_until(fb: GpioFeedback, clock: Clock, end: float) -> None:
    """Step the player through every change up to ``end``."""
    while True:
        until = fb.step()
        if until > end:
            return
        clock.t = until


def make(factory: MockFactory, clock: Clock, **kw: Any) -> GpioFeedback:
    args: dict[str, Any] = dict(
        green_pin=GREEN,
        red_pin=RED,
        amber_pin=AMBER,
        buzzer="active",
        buzzer_pin=BUZZER,
        pin_factory=factory,
        clock=clock,
        background=False,
    )
    args.update(kw)
    return GpioFeedback(**args)


def test_saved_on_separate_leds_and_an_active_buzzer(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock)
    fb.signal(Signal.SAVED)
    run_until(fb, clock, 1.2)
    assert states(factory, GREEN) == [False, 1.0, 0.0]
    assert states(factory, BUZZER) == [False, 1.0, 0.0]
    assert states(factory, RED) == [False]
    assert states(factory, AMBER) == [False]
    fb.close()
    fb.close()  # safe twice


def test_a_new_signal_replaces_one_still_playing(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock)
    fb.signal(Signal.REJECTED)  # red, long low buzz (0.7 s)
    run_until(fb, clock, 0.2)
    clock.t = 0.2
    fb.signal(Signal.DUPLICATE)  # red, two long buzzes
    run_until(fb, clock, 3.0)
    # Rejected's buzz is cut at 0.2 s; after a dark break, duplicate's two buzzes.
    assert states(factory, RED) == [False, 1.0, 0.0, 1.0, 0.0]
    assert states(factory, BUZZER) == [False, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert states(factory, GREEN) == [False]
    assert states(factory, AMBER) == [False]


def test_condition_under_a_signal(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock)
    fb.set_condition(Condition.OFFLINE, True)
    run_until(fb, clock, 2.5)  # amber blinks at 0 and 2 s
    clock.t = 2.5
    fb.signal(Signal.POOL_FULL)  # three amber blinks with beeps
    run_until(fb, clock, 2.5 + 0.9 + 0.5 + 0.15)  # the pool-full pattern, a pause, one blink
    assert states(factory, AMBER) == [False] + [1.0, 0.0] * 2 + [1.0, 0.0] * 3 + [1.0, 0.0]
    assert states(factory, BUZZER) == [False] + [1.0, 0.0] * 3
    assert states(factory, GREEN) == [False]
    assert states(factory, RED) == [False]
    fb.set_condition(Condition.OFFLINE, False)
    fb.close()
    assert states(factory, AMBER)[-1] == 0.0


def test_scanner_missing_pattern_is_complete(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock)
    fb.set_condition(Condition.SCANNER_MISSING, True)
    run_until(fb, clock, 2.9)  # one 3 s cycle
    assert states(factory, RED) == [False, 1.0, 0.0, 1.0, 0.0]
    assert states(factory, BUZZER) == [False, 1.0, 0.0]


def test_passive_buzzer_plays_the_pitches(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock, buzzer="passive")
    fb.signal(Signal.POOL_OPENED)  # rising: 1 kHz short, then 2.7 kHz long
    run_until(fb, clock, 1.0)
    pin = factory.pin(BUZZER)
    # gpiozero's PWMOutputDevice starts at 100 Hz and TonalBuzzer silences it at once.
    assert pin.frequencies == [100, None, 1000, None, 2700, None]
    assert states(factory, BUZZER) == [False, 0.5, 0.0, 0.5, 0.0]
    assert states(factory, AMBER) == [False, 1.0, 0.0]
    assert states(factory, GREEN) == [False, 1.0, 0.0]


def test_one_rgb_led(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock, leds="rgb", amber_pin=None, blue_pin=BLUE, buzzer="none")
    fb.signal(Signal.WARNING)  # green, then amber
    run_until(fb, clock, 1.0)
    assert states(factory, GREEN) == [False, 1.0, 0.35, 0.0]
    assert states(factory, RED) == [False, 1.0, 0.0]
    assert states(factory, BLUE) == [False]


def test_confirmed_does_not_cut_a_rejection(factory: MockFactory) -> None:
    clock = Clock()
    fb = make(factory, clock)
    fb.signal(Signal.REJECTED)
    clock.t = 0.1
    fb.signal(Signal.CONFIRMED)
    run_until(fb, clock, 1.3)
    assert states(factory, RED) == [False, 1.0, 0.0]  # the whole second of red
    assert states(factory, GREEN) == [False, 1.0, 0.0, 1.0, 0.0]  # then two green blinks
    assert states(factory, BUZZER) == [False, 1.0, 0.0]


def test_the_thread_plays_patterns_without_the_caller_waiting(factory: MockFactory) -> None:
    fb = make(factory, time.monotonic, background=True)
    try:
        fb.signal(Signal.REJECTED)
        deadline = time.monotonic() + 10
        while factory.pin(RED).state != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert factory.pin(RED).state == 1
        fb.signal(Signal.SAVED)
        while factory.pin(GREEN).state != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert factory.pin(GREEN).state == 1
    finally:
        fb.close()
    assert [factory.pin(p).state for p in (GREEN, RED, AMBER, BUZZER)] == [0, 0, 0, 0]


def test_wiring_errors_are_feedback_errors(factory: MockFactory) -> None:
    with pytest.raises(FeedbackError, match="blue_pin"):
        make(factory, Clock(), leds="rgb")
    with pytest.raises(FeedbackError, match="buzzer_pin"):
        make(factory, Clock(), buzzer_pin=None)
    fb = make(factory, Clock())
    with pytest.raises(FeedbackError, match="cannot set up"):
        make(factory, Clock())  # the same pins again: in use
    fb.close()


def test_build_feedback_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.__main__ import build_feedback

    factory = MockFactory(pin_class=MockPWMPin)
    monkeypatch.setattr(Device, "pin_factory", factory)
    config = parse_config(
        'station_id = "st-1"\n[scanner]\ntype = "stdin"\n'
        '[feedback]\ntype = "gpio"\nbuzzer = "passive"\ngreen_pin = 5\nred_pin = 6\n'
        "amber_pin = 13\nbuzzer_pin = 12\n"
    )
    fb = build_feedback(config)
    try:
        assert isinstance(fb, GpioFeedback)
        fb.signal(Signal.SELF_TEST)
        deadline = time.monotonic() + 10
        while factory.pin(5).state != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert factory.pin(5).state == 1
    finally:
        fb.close()
        factory.reset()
