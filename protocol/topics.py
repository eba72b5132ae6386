"""Topic tree of the Swabline MQTT contract.

Every topic a station uses sits under ``swabline/v1/stations/<station_id>/``; the broker's ACLs
bind that segment to the station's authenticated username, so a station can neither speak for
another station nor read another station's acknowledgements or commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TOPIC_ROOT = "swabline/v1/stations"

STATION_ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_STATION_ID = re.compile(STATION_ID_PATTERN)


class StationTopic(StrEnum):
    """The last segment of a station topic, and who publishes on it."""

    RECORDS = "records"
    """Station -> server. One ``Record`` per message, QoS 1."""
    ACKS = "acks"
    """Server -> station. ``Ack`` after the records are committed, QoS 1."""
    STATUS = "status"
    """Station -> server. Birth and death (``Status``), retained, QoS 1. The will is a death."""
    HEARTBEAT = "heartbeat"
    """Station -> server. ``Heartbeat``, QoS 0."""
    COMMANDS = "commands"
    """Server -> station. ``Command``, QoS 1."""
    COMMAND_RESULTS = "command_results"
    """Station -> server. ``CommandResult``, QoS 1."""
    SYNC = "sync"
    """Server -> station. ``Sync`` after each birth (the highest seq the server holds), QoS 1."""


STATION_PUBLISHES = (
    StationTopic.RECORDS,
    StationTopic.STATUS,
    StationTopic.HEARTBEAT,
    StationTopic.COMMAND_RESULTS,
)
"""What a station may publish, each on its own topic only (the broker's ACLs enforce it)."""
STATION_RECEIVES = (StationTopic.ACKS, StationTopic.COMMANDS, StationTopic.SYNC)
"""What a station may subscribe to and receive, on its own topics only."""


class TopicError(ValueError):
    """A topic is not part of the contract, or a station id is malformed."""


def check_station_id(station_id: str) -> str:
    """Return ``station_id`` if it is a valid station id, else raise ``TopicError``."""
    if not _STATION_ID.fullmatch(station_id):
        raise TopicError(
            f"invalid station id {station_id!r}: lower-case letters, digits and '-', 1-63 chars"
        )
    return station_id


def topic(station_id: str, kind: StationTopic) -> str:
    """Build the topic on which ``station_id`` publishes or receives ``kind``."""
    return f"{TOPIC_ROOT}/{check_station_id(station_id)}/{kind.value}"


def subscription(kind: StationTopic, *, shared_group: str | None = None) -> str:
    """Topic filter matching ``kind`` for every station, optionally as an MQTT 5 shared group."""
    base = f"{TOPIC_ROOT}/+/{kind.value}"
    return f"$share/{shared_group}/{base}" if shared_group else base


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    station_id: str
    kind: StationTopic


def parse_station_topic(name: str) -> ParsedTopic:
    """Split a concrete station topic into station id and kind; ``TopicError`` if it is not one."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise TopicError(f"topic {name!r} is outside {TOPIC_ROOT}/")
    parts = name[len(prefix) :].split("/")
    if len(parts) != 2:
        raise TopicError(f"topic {name!r} does not have the form {TOPIC_ROOT}/<station>/<kind>")
    station_id, kind = parts
    check_station_id(station_id)
    try:
        return ParsedTopic(station_id, StationTopic(kind))
    except ValueError:
        raise TopicError(f"unknown topic kind {kind!r} in {name!r}") from None
