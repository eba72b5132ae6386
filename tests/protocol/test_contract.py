"""The wire contract: topics, payloads, and the documentation that describes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from protocol import (
    PROTOCOL_VERSION,
    Ack,
    Heartbeat,
    PayloadError,
    Record,
    StationTopic,
    Status,
    TopicError,
    decode,
    encode,
    parse_station_topic,
    topic,
)
from protocol.events import DATA_MODELS
from protocol.topics import subscription

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()

RECORD = {
    "v": 1,
    "record_id": "0192f0a0-0000-7000-8000-000000000001",
    "station_id": "hn-01",
    "seq": 1,
    "boot_id": "b",
    "wall_time": 1.5,
    "mono_ns": 7,
    "clock_synced": True,
    "kind": "scan",
    "code": "KG-RG-000123",
}


def test_topics_round_trip_for_every_kind() -> None:
    for kind in StationTopic:
        name = topic("hn-01", kind)
        assert name == f"swabline/v1/stations/hn-01/{kind.value}"
        parsed = parse_station_topic(name)
        assert (parsed.station_id, parsed.kind) == ("hn-01", kind)


@pytest.mark.parametrize("station_id", ["", "HN-01", "hn/01", "+", "#", "-lead", "a" * 64, "hn 1"])
def test_malformed_station_ids_are_refused(station_id: str) -> None:
    with pytest.raises(TopicError):
        topic(station_id, StationTopic.RECORDS)


@pytest.mark.parametrize(
    "name",
    [
        "other/v1/stations/hn-01/records",
        "swabline/v1/stations/hn-01",
        "swabline/v1/stations/hn-01/records/extra",
        "swabline/v1/stations/hn-01/unknown",
        "swabline/v1/stations/HN/records",
    ],
)
def test_topics_outside_the_contract_are_refused(name: str) -> None:
    with pytest.raises(TopicError):
        parse_station_topic(name)


def test_shared_subscription_filter() -> None:
    assert (
        subscription(StationTopic.RECORDS, shared_group="g")
        == "$share/g/swabline/v1/stations/+/records"
    )


def test_record_round_trips_through_the_wire_form() -> None:
    record = decode(Record, json.dumps(RECORD).encode())
    assert decode(Record, encode(record)) == record
    assert json.loads(encode(record))["v"] == PROTOCOL_VERSION


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (json.dumps({**RECORD, "v": 2}).encode(), "unsupported protocol version"),
        (json.dumps({k: v for k, v in RECORD.items() if k != "v"}).encode(), "version"),
        (json.dumps({k: v for k, v in RECORD.items() if k != "seq"}).encode(), "seq"),
        (json.dumps({**RECORD, "seq": 0}).encode(), "seq"),
        (json.dumps({**RECORD, "record_id": "42"}).encode(), "record_id"),
        (json.dumps({**RECORD, "station_id": "Bad/Id"}).encode(), "station_id"),
        (json.dumps({**RECORD, "surprise": 1}).encode(), "surprise"),
        (json.dumps({**RECORD, "code": "x" * 5000}).encode(), "code"),
        (b"[" * 70_000, "exceeds"),
    ],
)
def test_invalid_records_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode(Record, payload)
    assert reason in err.value.reason


def test_ack_status_heartbeat_validate() -> None:
    ack = Ack(record_ids=[RECORD["record_id"]])  # type: ignore[list-item]
    assert decode(Ack, encode(ack)) == ack
    with pytest.raises(PayloadError):
        decode(Ack, b'{"v":1,"record_ids":[]}')
    with pytest.raises(PayloadError):
        decode(Status, b'{"v":1,"state":"sleeping","bd_seq":1,"time":1}')
    hb = decode(Heartbeat, b'{"v":1,"time":1,"uptime_s":2,"outbox_depth":3,"cpu_temp_c":51}')
    assert hb.outbox_depth == 3


def _doc_fields(heading: str) -> set[str]:
    part = DOC.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", part, flags=re.M))


@pytest.mark.parametrize(
    ("heading", "model"),
    [("Record", Record), ("Ack", Ack), ("Status", Status), ("Heartbeat", Heartbeat)],
)
def test_docs_describe_every_field(heading: str, model: type[Record]) -> None:
    assert _doc_fields(heading) == set(model.model_fields)


def test_docs_describe_every_topic_and_record_kind() -> None:
    for kind in StationTopic:
        assert f"`swabline/v1/stations/<station_id>/{kind.value}`" in DOC
    for kind in DATA_MODELS:
        assert f"`{kind}`" in DOC


def test_the_by_hand_example_in_the_docs_is_a_valid_record() -> None:
    example = re.search(r"-m '(\{.*\})'", DOC)
    assert example is not None
    record = decode(Record, example.group(1).encode())
    assert record.station_id == "manual-1"
