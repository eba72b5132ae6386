"""The self-test's checks, with fakes for everything but the outbox and the files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import StationConfig, parse_config
from agent.fakes import FakeClock, FakeScanSource, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Disconnected, Signal, UplinkSink
from agent.selftest import BrokerCheckError, Check, DiskUsage, SelfTest, verdict
from protocol import Heartbeat, Record
from protocol.cards import SELFTEST_CARD

GB = 2**30


class AckingUplink(FakeUplink):
    """Connects, and the 'server' acknowledges every record at once."""

    def publish_record(self, record: Record) -> None:
        super().publish_record(record)
        self.ack([record.record_id])


class RefusedUplink(FakeUplink):
    def start(self, sink: UplinkSink) -> None:
        sink(Disconnected(reason="Not authorized"))


class Broker:
    """The broker's side of the round trip: takes the heartbeat, or refuses with a reason."""

    def __init__(self, refusal: str | None = None) -> None:
        self.refusal = refusal
        self.heartbeats: list[Heartbeat] = []

    def __call__(self, heartbeat: Heartbeat) -> None:
        if self.refusal:
            raise BrokerCheckError(self.refusal)
        self.heartbeats.append(heartbeat)


def config(tmp_path: Path, capacity: int = 100) -> StationConfig:
    return parse_config(
        'station_id = "st-1"\n[mqtt]\nhost = "mqtt.example.org"\nport = 8883\n'
        f'[scanner]\ntype = "stdin"\n[outbox]\npath = "{tmp_path / "outbox"}"\n'
        f"capacity = {capacity}\n"
    )


def selftest(
    tmp_path: Path,
    outbox: TinyDbOutbox,
    *,
    codes: list[str] | None = None,
    synced: bool = True,
    free: int = 20 * GB,
    uplink: FakeUplink | None = None,
    capacity: int = 100,
    broker: Broker | None = None,
    card_timeout_s: float = 30,
) -> tuple[list[Check], RecordingFeedback, list[str], FakeUplink]:
    feedback, lines = RecordingFeedback(), []
    up = uplink or AckingUplink()
    test = SelfTest(
        config=config(tmp_path, capacity),
        feedback=feedback,
        sources=[FakeScanSource([SELFTEST_CARD] if codes is None else codes)],
        clock=FakeClock(synced=synced),
        outbox=outbox,
        uplink=up,
        broker_round_trip=broker or Broker(),
        disk_usage=lambda _p: DiskUsage(32 * GB, 32 * GB - free, free),
        card_timeout_s=card_timeout_s,
        timeout_s=5,
        say=lines.append,
    )
    test.run()
    return test.final(), feedback, lines, up


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[TinyDbOutbox]:
    with TinyDbOutbox(tmp_path / "outbox", capacity=100) as box:
        box.learn_seq_floor(0)  # as the server's Sync would
        yield box


def marks(results: list[Check]) -> dict[str, str]:
    return {c.name: c.mark for c in results}


def test_a_healthy_station_passes_every_check_and_shows_it(
    tmp_path: Path, outbox: TinyDbOutbox
) -> None:
    broker = Broker()
    results, feedback, lines, uplink = selftest(tmp_path, outbox, broker=broker)
    assert marks(results) == {
        n: "PASS" for n in ("leds", "scanner", "clock", "disk", "outbox", "broker", "server")
    }
    assert feedback.signals == [Signal.SELF_TEST, Signal.CONFIRMED]
    # The pattern is shown, not judged; the test card scanned after it is the confirmation.
    assert lines[0].startswith("[SHOWN] leds") and "check by eye and ear" in lines[0]
    assert "if every LED lit and the buzzer sounded, scan the test card now" in lines[1]
    assert lines[2].startswith("[PASS] scanner")
    assert lines[3] == "[PASS] leds      confirmed by the technician (test card scanned)"
    assert verdict(results) == "PASS"
    # The broker took a heartbeat published as the station (a real round trip in production).
    (heartbeat,) = broker.heartbeats
    assert (heartbeat.outbox_depth, heartbeat.outbox_capacity, heartbeat.clock_synced) == (
        0,
        100,
        True,
    )
    # The test record went through the outbox with the next seq, and left it once acknowledged.
    (sent,) = uplink.published
    assert (sent.kind, sent.seq, sent.data["checks"]["scanner"]) == ("selftest", 1, True)
    assert len(outbox) == 0 and outbox.last_seq() == 1


@pytest.mark.parametrize(
    ("kwargs", "failed", "hint"),
    [
        ({"codes": ["SWABLINE>TEST>AaZz-0099>1122"]}, "scanner", "US keyboard layout"),
        ({"codes": []}, "scanner", "no scan within 30 s"),
        ({"synced": False}, "clock", "not synchronised with NTP"),
        ({"free": 100 * 2**20}, "disk", "only 100 MB free"),
        ({"broker": Broker("refused us: Not authorized")}, "broker", "refused us: Not authorized"),
        (
            {"broker": Broker("refused our heartbeat: Not authorized (the station's ACL)")},
            "broker",
            "the station's ACL",
        ),
        ({"uplink": RefusedUplink()}, "server", "the broker refused us: Not authorized"),
    ],
)
def test_each_failure_is_named_with_a_hint_and_shown(
    tmp_path: Path, outbox: TinyDbOutbox, kwargs: dict[str, object], failed: str, hint: str
) -> None:
    results, feedback, _, _ = selftest(tmp_path, outbox, **kwargs)  # type: ignore[arg-type]
    bad = [c for c in results if c.ok is False]
    assert bad[0].name == failed and hint in bad[0].detail
    if failed == "broker":
        assert [c.name for c in bad] == ["broker", "server"]
    assert feedback.signals[-1] == Signal.REJECTED
    assert verdict(results).startswith(f"FAIL ({failed}")


def test_leds_not_confirmed_by_a_scan_are_never_reported_as_passed(
    tmp_path: Path, outbox: TinyDbOutbox
) -> None:
    results, _, lines, _ = selftest(tmp_path, outbox, codes=[])  # nobody scanned the card
    assert marks(results)["leds"] == "SHOWN" and marks(results)["scanner"] == "FAIL"
    assert "Not scanned because an LED or the buzzer failed?" in lines[2]
    skipped, feedback, _, _ = selftest(tmp_path, outbox, card_timeout_s=0)
    assert marks(skipped)["leds"] == "SHOWN" and marks(skipped)["scanner"] == "SKIP"
    assert verdict(skipped) == "PASS (not confirmed, check by eye and ear: leds)"
    assert feedback.signals[-1] == Signal.CONFIRMED  # nothing failed


def test_an_unacknowledged_record_fails_the_server_check_and_stays_in_the_outbox(
    tmp_path: Path, outbox: TinyDbOutbox
) -> None:
    results, _, _, _ = selftest(tmp_path, outbox, uplink=FakeUplink())
    assert marks(results)["server"] == "FAIL"
    assert len(outbox) == 1  # delivered later by the agent, like any record


def test_a_nearly_full_outbox_fails(tmp_path: Path) -> None:
    with TinyDbOutbox(tmp_path / "outbox", capacity=10) as small:
        small.learn_seq_floor(0)  # as the server's Sync would
        uplink = FakeUplink()
        for seq in range(1, 9):
            small.append(
                Record(
                    record_id=f"01900000-0000-7000-8000-{seq:012d}",
                    station_id="st-1",
                    seq=seq,
                    boot_id="b",
                    wall_time=1.0,
                    mono_ns=1,
                    clock_synced=True,
                    kind="scan",
                    code="T",
                )
            )
        results, _, _, _ = selftest(tmp_path, small, uplink=uplink, capacity=10)
    outbox_check = next(c for c in results if c.name == "outbox")
    assert outbox_check.ok is False and "nearly full" in outbox_check.detail
