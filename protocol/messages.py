"""Payload schemas of the Swabline MQTT contract (JSON, UTF-8, one object per message).

Every payload carries ``"v": PROTOCOL_VERSION``. Unknown fields are refused so that a typo on one
side is caught at the other side's door instead of being silently dropped.

Identity of a record: ``record_id`` (a UUID made on the station; UUIDv7 so that ids sort by
creation), ``station_id`` and ``seq`` (a per-station sequence number that never repeats). The
server stores a record at most once per ``record_id``; a second copy is acknowledged again but not
stored again. MQTT message ids and timestamps are never identities.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from protocol.topics import STATION_ID_PATTERN

PROTOCOL_VERSION: Literal[1] = 1
MAX_PAYLOAD_BYTES = 64 * 1024
"""Larger payloads are refused before parsing."""
MAX_CODE_CHARS = 4096
MAX_ACK_IDS = 1000
"""An acknowledgement lists at most this many record ids; more are split across messages."""

StationId = Annotated[str, Field(pattern=f"^{STATION_ID_PATTERN}$")]
RecordId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
Version = Literal[1]
_WIRE = "wire"


class PayloadError(ValueError):
    """A payload is not valid under the contract. ``reason`` is short and safe to store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Version = PROTOCOL_VERSION

    @model_validator(mode="before")
    @classmethod
    def _version_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        # Code may leave ``v`` to its default; a payload from the wire must state it.
        if info.context == _WIRE and isinstance(data, dict) and "v" not in data:
            raise ValueError("the protocol version field 'v' is missing")
        return data


class Record(_Message):
    """Something a station decided and stored: a scan, a tube opened, a person added, ...

    Published on ``.../<station_id>/records``. The station keeps it in its outbox until an
    ``Ack`` naming its ``record_id`` arrives.
    """

    record_id: RecordId
    station_id: StationId
    seq: int = Field(ge=1, description="Per-station sequence number, never repeated.")
    boot_id: str = Field(min_length=1, max_length=64)
    wall_time: float = Field(description="Station wall clock, seconds since the epoch.")
    mono_ns: int = Field(ge=0, description="Station monotonic clock since boot, nanoseconds.")
    clock_synced: bool = Field(description="Whether the wall clock was NTP-synchronised.")
    kind: str = Field(pattern=r"^[a-z][a-z_]{0,31}$", description="What happened, e.g. 'scan'.")
    code: str | None = Field(default=None, max_length=MAX_CODE_CHARS)
    data: dict[str, Any] = Field(default_factory=dict)


class Ack(_Message):
    """Server -> station on ``.../<station_id>/acks``: these records are committed centrally.

    Sent only after the database commit. A record already stored (a resend) is acknowledged again.
    """

    record_ids: list[RecordId] = Field(min_length=1, max_length=MAX_ACK_IDS)
    server_time: float | None = Field(
        None, description="Server clock when sent, epoch seconds: stations estimate their offset."
    )


class Status(_Message):
    """Birth (``online``) and death (``offline``) on ``.../<station_id>/status``, retained.

    ``bd_seq`` grows by one per connection; the will carries the same ``bd_seq`` as the birth of
    its connection, so a late death from an older connection is recognised as stale and ignored.
    """

    state: Literal["online", "offline"]
    bd_seq: int = Field(ge=0)
    time: float
    agent_version: str | None = None


class Heartbeat(_Message):
    """Station health on ``.../<station_id>/heartbeat`` (QoS 0). Fields beyond these may grow.

    Everything after ``outbox_depth`` is optional: a reading the station cannot take (no Wi-Fi,
    not a Raspberry Pi) is left out rather than faked.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    time: float
    uptime_s: float = Field(ge=0)
    outbox_depth: int = Field(ge=0, description="Records not yet acknowledged by the server.")
    oldest_pending_age_s: float | None = Field(
        None, ge=0, description="Age of the oldest unacknowledged record (station wall clock)."
    )
    outbox_capacity: int | None = Field(
        None, ge=0, description="Most records the outbox keeps before refusing scans."
    )
    outbox_nearly_full: bool | None = Field(
        None, description="Unacknowledged records passed the station's warning threshold."
    )
    last_seq: int | None = Field(None, ge=0, description="Highest seq the station handed out.")
    agent_version: str | None = Field(None, max_length=32)
    boot_id: str | None = Field(None, max_length=64)
    heartbeat_s: float | None = Field(None, gt=0, description="The station's heartbeat interval.")
    clock_synced: bool | None = None
    clock_offset_s: float | None = Field(
        None, description="Station wall clock minus server clock, from the last server_time seen."
    )
    scans_today: int | None = Field(None, ge=0)
    last_scan_at: float | None = None
    scanners_connected: int | None = Field(None, ge=0)
    scanners_expected: int | None = Field(None, ge=0)
    cpu_temp_c: float | None = None
    load_avg: float | None = Field(None, ge=0)
    mem_total_mb: float | None = Field(None, ge=0)
    mem_available_mb: float | None = Field(None, ge=0)
    disk_total_mb: float | None = Field(None, ge=0)
    disk_free_mb: float | None = Field(None, ge=0)
    wifi_signal_dbm: float | None = None
    mqtt_reconnects: int | None = Field(None, ge=0)
    under_voltage: bool | None = None
    throttled: bool | None = None
    throttled_flags: int | None = Field(None, ge=0)


class Sync(_Message):
    """Server -> station on ``.../<station_id>/sync``, after each birth (``Status`` online).

    ``max_seq`` is the highest seq the server has stored for the station. A station whose outbox
    is new (a reinstall) starts its sequence after it, so no seq is ever used twice.
    """

    max_seq: int = Field(ge=0)


class Command(_Message):
    """Server -> station on ``.../<station_id>/commands``.

    The station carries out a ``command_id`` at most once per run and answers with one
    ``CommandResult``. A command past ``expires_at`` is refused (when the station's clock is
    synchronised; the server never sends an expired command).
    """

    command_id: str = Field(min_length=1, max_length=64)
    name: str = Field(pattern=r"^[a-z][a-z_]{0,31}$")
    args: dict[str, Any] = Field(default_factory=dict)
    expires_at: float
    server_time: float | None = Field(None, description="Server clock when sent, epoch seconds.")


class CommandResult(_Message):
    """Station -> server on ``.../<station_id>/command_results``."""

    command_id: str = Field(min_length=1, max_length=64)
    ok: bool
    detail: dict[str, Any] = Field(default_factory=dict)


M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    """Serialise a message to its wire form (compact UTF-8 JSON)."""
    return message.model_dump_json(exclude_none=True).encode()


def decode(model: type[M], payload: bytes) -> M:
    """Parse and validate a wire payload as ``model``, raising ``PayloadError`` with a reason."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload, context=_WIRE)
    except ValidationError as exc:
        raise PayloadError(_reason(exc)) from None


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    if first["type"] == "json_invalid":
        return "not valid JSON"
    if where == "v" or "'v' is missing" in first["msg"]:
        return f"unsupported protocol version (expected {PROTOCOL_VERSION})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
