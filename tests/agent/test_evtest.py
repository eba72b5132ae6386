"""evtest captures: parsing, replaying through the decoder, and the `swabline scanner` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.decode import EV_KEY, EV_SYN, SYN_DROPPED, SYN_REPORT, KeyDecoder, RawEvent
from agent.errors import CaptureFormatError
from agent.evtest import EvtestReplaySource, decode_events, parse_evtest
from agent.ports import Scan, SourceEvent

REPO = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).parent / "data" / "honeywell-1900-keyboard.evtest.txt"

EXPECTED = [
    {"accepted": True, "text": "KG-RG-000123"},
    {"accepted": True, "text": "02422288"},
    {"accepted": True, "text": "******001234|NGUYEN THI BINH|2003-**-**|0|QX7K2M9P4T|"},
    {
        "accepted": False,
        "reason": "events lost (SYN_DROPPED): the input buffer overflowed",
        "text": "KG-00124",
    },
    {"accepted": True, "text": "KG-RG-000125"},
    {
        "accepted": False,
        "reason": "key code 86 has no character in the US keymap",
        "text": "KG-RG-000126",
    },
    {"accepted": True, "text": "KG-RG-000127"},  # an autorepeat event in the middle
]


def test_parse_evtest_lines() -> None:
    lines = [
        'Input device name: "Honeywell"',
        "Testing ... (interrupt to exit)",
        "Event: time 1700000000.123456, type 4 (EV_MSC), code 4 (MSC_SCAN), value 70004",
        "Event: time 1700000000.123456, type 1 (EV_KEY), code 30 (KEY_A), value 1",
        "Event: time 1700000000.123456, -------------- SYN_REPORT ------------",
        "Event: time 1700000000.200000, -------------- SYN_DROPPED ------------",
        "Event: time 1700000000.300000, >>>>>>>>>>>>>> SYN_DROPPED <<<<<<<<<<<<",
        "Event: time 1700000000.400000, type 1 (EV_KEY), code 113 (KEY_MIN_INTERESTING), value 0",
    ]
    assert list(parse_evtest(lines)) == [
        RawEvent(1700000000, 123456, 4, 4, 0x70004),
        RawEvent(1700000000, 123456, EV_KEY, 30, 1),
        RawEvent(1700000000, 123456, EV_SYN, SYN_REPORT, 0),
        RawEvent(1700000000, 200000, EV_SYN, SYN_DROPPED, 0),
        RawEvent(1700000000, 300000, EV_SYN, SYN_DROPPED, 0),
        RawEvent(1700000000, 400000, EV_KEY, 113, 0),
    ]


def test_a_broken_event_line_names_its_line_number() -> None:
    lines = ["Testing ...", "Event: time 1700000000.1, type 1 (EV_KEY), code 30 (KEY_A), value"]
    with pytest.raises(CaptureFormatError, match="line 2"):
        list(parse_evtest(lines))


def test_sample_capture_decodes_as_expected() -> None:
    scans = list(EvtestReplaySource(SAMPLE).scans())
    got = [
        {"accepted": s.rejected is None, "text": s.text}
        | ({"reason": s.rejected} if s.rejected else {})
        for s in scans
    ]
    assert got == EXPECTED
    assert all(s.lossy for s in scans)


def test_a_scan_left_pending_at_the_end_of_a_capture_is_reported() -> None:
    events = [RawEvent(1700000000, 0, EV_KEY, 30, 1), RawEvent(1700000000, 0, EV_SYN, 0, 0)]
    (scan,) = decode_events(events, KeyDecoder(source="x"))
    assert scan.text == "a" and scan.rejected == "incomplete: no Enter within 1000 ms"
    (scan,) = decode_events(events, KeyDecoder(source="x", terminator="none"))
    assert scan.text == "a" and scan.rejected is None


def test_replay_source_feeds_the_station_sink() -> None:
    got: list[SourceEvent] = []
    EvtestReplaySource(SAMPLE, name="replay").run(got.append, threading.Event())
    assert [e.text for e in got if isinstance(e, Scan)] == [x["text"] for x in EXPECTED]


def swabline(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "swabline", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,  # type: ignore[call-overload]
    )


def test_cli_replay_prints_one_json_object_per_scan() -> None:
    result = swabline("scanner", "replay", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{k: v for k, v in x.items() if k in ("accepted", "text", "reason")} for x in lines] == (
        EXPECTED
    )


def test_cli_replay_errors(tmp_path: Path) -> None:
    result = swabline("scanner", "replay", str(tmp_path / "missing.txt"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("Event: time 1.000001, garbage\n")
    result = swabline("scanner", "replay", str(bad))
    assert result.returncode == 2 and "line 1" in result.stderr


def test_cli_scanner_help() -> None:
    result = swabline("scanner", "--help")
    assert result.returncode == 0 and "replay" in result.stdout and "listen" in result.stdout


def test_cli_listen_shows_what_the_configured_scanner_produces(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f'station_id = "st-1"\n[scanner]\ntype = "replay"\npath = "{SAMPLE}"\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        [sys.executable, "-m", "swabline", "scanner", "listen", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [json.loads(proc.stdout.readline()) for _ in EXPECTED]
            assert [x["text"] for x in lines] == [x["text"] for x in EXPECTED]
            assert [x["accepted"] for x in lines] == [x["accepted"] for x in EXPECTED]
            proc.send_signal(signal.SIGINT)  # it runs until Ctrl-C
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_cli_listen_with_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text('station_id = "st-1"\n[scanner]\ntype = "evdev"\ndevices = []\n')
    result = swabline("scanner", "listen", "--config", str(config))
    assert result.returncode == 2 and "scanner.devices" in result.stderr
