"""Texts of the ops pages and alerts: Vietnamese first, English available."""

from __future__ import annotations

from typing import Any

LANGS = ("vi", "en")

TEXTS: dict[str, dict[str, str]] = {
    "fleet": {"vi": "Đội trạm", "en": "Fleet"},
    "alerts": {"vi": "Cảnh báo", "en": "Alerts"},
    "thresholds": {"vi": "Ngưỡng cảnh báo", "en": "Alert thresholds"},
    "schedules": {"vi": "Giờ hoạt động", "en": "Operating hours"},
    "station": {"vi": "Trạm", "en": "Station"},
    "facility": {"vi": "Cơ sở", "en": "Facility"},
    "district": {"vi": "Quận/huyện", "en": "District"},
    "unassigned": {"vi": "Chưa gán cơ sở", "en": "Not assigned to a facility"},
    "status": {"vi": "Trạng thái", "en": "Status"},
    "online": {"vi": "Trực tuyến", "en": "Online"},
    "stale": {"vi": "Mất tín hiệu", "en": "Stale"},
    "offline": {"vi": "Ngoại tuyến", "en": "Offline"},
    "offline_closed": {"vi": "Ngoại tuyến (ngoài giờ)", "en": "Offline (closed)"},
    "unknown": {"vi": "Chưa kết nối", "en": "Never seen"},
    "last_heartbeat": {"vi": "Nhịp tim cuối", "en": "Last heartbeat"},
    "backlog": {"vi": "Tồn đọng", "en": "Backlog"},
    "oldest": {"vi": "Cũ nhất", "en": "Oldest"},
    "scans_today": {"vi": "Lượt quét hôm nay", "en": "Scans today"},
    "temperature": {"vi": "Nhiệt độ", "en": "Temperature"},
    "disk_free": {"vi": "Đĩa trống", "en": "Disk free"},
    "wifi": {"vi": "Wi-Fi", "en": "Wi-Fi"},
    "version": {"vi": "Phiên bản", "en": "Version"},
    "open_alerts": {"vi": "Cảnh báo mở", "en": "Open alerts"},
    "summary": {"vi": "Tổng quan", "en": "Summary"},
    "updated": {"vi": "Cập nhật lúc", "en": "Updated at"},
    "live": {"vi": "Tự cập nhật", "en": "Live"},
    "connection_lost": {"vi": "Mất kết nối với máy chủ", "en": "Lost contact with the server"},
    "no_stations": {"vi": "Chưa có trạm nào", "en": "No station yet"},
    "history": {"vi": "Lịch sử 24 giờ", "en": "Last 24 hours"},
    "chart_backlog": {"vi": "Tồn đọng (bản ghi)", "en": "Backlog (records)"},
    "chart_scans": {"vi": "Lượt quét mỗi giờ", "en": "Scans per hour"},
    "chart_temperature": {"vi": "Nhiệt độ CPU (°C)", "en": "CPU temperature (°C)"},
    "chart_reconnects": {"vi": "Kết nối lại mỗi giờ", "en": "Reconnects per hour"},
    "no_data": {"vi": "Chưa có dữ liệu", "en": "No data yet"},
    "health": {"vi": "Tình trạng", "en": "Health"},
    "commands": {"vi": "Lệnh từ xa", "en": "Remote commands"},
    "send": {"vi": "Gửi", "en": "Send"},
    "cmd_identify": {"vi": "Nhận diện (nháy đèn, kêu bíp)", "en": "Identify (blink and beep)"},
    "cmd_set_setting": {"vi": "Đổi cài đặt", "en": "Change setting"},
    "cmd_restart": {"vi": "Khởi động lại phần mềm", "en": "Restart the agent"},
    "cmd_diagnostics": {"vi": "Lấy gói chẩn đoán", "en": "Request diagnostics"},
    "cmd_resync": {"vi": "Đồng bộ lại", "en": "Resynchronise"},
    "pool_size": {"vi": "Số mẫu gộp", "en": "Pool size"},
    "test_kind": {"vi": "Loại xét nghiệm", "en": "Test kind"},
    "command": {"vi": "Lệnh", "en": "Command"},
    "state": {"vi": "Tình trạng", "en": "State"},
    "created": {"vi": "Tạo lúc", "en": "Created"},
    "by": {"vi": "Bởi", "en": "By"},
    "expires": {"vi": "Hết hạn", "en": "Expires"},
    "result": {"vi": "Kết quả", "en": "Result"},
    "queued": {"vi": "Đang chờ", "en": "Queued"},
    "sent": {"vi": "Đã gửi", "en": "Sent"},
    "succeeded": {"vi": "Thành công", "en": "Succeeded"},
    "failed": {"vi": "Thất bại", "en": "Failed"},
    "expired": {"vi": "Hết hạn", "en": "Expired"},
    "open": {"vi": "Đang mở", "en": "Open"},
    "acknowledged": {"vi": "Đã tiếp nhận", "en": "Acknowledged"},
    "resolved": {"vi": "Đã xử lý", "en": "Resolved"},
    "acknowledge": {"vi": "Tiếp nhận", "en": "Acknowledge"},
    "resolve": {"vi": "Đánh dấu đã xử lý", "en": "Resolve"},
    "opened": {"vi": "Mở lúc", "en": "Opened"},
    "severity": {"vi": "Mức độ", "en": "Severity"},
    "critical": {"vi": "Nghiêm trọng", "en": "Critical"},
    "warning": {"vi": "Cảnh báo", "en": "Warning"},
    "kind": {"vi": "Loại", "en": "Kind"},
    "detail": {"vi": "Chi tiết", "en": "Detail"},
    "save": {"vi": "Lưu", "en": "Save"},
    "reset": {"vi": "Về mặc định", "en": "Reset to default"},
    "default": {"vi": "Mặc định", "en": "Default"},
    "diagnostics": {"vi": "Gói chẩn đoán", "en": "Diagnostics bundle"},
    "gaps": {"vi": "Bản ghi bị thiếu", "en": "Missing records"},
    "timezone": {"vi": "Múi giờ", "en": "Time zone"},
    "windows": {"vi": "Khung giờ", "en": "Windows"},
    "always_open": {
        "vi": "Không có lịch: coi như luôn hoạt động",
        "en": "No schedule: treated as always operating",
    },
    "in_hours": {"vi": "Trong giờ hoạt động", "en": "In operating hours"},
    "closed_now": {"vi": "Ngoài giờ hoạt động", "en": "Outside operating hours"},
    "clock": {"vi": "Đồng hồ", "en": "Clock"},
    "reconnects": {"vi": "Số lần kết nối lại", "en": "Reconnects"},
    "power": {"vi": "Nguồn điện", "en": "Power"},
    "scanners": {"vi": "Máy quét", "en": "Scanners"},
    "uptime": {"vi": "Thời gian chạy", "en": "Uptime"},
    "language": {"vi": "English", "en": "Tiếng Việt"},
    "unsynced": {"vi": "chưa đồng bộ", "en": "not synchronised"},
    "under_voltage": {"vi": "điện áp thấp", "en": "under-voltage"},
    "throttled": {"vi": "giảm xung", "en": "throttled"},
}

ALERT_TEXTS: dict[str, dict[str, str]] = {
    "offline": {
        "vi": "Trạm {station} mất kết nối {down} trong giờ hoạt động",
        "en": "Station {station} has been {status} for {down} during operating hours",
    },
    "backlog_old": {
        "vi": "Trạm {station}: bản ghi cũ nhất chưa gửi đã {oldest_age}",
        "en": "Station {station}: its oldest unsent record is {oldest_age} old",
    },
    "backlog_growing": {
        "vi": "Trạm {station}: tồn đọng tăng {grew} bản ghi (hiện {depth})",
        "en": "Station {station}: backlog grew by {grew} records (now {depth})",
    },
    "disk_low": {
        "vi": "Trạm {station}: đĩa chỉ còn {disk_free_mb} MiB",
        "en": "Station {station}: only {disk_free_mb} MiB of disk left",
    },
    "overheating": {
        "vi": "Trạm {station} quá nóng ({cpu_temp_c} °C{throttled_vi})",
        "en": "Station {station} is overheating ({cpu_temp_c} °C{throttled_en})",
    },
    "under_voltage": {
        "vi": "Trạm {station}: điện áp thấp (kiểm tra bộ nguồn, cáp)",
        "en": "Station {station}: under-voltage (check the power supply and cable)",
    },
    "scanner_missing": {
        "vi": "Trạm {station}: thiếu máy quét ({connected}/{expected})",
        "en": "Station {station}: scanner missing ({connected}/{expected})",
    },
    "clock_unsynced": {
        "vi": "Trạm {station}: đồng hồ chưa đồng bộ (lệch {offset_s} giây)",
        "en": "Station {station}: clock not synchronised (off by {offset_s} s)",
    },
    "sequence_gap": {
        "vi": "Trạm {station}: thiếu {missing} bản ghi trong chuỗi",
        "en": "Station {station}: {missing} records missing from its sequence",
    },
}

KIND_NAMES: dict[str, dict[str, str]] = {
    "offline": {"vi": "Mất kết nối", "en": "Offline"},
    "backlog_old": {"vi": "Tồn đọng lâu", "en": "Old backlog"},
    "backlog_growing": {"vi": "Tồn đọng tăng", "en": "Growing backlog"},
    "disk_low": {"vi": "Sắp đầy đĩa", "en": "Disk low"},
    "overheating": {"vi": "Quá nhiệt", "en": "Overheating"},
    "under_voltage": {"vi": "Điện áp thấp", "en": "Under-voltage"},
    "scanner_missing": {"vi": "Thiếu máy quét", "en": "Scanner missing"},
    "clock_unsynced": {"vi": "Lệch đồng hồ", "en": "Clock not synchronised"},
    "sequence_gap": {"vi": "Thiếu bản ghi", "en": "Sequence gap"},
}


def lang_of(value: str | None) -> str:
    return value if value in LANGS else "vi"


def t(key: str, lang: str) -> str:
    entry = TEXTS.get(key)
    return entry[lang] if entry else key


def duration(seconds: float | None, lang: str) -> str:
    """``95`` -> ``1 phút 35 giây`` / ``1 min 35 s``."""
    if seconds is None:
        return "–"
    s = int(max(0, seconds))
    units = (
        [(86400, "ngày"), (3600, "giờ"), (60, "phút"), (1, "giây")]
        if lang == "vi"
        else [(86400, "d"), (3600, "h"), (60, "min"), (1, "s")]
    )
    parts: list[str] = []
    for size, name in units:
        if s >= size or (size == 1 and not parts):
            parts.append(f"{s // size} {name}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def alert_text(kind: str, detail: dict[str, Any], station: str, lang: str) -> str:
    """The sentence describing an alert."""
    template = ALERT_TEXTS.get(kind, {}).get(lang)
    if template is None:
        return f"{station}: {kind}"
    throttled = bool(detail.get("throttled"))
    values: dict[str, Any] = {
        k: ("?" if v is None else v) for k, v in detail.items() if not isinstance(v, dict | list)
    }
    values.update(
        station=station,
        down=duration(detail.get("down_s"), lang),
        oldest_age=duration(detail.get("oldest_age_s"), lang),
        status=TEXTS.get(str(detail.get("status")), {}).get(lang, detail.get("status")),
        throttled_vi=", đang giảm xung" if throttled else "",
        throttled_en=", throttling" if throttled else "",
    )
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return f"{station}: {KIND_NAMES.get(kind, {}).get(lang, kind)}"
