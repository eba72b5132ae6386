"""EvdevScanSource with fake device nodes that deliver real evdev.InputEvent objects.

There is no /dev/uinput on CI machines, so devices come from ``FakeInputBus``: their file
descriptors are pipes (select() works as on a real node) and unplugging makes read() fail with
ENODEV, as the kernel does.
"""

from __future__ import annotations

import errno
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from evdev import InputEvent, ecodes

from agent.config import EvdevScannerConfig
from agent.decode import EV_SYN, SYN_DROPPED, SYN_REPORT, type_text
from agent.fakes import FakeInputBus
from agent.hw.evdev_source import EvdevScanSource, find_input_devices
from agent.ports import Scan, ScannerState, SourceEvent

KBD_A = "/dev/input/by-id/usb-Honeywell_1900_A-event-kbd"
KBD_B = "/dev/input/by-id/usb-Zebra_DS2208_B-event-kbd"


def events(text: str, start_s: float | None = None, **kw: object) -> list[InputEvent]:
    start = time.time() if start_s is None else start_s
    return [InputEvent(*ev) for ev in type_text(text, start_s=start, **kw)]  # type: ignore[arg-type]


class Running:
    """A source running on its thread, its events collected in a queue."""

    def __init__(self, source: EvdevScanSource) -> None:
        self.events: queue.Queue[SourceEvent] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(self.events.put, self.stop))
        self.thread.start()

    def next(self, timeout: float = 10.0) -> SourceEvent:
        return self.events.get(timeout=timeout)

    def next_scan(self) -> Scan:
        event = self.next()
        assert isinstance(event, Scan), event
        return event

    def next_state(self) -> ScannerState:
        event = self.next()
        assert isinstance(event, ScannerState), event
        return event

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def bus() -> FakeInputBus:
    return FakeInputBus()


@pytest.fixture
def run(bus: FakeInputBus) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.close()
    for device in bus.opened:
        device.close()


def start(run: list[Running], bus: FakeInputBus, devices: list[str], **kw: object) -> Running:
    source = EvdevScanSource(
        devices,
        open_device=bus.open,
        find_devices=bus.find,
        poll_s=0.05,
        **kw,  # type: ignore[arg-type]
    )
    r = Running(source)
    run.append(r)
    return r


def test_reads_scans_from_a_grabbed_device(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, ["/dev/input/by-id/*-event-kbd"])
    state = r.next_state()
    assert state.present and KBD_A in state.detail
    assert device.grabbed
    device.push(events("KG-RG-000123") + events("02422288"))
    assert r.next_scan() == Scan(text="KG-RG-000123", source=KBD_A, lossy=True)
    assert r.next_scan().text == "02422288"


def test_missing_at_start_then_plugged_in(bus: FakeInputBus, run: list[Running]) -> None:
    r = start(run, bus, [KBD_A])
    state = r.next_state()
    assert not state.present and "not connected" in state.detail
    device = bus.plug(KBD_A)
    assert r.next_state().present
    device.push(events("TUBE-1"))
    assert r.next_scan().text == "TUBE-1"


def test_unplug_mid_scan_then_replug(bus: FakeInputBus, run: list[Running]) -> None:
    first = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A])
    assert r.next_state().present
    first.push(events("KG-RG-0001", terminator="none"))  # the Enter never comes
    assert first.wait_read()  # the source has the keys before the cable is pulled
    bus.unplug(KBD_A)
    cut = r.next_scan()
    assert cut.text == "KG-RG-0001"
    assert cut.rejected is not None and "disconnected" in cut.rejected
    missing = r.next_state()
    assert not missing.present
    assert first.closed
    second = bus.plug(KBD_A)
    assert r.next_state().present
    assert second.grabbed
    second.push(events("KG-RG-0002"))
    assert r.next_scan().text == "KG-RG-0002"


def test_two_scanners_typing_at_once(bus: FakeInputBus, run: list[Running]) -> None:
    a, b = bus.plug(KBD_A), bus.plug(KBD_B)
    r = start(run, bus, [KBD_A, KBD_B])
    assert r.next_state().present
    now = time.time()
    ea = events("TUBE-000777", start_s=now, key_us=3000)
    eb = events("Person-42", start_s=now, key_us=2000, shift=ecodes.KEY_RIGHTSHIFT)
    # Interleave the two streams as they would arrive.
    for i in range(max(len(ea), len(eb))):
        if i < len(ea):
            a.push([ea[i]])
        if i < len(eb):
            b.push([eb[i]])
    got = {(s.source, s.text, s.rejected) for s in (r.next_scan(), r.next_scan())}
    assert got == {(KBD_A, "TUBE-000777", None), (KBD_B, "Person-42", None)}


def test_one_of_two_configured_scanners_missing(bus: FakeInputBus, run: list[Running]) -> None:
    bus.plug(KBD_A)
    r = start(run, bus, [KBD_A, KBD_B])
    state = r.next_state()
    assert not state.present and KBD_B in state.detail and KBD_A not in state.detail
    bus.plug(KBD_B)
    assert r.next_state().present


def test_a_vanished_node_without_enodev_is_noticed(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A])
    assert r.next_state().present
    with bus._lock:  # the node disappears, but read() was never woken up
        del bus.devices[KBD_A]
    assert not r.next_state().present
    assert device.closed


def test_grab_refused_counts_as_missing(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    device.grab_error = OSError(errno.EBUSY, "Device or resource busy")
    r = start(run, bus, [KBD_A])
    state = r.next_state()
    assert not state.present and "taken by another program" in state.detail
    device.grab_error = None
    assert r.next_state().present


def test_no_grab_when_disabled(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A], grab=False)
    assert r.next_state().present
    assert not device.grabbed


def test_syn_dropped_rejects_and_resyncs_shift_from_the_device(
    bus: FakeInputBus, run: list[Running]
) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A])
    assert r.next_state().present
    now = time.time()
    shift_down = events("X", start_s=now)[:2]  # a shift press whose release gets lost
    sec, usec = shift_down[0].sec, shift_down[0].usec + 1000
    device.held = []  # what the kernel reports held after the overflow
    device.push(
        [
            *shift_down,
            InputEvent(sec, usec, EV_SYN, SYN_DROPPED, 0),
            InputEvent(sec, usec, EV_SYN, SYN_REPORT, 0),
            *events("ab", start_s=now + 0.01),
        ]
    )
    rejected = r.next_scan()
    assert rejected.rejected is not None and "SYN_DROPPED" in rejected.rejected
    assert rejected.text == "ab"  # without the resync the stale shift would make it "AB"
    device.push(events("abc"))
    assert r.next_scan().text == "abc"


def test_no_terminator_scan_ends_after_the_gap(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A], terminator="none", gap_ms=30)
    assert r.next_state().present
    device.push(events("NO-SUFFIX-1", terminator="none"))
    scan = r.next_scan()
    assert scan.text == "NO-SUFFIX-1" and scan.rejected is None


def test_stop_closes_the_devices(bus: FakeInputBus, run: list[Running]) -> None:
    device = bus.plug(KBD_A)
    r = start(run, bus, [KBD_A])
    assert r.next_state().present
    r.close()
    assert device.closed


def test_an_unexpected_error_reports_the_scanner_missing_and_propagates(bus: FakeInputBus) -> None:
    def broken_find(spec: str) -> list[str]:
        raise ValueError("bug")

    source = EvdevScanSource([KBD_A], open_device=bus.open, find_devices=broken_find)
    got: list[SourceEvent] = []
    with pytest.raises(ValueError, match="bug"):
        source.run(got.append, threading.Event())
    assert got == [
        ScannerState(source="evdev", present=False, detail="source failed: ValueError('bug')")
    ]


def test_find_input_devices_prefers_event_kbd_nodes(tmp_path: Path) -> None:
    for name in ["usb-Scanner-event-kbd", "usb-Scanner-if01-event-mouse", "usb-Other-event-kbd"]:
        (tmp_path / name).touch()
    assert find_input_devices(str(tmp_path / "usb-Scanner*")) == [
        str(tmp_path / "usb-Scanner-event-kbd")
    ]
    assert find_input_devices(str(tmp_path / "usb-Scanner-if01*")) == [
        str(tmp_path / "usb-Scanner-if01-event-mouse")
    ]
    assert find_input_devices(str(tmp_path / "usb-Other-event-kbd")) == [
        str(tmp_path / "usb-Other-event-kbd")
    ]
    assert find_input_devices(str(tmp_path / "absent")) == []


@pytest.mark.parametrize("poll_s", [EvdevScannerConfig.model_fields["poll_s"].default, 1.0])
def test_a_replugged_scanner_is_back_within_two_seconds(
    bus: FakeInputBus, run: list[Running], poll_s: float
) -> None:
    """With the default polling, and the slowest the configuration allows, the source looks
    for a missing scanner often enough to have it back within 2 s of it being plugged in
    (time here is the source's own monotonic clock, stepped by the test)."""
    now = [1000.0]
    bus.plug(KBD_A)
    source = EvdevScanSource(
        [KBD_A],
        open_device=bus.open,
        find_devices=bus.find,
        poll_s=poll_s,
        monotonic=lambda: now[0],
    )
    r = Running(source)
    run.append(r)
    assert r.next_state().present
    bus.unplug(KBD_A)
    assert not r.next_state().present
    now[0] += 0.3  # the first look after the unplug finds nothing
    bus.plug(KBD_A)  # plugged back in at "now"
    now[0] += 2.0
    assert r.next_state().present
