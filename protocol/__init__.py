"""The MQTT wire contract between Swabline stations and the central server.

Only this package builds topic strings and payloads. It imports neither ``agent`` nor ``server``;
both import it. The human-readable description lives in ``docs/protocol.md``; a test keeps the two
in step.
"""

from protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    Command,
    CommandResult,
    Heartbeat,
    PayloadError,
    Record,
    Status,
    Sync,
    decode,
    encode,
)
from protocol.topics import TOPIC_ROOT, StationTopic, TopicError, parse_station_topic, topic

__all__ = [
    "PROTOCOL_VERSION",
    "TOPIC_ROOT",
    "Ack",
    "Command",
    "CommandResult",
    "Heartbeat",
    "PayloadError",
    "Record",
    "StationTopic",
    "Status",
    "Sync",
    "TopicError",
    "decode",
    "encode",
    "parse_station_topic",
    "topic",
]
