"""Interface texts: Vietnamese first, English available.

The language is, in order: ``?lang=vi|en`` (remembered in the ``swabline_lang`` cookie), the
cookie, the logged-in user's ``locale``, then Vietnamese. Add texts for new pages to ``TEXTS``
(key -> (Vietnamese, English)); a missing key renders as the key itself, which a test catches.
"""

from __future__ import annotations

from collections.abc import Callable

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
    "page.previous": ("Trang trước", "Previous"),
    "page.next": ("Trang sau", "Next"),
}
# The ops pages' texts live with the ops code (alerts and webhooks use them too): "ops.<key>".
TEXTS.update({f"ops.{k}": (v["vi"], v["en"]) for k, v in OPS_TEXTS.items()})


def translator(lang: str) -> Callable[[str], str]:
    index = 1 if lang == "en" else 0

    def t(key: str) -> str:
        pair = TEXTS.get(key)
        return pair[index] if pair else key

    return t
