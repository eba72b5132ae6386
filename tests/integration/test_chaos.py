"""Fault injection: every scan the station signalled SAVED reaches the database exactly once.

Real Mosquitto, real server and agent processes; the faults are real too (``kill -9``, a
broker and a server killed and restarted, a network cut and stalled by a proxy, an outbox
truncated mid-write, a disk that is really full). Each scenario ends with the same check
(``check``): every record the agents logged as saved is stored centrally, once, with its seq;
no saved scan is stored twice; no station has a gap in its sequence. Faults must hit work in
progress to prove anything: (a) counts only kills that land while the agent scans, (c) kills
the whole server (every ingest worker with it) and requires records caught on their way.

Each scenario runs in two sizes: ``quick`` in ``make test`` and ``full`` (marker ``chaos``)
in ``make chaos``, which prints the tally of every scenario at the end.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from agent.journal import JOURNAL, scan_journal
from server.gaps import gap_summary
from server.models import RecordRow
from swabline.broker import Broker
from tests.integration.chaos_report import RESULTS, Tally
from tests.integration.harness import (
    AgentProc,
    Feeder,
    ServerProc,
    saved_in_log,
    small_disk,
    start_agent,
    start_server,
    wait_for,
)
from tests.integration.proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

FAST = "drain_per_s = 2000\n"
DUPLICATES_LINE = re.compile(r"(\d+) duplicate record\(s\) from ")
SENT_AGAIN_LINE = re.compile(r"sending (\d+) record\(s\) again")
REFUSED_LINE = "scan refused, nothing stored"


@dataclass(frozen=True)
class Size:
    name: str
    kill_trials: int
    broker_restarts: int
    server_restarts: int
    network_rounds: int
    torn_trials: int


QUICK = Size("quick", kill_trials=10, broker_restarts=1, server_restarts=1, network_rounds=1,
             torn_trials=4)  # fmt: skip
FULL = Size("full", kill_trials=100, broker_restarts=3, server_restarts=3, network_rounds=3,
            torn_trials=30)  # fmt: skip


@pytest.fixture(
    params=[pytest.param(QUICK, id="quick"), pytest.param(FULL, id="full", marks=pytest.mark.chaos)]
)
def size(request: pytest.FixtureRequest) -> Size:
    s: Size = request.param
    return s


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    e = create_engine(sqlite_url)
    yield e
    e.dispose()


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as c:
        return set(c.scalars(select(RecordRow.record_id)))


def check(
    scenario: str,
    size: Size,
    engine: Engine,
    agent_logs: Iterable[Path],
    server_logs: Iterable[Path],
    *,
    destroyed: frozenset[str] = frozenset(),
    server: ServerProc | None = None,
    timeout: float = 180,
) -> Tally:
    """The check every scenario ends with; records the tally for the report."""
    agent_logs = list(agent_logs)

    def read_logs() -> tuple[dict[str, int], int]:
        saved: dict[str, int] = {}
        refused = 0
        for log in agent_logs:
            saved.update(saved_in_log(log))
            refused += log.read_text(errors="replace").count(REFUSED_LINE)
        for rid in destroyed:  # the test itself tore these writes: they were never promised
            saved.pop(rid, None)
        return saved, refused

    # Agents may still be working through codes already fed: wait until what they signalled
    # stops changing and is all stored (or the time is up: then it counts as lost).
    previous: dict[str, int] | None = None

    def settled() -> bool:
        nonlocal previous
        current = read_logs()[0]
        done = current == previous and current.keys() <= stored_ids(engine)
        previous = current
        return done

    with contextlib.suppress(AssertionError):
        wait_for(settled, timeout, "every saved record", 1.0)
    saved, refused = read_logs()
    assert saved, "the scenario saved nothing: it tested nothing"
    with engine.connect() as c:
        rows = c.execute(select(RecordRow.record_id, RecordRow.seq, RecordRow.code)).all()
    seq_of = {rid: seq for rid, seq, _ in rows}
    lost = sorted(set(saved) - set(seq_of))
    codes = Counter(code for _, _, code in rows)
    duplicated = sum(n - 1 for n in codes.values() if n > 1)
    resent = sum(int(n) for log in server_logs for n in DUPLICATES_LINE.findall(log.read_text()))
    sent_again = sum(
        int(n)
        for log in agent_logs
        for n in SENT_AGAIN_LINE.findall(log.read_text(errors="replace"))
    )
    tally = Tally(
        scenario=scenario,
        size=size.name,
        saved=len(saved),
        stored=len(saved) - len(lost),
        duplicated=duplicated,
        lost=len(lost),
        refused=refused,
        resent=resent,
        sent_again=sent_again,
        unsignalled=len(set(seq_of) - set(saved) - destroyed),
    )
    RESULTS.append(tally)
    assert not lost, f"saved but not stored: {lost[:10]}"
    assert duplicated == 0, [c for c, n in codes.items() if n > 1][:10]
    assert all(seq_of[rid] == seq for rid, seq in saved.items()), "a record changed its seq"
    assert not destroyed & set(seq_of), "a torn write came back"
    with Session(engine) as s:
        assert gap_summary(s) == {}, "a station has a gap in its sequence"
    if server is not None:  # and the stations know it: their outboxes empty out
        wait_for(
            lambda: all(st["outbox_depth"] == 0 for st in server.get("/api/stations")),
            60,
            "every station to report an empty outbox",
        )
    return tally


def kill(agent: AgentProc) -> None:
    agent.proc.kill()
    agent.proc.wait()
    agent.stop()  # closes its stdin


def stop_all(agents: Iterable[AgentProc], server: ServerProc | None) -> None:
    for a in agents:
        a.stop()
    if server is not None:
        server.stop()


# -- (a) kill -9 on the agent while it scans ------------------------------------------------


def test_kill_9_on_the_agent_at_random_moments(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    """Kills the agent while codes keep coming, until ``size.kill_trials`` kills have landed
    while it scanned: codes fed before the kill that it had not yet signalled as saved."""
    rng = random.Random(1)
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agent: AgentProc | None = None
    trials = mid_scan = 0
    try:
        while mid_scan < size.kill_trials:
            assert trials < 2 * size.kill_trials, (
                f"only {mid_scan} of {trials} kills landed while the agent scanned"
            )
            # A small compaction size, so that kills also land inside compactions.
            agent = start_agent(tmp_path, broker, "st-1", extra_mqtt=FAST,
                                extra_outbox="compact_kib = 16\n")  # fmt: skip
            # Faster than the agent saves (a write waits while its stdin pipe is full), so it
            # is always in the middle of a scan; the kill comes mostly while it saves one scan
            # after the other, sometimes later, among acknowledgements, resends, compactions.
            with Feeder(f"KILL-{trials:03d}", 0.01, lambda a=agent: [a], batch=20):
                time.sleep(rng.uniform(0.05, 0.3) if trials % 3 else rng.uniform(0.3, 1.5))
                fed = len(agent.sent)
                kill(agent)
            trials += 1
            mid_scan += len(agent.saved()) < fed
        agent = start_agent(tmp_path, broker, "st-1", extra_mqtt=FAST)
        check(f"a: kill -9 agent x{trials} ({mid_scan} mid-scan)", size, engine, [agent.log],
              [server.log], server=server)  # fmt: skip
    finally:
        stop_all([agent] if agent else [], server)


# -- (b) the broker killed and restarted mid-stream -----------------------------------------


def test_broker_killed_and_restarted_mid_stream(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agents: list[AgentProc] = []
    try:
        agents = [start_agent(tmp_path, broker, f"st-{i}", extra_mqtt=FAST) for i in (1, 2)]
        with Feeder("BROKER", 0.005, lambda: agents):
            for _ in range(size.broker_restarts):
                time.sleep(1.5)
                broker.kill()
                time.sleep(2.0)  # stations keep saving while the broker is gone
                broker.start()
            time.sleep(1.5)
        check(
            f"b: broker kill -9 x{size.broker_restarts}",
            size,
            engine,
            [a.log for a in agents],
            [server.log],
            server=server,
        )
    finally:
        stop_all(agents, server)


# -- (c) the server killed mid-batch and restarted ------------------------------------------


def test_server_killed_mid_batch_and_restarted(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    """``kill -9`` on the whole server (web process and ingest workers at once) while records
    stream in. Records saved before a kill and not stored when it hit were on their way: in
    the broker, in a worker's batch, or committed by nobody. They must all arrive later,
    sent again by their station."""
    server: ServerProc | None = start_server(tmp_path / "server", broker, sqlite_url)
    agents: list[AgentProc] = []
    in_flight: set[str] = set()
    try:
        agents = [start_agent(tmp_path, broker, f"st-{i}", extra_mqtt=FAST) for i in (1, 2)]
        with Feeder("SERVER", 0.004, lambda: agents):
            for _ in range(size.server_restarts):
                time.sleep(1.5)  # batches are being committed all the time
                assert server is not None
                server.kill()
                # Saved by the moment of the kill (read after it: a record read as saved before
                # the kill may be stored by then, and a fast server leaves none behind), not
                # stored: nothing writes any more.
                saved = {rid for a in agents for rid in a.saved()}
                in_flight |= saved - stored_ids(engine)
                server = None
                time.sleep(1.5)
                server = start_server(tmp_path / "server", broker, sqlite_url)
            time.sleep(1.5)
        tally = check(
            f"c: server kill -9 x{size.server_restarts} ({len(in_flight)} in flight)",
            size,
            engine,
            [a.log for a in agents],
            [tmp_path / "server" / "server.log"],
            server=server,
        )
        # The kills hit work in progress, and what they interrupted came again.
        assert in_flight, "no saved record was on its way when the server died"
        assert tally.sent_again > 0
    finally:
        stop_all(agents, server)


# -- (d) the network cut, stalled and restored ----------------------------------------------


def test_network_cut_stalled_and_restored(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agents: list[AgentProc] = []
    with TcpProxy((broker.host, broker.port)) as proxy:
        try:
            agent = start_agent(tmp_path, broker, "st-1", port=proxy.port,
                                extra_mqtt=FAST + "keepalive_s = 5\n")  # fmt: skip
            agents.append(agent)
            with Feeder("NET", 0.02, lambda: agents):
                for _ in range(size.network_rounds):
                    time.sleep(1.0)
                    proxy.cut()  # the cable is pulled
                    time.sleep(2.0)
                    proxy.restore()
                    time.sleep(1.5)
                    proxy.stall()  # packets vanish: only the keepalive notices
                    time.sleep(14.0)
                    proxy.restore()
                    time.sleep(1.5)
                    proxy.stall()  # a short hiccup, shorter than the keepalive
                    time.sleep(1.0)
                    proxy.restore()
                time.sleep(1.0)
            check(f"d: network cut + stalls x{size.network_rounds}", size, engine,
                  [agent.log], [server.log], server=server)  # fmt: skip
            assert proxy.accepted > 1 + 2 * size.network_rounds  # it did reconnect each time
        finally:
            stop_all(agents, server)


# -- (e) the outbox torn by a crash in the middle of a write -------------------------------


def records_in(entry: dict[str, object] | None) -> set[str]:
    """Record ids a journal line stores."""
    if entry is None:
        return set()
    ops = entry["ops"]
    assert isinstance(ops, list)
    return {
        str(op[3]["record_id"])
        for op in ops
        if op[0] == "s" and str(op[1]).startswith("records.") and "record_id" in op[3]
    }


def tear(outbox: Path, rng: random.Random, anywhere_after: int | None) -> set[str]:
    """Truncate the journal as a crash mid-write would; returns the records it destroyed.

    Cuts inside the last line (a torn last write), or, with ``anywhere_after``, at any offset
    past it (the writes of a session lost from some point on).
    """
    journal = outbox / JOURNAL
    data = journal.read_bytes()
    lines = list(scan_journal(data))
    if not lines:  # just compacted: a snapshot was being written when the power went
        table = next(outbox.glob("t-records.*.json"))
        torn = table.read_bytes()
        (outbox / f".{table.name}.tmp").write_bytes(torn[: rng.randrange(len(torn))])
        return set()
    if anywhere_after is not None and anywhere_after < len(data):
        cut = rng.randrange(anywhere_after, len(data) + 1)
    else:
        cut = rng.randrange(lines[-1].start, lines[-1].end)  # inside the last line
    journal.write_bytes(data[:cut])
    return {rid for line in lines if line.end > cut for rid in records_in(line.entry)}


def test_outbox_torn_by_a_crash_mid_write(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    rng = random.Random(5)
    server = start_server(tmp_path / "server", broker, sqlite_url)
    destroyed: set[str] = set()
    agent: AgentProc | None = None
    with TcpProxy((broker.host, broker.port)) as proxy:
        try:
            agent = start_agent(tmp_path, broker, "st-1", port=proxy.port, extra_mqtt=FAST)
            proxy.cut()  # offline: everything stays in the outbox
            for trial in range(size.torn_trials):
                if trial:
                    agent = start_agent(tmp_path, broker, "st-1", port=proxy.port,
                                        extra_mqtt=FAST)  # fmt: skip
                before = (agent.outbox / JOURNAL).stat().st_size
                agent.feed([f"TORN-{trial:03d}-{i:02d}" for i in range(20)])
                wait_for(lambda a=agent: len(a.saved()) == 20, 30, "20 scans saved")
                kill(agent)
                # A torn last write; in the full run also cuts anywhere in this session's writes.
                anywhere = before if size is FULL and trial % 2 == 1 else None
                destroyed |= tear(agent.outbox, rng, anywhere)
            proxy.restore()
            agent = start_agent(tmp_path, broker, "st-1", port=proxy.port, extra_mqtt=FAST)
            check(f"e: torn outbox x{size.torn_trials}", size, engine, [agent.log],
                  [server.log], destroyed=frozenset(destroyed), server=server)  # fmt: skip
        finally:
            stop_all([agent] if agent else [], server)


# -- (f) the disk full ------------------------------------------------------------------


def test_disk_full_refuses_scans_with_a_signal_and_recovers(
    tmp_path: Path, broker: Broker, sqlite_url: str, engine: Engine, size: Size
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agent: AgentProc | None = None
    with (
        TcpProxy((broker.host, broker.port)) as proxy,
        small_disk(tmp_path / "disk", 768 if size is QUICK else 2048) as disk,
    ):
        try:
            # A compaction size of 64 KiB (so a space reserve of 256 KiB) on this tiny disk.
            agent = start_agent(
                tmp_path,
                broker,
                "st-1",
                port=proxy.port,
                extra_mqtt=FAST,
                outbox=disk / "outbox",
                extra_outbox="compact_kib = 64\n",
            )
            proxy.cut()  # offline, so the outbox fills the disk
            batch = 0

            def fed_and_refused() -> bool:
                nonlocal batch
                assert agent is not None
                text = agent.log_text()
                if REFUSED_LINE in text:
                    return True
                if text.count("saved record") >= batch * 200:
                    agent.feed([f"FULL-{batch:03d}-{i:03d}" for i in range(200)])
                    batch += 1
                return False

            wait_for(fed_and_refused, 120, "the disk to fill up")
            assert "signal storage_full" in agent.log_text()
            saved_when_full = len(agent.saved())
            agent.feed([f"MORE-{i:03d}" for i in range(20)])
            wait_for(lambda: agent.log_text().count(REFUSED_LINE) >= 20, 30, "refusals")
            assert len(agent.saved()) == saved_when_full  # refused, not pretended saved
            # The network comes back: everything is delivered, and room comes back with it.
            connections = agent.log_text().count("connected to")
            proxy.restore()
            wait_for(lambda: agent.log_text().count("connected to") > connections, 30, "online")

            def accepts_again() -> bool:
                assert agent is not None
                agent.feed([f"AFTER-{time.monotonic_ns()}"])
                time.sleep(0.5)
                return len(agent.saved()) > saved_when_full

            wait_for(accepts_again, 120, "the station to accept scans again", interval=1.0)
            tally = check("f: disk full", size, engine, [agent.log], [server.log], server=server)
            assert tally.refused >= 20
            assert tally.unsignalled == 0
        finally:
            stop_all([agent] if agent else [], server)
