"""The server processes' memory: free heap handed back to the system, and the memory trace (the
readings move with what the process really holds, the growing source line is named under
tracemalloc, the server's background threads write the trace when the environment asks)."""

from __future__ import annotations

import json
import sqlite3
import threading
import tracemalloc
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from server.memory import (
    ENV_INTERVAL,
    ENV_PATH,
    MemoryTrace,
    _proc_status,
    from_environment,
    release_free_heap,
)


def test_sqlite_page_caches_and_heap_growth_show_in_the_readings(tmp_path: Path) -> None:
    trace = MemoryTrace(tmp_path / "t.jsonl")
    before = trace.sample()
    conn = sqlite3.connect(tmp_path / "big.db")
    conn.execute("PRAGMA cache_size = -20000")  # 20 MB of page cache for this connection
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.executemany("INSERT INTO t VALUES (?)", ((b"x" * 1000,) for _ in range(12_000)))
    conn.commit()
    conn.execute("SELECT count(*) FROM t WHERE length(x) > 0").fetchone()
    held = [[bytearray(1024)] for _ in range(20_000)]  # 20 MB in 20,000 tracked containers
    after = trace.sample()
    try:
        assert before["sqlite_mb"] is not None and after["sqlite_mb"] is not None
        assert after["sqlite_mb"] - before["sqlite_mb"] > 8  # 12 MB of table, in the cache
        assert after["malloc_in_use_mb"] - before["malloc_in_use_mb"] > 25  # cache + objects
        assert after["rss_mb"] - before["rss_mb"] > 25
        assert after["python_objects"] >= before["python_objects"] + 15_000
        assert after["t_s"] >= before["t_s"]
    finally:
        conn.close()
        del held
    closed = trace.sample()
    assert closed["sqlite_mb"] < after["sqlite_mb"] - 8  # the cache goes with its connection


def _grow(into: list[bytes]) -> None:
    into.extend(b"%06d" % n * 100 for n in range(20_000))  # the line that grows


def test_under_tracemalloc_the_line_that_grew_is_named(tmp_path: Path) -> None:
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        trace = MemoryTrace(tmp_path / "t.jsonl")
        trace.sample()  # start-up: not the baseline
        first = trace.sample()
        assert "top_growth" not in first  # the second sample is the baseline
        kept: list[bytes] = []
        _grow(kept)
        second = trace.sample()
    finally:
        if started_here:
            tracemalloc.stop()
    assert second["traced_mb"] > first["traced_mb"] + 10
    assert second["tracemalloc_own_mb"] > first["tracemalloc_own_mb"]  # 20,000 more traces
    top = second["top_growth"][0]
    assert top["where"].startswith(__file__) and top["kb"] > 10_000
    assert top["blocks"] >= 20_000


def test_the_environment_turns_the_trace_on_and_sets_its_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_PATH, raising=False)
    assert from_environment() is None
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "trace.jsonl"))
    monkeypatch.setenv(ENV_INTERVAL, "0.25")
    trace = from_environment()
    assert trace is not None
    assert trace.path == tmp_path / "trace.jsonl" and trace.interval_s == 0.25
    worker = from_environment("ingest-1")  # an ingest worker's file, beside the server's
    assert worker is not None and worker.path == tmp_path / "trace-ingest-1.jsonl"


def test_the_server_background_writes_a_sample_per_interval_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.background import start_background
    from server.config import ServerConfig
    from server.db import make_engine, migrate
    from server.results import ResultsContext
    from server.signing import SlipSigner

    path = tmp_path / "diag" / "trace.jsonl"
    monkeypatch.setenv(ENV_PATH, str(path))
    monkeypatch.setenv(ENV_INTERVAL, "0.1")
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    ctx = ResultsContext(
        signer=SlipSigner(b"s" * 32), tz=ZoneInfo("Asia/Ho_Chi_Minh"), base_url="https://kq.vn"
    )
    background = start_background(
        engine, ServerConfig.model_validate({"reports": {"schedule": False}}), ctx
    )
    try:
        assert "memory-trace" in [t.name for t in background.threads]
        done = threading.Event()
        for _ in range(100):
            if path.exists() and len(path.read_text().splitlines()) >= 3:
                done.set()
                break
            background.stop.wait(0.1)
    finally:
        background.close()
        engine.dispose()
    assert done.is_set(), "the trace did not write three samples"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["rss_mb"] > 10 and r["sqlite_mb"] is not None for r in rows)
    assert [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)


def test_free_heap_between_live_blocks_goes_back_to_the_system() -> None:
    """What a busy server leaves behind: blocks freed between blocks still in use, which glibc
    keeps (resident) until trimmed."""
    blocks = [bytes(20_000) + bytes([n % 256]) for n in range(10_000)]  # 200 MB
    del blocks[::2]  # 100 MB freed in 20 kB holes between live blocks
    before = _proc_status()["RssAnon"]
    assert release_free_heap() is True
    after = _proc_status()["RssAnon"]
    assert before - after > 50, (before, after)
    assert len(blocks) == 5_000


def test_the_server_trims_its_heap_unless_configured_not_to(tmp_path: Path) -> None:
    from server.background import start_background
    from server.config import ServerConfig
    from server.db import make_engine, migrate
    from server.results import ResultsContext
    from server.signing import SlipSigner

    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine)
    ctx = ResultsContext(
        signer=SlipSigner(b"s" * 32), tz=ZoneInfo("Asia/Ho_Chi_Minh"), base_url="https://kq.vn"
    )
    names = {}
    for trim_s in (60, 0):
        config = ServerConfig.model_validate(
            {"reports": {"schedule": False}, "memory": {"trim_s": trim_s}}
        )
        background = start_background(engine, config, ctx)
        names[trim_s] = {t.name for t in background.threads if t.is_alive()}
        background.close()
    engine.dispose()
    assert "heap-trim" in names[60]
    assert "heap-trim" not in names[0] and "housekeeping" in names[0]
