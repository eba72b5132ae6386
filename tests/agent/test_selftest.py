"""The self-test's checks, with fakes for everything but the outbox and the files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import StationConfig, parse_config
from agent.fakes import FakeClock, FakeScanSource, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Disconnected, Signal, UplinkSink
from agent.selftest import Check, DiskUsage, SelfTest
from protocol import Record
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


def config(tmp_path: Path, capacity: int = 100) -> StationConfig:
    return parse_config(
        'station_id = "st-1"\n[mqtt]\nhost = "mqtt.example.org"\nport = 8883\n'
        f'[scanner]\ntype = "stdin"\n[outbox]\npath = "{tmp_path / "outbox.json"}"\n'
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
) -> tuple[list[Check], RecordingFeedback, list[str], FakeUplink]:
    feedback, lines = RecordingFeedback(), []
    up = uplink or AckingUplink()
    results = SelfTest(
        config=config(tmp_path, capacity),
        feedback=feedback,
        sources=[FakeScanSource([SELFTEST_CARD] if codes is None else codes)],
        clock=FakeClock(synced=synced),
        outbox=outbox,
        uplink=up,
        broker_probe=lambda host, port, ca: None,
        disk_usage=lambda _p: DiskUsage(32 * GB, 32 * GB - free, free),
        card_timeout_s=30,
        timeout_s=5,
        say=lines.append,
    ).run()
    return results, feedback, lines, up


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[TinyDbOutbox]:
    with TinyDbOutbox(tmp_path / "outbox.json", capacity=100) as box:
        box.learn_seq_floor(0)  # as the server's Sync would
        yield box


def marks(results: list[Check]) -> dict[str, str]:
    return {c.name: c.mark for c in results}


def test_a_healthy_station_passes_every_check_and_shows_it(
    tmp_path: Path, outbox: TinyDbOutbox
) -> None:
    results, feedback, lines, uplink = selftest(tmp_path, outbox)
    assert marks(results) == {
        n: "PASS" for n in ("leds", "scanner", "clock", "disk", "outbox", "broker", "server")
    }
    assert feedback.signals == [Signal.SELF_TEST, Signal.CONFIRMED]
    assert lines[0].startswith("[PASS] leds")
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
        ({"uplink": RefusedUplink()}, "broker", "refused us: Not authorized"),
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


def test_an_unacknowledged_record_fails_the_server_check_and_stays_in_the_outbox(
    tmp_path: Path, outbox: TinyDbOutbox
) -> None:
    results, _, _, _ = selftest(tmp_path, outbox, uplink=FakeUplink())
    assert marks(results)["server"] == "FAIL"
    assert len(outbox) == 1  # delivered later by the agent, like any record


def test_a_nearly_full_outbox_fails(tmp_path: Path) -> None:
    with TinyDbOutbox(tmp_path / "outbox.json", capacity=10) as small:
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
