"""Keyboard-mode (HID) scanner input: raw key events -> scanned text. Pure; never imports evdev.

A keyboard-mode scanner "types" each code as key presses with the host's keymap, so the decoder
needs the US layout the scanner is configured for, must track both shift keys, must emit on every
key-down (never on key state, or "02422288" comes back as "024228"), must ignore autorepeat, and
must refuse a scan during which the kernel dropped events (``SYN_DROPPED``) rather than accept
it truncated.

Events are plain ``(sec, usec, type, code, value)`` tuples or any object with those attributes
(``evdev.InputEvent`` has them). Key codes are the integers of ``linux/input-event-codes.h``; the
tables here are keyed on those integers because ``evdev.ecodes.KEY[code]`` can be a tuple of
aliases.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple, Protocol

from agent.ports import Scan

Terminator = Literal["enter", "tab", "none"]

# linux/input-event-codes.h
EV_SYN = 0
EV_KEY = 1
SYN_REPORT = 0
SYN_DROPPED = 3

KEY_TAB = 15
KEY_ENTER = 28
KEY_LEFTCTRL = 29
KEY_LEFTSHIFT = 42
KEY_RIGHTSHIFT = 54
KEY_LEFTALT = 56
KEY_SPACE = 57
KEY_CAPSLOCK = 58
KEY_NUMLOCK = 69
KEY_KPENTER = 96
KEY_RIGHTCTRL = 97
KEY_RIGHTALT = 100
KEY_LEFTMETA = 125
KEY_RIGHTMETA = 126

_SHIFTS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
_CHORDS = frozenset(
    {KEY_LEFTCTRL, KEY_RIGHTCTRL, KEY_LEFTALT, KEY_RIGHTALT, KEY_LEFTMETA, KEY_RIGHTMETA}
)
_MODIFIERS = _SHIFTS | _CHORDS
# Lock keys change no text here: the station grabs the scanner, so there is no console lock state,
# and scanners that "compensate" for Caps Lock send it as a plain press.
_IGNORED = frozenset({KEY_CAPSLOCK, KEY_NUMLOCK})

US_KEYMAP: dict[int, tuple[str, str]] = {
    # code: (unshifted, shifted), US layout
    2: ("1", "!"),
    3: ("2", "@"),
    4: ("3", "#"),
    5: ("4", "$"),
    6: ("5", "%"),
    7: ("6", "^"),
    8: ("7", "&"),
    9: ("8", "*"),
    10: ("9", "("),
    11: ("0", ")"),
    12: ("-", "_"),
    13: ("=", "+"),
    16: ("q", "Q"),
    17: ("w", "W"),
    18: ("e", "E"),
    19: ("r", "R"),
    20: ("t", "T"),
    21: ("y", "Y"),
    22: ("u", "U"),
    23: ("i", "I"),
    24: ("o", "O"),
    25: ("p", "P"),
    26: ("[", "{"),
    27: ("]", "}"),
    30: ("a", "A"),
    31: ("s", "S"),
    32: ("d", "D"),
    33: ("f", "F"),
    34: ("g", "G"),
    35: ("h", "H"),
    36: ("j", "J"),
    37: ("k", "K"),
    38: ("l", "L"),
    39: (";", ":"),
    40: ("'", '"'),
    41: ("`", "~"),
    43: ("\\", "|"),
    44: ("z", "Z"),
    45: ("x", "X"),
    46: ("c", "C"),
    47: ("v", "V"),
    48: ("b", "B"),
    49: ("n", "N"),
    50: ("m", "M"),
    51: (",", "<"),
    52: (".", ">"),
    53: ("/", "?"),
    57: (" ", " "),
    # Keypad (scanners in "keypad emulation" send these; Num Lock assumed on).
    55: ("*", "*"),
    71: ("7", "7"),
    72: ("8", "8"),
    73: ("9", "9"),
    74: ("-", "-"),
    75: ("4", "4"),
    76: ("5", "5"),
    77: ("6", "6"),
    78: ("+", "+"),
    79: ("1", "1"),
    80: ("2", "2"),
    81: ("3", "3"),
    82: ("0", "0"),
    83: (".", "."),
    98: ("/", "/"),
}

_TERMINATOR_KEYS: dict[str, frozenset[int]] = {
    "enter": frozenset({KEY_ENTER, KEY_KPENTER}),
    "tab": frozenset({KEY_TAB}),
    "none": frozenset(),
}
_KEY_NAMES = {KEY_ENTER: "Enter", KEY_KPENTER: "keypad Enter", KEY_TAB: "Tab"}


class KeyEvent(Protocol):
    """What the decoder reads from an event (``evdev.InputEvent`` fits)."""

    @property
    def sec(self) -> int: ...
    @property
    def usec(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def value(self) -> int: ...


class RawEvent(NamedTuple):
    """One input event as plain data (same fields as ``struct input_event``)."""

    sec: int
    usec: int
    type: int
    code: int
    value: int


class KeyDecoder:
    """Turns one device's key events into ``Scan`` objects (keyboard-mode scanners).

    Args:
        source: the name put in every ``Scan.source`` (e.g. the device path).
        terminator: the key the scanner sends after each code: ``"enter"`` (Enter or keypad
            Enter), ``"tab"``, or ``"none"`` (a silence of ``gap_ms`` ends the scan).
        gap_ms: with ``terminator="none"``, the silence between keys that ends a scan.
        incomplete_ms: with ``"enter"``/``"tab"``, a scan left without its terminator for this
            long is rejected as incomplete (a scanner without the suffix, or a lost key).
        max_length: longest accepted code, in characters; longer ones are rejected.

    A scan is rejected (``Scan.rejected`` holds the reason, ``Scan.text`` what was read) when the
    kernel reported ``SYN_DROPPED`` during it, when it holds a key with no US-keymap character or
    a Ctrl/Alt/Meta chord, when it is too long, or when it stays incomplete. All times come from
    the events' own timestamps; ``flush(now)`` ends a scan when no further event arrives.
    """

    def __init__(
        self,
        *,
        source: str,
        terminator: Terminator = "enter",
        gap_ms: float = 100.0,
        incomplete_ms: float = 1000.0,
        max_length: int = 512,
    ) -> None:
        if terminator not in _TERMINATOR_KEYS:
            raise ValueError(f"terminator must be enter, tab or none, not {terminator!r}")
        self.source = source
        self.terminator: Terminator = terminator
        self._ends = _TERMINATOR_KEYS[terminator]
        self._limit_s = (gap_ms if terminator == "none" else incomplete_ms) / 1000.0
        self._incomplete_ms = incomplete_ms
        self.max_length = max_length
        self._chars: list[str] = []
        self._reason: str | None = None
        self._lost = False
        self._pending = False
        self._last_t = 0.0
        self._held: set[int] = set()
        self._dropping = False
        self.needs_resync = False
        """True after events were lost: the caller should pass the held keys to ``resync``."""

    def feed(self, event: KeyEvent | tuple[int, int, int, int, int]) -> Scan | None:
        """Take one event; returns the scan that this event (or the gap before it) finished."""
        if isinstance(event, tuple):
            sec, usec, etype, code, value = event
        else:
            sec, usec, etype, code, value = (
                event.sec,
                event.usec,
                event.type,
                event.code,
                event.value,
            )
        if etype == EV_SYN:
            if code == SYN_DROPPED:
                # The kernel lost events before this one: whatever scan they belonged to (the
                # one in progress, or the next if it had just begun) cannot be trusted.
                out = self._gap_end(sec + usec / 1e6)
                self._dropping = True
                self._lost = True
                self._pending = True
                self._mark("events lost (SYN_DROPPED): the input buffer overflowed")
                self._last_t = sec + usec / 1e6
                return out
            if code == SYN_REPORT and self._dropping:
                # The kernel's rule: ignore everything up to and including the next SYN_REPORT,
                # then re-read the device state.
                self._dropping = False
                self.needs_resync = True
            return None
        if etype != EV_KEY or self._dropping:
            return None
        t = sec + usec / 1e6
        out = self._gap_end(t)
        self._last_t = t
        if code in _MODIFIERS:
            if value == 1:
                self._held.add(code)
            elif value == 0:
                self._held.discard(code)
            return out
        if value != 1 or code in _IGNORED:
            return out  # key-up, or autorepeat (value 2) from a held key
        if code in self._ends:
            return self._finish() if self._pending else out
        self._pending = True
        if self._held & _CHORDS:
            self._mark(f"key code {code} pressed with Ctrl/Alt/Meta held (not a character)")
            return out
        chars = US_KEYMAP.get(code)
        if chars is None:
            name = _KEY_NAMES.get(code)
            what = f"unexpected {name} (terminator is {self.terminator})" if name else None
            self._mark(what or f"key code {code} has no character in the US keymap")
            return out
        if len(self._chars) >= self.max_length:
            self._mark(f"longer than max_length ({self.max_length} characters)")
            return out
        self._chars.append(chars[1] if self._held & _SHIFTS else chars[0])
        return out

    def flush(self, now: float) -> Scan | None:
        """End the pending scan if nothing arrived for the gap; ``now`` on the events' clock."""
        return self._gap_end(now)

    def deadline(self) -> float | None:
        """When (on the events' clock) ``flush`` would end the pending scan; None if none."""
        return self._last_t + self._limit_s if self._pending else None

    def abort(self, reason: str) -> Scan | None:
        """Reject the scan in progress (e.g. the scanner was unplugged); None if there is none."""
        self._held.clear()
        self._dropping = False
        if not self._pending:
            return None
        self._mark(reason)
        return self._finish()

    def resync(self, held_keys: Iterable[int]) -> None:
        """Set the modifier state from the keys the device reports held (after lost events)."""
        self._held = {code for code in held_keys if code in _MODIFIERS}
        self.needs_resync = False

    def _gap_end(self, now: float) -> Scan | None:
        if not self._pending or now - self._last_t < self._limit_s - 1e-6:  # 1 µs: event resolution
            return None
        if self.terminator != "none":
            key = "Enter" if self.terminator == "enter" else "Tab"
            self._mark(f"incomplete: no {key} within {self._incomplete_ms:g} ms")
        return self._finish()

    def _mark(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason

    def _finish(self) -> Scan:
        scan = Scan(
            text="".join(self._chars),
            source=self.source,
            rejected=self._reason,
            lossy=True,
        )
        if self._lost and (self.needs_resync or self._dropping):
            # Nobody re-read the device state: key releases may have been among the lost events,
            # and a scanner holds no key between codes.
            self._held.clear()
            self.needs_resync = False
        self._chars = []
        self._reason = None
        self._lost = False
        self._pending = False
        return scan


_KEYS_FOR_CHAR: dict[str, tuple[int, bool]] = {}
for _code, (_plain, _shifted) in sorted(US_KEYMAP.items()):
    # The main block first (lower codes), so digits are typed on the top row, not the keypad.
    _KEYS_FOR_CHAR.setdefault(_plain, (_code, False))
    if _shifted != _plain:
        _KEYS_FOR_CHAR.setdefault(_shifted, (_code, True))


def type_text(
    text: str,
    *,
    start_s: float = 1_700_000_000.0,
    key_us: int = 2000,
    terminator: Terminator = "enter",
    shift: int = KEY_LEFTSHIFT,
) -> Iterator[RawEvent]:
    """The events a US-layout keyboard-mode scanner sends for ``text`` (for tests and benchmarks).

    Each key is a press and a release, each followed by ``SYN_REPORT``, ``key_us`` apart; shifted
    characters are wrapped in presses of ``shift``. Raises ``KeyError`` for a character the US
    keymap cannot type (anything outside printable ASCII).
    """
    t_us = round(start_s * 1e6)

    def at(etype: int, code: int, value: int) -> Iterator[RawEvent]:
        nonlocal t_us
        sec, usec = divmod(t_us, 1_000_000)
        yield RawEvent(sec, usec, etype, code, value)
        yield RawEvent(sec, usec, EV_SYN, SYN_REPORT, 0)
        t_us += key_us

    for ch in text:
        code, shifted = _KEYS_FOR_CHAR[ch]
        if shifted:
            yield from at(EV_KEY, shift, 1)
        yield from at(EV_KEY, code, 1)
        yield from at(EV_KEY, code, 0)
        if shifted:
            yield from at(EV_KEY, shift, 0)
    end = {"enter": KEY_ENTER, "tab": KEY_TAB}.get(terminator)
    if end is not None:
        yield from at(EV_KEY, end, 1)
        yield from at(EV_KEY, end, 0)
