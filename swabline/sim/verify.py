"""Check a simulation against the central database: lost, duplicated, not yet landed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from server.models import RecordRow, RejectedMessage, StationRow

_CHUNK = 1000


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def last_seqs(engine: Engine, station_ids: Sequence[str]) -> dict[str, int]:
    """The highest ``seq`` the server has for each station, so a new run continues after it."""
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for chunk in _chunks(station_ids):
            rows = conn.execute(
                select(RecordRow.station_id, func.max(RecordRow.seq))
                .where(RecordRow.station_id.in_(chunk))
                .group_by(RecordRow.station_id)
            )
            out.update({sid: int(seq) for sid, seq in rows})
    return out


def check(
    engine: Engine,
    *,
    created: dict[str, list[str]],
    pending: set[str],
) -> dict[str, Any]:
    """Compare what the stations made with what the database holds.

    Args:
        created: station id -> ids of every record it stored during the run.
        pending: ids still unacknowledged in the stations' outboxes (a real station would keep
            sending them: late, not lost).

    Returns counts: ``stored`` (records of the run in the database), ``stored_twice`` (rows
    beyond one per record id), ``lost`` (acknowledged to the station yet absent: the one
    failure that must never happen), ``not_landed`` (absent and still pending), ``foreign``
    (rows of these stations not made by this run), ``rejected`` (messages of these stations the
    server refused).
    """
    station_ids = list(created)
    wanted = {rid for ids in created.values() for rid in ids}
    rows = 0
    in_db: set[str] = set()
    rejected = 0
    with engine.connect() as conn:
        for chunk in _chunks(station_ids):
            ids = conn.scalars(select(RecordRow.record_id).where(RecordRow.station_id.in_(chunk)))
            for rid in ids:
                rows += 1
                in_db.add(rid)
            rejected += int(
                conn.scalar(
                    select(func.count())
                    .select_from(RejectedMessage)
                    .where(RejectedMessage.station_id.in_(chunk))
                )
                or 0
            )
        stations_known = 0
        for chunk in _chunks(station_ids):
            stations_known += int(
                conn.scalar(
                    select(func.count())
                    .select_from(StationRow)
                    .where(StationRow.station_id.in_(chunk))
                )
                or 0
            )
    missing = wanted - in_db
    return {
        "stored": len(wanted & in_db),
        "stored_twice": rows - len(in_db),
        "lost": len(missing - pending),
        "not_landed": len(missing & pending),
        "foreign": len(in_db - wanted),
        "rejected": rejected,
        "stations_known": stations_known,
    }
