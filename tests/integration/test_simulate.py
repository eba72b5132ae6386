"""``swabline simulate`` end to end: real Mosquitto, real server, the database checked directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from server.models import RecordRow
from swabline.broker import Broker
from tests.integration.harness import REPO, _env, start_server

pytestmark = pytest.mark.integration


def simulate(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "swabline",
            "--log-level",
            "WARNING",
            "simulate",
            "--spawn",
            "--workdir",
            str(tmp_path / "run"),
            "--json",
            str(out),
            "--no-progress",
            *args,
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def assert_exactly_once(db_url: str, summary: dict[str, Any], stations: int) -> None:
    """Every record every station made is in the database once, with no gap in any station.

    ``stations``: how many stations made records (a station idle between queues made none).
    """
    engine = create_engine(db_url)
    with engine.connect() as c:
        rows = c.execute(select(RecordRow.station_id, RecordRow.seq, RecordRow.record_id)).all()
        per_station: dict[str, int] = {
            sid: n
            for sid, n in c.execute(
                select(RecordRow.station_id, func.count()).group_by(RecordRow.station_id)
            )
        }
    engine.dispose()
    assert len(rows) == summary["sent"] == summary["acknowledged"]
    assert len({r.record_id for r in rows}) == len(rows)
    assert len(per_station) == stations
    for sid, count in per_station.items():
        seqs = sorted(seq for s, seq, _ in rows if s == sid)
        assert seqs == list(range(1, count + 1)), sid
    assert summary["database"]["lost"] == 0
    assert summary["database"]["stored"] == summary["sent"]
    assert summary["unacknowledged"] == 0


def test_reconnect_storm_200_stations_with_20_records_waiting_land_exactly_once(
    tmp_path: Path, db_url: str
) -> None:
    summary = simulate(tmp_path, "--stations", "200", "--backlog", "20", "--database-url", db_url)
    assert summary["sent"] == 200 * 20
    assert summary["connects"] == 200
    assert summary["drained"]
    assert_exactly_once(db_url, summary, 200)


def test_disconnections_and_a_storm_mid_run_lose_and_duplicate_nothing(
    tmp_path: Path, sqlite_url: str
) -> None:
    summary = simulate(
        tmp_path,
        "--stations",
        "40",
        "--rate",
        "200",
        "--duration",
        "8",
        "--drops-per-hour",
        "900",
        "--outage",
        "1",
        "--storm-at",
        "3",
        "--storm-outage",
        "2",
        "--storm-fraction",
        "0.5",
        "--resend-after-s",
        "2",
        "--database-url",
        sqlite_url,
    )
    assert summary["drops"] > 20  # the storm alone cuts 20 stations
    assert summary["connects"] > 40
    assert set(summary["kinds"]) >= {"tube_opened", "person_added", "pool_closed", "setting"}
    assert 10 < summary["stations_scanned"] <= 40
    assert_exactly_once(sqlite_url, summary, summary["stations_scanned"])


def test_simulate_aims_at_a_running_broker_and_server_with_each_station_s_credentials(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    try:
        creds = tmp_path / "stations.txt"
        creds.write_text(
            "# station password\n"
            + "".join(f"st-{i} {broker.users[f'st-{i}']}\n" for i in range(1, 9))
        )
        out = tmp_path / "summary.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "swabline",
                "--log-level",
                "WARNING",
                "simulate",
                "--broker",
                f"{broker.host}:{broker.port}",
                "--credentials",
                str(creds),
                "--stations",
                "8",
                "--backlog",
                "30",
                "--database-url",
                sqlite_url,
                "--json",
                str(out),
                "--no-progress",
            ],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.stop()
    summary = json.loads(out.read_text())
    assert summary["target"]["spawned"] is False
    assert summary["sent"] == 8 * 30
    assert_exactly_once(sqlite_url, summary, 8)


def test_a_station_with_a_wrong_password_is_refused_and_the_run_says_so(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    creds = tmp_path / "stations.txt"
    creds.write_text(f"st-1 {broker.users['st-1']}\nst-2 not-its-password\n")
    server = start_server(tmp_path / "server", broker, sqlite_url)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "swabline",
                "--log-level",
                "ERROR",
                "simulate",
                "--broker",
                f"{broker.host}:{broker.port}",
                "--credentials",
                str(creds),
                "--stations",
                "2",
                "--backlog",
                "5",
                "--drain-timeout",
                "5",
                "--database-url",
                sqlite_url,
                "--json",
                str(tmp_path / "s.json"),
                "--no-progress",
            ],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert proc.returncode == 1  # not everything was acknowledged
    assert summary["acknowledged"] == 5 and summary["unacknowledged"] == 5
    assert summary["database"]["lost"] == 0 and summary["database"]["not_landed"] == 5
