"""A laid-out figure widget as pixels and as SVG, and the files they go into.

    page = render_page(widget, formats)      # RGB pixels and SVG parts of the widget's whole scene
    encode_png(page.rgb) -> bytes            # any thread: zlib releases the GIL
    write_atomically(path, data)             # a temporary name, then a rename

Why not pyqtgraph's ImageExporter / SVGExporter: the SVG exporter was half of an export's time (see svg.py),
and QImage.save's PNG writer holds the GIL (50 ms for a 1400 x 800 figure), so it could not overlap with
drawing the next figure; zlib in a worker thread does.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PyQt6 import QtCore, QtGui, QtWidgets

from . import svg

PNG_LEVEL = 3  # zlib level: a 1400 x 800 page in ~7 ms, not level 6's 22-37 ms, for files ~40% larger (40 kB)


@dataclass
class Page:
    """One rendered figure: ``rgb`` (H, W, 3) uint8 pixels, and the SVG clip definitions and elements."""

    width: int
    height: int
    rgb: np.ndarray | None = None
    svg_defs: list = field(default_factory=list)
    svg_body: list = field(default_factory=list)


def settle(widget) -> None:
    """Lay the widget's figure out at the widget's size without showing it, so axes, legends and auto-ranges
    have their final geometry before anything is drawn."""
    widget.ci.layout.activate()
    widget.ci.setGeometry(0, 0, widget.width(), widget.height())
    QtWidgets.QApplication.processEvents()
    widget.ci.layout.activate()
    widget.scene().prepareForPaint()  # pyqtgraph applies pending auto-ranges here


@contextlib.contextmanager
def export_mode(scene, painter=None):
    """pyqtgraph's export mode on every item: curves antialiased, scatter symbols drawn as vectors (not from
    a pixmap atlas), plot buttons hidden."""
    items = [item for item in scene.items() if hasattr(item, "setExportMode")]
    options = {"antialias": True, "background": QtGui.QColor("white"), "painter": painter}
    for item in items:
        item.setExportMode(True, options)
    try:
        yield
    finally:
        for item in items:
            item.setExportMode(False)


def render_page(widget, formats, id_prefix: str = "c") -> Page:
    """The widget's scene (already settled) as pixels (if "png" in formats) and SVG parts (if "svg")."""
    scene = widget.scene()
    width, height = widget.width(), widget.height()
    source = widget.ci.mapRectToScene(widget.ci.boundingRect())
    page = Page(width, height)
    with export_mode(scene):
        if "png" in formats:
            image = QtGui.QImage(width, height, QtGui.QImage.Format.Format_RGB32)
            image.fill(widget.backgroundBrush().color())
            painter = QtGui.QPainter(image)
            try:
                painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
                painter.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing, True)
                scene.render(painter, QtCore.QRectF(0, 0, width, height), source)
            finally:
                painter.end()
            page.rgb = image_rgb(image)
        if "svg" in formats:
            page.svg_defs, page.svg_body = svg.scene_parts(scene, source, id_prefix)
    return page


def image_rgb(image: QtGui.QImage) -> np.ndarray:
    """(H, W, 3) uint8 copy of a QImage's pixels."""
    rgb = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    stride = rgb.bytesPerLine()
    data = np.frombuffer(rgb.constBits().asstring(stride * rgb.height()), dtype=np.uint8)
    return data.reshape(rgb.height(), stride)[:, : 3 * rgb.width()].reshape(rgb.height(), rgb.width(), 3).copy()


def encode_png(rgb: np.ndarray) -> bytes:
    """A PNG file (8-bit RGB, no interlace) of (H, W, 3) uint8 pixels.

    Each scanline is stored with the PNG "Up" filter (the difference to the row above), which turns the long
    vertical runs of a plot (grid lines, axes, background) into zeros that zlib packs well.
    """
    height, width, _ = rgb.shape
    rows = rgb.reshape(height, 3 * width)  # (H, 3W)
    filtered = np.empty((height, 3 * width + 1), dtype=np.uint8)  # (H, 1 + 3W): filter byte + row
    filtered[:, 0] = 2  # "Up"
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), PNG_LEVEL))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_atomically(path: Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to a temporary name beside ``path``, flush it to disk, then rename it into place, so a
    crash never leaves a truncated file under the final name.  ``durable=False``: no flush, for a file inside a
    folder that is flushed as a whole before it is published (io.export_experiment's plots/)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path
