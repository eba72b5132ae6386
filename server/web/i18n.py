"""Interface texts: Vietnamese first, English available.

The language is, in order: ``?lang=vi|en`` (remembered in the ``swabline_lang`` cookie), the
cookie, the logged-in user's ``locale``, then Vietnamese. Add texts for new pages to ``TEXTS``
(key -> (Vietnamese, English)); a missing key renders as the key itself, which a test catches.
"""

from __future__ import annotations

from collections.abc import Callable

from server.errors import HttpError
from server.ops.i18n import TEXTS as OPS_TEXTS

LANGS = ("vi", "en")
LANG_COOKIE = "swabline_lang"

TEXTS: dict[str, tuple[str, str]] = {
    "app.title": ("Swabline", "Swabline"),
    "nav.dashboard": ("Tổng quan", "Dashboard"),
    "nav.organisations": ("Đơn vị", "Organisations"),
    "nav.users": ("Người dùng", "Users"),
    "nav.search": ("Tra cứu", "Search"),
    "nav.ops": ("Vận hành trạm", "Station ops"),
    "nav.logout": ("Đăng xuất", "Log out"),
    "nav.language": ("English", "Tiếng Việt"),
    "login.title": ("Đăng nhập", "Log in"),
    "login.username": ("Tên đăng nhập", "Username"),
    "login.password": ("Mật khẩu", "Password"),
    "login.submit": ("Đăng nhập", "Log in"),
    "login.failed": ("Sai tên đăng nhập hoặc mật khẩu.", "Wrong username or password."),
    "login.limited": (
        "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau.",
        "Too many failed logins. Please try again later.",
    ),
    "stations.title": ("Trạm lấy mẫu", "Stations"),
    "stations.station": ("Trạm", "Station"),
    "stations.name": ("Tên", "Name"),
    "stations.facility": ("Cơ sở", "Facility"),
    "stations.state": ("Trạng thái", "State"),
    "stations.records": ("Bản ghi", "Records"),
    "stations.max_seq": ("Seq cao nhất", "Max seq"),
    "stations.last_seen": ("Lần cuối", "Last seen"),
    "stations.none": ("Chưa có trạm nào", "No station yet"),
    "state.online": ("trực tuyến", "online"),
    "state.offline": ("ngoại tuyến", "offline"),
    "state.unknown": ("chưa rõ", "unknown"),
    "records.title": ("Bản ghi mới nhất", "Recent records"),
    "records.kind": ("Loại", "Kind"),
    "records.code": ("Mã", "Code"),
    "records.received": ("Nhận lúc", "Received"),
    "records.rejected": ("Tin nhắn bị từ chối", "Rejected messages"),
    "orgs.title": ("Đơn vị", "Organisations"),
    "orgs.code": ("Mã", "Code"),
    "orgs.name": ("Tên", "Name"),
    "orgs.kind": ("Loại", "Kind"),
    "orgs.active": ("Hoạt động", "Active"),
    "kind.province": ("Tỉnh/thành", "Province"),
    "kind.district": ("Quận/huyện", "District"),
    "kind.facility": ("Cơ sở", "Facility"),
    "facility.sampling": ("lấy mẫu", "sampling"),
    "facility.lab": ("xét nghiệm", "lab"),
    "facility.both": ("lấy mẫu và xét nghiệm", "sampling and lab"),
    "users.title": ("Người dùng", "Users"),
    "users.username": ("Tên đăng nhập", "Username"),
    "users.display_name": ("Họ tên", "Name"),
    "users.roles": ("Vai trò", "Roles"),
    "users.last_login": ("Đăng nhập lần cuối", "Last login"),
    "role.provincial_admin": ("Quản trị tỉnh", "Provincial admin"),
    "role.facility_manager": ("Quản lý cơ sở", "Facility manager"),
    "role.sampling_staff": ("Nhân viên lấy mẫu", "Sampling staff"),
    "role.lab_staff": ("Nhân viên xét nghiệm", "Lab staff"),
    "role.ops": ("Vận hành", "Operations"),
    "role.technician": ("Kỹ thuật viên", "Technician"),
    "search.title": ("Tra cứu", "Search"),
    "search.placeholder": ("Mã ống, số CCCD, QID hoặc họ tên", "Tube code, ID number, QID or name"),
    "search.submit": ("Tìm", "Search"),
    "search.persons": ("Người được lấy mẫu", "Persons"),
    "search.tubes": ("Ống mẫu", "Tubes"),
    "search.none": ("Không tìm thấy", "Nothing found"),
    "person.key": ("Mã định danh", "ID"),
    "person.name": ("Họ tên", "Name"),
    "person.birth_date": ("Ngày sinh", "Date of birth"),
    "tube.code": ("Mã ống", "Tube"),
    "tube.status": ("Trạng thái", "Status"),
    "tube.result": ("Kết quả", "Result"),
    "tube.opened": ("Mở lúc", "Opened"),
    "status.open": ("đang mở", "open"),
    "status.collected": ("đã lấy mẫu", "collected"),
    "status.shipped": ("đã chuyển", "shipped"),
    "status.received_at_lab": ("phòng xét nghiệm đã nhận", "received at lab"),
    "status.resulted": ("có kết quả", "resulted"),
    "result.positive": ("dương tính", "positive"),
    "result.negative": ("âm tính", "negative"),
    "result.invalid": ("không hợp lệ", "invalid"),
    "error.title": ("Lỗi", "Error"),
    "error.back": ("Quay lại trang chủ", "Back to the dashboard"),
    "error.detail": ("Chi tiết kỹ thuật (tiếng Anh)", "Technical detail"),
    "error.status.400": ("Yêu cầu không hợp lệ.", "The request cannot be done."),
    "error.status.401": ("Vui lòng đăng nhập.", "Please log in."),
    "error.status.403": (
        "Bạn không có quyền làm việc này.",
        "You are not allowed to do this.",
    ),
    "error.status.404": (
        "Không tìm thấy, hoặc không thuộc phạm vi của bạn.",
        "Not found, or not in your part of the organisation.",
    ),
    "error.status.409": (
        "Không làm được lúc này: dữ liệu đang ở trạng thái khác.",
        "This cannot be done now: the data is in another state.",
    ),
    "error.status.422": (
        "Thông tin gửi lên không hợp lệ (quá dài hoặc sai dạng). Kiểm tra lại rồi gửi lại.",
        "What was sent is not valid (too long or malformed). Check it and send it again.",
    ),
    "error.status.429": (
        "Quá nhiều lần thử. Vui lòng thử lại sau ít phút.",
        "Too many attempts. Please try again in a few minutes.",
    ),
    "error.status.other": ("Đã có lỗi xảy ra.", "Something went wrong."),
    "error.form_expired": (
        "Biểu mẫu đã hết hạn: tải lại trang rồi làm lại.",
        "The form has expired: reload the page and try again.",
    ),
    "page.previous": ("Trang trước", "Previous"),
    "page.next": ("Trang sau", "Next"),
}
# The ops pages' texts live with the ops code (alerts and webhooks use them too): "ops.<key>".
TEXTS.update({f"ops.{k}": (v["vi"], v["en"]) for k, v in OPS_TEXTS.items()})


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)``: the text in ``lang``, with ``{name}`` fields filled in."""
    index = 1 if lang == "en" else 0

    def t(key: str, **values: object) -> str:
        pair = TEXTS.get(key)
        text = pair[index] if pair else key
        return text.format(**values) if values else text

    return t


def translate(lang: str, key: str, **values: object) -> str:
    return translator(lang)(key, **values)


def error_message(lang: str, exc: HttpError) -> tuple[str, str | None]:
    """What a page says about a refused request: its own text (``exc.text``; a value named
    ``*_text`` is itself a text key) or, without one, a general text for the status, then the
    English message as detail."""
    t = translator(lang)
    if exc.text and exc.text in TEXTS:
        values = {k: t(str(v)) if k.endswith("_text") else v for k, v in (exc.values or {}).items()}
        return t(exc.text, **values), None
    general = f"error.status.{exc.status}"
    return t(general if general in TEXTS else "error.status.other"), exc.message


# Lab reception, results, public lookup and declaration, reports (issue 7).
TEXTS.update(
    {
        # --- common ---
        "common.print": ("In", "Print"),
        "common.download_csv": ("Tải CSV", "Download CSV"),
        "common.download_xlsx": ("Tải Excel (XLSX)", "Download Excel (XLSX)"),
        "common.back": ("Quay lại", "Back"),
        "common.submit": ("Gửi", "Submit"),
        "common.confirm": ("Xác nhận", "Confirm"),
        "common.cancel": ("Hủy", "Cancel"),
        "common.none": ("Không có", "None"),
        "common.yes": ("Có", "Yes"),
        "common.no": ("Không", "No"),
        "common.date": ("Ngày", "Date"),
        "common.time": ("Thời gian", "Time"),
        "common.name": ("Họ và tên", "Full name"),
        "common.birth_date": ("Ngày sinh", "Date of birth"),
        "common.tube": ("Mã ống", "Tube"),
        "common.result": ("Kết quả", "Result"),
        "common.status": ("Trạng thái", "Status"),
        "common.facility": ("Cơ sở", "Facility"),
        "common.district": ("Quận/huyện", "District"),
        "common.province": ("Tỉnh/thành phố", "Province"),
        "common.station": ("Trạm", "Station"),
        "common.reason": ("Lý do", "Reason"),
        "common.persons": ("Người", "Persons"),
        "common.error": ("Lỗi", "Error"),
        "common.logout": ("Đăng xuất", "Log out"),
        "common.too_many": (
            "Quá nhiều lần thử. Vui lòng thử lại sau ít phút.",
            "Too many attempts. Please try again in a few minutes.",
        ),
        # --- results, values ---
        "result.pending": ("Chưa có kết quả", "No result yet"),
        "result.pool_positive": (
            "Mẫu gộp dương tính: cần lấy mẫu đơn lại",
            "Pooled sample positive: an individual re-test is needed",
        ),
        "stage.open": ("Đang lấy mẫu", "Being sampled"),
        "stage.collected": ("Đã lấy mẫu", "Collected"),
        "stage.shipped": ("Đã chuyển đi", "Shipped"),
        "stage.received_at_lab": ("Phòng xét nghiệm đã nhận", "Received at the lab"),
        "stage.resulted": ("Đã có kết quả", "Resulted"),
        "mode.pool": ("Mẫu gộp", "Pool"),
        "mode.single": ("Mẫu đơn", "Single"),
        "test.rt_pcr": ("RT-PCR", "RT-PCR"),
        "test.rapid_antigen": ("Test nhanh kháng nguyên", "Rapid antigen"),
        # --- navigation (staff) ---
        "nav.reception": ("Nhận mẫu", "Reception"),
        "nav.packing": ("Đóng thùng", "Packing"),
        "nav.results": ("Nhập kết quả", "Results"),
        "nav.import": ("Nhập tệp CSV", "CSV import"),
        "nav.recalls": ("Danh sách lấy mẫu lại", "Recall lists"),
        "nav.reports": ("Báo cáo", "Reports"),
        "nav.notifications": ("Thông báo", "Notifications"),
        # --- scanner field ---
        "scan.label": ("Quét mã", "Scan"),
        "scan.hint": (
            "Quét mã vạch bằng máy quét, hoặc gõ mã rồi nhấn Enter.",
            "Scan a barcode with the scanner, or type the code and press Enter.",
        ),
        "scan.ok": ("Đã ghi nhận", "Recorded"),
        "scan.error": ("Không ghi nhận được", "Not recorded"),
        # --- lab reception and packing ---
        "nav.lab": ("Xét nghiệm", "Lab"),
        "batch.title": ("Thùng mẫu", "Transport box"),
        "batch.packed": ("Đã cho vào thùng", "Packed"),
        "batch.already_packed": ("Ống này đã có trong thùng", "Already in this box"),
        "batch.already_received": ("Ống này đã được nhận", "Already received"),
        "batch.code": ("Mã thùng", "Box code"),
        "batch.scan_box": (
            "Quét mã thùng để bắt đầu.",
            "Scan the box label to start.",
        ),
        "batch.expected": ("Theo danh sách", "On the manifest"),
        "batch.received": ("Đã nhận", "Received"),
        "batch.missing": ("Thiếu", "Missing"),
        "batch.unexpected": ("Ngoài danh sách", "Not on the manifest"),
        "batch.not_received_yet": ("Chưa quét", "Not scanned yet"),
        "batch.unknown_tube": (
            "Ống chưa có dữ liệu từ trạm lấy mẫu",
            "No station data for this tube yet",
        ),
        "batch.close": ("Kết thúc nhận thùng", "Finish reception"),
        "batch.ship": ("Gửi thùng đi", "Ship the box"),
        "batch.closed": ("Đã kết thúc", "Finished"),
        "batch.status.packing": ("Đang đóng thùng", "Packing"),
        "batch.status.shipped": ("Đã gửi", "Shipped"),
        "batch.status.receiving": ("Đang nhận", "Receiving"),
        "batch.status.closed": ("Đã kết thúc", "Closed"),
        "batch.lab": ("Phòng xét nghiệm nhận", "Destination lab"),
        "batch.recent": ("Các thùng gần đây", "Recent boxes"),
        "batch.tube_count": ("Số ống", "Tubes"),
        # --- result entry ---
        "entry.title": ("Nhập kết quả theo ống", "Enter results per tube"),
        "entry.scan_tube": ("Quét mã ống", "Scan the tube"),
        "entry.choose": ("Chọn kết quả", "Choose the result"),
        "entry.saved": ("Đã lưu kết quả", "Result saved"),
        "entry.unchanged": ("Kết quả này đã được lưu trước đó", "This result was already saved"),
        "entry.has_result": (
            "Ống này đã có kết quả. Sửa kết quả cần ghi lý do.",
            "This tube already has a result. A correction needs a reason.",
        ),
        "entry.persons_in_tube": ("Số người trong ống", "Persons in the tube"),
        "entry.correct": ("Sửa kết quả", "Correct the result"),
        "entry.history": ("Lịch sử kết quả", "Result history"),
        "entry.timeline": ("Quá trình của mẫu", "Sample timeline"),
        "entry.superseded": ("đã được sửa", "corrected"),
        "entry.reason_required": (
            "Sửa kết quả phải có lý do.",
            "A correction needs a reason.",
        ),
        "entry.unknown_tube": ("Không tìm thấy ống này", "No such tube"),
        "entry.slip": ("Phiếu kết quả", "Result slip"),
        # --- CSV import ---
        "import.title": ("Nhập kết quả từ tệp CSV", "Import results from a CSV file"),
        "import.file": ("Tệp CSV của phòng xét nghiệm", "The lab's CSV file"),
        "import.mapping": ("Cột tương ứng", "Column mapping"),
        "import.mapping_hint": (
            "Để trống để tự nhận cột theo tên.",
            "Leave empty to match columns by their names.",
        ),
        "import.check": ("Kiểm tra", "Check"),
        "import.apply": ("Nhập kết quả", "Import the results"),
        "import.rejected": (
            "Tệp bị từ chối: không có kết quả nào được nhập. Sửa các dòng lỗi rồi tải lại.",
            "File rejected: no result was imported. Fix the rows in error and upload it again.",
        ),
        "import.applied": ("Đã nhập", "Imported"),
        "import.valid": (
            "Tệp hợp lệ. Kiểm tra rồi bấm Nhập kết quả.",
            "The file is valid. Check it, then press Import.",
        ),
        "import.line": ("Dòng", "Line"),
        "import.field.tube": ("Mã ống", "Tube"),
        "import.field.result": ("Kết quả", "Result"),
        "import.field.reported_at": ("Ngày trả kết quả", "Result date"),
        "import.field.test_kind": ("Loại xét nghiệm", "Test kind"),
        "import.err.not_utf8": (
            "Tệp không phải văn bản UTF-8 (dòng {line}, byte {byte}): hãy lưu dạng 'CSV UTF-8'",
            "The file is not UTF-8 text (line {line}, byte {byte}): export it as 'CSV UTF-8'",
        ),
        "import.err.empty": ("Tệp trống", "The file is empty"),
        "import.err.header": (
            "Không đọc được dòng tiêu đề: {error}",
            "The header cannot be read: {error}",
        ),
        "import.err.dup_columns": (
            "Tên cột bị lặp: {columns}",
            "Columns appear more than once: {columns}",
        ),
        "import.err.unknown_field": ("Trường không rõ: {name}", "Unknown field: {name}"),
        "import.err.missing_column": (
            "Không có cột '{column}' (cho {field}) trong tệp",
            "Column '{column}' (for {field}) is not in the file",
        ),
        "import.err.no_column": (
            "Không tìm thấy cột cho {fields}. Các cột trong tệp: {found}. Hãy chọn cột bên dưới.",
            "No column for {fields}. Columns found: {found}. Choose the columns below.",
        ),
        "import.err.too_many_rows": (
            "Tệp có hơn {max} dòng: hãy chia nhỏ tệp",
            "More than {max} rows: split the file",
        ),
        "import.err.line_unreadable": ("Không đọc được dòng {line}", "Line {line} cannot be read"),
        "import.err.no_rows": (
            "Tệp chỉ có dòng tiêu đề, không có dữ liệu",
            "The file has a header but no data rows",
        ),
        "import.err.field_count": (
            "Dòng có {got} ô trong khi tiêu đề có {want}",
            "{got} fields where the header has {want}",
        ),
        "import.err.duplicate": (
            "Ống {tube} đã có ở dòng {line}",
            "Tube {tube} already appears on line {line}",
        ),
        "import.err.no_tube": ("Thiếu mã ống", "No tube code"),
        "import.err.bad_tube": (
            "Mã ống không hợp lệ (tối đa 64 ký tự in được)",
            "Not a valid tube code (printable, at most 64 characters)",
        ),
        "import.err.no_result": ("Thiếu kết quả", "No result"),
        "import.err.bad_result": (
            "Kết quả '{value}' không phải Âm tính, Dương tính hay Không xác định",
            "Result '{value}' is not one of negative, positive, invalid",
        ),
        "import.err.bad_date": (
            "Ngày '{value}' không đúng dạng DD/MM/YYYY[ HH:MM] hay YYYY-MM-DD[ HH:MM]",
            "Date '{value}' is not DD/MM/YYYY[ HH:MM] or YYYY-MM-DD[ HH:MM]",
        ),
        "import.err.bad_kind": (
            "Loại xét nghiệm '{value}' không phải RT-PCR hay test nhanh",
            "Test kind '{value}' is not RT-PCR or rapid antigen",
        ),
        "import.err.unknown_tube": (
            "Không có ống {tube} trong các ống phòng xét nghiệm của bạn đã nhận",
            "Unknown tube {tube} (not received at a lab you work for)",
        ),
        "import.err.has_result": (
            "Ống {tube} đã có kết quả khác ({value}): hãy sửa trên trang của ống, kèm lý do",
            "Tube {tube} already has another result ({value}): correct it on the tube's page, "
            "with a reason",
        ),
        "import.status.new": ("Mới", "New"),
        "import.status.unchanged": ("Không đổi", "Unchanged"),
        "import.status.error": ("Lỗi", "Error"),
        "import.status.blank": ("Dòng trống", "Blank"),
        "import.summary": (
            "{total} dòng: {new} mới, {unchanged} không đổi, {error} lỗi",
            "{total} rows: {new} new, {unchanged} unchanged, {error} in error",
        ),
        # --- recalls ---
        "recall.title": ("Danh sách lấy mẫu lại", "Recall list"),
        "recall.hint": (
            "Những người trong mẫu gộp dương tính cần được lấy mẫu đơn lại.",
            "People in positive pools must be re-sampled individually.",
        ),
        "recall.resampled": ("Đã lấy mẫu lại", "Re-sampled"),
        "recall.pool": ("Mẫu gộp", "Pool"),
        "recall.key": ("Số giấy tờ / mã QR", "ID / QR id"),
        "recall.phone": ("Điện thoại", "Phone"),
        "recall.address": ("Địa chỉ", "Address"),
        "recall.none": ("Không có mẫu gộp dương tính.", "No positive pools."),
        # --- public lookup ---
        "lookup.title": ("Tra cứu kết quả xét nghiệm", "Look up your test result"),
        "lookup.intro": (
            "Nhập số CCCD/giấy tờ (hoặc mã QID trong mã QR y tế của bạn) và ngày sinh, hoặc "
            "mã tra cứu in trên phiếu của bạn.",
            "Enter your ID number (or the QID of your health QR code) and date of birth, or the "
            "lookup code printed on your slip.",
        ),
        "lookup.id": ("Số CCCD / giấy tờ / mã QID", "ID number or QID"),
        "lookup.or": ("hoặc", "or"),
        "lookup.code": ("Mã tra cứu trên phiếu", "Lookup code on your slip"),
        "lookup.submit": ("Tra cứu", "Look up"),
        "lookup.none": (
            "Không tìm thấy kết quả nào với thông tin này. Kiểm tra lại thông tin, hoặc thử lại "
            "sau: kết quả thường có trong vòng 24 giờ.",
            "No result was found for these details. Check what you entered, or try again later: "
            "results usually come within 24 hours.",
        ),
        "lookup.results_for": ("Kết quả của", "Results for"),
        "lookup.sampled_at": ("Ngày lấy mẫu", "Sampled on"),
        "lookup.reported_at": ("Ngày có kết quả", "Result on"),
        "lookup.need_input": (
            "Nhập số giấy tờ và ngày sinh, hoặc mã tra cứu.",
            "Enter your ID number and date of birth, or your lookup code.",
        ),
        # --- slip and verification ---
        "slip.title": ("PHIẾU KẾT QUẢ XÉT NGHIỆM", "TEST RESULT SLIP"),
        "slip.verify_hint": (
            "Quét mã QR để kiểm tra phiếu này trên máy chủ Swabline.",
            "Scan the QR code to check this slip against the Swabline server.",
        ),
        "slip.test_kind": ("Loại xét nghiệm", "Test"),
        "slip.sampled_at": ("Ngày lấy mẫu", "Sampled on"),
        "slip.reported_at": ("Ngày trả kết quả", "Result on"),
        "slip.lab": ("Đơn vị xét nghiệm", "Laboratory"),
        "slip.issued": ("Ngày in phiếu", "Printed on"),
        "verify.title": ("Kiểm tra phiếu kết quả", "Check a result slip"),
        "verify.valid": ("Phiếu hợp lệ", "Valid slip"),
        "verify.invalid": (
            "Phiếu không hợp lệ: mã này không do máy chủ Swabline cấp.",
            "Invalid slip: this code was not issued by the Swabline server.",
        ),
        "verify.corrected": (
            "Kết quả trên phiếu này đã được sửa. Kết quả hiện tại:",
            "The result on this slip has since been corrected. Current result:",
        ),
        "verify.current": ("Kết quả hiện tại vẫn đúng như trên phiếu.", "The result still stands."),
        # --- self-declaration ---
        "declare.title": (
            "Khai báo để nhận mã QR cá nhân",
            "Declare yourself for a personal QR code",
        ),
        "declare.intro": (
            "Dành cho người không có điện thoại hoặc ứng dụng. Mã QR dùng khi lấy mẫu xét "
            "nghiệm; hãy in hoặc chụp lại.",
            "For people without a phone or the app. Show the QR code when you are sampled; print "
            "it or take a photo of it.",
        ),
        "declare.sex": ("Giới tính", "Sex"),
        "declare.sex.male": ("Nam", "Male"),
        "declare.sex.female": ("Nữ", "Female"),
        "declare.document": ("Số CCCD / CMND / hộ chiếu (nếu có)", "ID card or passport (if any)"),
        "declare.phone": ("Số điện thoại nhận kết quả (nếu có)", "Phone for the result (if any)"),
        "declare.address": ("Địa chỉ", "Address"),
        "declare.on_behalf": ("Tôi khai hộ người khác", "I am declaring for someone else"),
        "declare.submit": ("Tạo mã QR", "Make my QR code"),
        "declare.done": ("Mã QR cá nhân của bạn", "Your personal QR code"),
        "declare.lookup_code": ("Mã tra cứu kết quả", "Result lookup code"),
        "declare.keep": (
            "Giữ phiếu này. Đưa mã QR khi lấy mẫu; dùng mã tra cứu để xem kết quả.",
            "Keep this slip. Show the QR code when sampled; use the lookup code to see your "
            "result.",
        ),
        "declare.err.name": ("Nhập họ và tên.", "Enter your full name."),
        "declare.err.birth_date": (
            "Nhập ngày sinh hợp lệ (không ở tương lai).",
            "Enter a valid date of birth (not in the future).",
        ),
        "declare.err.phone": (
            "Số điện thoại chỉ gồm chữ số (9 đến 15 số).",
            "A phone number has 9 to 15 digits.",
        ),
        "declare.err.document": (
            "Số giấy tờ chỉ gồm chữ và số (tối đa 20 ký tự).",
            "An ID number has letters and digits only (at most 20).",
        ),
        "declare.err.too_long": ("Thông tin quá dài.", "Too long."),
        # --- reports ---
        "reports.title": ("Báo cáo", "Reports"),
        "reports.period": ("Kỳ báo cáo", "Period"),
        "reports.period.day": ("Ngày", "Day"),
        "reports.period.week": ("Tuần", "Week"),
        "reports.period.month": ("Tháng", "Month"),
        "reports.node": ("Đơn vị", "Unit"),
        "reports.show": ("Xem", "Show"),
        "reports.files": ("Báo cáo định kỳ đã tạo", "Scheduled report files"),
        "reports.no_files": ("Chưa có tệp báo cáo nào.", "No report files yet."),
        "reports.generated_at": ("Tạo lúc", "Generated at"),
        "reports.level": ("Cấp", "Level"),
        "reports.level.facility": ("Cơ sở", "Facility"),
        "reports.level.district": ("Quận/huyện", "District"),
        "reports.level.province": ("Tỉnh", "Province"),
        "reports.code": ("Mã", "Code"),
        "reports.unit": ("Đơn vị", "Unit"),
        "reports.samples": ("Số mẫu", "Samples"),
        "reports.pools": ("Mẫu gộp", "Pools"),
        "reports.singles": ("Mẫu đơn", "Singles"),
        "reports.persons": ("Số người", "Persons"),
        "reports.positive": ("Dương tính", "Positive"),
        "reports.negative": ("Âm tính", "Negative"),
        "reports.invalid": ("Không xác định", "Invalid"),
        "reports.positivity": ("Tỷ lệ dương tính", "Positivity"),
        "reports.recall": ("Người cần lấy mẫu lại", "Persons to recall"),
        "reports.tat_median": ("Thời gian trả KQ trung vị (giờ)", "Turnaround median (h)"),
        "reports.tat_p90": ("Thời gian trả KQ P90 (giờ)", "Turnaround p90 (h)"),
        "reports.tat_count": ("Số mẫu có KQ trong kỳ", "Samples resulted in period"),
        "reports.uptime": ("Thời gian hoạt động của trạm", "Station uptime"),
        "reports.throughput": ("Bản ghi/giờ của trạm", "Station records per hour"),
        "reports.station_hours": ("Giờ hoạt động", "Hours in use"),
        "reports.records": ("Số bản ghi", "Records"),
        "reports.daily": ("Theo ngày", "By day"),
        "reports.summary": ("Tổng hợp", "Summary"),
        "reports.stations": ("Trạm", "Stations"),
        "reports.chart.samples": ("Số mẫu theo ngày", "Samples per day"),
        "reports.chart.positivity": ("Tỷ lệ dương tính theo ngày", "Positivity per day"),
        "reports.chart.tat": ("Thời gian trả kết quả (giờ)", "Turnaround (hours)"),
        "reports.chart.facilities": ("Số mẫu theo cơ sở", "Samples per facility"),
        "reports.title_file": ("Báo cáo xét nghiệm", "Testing report"),
        # --- notifications (messages sent to people) ---
        "notify.negative": (
            "Swabline: Kết quả xét nghiệm ngày {date} của {name}: ÂM TÍNH.",
            "Swabline: the test of {name} on {date}: NEGATIVE.",
        ),
        "notify.positive": (
            "Swabline: Kết quả xét nghiệm ngày {date} của {name}: DƯƠNG TÍNH. Vui lòng liên hệ "
            "trạm y tế.",
            "Swabline: the test of {name} on {date}: POSITIVE. Please contact your health station.",
        ),
        "notify.pool_positive": (
            "Swabline: Mẫu gộp ngày {date} của {name} dương tính. Vui lòng đến lấy mẫu đơn lại.",
            "Swabline: the pooled sample of {name} on {date} was positive. Please come back for "
            "an individual test.",
        ),
        "notify.invalid": (
            "Swabline: Mẫu xét nghiệm ngày {date} của {name} không xác định được. Vui lòng lấy "
            "mẫu lại.",
            "Swabline: the test of {name} on {date} could not be read. Please be sampled again.",
        ),
        "notify.notifications": ("Thông báo gửi đi", "Outgoing notifications"),
        "notify.attempts": ("Số lần gửi", "Attempts"),
        "notify.last_error": ("Lỗi gần nhất", "Last error"),
        # --- refusals on the lab, report and public pages (HttpError.text) ---
        "lab.err.bad_code": (
            "Mã không hợp lệ: từ 1 đến {max} ký tự in được.",
            "Not a valid code: 1 to {max} printable characters.",
        ),
        "lab.err.bad_box_code": (
            "Mã thùng không hợp lệ: từ 1 đến {max} ký tự in được.",
            "Not a valid box code: 1 to {max} printable characters.",
        ),
        "lab.err.bad_tube_code": (
            "Mã ống không hợp lệ: từ 1 đến {max} ký tự in được.",
            "Not a valid tube code: 1 to {max} printable characters.",
        ),
        "lab.err.box_busy": (
            "Thùng {code} đang được dùng (chưa kết thúc): hãy kết thúc thùng đó trước.",
            "Box {code} is in use (not finished): finish it first.",
        ),
        "lab.err.not_packing": (
            "Thùng {code} không còn ở bước đóng thùng.",
            "Box {code} is no longer being packed.",
        ),
        "lab.err.not_receiving": (
            "Thùng {code} không ở bước nhận mẫu.",
            "Box {code} is not being received.",
        ),
        "lab.err.box_empty": ("Thùng {code} chưa có ống nào.", "Box {code} is empty."),
        "lab.err.other_lab": (
            "Thùng {code} đang được một phòng xét nghiệm khác nhận.",
            "Box {code} is being received by another lab.",
        ),
        "lab.err.no_box": ("Không tìm thấy thùng này.", "No such box."),
        "lab.err.no_facility": (
            "Bạn không làm việc cho cơ sở này.",
            "You do not work for this facility.",
        ),
        "lab.err.choose_lab": ("Hãy chọn phòng xét nghiệm nhận.", "Choose the destination lab."),
        "lab.err.no_tube": (
            "Không có ống {code} trong các ống bạn được xem.",
            "No tube {code} among the tubes you can see.",
        ),
        "lab.err.no_slip": (
            "Không có kết quả này cho người này.",
            "No such result for this person.",
        ),
        "lab.err.notifications_admin": (
            "Nhật ký thông báo chỉ dành cho quản trị cấp tỉnh.",
            "The notification log is for province-wide administrators.",
        ),
        "entry.err.value": (
            "Kết quả phải là âm tính, dương tính hoặc không xác định.",
            "The result must be negative, positive or invalid.",
        ),
        "entry.err.needs_reason": (
            "Ống {code} đã có kết quả {value_text}: sửa kết quả cần ghi lý do.",
            "Tube {code} already has the result {value_text}: a correction needs a reason.",
        ),
        "entry.err.reason_long": (
            "Lý do dài quá {max} ký tự.",
            "The reason is longer than {max} characters.",
        ),
        "import.err.no_file": ("Hãy chọn tệp CSV.", "Choose a CSV file."),
        "import.kept_file": (
            "Tệp {name} được giữ lại: chọn các cột rồi bấm Kiểm tra (hoặc chọn tệp khác).",
            "The file {name} is kept: choose the columns and press Check (or choose another file).",
        ),
        "import.err.read_back": (
            "Không đọc lại được tệp: hãy tải tệp lên lại.",
            "The file could not be read back: upload it again.",
        ),
        "import.err.too_large": (
            "Tệp lớn hơn {max} byte: hãy chia nhỏ tệp.",
            "The file is larger than {max} bytes: split it.",
        ),
        "recall.err.not_positive": (
            "Ống {code} không phải mẫu gộp dương tính.",
            "Tube {code} is not a positive pool.",
        ),
        "recall.err.range": (
            "Chọn tối đa {days} ngày một lần.",
            "Choose at most {days} days at a time.",
        ),
        "reports.err.no_node": (
            "Không có đơn vị này trong phạm vi của bạn.",
            "No such organisation in your scope.",
        ),
        "reports.err.no_file": ("Không có tệp báo cáo này.", "No such report file."),
        "scan.network": (
            "Mất kết nối tới máy chủ: chưa ghi nhận, hãy quét lại.",
            "No connection to the server: not recorded, scan again.",
        ),
        # --- recall list range ---
        "recall.from": ("Từ ngày", "From"),
        "recall.to": ("Đến ngày", "To"),
        "recall.show": ("Xem", "Show"),
        "recall.showing": (
            "Mẫu gộp {first}–{last} trong tổng số {total} có kết quả dương tính từ {start} đến "
            "{end}.",
            "Pools {first}–{last} of {total} with a positive result from {start} to {end}.",
        ),
        "recall.csv_all": (
            "Tệp CSV gồm cả {total} mẫu gộp của các ngày này.",
            "The CSV file has all {total} pools of these days.",
        ),
    }
)
