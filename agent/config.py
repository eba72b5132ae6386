"""Station configuration: TOML parsed into typed models. Unknown keys are errors.

See ``firmware_config/station.example.toml`` for an annotated example; a test keeps that file,
``docs/configuration.md`` and these models in step.
"""

from __future__ import annotations

import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError
from protocol.topics import STATION_ID_PATTERN


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS).")
    username: str | None = Field(
        None, description="MQTT username; defaults to the station id, which the ACLs require."
    )
    password_file: Path | None = Field(
        None, description="File holding the MQTT password (mode 0600); never put it in the TOML."
    )
    ca_file: Path | None = Field(
        None, description="CA certificate of the province; setting it turns TLS on."
    )
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keepalive in seconds.")
    max_inflight: int = Field(
        100, ge=1, le=65535, description="QoS 1 messages in flight at once (pipelining)."
    )
    heartbeat_s: float = Field(10.0, ge=1, le=3600, description="Seconds between heartbeats.")
    resend_after_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Resend a record not acknowledged after this long, if no acknowledgement "
        "at all came meanwhile or a later record was acknowledged.",
    )
    resend_max_s: float = Field(
        300.0,
        ge=1,
        le=24 * 3600,
        description="Cap of a record's resend interval, which doubles (jittered) per resend.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, le=600, description="Shortest wait before reconnecting to the broker."
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, le=3600, description="Longest wait between reconnection attempts (the cap)."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A connection attempt with no CONNACK by then failed."
    )
    drain_per_s: float = Field(
        200.0, gt=0, le=100_000, description="Most records sent per second (backlog pace)."
    )
    max_unacked: int = Field(
        1000, ge=1, le=100_000, description="Most records sent and not yet acknowledged."
    )

    @model_validator(mode="after")
    def _reconnect_window(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.resend_after_s > self.resend_max_s:
            raise ValueError("resend_after_s must not exceed resend_max_s")
        return self


class StdinScannerConfig(_Section):
    type: Literal["stdin"] = Field(description="One code per line from stdin or a named pipe.")
    path: str = Field("-", description="'-' for standard input, or the path of a named pipe.")


class _KeyDecoding(_Section):
    """Settings of the decoder of keyboard-mode (HID) scanners, live or replayed."""

    terminator: Literal["enter", "tab", "none"] = Field(
        "enter",
        description="Key the scanner sends after each code: 'enter', 'tab', or 'none' "
        "(a silence of gap_ms ends the code).",
    )
    gap_ms: float = Field(
        100.0, gt=0, le=5000, description="With terminator 'none': the silence that ends a code."
    )
    incomplete_ms: float = Field(
        1000.0,
        gt=0,
        le=60000,
        description="With terminator 'enter'/'tab': a code left without it this long is rejected.",
    )
    max_length: int = Field(512, ge=1, le=65536, description="Longest accepted code (characters).")


class EvdevScannerConfig(_KeyDecoding):
    type: Literal["evdev"] = Field(description="Keyboard-mode (HID) USB scanners through evdev.")
    devices: list[str] = Field(
        default_factory=lambda: ["/dev/input/by-id/*-event-kbd"],
        min_length=1,
        description="Device paths or glob patterns; -event-kbd nodes win among matches.",
    )
    grab: bool = Field(
        True, description="Take each scanner exclusively (codes never reach a console)."
    )
    poll_s: float = Field(
        0.5, gt=0, le=1, description="How often to look for a missing scanner (seconds)."
    )


class SerialScannerConfig(_Section):
    type: Literal["serial"] = Field(description="A USB serial (CDC) scanner: UTF-8 lines.")
    port: str = Field(
        "/dev/ttyACM0", description="Device path, glob (/dev/serial/by-id/usb-*) or pyserial URL."
    )
    baudrate: int = Field(9600, ge=300, le=4_000_000, description="Ignored by USB CDC devices.")
    max_length: int = Field(1024, ge=1, le=65536, description="Longest accepted code (characters).")
    incomplete_ms: float = Field(
        1000.0, gt=0, le=60000, description="A line left without CR/LF this long is rejected."
    )


CameraSymbology = Literal[
    "qrcode",
    "code128",
    "code39",
    "code93",
    "ean8",
    "ean13",
    "upca",
    "upce",
    "i25",
    "codabar",
    "databar",
    "databar_exp",
]


class CameraScannerConfig(_Section):
    type: Literal["camera"] = Field(description="The Raspberry Pi camera, decoded with zbar.")
    fps: float = Field(10.0, gt=0, le=60, description="Frames decoded per second, at most.")
    width: int = Field(640, ge=64, le=4056, description="Width of the frames decoded (pixels).")
    height: int = Field(480, ge=48, le=3040, description="Height of the frames decoded (pixels).")
    symbologies: list[CameraSymbology] = Field(
        default_factory=lambda: ["qrcode", "code128"],  # type: ignore[arg-type]
        min_length=1,
        description="Code types to look for; each one more costs decode time.",
    )
    leave_after_s: float = Field(
        0.5, gt=0, le=60, description="A code not seen this long has left the view."
    )
    repeat_after_s: float = Field(
        0.0, ge=0, le=3600, description="Count a code still in view again after this; 0: never."
    )


class ReplayScannerConfig(_KeyDecoding):
    type: Literal["replay"] = Field(description="Replay an evtest capture (for diagnosis).")
    path: str = Field(description="The capture file (the output of evtest).")


ScannerConfig = Annotated[
    StdinScannerConfig
    | EvdevScannerConfig
    | SerialScannerConfig
    | CameraScannerConfig
    | ReplayScannerConfig,
    Field(discriminator="type"),
]


class OutboxConfig(_Section):
    path: Path = Field(
        Path("/var/lib/swabline/outbox"),
        description="The outbox folder (snapshot files and journal, see docs/durability.md).",
    )
    capacity: int = Field(
        100_000, ge=10, description="Most records kept; beyond it scans are refused."
    )
    warn_at_pct: float = Field(
        80.0, gt=0, le=100, description="Signal 'outbox nearly full' at this % of capacity."
    )
    acked_retention_h: float = Field(
        24.0, ge=0, le=24 * 365, description="Acknowledged records are purged after this long."
    )
    compact_kib: int = Field(
        1024,
        ge=4,
        le=1024 * 1024,
        description="Rewrite changed segments and empty the journal past this size (KiB).",
    )


class FeedbackConfig(_Section):
    type: Literal["log", "none"] = Field(
        "log", description="'log' writes signals to the log (no LEDs); 'none' shows nothing."
    )


GpioPin = int | str


class GpioFeedbackConfig(_Section):
    type: Literal["gpio"] = Field(description="LEDs and a buzzer on GPIO pins (gpiozero).")
    leds: Literal["separate", "rgb"] = Field(
        "separate", description="'separate': green, red and amber LEDs; 'rgb': one RGB LED."
    )
    green_pin: GpioPin = Field(17, description="Green LED (or the RGB LED's green leg).")
    red_pin: GpioPin = Field(27, description="Red LED (or the RGB LED's red leg).")
    amber_pin: GpioPin | None = Field(22, description="Amber LED ('separate' only).")
    blue_pin: GpioPin | None = Field(None, description="The RGB LED's blue leg ('rgb' only).")
    active_high: bool = Field(True, description="False for LEDs wired to 3.3 V (common anode).")
    buzzer: Literal["active", "passive", "none"] = Field(
        "active", description="'active' beeps on/off, 'passive' plays tones, 'none'."
    )
    buzzer_pin: GpioPin | None = Field(18, description="The buzzer's pin.")

    @model_validator(mode="after")
    def _pins_for_kind(self) -> GpioFeedbackConfig:
        if self.leds == "rgb" and self.blue_pin is None:
            raise ValueError("leds = 'rgb' needs blue_pin")
        if self.leds == "separate" and self.amber_pin is None:
            raise ValueError("leds = 'separate' needs amber_pin")
        if self.buzzer != "none" and self.buzzer_pin is None:
            raise ValueError(f"buzzer = '{self.buzzer}' needs buzzer_pin")
        used = {
            "green_pin": self.green_pin,
            "red_pin": self.red_pin,
            "amber_pin": self.amber_pin if self.leds == "separate" else None,
            "blue_pin": self.blue_pin if self.leds == "rgb" else None,
            "buzzer_pin": self.buzzer_pin if self.buzzer != "none" else None,
        }
        seen: dict[int | str, str] = {}
        for key, pin in used.items():
            if pin is None:
                continue
            if pin in seen:
                raise ValueError(f"{key} and {seen[pin]} are the same pin ({pin})")
            seen[pin] = key
        return self


def _feedback_kind(value: object) -> str | None:
    # A [feedback] table without a type keeps meaning "log".
    kind = value.get("type", "log") if isinstance(value, dict) else getattr(value, "type", None)
    return {"log": "simple", "none": "simple", "gpio": "gpio"}.get(str(kind))


AnyFeedbackConfig = Annotated[
    Annotated[FeedbackConfig, Tag("simple")] | Annotated[GpioFeedbackConfig, Tag("gpio")],
    Discriminator(
        _feedback_kind,
        custom_error_type="feedback_type",
        custom_error_message="type must be 'log', 'none' or 'gpio'",
    ),
]


PersonFormatName = Literal["cccd", "health_qr"]
_PERSON_FORMATS: tuple[PersonFormatName, ...] = ("cccd", "health_qr")


class WorkflowConfig(_Section):
    """The sampling workflow (tubes, pools, persons); see ``docs/workflow.md``."""

    tube_patterns: list[str] = Field(
        min_length=1,
        description="Regular expressions a whole tube barcode must match (no built-in default: "
        "tube labels differ per province and lab).",
    )
    mode: Literal["pool", "single"] = Field(
        "pool", description="Mode of new tubes until staff scan a mode card."
    )
    pool_size: int = Field(
        10, ge=1, le=50, description="Persons per pooled tube until staff scan a pool-size card."
    )
    test_kind: Literal["rt_pcr", "rapid_antigen"] = Field(
        "rt_pcr", description="Test kind of new tubes until staff scan a test-kind card."
    )
    retest_window_s: float = Field(
        86_400.0,
        ge=0,
        description="The same person sampled again at this station within this many seconds "
        "is recorded with a warning; 0 turns the warning off.",
    )
    used_tube_window_s: float = Field(
        7 * 86_400.0,
        ge=3600,
        description="A tube opened at this station longer ago than this is forgotten: its "
        "label opens a new tube if scanned again (the server still flags the reused label), "
        "and the session history stops keeping it.",
    )
    person_formats: list[PersonFormatName] = Field(
        default_factory=lambda: list(_PERSON_FORMATS),
        min_length=1,
        description="Person QR formats accepted: 'cccd' (citizen ID card), 'health_qr' "
        "(unified health QR v1.1).",
    )
    cccd_strict_province: bool = Field(
        True,
        description="Refuse CCCD numbers that do not start with a Vietnamese province code "
        "(turn off where citizens whose birth was registered abroad are sampled).",
    )
    require_staff: bool = Field(
        False, description="Refuse tubes and persons until a staff badge has been scanned."
    )

    @field_validator("tube_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {i + 1} {pattern!r} is not a regular expression: {exc}"
                ) from None
            if compiled.fullmatch(""):
                raise ValueError(f"pattern {i + 1} {pattern!r} matches an empty code")
            if compiled.fullmatch("SWABLINE:CMD:CLOSE"):
                raise ValueError(f"pattern {i + 1} {pattern!r} matches command cards")
        return patterns


class LabStationConfig(_Section):
    """A lab station: it receives tubes at a lab instead of sampling (see ``agent/lab.py``)."""

    tube_patterns: list[str] = Field(
        min_length=1, description="Regular expressions a whole tube barcode matches."
    )
    box_patterns: list[str] = Field(
        min_length=1, description="Regular expressions a whole transport-box label matches."
    )

    @field_validator("tube_patterns", "box_patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a regular expression: {exc}") from None
        return patterns


class HealthConfig(_Section):
    probe: Literal["auto", "linux", "pi", "none"] = Field(
        "auto",
        description="Machine readings: 'pi' adds under-voltage/throttling, 'auto' detects a Pi.",
    )
    timezone: str = Field(
        "Asia/Ho_Chi_Minh", description="Time zone whose midnight resets the scans-today count."
    )
    log_lines: int = Field(
        2000, ge=0, le=100_000, description="Recent log lines kept in memory for diagnostics."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class EnrollmentConfig(_Section):
    """Which servers ``swabline provision`` may enroll this station with (set in the image)."""

    servers: list[str] = Field(
        default_factory=list,
        description="URLs of the servers this station may enroll with (https://host[:port]"
        "[/path]); an enrollment card naming any other server is refused. Required to wait for "
        "a card.",
    )
    server_ca: Path | None = Field(
        None,
        description="CA certificate the server's HTTPS certificate must chain to (the "
        "province's CA), instead of the system's trust store.",
    )

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, servers: list[str]) -> list[str]:
        for url in servers:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"{url!r} is not an https:// URL")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(f"{url!r}: no query, fragment or user name in a server URL")
        return servers


class StationConfig(_Section):
    station_id: str = Field(
        pattern=f"^{STATION_ID_PATTERN}$", description="This station's id, as enrolled."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    scanner: ScannerConfig = Field(description="Where scans come from.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    feedback: AnyFeedbackConfig = Field(default_factory=FeedbackConfig)
    workflow: WorkflowConfig | None = Field(
        None,
        description="The sampling workflow; a station needs it (or [lab]) unless "
        "development_raw_scans is set.",
    )
    lab: LabStationConfig | None = Field(
        None, description="Present on a lab station: receive tubes instead of sampling."
    )
    health: HealthConfig = Field(default_factory=HealthConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    development_raw_scans: bool = Field(
        False,
        description="Allow a station with neither [workflow] nor [lab]: every scan is stored as "
        "a raw 'scan' record, without pairing checks. Development and tests only.",
    )

    @model_validator(mode="after")
    def _one_workflow(self) -> StationConfig:
        if self.workflow is not None and self.lab is not None:
            raise ValueError(
                "a station samples ([workflow]) or receives at a lab ([lab]), not both"
            )
        return self


def parse_config(text: str, *, source: str = "<config>") -> StationConfig:
    """Parse station TOML; ``ConfigError`` names the failing key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc)}") from None


def load_config(path: Path) -> StationConfig:
    """Read and parse a station configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, source=str(path))


# Pydantic puts the chosen member of a tagged union in the error location
# ("scanner.evdev.devices"); the key in the file is "scanner.devices".
_UNION_TAGS = {
    "scanner": {"stdin", "evdev", "serial", "camera", "replay"},
    "feedback": {"simple", "gpio"},
}


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        if len(loc) > 1 and loc[1] in _UNION_TAGS.get(str(loc[0]), ()):
            del loc[1]
        key = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)
