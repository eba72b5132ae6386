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
    """Station health on ``.../<station_id>/heartbeat`` (QoS 0). Fields beyond these may grow."""

    model_config = ConfigDict(extra="allow", frozen=True)

    time: float
    uptime_s: float = Field(ge=0)
    outbox_depth: int = Field(ge=0)


class Command(_Message):
    """Server -> station on ``.../<station_id>/commands``."""

    command_id: str = Field(min_length=1, max_length=64)
    name: str = Field(pattern=r"^[a-z][a-z_]{0,31}$")
    args: dict[str, Any] = Field(default_factory=dict)
    expires_at: float


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
