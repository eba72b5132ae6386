"""Report pages and downloads: a period and an organisation node -> tables, SVG charts, CSV and
XLSX; the scheduled weekly and monthly files. Reports are aggregates, but still scoped: a user
sees the facilities of their part of the tree only."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, defer
from starlette.responses import Response

from server.access import Permission, Principal, Scope
from server.charts import bar_chart, line_chart
from server.errors import NotFoundError
from server.models import Organisation, ReportFile
from server.report_files import filename, to_csv, to_xlsx
from server.reports import Period, PeriodKind, Report, build_report
from server.web.deps import Db, PageCaller
from server.web.services import Services, use_locale
from server.web.templating import language, render

router = APIRouter(include_in_schema=False)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _nodes(db: Session, scope: Scope) -> list[Organisation]:
    """Organisation nodes the caller may report on (their subtrees)."""
    return list(
        db.scalars(
            select(Organisation)
            .where(Organisation.id.in_(scope.org_ids()), Organisation.active.is_(True))
            .order_by(Organisation.path)
        )
    )


def _report(
    db: Session, caller: Principal, services: Services, node_id: int | None, kind: str, day: str
) -> tuple[Report, list[Organisation]]:
    scope = caller.require(Permission.DATA_READ)
    nodes = _nodes(db, scope)
    if not nodes:
        raise NotFoundError("no organisation to report on", text="reports.err.no_node")
    node = next((n for n in nodes if n.id == node_id), None) if node_id else nodes[0]
    if node is None:
        raise NotFoundError(f"no organisation {node_id} in your scope", text="reports.err.no_node")
    try:
        when = date.fromisoformat(day) if day else datetime.now(services.tz).date()
    except ValueError:
        when = datetime.now(services.tz).date()
    period = Period.containing(PeriodKind(kind), when)
    allowed = [n.id for n in nodes if n.kind == "facility"]
    report = build_report(db, node, period, tz=services.tz, facility_ids=allowed)
    return report, nodes


def charts(report: Report, t: object) -> list[str]:
    assert callable(t)
    labels = [
        d.strftime("%d/%m") if report.period.kind is not PeriodKind.DAY else d.isoformat()
        for d, _ in report.daily
    ]
    out = [
        bar_chart(
            t("reports.chart.samples"),
            labels,
            [
                (t("reports.pools"), [m.pools for _, m in report.daily]),
                (t("reports.singles"), [m.singles for _, m in report.daily]),
            ],
        ),
        line_chart(
            t("reports.chart.positivity"),
            labels,
            [(t("reports.positivity"), [m.positivity for _, m in report.daily])],
            unit="%",
        ),
        line_chart(
            t("reports.chart.tat"),
            labels,
            [
                (t("reports.tat_median"), [m.tat_median_h for _, m in report.daily]),
                (t("reports.tat_p90"), [m.tat_p90_h for _, m in report.daily]),
            ],
            unit="h",
        ),
    ]
    facilities = [r for r in report.rows if r.level == "facility"]
    if len(facilities) > 1:
        out.append(
            bar_chart(
                t("reports.chart.facilities"),
                [r.org.code for r in facilities],
                [(t("reports.samples"), [r.metrics.samples for r in facilities])],
            )
        )
    return out


@router.get("/reports")
def reports_page(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    period: Annotated[str, Query(pattern="^(day|week|month)$")] = "week",
    day: Annotated[str, Query(max_length=10)] = "",
    node: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    use_locale(request, db, caller)
    report, nodes = _report(db, caller, services, node, period, day)
    from server.web.i18n import translator

    t = translator(language(request))
    scope = caller.require(Permission.DATA_READ)
    files = db.scalars(
        select(ReportFile)
        .options(defer(ReportFile.content))
        .where(scope.filter(ReportFile.organisation_id))
        .order_by(ReportFile.period_start.desc(), ReportFile.id.desc())
        .limit(60)
    ).all()
    names = {n.id: n.name for n in nodes}
    return render(
        request,
        "reports.html",
        {
            "report": report,
            "nodes": nodes,
            "period": period,
            "day": report.period.start.isoformat(),
            "charts": charts(report, t),
            "files": files,
            "names": names,
        },
    )


@router.get("/reports/download")
def reports_download(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    format: Annotated[str, Query(pattern="^(csv|xlsx)$")],
    period: Annotated[str, Query(pattern="^(day|week|month)$")] = "week",
    day: Annotated[str, Query(max_length=10)] = "",
    node: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    report, _ = _report(db, caller, services, node, period, day)
    lang = language(request)
    content = to_csv(report, lang) if format == "csv" else to_xlsx(report, lang)
    media = "text/csv; charset=utf-8" if format == "csv" else XLSX
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename(report, format)}"'},
    )


@router.get("/reports/files/{file_id}")
def reports_file(caller: PageCaller, db: Db, file_id: int) -> Response:
    scope = caller.require(Permission.DATA_READ)
    row = db.scalars(
        select(ReportFile).where(ReportFile.id == file_id, scope.filter(ReportFile.organisation_id))
    ).first()
    if row is None:
        raise NotFoundError(f"no report file {file_id}", text="reports.err.no_file")
    media = "text/csv; charset=utf-8" if row.format == "csv" else XLSX
    return Response(
        row.content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{row.filename}"'},
    )
