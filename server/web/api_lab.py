"""JSON API of the lab and the reports, for scripts (a lab's LIMS pushing results, a health
department pulling figures). Same services, scopes and audit as the pages."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from server import results as results_service
from server.access import Permission
from server.errors import BadRequestError, NotFoundError
from server.models import Organisation
from server.reports import Metrics, Period, PeriodKind, build_report
from server.result_csv import parse_results_csv
from server.results import report_json
from server.web.deps import Caller, Db, remote_addr
from server.web.schemas import Problem, Text, When
from server.web.services import Services

router = APIRouter(tags=["lab"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404)
}


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tube: Annotated[Text, Field(min_length=1, max_length=64)]
    value: Literal["positive", "negative", "invalid"]
    reason: Annotated[Text | None, Field(max_length=500)] = None
    """Required when the tube already has another result (a correction)."""
    reported_at: When | None = None
    test_kind: Literal["rt_pcr", "rapid_antigen"] | None = None


class ResultOut(BaseModel):
    entry: Literal["saved", "unchanged", "corrected"]
    tube: str
    result: str
    persons: int


class ImportRowOut(BaseModel):
    line: int
    tube: str | None = None
    result: str | None = None
    status: str
    errors: list[str]


class ImportOut(BaseModel):
    applied: bool
    """False when any row is in error (then nothing was applied) or when only checking."""
    new: int
    unchanged: int
    errors: int
    columns: list[str]
    mapping: dict[str, str]
    rows: list[ImportRowOut]


class RecallPersonOut(BaseModel):
    position: int
    key_type: str
    key: str
    name: str | None
    birth_date: str | None
    phone: str | None
    resampled_in: str | None


class RecallOut(BaseModel):
    tube: str
    facility: str | None
    reported_at: datetime
    persons: list[RecallPersonOut]


class MetricsOut(BaseModel):
    samples: int
    pools: int
    singles: int
    persons: int
    positive: int
    negative: int
    invalid: int
    positivity: float | None
    recall: int
    tat_count: int
    tat_median_h: float | None
    tat_p90_h: float | None
    uptime: float | None
    throughput_per_h: float | None

    @classmethod
    def of(cls, m: Metrics) -> MetricsOut:
        return cls(
            samples=m.samples,
            pools=m.pools,
            singles=m.singles,
            persons=m.persons,
            positive=m.positive,
            negative=m.negative,
            invalid=m.invalid,
            positivity=m.positivity,
            recall=m.recall,
            tat_count=m.tat_count,
            tat_median_h=m.tat_median_h,
            tat_p90_h=m.tat_p90_h,
            uptime=m.uptime,
            throughput_per_h=m.throughput_per_h,
        )


class ReportRowOut(BaseModel):
    level: str
    code: str
    name: str
    metrics: MetricsOut


class ReportOut(BaseModel):
    period: str
    label: str
    start: date
    end: date
    timezone: str
    node: str
    rows: list[ReportRowOut]
    daily: dict[date, MetricsOut]


@router.post("/api/lab/results", responses=ERRORS)
def api_enter_result(
    body: ResultIn, request: Request, caller: Caller, db: Db, services: Services
) -> ResultOut:
    """Record a tube's result (``result.write``; the tube must be in your scope, i.e. received
    by your lab). The same value again changes nothing; another value needs a ``reason``."""
    out = results_service.enter_result(
        db,
        caller,
        services.ctx,
        tube_code=body.tube,
        value=body.value,
        reason=body.reason,
        reported_at=body.reported_at,
        test_kind=body.test_kind,
        remote_addr=remote_addr(request),
    )
    db.commit()
    assert out.result is not None
    return ResultOut(
        entry=out.status,
        tube=out.tube.code,
        result=out.result.value,
        persons=out.persons,
    )


@router.post("/api/lab/results/import", responses=ERRORS)
def api_import_results(
    request: Request,
    caller: Caller,
    db: Db,
    services: Services,
    file: Annotated[UploadFile, File(description="The lab's CSV export (UTF-8, BOM allowed).")],
    apply: Annotated[bool, Query(description="Record the results if every row is valid.")] = False,
    map_tube: Annotated[
        Text | None, Query(max_length=200, description="The file's column with the tube code.")
    ] = None,
    map_result: Annotated[
        Text | None, Query(max_length=200, description="The file's column with the result.")
    ] = None,
    map_reported_at: Annotated[
        Text | None, Query(max_length=200, description="The file's column with the result date.")
    ] = None,
    map_test_kind: Annotated[
        Text | None, Query(max_length=200, description="The file's column with the test kind.")
    ] = None,
) -> ImportOut:
    """Check (and with ``apply=true`` record) a CSV of results: all rows or none. Columns are
    matched by name (Vietnamese or English, see docs/lab-and-results.md), or named with the
    ``map_*`` parameters."""
    caller.require(Permission.RESULT_WRITE)
    limit = services.config.lab.import_max_bytes
    data = file.file.read(limit + 1)  # a plain def: run in the thread pool, not the event loop
    if len(data) > limit:
        raise BadRequestError(f"the file is larger than {limit} bytes")
    mapping = {
        "tube": map_tube,
        "result": map_result,
        "reported_at": map_reported_at,
        "test_kind": map_test_kind,
    }
    parsed = parse_results_csv(
        data, mapping={k: v for k, v in mapping.items() if v}, tz=services.tz
    )
    outcome = results_service.import_results(
        db,
        caller,
        services.ctx,
        parsed,
        filename=(file.filename or "results.csv")[:255],
        sha256=hashlib.sha256(data).hexdigest(),
        apply=apply,
        remote_addr=remote_addr(request),
    )
    db.commit()
    return ImportOut(
        applied=outcome.applied,
        new=outcome.new,
        unchanged=outcome.unchanged,
        errors=outcome.errors,
        columns=parsed.columns,
        mapping=parsed.mapping,
        rows=[ImportRowOut.model_validate(r) for r in report_json(parsed)],
    )


@router.get("/api/lab/recalls", responses=ERRORS)
def api_recalls(
    caller: Caller, db: Db, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[RecallOut]:
    """Positive pools in your scope, newest first, with the persons to re-sample
    (``data.read``: personal data)."""
    pools = results_service.positive_pools(db, caller.require(Permission.DATA_READ), limit=limit)
    return [
        RecallOut(
            tube=p.tube.code,
            facility=p.facility.name if p.facility else None,
            reported_at=p.result.reported_at,
            persons=[
                RecallPersonOut(
                    position=line.position,
                    key_type=line.person.key_type,
                    key=line.person.key,
                    name=line.name,
                    birth_date=line.person.birth_date,
                    phone=line.phone,
                    resampled_in=line.resampled_in,
                )
                for line in p.lines
            ],
        )
        for p in pools
    ]


@router.get("/api/reports", tags=["reports"], responses=ERRORS)
def api_report(
    caller: Caller,
    db: Db,
    services: Services,
    period: Annotated[Literal["day", "week", "month"], Query()] = "week",
    day: Annotated[date | None, Query(description="A day in the period (default: today).")] = None,
    node: Annotated[
        str | None, Query(max_length=32, description="Organisation code (default: your top).")
    ] = None,
) -> ReportOut:
    """The report of an organisation node for a day, week or month (``data.read``)."""
    scope = caller.require(Permission.DATA_READ)
    nodes = list(
        db.scalars(
            select(Organisation)
            .where(Organisation.id.in_(scope.org_ids()), Organisation.active.is_(True))
            .order_by(Organisation.path)
        )
    )
    chosen = next((n for n in nodes if n.code == node), None) if node else next(iter(nodes), None)
    if chosen is None:
        raise NotFoundError(f"no organisation {node!r} in your scope")
    when = day or datetime.now(services.tz).date()
    if not date(1900, 1, 1) <= when <= date(9998, 12, 1):
        raise BadRequestError("day out of range")
    p = Period.containing(PeriodKind(period), when)
    report = build_report(
        db, chosen, p, tz=services.tz, facility_ids=[n.id for n in nodes if n.kind == "facility"]
    )
    return ReportOut(
        period=period,
        label=p.label,
        start=p.start,
        end=p.end,
        timezone=report.timezone,
        node=chosen.code,
        rows=[
            ReportRowOut(
                level=r.level, code=r.org.code, name=r.org.name, metrics=MetricsOut.of(r.metrics)
            )
            for r in report.rows
        ],
        daily={d: MetricsOut.of(m) for d, m in report.daily},
    )
