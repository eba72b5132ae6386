"""Reports per facility, district and province: counts, positivity, turnaround percentiles,
station uptime and throughput; CSV and XLSX files; the scheduled weekly and monthly files."""

from __future__ import annotations

import csv
import io
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.activity import hour_of, record_activity
from server.db import make_engine, migrate
from server.lab import receive_tube
from server.models import Organisation, ReportFile
from server.report_files import ReportScheduler, generate, to_csv, to_xlsx
from server.reports import (
    Period,
    PeriodKind,
    build_report,
    percentile_from_histogram,
)
from server.results import ResultsContext, enter_result
from server.signing import SlipSigner
from swabline.cli import main
from tests.server.world import PEOPLE, World, build_world

VN = ZoneInfo("Asia/Ho_Chi_Minh")
CTX = ResultsContext(signer=SlipSigner(b"k" * 32), tz=VN)
# Monday 2026-11-16, 08:00 in Vietnam.
MON = datetime(2026, 11, 16, 8, 0, tzinfo=VN)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    migrate(engine)
    yield build_world(engine)
    engine.dispose()


def result(world: World, code: str, value: str, at: datetime) -> None:
    with Session(world.engine) as s, s.begin():
        receive_tube(s, tube_code=code, lab_id=world.lab, at=at - timedelta(hours=1))
        enter_result(s, world.lab_staff, CTX, tube_code=code, value=value, reported_at=at)


def populate(world: World) -> None:
    """Monday: S1 takes a pool of 3 at 08:30 (positive after 6 h) and a single at 08:40
    (negative after 10 h); S2 a pool of 2 at 08:50 (negative after 30 h). Tuesday: S1 a single
    with no result yet. Sunday 23:30 (still the same week) S2 a single, negative after 1 h 2 min,
    so reported the next week. Times are local (UTC+7); Monday 08:00-09:00 is hour H1."""
    m = MON.timestamp()
    world.sample("st-1", "S1-1", PEOPLE, at=m + 1800)
    world.sample("st-1", "S1-2", PEOPLE[:1], at=m + 2400, mode="single")
    world.sample("st-2", "S2-1", PEOPLE[1:], at=m + 3000)
    world.sample("st-1", "S1-3", PEOPLE[2:], at=m + 86400 + 1800, mode="single")
    sunday = datetime(2026, 11, 22, 23, 30, tzinfo=VN)
    world.sample("st-2", "S2-2", PEOPLE[:1], at=sunday.timestamp(), mode="single")
    result(world, "S1-1", "positive", MON + timedelta(minutes=30, hours=6))
    result(world, "S1-2", "negative", MON + timedelta(minutes=40, hours=10))
    result(world, "S2-1", "negative", MON + timedelta(minutes=50, hours=30))
    result(world, "S2-2", "negative", sunday + timedelta(hours=1, minutes=2))
    # Besides the records above (st-1: 8 in H1 and 3 on Tuesday; st-2: 4 in H1 and 3 on
    # Sunday), st-1 was heard 45 minutes of H1 and 15 of the next hour and made 20 more
    # records in H1; st-2 was heard every minute of H1 and made 5 more records.
    h1 = MON.astimezone(UTC)
    with Session(world.engine) as s, s.begin():
        heard = [("st-1", h1 + timedelta(minutes=m)) for m in range(45)]
        heard += [("st-1", h1 + timedelta(hours=1, minutes=m)) for m in range(15)]
        heard += [("st-2", h1 + timedelta(minutes=m, seconds=30)) for m in range(60)]
        records = [("st-1", h1 + timedelta(minutes=2 * i)) for i in range(20)]
        records += [("st-2", h1 + timedelta(minutes=i)) for i in range(5)]
        record_activity(s, heard=heard[:70], records=records[:10])
        record_activity(s, heard=heard[70:], records=records[10:])  # a second batch adds up


def test_a_weekly_report_counts_per_facility_district_and_province(world: World) -> None:
    populate(world)
    week = Period.containing(PeriodKind.WEEK, date(2026, 11, 18))
    assert (week.start, week.end, week.label) == (
        date(2026, 11, 16),
        date(2026, 11, 23),
        "2026-W47",
    )
    with Session(world.engine) as s:
        province = s.get(Organisation, world.province)
        assert province is not None
        report = build_report(s, province, week, tz=VN)
    by_code = {r.org.code: r for r in report.rows}
    assert [r.level for r in report.rows] == [
        "facility",
        "facility",
        "facility",
        "district",
        "district",
        "province",
    ]
    s1, s2, lab = by_code["KG-RG-S1"].metrics, by_code["KG-PQ-S2"].metrics, by_code["KG-RG-LAB"]
    assert (s1.samples, s1.pools, s1.singles, s1.persons) == (3, 1, 2, 5)
    assert (s1.positive, s1.negative, s1.invalid, s1.recall) == (1, 1, 0, 3)
    assert s1.positivity == 0.5
    assert (s2.samples, s2.persons, s2.negative, s2.positivity) == (2, 3, 2, 0.0)
    assert lab.metrics.samples == 0
    # Turnaround: S1 6 h and 10 h; the median is the lower (nearest rank), p90 the upper; each
    # reported as the middle of its 5-minute bucket.
    assert s1.tat_count == 2
    assert s1.tat_median_h == pytest.approx(6 + 2.5 / 60)
    assert s1.tat_p90_h == pytest.approx(10 + 2.5 / 60)
    # S2-2's result came the next week: only S2-1 (30 h) counts this week.
    assert (s2.tat_count, s2.tat_median_h) == (1, pytest.approx(30 + 2.5 / 60))
    rach_gia = by_code["KG-RG"].metrics
    assert (rach_gia.samples, rach_gia.positive) == (3, 1)
    total = by_code["KG"].metrics
    assert (total.samples, total.persons, total.recall, total.tat_count) == (5, 8, 3, 3)
    assert total.tat_median_h == pytest.approx(10 + 2.5 / 60)
    assert total.positivity == pytest.approx(1 / 4)
    assert report.total.samples == 5
    # Stations: st-1 was in use 3 hours (H1, the hour after, Tuesday's), heard 60 minutes, 31
    # records. Its Monday ran from H1's first minute to the 15th of the next hour (75 minutes,
    # 60 heard); on Tuesday it made records in one hour but was never heard (60 minutes, 0).
    # st-2: 2 hours (H1 heard whole, Sunday's records unheard), 60 of 120 minutes, 12 records.
    stations = {st.station_id: st.metrics for st in report.stations}
    assert (stations["st-1"].uptime, stations["st-1"].throughput_per_h) == (
        pytest.approx(60 / 135),
        pytest.approx(31 / 3),
    )
    assert (stations["st-2"].uptime, stations["st-2"].throughput_per_h) == (0.5, 6.0)
    assert (s1.station_hours, s1.station_minutes, s1.station_records) == (3, 60, 31)
    assert s1.station_span_minutes == 135
    # By local day: Monday has three samples, Tuesday one, Sunday one.
    daily = {d: m.samples for d, m in report.daily}
    assert daily == {
        date(2026, 11, 16): 3,
        date(2026, 11, 17): 1,
        date(2026, 11, 18): 0,
        date(2026, 11, 19): 0,
        date(2026, 11, 20): 0,
        date(2026, 11, 21): 0,
        date(2026, 11, 22): 1,
    }


def test_a_district_report_and_a_scoped_report_leave_out_what_is_not_theirs(world: World) -> None:
    populate(world)
    day = Period(PeriodKind.DAY, date(2026, 11, 16))
    with Session(world.engine) as s:
        district = s.get(Organisation, world.phu_quoc)
        province = s.get(Organisation, world.province)
        assert district is not None and province is not None
        report = build_report(s, district, day, tz=VN)
        assert [r.org.code for r in report.rows] == ["KG-PQ-S2", "KG-PQ"]
        assert report.total.samples == 1
        scoped = build_report(s, province, day, tz=VN, facility_ids=[world.s1])
        assert [r.org.code for r in scoped.rows] == ["KG-RG-S1", "KG-RG", "KG"]
        assert scoped.total.samples == 2


def test_csv_and_xlsx_downloads_carry_the_same_numbers(world: World) -> None:
    populate(world)
    week = Period.containing(PeriodKind.WEEK, date(2026, 11, 16))
    with Session(world.engine) as s:
        province = s.get(Organisation, world.province)
        assert province is not None
        report = build_report(s, province, week, tz=VN)
    data = to_csv(report, "vi")
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0][:6] == ["Kỳ báo cáo", "Cấp", "Mã", "Đơn vị", "Quận/huyện", "Số mẫu"]
    s1 = next(r for r in rows if r[2] == "KG-RG-S1")
    assert s1[:9] == [
        "2026-W47",
        "Cơ sở",
        "KG-RG-S1",
        "Trạm y tế phường Vĩnh Thanh",
        "Thành phố Rạch Giá",
        "3",
        "1",
        "2",
        "5",
    ]
    english = list(csv.reader(io.StringIO(to_csv(report, "en").decode("utf-8-sig"))))
    assert english[0][5] == "Samples"

    book = load_workbook(io.BytesIO(to_xlsx(report, "en")))
    assert book.sheetnames == ["Summary", "By day", "Stations"]
    summary = [list(r) for r in book["Summary"].iter_rows(values_only=True)]
    header = summary[3]
    assert header[:6] == ["Period", "Level", "Code", "Unit", "District", "Samples"]
    province_line = next(r for r in summary if r[2] == "KG")
    assert province_line[5:9] == [5, 2, 3, 8]
    positivity = header.index("Positivity")
    assert province_line[positivity] == 0.25
    stations = [list(r) for r in book["Stations"].iter_rows(values_only=True)]
    assert stations[1][:4] == ["st-1", "Trạm y tế phường Vĩnh Thanh", 3, 31]
    by_day = [list(r) for r in book["By day"].iter_rows(values_only=True)]
    assert by_day[1][0].date() == date(2026, 11, 16) and by_day[1][1] == 3


def test_scheduled_files_are_made_once_for_every_province_and_district(world: World) -> None:
    populate(world)
    now = datetime(2026, 12, 2, 8, 0, tzinfo=VN)  # a Wednesday: W48 and November are due
    assert generate(world.engine, tz=VN, lang="vi", now=now) == 12  # 3 nodes x 2 x 2
    later = now + timedelta(hours=8)  # the same day: nothing to make
    assert generate(world.engine, tz=VN, lang="vi", now=later) == 0
    with Session(world.engine) as s:
        files = s.scalars(select(ReportFile).order_by(ReportFile.id)).all()
        names = sorted(f.filename for f in files)
        assert "swabline-KG-month-2026-11.xlsx" in names
        assert "swabline-KG-PQ-week-2026-W48.csv" in names
        month = next(f for f in files if f.filename == "swabline-KG-month-2026-11.csv")
        text = month.content.decode("utf-8-sig")
    assert "2026-11,Tỉnh,KG,Tỉnh Kiên Giang,,5,2,3,8" in text

    # The scheduler thread does the same on its own, then waits.
    stop = threading.Event()
    scheduler = ReportScheduler(
        engine=world.engine,
        tz=VN,
        lang="en",
        check_interval_s=3600,
        first_check_s=0,
        clock=lambda: datetime(2027, 1, 5, 8, 0, tzinfo=VN),
    )
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while datetime.now(UTC) < deadline:
            with Session(world.engine) as s:
                made = s.scalars(
                    select(ReportFile.filename).where(ReportFile.period_start == "2026-12-01")
                ).all()
            if len(made) == 6:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join()
    assert sorted(made)[0] == "swabline-KG-PQ-month-2026-12.csv"


def test_percentiles_use_nearest_rank_on_5_minute_buckets() -> None:
    hist = Counter({0: 1, 12: 8, 100: 1})  # 10 samples
    assert percentile_from_histogram(hist, 0.5) == pytest.approx(12.5 * 300 / 3600)
    assert percentile_from_histogram(hist, 0.9) == pytest.approx(12.5 * 300 / 3600)
    assert percentile_from_histogram(hist, 0.91) == pytest.approx(100.5 * 300 / 3600)
    assert percentile_from_histogram(Counter(), 0.5) is None


def test_periods() -> None:
    assert Period.containing(PeriodKind.MONTH, date(2026, 12, 31)).end == date(2027, 1, 1)
    assert Period.containing(PeriodKind.WEEK, date(2027, 1, 1)).label == "2026-W53"
    assert Period.containing(PeriodKind.MONTH, date(2026, 1, 9)).previous().label == "2025-12"
    lo, hi = Period(PeriodKind.DAY, date(2026, 11, 16)).bounds(VN)
    assert (lo, hi) == (
        datetime(2026, 11, 15, 17, 0, tzinfo=UTC),
        datetime(2026, 11, 16, 17, 0, tzinfo=UTC),
    )


def test_ingest_keeps_the_minutes_each_station_was_heard_and_its_records(world: World) -> None:
    from server.ingest import classify, store_resilient
    from server.models import StationActivity
    from tests.server.factories import raw

    heartbeat = {"v": 1, "time": 1.0, "uptime_s": 5.0, "outbox_depth": 0}
    before = datetime.now(UTC)
    store_resilient(world.engine, classify([raw("st-2", heartbeat, "heartbeat")]))
    world.sample("st-1", "S1-9", PEOPLE[:2], at=MON.timestamp() + 1800)
    with Session(world.engine) as s:
        rows = sorted(
            (a.station_id, a.hour, bin(a.minutes).count("1"), a.records)
            for a in s.scalars(select(StationActivity))
        )
    hours = {hour_of(before), hour_of(datetime.now(UTC))}
    # Heard: the minute each message arrived. Records: the hour they were made (the station's
    # synchronised clock), here a past morning when the station was not heard at all.
    st2 = [r for r in rows if r[0] == "st-2"]
    assert len(st2) == 1 and st2[0][1] in hours and st2[0][2:] == (1, 0)
    st1 = [r[1:] for r in rows if r[0] == "st-1"]
    assert st1[0] == (MON.astimezone(UTC), 0, 4)
    assert len(st1) == 2 and st1[1][0] in hours and st1[1][1:] == (1, 0)


def test_the_reports_command_backfills_a_period(world: World, tmp_path: Path) -> None:
    populate(world)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[database]\nurl = "{world.engine.url.render_as_string(hide_password=False)}"\n'
        '[reports]\nlanguage = "en"\n'
    )
    args = ["reports", "--config", str(config), "generate", "--period", "week", "--date"]
    assert main([*args, "2026-11-18"]) == 0
    assert main([*args, "2026-11-18"]) == 0  # kept, not made twice
    assert main([*args, "18/11/2026"]) == 2
    with Session(world.engine) as s:
        names = sorted(s.scalars(select(ReportFile.filename)).all())
    assert names == [
        "swabline-KG-PQ-week-2026-W47.csv",
        "swabline-KG-PQ-week-2026-W47.xlsx",
        "swabline-KG-RG-week-2026-W47.csv",
        "swabline-KG-RG-week-2026-W47.xlsx",
        "swabline-KG-week-2026-W47.csv",
        "swabline-KG-week-2026-W47.xlsx",
    ]


def test_report_files_keep_names_as_text(world: World) -> None:
    """An organisation or station name that starts like a formula stays text in CSV and XLSX."""
    from server.models import StationRow

    populate(world)
    with Session(world.engine) as s, s.begin():
        s1 = s.get(Organisation, world.s1)
        assert s1 is not None
        s1.name = '=HYPERLINK("http://evil.example","x")'
        s.get_one(StationRow, "st-1").name = "-1+2"
    week = Period.containing(PeriodKind.WEEK, date(2026, 11, 16))
    with Session(world.engine) as s:
        report = build_report(s, s.get_one(Organisation, world.province), week, tz=VN)
    rows = list(csv.reader(io.StringIO(to_csv(report, "en").decode("utf-8-sig"))))
    line = next(r for r in rows if r[2] == "KG-RG-S1")
    assert line[3] == '\'=HYPERLINK("http://evil.example","x")'
    book = load_workbook(io.BytesIO(to_xlsx(report, "en")))
    cells = [c for row in book["Summary"].iter_rows() for c in row if c.value is not None]
    named = [c for c in cells if str(c.value).startswith("=HYPERLINK")]
    assert [(c.data_type, c.value) for c in named] == [
        ("s", '=HYPERLINK("http://evil.example","x")')
    ]
    assert not any(c.data_type == "f" for sheet in book for row in sheet.iter_rows() for c in row)


def test_uptime_counts_whole_hours_of_silence_and_operating_hours(world: World) -> None:
    """st-1 is heard every minute 08:00-09:00 and 15:00-16:00 on Monday and not at all in
    between: 120 minutes heard of a 480-minute day (not 100%, as counting only the hours it was
    heard would say). With operating hours 07:00-17:00 the day is those 600 minutes. On
    Tuesday it dies at 09:00: without a schedule nothing tells how long the day should have
    been; with one, it was down until 17:00."""
    from server.models import FacilitySchedule

    h8 = MON.astimezone(UTC)
    monday = [h8 + timedelta(minutes=m) for m in range(60)]
    monday += [h8 + timedelta(hours=7, minutes=m) for m in range(60)]
    tuesday = [h8 + timedelta(days=1, minutes=m) for m in range(60)]
    with Session(world.engine) as s, s.begin():
        record_activity(s, heard=[("st-1", at) for at in monday + tuesday], records=[])
    week = Period.containing(PeriodKind.WEEK, MON.date())

    def uptime(day: date | None = None) -> float | None:
        period = Period(PeriodKind.DAY, day) if day else week
        with Session(world.engine) as s:
            report = build_report(s, s.get_one(Organisation, world.province), period, tz=VN)
        return next(st.metrics.uptime for st in report.stations if st.station_id == "st-1")

    assert uptime(MON.date()) == pytest.approx(120 / 480)
    assert uptime(MON.date() + timedelta(days=1)) == 1.0
    assert uptime() == pytest.approx((120 + 60) / (480 + 60))
    with Session(world.engine) as s, s.begin():
        s.add(
            FacilitySchedule(
                facility_id=world.s1,
                timezone="Asia/Ho_Chi_Minh",
                windows=[{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "17:00"}],
                updated_at=datetime.now(UTC),
            )
        )
    assert uptime(MON.date()) == pytest.approx(120 / 600)
    assert uptime(MON.date() + timedelta(days=1)) == pytest.approx(60 / 600)
    assert uptime() == pytest.approx(180 / 1200)  # days it was not in use are not counted


def test_a_night_shift_counts_on_the_days_it_covers(world: World) -> None:
    """Operating hours that run past midnight (22:00-06:00) belong to both local days."""
    from server.models import FacilitySchedule

    night = datetime(2026, 11, 16, 23, 0, tzinfo=VN).astimezone(UTC)
    with Session(world.engine) as s, s.begin():
        heard = [("st-1", night + timedelta(minutes=m)) for m in range(30)]
        record_activity(s, heard=heard, records=[])
        s.add(
            FacilitySchedule(
                facility_id=world.s1,
                timezone="Asia/Ho_Chi_Minh",
                windows=[{"days": [7], "start": "22:00", "end": "06:00"}],
                updated_at=datetime.now(UTC),
            )
        )
    with Session(world.engine) as s:
        report = build_report(
            s, s.get_one(Organisation, world.province), Period(PeriodKind.DAY, MON.date()), tz=VN
        )
    st1 = next(st.metrics for st in report.stations if st.station_id == "st-1")
    # Monday 23:00-23:30 heard; Sunday night's shift covers Monday 00:00-06:00 (360 minutes).
    assert (st1.station_minutes, st1.station_span_minutes) == (30, 30 + 360)


def test_report_files_are_made_again_while_late_results_arrive(world: World) -> None:
    """Week 47 ends on Sunday 22 November. Its files are made early on Monday; a result for one
    of its samples arrives on Tuesday; the files made again on Wednesday have it. The last
    rebuild is on 30 November (reports.rebuild_days = 7 after the end); later runs leave the
    files alone, and a server that was down on that day makes them once more when it is back."""
    populate(world)  # S1-3, Tuesday 17 November, has no result yet

    def run(day: int, month: int = 11, hour: int = 0) -> int:
        now = datetime(2026, month, day, hour, 30, tzinfo=VN)
        return generate(world.engine, tz=VN, lang="en", now=now, rebuild_days=7)

    def week_47() -> tuple[datetime, list[str]]:
        with Session(world.engine) as s:
            f = s.scalars(
                select(ReportFile).where(ReportFile.filename == "swabline-KG-week-2026-W47.csv")
            ).one()
            province = next(
                line
                for line in csv.reader(io.StringIO(f.content.decode("utf-8-sig")))
                if line[2] == "KG"
            )
        return f.generated_at, province

    assert run(23) == 12  # W47 and October, 3 nodes, 2 formats
    made, line = week_47()
    assert made == datetime(2026, 11, 23, 0, 30, tzinfo=VN)
    samples, positive = line[5], line[9]
    assert (samples, positive) == ("5", "1")
    assert run(23, hour=12) == 0  # once a day
    result(world, "S1-3", "positive", datetime(2026, 11, 24, 10, 0, tzinfo=VN))
    assert run(24) == 6  # W47 again (October's files were made after its days)
    made, line = week_47()
    assert made == datetime(2026, 11, 24, 0, 30, tzinfo=VN) and line[9] == "2"
    assert run(30) == 12  # W47's last rebuild, and W48 made
    assert run(1, month=12) == 12  # W47 left alone; W48 again; November made
    assert week_47()[0] == datetime(2026, 11, 30, 0, 30, tzinfo=VN)
    # The server is down from 2 to 8 December, past W48's and November's last days: on the
    # 9th it makes W49, and W48 and November once more (their last rebuild); then only W49.
    assert run(9, month=12) == 18
    assert run(10, month=12) == 6
    with Session(world.engine) as s:
        stamps = s.execute(
            select(ReportFile.filename, ReportFile.generated_at).where(ReportFile.format == "csv")
        ).all()
    when = {name.removeprefix("swabline-KG-"): at for name, at in stamps}
    assert when["week-2026-W48.csv"] == datetime(2026, 12, 9, 0, 30, tzinfo=VN)
    assert when["month-2026-11.csv"] == datetime(2026, 12, 9, 0, 30, tzinfo=VN)
    assert when["week-2026-W49.csv"] == datetime(2026, 12, 10, 0, 30, tzinfo=VN)
    assert when["week-2026-W47.csv"] == datetime(2026, 11, 30, 0, 30, tzinfo=VN)


def test_a_file_is_stale_until_a_rebuild_on_or_after_its_last_day() -> None:
    from server.report_files import is_stale

    week = Period.containing(PeriodKind.WEEK, date(2026, 11, 18))  # ends 2026-11-23
    made = datetime(2026, 11, 23, 0, 30, tzinfo=VN)
    assert not is_stale(made, week, today=date(2026, 11, 23), tz=VN, rebuild_days=7)
    assert is_stale(made, week, today=date(2026, 11, 24), tz=VN, rebuild_days=7)
    late = datetime(2026, 11, 30, 23, 0, tzinfo=VN)
    assert not is_stale(late, week, today=date(2027, 1, 1), tz=VN, rebuild_days=7)
    assert not is_stale(made, week, today=date(2026, 12, 24), tz=VN, rebuild_days=0)
