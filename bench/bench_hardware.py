"""Benchmarks of the station's hardware paths (issue 3).

Run: ``python -m bench.bench_hardware`` (writes ``bench/results/hardware.json``); ``--quick``
for a smoke run (writes nothing unless ``--json FILE``). Measures:

1. decoding keyboard-mode scans of 40 characters from raw ``evdev.InputEvent`` objects
   (events/s);
2. the time from a scanner's terminator event (Enter) to the station's ``feedback.signal`` call,
   through the real path: select() on the device, read, decode, the station's queue and thread,
   the sampling workflow (``SamplingWorkflow``: a tube, then persons until the pool of 10 closes
   itself, then the next tube; citizen-ID and health QR codes as a keyboard-mode scanner types
   them), and ``GpioFeedback`` on gpiozero's MockFactory. Storage is excluded (the simulator's
   in-memory outbox); the goal is p99 < 2 ms;
3. zbar decode time of a 640x480 grey frame, with and without a QR code, with the symbologies a
   station uses and with all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import string
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from evdev import InputEvent

from agent.codes import CodeRules, PersonCode, classify
from agent.decode import KeyDecoder, type_text
from agent.fakes import FakeInputBus, FakeUplink
from agent.hw.evdev_source import EvdevScanSource
from agent.hw.gpio_feedback import GpioFeedback
from agent.hw.zbar import SYMBOLOGIES, ZbarDecoder
from agent.ports import Condition, Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from agent.station import Station
from bench.common import REPO, RESULTS, machine_info
from swabline.sim.fleet import MemoryOutbox
from swabline.sim.metrics import FleetMetrics, percentile
from swabline.sim.staff import Staff, StaffProfile

DEFAULT_JSON = RESULTS / "hardware.json"

PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
CCCD = (
    "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|"
    "12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh|20042021"
)


# -- 1. decoding ---------------------------------------------------------------------------


def bench_decode(scans: int, length: int = 40, seed: int = 1) -> dict[str, Any]:
    """Random printable ASCII (about half the characters shifted), as evdev.InputEvent objects.

    Events are made in chunks outside the timed part, to keep memory small.
    """
    rng = random.Random(seed)
    decoder = KeyDecoder(source="bench")
    feed = decoder.feed
    t = 1_700_000_000.0
    elapsed = 0.0
    total_events = decoded = 0
    done = 0
    while done < scans:
        chunk = min(1000, scans - done)
        events: list[InputEvent] = []
        for _ in range(chunk):
            text = "".join(rng.choice(PRINTABLE) for _ in range(length))
            events += [InputEvent(*e) for e in type_text(text, start_s=t, key_us=1000)]
            t += 1.0
        started = time.perf_counter()
        for event in events:
            if feed(event) is not None:
                decoded += 1
        elapsed += time.perf_counter() - started
        total_events += len(events)
        done += chunk
    assert decoded == scans, (decoded, scans)
    return {
        "scans": scans,
        "chars_per_scan": length,
        "events": total_events,
        "seconds": elapsed,
        "events_per_s": total_events / elapsed,
        "scans_per_s": scans / elapsed,
    }


# -- 2. terminator -> feedback ----------------------------------------------------------------

TUBE_PATTERN = r"BENCH-\d{6}"
POOL_SIZE = 10


def ascii_fold(text: str) -> str:
    """What a keyboard-mode scanner can type of ``text``: Vietnamese letters without their
    diacritics (``Đ`` has no decomposition, so it is mapped by hand)."""
    text = text.replace("Đ", "D").replace("đ", "d")
    bare = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return bare.encode("ascii", "replace").decode()


def sampling_scans(count: int, rules: CodeRules, seed: int = 2) -> list[str]:
    """What staff scan at a pooled station: a tube, then persons until the pool is full (it
    closes itself), then the next tube. Persons are the simulator's synthetic ones (citizen ID
    and health QR codes), as a keyboard-mode scanner types them; codes the station would refuse
    are skipped, so that every timed scan goes through the workflow's accepting path."""
    staff = Staff(1, random.Random(seed), StaffProfile())
    scans: list[str] = []
    tubes = 0
    while len(scans) < count:
        tubes += 1
        scans.append(f"BENCH-{tubes:06d}")
        added = 0
        while added < POOL_SIZE and len(scans) < count:
            text = ascii_fold(staff.person()[0])
            if isinstance(classify(text, rules, lossy=True), PersonCode):
                scans.append(text)
                added += 1
    return scans


class TimedFeedback:
    """Notes when ``signal`` is called, then passes it on to the real feedback."""

    def __init__(self, inner: GpioFeedback) -> None:
        self.inner = inner
        self.called_ns = 0
        self.last: Signal | None = None
        self.called = threading.Event()

    def signal(self, signal: Signal) -> None:
        self.called_ns = time.perf_counter_ns()
        self.last = signal
        self.called.set()
        self.inner.signal(signal)

    def set_condition(self, condition: Condition, active: bool) -> None:
        self.inner.set_condition(condition, active)

    def close(self) -> None:
        self.inner.close()


def bench_latency(scans: int, warmup: int = 20) -> dict[str, Any]:
    """Time each scan from the moment its Enter key event reaches the device to the station's
    ``feedback.signal`` call, through the real ``SamplingWorkflow`` (tube, persons, pools that
    close themselves); the records go to the simulator's in-memory outbox (storage excluded)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from agent.clock import SystemClock

    clock = SystemClock()
    rules = CodeRules.build([TUBE_PATTERN])
    settings = WorkflowSettings(rules=rules, pool_size=POOL_SIZE)
    texts = sampling_scans(scans + warmup, rules)
    path = "/dev/input/by-id/usb-Bench_Scanner-event-kbd"
    bus = FakeInputBus()
    device = bus.plug(path)
    # The fake device node quacks like evdev's InputDevice (a pipe for select(), read, grab).
    source = EvdevScanSource([path], open_device=cast(Any, bus.open), find_devices=bus.find)
    factory = MockFactory(pin_class=MockPWMPin)
    gpio = GpioFeedback(green_pin=17, red_pin=27, amber_pin=22, buzzer_pin=18, pin_factory=factory)
    feedback = TimedFeedback(gpio)
    outbox = MemoryOutbox(metrics=FleetMetrics(), capacity=len(texts) * 2 + 10)
    station = Station(
        station_id="st-1",
        boot_id="bench",
        sources=[source],
        workflow=SamplingWorkflow(settings, now=clock.wall),
        outbox=outbox,
        uplink=FakeUplink(connected=False),
        feedback=feedback,
        clock=clock,
    )
    stop = threading.Event()
    thread = threading.Thread(target=station.run, args=(stop,), name="station")
    thread.start()
    latencies_ms: list[float] = []
    signals: Counter[str] = Counter()
    try:
        for i, text in enumerate(texts):
            events = [InputEvent(*e) for e in type_text(text, start_s=time.time(), key_us=100)]
            # Everything up to the Enter press first; the clock starts when the Enter arrives.
            enter = len(events) - 4
            device.push(events[:enter])
            if not device.wait_read():
                raise RuntimeError("the source stopped reading (is the station thread alive?)")
            feedback.called.clear()
            t0 = time.perf_counter_ns()
            device.push(events[enter:])
            if not feedback.called.wait(10):
                raise RuntimeError(f"no feedback within 10 s for scan {i} ({text[:20]!r})")
            assert feedback.last is not None
            signals[feedback.last.value] += 1
            if i >= warmup:
                latencies_ms.append((feedback.called_ns - t0) / 1e6)
            time.sleep(0.002)  # let the station finish the scan before the next one
    finally:
        stop.set()
        thread.join(timeout=10)
        feedback.close()
        device.close()
    expected = {Signal.POOL_OPENED.value, Signal.SAVED.value, Signal.POOL_FULL.value}
    if set(signals) - expected or len(outbox) < len(texts):
        raise RuntimeError(f"the workflow did not accept every scan: {dict(signals)}")
    return {
        "scans": len(latencies_ms),
        "warmup_scans": warmup,
        "workflow": f"SamplingWorkflow, pools of {POOL_SIZE}",
        "signals": dict(signals),
        "records_stored": len(outbox),
        "p50_ms": statistics.median(latencies_ms),
        "p99_ms": percentile(sorted(latencies_ms), 99),
        "max_ms": max(latencies_ms),
        "goal_p99_ms": 2.0,
    }


# -- 3. camera frames ---------------------------------------------------------------------------


def qr_frame(text: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    import io

    import segno
    from PIL import Image

    buf = io.BytesIO()
    segno.make(text.encode(), micro=False).save(buf, kind="png", scale=4, border=4)
    buf.seek(0)
    qr = np.array(Image.open(buf).convert("L"), dtype=np.uint8)
    frame = np.full((480, 640), 190, dtype=np.uint8)
    top, left = (480 - qr.shape[0]) // 2, (640 - qr.shape[1]) // 2
    frame[top : top + qr.shape[0], left : left + qr.shape[1]] = qr
    return frame


def time_frames(decode: Callable[[Any], object], frame: Any, count: int) -> dict[str, float]:
    for _ in range(3):
        decode(frame)
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        decode(frame)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "mean_ms": statistics.fmean(times),
        "p50_ms": statistics.median(times),
        "p99_ms": percentile(sorted(times), 99),
    }


def bench_camera(frames: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    images = {
        "empty (uniform grey)": np.full((480, 640), 190, dtype=np.uint8),
        "noise": rng.integers(0, 256, size=(480, 640), dtype=np.uint8),
        "CCCD QR code": qr_frame(CCCD),
    }
    out: dict[str, Any] = {}
    for label, symbologies in (
        ("qrcode+code128", ["qrcode", "code128"]),
        ("all symbologies", list(SYMBOLOGIES)),
    ):
        with ZbarDecoder(symbologies) as decoder:
            assert decoder.decode(images["CCCD QR code"])[0].data.decode() == CCCD
            for name, image in images.items():
                out[f"{label} / {name}"] = time_frames(decoder.decode, image, frames)
    return out


# -- report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hardware", description=__doc__)
    parser.add_argument("--scans", type=int, default=10_000, help="scans to decode (10000)")
    parser.add_argument(
        "--latency-scans", type=int, default=1000, help="scans timed end to end (1000)"
    )
    parser.add_argument("--frames", type=int, default=200, help="frames per camera case (200)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it runs")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"write the results here (default: {DEFAULT_JSON.relative_to(REPO)}; "
        "with --quick, nowhere)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.scans, args.latency_scans, args.frames = 500, 50, 10
    out: Path | None = args.json or (None if args.quick else DEFAULT_JSON)

    machine = machine_info()
    results: dict[str, Any] = {
        "name": "hardware" + ("-quick" if args.quick else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.bench_hardware" + (" --quick" if args.quick else ""),
        "machine": machine,
        "decode": bench_decode(args.scans),
        "terminator_to_feedback": bench_latency(args.latency_scans),
        "camera_640x480": bench_camera(args.frames),
        "load_average_after": os.getloadavg(),
    }

    d = results["decode"]
    lat = results["terminator_to_feedback"]
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    print(
        f"Station hardware benchmarks, {results['date']}: {machine['cpu']}, "
        f"{machine['cores']} cores, Python {machine['python']}; load average at start {load}"
    )
    print()
    print("| measurement | result |")
    print("| --- | --- |")
    print(
        f"| decode {d['scans']:,} scans x {d['chars_per_scan']} chars ({d['events']:,} events) "
        f"| {d['events_per_s']:,.0f} events/s ({d['scans_per_s']:,.0f} scans/s) |"
    )
    verdict = "meets" if lat["p99_ms"] < lat["goal_p99_ms"] else "MISSES"
    print(
        f"| Enter event -> feedback call, {lat['scans']:,} scans ({lat['workflow']}) "
        f"| p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, max {lat['max_ms']:.3f} ms "
        f"({verdict} p99 < 2 ms) |"
    )
    for name, r in results["camera_640x480"].items():
        print(
            f"| zbar, {name} | mean {r['mean_ms']:.2f} ms, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms |"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
