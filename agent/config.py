"""Station configuration: TOML parsed into typed models. Unknown keys are errors.

See ``firmware_config/station.example.toml`` for an annotated example; a test keeps that file,
``docs/configuration.md`` and these models in step.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
        30.0, ge=1, le=3600, description="Resend a record not acknowledged after this long."
    )


class StdinScannerConfig(_Section):
    type: Literal["stdin"] = Field(description="One code per line from stdin or a named pipe.")
    path: str = Field("-", description="'-' for standard input, or the path of a named pipe.")


ScannerConfig = Annotated[StdinScannerConfig, Field(discriminator="type")]


class OutboxConfig(_Section):
    path: Path = Field(
        Path("/var/lib/swabline/outbox.json"), description="The outbox database file."
    )
    capacity: int = Field(
        100_000, ge=10, description="Most unacknowledged records kept; beyond it scans are refused."
    )


class FeedbackConfig(_Section):
    type: Literal["log", "none"] = Field(
        "log", description="'log' writes signals to the log (no LEDs); 'none' shows nothing."
    )


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


class StationConfig(_Section):
    station_id: str = Field(
        pattern=f"^{STATION_ID_PATTERN}$", description="This station's id, as enrolled."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    scanner: ScannerConfig = Field(description="Where scans come from.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)


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


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)
