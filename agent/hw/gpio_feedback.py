"""LEDs and buzzer on the Raspberry Pi's GPIO pins, through gpiozero."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from gpiozero import LED, RGBLED, Buzzer, GPIOZeroError, TonalBuzzer
from gpiozero.tones import Tone

from agent.errors import FeedbackError
from agent.player import PatternPlayer
from agent.ports import Condition, Signal
from agent.signals import TONE_RANGE_HZ, Light

log = logging.getLogger(__name__)

Pin = int | str
LedKind = Literal["separate", "rgb"]
BuzzerKind = Literal["active", "passive", "none"]

# Amber on an RGB LED: red with a little green (PWM).
_RGB = {
    Light.GREEN: (0.0, 1.0, 0.0),
    Light.RED: (1.0, 0.0, 0.0),
    Light.AMBER: (1.0, 0.35, 0.0),
    None: (0.0, 0.0, 0.0),
}


class GpioFeedback:
    """Green, red and amber LEDs (or one RGB LED) and a buzzer, driven by a background thread.

    Needs GPIO access (group ``gpio``); on a Raspberry Pi 5 set ``GPIOZERO_PIN_FACTORY=lgpio``.
    ``signal`` and ``set_condition`` only record what to show and wake the thread, so they never
    delay the station. The patterns are in ``agent.signals``; ``agent.player`` decides which one
    shows when.

    Args:
        leds: ``"separate"`` (three LEDs on ``green_pin``, ``red_pin``, ``amber_pin``) or
            ``"rgb"`` (one RGB LED on ``red_pin``, ``green_pin``, ``blue_pin``, PWM).
        buzzer: ``"active"`` (sounds when powered: on/off), ``"passive"`` (``TonalBuzzer``:
            plays each pattern's pitch), or ``"none"``.
        active_high: False for LEDs wired to 3.3 V (common-anode RGB LEDs).
        pin_factory: gpiozero pin factory (``MockFactory()`` in tests); default: gpiozero's.
        clock: monotonic seconds.
        background: run the player thread; tests pass False and call ``step`` themselves.
    """

    def __init__(
        self,
        *,
        leds: LedKind = "separate",
        green_pin: Pin | None = None,
        red_pin: Pin | None = None,
        amber_pin: Pin | None = None,
        blue_pin: Pin | None = None,
        buzzer: BuzzerKind = "active",
        buzzer_pin: Pin | None = None,
        active_high: bool = True,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self._clock = clock
        self._devices: list[Any] = []
        self._leds: dict[Light, LED] = {}
        self._rgb: RGBLED | None = None
        self._buzzer: Buzzer | None = None
        self._tonal: TonalBuzzer | None = None
        try:
            self._build(leds, green_pin, red_pin, amber_pin, blue_pin, active_high, pin_factory)
            if buzzer != "none":
                if buzzer_pin is None:
                    raise FeedbackError(f"a {buzzer} buzzer needs buzzer_pin")
                if buzzer == "active":
                    self._buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory)
                    self._devices.append(self._buzzer)
                else:
                    low, high = TONE_RANGE_HZ
                    mid = Tone.from_frequency((low * high) ** 0.5)
                    self._tonal = TonalBuzzer(
                        buzzer_pin, mid_tone=mid, octaves=2, pin_factory=pin_factory
                    )
                    self._devices.append(self._tonal)
        except (GPIOZeroError, OSError, ValueError) as exc:
            self._close_devices()
            if isinstance(exc, FeedbackError):
                raise
            raise FeedbackError(f"cannot set up LEDs/buzzer: {exc}") from exc
        self._player = PatternPlayer(now=clock())
        self._cond = threading.Condition()
        self._dirty = False
        self._closed = False
        self._shown: tuple[Light | None, int | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
            self._thread.start()

    def _build(
        self,
        leds: LedKind,
        green: Pin | None,
        red: Pin | None,
        amber: Pin | None,
        blue: Pin | None,
        active_high: bool,
        factory: Any,
    ) -> None:
        if leds == "rgb":
            if red is None or green is None or blue is None:
                raise FeedbackError("an RGB LED needs red_pin, green_pin and blue_pin")
            self._rgb = RGBLED(red, green, blue, active_high=active_high, pin_factory=factory)
            self._devices.append(self._rgb)
            return
        if red is None or green is None or amber is None:
            raise FeedbackError("separate LEDs need green_pin, red_pin and amber_pin")
        for light, pin in ((Light.GREEN, green), (Light.RED, red), (Light.AMBER, amber)):
            led = LED(pin, active_high=active_high, pin_factory=factory)
            self._leds[light] = led
            self._devices.append(led)

    # -- the Feedback port -------------------------------------------------------------------

    def signal(self, signal: Signal) -> None:
        with self._cond:
            self._player.signal(signal, self._clock())
            self._wake()

    def set_condition(self, condition: Condition, active: bool) -> None:
        with self._cond:
            if self._player.set_condition(condition, active, self._clock()):
                self._wake()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._show(None, None)
        self._close_devices()

    def __enter__(self) -> GpioFeedback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the player thread -------------------------------------------------------------------

    def step(self, now: float | None = None) -> float:
        """Set the outputs for ``now`` (default: the clock); returns when they next change."""
        with self._cond:
            self._dirty = False
            out = self._player.at(self._clock() if now is None else now)
        self._show(out.light, out.tone_hz)
        return out.until

    def _wake(self) -> None:
        self._dirty = True
        self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
            until = self.step()
            with self._cond:
                self._cond.wait_for(
                    lambda: self._dirty or self._closed, timeout=max(0.0, until - self._clock())
                )

    def _show(self, light: Light | None, tone_hz: int | None) -> None:
        if self._shown == (light, tone_hz):
            return
        if self._rgb is not None:
            self._rgb.color = _RGB[light]
        else:
            # Dark first, so two colours never show together.
            for led_light, led in self._leds.items():
                if led_light is not light:
                    led.off()
            if light is not None:
                self._leds[light].on()
        if self._buzzer is not None:
            if tone_hz is None:
                self._buzzer.off()
            else:
                self._buzzer.on()
        if self._tonal is not None:
            if tone_hz is None:
                self._tonal.stop()
            else:
                self._tonal.play(Tone.from_frequency(tone_hz))
        self._shown = (light, tone_hz)

    def _close_devices(self) -> None:
        for device in self._devices:
            try:
                device.close()
            except GPIOZeroError as exc:
                log.debug("closing %r: %s", device, exc)
        self._devices.clear()
