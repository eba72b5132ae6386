"""Report downloads (CSV, XLSX) and the weekly and monthly report files made on a schedule.

Scheduling: the server process runs ``ReportScheduler`` on a thread. Every
``reports.check_interval_s`` it makes sure that, for every province and district, the files of
the last complete week and month exist, and makes those missing (so a server that was down on a
Monday catches up when it starts). Results keep arriving after a period ends, so for
``reports.rebuild_days`` days after its end a period's files are made again once a day, and a
last time on or after the last of those days (``is_stale``). ``swabline reports generate`` does
the same on demand, or for any period (backfill); the unique key of ``report_files`` keeps two
processes from storing the same file twice.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.models import Organisation, ReportFile
from server.reports import Metrics, Period, PeriodKind, Report, build_report
from server.spreadsheet import append_row, csv_bytes

log = logging.getLogger(__name__)

COLUMNS = (
    "samples",
    "pools",
    "singles",
    "persons",
    "positive",
    "negative",
    "invalid",
    "positivity",
    "recall",
    "tat_count",
    "tat_median",
    "tat_p90",
    "uptime",
    "throughput",
)


def _translator(lang: str) -> Callable[..., str]:
    # Imported when called: the server.web package imports the routers that import this module.
    from server.web.i18n import translator

    return translator(lang)


def _metric_values(m: Metrics) -> list[object]:
    def r(v: float | None, digits: int) -> object:
        return None if v is None else round(v, digits)

    return [
        m.samples,
        m.pools,
        m.singles,
        m.persons,
        m.positive,
        m.negative,
        m.invalid,
        r(m.positivity, 4),
        m.recall,
        m.tat_count,
        r(m.tat_median_h, 2),
        r(m.tat_p90_h, 2),
        r(m.uptime, 4),
        r(m.throughput_per_h, 1),
    ]


def _metric_headers(lang: str) -> list[str]:
    keys = {
        "tat_median": "reports.tat_median",
        "tat_p90": "reports.tat_p90",
        "tat_count": "reports.tat_count",
    }
    return [_translator(lang)(keys.get(c, f"reports.{c}")) for c in COLUMNS]


def summary_rows(report: Report, lang: str) -> list[list[object]]:
    """Header + one line per facility, district and province (the CSV download)."""
    t = _translator(lang)
    head: list[object] = [
        t("reports.period"),
        t("reports.level"),
        t("reports.code"),
        t("reports.unit"),
        t("common.district"),
        *_metric_headers(lang),
    ]
    out: list[list[object]] = [head]
    for row in report.rows:
        parent = row.parent.name if row.parent is not None and row.level == "facility" else ""
        out.append(
            [
                report.period.label,
                t(f"reports.level.{row.level}"),
                row.org.code,
                row.org.name,
                parent,
                *_metric_values(row.metrics),
            ]
        )
    return out


def to_csv(report: Report, lang: str) -> bytes:
    """UTF-8 with a BOM, so that Excel opens the Vietnamese text correctly; names kept as text
    (``server.spreadsheet``)."""
    return csv_bytes(summary_rows(report, lang))


def to_xlsx(report: Report, lang: str) -> bytes:
    """Three sheets: summary (facility, district, province), by day, stations."""
    t = _translator(lang)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = t("reports.summary")[:31]
    append_row(ws, [f"{t('reports.title_file')}: {report.node.name} — {report.period.label}"])
    ws["A1"].font = Font(bold=True, size=13)
    ws.append([f"{t('reports.generated_at')}: {report.generated_at:%Y-%m-%d %H:%M} UTC"])
    ws.append([])
    for i, line in enumerate(summary_rows(report, lang)):
        append_row(ws, line)
        if i == 0:
            for cell in ws[ws.max_row]:
                cell.font = Font(bold=True)
    _widths(ws)

    daily = wb.create_sheet(t("reports.daily")[:31])
    daily.append([t("common.date"), *_metric_headers(lang)])
    for cell in daily[1]:
        cell.font = Font(bold=True)
    for day, m in report.daily:
        daily.append([day, *_metric_values(m)])
        daily.cell(row=daily.max_row, column=1).number_format = "yyyy-mm-dd"
    _widths(daily)

    st = wb.create_sheet(t("reports.stations")[:31])
    append_row(
        st,
        [
            t("common.station"),
            t("reports.unit"),
            t("reports.station_hours"),
            t("reports.records"),
            t("reports.uptime"),
            t("reports.throughput"),
        ],
    )
    for cell in st[1]:
        cell.font = Font(bold=True)
    names = {r.org.id: r.org.name for r in report.rows}
    for s in report.stations:
        m = s.metrics
        append_row(
            st,
            [
                s.station_id,
                names.get(s.facility_id or -1, ""),
                m.station_hours,
                m.station_records,
                None if m.uptime is None else round(m.uptime, 4),
                None if m.throughput_per_h is None else round(m.throughput_per_h, 1),
            ],
        )
    _widths(st)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _widths(ws: Worksheet) -> None:
    for index, column in enumerate(ws.columns, 1):
        letter = get_column_letter(index)
        longest = max((len(str(c.value)) for c in column if c.value is not None), default=8)
        ws.column_dimensions[letter].width = min(max(10, longest + 2), 48)


def filename(report: Report, fmt: str) -> str:
    return f"swabline-{report.node.code}-{report.period.kind.value}-{report.period.label}.{fmt}"


# --- scheduled files -------------------------------------------------------------------------


def store_files(
    session: Session, report: Report, *, lang: str, actor: str, now: datetime | None = None
) -> int:
    """Store the XLSX and CSV of ``report``, replacing older ones of the same period and node;
    returns how many were stored."""
    now = now or datetime.now(UTC)
    stored = 0
    for fmt, content in (("xlsx", to_xlsx(report, lang)), ("csv", to_csv(report, lang))):
        row = session.scalars(
            select(ReportFile).where(
                ReportFile.period == report.period.kind.value,
                ReportFile.period_start == report.period.start.isoformat(),
                ReportFile.organisation_id == report.node.id,
                ReportFile.format == fmt,
            )
        ).first()
        if row is not None:
            row.filename, row.content = filename(report, fmt), content
            row.generated_at, row.generated_by = now, actor[:100]
            stored += 1
            continue
        try:
            with session.begin_nested():
                session.add(
                    ReportFile(
                        period=report.period.kind.value,
                        period_start=report.period.start.isoformat(),
                        organisation_id=report.node.id,
                        format=fmt,
                        filename=filename(report, fmt),
                        content=content,
                        generated_at=now,
                        generated_by=actor[:100],
                    )
                )
        except IntegrityError:
            continue  # another process stored it meanwhile
        stored += 1
    return stored


def due_periods(today: date) -> list[Period]:
    """The last complete week and month before ``today`` (local date)."""
    return [
        Period.containing(PeriodKind.WEEK, today).previous(),
        Period.containing(PeriodKind.MONTH, today).previous(),
    ]


CATCH_UP_DAYS = 31
"""How far back the scheduler looks for files still waiting for their last rebuild (a server
that was down when it was due)."""


def rebuild_periods(today: date, rebuild_days: int) -> list[Period]:
    """Complete weeks and months before the last ones that may still be rebuilt: those that
    ended within the last ``rebuild_days`` days (plus ``CATCH_UP_DAYS``)."""
    out = []
    for last in due_periods(today):
        p = last.previous()
        while p.end + timedelta(days=rebuild_days + CATCH_UP_DAYS) > today:
            out.append(p)
            p = p.previous()
    return out


def is_stale(
    generated_at: datetime, period: Period, *, today: date, tz: ZoneInfo, rebuild_days: int
) -> bool:
    """Whether a file must be made again: results keep arriving for ``rebuild_days`` days after
    the period ends (late lab results, stations that were offline), so a file made before that
    is remade once a day, and once more on or after the last of those days."""
    final = period.end + timedelta(days=rebuild_days)
    return generated_at.astimezone(tz).date() < min(today, final)


def generate(
    engine: Engine,
    *,
    tz: ZoneInfo,
    lang: str,
    periods: list[Period] | None = None,
    now: datetime | None = None,
    rebuild_days: int = 7,
    actor: str = "scheduler",
) -> int:
    """Make the report files of every active province and district for ``periods`` (default:
    the last complete week and month, see ``due_periods``): those missing, and those made
    too early (``is_stale``). Without ``periods``, earlier files still within their rebuild days
    are remade too. Returns how many files were stored."""
    now = now or datetime.now(UTC)
    today = now.astimezone(tz).date()
    make = periods if periods is not None else due_periods(today)
    wanted = [(p, True) for p in make]
    if periods is None:
        wanted += [(p, False) for p in rebuild_periods(today, rebuild_days)]
    stored = 0
    with Session(engine) as session:
        nodes = session.scalars(
            select(Organisation)
            .where(Organisation.kind.in_(("province", "district")), Organisation.active.is_(True))
            .order_by(Organisation.path)
        ).all()
        for period, missing_too in wanted:
            made: dict[int, dict[str, datetime]] = {}
            for node_id, fmt, at in session.execute(
                select(
                    ReportFile.organisation_id, ReportFile.format, ReportFile.generated_at
                ).where(
                    ReportFile.period == period.kind.value,
                    ReportFile.period_start == period.start.isoformat(),
                )
            ):
                made.setdefault(node_id, {})[fmt] = at
            for node in nodes:
                have = made.get(node.id, {})
                missing = not {"xlsx", "csv"} <= set(have)
                stale = any(
                    is_stale(at, period, today=today, tz=tz, rebuild_days=rebuild_days)
                    for at in have.values()
                )
                if not ((missing and missing_too) or stale):
                    continue
                report = build_report(session, node, period, tz=tz)
                stored += store_files(session, report, lang=lang, actor=actor, now=now)
                session.commit()
    if stored:
        log.info("report files: %d made", stored)
    return stored


class ReportScheduler:
    """Runs ``generate`` a minute after start, then every ``check_interval_s``, until stopped."""

    def __init__(
        self,
        *,
        engine: Engine,
        tz: ZoneInfo,
        lang: str,
        check_interval_s: float = 600.0,
        first_check_s: float = 60.0,
        rebuild_days: int = 7,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self._tz = tz
        self._lang = lang
        self._interval = check_interval_s
        self._first = first_check_s
        self._rebuild_days = rebuild_days
        self._clock = clock or (lambda: datetime.now(UTC))

    def run(self, stop: threading.Event) -> None:
        """Check after ``first_check_s`` (leaving a starting server to its ingest workers), then
        every ``check_interval_s``; errors propagate (the caller restarts)."""
        stop.wait(self._first)
        while not stop.is_set():
            generate(
                self._engine,
                tz=self._tz,
                lang=self._lang,
                now=self._clock(),
                rebuild_days=self._rebuild_days,
            )
            stop.wait(self._interval)


def cli(args: argparse.Namespace) -> int:
    """``swabline reports generate``."""
    from server.config import load_config
    from server.db import make_engine, migrate
    from server.errors import ServerError

    try:
        config = load_config(args.config)
        tz = ZoneInfo(config.reports.timezone)
        periods = None
        if args.date or args.period:
            try:
                day = date.fromisoformat(args.date) if args.date else datetime.now(tz).date()
            except ValueError:
                print(f"swabline reports: --date {args.date!r} is not YYYY-MM-DD", file=sys.stderr)
                return 2
            kinds = (
                [PeriodKind(args.period)] if args.period else [PeriodKind.WEEK, PeriodKind.MONTH]
            )
            periods = [Period.containing(k, day) for k in kinds]
        engine = make_engine(config.database.url)
        migrate(engine)
        made = generate(
            engine,
            tz=tz,
            lang=config.reports.language,
            periods=periods,
            rebuild_days=config.reports.rebuild_days,
            actor="swabline reports",
        )
        engine.dispose()
    except ServerError as exc:
        print(f"swabline reports: {exc}", file=sys.stderr)
        return 2
    print(f"{made} report file(s) made")
    return 0
