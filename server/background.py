"""Background work in the server process: the outbound worker (result notifications and ops
alerts), the report scheduler, housekeeping, the heap trim and, when asked for, the memory
trace (``server.memory``), each on its own thread, stopped together."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import memory
from server.config import ServerConfig
from server.outbound import RESULTS, OutboundWorker, worker_from_config
from server.public import prune_attempts
from server.report_files import ReportScheduler
from server.results import ResultsContext, sweep_notifications

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 3600.0
"""How often old rate-limit attempts are deleted."""


@dataclass
class Background:
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    outbound: OutboundWorker | None = None

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        if self.outbound is not None:
            self.outbound.wake.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)
        if self.outbound is not None:
            self.outbound.close()


def _guarded(name: str, target: object, stop: threading.Event) -> None:
    """Run ``target(stop)``; a crash is logged and the work restarts after a pause, so that a
    database hiccup does not silence notifications until the next server restart."""
    assert callable(target)
    while not stop.is_set():
        try:
            target(stop)
        except Exception:
            log.exception("%s failed; restarting in 30 s", name)
            stop.wait(30)


def start_background(
    engine: Engine,
    config: ServerConfig,
    ctx: ResultsContext,
    *,
    outbound: OutboundWorker | None = None,
) -> Background:
    """Start what the configuration asks for: the outbound worker when a target has a webhook
    (``outbound``, else one made from ``[outbound]``), sweeping for missing result
    notifications before each pass when results have one; the scheduled report files
    (``reports.schedule``); and, always, the hourly deletion of rate-limit attempts older than
    twice the longest window."""
    bg = Background()
    worker = outbound if outbound is not None else worker_from_config(engine, config.outbound)
    if worker.hooks:
        sweep_hours = config.outbound.results.sweep_hours

        def sweep() -> None:
            since = datetime.now(UTC) - timedelta(hours=sweep_hours)
            with Session(engine) as session, session.begin():
                sweep_notifications(session, ctx, since=since)

        def deliver(stop: threading.Event) -> None:
            worker.run(stop, before=sweep if RESULTS in worker.hooks else None)

        bg.outbound = worker
        bg.threads.append(
            threading.Thread(
                target=_guarded, args=("outbound", deliver, bg.stop), name="outbound", daemon=True
            )
        )
    if config.reports.schedule:
        scheduler = ReportScheduler(
            engine=engine,
            tz=ZoneInfo(config.reports.timezone),
            lang=config.reports.language,
            check_interval_s=config.reports.check_interval_s,
            rebuild_days=config.reports.rebuild_days,
        )
        bg.threads.append(
            threading.Thread(
                target=_guarded,
                args=("report scheduler", scheduler.run, bg.stop),
                name="reports",
                daemon=True,
            )
        )

    def housekeeping(stop: threading.Event) -> None:
        keep = timedelta(
            seconds=2
            * max(config.public.lookup_addr_window_s, config.public.lookup_id_window_s, 86_400)
        )
        while not stop.is_set():
            with Session(engine) as session, session.begin():
                prune_attempts(session, older_than=datetime.now(UTC) - keep)
            stop.wait(HOUSEKEEPING_S)

    bg.threads.append(
        threading.Thread(
            target=_guarded,
            args=("housekeeping", housekeeping, bg.stop),
            name="housekeeping",
            daemon=True,
        )
    )
    bg.threads += memory.threads(config.memory.trim_s, bg.stop)
    for thread in bg.threads:
        thread.start()
    return bg
