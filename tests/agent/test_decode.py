"""Keyboard-mode decoding from synthetic evdev.InputEvent streams."""

from __future__ import annotations

from collections.abc import Iterable

from evdev import InputEvent, ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decode import (
    EV_KEY,
    EV_SYN,
    SYN_DROPPED,
    SYN_REPORT,
    KeyDecoder,
    RawEvent,
    type_text,
)
from agent.ports import Scan

T0 = 1_700_000_000.0


def events(text: str, **kw: object) -> list[InputEvent]:
    """Real evdev.InputEvent objects for ``text`` typed by a US-layout scanner."""
    return [InputEvent(*ev) for ev in type_text(text, **kw)]  # type: ignore[arg-type]


def decode(evs: Iterable[object], decoder: KeyDecoder | None = None) -> list[Scan]:
    decoder = decoder or KeyDecoder(source="kbd")
    out = [decoder.feed(ev) for ev in evs]  # type: ignore[arg-type]
    return [s for s in out if s is not None]


def key(t: float, code: int, value: int) -> list[InputEvent]:
    sec, usec = divmod(round(t * 1e6), 1_000_000)
    return [InputEvent(sec, usec, EV_KEY, code, value), InputEvent(sec, usec, EV_SYN, 0, 0)]


def test_plain_codes_with_shift_and_punctuation() -> None:
    scans = decode(events("KG-RG-000123") + events("abc/ABC?", start_s=T0 + 5))
    assert [s.text for s in scans] == ["KG-RG-000123", "abc/ABC?"]
    assert all(s.rejected is None and s.lossy and s.source == "kbd" for s in scans)


def test_right_shift_works_like_left_shift() -> None:
    scans = decode(events("Hello|World", shift=ecodes.KEY_RIGHTSHIFT))
    assert [s.text for s in scans] == ["Hello|World"]


def test_both_shifts_are_tracked_separately() -> None:
    # Left down, right down, left up: right still held, so the next letter is upper case.
    evs = (
        key(T0, ecodes.KEY_LEFTSHIFT, 1)
        + key(T0 + 0.001, ecodes.KEY_RIGHTSHIFT, 1)
        + key(T0 + 0.002, ecodes.KEY_LEFTSHIFT, 0)
        + key(T0 + 0.003, ecodes.KEY_A, 1)
        + key(T0 + 0.004, ecodes.KEY_A, 0)
        + key(T0 + 0.005, ecodes.KEY_RIGHTSHIFT, 0)
        + key(T0 + 0.006, ecodes.KEY_B, 1)
        + key(T0 + 0.007, ecodes.KEY_B, 0)
        + key(T0 + 0.008, ecodes.KEY_ENTER, 1)
    )
    assert [s.text for s in decode(evs)] == ["Ab"]


def test_repeated_characters_keep_every_digit() -> None:
    scans = decode(events("02422288") + events("1111111", start_s=T0 + 2))
    assert [s.text for s in scans] == ["02422288", "1111111"]


def test_key_down_twice_without_release_counts_twice() -> None:
    # Decoders that key on state lose repeats; every key-down is a character.
    evs = (
        key(T0, ecodes.KEY_2, 1)
        + key(T0 + 0.001, ecodes.KEY_2, 1)
        + key(T0 + 0.002, ecodes.KEY_2, 0)
        + key(T0 + 0.003, ecodes.KEY_ENTER, 1)
    )
    assert [s.text for s in decode(evs)] == ["22"]


def test_autorepeat_is_ignored() -> None:
    evs = (
        key(T0, ecodes.KEY_7, 1)
        + key(T0 + 0.25, ecodes.KEY_7, 2)
        + key(T0 + 0.28, ecodes.KEY_7, 2)
        + key(T0 + 0.29, ecodes.KEY_7, 0)
        + key(T0 + 0.30, ecodes.KEY_ENTER, 1)
    )
    assert [s.text for s in decode(evs)] == ["7"]


def test_syn_dropped_mid_scan_rejects_the_whole_scan_and_never_a_truncated_one() -> None:
    full = events("KG-RG-000124")
    lost = [*full[:20], InputEvent(full[40].sec, full[40].usec, EV_SYN, SYN_DROPPED, 0)]
    lost += full[40:]
    scans = decode(lost + events("KG-RG-000125", start_s=T0 + 3))
    assert len(scans) == 2
    assert scans[0].rejected is not None and "SYN_DROPPED" in scans[0].rejected
    assert scans[0].text != "KG-RG-000124"
    assert scans[1].text == "KG-RG-000125" and scans[1].rejected is None


def test_events_up_to_the_next_syn_report_after_a_drop_are_ignored() -> None:
    evs = [
        *key(T0, ecodes.KEY_A, 1),
        InputEvent(int(T0), 1000, EV_SYN, SYN_DROPPED, 0),
        InputEvent(int(T0), 2000, EV_KEY, ecodes.KEY_B, 1),  # stale: before the SYN_REPORT
        InputEvent(int(T0), 2000, EV_SYN, SYN_REPORT, 0),
        *key(T0 + 0.003, ecodes.KEY_C, 1),
        *key(T0 + 0.004, ecodes.KEY_ENTER, 1),
    ]
    decoder = KeyDecoder(source="kbd")
    scans = decode(evs, decoder)
    assert [(s.text, s.rejected is not None) for s in scans] == [("ac", True)]


def test_drop_between_scans_rejects_the_scan_that_follows() -> None:
    # Lost events may have been the start of the next code: its tail must not pass as a code.
    tail = events("000126", start_s=T0 + 0.01)
    evs = [InputEvent(int(T0), 0, EV_SYN, SYN_DROPPED, 0), InputEvent(int(T0), 0, EV_SYN, 0, 0)]
    scans = decode(evs + tail)
    assert len(scans) == 1 and scans[0].rejected is not None and scans[0].text == "000126"


def test_modifiers_are_resynced_after_a_drop() -> None:
    decoder = KeyDecoder(source="kbd")
    evs = [
        *key(T0, ecodes.KEY_LEFTSHIFT, 1),
        InputEvent(int(T0), 500, EV_SYN, SYN_DROPPED, 0),
        InputEvent(int(T0), 600, EV_SYN, SYN_REPORT, 0),
    ]
    decode(evs, decoder)
    assert decoder.needs_resync
    decoder.resync([])  # the device reports no key held: the shift release was lost
    assert not decoder.needs_resync
    scans = decode(events("ab", start_s=T0 + 2), decoder)
    # The drop itself is reported (it may have swallowed a whole code), then "ab" in lower case.
    assert [(s.text, s.rejected is not None) for s in scans] == [("", True), ("ab", False)]


def test_unmapped_key_rejects_the_scan_with_a_reason() -> None:
    evs = events("KG-RG")[:8] + key(T0 + 0.5, ecodes.KEY_102ND, 1) + events("12", start_s=T0 + 0.6)
    scans = decode(evs)
    assert len(scans) == 1
    assert scans[0].rejected == "key code 86 has no character in the US keymap"


def test_ctrl_chord_is_rejected() -> None:
    evs = (
        key(T0, ecodes.KEY_LEFTCTRL, 1)
        + key(T0 + 0.001, ecodes.KEY_RIGHTBRACE, 1)
        + key(T0 + 0.002, ecodes.KEY_LEFTCTRL, 0)
        + key(T0 + 0.003, ecodes.KEY_1, 1)
        + key(T0 + 0.004, ecodes.KEY_ENTER, 1)
    )
    (scan,) = decode(evs)
    assert scan.rejected is not None and "Ctrl" in scan.rejected


def test_keypad_digits_and_keypad_enter() -> None:
    evs = [
        *key(T0, ecodes.KEY_KP1, 1),
        *key(T0 + 0.001, ecodes.KEY_KP0, 1),
        *key(T0 + 0.002, ecodes.KEY_KPDOT, 1),
        *key(T0 + 0.003, ecodes.KEY_KPENTER, 1),
    ]
    assert [s.text for s in decode(evs)] == ["10."]


def test_max_length() -> None:
    decoder = KeyDecoder(source="kbd", max_length=5)
    scans = decode(events("123456") + events("12345", start_s=T0 + 1), decoder)
    assert scans[0].rejected == "longer than max_length (5 characters)"
    assert scans[0].text == "12345"
    assert scans[1].text == "12345" and scans[1].rejected is None


def test_tab_terminator_and_unexpected_enter() -> None:
    decoder = KeyDecoder(source="kbd", terminator="tab")
    scans = decode(events("AB12", terminator="tab") + events("X", start_s=T0 + 1), decoder)
    assert [(s.text, s.rejected) for s in scans] == [("AB12", None)]
    deadline = decoder.deadline()
    assert deadline is not None
    last = decoder.flush(deadline)
    assert last is not None and last.rejected == "unexpected Enter (terminator is tab)"


def test_no_terminator_a_gap_in_the_events_ends_the_scan() -> None:
    decoder = KeyDecoder(source="kbd", terminator="none", gap_ms=80)
    evs = events("ABC", terminator="none") + events("DEF", start_s=T0 + 1, terminator="none")
    scans = decode(evs, decoder)
    assert [s.text for s in scans] == ["ABC"]  # ended by the gap before D
    deadline = decoder.deadline()
    assert deadline is not None
    assert decoder.flush(deadline - 0.01) is None
    last = decoder.flush(deadline)
    assert last is not None and last.text == "DEF" and last.rejected is None
    assert decoder.deadline() is None


def test_enter_terminator_missing_makes_the_scan_incomplete() -> None:
    decoder = KeyDecoder(source="kbd", incomplete_ms=500)
    scans = decode(events("KG-1", terminator="none") + events("KG-2", start_s=T0 + 2), decoder)
    assert scans[0].text == "KG-1" and scans[0].rejected == "incomplete: no Enter within 500 ms"
    assert scans[1].text == "KG-2" and scans[1].rejected is None


def test_abort_rejects_a_scan_in_progress() -> None:
    decoder = KeyDecoder(source="kbd")
    decode(events("KG-R", terminator="none"), decoder)
    scan = decoder.abort("scanner disconnected mid-scan")
    assert scan is not None and scan.text == "KG-R" and scan.rejected is not None
    assert decoder.abort("again") is None


def test_plain_tuples_work_too() -> None:
    tuples = [tuple(ev) for ev in type_text("Ab1")]
    assert [s.text for s in decode(tuples)] == ["Ab1"]
    assert isinstance(next(iter(type_text("x"))), RawEvent)


def test_two_devices_interleaved_keep_their_own_state() -> None:
    a, b = KeyDecoder(source="a"), KeyDecoder(source="b")
    ea = events("TUBE-0001", key_us=3000)
    eb = events("person-42", key_us=2000, shift=ecodes.KEY_RIGHTSHIFT)
    merged = sorted(
        [(ev.timestamp(), 0, ev) for ev in ea] + [(ev.timestamp(), 1, ev) for ev in eb],
        key=lambda x: (x[0], x[1]),
    )
    scans = [(a if which == 0 else b).feed(ev) for _, which, ev in merged]
    got = {(s.source, s.text) for s in scans if s is not None}
    assert got == {("a", "TUBE-0001"), ("b", "person-42")}


PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@settings(max_examples=300, deadline=None)
@given(text=PRINTABLE, shift=st.sampled_from([ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT]))
def test_any_printable_ascii_decodes_back_exactly(text: str, shift: int) -> None:
    scans = decode(events(text, shift=shift))
    assert [(s.text, s.rejected) for s in scans] == [(text, None)]


# The US layout written out by hand from the key caps, independent of agent.decode.US_KEYMAP
# (the round-trip tests above type with the decoder's own table, so they cannot catch a wrong
# entry in it).
US_KEY_CAPS = {
    **{f"KEY_{c}": (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{f"KEY_{d}": (d, s) for d, s in zip("1234567890", "!@#$%^&*()", strict=True)},
    "KEY_MINUS": ("-", "_"),
    "KEY_EQUAL": ("=", "+"),
    "KEY_LEFTBRACE": ("[", "{"),
    "KEY_RIGHTBRACE": ("]", "}"),
    "KEY_BACKSLASH": ("\\", "|"),
    "KEY_SEMICOLON": (";", ":"),
    "KEY_APOSTROPHE": ("'", '"'),
    "KEY_GRAVE": ("`", "~"),
    "KEY_COMMA": (",", "<"),
    "KEY_DOT": (".", ">"),
    "KEY_SLASH": ("/", "?"),
    "KEY_SPACE": (" ", " "),
}


def test_every_key_cap_of_the_us_layout_decodes_to_its_characters() -> None:
    for name, (plain, shifted) in US_KEY_CAPS.items():
        code = ecodes.ecodes[name]
        t = T0
        evs = []
        for shift in (False, True):
            if shift:
                evs += key(t, ecodes.KEY_LEFTSHIFT, 1)
            evs += key(t + 0.001, code, 1) + key(t + 0.002, code, 0)
            if shift:
                evs += key(t + 0.003, ecodes.KEY_LEFTSHIFT, 0)
            t += 0.004
        evs += key(t, ecodes.KEY_ENTER, 1) + key(t + 0.001, ecodes.KEY_ENTER, 0)
        (scan,) = decode(evs)
        assert (scan.text, scan.rejected) == (plain + shifted, None), name
