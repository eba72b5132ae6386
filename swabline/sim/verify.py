"""Check a simulation against the central database: lost, displaced, refused, not yet landed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    created: Mapping[str, Sequence[tuple[str, int]]],
    pending: set[str],
) -> dict[str, Any]:
    """Compare what the stations made with what the database holds.

    Args:
        created: station id -> ``(record_id, seq)`` of every record it stored during the run.
        pending: ids still unacknowledged in the stations' outboxes at the end (a real station
            would keep sending them: late, not lost).

    Returns counts over the run's records (the database's ``records`` holds one row per
    ``record_id`` and one per station and seq, so "stored twice" cannot be counted there; what
    can go wrong is a record missing, or another record in its place):

    - ``stored``: in ``records`` under their own id;
    - ``lost``: acknowledged to the station yet not in ``records``: the one failure that must
      never happen;
    - ``not_landed``: not in ``records`` and still pending on the station;
    - ``seq_taken``: not in ``records`` because a different record holds the same station and
      seq (the server keeps such a record as rejected and acknowledges it: a station reusing
      sequence numbers);
    - ``refused``: kept in ``rejected_messages`` instead of ``records`` (invalid, or its seq
      taken);
    - ``stored_unacknowledged``: in ``records`` but still pending on the station: the
      acknowledgement had not come back when the run ended;

    and, for the run's stations: ``foreign`` (rows in ``records`` not made by this run),
    ``rejected`` (every message the server refused from them), ``stations_known`` (stations
    with a ``stations`` row).
    """
    counts = dict.fromkeys(
        (
            "stored",
            "lost",
            "not_landed",
            "seq_taken",
            "refused",
            "stored_unacknowledged",
            "foreign",
            "rejected",
            "stations_known",
        ),
        0,
    )
    station_ids = list(created)
    with engine.connect() as conn:
        for chunk in _chunks(station_ids):
            in_db: set[str] = set()
            holder: dict[tuple[str, int], str] = {}  # (station, seq) -> record id in the db
            rows = conn.execute(
                select(RecordRow.station_id, RecordRow.seq, RecordRow.record_id).where(
                    RecordRow.station_id.in_(chunk)
                )
            )
            for sid, seq, rid in rows:
                in_db.add(rid)
                holder[(sid, int(seq))] = rid
            refused_ids = set(
                conn.scalars(
                    select(RejectedMessage.record_id).where(
                        RejectedMessage.station_id.in_(chunk),
                        RejectedMessage.record_id.is_not(None),
                    )
                )
            )
            wanted: set[str] = set()
            for sid in chunk:
                for rid, seq in created[sid]:
                    wanted.add(rid)
                    if rid in refused_ids:
                        counts["refused"] += 1
                    if rid in in_db:
                        counts["stored"] += 1
                        if rid in pending:
                            counts["stored_unacknowledged"] += 1
                        continue
                    counts["not_landed" if rid in pending else "lost"] += 1
                    if holder.get((sid, seq), rid) != rid:
                        counts["seq_taken"] += 1
            counts["foreign"] += len(in_db - wanted)
            counts["rejected"] += int(
                conn.scalar(
                    select(func.count())
                    .select_from(RejectedMessage)
                    .where(RejectedMessage.station_id.in_(chunk))
                )
                or 0
            )
            counts["stations_known"] += int(
                conn.scalar(
                    select(func.count())
                    .select_from(StationRow)
                    .where(StationRow.station_id.in_(chunk))
                )
                or 0
            )
    return counts


def failures(database: Mapping[str, Any]) -> list[str]:
    """What in a ``check`` result means the run failed (empty: nothing lost or displaced)."""
    wrong = {
        "lost": "acknowledged but not stored",
        "seq_taken": "displaced by another record with the same seq",
        "refused": "refused by the server",
    }
    return [f"{database[k]} {text}" for k, text in wrong.items() if database.get(k)]
