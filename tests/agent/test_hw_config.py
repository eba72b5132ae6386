"""Configuration of scanners and feedback, and the wiring in agent.__main__."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from agent.__main__ import build_feedback, build_sources
from agent.config import StationConfig, parse_config
from agent.errors import AgentError, ConfigError
from agent.evtest import EvtestReplaySource
from agent.feedback import LogFeedback
from agent.hw.evdev_source import EvdevScanSource
from agent.hw.serial_source import SerialScanSource

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "firmware_config" / "station.example.toml"


def config(scanner: str, feedback: str = "") -> StationConfig:
    return parse_config(f'station_id = "st-1"\n[scanner]\n{scanner}\n{feedback}')


def test_evdev_defaults_and_wiring() -> None:
    c = config('type = "evdev"')
    assert c.scanner.type == "evdev"
    (source,) = build_sources(c)
    assert isinstance(source, EvdevScanSource)
    assert source.devices == ["/dev/input/by-id/*-event-kbd"]
    assert (source.terminator, source.grab, source.max_length) == ("enter", True, 512)


def test_evdev_several_devices() -> None:
    c = config(
        'type = "evdev"\ndevices = ["/dev/input/by-id/usb-A*", "/dev/input/event7"]\n'
        'terminator = "none"\ngap_ms = 60\ngrab = false'
    )
    (source,) = build_sources(c)
    assert isinstance(source, EvdevScanSource)
    assert source.devices == ["/dev/input/by-id/usb-A*", "/dev/input/event7"]
    assert (source.terminator, source.gap_ms, source.grab) == ("none", 60, False)


def test_serial_wiring() -> None:
    (source,) = build_sources(config('type = "serial"\nport = "loop://"\nmax_length = 200'))
    assert isinstance(source, SerialScanSource)
    assert (source.port, source.max_length) == ("loop://", 200)


def test_replay_wiring(tmp_path: Path) -> None:
    capture = tmp_path / "c.txt"
    (source,) = build_sources(config(f'type = "replay"\npath = "{capture}"\nterminator = "tab"'))
    assert isinstance(source, EvtestReplaySource)
    assert source.path == capture and source.terminator == "tab"


def test_camera_without_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(AgentError, match="apt install python3-picamera2"):
        build_sources(config('type = "camera"\nfps = 15\nsymbologies = ["qrcode"]'))


@pytest.mark.parametrize(
    ("scanner", "key"),
    [
        ('type = "evdev"\ndevices = []', "scanner.devices"),
        ('type = "evdev"\nterminator = "space"', "scanner.terminator"),
        ('type = "evdev"\npoll_s = 5', "scanner.poll_s"),
        ('type = "evdev"\nport = "/dev/ttyACM0"', "scanner.port"),
        ('type = "camera"\nsymbologies = ["pdf417"]', "scanner.symbologies.0"),
        ('type = "camera"\nfps = 0', "scanner.fps"),
        ('type = "serial"\nbaudrate = 1', "scanner.baudrate"),
        ('type = "replay"', "scanner.path"),
    ],
)
def test_errors_name_the_key(scanner: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key) + ":"):
        config(scanner)


def test_feedback_kinds() -> None:
    assert config('type = "stdin"').feedback.type == "log"
    assert config('type = "stdin"', "[feedback]\n").feedback.type == "log"
    assert isinstance(build_feedback(config('type = "stdin"')), LogFeedback)
    gpio = config('type = "stdin"', '[feedback]\ntype = "gpio"\nleds = "rgb"\nblue_pin = 23')
    assert gpio.feedback.type == "gpio"
    with pytest.raises(ConfigError, match="feedback: type must be 'log', 'none' or 'gpio'"):
        config('type = "stdin"', '[feedback]\ntype = "leds"')
    with pytest.raises(ConfigError, match="needs blue_pin"):
        config('type = "stdin"', '[feedback]\ntype = "gpio"\nleds = "rgb"')
    with pytest.raises(ConfigError, match="buzzer_pin and green_pin are the same pin"):
        config('type = "stdin"', '[feedback]\ntype = "gpio"\nbuzzer_pin = 17')
    with pytest.raises(ConfigError, match=r"feedback\.buzzer_pin"):
        config('type = "stdin"', '[feedback]\ntype = "gpio"\nbuzzer_pin = 1.5')


def _commented_blocks(section: str) -> list[str]:
    """The commented-out alternatives in the annotated example's ``[section]``."""
    text = EXAMPLE.read_text().split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    blocks: list[list[str]] = []
    for line in text.splitlines():
        m = re.fullmatch(r"# ([a-z_]+ = .+)", line)
        if m is None:
            continue
        if m[1].startswith("type = "):
            blocks.append([])
        if blocks:
            blocks[-1].append(m[1])
    return ["\n".join(b) for b in blocks]


def test_every_commented_alternative_in_the_example_is_valid() -> None:
    scanners = _commented_blocks("scanner")
    assert [b.splitlines()[0] for b in scanners] == [
        'type = "evdev"',
        'type = "serial"',
        'type = "camera"',
        'type = "replay"',
    ]
    for block in scanners:
        assert config(block).scanner.type in block
    (gpio,) = _commented_blocks("feedback")
    assert config('type = "stdin"', f"[feedback]\n{gpio}").feedback.type == "gpio"
