"""Barcode and QR decoding of grey camera frames with zbar (through pyzbar's ctypes wrapper).

zbar guesses the character set of a QR code without an ECI header and garbles short Vietnamese
text ("Hùng" comes back as Shift-JIS mojibake). zbar 0.23+ has a binary mode that returns the
QR code's bytes untouched; pyzbar's enum lacks it, so it is set here by number and the bytes are
decoded as UTF-8 by the caller. Needs the ``libzbar0`` system library.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from pyzbar import wrapper as zb

from agent.errors import ScannerError

ZBAR_CFG_ENABLE = 0
ZBAR_CFG_BINARY = 4  # zbar.h since 0.23; missing from pyzbar.wrapper.ZBarConfig
_FOURCC_Y800 = 0x30303859  # 'Y800': 8-bit grey

SYMBOLOGIES: dict[str, int] = {
    "qrcode": 64,
    "code128": 128,
    "code39": 39,
    "code93": 93,
    "ean8": 8,
    "ean13": 13,
    "upca": 12,
    "upce": 9,
    "i25": 25,
    "codabar": 38,
    "databar": 34,
    "databar_exp": 35,
}
"""Symbology names accepted in ``scanner.symbologies``, with their zbar numbers."""

_NAMES = {number: name for name, number in SYMBOLOGIES.items()}


@dataclass(frozen=True, slots=True)
class Decoded:
    """One code found in a frame: its raw bytes and its symbology's name."""

    data: bytes
    symbology: str


def decode_text(data: bytes) -> tuple[str, str | None]:
    """``(text, reason)``: the bytes as UTF-8, or a replacement text and why it was refused."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        return data.decode("utf-8", errors="replace"), f"not UTF-8 at byte {exc.start}: {bad!r}"


class ZbarDecoder:
    """A zbar image scanner restricted to ``symbologies``, QR codes in binary mode.

    Restricting the symbologies matters: with all of them enabled, zbar spends ~35 ms on a noisy
    640x480 frame instead of ~2 ms. Not thread-safe: one decoder per camera loop.
    """

    def __init__(self, symbologies: Sequence[str] = ("qrcode",)) -> None:
        unknown = sorted(set(symbologies) - set(SYMBOLOGIES))
        if unknown or not symbologies:
            raise ValueError(f"unknown symbologies {unknown}; known: {sorted(SYMBOLOGIES)}")
        self.symbologies = tuple(symbologies)
        self._scanner: Any = zb.zbar_image_scanner_create()
        if not self._scanner:
            raise ScannerError("zbar: cannot create an image scanner")
        # Symbology 0 means all of them: disable every one, then enable those configured.
        zb.zbar_image_scanner_set_config(self._scanner, 0, ZBAR_CFG_ENABLE, 0)
        for name in self.symbologies:
            zb.zbar_image_scanner_set_config(self._scanner, SYMBOLOGIES[name], ZBAR_CFG_ENABLE, 1)
        if "qrcode" in self.symbologies:
            rc = zb.zbar_image_scanner_set_config(
                self._scanner, SYMBOLOGIES["qrcode"], ZBAR_CFG_BINARY, 1
            )
            if rc != 0:
                self.close()
                raise ScannerError(
                    "libzbar is too old for binary mode (needs 0.23 or later): Vietnamese text "
                    "in QR codes would be garbled"
                )

    def decode(self, grey: np.ndarray[Any, np.dtype[np.uint8]]) -> list[Decoded]:
        """Every code in a grey (height x width, uint8) frame."""
        if self._scanner is None:
            raise ScannerError("zbar decoder is closed")
        frame = np.ascontiguousarray(grey, dtype=np.uint8)
        if frame.ndim != 2:
            raise ValueError(f"need a 2-D grey frame, got shape {frame.shape}")
        height, width = frame.shape
        image = zb.zbar_image_create()
        if not image:
            raise ScannerError("zbar: cannot create an image")
        try:
            zb.zbar_image_set_format(image, _FOURCC_Y800)
            zb.zbar_image_set_size(image, width, height)
            # zbar reads the pixels in place; ``frame`` stays referenced until the scan is done.
            zb.zbar_image_set_data(image, ctypes.c_void_p(frame.ctypes.data), frame.nbytes, None)
            if zb.zbar_scan_image(self._scanner, image) < 0:
                raise ScannerError("zbar: unsupported image format")
            found: list[Decoded] = []
            symbol = zb.zbar_image_first_symbol(image)
            while symbol:
                data = ctypes.string_at(
                    zb.zbar_symbol_get_data(symbol), zb.zbar_symbol_get_data_length(symbol)
                )
                kind = int(symbol.contents.type)
                found.append(Decoded(data=data, symbology=_NAMES.get(kind, str(kind))))
                symbol = zb.zbar_symbol_next(symbol)
            return found
        finally:
            zb.zbar_image_destroy(image)

    def close(self) -> None:
        if self._scanner is not None:
            zb.zbar_image_scanner_destroy(self._scanner)
            self._scanner = None

    def __enter__(self) -> ZbarDecoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
