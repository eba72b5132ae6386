"""The web app and JSON API (FastAPI). Server-rendered pages, no JavaScript build."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from server import __version__
from server.gaps import gap_summary, station_gaps
from server.ingest import Stored
from server.models import RecordRow, RejectedMessage, StationRow

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


class StationOut(BaseModel):
    station_id: str
    state: str
    bd_seq: int
    agent_version: str | None
    last_seen_at: datetime | None
    max_seq: int
    records: int
    outbox_depth: int | None
    last_heartbeat_at: datetime | None
    seq_gaps: int = 0
    """Ranges of seqs missing below ``max_seq`` (records that never arrived): an alarm."""
    seq_missing: int = 0


class GapOut(BaseModel):
    first: int
    last: int
    missing: int


class StationGapsOut(BaseModel):
    station_id: str
    max_seq: int
    missing: int
    gaps: list[GapOut]


class RecordOut(BaseModel):
    record_id: str
    station_id: str
    seq: int
    kind: str
    code: str | None
    wall_time: float
    clock_synced: bool
    received_at: datetime


class IngestCountsOut(BaseModel):
    """What ingest did since the server process started."""

    inserted: int
    duplicates: int
    rejected: int
    duplicates_by_station: dict[str, int]


def create_app(engine: Engine, *, ingest_totals: Callable[[], Stored] | None = None) -> FastAPI:
    """Build the web app on ``engine``; ``ingest_totals`` gives ingest's counters, if it runs."""
    app = FastAPI(title="Swabline", version=__version__)

    def stations() -> list[StationOut]:
        with Session(engine) as s:
            counts = dict(
                s.execute(
                    select(RecordRow.station_id, func.count()).group_by(RecordRow.station_id)
                ).all()
            )
            rows = s.scalars(select(StationRow).order_by(StationRow.station_id)).all()
            gaps = gap_summary(s)
            return [
                StationOut(
                    station_id=r.station_id,
                    state=r.state,
                    bd_seq=r.bd_seq,
                    agent_version=r.agent_version,
                    last_seen_at=r.last_seen_at,
                    max_seq=r.max_seq,
                    records=counts.get(r.station_id, 0),
                    outbox_depth=r.outbox_depth,
                    last_heartbeat_at=r.last_heartbeat_at,
                    seq_gaps=g.gaps if (g := gaps.get(r.station_id)) else 0,
                    seq_missing=g.missing if g else 0,
                )
                for r in rows
            ]

    def records(limit: int, station_id: str | None) -> list[RecordOut]:
        q = select(RecordRow).order_by(RecordRow.received_at.desc(), RecordRow.seq.desc())
        if station_id:
            q = q.where(RecordRow.station_id == station_id)
        with Session(engine) as s:
            return [
                RecordOut.model_validate(r, from_attributes=True) for r in s.scalars(q.limit(limit))
            ]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        with Session(engine) as s:
            s.execute(select(1))
        return {"status": "ok"}

    @app.get("/api/stations", tags=["fleet"])
    def api_stations() -> list[StationOut]:
        """Every station the server has heard of, with its state and record count."""
        return stations()

    @app.get("/api/stations/{station_id}/gaps", tags=["fleet"])
    def api_station_gaps(station_id: str) -> StationGapsOut:
        """Seqs missing below the highest one stored for the station: data that never arrived."""
        with Session(engine) as s:
            station = s.get(StationRow, station_id)
            if station is None:
                raise HTTPException(status_code=404, detail=f"unknown station {station_id!r}")
            gaps = station_gaps(s, station_id)
        return StationGapsOut(
            station_id=station_id,
            max_seq=station.max_seq,
            missing=sum(g.missing for g in gaps),
            gaps=[GapOut(first=g.first, last=g.last, missing=g.missing) for g in gaps],
        )

    @app.get("/api/ingest", tags=["ops"])
    def api_ingest() -> IngestCountsOut:
        """Records stored, duplicates received (counted, never stored twice) and rejections,
        since this server process started."""
        totals = ingest_totals() if ingest_totals is not None else Stored()
        return IngestCountsOut(
            inserted=totals.inserted,
            duplicates=totals.duplicates,
            rejected=totals.rejected,
            duplicates_by_station=dict(totals.duplicates_by_station),
        )

    @app.get("/api/records", tags=["records"])
    def api_records(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        station_id: Annotated[str | None, Query(max_length=63)] = None,
    ) -> list[RecordOut]:
        """The most recently received records, newest first."""
        return records(limit, station_id)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Any:
        with Session(engine) as s:
            rejected = s.scalar(select(func.count()).select_from(RejectedMessage)) or 0
        return TEMPLATES.TemplateResponse(
            request,
            "index.html",
            {"stations": stations(), "records": records(30, None), "rejected": rejected},
        )

    return app
