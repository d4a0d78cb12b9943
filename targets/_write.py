"""Write a layout as a printable PDF, an exact PNG raster or an SVG, plus its JSON.

Grey levels are written sRGB-encoded (what printers and monitors expect for
8-bit grey), so the printed reflectance follows the layout's linear inks.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._errors import TargetError
from ._layout import Layout
from ._make import check_printable
from ._render import marker_modules, render_layout

_PT_PER_MM = 72.0 / 25.4


@dataclass(frozen=True)
class ChartFiles:
    """Paths written by :func:`write_chart`."""

    chart: Path
    layout: Path


def srgb_encode(reflectance: np.ndarray | float) -> np.ndarray:
    """Linear reflectance 0..1 -> sRGB-encoded 0..1."""
    x = np.clip(np.asarray(reflectance, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray | float) -> np.ndarray:
    """sRGB-encoded 0..1 -> linear reflectance 0..1."""
    y = np.clip(np.asarray(encoded, dtype=np.float64), 0.0, 1.0)
    return np.where(y <= 0.04045, y / 12.92, np.power((y + 0.055) / 1.055, 2.4))


def _grey8(reflectance: np.ndarray) -> np.ndarray:
    """8-bit sRGB-encoded grey, converted in row blocks to bound memory on large pages."""
    r = np.asarray(reflectance)
    if r.ndim < 2:
        return np.round(srgb_encode(r) * 255.0).astype(np.uint8)
    out = np.empty(r.shape, dtype=np.uint8)
    step = max(1, (1 << 21) // max(1, r.shape[1]))
    for a in range(0, r.shape[0], step):
        out[a:a + step] = np.round(srgb_encode(r[a:a + step]) * 255.0)
    return out


def read_chart_png(path: str | os.PathLike) -> np.ndarray:
    """Read a chart PNG written by :func:`write_chart` as float32 linear reflectance (H, W)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except FileNotFoundError:
        raise TargetError(f"chart image {path} does not exist") from None
    return srgb_decode(a).astype(np.float32)


def raster_shape(layout: Layout, dpi: float) -> tuple[int, int]:
    """(H, W) pixels of the whole page at ``dpi``."""
    if layout.screen is not None:
        return (layout.screen.height_px, layout.screen.width_px)
    s = dpi / 25.4
    return (int(round(layout.page_mm[1] * s)), int(round(layout.page_mm[0] * s)))


def _dpi_for(layout: Layout, dpi: float) -> float:
    return 25.4 / layout.screen.pixel_pitch_mm if layout.screen is not None else float(dpi)


def _patch_raster(layout: Layout, rect: tuple[float, float, float, float], dpi: float, **only) -> np.ndarray:
    """Render one patch (stripes or noise) onto its own pixel grid at ``dpi``."""
    x0, y0, x1, y1 = rect
    nw = max(1, int(round((x1 - x0) * dpi / 25.4)))
    nh = max(1, int(round((y1 - y0) * dpi / 25.4)))
    sx, sy = nw / (x1 - x0), nh / (y1 - y0)
    hom = np.array([[sx, 0, -0.5 - x0 * sx], [0, sy, -0.5 - y0 * sy], [0, 0, 1.0]])
    empty = {"regions": (), "dots": (), "stripes": (), "edges": (), "noise": (), "text": ()}
    sub = dataclasses.replace(
        layout, markers=dataclasses.replace(layout.markers, items=()), **{**empty, **only},
    )
    return render_layout(sub, (nh, nw), homography=hom)


# ---------------------------------------------------------------- PNG

def _write_png(layout: Layout, path: Path, dpi: float) -> None:
    from PIL import Image

    shape = raster_shape(layout, dpi)
    s = dpi / 25.4
    if layout.screen is not None:
        s = 1.0 / layout.screen.pixel_pitch_mm
    hom = np.array([[s, 0, -0.5], [0, s, -0.5], [0, 0, 1.0]])
    img = render_layout(layout, shape, homography=hom)
    Image.fromarray(_grey8(img), mode="L").save(path, format="PNG", dpi=(dpi, dpi), optimize=False)


# ---------------------------------------------------------------- PDF

def _write_pdf(layout: Layout, path: Path, dpi: float) -> None:
    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    pw, ph = layout.page_mm
    k = _PT_PER_MM
    c = canvas.Canvas(str(path), pagesize=(pw * k, ph * k), pageCompression=1)
    c.setTitle(f"lenspsf {layout.kind} chart {layout.layout_id}")
    c.setCreator("lenspsf targets")

    def grey(ink: str) -> float:
        return float(srgb_encode(layout.reflectance(ink)))

    def rect(x0, y0, x1, y1, ink):
        c.setFillGray(grey(ink))
        c.rect(x0 * k, (ph - y1) * k, (x1 - x0) * k, (y1 - y0) * k, stroke=0, fill=1)

    def image(arr, x0, y0, x1, y1):
        im = Image.fromarray(_grey8(arr), mode="L")
        c.drawImage(ImageReader(im), x0 * k, (ph - y1) * k, (x1 - x0) * k, (y1 - y0) * k)

    if layout.background != "paper":
        rect(0, 0, pw, ph, layout.background)
    for r in layout.regions:
        rect(r.x0_mm, r.y0_mm, r.x1_mm, r.y1_mm, r.ink)
    for n in layout.noise:
        image(_patch_raster(layout, (n.x0_mm, n.y0_mm, n.x1_mm, n.y1_mm), dpi, noise=(n,)),
              n.x0_mm, n.y0_mm, n.x1_mm, n.y1_mm)
    for p in layout.stripes:
        image(_patch_raster(layout, (p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm), dpi, stripes=(p,)),
              p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm)
    for e in layout.edges:
        c.setFillGray(grey(e.ink))
        path_ = c.beginPath()
        (x, y), rest = e.corners_mm[0], e.corners_mm[1:]
        path_.moveTo(x * k, (ph - y) * k)
        for x, y in rest:
            path_.lineTo(x * k, (ph - y) * k)
        path_.close()
        c.drawPath(path_, stroke=0, fill=1)
    for d in layout.dots:
        c.setFillGray(grey(d.ink))
        c.circle(d.x_mm * k, (ph - d.y_mm) * k, d.diameter_mm / 2 * k, stroke=0, fill=1)
    ms = layout.markers
    for m in ms.items:
        (x0, y0), (x1, y1) = m.corners_mm[0], m.corners_mm[2]
        cell = (x1 - x0) / ms.modules
        q = ms.quiet_zone_of(m)
        rect(x0 - q, y0 - q, x1 + q, y1 + q, "paper")  # quiet zone (matters inside dark fields)
        bits = marker_modules(ms.dictionary, m.id, ms.modules)
        # All black modules in one path: one fill, no hairline seams between modules.
        c.setFillGray(grey("black"))
        path_ = c.beginPath()
        for row in range(ms.modules):
            col = 0
            while col < ms.modules:
                if bits[row, col] > 0.5:
                    col += 1
                    continue
                start = col
                while col < ms.modules and bits[row, col] <= 0.5:
                    col += 1
                path_.rect((x0 + start * cell) * k, (ph - (y0 + (row + 1) * cell)) * k,
                           (col - start) * cell * k, cell * k)
        c.drawPath(path_, stroke=0, fill=1)
    b = layout.scale_bar
    rect(b.x0_mm, b.y0_mm, b.x0_mm + b.length_mm, b.y0_mm + b.height_mm, b.ink)
    for line in layout.text:
        c.setFillGray(grey(line.ink))
        c.setFont("Helvetica", line.height_mm * k)
        c.drawString(line.x_mm * k, (ph - line.y_mm - 0.78 * line.height_mm) * k, line.text)
    c.showPage()
    c.save()


# ---------------------------------------------------------------- SVG

def _write_svg(layout: Layout, path: Path, dpi: float) -> None:
    from PIL import Image

    pw, ph = layout.page_mm

    def fill(ink: str) -> str:
        g = int(_grey8(np.array(layout.reflectance(ink))))
        return f"rgb({g},{g},{g})"

    def png_href(arr) -> str:
        buf = io.BytesIO()
        Image.fromarray(_grey8(arr), mode="L").save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pw:g}mm" height="{ph:g}mm" '
        f'viewBox="0 0 {pw:g} {ph:g}" shape-rendering="geometricPrecision">',
        f"<title>lenspsf {layout.kind} chart {layout.layout_id}</title>",
        f'<rect x="0" y="0" width="{pw:g}" height="{ph:g}" fill="{fill(layout.background)}"/>',
    ]
    for r in layout.regions:
        out.append(f'<rect x="{r.x0_mm:.4f}" y="{r.y0_mm:.4f}" width="{r.x1_mm - r.x0_mm:.4f}" '
                   f'height="{r.y1_mm - r.y0_mm:.4f}" fill="{fill(r.ink)}"/>')
    rasters = [((n.x0_mm, n.y0_mm, n.x1_mm, n.y1_mm), {"noise": (n,)}) for n in layout.noise]
    rasters += [((p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm), {"stripes": (p,)}) for p in layout.stripes]
    for (x0, y0, x1, y1), only in rasters:
        out.append(f'<image x="{x0:.4f}" y="{y0:.4f}" width="{x1 - x0:.4f}" height="{y1 - y0:.4f}" '
                   f'preserveAspectRatio="none" style="image-rendering:pixelated" '
                   f'href="{png_href(_patch_raster(layout, (x0, y0, x1, y1), dpi, **only))}"/>')
    for e in layout.edges:
        pts = " ".join(f"{x:.4f},{y:.4f}" for x, y in e.corners_mm)
        out.append(f'<polygon points="{pts}" fill="{fill(e.ink)}"/>')
    for d in layout.dots:
        out.append(f'<circle cx="{d.x_mm:.4f}" cy="{d.y_mm:.4f}" r="{d.diameter_mm / 2:.4f}" fill="{fill(d.ink)}"/>')
    ms = layout.markers
    for m in ms.items:
        (x0, y0), (x1, _) = m.corners_mm[0], m.corners_mm[1]
        cell = (x1 - x0) / ms.modules
        q = ms.quiet_zone_of(m)
        out.append(f'<rect x="{x0 - q:.4f}" y="{y0 - q:.4f}" width="{x1 - x0 + 2 * q:.4f}" '
                   f'height="{x1 - x0 + 2 * q:.4f}" fill="{fill("paper")}"/>')
        bits = marker_modules(ms.dictionary, m.id, ms.modules)
        rects = "".join(f"M{x0 + col * cell:.4f} {y0 + row * cell:.4f}h{cell:.4f}v{cell:.4f}h{-cell:.4f}z"
                        for row in range(ms.modules) for col in range(ms.modules) if bits[row, col] <= 0.5)
        out.append(f'<path id="marker{m.id}" d="{rects}" fill="{fill("black")}"/>')
    b = layout.scale_bar
    out.append(f'<rect id="scale-bar" x="{b.x0_mm:.4f}" y="{b.y0_mm:.4f}" width="{b.length_mm:.4f}" '
               f'height="{b.height_mm:.4f}" fill="{fill(b.ink)}"/>')
    for line in layout.text:
        text = line.text.replace("&", "&amp;").replace("<", "&lt;")
        out.append(f'<text x="{line.x_mm:.4f}" y="{line.y_mm + 0.78 * line.height_mm:.4f}" '
                   f'font-family="Helvetica, Arial, sans-serif" font-size="{line.height_mm:.4f}" '
                   f'fill="{fill(line.ink)}">{text}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


# ONE mapping from output suffix to writer.
_WRITERS = {".pdf": _write_pdf, ".png": _write_png, ".svg": _write_svg}


def write_chart(layout: Layout, path: str | os.PathLike, *, dpi: float = 600.0) -> ChartFiles:
    """Write the chart (``.pdf``, ``.png`` or ``.svg``) and ``NAME.json`` beside it.

    Parameters
    ----------
    layout : Layout
        From :func:`make_layout`.
    path : path-like
        Output chart; the suffix chooses the format.
    dpi : float
        Raster resolution: the PNG's pixels per inch, and the resolution of the
        sine gratings and noise embedded (losslessly) in PDF and SVG. Screen
        layouts always use one pixel per screen pixel.

    Returns
    -------
    ChartFiles
        The chart and layout paths. Both are written atomically: on any error
        neither is left half-written.

    Raises
    ------
    TargetError
        Unknown suffix, bad ``dpi``, or content too fine to print at ``dpi``.
    OSError
        The output folder is missing or not writable.
    """
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise TargetError(f"output {path} must end in .pdf, .png or .svg")
    if not (isinstance(dpi, (int, float)) and np.isfinite(dpi) and dpi > 0):
        raise TargetError(f"--dpi must be a positive number, got {dpi}")
    dpi = _dpi_for(layout, dpi)
    check_printable(layout, dpi)
    json_path = path.with_suffix(".json")
    with ExitStack() as stack:
        tmp_chart = stack.enter_context(atomic_write(path))
        tmp_json = stack.enter_context(atomic_write(json_path))
        writer(layout, tmp_chart, dpi)
        tmp_json.write_text(layout.to_json() + "\n", encoding="utf-8")
    return ChartFiles(path, json_path)
