"""SVG of a pyqtgraph scene: Qt's SVG generator, made portable, with the plots' clipping.

pyqtgraph's own SVGExporter renders every item separately and rewrites each with xml.dom.minidom, point by
point in Python: 50 ms a figure here, most of the export's time.  This does the same job in a few passes of
Qt's QSvgGenerator over the whole scene, then one ElementTree pass:

- clipping: QSvgGenerator writes no clip paths, so a plot's ViewBox (which clips its curves to the plot area)
  is rendered in a pass of its own and wrapped in a <clipPath> of its rectangle; everything else (axes,
  titles, legends) comes from one pass with the ViewBoxes made transparent;
- strokes: Qt draws curves in data coordinates under a group transform with vector-effect="non-scaling-stroke"
  (SVG 1.2 Tiny).  Viewers that do not know it (Inkscape, librsvg before 2.52, SVG 1.1 tools) would scale a
  2 px line by the axis scale, so the coordinates of paths, polylines, polygons, lines, rectangles and
  ellipses are transformed here into page coordinates and the transform dropped;
- text keeps its transform (it scales as a whole), and its font gets a generic fallback (sans-serif).

Scene coordinates are page coordinates: the scene's ``source`` rectangle is drawn at (0, 0) with its own size.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
from PyQt6 import QtCore, QtGui, QtSvg, QtWidgets

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)
_G = f"{{{SVG_NS}}}g"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PATH_TOKEN = re.compile(r"([A-Za-z])|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_MATRIX = re.compile(r"matrix\(([^)]*)\)")
_FLATTENED = {"path", "polyline", "polygon", "line", "rect", "ellipse", "circle"}
_ABSOLUTE_COMMANDS = set("MLCQZ")


def scene_parts(
    scene: QtWidgets.QGraphicsScene, source: QtCore.QRectF, id_prefix: str = "c"
) -> tuple[list[ET.Element], list[ET.Element]]:
    """(clip-path definitions, drawing elements) of the scene's ``source`` rectangle, in page coordinates.

    Items must already be in export mode (see rendering.export_mode) and laid out.
    """
    clippers = [
        item
        for item in scene.items()
        if item.isVisible() and item.flags() & QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape
    ]
    order = {item: n for n, item in enumerate(scene.items(QtCore.Qt.SortOrder.AscendingOrder))}
    clippers.sort(key=order.get)  # stacking order, bottom first
    offset = QtCore.QPointF(-source.left(), -source.top())
    defs: list[ET.Element] = []
    body: list[ET.Element] = []
    with _transparent(clippers):
        body.append(_group(_render(scene, source), {}))
    for n, clipper in enumerate(clippers):
        with _transparent(_others(scene, clipper)):
            content = _render(scene, source)
        if not len(content):
            continue
        rect = clipper.mapRectToScene(clipper.boundingRect()).translated(offset)
        clip_id = f"{id_prefix}{n}"
        clip = ET.Element(f"{{{SVG_NS}}}clipPath", {"id": clip_id})
        ET.SubElement(
            clip,
            f"{{{SVG_NS}}}rect",
            {"x": _num(rect.x()), "y": _num(rect.y()), "width": _num(rect.width()), "height": _num(rect.height())},
        )
        defs.append(clip)
        body.append(_group(content, {"clip-path": f"url(#{clip_id})"}))
    return defs, [g for g in body if len(g)]


def document(
    width: float,
    height: float,
    background: str,
    defs: list[ET.Element],
    body: list[ET.Element],
    title: str = "GradScope figure",
) -> bytes:
    """A standalone SVG 1.1 document of the given size holding ``defs`` and ``body``."""
    size = {"width": _num(width), "height": _num(height), "viewBox": f"0 0 {_num(width)} {_num(height)}"}
    root = ET.Element(f"{{{SVG_NS}}}svg", {"version": "1.1", **size})
    ET.SubElement(root, f"{{{SVG_NS}}}title").text = title
    if defs:
        ET.SubElement(root, f"{{{SVG_NS}}}defs").extend(defs)
    ET.SubElement(root, f"{{{SVG_NS}}}rect", {"width": "100%", "height": "100%", "fill": background})
    root.extend(body)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def translated(elements: list[ET.Element], dx: float, dy: float) -> ET.Element:
    """The elements in a group moved by (dx, dy) (a page placed on a composite)."""
    return _group(elements, {"transform": f"translate({_num(dx)},{_num(dy)})"})


def text_element(text: str, x: float, y: float, size_px: float, color: str, anchor: str = "middle") -> ET.Element:
    element = ET.Element(
        f"{{{SVG_NS}}}text",
        {
            "x": _num(x),
            "y": _num(y),
            "font-size": _num(size_px),
            "font-family": f"{_font_family()}, sans-serif",
            "fill": color,
            "text-anchor": anchor,
        },
    )
    element.text = text
    return element


# ------------------------------------------------------------------------------------------------ passes
class _transparent:
    """Make items transparent for one pass (opacity 0: Qt skips them and their children when painting)."""

    def __init__(self, items):
        self.items = list(items)
        self.saved: list[float] = []

    def __enter__(self):
        self.saved = [item.opacity() for item in self.items]
        for item in self.items:
            item.setOpacity(0.0)
        return self

    def __exit__(self, *exc):
        for item, opacity in zip(self.items, self.saved):
            item.setOpacity(opacity)
        return False


def _others(scene, keep) -> list:
    """The items to hide so that only ``keep`` (with its children) is painted: the siblings of ``keep`` and
    of each of its ancestors.  The ancestors themselves stay (hiding one would hide ``keep``); layouts and
    plot items paint nothing of their own."""
    hide = []
    node = keep
    while node is not None:
        parent = node.parentItem()
        siblings = (
            parent.childItems() if parent is not None else [item for item in scene.items() if item.parentItem() is None]
        )
        hide += [item for item in siblings if item is not node and item.isVisible()]
        node = parent
    return hide


def _render(scene, source: QtCore.QRectF) -> list[ET.Element]:
    """One QSvgGenerator pass over the scene, as page-coordinate elements."""
    buffer = QtCore.QBuffer()
    buffer.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    generator = QtSvg.QSvgGenerator()
    generator.setOutputDevice(buffer)
    size = QtCore.QSize(math.ceil(source.width()), math.ceil(source.height()))
    generator.setSize(size)
    generator.setViewBox(QtCore.QRectF(0, 0, source.width(), source.height()))
    # the scene's fonts were laid out at the screen's resolution: the SVG's pixel sizes must use the same
    generator.setResolution(round(QtGui.QGuiApplication.primaryScreen().logicalDotsPerInchX()))
    painter = QtGui.QPainter(generator)
    try:
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        scene.render(painter, QtCore.QRectF(0, 0, source.width(), source.height()), source)
    finally:
        painter.end()
    root = ET.fromstring(bytes(buffer.data()))
    out: list[ET.Element] = []
    for top in root.iter(_G):
        for group in list(top):
            if group.tag == _G and len(group):
                out += _flatten(group)
        break  # Qt nests every state group in one outer group
    return out


# --------------------------------------------------------------------------------------------- flattening
def _flatten(group: ET.Element) -> list[ET.Element]:
    """A Qt state group as groups without a transform (shapes in page coordinates) and, for what cannot be
    flattened (text, images, skewed rectangles), groups keeping it.  Order is kept."""
    attrs = dict(group.attrib)
    transform = attrs.pop("transform", "")
    match = _MATRIX.match(transform.strip())
    a, b, c, d, e, f = (float(v) for v in match.group(1).split(",")) if match else (1, 0, 0, 1, 0, 0)
    M = np.array([[a, c, e], [b, d, f]])  # (2, 3) affine
    if "font-family" in attrs:
        attrs["font-family"] = _portable_family(attrs["font-family"])
    scale = math.sqrt(abs(a * d - b * c))
    out: list[ET.Element] = []
    current, current_flat = None, None
    for child in group:
        tag = child.tag.rpartition("}")[2]
        if "font-family" in child.attrib:  # Qt repeats the font on every <text>
            child.set("font-family", _portable_family(child.get("font-family")))
        flat = tag in _FLATTENED and _transform_shape(child, tag, M)
        if flat:
            if child.get("vector-effect") == "non-scaling-stroke":
                del child.attrib["vector-effect"]  # page coordinates: nothing scales
            elif "stroke-width" in attrs and scale != 1:
                child.set("stroke-width", _num(float(attrs["stroke-width"]) * scale))
        if current is None or flat != current_flat:
            extra = {} if flat or not match else {"transform": transform}
            current = ET.Element(_G, {**attrs, **extra})
            current_flat = flat
            out.append(current)
        current.append(child)
    return out


def _transform_shape(element: ET.Element, tag: str, M: np.ndarray) -> bool:
    """Rewrite a shape's coordinates through the affine M; False when it cannot be (it keeps the transform)."""
    if tag == "path":
        d = element.get("d", "")
        tokens = _PATH_TOKEN.findall(d)
        commands = {cmd for cmd, _ in tokens if cmd}
        if not commands <= _ABSOLUTE_COMMANDS:
            return False
        numbers = np.array([float(num) for cmd, num in tokens if not cmd])
        if numbers.size % 2:
            return False
        points = _apply(M, numbers.reshape(-1, 2))
        parts, k = [], 0
        for cmd, _ in tokens:
            if cmd:
                parts.append(cmd)
            elif k % 2 == 0:
                x, y = points[k // 2]
                parts.append(f"{_num(x)},{_num(y)}")
                k += 1
            else:
                k += 1
        text = " ".join(parts).replace("M ", "M").replace("L ", "L").replace("C ", "C").replace("Q ", "Q")
        if text and not text.startswith("M"):
            text = "M" + text[1:]  # Qt skips a leading NaN point and may start with L: draw it anyway
        element.set("d", text)
        return True
    if tag in ("polyline", "polygon"):
        numbers = np.array([float(v) for v in _NUMBER.findall(element.get("points", ""))])
        if numbers.size % 2:
            return False
        points = _apply(M, numbers.reshape(-1, 2))
        element.set("points", " ".join(f"{_num(x)},{_num(y)}" for x, y in points))
        return True
    if tag == "line":
        (x1, y1), (x2, y2) = _apply(
            M,
            np.array(
                [
                    [float(element.get("x1", 0)), float(element.get("y1", 0))],
                    [float(element.get("x2", 0)), float(element.get("y2", 0))],
                ]
            ),
        )
        element.attrib.update({"x1": _num(x1), "y1": _num(y1), "x2": _num(x2), "y2": _num(y2)})
        return True
    if M[0, 1] != 0 or M[1, 0] != 0:
        return False  # a rotated or skewed box is no longer a box
    sx, sy = M[0, 0], M[1, 1]
    if tag == "rect":
        x, y = float(element.get("x", 0)), float(element.get("y", 0))
        w, h = float(element.get("width", 0)), float(element.get("height", 0))
        (x0, y0), (x1, y1) = _apply(M, np.array([[x, y], [x + w, y + h]]))
        element.attrib.update(
            {"x": _num(min(x0, x1)), "y": _num(min(y0, y1)), "width": _num(abs(x1 - x0)), "height": _num(abs(y1 - y0))}
        )
        for key in ("rx", "ry"):
            if key in element.attrib:
                element.set(key, _num(float(element.get(key)) * abs(sx if key == "rx" else sy)))
        return True
    if tag in ("ellipse", "circle"):
        ((cx, cy),) = _apply(M, np.array([[float(element.get("cx", 0)), float(element.get("cy", 0))]]))
        if tag == "circle":
            if abs(abs(sx) - abs(sy)) > 1e-9 * max(abs(sx), abs(sy), 1):
                return False
            element.attrib.update({"cx": _num(cx), "cy": _num(cy), "r": _num(float(element.get("r", 0)) * abs(sx))})
        else:
            element.attrib.update(
                {
                    "cx": _num(cx),
                    "cy": _num(cy),
                    "rx": _num(float(element.get("rx", 0)) * abs(sx)),
                    "ry": _num(float(element.get("ry", 0)) * abs(sy)),
                }
            )
        return True
    return False


def _apply(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n, 2) points through the (2, 3) affine M."""
    return points @ M[:, :2].T + M[:, 2]


def _group(elements: list[ET.Element], attrs: dict) -> ET.Element:
    group = ET.Element(_G, attrs)
    group.extend(elements)
    return group


def _num(value: float) -> str:
    """A coordinate with 3 decimals at most (sub-pixel enough; keeps files small)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_FAMILIES: dict[str, str] = {}


def _font_family(name: str | None = None) -> str:
    """The font family Qt really used for ``name`` (e.g. "Sans Serif" is fontconfig's alias for DejaVu Sans)."""
    key = name or ""
    if key not in _FAMILIES:
        font = QtGui.QFont(name) if name else QtGui.QGuiApplication.font()
        real = QtGui.QFontInfo(font).family()
        _FAMILIES[key] = ", ".join(dict.fromkeys(f"'{n}'" if " " in n else n for n in (real, name) if n))
    return _FAMILIES[key]


def _portable_family(qt_family: str) -> str:
    """Qt's font-family value (e.g. "Sans Serif", a fontconfig alias no other program knows) as the font Qt
    really drew with, the alias, and a generic family any viewer has."""
    return f"{_font_family(qt_family.strip(chr(34)).strip(chr(39)))}, sans-serif"
