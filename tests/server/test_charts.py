"""Server-rendered SVG charts: well-formed, scaled to round numbers, text escaped, gaps kept."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from server.charts import bar_chart, line_chart

NS = "{http://www.w3.org/2000/svg}"


def test_stacked_bars_have_one_rect_per_value_and_round_axis_labels() -> None:
    svg = bar_chart("Số mẫu", ["16/11", "17/11"], [("Gộp", [3, 0]), ("Đơn", [1, 2])])
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 4
    axis = [t.text for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end"]
    assert axis == ["0", "1", "2", "3", "4", "5"]  # peak 4 -> top 5 in steps of 1
    # The tallest stack (3 + 1 = 4) is 4/5 of the plot height.
    heights = sorted(float(r.get("height", 0)) for r in bars)
    assert heights[-1] == max(heights)
    assert "Gộp" in svg and root.find(f"{NS}title") is not None


def test_labels_are_escaped_and_lines_break_at_missing_values() -> None:
    svg = line_chart("<Tỷ lệ>", ["a&b", "c", "d"], [("x", [0.1, None, 0.3])], unit="%")
    root = ET.fromstring(svg)  # parses: '<' and '&' were escaped
    assert root.find(f"{NS}title").text == "<Tỷ lệ>"  # type: ignore[union-attr]
    assert len(list(root.iter(f"{NS}polyline"))) == 2
    assert len(list(root.iter(f"{NS}circle"))) == 2
    axis = [t.text for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end"]
    assert axis[-1] == "50%"


def test_empty_data_still_draws_an_axis() -> None:
    root = ET.fromstring(line_chart("t", [], [("x", [])], unit="h"))
    assert next(t.text for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end") == "0h"
