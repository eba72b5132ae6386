"""Camera scanning: grey frames from the Raspberry Pi camera, decoded with zbar.

The frame provider is a seam: ``Picamera2Frames`` on a Pi, a list of images in tests. picamera2
needs libcamera's Python bindings, which are not on PyPI: on Raspberry Pi OS install the apt
package ``python3-picamera2`` and make the venv with ``--system-site-packages``. It is imported
only when a camera source starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.errors import ScannerError
from agent.hw.zbar import Decoded, ZbarDecoder, decode_text
from agent.ports import Scan, ScannerState, SourceSink

log = logging.getLogger(__name__)

GreyFrame = np.ndarray[Any, np.dtype[np.uint8]]

PICAMERA2_MISSING = (
    "the camera scanner needs picamera2, which is not installed for this Python: on Raspberry Pi "
    "OS run `sudo apt install python3-picamera2` and create the venv with "
    "--system-site-packages (pip cannot install libcamera's bindings)"
)


class FrameProvider(Protocol):
    """Grey frames from a camera."""

    def start(self) -> None:
        """Open and start the camera; raises ``ScannerError`` when it is not there."""
        ...

    def capture(self) -> GreyFrame:
        """The next frame (height x width, uint8); raises ``ScannerError`` if the camera fails."""
        ...

    def close(self) -> None: ...


def picamera2_available() -> bool:
    """Whether picamera2 can be imported (without starting a camera)."""
    import importlib.util

    return importlib.util.find_spec("picamera2") is not None


class Picamera2Frames:
    """The Raspberry Pi camera through picamera2: the Y (grey) plane of a low-resolution YUV420
    stream. On a Pi 4 and older the ``lores`` stream must be YUV; its Y plane is what zbar wants.
    """

    def __init__(self, *, width: int = 640, height: int = 480, fps: float = 10.0) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self._camera: Any = None

    def start(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise ScannerError(PICAMERA2_MISSING) from exc
        try:
            camera = Picamera2()
            config = camera.create_preview_configuration(
                main={"size": (self.width, self.height)},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": self.fps},
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera), ...
            raise ScannerError(f"cannot start the camera: {exc}") from exc
        self._camera = camera

    def capture(self) -> GreyFrame:
        if self._camera is None:
            raise ScannerError("camera not started")
        try:
            yuv = self._camera.capture_array("lores")
        except Exception as exc:
            raise ScannerError(f"camera capture failed: {exc}") from exc
        grey: GreyFrame = yuv[: self.height, : self.width]
        return grey

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
                camera.close()
            except Exception as exc:
                log.debug("closing camera: %s", exc)


@dataclass
class _Seen:
    counted_at: float
    last_seen: float


class InViewFilter:
    """Counts a code held in front of the camera once (pure).

    A code is counted when it appears; while it stays in view (decoded again within
    ``leave_after_s``) it is not counted again, unless ``repeat_after_s`` (> 0) has passed since
    it was counted. A frame in which zbar misses a code that is still there (motion blur) does not
    make it count twice: it must be absent for ``leave_after_s``.
    """

    def __init__(self, *, leave_after_s: float = 0.5, repeat_after_s: float = 0.0) -> None:
        self.leave_after_s = leave_after_s
        self.repeat_after_s = repeat_after_s
        self._seen: dict[tuple[str, bytes], _Seen] = {}

    def update(self, codes: Iterable[Decoded], now: float) -> list[Decoded]:
        """The codes of one frame taken at ``now`` (seconds) -> the ones to count."""
        out: list[Decoded] = []
        for code in codes:
            key = (code.symbology, code.data)
            seen = self._seen.get(key)
            if (
                seen is None
                or now - seen.last_seen > self.leave_after_s
                or (self.repeat_after_s > 0 and now - seen.counted_at >= self.repeat_after_s)
            ):
                out.append(code)
                self._seen[key] = _Seen(counted_at=now, last_seen=now)
            else:
                seen.last_seen = now
        for key in [k for k, s in self._seen.items() if now - s.last_seen > self.leave_after_s]:
            del self._seen[key]
        return out


class CameraScanSource:
    """QR codes and barcodes read by a camera.

    Frames are taken at most ``fps`` times a second and decoded with ``decoder`` (zbar, only the
    configured symbologies, QR codes in binary mode so UTF-8 text survives). When the camera fails
    the source reports ``ScannerState(present=False)`` and restarts it every ``retry_s`` seconds.

    Args:
        frames: the frame provider (``Picamera2Frames`` on a Pi).
        decoder: decodes a grey frame (default: ``ZbarDecoder(symbologies)``).
        symbologies: used when ``decoder`` is not given.
        fps: most frames decoded per second.
        leave_after_s, repeat_after_s: see ``InViewFilter``.
        name: the source's name.
        retry_s: how often to restart a failed camera.
        monotonic: the clock (seconds).
    """

    def __init__(
        self,
        *,
        frames: FrameProvider,
        decoder: ZbarDecoder | None = None,
        symbologies: Sequence[str] = ("qrcode",),
        fps: float = 10.0,
        leave_after_s: float = 0.5,
        repeat_after_s: float = 0.0,
        name: str = "camera",
        retry_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.name = name
        self.fps = fps
        self.retry_s = retry_s
        self._frames = frames
        self._decoder = decoder or ZbarDecoder(symbologies)
        self._filter = InViewFilter(leave_after_s=leave_after_s, repeat_after_s=repeat_after_s)
        self._monotonic = monotonic

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        try:
            self._run(sink, stop)
        except Exception as exc:
            # A bug, not a camera fault: staff must see that scans no longer arrive.
            sink(ScannerState(source=self.name, present=False, detail=f"source failed: {exc!r}"))
            raise

    def _run(self, sink: SourceSink, stop: threading.Event) -> None:
        present: bool | None = None
        try:
            while not stop.is_set():
                try:
                    self._frames.start()
                except ScannerError as exc:
                    if present is not False:
                        present = False
                        log.warning("camera missing: %s", exc)
                        sink(ScannerState(source=self.name, present=False, detail=str(exc)))
                    stop.wait(self.retry_s)
                    continue
                present = True
                sink(ScannerState(source=self.name, present=True, detail="camera started"))
                try:
                    self._pump(sink, stop)
                except ScannerError as exc:
                    present = False
                    log.warning("camera lost: %s", exc)
                    sink(ScannerState(source=self.name, present=False, detail=str(exc)))
                finally:
                    self._frames.close()
        finally:
            self._decoder.close()

    def _pump(self, sink: SourceSink, stop: threading.Event) -> None:
        period = 1.0 / self.fps
        while not stop.is_set():
            started = self._monotonic()
            frame = self._frames.capture()
            for code in self._filter.update(self._decoder.decode(frame), started):
                text, reason = decode_text(code.data)
                sink(Scan(text=text, source=self.name, rejected=reason))
            stop.wait(max(0.0, started + period - self._monotonic()))
