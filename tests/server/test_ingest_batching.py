"""The ingest loop: batches close at N rows, at T ms or when nothing waits; acknowledgements
only after the commit; a record that trips a bug is kept as rejected and the worker goes on.

Over a real Mosquitto and on SQLite and PostgreSQL, except the pure batch rule (a clock
stands in for time there, so no test waits for one).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import server.ingest as ingest_module
from protocol import Record, encode
from protocol.topics import StationTopic, topic
from server.ingest import Message, MqttIngest, Stored, classify, collect_batch, store_resilient
from server.models import RecordRow, RejectedMessage
from swabline.broker import SERVER_USER, Broker
from tests.server.factories import message, record

pytestmark = pytest.mark.integration


def msg(n: int) -> Message:
    return Message(f"swabline/v1/stations/st-1/records/{n}", b"{}", datetime.now(UTC))


def filled(n: int) -> queue.SimpleQueue[Message]:
    q: queue.SimpleQueue[Message] = queue.SimpleQueue()
    for i in range(n):
        q.put(msg(i))
    return q


class Clock:
    """Moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_batch_closes_at_the_row_limit() -> None:
    q, stop = filled(25), threading.Event()
    sizes = [len(collect_batch(q, max_rows=10, max_s=60, stop=stop, wait_s=0)) for _ in range(4)]
    assert sizes == [10, 10, 5, 0]


def test_a_batch_closes_when_its_time_is_up_although_messages_keep_coming() -> None:
    q, stop = filled(100), threading.Event()
    # Each read of the clock is 10 ms later: the batch may collect for 50 ms.
    batch = collect_batch(q, max_rows=500, max_s=0.05, stop=stop, clock=Clock(0.01), wait_s=0)
    assert [m.topic for m in batch] == [msg(i).topic for i in range(5)]
    assert q.qsize() == 95


def test_a_batch_closes_as_soon_as_nothing_waits() -> None:
    q, stop = filled(3), threading.Event()
    # A clock that never moves: only an empty queue can close this batch.
    assert len(collect_batch(q, max_rows=500, max_s=10, stop=stop, clock=lambda: 0.0)) == 3


# --- over a real broker ------------------------------------------------------------------------


class Station:
    """A station's MQTT side: publishes records, collects the acknowledgements it gets."""

    def __init__(self, broker: Broker, station_id: str = "st-1") -> None:
        self.station_id = station_id
        self.acks: list[list[str]] = []
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=station_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(station_id, broker.users[station_id])
        c.on_connect = lambda cl, *_: cl.subscribe(topic(station_id, StationTopic.ACKS), qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = lambda _c, _u, m: self.acks.append(json.loads(m.payload)["record_ids"])
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self._subscribed.wait(10), "the station did not subscribe"
        self.client = c

    def publish(self, *records: Record) -> None:
        for r in records:
            self.client.publish(topic(self.station_id, StationTopic.RECORDS), encode(r), qos=1)

    def acked(self) -> set[str]:
        return {rid for ids in self.acks for rid in ids}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Worker:
    """``MqttIngest.run`` in a thread; whatever it raises is kept."""

    def __init__(self, broker: Broker, engine: Engine, **kw: Any) -> None:
        self.ingest = MqttIngest(
            engine=engine,
            host=broker.host,
            port=broker.port,
            username=SERVER_USER,
            password=broker.users[SERVER_USER],
            client_id="ingest-test",
            **kw,
        )
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ingest.connected.wait(10), "the ingest worker did not subscribe"

    def _run(self) -> None:
        try:
            self.ingest.run(self.stop)
        except BaseException as exc:  # kept for the test to look at
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def station(broker: Broker) -> Iterator[Station]:
    s = Station(broker)
    yield s
    s.close()


def scans(seqs: Sequence[int]) -> list[Record]:
    return [record("st-1", seq, "scan", code=f"C{seq}") for seq in seqs]


def stored_seqs(engine: Engine) -> list[int]:
    with Session(engine) as s:
        return sorted(s.scalars(select(RecordRow.seq)))


def test_the_configured_row_limit_bounds_every_batch(
    engine: Engine, broker: Broker, station: Station
) -> None:
    sizes: list[int] = []
    first_done, go_on = threading.Event(), threading.Event()

    def on_stored(stored: Stored) -> None:
        sizes.append(stored.inserted)
        if len(sizes) == 1:  # hold the loop while more records arrive
            first_done.set()
            assert go_on.wait(20)

    worker = Worker(broker, engine, batch_max_rows=7, batch_max_ms=10_000, on_stored=on_stored)
    try:
        records = scans(range(1, 22))
        station.publish(records[0])
        assert first_done.wait(20)
        station.publish(*records[1:])
        # All 20 are waiting in the worker before the loop goes on (they are not acknowledged
        # to the broker yet, and its in-flight window is larger than 20).
        wait_for(lambda: worker.ingest.queued == 20, "20 records queued")
        go_on.set()
        wait_for(lambda: station.acked() == {r.record_id for r in records}, "every ack")
    finally:
        go_on.set()
        worker.close()
    assert worker.error is None
    assert sizes == [1, 7, 7, 6]
    assert stored_seqs(engine) == list(range(1, 22))


def _lock(engine: Engine) -> tuple[Any, Callable[[], None]]:
    """Another connection holding the database so that ingest cannot write, and a way to let
    go. Ingest's own connections give up after 200 ms instead of waiting."""
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _short(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 200")

        conn = engine.raw_connection()
        conn.driver_connection.isolation_level = None  # type: ignore[union-attr]
        conn.driver_connection.execute("BEGIN EXCLUSIVE")  # type: ignore[union-attr]
    else:

        @event.listens_for(engine, "connect")
        def _short(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("SET lock_timeout = 200")
            dbapi_conn.commit()

        conn = engine.raw_connection()
        conn.cursor().execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
    conn.detach()  # closed for real on release: the pool it came from is replaced next
    engine.dispose()  # ingest opens fresh connections, which get the short timeout

    def release() -> None:
        conn.rollback()
        conn.close()

    return conn, release


def test_nothing_is_acknowledged_when_the_commit_fails(
    engine: Engine, broker: Broker, station: Station
) -> None:
    first = scans([1])
    _conn, release = _lock(engine)
    try:
        worker = Worker(broker, engine, db_retries=0)
        station.publish(*first)
        worker.thread.join(30)
        assert not worker.thread.is_alive(), "the worker should stop on a database it cannot use"
        assert isinstance(worker.error, OperationalError)
        assert worker.ingest.counters.get("batches") == 0
    finally:
        release()
    # The station resends what was not acknowledged; a new worker stores it once.
    worker = Worker(broker, engine)
    try:
        station.publish(*first)
        wait_for(lambda: station.acked() == {first[0].record_id}, "the acknowledgement")
    finally:
        worker.close()
    assert station.acks == [[first[0].record_id]]  # one acknowledgement, after the commit
    assert stored_seqs(engine) == [1]


def test_a_record_that_trips_a_bug_is_kept_as_rejected_and_the_worker_goes_on(
    engine: Engine, broker: Broker, station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = bug_in_projection(monkeypatch)
    good, bad, later = scans([1, 2, 3])
    bad = bad.model_copy(update={"code": "BOOM"})
    worker = Worker(broker, engine)
    try:
        station.publish(good, bad)
        wait_for(lambda: station.acked() == {good.record_id, bad.record_id}, "both acks")
        station.publish(later)
        wait_for(lambda: later.record_id in station.acked(), "the next record's ack")
    finally:
        worker.close()
    assert worker.error is None and calls["BOOM"] == 3  # in its batch, alone, once more
    assert stored_seqs(engine) == [1, 3]
    with Session(engine) as s:
        kept = s.execute(select(RejectedMessage.record_id, RejectedMessage.reason)).one()
    assert kept[0] == bad.record_id
    assert kept[1] == "ingest failed on it: RuntimeError: projection bug on BOOM"
    assert worker.ingest.counters.get("poison_records") == 1


def bug_in_projection(
    monkeypatch: pytest.MonkeyPatch, *, times: int | None = None
) -> dict[str, int]:
    """A bug in the projection that raises on records coded BOOM (``times`` times, or always).

    Stands in for any Python exception the projection could raise on data nobody foresaw."""
    real = ingest_module.project
    calls = {"BOOM": 0}

    def project(session: Any, bulk: Any, items: Sequence[Any], now: datetime) -> None:
        if any(p.record.code == "BOOM" for p in items):
            calls["BOOM"] += 1
            if times is None or calls["BOOM"] <= times:
                raise RuntimeError("projection bug on BOOM")
        real(session, bulk, items, now)

    monkeypatch.setattr(ingest_module, "project", project)
    return calls


def test_a_passing_failure_is_retried_once_and_then_stored(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = bug_in_projection(monkeypatch, times=2)  # the batch, then the record alone
    good, bad = scans([1, 2])
    bad = bad.model_copy(update={"code": "BOOM"})
    stored = store_resilient(engine, classify([message(good), message(bad)]))
    assert (stored.inserted, stored.poison) == (2, 0)
    assert calls["BOOM"] == 3
    assert stored_seqs(engine) == [1, 2]
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(RejectedMessage)) == 0
