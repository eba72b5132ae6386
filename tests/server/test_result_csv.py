"""Reading lab CSV exports: encodings, separators, column names, and a report for every row."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from server.result_csv import RowStatus, fold, guess_mapping, parse_results_csv

VN = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def parse(text: str, **kw: object) -> object:
    return parse_results_csv(text.encode(), tz=VN, default_reported_at=NOW, **kw)  # type: ignore[arg-type]


def test_vietnamese_headers_with_a_bom_and_semicolons_are_read() -> None:
    data = (
        "\ufeffMã ống;Kết quả;Ngày trả kết quả\r\n"
        "KG-RG-000001;Âm tính;28/11/2026 14:30\r\n"
        "KG-RG-000002;Dương tính;2026-11-28\r\n"
    ).encode()
    f = parse_results_csv(data, tz=VN, default_reported_at=NOW)
    assert f.ok and f.had_bom and f.delimiter == ";"
    assert f.mapping == {"tube": "Mã ống", "result": "Kết quả", "reported_at": "Ngày trả kết quả"}
    assert [(r.tube, r.result) for r in f.rows] == [
        ("KG-RG-000001", "negative"),
        ("KG-RG-000002", "positive"),
    ]
    # 14:30 in Vietnam (UTC+7) is 07:30 UTC.
    assert f.rows[0].reported_at == datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
    assert f.rows[1].reported_at == datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


def test_the_same_file_without_a_bom_reads_the_same() -> None:
    body = "tube,result\nA-1,negative\nA-2,POS\nA-3,+\nA-4,khong xac dinh\n"
    with_bom = parse_results_csv(b"\xef\xbb\xbf" + body.encode(), tz=VN, default_reported_at=NOW)
    without = parse_results_csv(body.encode(), tz=VN, default_reported_at=NOW)
    assert with_bom.ok and without.ok
    assert [(r.tube, r.result) for r in with_bom.rows] == [(r.tube, r.result) for r in without.rows]
    assert [r.result for r in without.rows] == ["negative", "positive", "positive", "invalid"]
    assert all(r.reported_at == NOW for r in without.rows)


def test_wrong_columns_are_a_file_error_naming_the_columns_found() -> None:
    f = parse("Sample;Outcome date\nA-1;2026-11-28\n")
    assert not f.ok
    assert f.rows == []
    assert f.errors == [
        "no column for result: columns found: 'Sample', 'Outcome date'; choose the columns by hand"
    ]


def test_a_hand_mapping_replaces_the_guess() -> None:
    f = parse("Barcode,Status,Ghi chú\nA-1,neg,x\n", mapping={"result": "Status"})
    assert f.ok
    assert f.mapping == {"tube": "Barcode", "result": "Status"}
    assert f.rows[0].result == "negative"
    bad = parse("Barcode,Status\nA-1,neg\n", mapping={"result": "Nope"})
    assert bad.errors == ["column 'Nope' (for result) is not in the file"]


def test_every_bad_row_is_reported_with_its_line_and_reason() -> None:
    f = parse(
        "tube,result,date,test kind\n"
        "A-1,negative,2026-11-28,RT-PCR\n"
        ",negative,2026-11-28,\n"
        "A-2,maybe,2026-11-28,\n"
        "A-3,negative,31/02/2026,\n"
        "A-1,positive,2026-11-28,\n"
        "\n"
        "A-4,negative,2026-11-28,saliva\n"
        "A-5,negative\n"
    )
    assert not f.ok
    report = [(r.line, r.status, r.errors) for r in f.rows]
    assert report == [
        (2, RowStatus.NEW, []),
        (3, RowStatus.ERROR, ["no tube code"]),
        (4, RowStatus.ERROR, ["result 'maybe' is not one of positive, negative, invalid"]),
        (
            5,
            RowStatus.ERROR,
            ["date '31/02/2026' is not YYYY-MM-DD[ HH:MM] or DD/MM/YYYY[ HH:MM]"],
        ),
        (6, RowStatus.ERROR, ["tube A-1 already appears on line 2"]),
        (7, RowStatus.BLANK, []),
        (8, RowStatus.ERROR, ["test kind 'saliva' is not RT-PCR or rapid antigen"]),
        (9, RowStatus.ERROR, ["2 fields where the header has 4"]),
    ]
    assert f.rows[0].test_kind == "rt_pcr"


def test_a_file_that_is_not_utf8_is_refused_with_advice() -> None:
    data = "tube,result\nA-1,Âm tính\n".encode("cp1258")
    f = parse_results_csv(data, tz=VN)
    assert f.errors == ["the file is not UTF-8 text (line 2, byte 17): export it as 'CSV UTF-8'"]


def test_empty_files_and_header_only_files_are_refused() -> None:
    assert parse("").errors == ["the file is empty"]
    assert parse("tube,result\n\n").errors == ["the file has a header but no data rows"]


def test_duplicate_column_names_are_refused() -> None:
    assert parse("tube,result,result\nA,neg,pos\n").errors[0] == (
        "columns appear more than once: result"
    )


def test_folding_and_guessing() -> None:
    assert fold("  Ngày_trả  KẾT-QUẢ ") == "ngay tra ket qua"
    assert fold("Đơn vị") == "don vi"
    assert guess_mapping(["Mã mẫu", "KQ", "Loại xét nghiệm"]) == {
        "tube": "Mã mẫu",
        "result": "KQ",
        "test_kind": "Loại xét nghiệm",
    }
