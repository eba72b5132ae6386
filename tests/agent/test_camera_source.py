"""Camera scanning: zbar (binary mode) on QR codes generated with segno, and the camera loop fed by
a fake frame provider."""

from __future__ import annotations

import io
import queue
import sys
import threading
from typing import Any, ClassVar

import numpy as np
import pytest
import segno
from PIL import Image
from pyzbar import pyzbar

from agent.errors import ScannerError
from agent.fakes import FakeFrameProvider
from agent.hw.camera_source import CameraScanSource, InViewFilter, Picamera2Frames
from agent.hw.zbar import Decoded, ZbarDecoder
from agent.ports import Scan, ScannerState, SourceEvent

CCCD = (
    "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|"
    "12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh|20042021"
)
PC_COVID = "******001234|NGUYEN THI BINH|2003-**-**|0|QX7K2M9P4T|"
Frame = np.ndarray[Any, np.dtype[np.uint8]]


def qr_frame(text: str | bytes, *, eci: bool = False, size: tuple[int, int] = (480, 640)) -> Frame:
    """A grey camera-sized frame with a QR code in the middle.

    Text is encoded as UTF-8 bytes without an ECI header, as phone apps and ID cards do (segno
    would pick ISO-8859-1 for text that fits it); ``eci=True`` adds the UTF-8 ECI header.
    """
    if eci:
        code = segno.make(text, eci=True, encoding="utf-8", micro=False)
    else:
        data = text.encode("utf-8") if isinstance(text, str) else text
        code = segno.make(data, micro=False)
        assert code.mode == "byte" or data.isascii()
    buf = io.BytesIO()
    code.save(buf, kind="png", scale=4, border=4)
    buf.seek(0)
    qr = np.array(Image.open(buf).convert("L"), dtype=np.uint8)
    frame = np.full(size, 200, dtype=np.uint8)
    top, left = (size[0] - qr.shape[0]) // 2, (size[1] - qr.shape[1]) // 2
    frame[top : top + qr.shape[0], left : left + qr.shape[1]] = qr
    return frame


EMPTY = np.full((480, 640), 200, dtype=np.uint8)


@pytest.mark.parametrize(
    "text",
    ["Hùng", "Bình", "Nữ", "Trần Văn Hùng", "Đỗ", "Phạm Thị Hồng Nhung", CCCD, PC_COVID],
)
def test_vietnamese_without_eci_comes_through_intact(text: str) -> None:
    with ZbarDecoder(["qrcode"]) as decoder:
        (found,) = decoder.decode(qr_frame(text))
    assert found.symbology == "qrcode"
    assert found.data.decode("utf-8") == text


def test_without_binary_mode_zbar_garbles_short_vietnamese() -> None:
    # Why binary mode: zbar's own character-set guess turns "Hùng" into mojibake.
    (plain,) = pyzbar.decode(qr_frame("Hùng"))  # UTF-8 bytes, no ECI
    assert plain.data.decode("utf-8", errors="replace") != "Hùng"
    with ZbarDecoder(["qrcode"]) as decoder:
        assert decoder.decode(qr_frame("Hùng"))[0].data.decode() == "Hùng"


def test_with_an_eci_header_too() -> None:
    with ZbarDecoder(["qrcode"]) as decoder:
        (found,) = decoder.decode(qr_frame("Nguyễn Thị Bình", eci=True))
    assert found.data.decode("utf-8") == "Nguyễn Thị Bình"


def test_only_configured_symbologies_are_decoded() -> None:
    with ZbarDecoder(["code128"]) as decoder:
        assert decoder.decode(qr_frame("KG-RG-000123")) == []
    with ZbarDecoder(["code128", "qrcode"]) as decoder:
        assert [d.data for d in decoder.decode(qr_frame("KG-RG-000123"))] == [b"KG-RG-000123"]


def test_empty_frame_and_bad_arguments() -> None:
    with ZbarDecoder(["qrcode"]) as decoder:
        assert decoder.decode(EMPTY) == []
        with pytest.raises(ValueError, match="2-D"):
            decoder.decode(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown symbologies"):
        ZbarDecoder(["pdf417"])


def code(text: str) -> Decoded:
    return Decoded(data=text.encode(), symbology="qrcode")


def test_in_view_filter_counts_a_held_code_once() -> None:
    f = InViewFilter(leave_after_s=0.5)
    a = code("A")
    assert f.update([a], 0.0) == [a]
    assert f.update([a], 0.1) == []
    assert f.update([], 0.2) == []  # one frame missed (blur): still in view
    assert f.update([a], 0.3) == []
    for i in range(4, 50):  # ... as long as it stays in view
        assert f.update([a], i / 10) == []
    assert f.update([], 5.0) == []
    assert f.update([], 5.5) == []
    assert f.update([a], 5.6) == [a]  # gone for 0.7 s: shown again, counted again


def test_in_view_filter_repeat_after() -> None:
    f = InViewFilter(leave_after_s=0.5, repeat_after_s=2.0)
    a, b = code("A"), code("B")
    assert f.update([a, b], 0.0) == [a, b]
    for i in range(1, 20):
        assert f.update([a], i / 10) == []
    assert f.update([a], 2.0) == [a]  # still in view, but 2 s have passed
    assert f.update([a, b], 2.1) == [b]  # b had left


def run_camera(frames: FakeFrameProvider, **kw: Any) -> list[SourceEvent]:
    stop = frames.stop
    assert stop is not None
    events: queue.Queue[SourceEvent] = queue.Queue()
    source = CameraScanSource(frames=frames, monotonic=frames.now, **kw)
    thread = threading.Thread(target=source.run, args=(events.put, stop))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    out: list[SourceEvent] = []
    while not events.empty():
        out.append(events.get())
    return out


def test_camera_counts_each_showing_once() -> None:
    tube, person = qr_frame("KG-RG-000123"), qr_frame(CCCD)
    sequence = [EMPTY, tube, tube, EMPTY, tube]  # a blurred frame in between: same showing
    sequence += [EMPTY] * 6 + [tube]  # taken away for 0.6 s, shown again: counted again
    sequence += [person, person]
    frames = FakeFrameProvider(sequence, interval_s=0.1, stop=threading.Event())
    events = run_camera(frames, fps=10, leave_after_s=0.5)
    assert events[0] == ScannerState(source="camera", present=True, detail="camera started")
    scans = [e for e in events if isinstance(e, Scan)]
    assert [(s.text, s.rejected, s.lossy) for s in scans] == [
        ("KG-RG-000123", None, False),
        ("KG-RG-000123", None, False),
        (CCCD, None, False),
    ]
    assert frames.captured == len(sequence)
    assert frames.closes == 1


def test_invalid_utf8_in_a_qr_code_is_rejected() -> None:
    frame = qr_frame(b"Nguy\xe1\xbb\x85n \xff")
    frames = FakeFrameProvider([frame], stop=threading.Event())
    scans = [e for e in run_camera(frames) if isinstance(e, Scan)]
    assert len(scans) == 1
    assert scans[0].rejected is not None and scans[0].rejected.startswith("not UTF-8 at byte 9")


def test_camera_missing_then_started() -> None:
    frames = FakeFrameProvider(
        [qr_frame("KG-1")], stop=threading.Event(), fail_starts=2, interval_s=0.1
    )
    events = run_camera(frames, retry_s=0.01)
    assert [type(e).__name__ for e in events] == ["ScannerState", "ScannerState", "Scan"]
    missing, present = events[0], events[1]
    assert isinstance(missing, ScannerState) and not missing.present
    assert missing.detail == "fake camera not connected"
    assert isinstance(present, ScannerState) and present.present
    assert frames.starts == 3


def test_picamera2_missing_says_which_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a plain venv
    with pytest.raises(ScannerError, match="python3-picamera2"):
        Picamera2Frames().start()


def test_an_unexpected_error_reports_the_camera_missing_and_propagates() -> None:
    frames = FakeFrameProvider([np.zeros((4, 4, 3), dtype=np.uint8)], stop=threading.Event())
    got: list[SourceEvent] = []
    source = CameraScanSource(frames=frames, monotonic=frames.now)
    with pytest.raises(ValueError, match="2-D"):
        source.run(got.append, threading.Event())
    assert [type(e) for e in got] == [ScannerState, ScannerState]
    failed = got[1]
    assert isinstance(failed, ScannerState) and not failed.present
    assert failed.detail.startswith("source failed: ValueError")
    assert frames.closes == 1


class _FakePicamera2:
    """Stands in for picamera2.Picamera2 (not installable here): records what it was asked."""

    instances: ClassVar[list[_FakePicamera2]] = []

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.started = self.stopped = self.closed = False
        _FakePicamera2.instances.append(self)

    def create_preview_configuration(self, **kw: Any) -> dict[str, Any]:
        return kw

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, stream: str) -> Frame:
        assert stream == "lores"
        w, h = self.config["lores"]["size"]
        stride = w + 32  # rows are padded; U and V planes follow the Y plane
        yuv = np.full((h * 3 // 2, stride), 128, dtype=np.uint8)
        yuv[:h, :w] = qr_frame("KG-RG-000123", size=(h, w))
        return yuv

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def test_picamera2_frames_take_the_y_plane_of_the_lores_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = type(sys)("picamera2")
    module.Picamera2 = _FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    frames = Picamera2Frames(width=640, height=480, fps=15)
    frames.start()
    camera = _FakePicamera2.instances[-1]
    assert camera.started
    assert camera.config["lores"] == {"size": (640, 480), "format": "YUV420"}
    assert camera.config["controls"] == {"FrameRate": 15}
    grey = frames.capture()
    assert grey.shape == (480, 640)
    with ZbarDecoder(["qrcode"]) as decoder:
        assert [d.data for d in decoder.decode(grey)] == [b"KG-RG-000123"]
    frames.close()
    frames.close()
    assert camera.stopped and camera.closed
    with pytest.raises(ScannerError, match="not started"):
        frames.capture()
