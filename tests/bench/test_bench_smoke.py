"""The benchmarks still run: each quick path that needs no broker or network, the report built
from result files of every kind, and the process-group guard of the long runs.

Numbers are not checked here (speed goals live in BENCHMARKS.md); that the benchmarks run and
measure what they say is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bench import bench_hardware, report
from bench.common import RESULTS, run_in_group

REPO = Path(__file__).resolve().parents[2]


def test_hardware_bench_quick_path_times_scans_through_the_sampling_workflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hardware-quick.json"
    assert bench_hardware.main(["--quick", "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text())
    lat = data["terminator_to_feedback"]
    assert lat["scans"] == 50
    # Tubes open pools of 10 that close themselves: the real workflow ran, and nothing was
    # refused (the bench raises if a scan is not accepted).
    assert set(lat["signals"]) == {"pool_opened", "saved", "pool_full"}
    assert lat["signals"]["pool_opened"] == 7 and lat["signals"]["pool_full"] == 6
    assert lat["records_stored"] > 70
    assert data["decode"]["scans"] == 500 and data["decode"]["events"] > 500 * 80
    assert {k.split(" / ")[1] for k in data["camera_640x480"]} == {
        "empty (uniform grey)",
        "noise",
        "CCCD QR code",
    }
    printed = capsys.readouterr().out
    assert "Enter event -> feedback call, 50 scans" in printed
    # The report turns the file into the BENCHMARKS.md table.
    table = "\n".join(report.section_hardware(report.load("hardware", True, tmp_path)))
    assert "**Quick (development) sizes.**" in table
    assert "50 scans through SamplingWorkflow" in table


def test_hardware_bench_types_what_a_keyboard_mode_scanner_can_type() -> None:
    assert bench_hardware.ascii_fold("Đặng Thị Nữ") == "Dang Thi Nu"
    scans = bench_hardware.sampling_scans(23, bench_hardware.CodeRules.build(["BENCH-\\d{6}"]))
    assert [s for s in scans if s.startswith("BENCH-")] == [
        "BENCH-000001",
        "BENCH-000002",
        "BENCH-000003",
    ]
    assert all(s.isascii() for s in scans) and len(set(scans)) == 23


def test_lookup_bench_quick_sizes_on_sqlite(tmp_path: Path) -> None:
    from bench import bench_lookup

    out = tmp_path / "lookup.json"
    args = ["--db", "sqlite", "--persons", "20", "--samples", "40", "--requests", "3"]
    assert bench_lookup.main([*args, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["db"] == "sqlite" and result["report_month"]["samples_counted"] == 40
    assert all(case["p50_ms"] > 0 for case in result["lookup"].values())


def _summary(**changes: Any) -> dict[str, Any]:
    """A ``swabline simulate`` summary as the checked-in single runs hold it."""
    data = json.loads((RESULTS / "storm-1000x200.json").read_text())
    summary: dict[str, Any] = data["summary"]
    summary.update(changes)
    return summary


def _fleet_result() -> dict[str, Any]:
    page = {"n": 900, "p50_ms": 40.0, "p95_ms": 120.0, "p99_ms": 200.0, "max_ms": 290.0}
    probe = {"n": 44, "missed": 0, "median_s": 0.4, "max_s": 0.9}
    return {
        "name": "fleet-2000-1800s",
        "date": "2026-12-05T10:00:00+00:00",
        "command": "python -m bench.bench_fleet --duration-s 1800",
        "machine": json.loads((RESULTS / "scale-quick.json").read_text())["machine"],
        "stations": 2000,
        "heartbeat_s": 10.0,
        "scans_per_hour_per_station": 60.0,
        "duration_s": 1800,
        "warmup_s": 30.0,
        "database": "sqlite",
        "ingest_workers": 1,
        "pages": {"/ops": page | {"bytes": 1}, "/api/ops/fleet": page | {"bytes": 1}},
        "status_change": {
            "death_to_offline": probe,
            "birth_to_online": probe,
            "silence_to_stale": probe | {"median_s": 20.1, "max_s": 21.0},
            "fleet_page_refresh_s": 2.0,
            "stale_on_page_within_s": 18.0,
            "two_heartbeat_intervals_s": 20.0,
        },
        "memory_mb": {
            "server": {
                "first": 116.0,
                "last": 160.0,
                "peak": 162.0,
                "slope_mb_per_min": 1.0,
                "slope_second_half_mb_per_min": 0.01,
                "samples": [[0, 116.0]],
            },
        },
    }


def test_report_reads_every_kind_of_result_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name in ("scale-quick", "rates-quick", "workers-quick", "storm-quick"):
        shutil.copy(RESULTS / f"{name}.json", results)
    # What the lead's full-size runs write: a bare `simulate --json` file, a wrapped single
    # run, and a 30-minute fleet run (the shorter one must not be the one reported).
    bare = _summary(stations=5000, backlog_per_station=200, sent=1_000_000)
    (results / "storm-5000x200.json").write_text(json.dumps(bare))
    wrapped = {"name": "stations-10000", "note": "ten thousand", "summary": _summary()}
    (results / "stations-10000.json").write_text(json.dumps(wrapped))
    (results / "fleet-2000-1800s.json").write_text(json.dumps(_fleet_result()))
    short = _fleet_result() | {"duration_s": 120, "command": "short run"}
    (results / "fleet-2000-120s.json").write_text(json.dumps(short))
    (results / "notes.json").write_text(json.dumps({"something": "else"}))

    loaded = {name: report.load(name, False, results) for name in report.NAMES}
    singles = report.load_singles(results)
    assert [s["_file"] for s in singles] == ["stations-10000.json", "storm-5000x200.json"]
    fleet = report.load_fleet(results)
    assert fleet is not None and fleet["_file"] == "fleet-2000-1800s.json"

    bodies = report.render(loaded, singles, None, fleet)
    singles_text = "\n".join(bodies["singles"])
    assert "| `storm-5000x200.json` |" in singles_text and "| 5,000 |" in singles_text
    (row,) = [line for line in singles_text.splitlines() if line.startswith("| `storm-5000")]
    assert "| not recorded |" in row  # a bare simulate JSON names no machine
    assert "ten thousand" in singles_text
    fleet_text = "\n".join(bodies["fleet"])
    assert "python -m bench.bench_fleet --duration-s 1800" in fleet_text
    assert "< 300 ms: met" in fleet_text and "run shorter than 30 minutes" not in fleet_text
    assert "| hung station → stale on an open fleet page, at most | 18 s" in fleet_text
    assert "| killed station → offline on an open fleet page, at most | 2.9 s" in fleet_text
    assert "No results yet: run `python -m bench.bench_hardware`" in bodies["hardware"][0]
    assert "**Quick (development) sizes.**" in bodies["storm"][0]

    doc = tmp_path / "BENCHMARKS.md"
    shutil.copy(REPO / "BENCHMARKS.md", doc)
    report.update_markdown(bodies, doc)
    assert "| `storm-5000x200.json` |" in doc.read_text()

    pngs = {p.name for p in report.plots(loaded, singles, tmp_path)}
    assert {"stations.png", "storm.png", "storm-5000x200.png", "stations-10000.png"} <= pngs


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (waiting a little for init to reap it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return True
        if state == "Z":  # ended, not yet reaped
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("trap", ["", "trap '' TERM; "], ids=["polite", "ignores-sigterm"])
def test_a_run_past_its_time_limit_takes_everything_it_started_with_it(
    tmp_path: Path, trap: str
) -> None:
    """As ``simulate --spawn`` starts Mosquitto and a server: the child starts a grandchild."""
    pid_file = tmp_path / "grandchild.pid"
    script = f"{trap}sleep 600 & echo $! > {pid_file}; wait"
    with pytest.raises(TimeoutError, match="did not finish within"):
        run_in_group(["sh", "-c", script], timeout_s=5, grace_s=1)
    assert _gone(int(pid_file.read_text()))


def test_a_run_that_ends_leaves_nothing_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 600 & echo $! > {pid_file}; echo done"
    code, out, _err = run_in_group(["sh", "-c", script], timeout_s=60, grace_s=1)
    assert (code, out) == (0, "done\n")
    assert _gone(int(pid_file.read_text()))


def test_the_fleet_section_shows_where_the_server_memory_went(tmp_path: Path) -> None:
    fleet = _fleet_result()
    fleet["_file"] = "fleet-2000-2400s.json"
    fleet["memory_trace"] = [
        {
            "t_s": 60.0 * n,
            "rss_mb": 180.0 + n,
            "rss_anon_mb": 150.0,
            "rss_file_mb": 30.0,
            "malloc_in_use_mb": 90.0 + n,
            "malloc_free_mb": 20.0,
            "sqlite_mb": 10.0 + n,
            "python_objects": 400_000 + n,
        }
        for n in range(41)
    ]
    fleet["memory_trace"][-1]["top_growth"] = [
        {"where": "server/ops/fleet.py:120", "kb": 2048.0, "blocks": 3000}
    ]
    png = report.fleet_plot(fleet, tmp_path)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = "\n".join(report.section_fleet(fleet))
    assert "a sample every 60 s" in text
    assert "| 0 min | 180.0 MB | 90.0 MB | 20.0 MB | 10.0 MB | 400,000 |" in text
    assert "| 40 min | 220.0 MB | 130.0 MB | 20.0 MB | 50.0 MB | 400,040 |" in text
    assert "- +2,048 kB in +3,000 blocks: `server/ops/fleet.py:120`" in text
    assert "![server memory over the run](bench/results/fleet-memory.png)" in text
