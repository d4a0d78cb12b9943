"""MTF of a whole chart photo: every slanted edge of every dark square, and every grating.

A square of an edges (or combo) chart has four straight sides, each a slanted edge of
known tilt. The registered geometry (chart millimetres -> photo pixels) says where each
side lies in the photo; around the middle of each side an axis-aligned region of
interest is chosen that holds that side and nothing else (no corner, no other side, no
other square or marker, with a margin for the blur), and :func:`calib.measure_edge`
finds and measures the edge inside it. Grating patches (stripes or combo charts) go
through :func:`calib.measure_stripes`.

Every item keeps its own flags (low contrast, clipped, critical angle, short edge, partly
outside the frame, ...). Flagged items are reported with their flags and never merged
into a clean figure: :meth:`ChartMTF.clean_records` leaves them out, the summary names
them.

:func:`psf_edge_agreement` is the cross-check of a PSF map against the edges: the MTF of
the map's PSF at each edge's position along the edge normal, against the edge's SFR.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._edge import measure_edge
from ._errors import CalibError
from ._imageio import LinearImage
from ._mtf_psf import field_direction, psf_mtf
from ._mtf_stripes import StripeResult, measure_stripes
from ._psfmap import PSFMap
from ._records import MTFRecord

__all__ = ["ChartEdge", "ChartMTF", "EdgeAgreement", "ItemSummary", "measure_chart_mtf", "psf_edge_agreement"]

FLAG_OUTSIDE = "outside"
FLAG_PARTLY_OUTSIDE = "partly_outside"
FLAG_NO_EDGE = "no_edge"
FLAG_CROWDED = "crowded"
FLAG_MISPLACED = "misplaced"
FLAG_SHORT_EDGE = "short_edge"

#: Half width of the region across an edge, as a fraction of the square's side (px) ...
_HALF_WIDTH_FRACTION = 0.22
#: ... kept within these bounds (pixels): enough for a soft edge's ESF, little noise.
_HALF_WIDTH_PX = (8.0, 40.0)
#: Longest stretch of an edge measured (pixels): more rows add little but time.
_MAX_EDGE_PX = 240.0
#: Shortest stretch worth measuring (pixels along the edge).
_MIN_EDGE_PX = 16.0
#: Part of a region that must lie inside the frame to measure the edge at all.
_MIN_INSIDE = 0.6
#: The measured edge farther than this (px, or fraction of the half width) from where the
#: geometry puts it: the registration is off here, the item is flagged.
_MISPLACED_FRACTION = 0.5
#: Fewest samples along a side (distortion bends long sides a little).
_SIDE_SAMPLES = 48
# Illumination fit: background samples on a page grid of this many cells along the long
# side, each the mean of a (2 r + 1)^2 box; polynomial degree (vignetting is smooth and
# radial: degree 4 follows cos^4 and a mechanical roll-off across a frame).
_ILLUM_GRID = 48
_ILLUM_BOX_PX = 2
_ILLUM_DEGREE = 4
_ILLUM_MIN_SAMPLES = 40


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class ChartEdge:
    """One side of one dark square, measured or not.

    Attributes
    ----------
    square_index : int
        Index into ``layout.edges``.
    side : int
        0..3: the side from ``corners_mm[side]`` to ``corners_mm[side + 1]``.
    predicted_xy_px : (float, float)
        Middle of the side where the geometry puts it, pixels.
    centre_xy_px : (float, float)
        Centre of the measured edge (the predicted middle when not measured).
    orientation_deg : float
        Direction of the edge normal (the measured frequency direction), [0, 180).
    direction : str
        ``"sagittal"``, ``"tangential"`` or ``"none"`` relative to the optical centre.
    tilt_deg : float
        Slant of the measured edge from the nearest image axis (NaN when not measured).
    length_px : float
        Length of the measured stretch of edge.
    roi : (int, int, int, int) or None
        (x, y, w, h) analysed; None when nothing could be measured.
    flags : tuple of str
        Problems of the item (union over channels): ``outside``, ``partly_outside``,
        ``crowded``, ``no_edge``, ``misplaced`` and the edge flags ``low_contrast``,
        ``clipped``, ``critical_angle``, ``short_edge``, ``noisy``.
    mtf50_cpp : dict
        MTF50 per channel, cycles/pixel (NaN if the SFR never falls to 0.5).
    mtf_at_half_nyquist : dict
        SFR at 0.25 cycles/pixel per channel.
    records : tuple of MTFRecord
        One per channel (method ``"edge"``), carrying the item's flags.
    """

    square_index: int
    side: int
    predicted_xy_px: tuple[float, float]
    centre_xy_px: tuple[float, float]
    orientation_deg: float
    direction: str
    tilt_deg: float
    length_px: float
    roi: tuple[int, int, int, int] | None
    flags: tuple[str, ...]
    mtf50_cpp: dict[str, float]
    mtf_at_half_nyquist: dict[str, float]
    records: tuple[MTFRecord, ...]


@dataclass(frozen=True)
class ItemSummary:
    """One line of the chart summary: one item (edge or grating patch) and channel.

    Attributes
    ----------
    kind : str
        ``"edge"`` or ``"stripes"``.
    index : int
        Square index (edges) or patch index (stripes).
    side : int
        Side of the square (edges), -1 for patches.
    channel : str
    x_px, y_px : float
    orientation_deg : float
    direction : str
    mtf50_cpp : float
        Edges: MTF50, cycles/pixel. Patches: NaN (a grating measures one frequency).
    freq_cpp : float
        Patches: the fundamental frequency; edges: 0.25 (Nyquist/2).
    mtf : float
        The MTF at ``freq_cpp``.
    flags : tuple of str
    """

    kind: str
    index: int
    side: int
    channel: str
    x_px: float
    y_px: float
    orientation_deg: float
    direction: str
    mtf50_cpp: float
    freq_cpp: float
    mtf: float
    flags: tuple[str, ...]


@dataclass(frozen=True)
class ChartMTF:
    """Every MTF measurement of one chart photo.

    Attributes
    ----------
    records : tuple of MTFRecord
        Every record (edges, then gratings), flagged ones included with their flags.
    edges : tuple of ChartEdge
        Every side of every square, measured or not.
    stripes : StripeResult or None
        The grating measurement (None for a chart without gratings).
    channels : tuple of str
        Channels of the edge records (``R, G, B, Y`` for RGB).
    image_size : (int, int)
        (width, height).
    centre_xy_px : (float, float)
        Optical centre used for sagittal / tangential.
    """

    records: tuple[MTFRecord, ...]
    edges: tuple[ChartEdge, ...]
    stripes: StripeResult | None
    channels: tuple[str, ...]
    image_size: tuple[int, int]
    centre_xy_px: tuple[float, float]

    def clean_records(self) -> tuple[MTFRecord, ...]:
        """Only the records without any flag."""
        return tuple(r for r in self.records if not r.flags)

    def flagged_edges(self) -> tuple[ChartEdge, ...]:
        """Edges with at least one flag (reported, never averaged in)."""
        return tuple(e for e in self.edges if e.flags)

    def summary(self) -> tuple[ItemSummary, ...]:
        """One line per measured item and channel: MTF50 for edges, the MTF for gratings."""
        rows = []
        for e in self.edges:
            for r in e.records:
                rows.append(ItemSummary("edge", e.square_index, e.side, r.channel, r.x_px, r.y_px,
                                        r.orientation_deg, r.direction, e.mtf50_cpp.get(r.channel, math.nan),
                                        0.25, e.mtf_at_half_nyquist.get(r.channel, math.nan), r.flags))
        if self.stripes is not None:
            for p in self.stripes.patches:
                for r in p.records:
                    f = float(r.freq_cpp[0]) if len(r.freq_cpp) else math.nan
                    m = float(r.mtf[0]) if len(r.mtf) else math.nan
                    rows.append(ItemSummary("stripes", p.index, -1, r.channel, r.x_px, r.y_px,
                                            r.orientation_deg, r.direction, math.nan, f, m, r.flags))
        return tuple(rows)

    def format_summary(self) -> str:
        """The summary as a text table (flagged items marked with their flags)."""
        lines = [f"{'kind':<7} {'item':>6} {'ch':<2} {'x_px':>7} {'y_px':>7} {'orient':>6} {'dir':<10} "
                 f"{'MTF50':>6} {'f_cpp':>5} {'MTF':>5}  flags"]
        for s in self.summary():
            item = f"{s.index}.{s.side}" if s.kind == "edge" else f"{s.index}"
            lines.append(f"{s.kind:<7} {item:>6} {s.channel:<2} {s.x_px:7.1f} {s.y_px:7.1f} "
                         f"{s.orientation_deg:6.1f} {s.direction:<10} {s.mtf50_cpp:6.3f} {s.freq_cpp:5.3f} "
                         f"{s.mtf:5.3f}  {','.join(s.flags)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class EdgeAgreement:
    """PSF-map MTF against edge SFR near one node of the map, one channel.

    Attributes
    ----------
    node : (int, int)
        (row, column) of the node the edges are nearest to.
    node_xy_px : (float, float)
    channel : str
    max_abs_diff : float
        Largest |MTF of the map's PSF - edge SFR| up to ``max_freq_cpp`` over the
        node's edges (each compared at its own position and normal).
    n_edges : int
        Edge records compared.
    """

    node: tuple[int, int]
    node_xy_px: tuple[float, float]
    channel: str
    max_abs_diff: float
    n_edges: int


# ---------------------------------------------------------------- geometry

def _forward_map(geometry: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Chart mm (N, 2) -> photo px (N, 2) from a registration or a 3x3 homography."""
    fn = getattr(geometry, "chart_to_image", None)
    if callable(fn):
        return lambda uv: np.asarray(fn(np.asarray(uv, np.float64)), np.float64).reshape(-1, 2)
    h = getattr(geometry, "homography", geometry)
    if callable(h):
        h = h()
    hm = np.asarray(h, np.float64) if h is not None else np.zeros(0)
    if hm.shape != (3, 3) or not np.all(np.isfinite(hm)) or hm[2, 2] == 0:
        raise CalibError(
            "the chart geometry must be a calib Registration (register_chart) or a finite 3x3 "
            "chart-mm-to-pixel homography (targets.find_markers(...).homography())"
        )
    hm = hm / hm[2, 2]

    def apply(uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        p = uv @ hm[:, :2].T + hm[:, 2]
        return p[:, :2] / p[:, 2:3]

    return apply


def _side_polylines(squares, to_px) -> list[list[np.ndarray]]:
    """Per square, per side: pixel positions every 2 px or closer along the side."""
    out = []
    for sq in squares:
        c = np.asarray(sq.corners_mm, np.float64)
        ends = to_px(c)
        sides = []
        for k in range(len(c)):
            a, b = c[k], c[(k + 1) % len(c)]
            n = max(_SIDE_SAMPLES, int(np.ceil(np.hypot(*(ends[(k + 1) % len(c)] - ends[k])) / 2.0)) + 1)
            t = np.linspace(0.0, 1.0, n)[:, None]
            sides.append(to_px(a + t * (b - a)))
        out.append(sides)
    return out


def _closed_polyline(corners_mm: np.ndarray, to_px, step_px: float = 2.0) -> np.ndarray:
    """Points (px) every ``step_px`` or closer along a closed chart-mm polygon."""
    c = np.asarray(corners_mm, np.float64)
    ends = to_px(c)
    out = []
    for k in range(len(c)):
        n = int(np.clip(np.ceil(np.hypot(*(ends[(k + 1) % len(c)] - ends[k])) / step_px), 1, 4000)) + 1
        t = np.linspace(0.0, 1.0, n)[:, None]
        out.append(c[k] + t * (c[(k + 1) % len(c)] - c[k]))
    return to_px(np.vstack(out))


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _other_shapes_mm(layout) -> list[np.ndarray]:
    """Every printed element but the edge squares and dots, as convex chart-mm polygons."""
    shapes = [_rect(r.x0_mm, r.y0_mm, r.x1_mm, r.y1_mm) for r in getattr(layout, "regions", ()) or ()]
    shapes += [_rect(p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm) for p in getattr(layout, "stripes", ()) or ()]
    shapes += [_rect(p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm) for p in getattr(layout, "noise", ()) or ()]
    markers = getattr(getattr(layout, "markers", None), "items", ()) or ()
    shapes += [np.asarray(m.corners_mm, np.float64) for m in markers]
    bar = getattr(layout, "scale_bar", None)
    if bar is not None and getattr(bar, "length_mm", 0) > 0:
        shapes.append(_rect(bar.x0_mm, bar.y0_mm, bar.x0_mm + bar.length_mm, bar.y0_mm + bar.height_mm))
    for t in getattr(layout, "text", ()) or ():
        # The text's extent is not in the layout: a generous box around its anchor.
        hgt = t.height_mm
        shapes.append(_rect(t.x_mm - hgt, t.y_mm - 1.5 * hgt, t.x_mm + 0.8 * hgt * len(t.text) + hgt, t.y_mm + 1.5 * hgt))
    return shapes


def _obstacles(layout, to_px, squares_px) -> tuple[np.ndarray, np.ndarray]:
    """Everything an edge region must keep clear of, as (owner, points px).

    ``owner`` is ``4 * square + side`` for the sides of the squares and -1 for every
    other element (regions, gratings, noise patches, dots, markers, scale bar, text).
    """
    owners, pts = [], []
    for i, sides in enumerate(squares_px):
        for k, q in enumerate(sides):
            owners.append(np.full(len(q), 4 * i + k))
            pts.append(q)
    for shp in _other_shapes_mm(layout):
        q = _closed_polyline(shp, to_px)
        owners.append(np.full(len(q), -1))
        pts.append(q)
    dots = getattr(layout, "dots", ()) or ()
    if dots:
        ring = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float64)
        d = np.array([(dt.x_mm, dt.y_mm, dt.diameter_mm / 2) for dt in dots], np.float64)
        q = to_px((d[:, None, :2] + ring[None] * d[:, None, 2:3]).reshape(-1, 2))
        owners.append(np.full(len(q), -1))
        pts.append(q)
    return np.concatenate(owners), np.vstack(pts)


def _region(pts: np.ndarray, s_px: float, hw: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Axis-aligned box (lo, hi) around the middle ``2 s_px`` of a side, ``hw`` to each side of it."""
    seg = np.cumsum(np.r_[0.0, np.hypot(*np.diff(pts, axis=0).T)])
    length = seg[-1]
    mid = length / 2
    keep = np.abs(seg - mid) <= s_px
    a = np.array([np.interp(mid - s_px, seg, pts[:, 0]), np.interp(mid - s_px, seg, pts[:, 1])])
    b = np.array([np.interp(mid + s_px, seg, pts[:, 0]), np.interp(mid + s_px, seg, pts[:, 1])])
    core = np.vstack([a, pts[keep], b])
    d = b - a
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9)
    box = np.vstack([core + hw * n, core - hw * n])
    return box.min(0), box.max(0), length


def _choose_roi(i: int, k: int, pts: np.ndarray, obstacles, hw: float, max_edge_px: float):
    """The longest central stretch (up to ``max_edge_px``) whose box clears every other side.

    Returns ((lo, hi) of the box in pixels, None), or (None, flag) when no stretch of at
    least ``_MIN_EDGE_PX`` fits: ``short_edge`` when the square's own corners are in the
    way (too small in the photo), ``crowded`` when another element is.
    """
    length = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    margin = max(3.0, 0.25 * hw)  # the blur of a neighbouring side reaches this far
    s = min(0.5 * length - 1.0, 0.5 * max_edge_px)
    owners, points = obstacles
    others = owners != 4 * i + k
    owners, points = owners[others], points[others]
    blocker = FLAG_SHORT_EDGE
    while s >= _MIN_EDGE_PX / 2:
        lo, hi, _ = _region(pts, s, hw)
        hit = np.all((points >= lo - margin) & (points <= hi + margin), axis=1)
        if not hit.any():
            return (lo, hi), None
        # its own corners: the square is too small in the photo; anything else: crowded
        blocker = FLAG_SHORT_EDGE if np.all(owners[hit] // 4 == i) & np.all(owners[hit] >= 0) else FLAG_CROWDED
        s *= 0.93
    return None, blocker


# ---------------------------------------------------------------- illumination

def _inside_convex(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Which points (N, 2) lie inside the convex polygon (K, 2) (either winding)."""
    e = np.roll(poly, -1, axis=0) - poly
    cross = e[None, :, 0] * (pts[:, None, 1] - poly[None, :, 1]) - e[None, :, 1] * (pts[:, None, 0] - poly[None, :, 0])
    return np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)


def _poly_terms(x: np.ndarray, y: np.ndarray, deg: int) -> np.ndarray:
    return np.stack([x**i * y**j for i in range(deg + 1) for j in range(deg + 1 - i)], axis=-1)


@dataclass(frozen=True)
class _Illumination:
    """Smooth relative illumination per channel, fitted to the chart's blank background."""

    coef: np.ndarray  # (C, terms)
    size: tuple[int, int]  # (w, h)

    def at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Illumination on the grid ``ys`` x ``xs`` (rows x columns), shape (H, W, C)."""
        w, h = self.size
        u, v = np.meshgrid(xs / w - 0.5, ys / h - 0.5)
        return (_poly_terms(u, v, _ILLUM_DEGREE) @ self.coef.T).astype(np.float32)


def _fit_illumination(data: np.ndarray, layout, to_px, obstacles, clearance_px: float) -> _Illumination | None:
    """Fit the illumination (vignetting x uneven light) to the chart's blank background.

    The background has one reflectance everywhere, so its level across the photo is
    the illumination. It is sampled on a grid over the page, away from every printed
    element by ``clearance_px`` (their blur), and a smooth polynomial is fitted per
    channel, with one pass that drops outliers (dust, a stray object). None when too
    few background samples are in the frame.
    """
    h, w = data.shape[:2]
    pw, ph = (float(v) for v in layout.page_mm)
    step = max(pw, ph) / _ILLUM_GRID
    gu, gv = np.meshgrid(np.arange(step / 2, pw, step), np.arange(step / 2, ph, step))
    mm = np.column_stack([gu.ravel(), gv.ravel()])
    keep = np.ones(len(mm), bool)
    for sq in getattr(layout, "edges", ()) or ():
        keep &= ~_inside_convex(mm, np.asarray(sq.corners_mm, np.float64))
    for shp in _other_shapes_mm(layout):
        keep &= ~_inside_convex(mm, shp)
    for dt in getattr(layout, "dots", ()) or ():
        keep &= np.hypot(mm[:, 0] - dt.x_mm, mm[:, 1] - dt.y_mm) > dt.diameter_mm
    px = to_px(mm[keep])
    r = _ILLUM_BOX_PX
    inside = (px[:, 0] >= r) & (px[:, 0] <= w - 1 - r) & (px[:, 1] >= r) & (px[:, 1] <= h - 1 - r)
    px = px[inside & np.all(np.isfinite(px), axis=1)]
    if len(px):
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(obstacles[1]).query(px)
        px = px[dist > clearance_px]
    if len(px) < _ILLUM_MIN_SAMPLES:
        return None
    ix, iy = np.rint(px[:, 0]).astype(int), np.rint(px[:, 1]).astype(int)
    offs = np.arange(-r, r + 1)
    vals = np.mean([data[iy + dy, ix + dx] for dy in offs for dx in offs], axis=0).reshape(len(px), -1)
    a = _poly_terms(px[:, 0] / w - 0.5, px[:, 1] / h - 0.5, _ILLUM_DEGREE)
    coef = []
    for c in range(vals.shape[1]):
        y = vals[:, c].astype(np.float64)
        ok = np.ones(len(y), bool)
        for _ in range(2):
            k, *_ = np.linalg.lstsq(a[ok], y[ok], rcond=None)
            res = y - a @ k
            mad = 1.4826 * np.median(np.abs(res[ok])) + 1e-9
            ok = np.abs(res) < 4 * mad
        if np.median(y) <= 0:
            return None
        coef.append(k)
    return _Illumination(np.asarray(coef), (w, h))


def _flattened(image, roi: tuple[int, int, int, int], illum: _Illumination):
    """The ROI of ``image`` divided by the illumination relative to its value at the ROI centre."""
    x0, y0, rw, rh = roi
    data = np.asarray(image.data if isinstance(image, LinearImage) else image, np.float32)
    crop = data[y0:y0 + rh, x0:x0 + rw]
    field = illum.at(np.arange(x0, x0 + rw, dtype=np.float64), np.arange(y0, y0 + rh, dtype=np.float64))
    field = field / field[rh // 2, rw // 2]
    if crop.ndim == 2:
        field = field[:, :, 0]
    flat = crop / np.clip(field, 0.2, None)
    if isinstance(image, LinearImage):
        sat = image.saturated[y0:y0 + rh, x0:x0 + rw] if image.saturated is not None else None
        return dataclasses.replace(image, data=flat, saturated=sat)
    return flat


# ---------------------------------------------------------------- measurement

def _image_size(image: Any) -> tuple[int, int]:
    data = getattr(image, "data", image)
    shape = np.shape(data)
    if len(shape) not in (2, 3):
        raise CalibError(f"the image has shape {shape}; expected (H, W) or (H, W, C) linear data")
    return int(shape[1]), int(shape[0])


def _measure_side(image, i: int, k: int, pts: np.ndarray, obstacles, *, w: int, h: int, hw: float,
                  max_edge_px: float, centre, measure: tuple[str, ...],
                  illum: _Illumination | None = None) -> ChartEdge:
    mid = pts[len(pts) // 2] if len(pts) % 2 else 0.5 * (pts[len(pts) // 2 - 1] + pts[len(pts) // 2])
    d = pts[-1] - pts[0]
    normal0 = float(np.degrees(np.arctan2(d[0], -d[1])) % 180.0)  # perpendicular to the side
    pred = (float(mid[0]), float(mid[1]))

    def unmeasured(flags: list[str], roi=None) -> ChartEdge:
        return ChartEdge(i, k, pred, pred, normal0, field_direction(pred[0], pred[1], normal0, centre_xy=centre),
                         math.nan, 0.0, roi, tuple(sorted(set(flags))), {}, {}, ())

    box, blocker = _choose_roi(i, k, pts, obstacles, hw, max_edge_px)
    if box is None:
        return unmeasured([blocker])
    lo, hi = box
    x0, y0 = int(math.floor(lo[0])), int(math.floor(lo[1]))
    x1, y1 = int(math.ceil(hi[0])) + 1, int(math.ceil(hi[1])) + 1
    full = (x1 - x0) * (y1 - y0)
    flags: list[str] = []
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 - cx0 < 8 or cy1 - cy0 < 8 or (cx1 - cx0) * (cy1 - cy0) < _MIN_INSIDE * full:
        return unmeasured([FLAG_OUTSIDE])
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        flags.append(FLAG_PARTLY_OUTSIDE)
    roi = (cx0, cy0, cx1 - cx0, cy1 - cy0)
    try:
        # Only the channels asked for (an unwanted luminance SFR costs as much as any),
        # with one edge fit shared by all of them.
        if illum is None:
            results = [measure_edge(image, roi=roi, channel=measure)]
        else:
            # Light falling off across the edge (vignetting) would tilt the ESF's flat
            # sides and lift or sink the SFR: measure on the flat-fielded ROI.
            r0 = measure_edge(_flattened(image, roi, illum), channel=measure)
            ex0, ey0 = r0.edge_xy_px
            results = [dataclasses.replace(r0, edge_xy_px=(ex0 + roi[0], ey0 + roi[1]), roi=roi)]
    except CalibError:
        return unmeasured(flags + [FLAG_NO_EDGE], roi)
    res = results[0]
    ex, ey = res.edge_xy_px
    orient = float(res.normal_deg % 180.0)
    # Where the geometry said the edge is, against where it was found (along the normal).
    nrm = np.array([math.cos(math.radians(orient)), math.sin(math.radians(orient))])
    miss = abs(float(np.dot(np.array([ex, ey]) - mid, nrm)))
    if miss > _MISPLACED_FRACTION * hw:
        flags.append(FLAG_MISPLACED)
    direction = field_direction(ex, ey, orient, centre_xy=centre)
    records = []
    m50, mhalf = {}, {}
    for r in results:
        for rec in r.to_records(direction=direction):
            fl = tuple(sorted(set(rec.flags) | set(flags)))
            records.append(dataclasses.replace(rec, orientation_deg=orient, flags=fl))
            m50[rec.channel] = float(r.mtf50_cpp[rec.channel])
            mhalf[rec.channel] = float(r.mtf_at_half_nyquist[rec.channel])
    all_flags = set(flags) | {f for r in records for f in r.flags}
    return ChartEdge(i, k, pred, (float(ex), float(ey)), orient, direction, float(res.angle_deg),
                     float(res.edge_length_px), roi, tuple(sorted(all_flags)), m50, mhalf, tuple(records))


def measure_chart_mtf(
    image: Any,
    layout: Any,
    geometry: Any,
    *,
    channels: Sequence[str] | None = None,
    centre_xy: tuple[float, float] | None = None,
    max_edge_px: float = _MAX_EDGE_PX,
    workers: int | None = None,
    progress: bool = False,
    flat_field: bool = True,
) -> ChartMTF:
    """Measure the MTF on every edge and grating of a chart photo.

    Parameters
    ----------
    image : LinearImage or ndarray
        The photo, linear, (H, W) or (H, W, C), 0..1 (:func:`calib.load_linear`).
    layout : targets.Layout
        The chart in the photo, of kind ``edges``, ``stripes`` or ``combo``.
    geometry : Registration or (3, 3) array
        Chart mm -> photo pixels: :func:`calib.register_chart`'s result (distortion
        included) or a homography (``targets.find_markers(img, layout).homography()``).
    channels : sequence of str, optional
        Channels to measure (default: the image's own, ``R, G, B`` for a colour photo).
        ``Y`` (the luminance of an RGB photo) is measured on edges only when asked for;
        gratings are measured per colour channel only.
    centre_xy : (float, float), optional
        Optical centre for sagittal / tangential (default: the frame centre).
    max_edge_px : float
        Longest stretch of one edge analysed, pixels (longer edges add little but time).
    workers : int, optional
        Threads measuring edges in parallel (default: up to 4, the CPU count).
    progress : bool
        One line per square on stderr.
    flat_field : bool
        Divide each edge region by the illumination (vignetting, uneven light) fitted to
        the chart's blank background first (default). A light gradient across an edge
        tilts its ESF and shifts MTF50 by 1-2 % at a strongly vignetted frame edge.
        Not done on undemosaiced mosaics, nor when too little background is visible.

    Returns
    -------
    ChartMTF
        Records (method ``"edge"`` per side of every square and channel, ``"stripes"``
        per grating patch and channel), the per-item results with their flags, and a
        summary (MTF50 per item).

    Raises
    ------
    CalibError
        The layout has neither edge squares nor gratings, the image is not 2-D/3-D, a
        channel is unknown, or the geometry is not usable.

    Examples
    --------
    >>> reg = register_chart(img.channel("G"), layout)         # doctest: +SKIP
    >>> res = measure_chart_mtf(img, layout, reg)               # doctest: +SKIP
    >>> print(res.format_summary())                            # doctest: +SKIP
    """
    w, h = _image_size(image)
    squares = tuple(getattr(layout, "edges", ()) or ())
    patches = tuple(getattr(layout, "stripes", ()) or ())
    if not squares and not patches:
        raise CalibError(
            f"the chart layout (kind {getattr(layout, 'kind', '?')!r}) holds neither edge squares nor "
            "gratings; measure the MTF on an 'edges', 'stripes' or 'combo' chart"
        )
    centre = (float(centre_xy[0]), float(centre_xy[1])) if centre_xy is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    img_channels = _channel_names(image)
    available = img_channels + (("Y",) if img_channels == ("R", "G", "B") else ())
    if channels is None:
        measure = img_channels
    else:
        unknown = [c for c in channels if c not in available]
        if unknown:
            raise CalibError(f"channel {unknown[0]!r} is not in the image (it has {', '.join(available)}); "
                             "choose among those")
        measure = tuple(c for c in available if c in channels)
    to_px = _forward_map(geometry)

    edges: list[ChartEdge] = []
    if squares:
        squares_px = _side_polylines(squares, to_px)
        obstacles = _obstacles(layout, to_px, squares_px)
        jobs = []
        for i, sides in enumerate(squares_px):
            side_px = float(np.mean([np.hypot(*(s[-1] - s[0])) for s in sides]))
            hw = float(np.clip(_HALF_WIDTH_FRACTION * side_px, *_HALF_WIDTH_PX))
            jobs += [(i, k, pts, hw) for k, pts in enumerate(sides)]
        illum = None
        if flat_field and not getattr(image, "cfa", None):
            data = np.asarray(image.data if isinstance(image, LinearImage) else image, np.float32)
            illum = _fit_illumination(data if data.ndim == 3 else data[:, :, None], layout, to_px, obstacles,
                                      clearance_px=max(j[3] for j in jobs))

        def run(job):
            i, k, pts, hw = job
            return _measure_side(image, i, k, pts, obstacles, w=w, h=h, hw=hw, max_edge_px=max_edge_px,
                                 centre=centre, measure=measure, illum=illum)

        n_workers = max(1, int(workers if workers is not None else min(4, os.cpu_count() or 1)))
        # The edges are independent and numpy releases the GIL in most of the array work,
        # so threads share it without copying the image.
        with ThreadPoolExecutor(n_workers) as pool:
            for e in pool.map(run, jobs):
                edges.append(e)
                if progress and e.side == len(squares_px[e.square_index]) - 1:
                    m50 = [x.mtf50_cpp.get("G", x.mtf50_cpp.get("Y", math.nan)) for x in edges[-4:]]
                    print(f"chart mtf: square {e.square_index + 1}/{len(squares)}: MTF50 "
                          + " ".join(f"{v:.3f}" for v in m50), file=sys.stderr, flush=True)
    stripes = None
    if patches:
        stripe_channels = [c for c in measure if c in img_channels]
        if stripe_channels:
            stripes = measure_stripes(image, layout, geometry, channels=stripe_channels, centre_xy=centre)
    records = tuple(r for e in edges for r in e.records) + (stripes.records if stripes is not None else ())
    return ChartMTF(records, tuple(edges), stripes, measure, (w, h), centre)


def _channel_names(image: Any) -> tuple[str, ...]:
    """The image's colour channels as measure_edge names them (a mosaic: its three colours)."""
    if getattr(image, "cfa", None):
        return ("R", "G", "B")
    data = getattr(image, "data", image)
    nchan = 1 if np.ndim(data) == 2 else int(np.shape(data)[2])
    names = tuple(getattr(image, "channels", ()) or ())
    if len(names) == nchan:
        return names
    return ("R", "G", "B") if nchan == 3 else ("Y",) if nchan == 1 else tuple(f"C{i}" for i in range(nchan))


# ---------------------------------------------------------------- PSF map vs edges

def psf_edge_agreement(
    psf_map: PSFMap,
    records: Sequence[MTFRecord],
    *,
    max_freq_cpp: float = 0.25,
    include_flagged: bool = False,
) -> list[EdgeAgreement]:
    """Compare a PSF map's MTF with measured edge SFRs at the same field positions.

    For every edge record (method ``"edge"``) of a channel the map holds, the map's PSF
    at the edge's position (:meth:`PSFMap.psf_at`) is turned into its MTF along the
    edge's normal (:func:`psf_mtf`) and compared with the SFR at the record's
    frequencies up to ``max_freq_cpp``. Records are grouped by their nearest node.

    Parameters
    ----------
    psf_map : PSFMap
        True or estimated PSFs (any ``sampling``). At ``sampling`` 1 the transform of
        pixel-spaced samples carries the aliases of the MTF above Nyquist: for a sharp
        lens (MTF ~0.2 at 0.75 c/p) that alone puts the true PSFs 0.1 away from the
        edges at Nyquist/2, so compare sharp PSFs at sampling 3 or finer.
    records : sequence of MTFRecord
        E.g. ``measure_chart_mtf(...).records``; other methods are ignored.
    max_freq_cpp : float
        Compare up to this frequency (default Nyquist/2).
    include_flagged : bool
        Also compare flagged records (default: only clean ones).

    Returns
    -------
    list of EdgeAgreement
        One per (node, channel) that has edges near it, sorted by node then channel.
    """
    nodes = np.asarray(psf_map.nodes_xy, np.float64)
    ny, nx = nodes.shape[:2]
    flat = nodes.reshape(-1, 2)
    worst: dict[tuple[int, int, str], list[float]] = {}
    for rec in records:
        if rec.method != "edge" or rec.channel not in psf_map.channels or (rec.flags and not include_flagged):
            continue
        f = np.asarray(rec.freq_cpp, np.float64)
        sel = f <= max_freq_cpp + 1e-9
        if not sel.any():
            continue
        psf = psf_map.psf_at(rec.x_px, rec.y_px, rec.channel)
        _, m = psf_mtf(psf, rec.orientation_deg, sampling=psf_map.sampling, freq_cpp=f[sel])
        diff = float(np.max(np.abs(m - np.asarray(rec.mtf, np.float64)[sel])))
        j = int(np.argmin(np.hypot(*(flat - (rec.x_px, rec.y_px)).T)))
        worst.setdefault((j // nx, j % nx, rec.channel), []).append(diff)
    return [
        EdgeAgreement((i, j), (float(nodes[i, j, 0]), float(nodes[i, j, 1])), ch, max(v), len(v))
        for (i, j, ch), v in sorted(worst.items())
    ]
