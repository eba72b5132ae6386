"""Ingest counters shared between worker processes and the web process's ``/metrics``.

Each ingest worker process writes only its own slot of a shared-memory array (one writer per
slot, so no lock); the web process reads every slot and exposes them as Prometheus counters
labelled by worker. A restarted worker keeps its slot, so counters never go backwards.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

COUNTERS: dict[str, str] = {
    "messages": "MQTT messages received by ingest",
    "records_inserted": "Records stored for the first time",
    "records_duplicate": "Records received again (resends), acknowledged and not stored again",
    "records_invalid": "Records with an unknown kind or invalid data (kept as rejected, acked)",
    "rejected": "Messages kept in rejected_messages (every reason)",
    "batches": "Transactions committed",
    "batch_seconds": "Time spent storing batches, seconds",
    "acks_published": "Acknowledgement messages published after a commit",
    "db_retries": "Batches retried after a transient database error",
    "poison_records": "Records the database refused alone; kept as rejected and acknowledged",
    "statuses": "Birth and death messages applied",
    "stale_deaths": "Deaths ignored because a newer birth was already known",
    "restarts": "Times this worker was restarted by the supervisor",
}
GAUGES: dict[str, str] = {
    "queue_depth": "Messages received but not yet committed",
}
FIELDS = [*COUNTERS, *GAUGES]
_INDEX = {name: i for i, name in enumerate(FIELDS)}


class IngestCounters:
    """One worker's counters, in a plain list or in a slot of a shared array."""

    def __init__(self, values: MutableSequence[float] | None = None, offset: int = 0) -> None:
        self._values: MutableSequence[float] = values if values is not None else [0.0] * len(FIELDS)
        self._offset = offset

    def add(self, name: str, amount: float = 1) -> None:
        self._values[self._offset + _INDEX[name]] += amount

    def set(self, name: str, value: float) -> None:
        self._values[self._offset + _INDEX[name]] = value

    def get(self, name: str) -> float:
        return float(self._values[self._offset + _INDEX[name]])


class SharedCounters:
    """Counters of ``workers`` processes in one shared-memory array (create before forking)."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self.workers = workers
        # lock=False: a raw ctypes array; each slot has a single writer.
        self.array: Any = ctx.Array("d", max(1, workers) * len(FIELDS), lock=False)

    def worker(self, index: int) -> IngestCounters:
        return IngestCounters(self.array, index * len(FIELDS))


class IngestCollector(Collector):
    """Prometheus collector over the shared counters."""

    def __init__(self, shared: SharedCounters) -> None:
        self._shared = shared

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        workers = [self._shared.worker(i) for i in range(self._shared.workers)]
        for name, doc in COUNTERS.items():
            fam = CounterMetricFamily(f"swabline_ingest_{name}", doc, labels=["worker"])
            for i, w in enumerate(workers):
                fam.add_metric([str(i)], w.get(name))
            yield fam
        for name, doc in GAUGES.items():
            gauge = GaugeMetricFamily(f"swabline_ingest_{name}", doc, labels=["worker"])
            for i, w in enumerate(workers):
                gauge.add_metric([str(i)], w.get(name))
            yield gauge
