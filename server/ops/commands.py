"""Remote commands on the server: created by ops, kept until sent and answered, audited.

Stations keep no MQTT session (a command published while a station is offline would be lost,
and ``pitfalls.md`` warns against trusting the broker's queue), so the database is the queue:

- ``create`` stores a ``queued`` command (validated against ``protocol.commands``) and audits it;
- ``CommandDispatcher`` publishes it at once when the station is online, and publishes every
  unanswered, unexpired command of a station again when its birth arrives (``sent``);
- ingest stores the station's ``CommandResult`` (``apply_results``): ``succeeded``/``failed``;
- the monitor marks commands past ``expires_at`` as ``expired`` (``expire``).

A station answers a repeated ``command_id`` without carrying it out again, so sending twice is
safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from protocol import Command, CommandResult, PayloadError, encode
from protocol.commands import parse_args
from protocol.topics import StationTopic, topic
from server.access import Permission, Principal, system_principal
from server.audit import audit, snapshot
from server.errors import BadRequestError, NotFoundError
from server.models import Organisation, StationCommand, StationRow

log = logging.getLogger(__name__)

PENDING = ("queued", "sent")


def create(
    session: Session,
    principal: Principal,
    *,
    station_id: str,
    name: str,
    args: dict[str, Any],
    ttl_s: float,
    now: datetime,
    remote_addr: str | None = None,
) -> StationCommand:
    """Queue a command for a station in the caller's scope (``fleet.operate``). Audited."""
    scope = principal.require(Permission.FLEET_OPERATE)
    station = session.get(StationRow, station_id)
    path = (
        session.scalar(select(Organisation.path).where(Organisation.id == station.facility_id))
        if station is not None and station.facility_id is not None
        else None
    )
    if station is None or not scope.covers_path(path):
        raise NotFoundError(f"no station {station_id!r}")
    try:
        parsed = parse_args(name, args)
    except PayloadError as exc:
        raise BadRequestError(exc.reason) from None
    row = StationCommand(
        command_id=str(uuid.uuid4()),
        station_id=station_id,
        name=name,
        args=parsed.model_dump(exclude_none=True),
        state="queued",
        created_at=now,
        created_by=principal.user_id,
        actor=principal.actor[:100],
        expires_at=now + timedelta(seconds=ttl_s),
        send_count=0,
    )
    session.add(row)
    session.flush()
    audit(
        session,
        principal,
        "command.create",
        object_type="station_command",
        object_id=row.command_id,
        organisation_id=station.facility_id,
        before=None,
        after=snapshot(row),
        remote_addr=remote_addr,
    )
    return row


def apply_results(
    session: Session, results: Sequence[tuple[str, CommandResult]], *, now: datetime
) -> list[tuple[str, CommandResult, str]]:
    """Store answers from stations; returns each answer that matched nothing, with a reason.

    An answer is accepted only from the station the command was for. A repeated answer (the
    station answers a resent command again) changes nothing. A late answer to an expired
    command is still recorded: the station did carry it out.
    """
    problems: list[tuple[str, CommandResult, str]] = []
    for station_id, result in results:
        row = session.get(StationCommand, result.command_id)
        if row is None or row.station_id != station_id:
            problems.append(
                (station_id, result, f"answer to unknown command {result.command_id!r}")
            )
            continue
        if row.answered_at is not None:
            continue
        before = snapshot(row)
        row.answered_at = now
        row.ok = result.ok
        row.result = result.detail
        row.state = "succeeded" if result.ok else "failed"
        facility = session.scalar(
            select(StationRow.facility_id).where(StationRow.station_id == station_id)
        )
        audit(
            session,
            system_principal(f"station:{station_id}"),
            "command.answer",
            object_type="station_command",
            object_id=row.command_id,
            organisation_id=facility,
            before=_brief(before),
            after=_brief(snapshot(row)),
        )
    return problems


def _brief(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """An audit snapshot without the (possibly large) diagnostics bundle."""
    if snap is None:
        return None
    out = dict(snap)
    if isinstance(out.get("result"), dict) and "logs" in out["result"]:
        out["result"] = {k: v for k, v in out["result"].items() if k in ("error", "exit_code")}
        out["result"]["bundle"] = "diagnostics (see the command)"
    return out


def expire(session: Session, *, now: datetime) -> list[StationCommand]:
    """Mark unanswered commands past their expiry as ``expired``. Audited (as the system)."""
    rows = session.scalars(
        select(StationCommand).where(
            StationCommand.state.in_(PENDING), StationCommand.expires_at <= now
        )
    ).all()
    for row in rows:
        before = snapshot(row)
        row.state = "expired"
        facility = session.scalar(
            select(StationRow.facility_id).where(StationRow.station_id == row.station_id)
        )
        audit(
            session,
            system_principal("system"),
            "command.expire",
            object_type="station_command",
            object_id=row.command_id,
            organisation_id=facility,
            before=before,
            after=snapshot(row),
        )
    return list(rows)


def pending(
    session: Session, station_id: str, *, now: datetime, resend: bool
) -> list[StationCommand]:
    """Commands to send to a station now: queued ones, and (``resend``) sent ones unanswered."""
    states = PENDING if resend else ("queued",)
    return list(
        session.scalars(
            select(StationCommand)
            .where(
                StationCommand.station_id == station_id,
                StationCommand.state.in_(states),
                StationCommand.expires_at > now,
            )
            .order_by(StationCommand.created_at)
        )
    )


def stations_with_pending(session: Session, *, now: datetime) -> set[str]:
    return set(
        session.scalars(
            select(StationCommand.station_id)
            .where(StationCommand.state.in_(PENDING), StationCommand.expires_at > now)
            .distinct()
        )
    )


Publish = Callable[[str, bytes], None]
"""Publish ``payload`` on ``topic`` with QoS 1."""


class CommandDispatcher:
    """Sends commands to stations, from its own thread.

    ``flush(station_id)`` (after a command was created) sends the station's queued commands if
    it is online; ``on_birth(station_id)`` (the station connected) sends all its unanswered
    ones. Both only queue work, so they are safe to call from the web app or an MQTT callback.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        publish: Publish,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._publish = publish
        self._clock = clock
        self._work: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._pending_stations: set[str] | None = None
        self._guard = threading.Lock()

    def flush(self, station_id: str) -> None:
        with self._guard:
            if self._pending_stations is not None:
                self._pending_stations.add(station_id)
        self._work.put((station_id, False))

    def on_birth(self, station_id: str) -> None:
        self._work.put((station_id, True))

    def refresh(self) -> None:
        """Reload which stations have unanswered commands (births of others are skipped)."""
        with Session(self._engine) as session:
            found = stations_with_pending(session, now=self._clock())
        with self._guard:
            self._pending_stations = found

    def run(self, stop: threading.Event) -> None:
        self.refresh()
        while not stop.is_set():
            try:
                station_id, birth = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.send_now(station_id, birth=birth)
            except Exception:  # the commands stay queued; the next birth sends them
                log.exception("sending commands to %s failed", station_id)

    def send_now(self, station_id: str, *, birth: bool) -> int:
        """Send what is due to ``station_id``; returns how many commands were published."""
        with self._guard:
            if self._pending_stations is not None and station_id not in self._pending_stations:
                return 0
        now = self._clock()
        with Session(self._engine) as session, session.begin():
            if not birth:
                state = session.scalar(
                    select(StationRow.state).where(StationRow.station_id == station_id)
                )
                if state != "online":
                    return 0  # sent when its birth arrives
            rows = pending(session, station_id, now=now, resend=birth)
            for row in rows:
                command = Command(
                    command_id=row.command_id,
                    name=row.name,
                    args=row.args,
                    expires_at=row.expires_at.timestamp(),
                    server_time=now.timestamp(),
                )
                self._publish(topic(station_id, StationTopic.COMMANDS), encode(command))
                row.state = "sent"
                row.sent_at = now
                row.send_count += 1
                log.info("sent command %s (%s) to %s", row.command_id, row.name, station_id)
        return len(rows)
