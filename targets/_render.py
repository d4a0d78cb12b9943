"""The one rendering function: a layout -> ideal reflectance image under a homography.

Each element is drawn only over the pixels it covers and composited at pixel level
(``out = out * (1 - coverage) + mean(coverage * value)``). Pixels that lie wholly
inside a shape take the shape's box-filtered value directly; only the pixels its
boundary crosses are supersampled, and each sub-sample uses a signed-distance
coverage ramp so sub-pixel positions are honoured continuously rather than in
1/supersample steps. Values are box-filtered analytically: gratings through the
exact average of a cosine over the pixel's footprint parallelogram, cell patterns
(noise, markers, text) through a summed-area table.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ._errors import TargetError
from ._layout import Layout

_CHUNK_PX = 1 << 19  # pixels per processing chunk: bounds memory on 24 MP renders


@functools.lru_cache(maxsize=8)
def marker_modules(dictionary: str, marker_id: int, modules: int) -> np.ndarray:
    """(modules, modules) array, 1 = white module, of an ArUco marker with its border."""
    import cv2

    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    img = cv2.aruco.generateImageMarker(d, int(marker_id), modules, borderBits=1)
    return (img > 127).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _text_alpha(text: str, px_per_mm_height: int = 48) -> np.ndarray:
    """Coverage bitmap of ``text``; rows span the line height."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(px_per_mm_height * 0.8))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, right) + 2, px_per_mm_height), 0)
    ImageDraw.Draw(img).text((0, px_per_mm_height * 0.05), text, fill=255, font=font)
    return np.asarray(img, dtype=np.float64) / 255.0


def _halfplane_coverage(d, a, b):
    """Exact area fraction of a footprint parallelogram on the inner side of a straight edge.

    ``d`` is the signed distance of the footprint centre from the edge (inside
    positive); ``a`` and ``b`` are the lengths of its two sides projected on the
    edge normal. The fraction is the CDF of the sum of two uniform variables.
    """
    a, b = np.maximum(a, b), np.minimum(a, b)
    a = np.maximum(a, 1e-12)
    b = np.maximum(b, 1e-9 * a)
    t = np.clip(d + 0.5 * (a + b), 0.0, a + b)
    rise = t * t / (2 * a * b)
    flat = (t - 0.5 * b) / a
    fall = 1.0 - (a + b - t) ** 2 / (2 * a * b)
    return np.where(t <= b, rise, np.where(t <= a, flat, fall))


# ---------------------------------------------------------------- shapes

@dataclass
class _Polygon:
    """Convex polygon; edges as (unit normal pointing inward, offset)."""

    normals: np.ndarray  # (k, 2)
    offsets: np.ndarray  # (k,)
    bbox: tuple[float, float, float, float]
    ss_min: int = 1

    @staticmethod
    def of(vertices) -> _Polygon:
        v = np.asarray(vertices, dtype=np.float64)
        centre = v.mean(axis=0)
        e = np.roll(v, -1, axis=0) - v
        n = np.stack([-e[:, 1], e[:, 0]], axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        off = np.einsum("ij,ij->i", n, v)
        flip = (n @ centre - off) < 0
        n[flip] *= -1
        off[flip] *= -1
        return _Polygon(n, off, (v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()))

    def distance(self, u, v):
        d = None
        for (nx, ny), o in zip(self.normals, self.offsets):
            di = nx * u + ny * v - o
            d = di if d is None else np.minimum(d, di)
        return d

    def coverage(self, u, v, j):
        c = 1.0
        for (nx, ny), o in zip(self.normals, self.offsets):
            a = np.abs(nx * j[0] + ny * j[2])
            b = np.abs(nx * j[1] + ny * j[3])
            c = c * _halfplane_coverage(nx * u + ny * v - o, a, b)
        return c


@dataclass
class _Disc:
    cx: float
    cy: float
    r: float

    @property
    def bbox(self):
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)

    def distance(self, u, v):
        return self.r - np.hypot(u - self.cx, v - self.cy)

    def coverage(self, u, v, j):
        du, dv = u - self.cx, v - self.cy
        rho = np.hypot(du, dv) + 1e-15
        nx, ny = du / rho, dv / rho
        a = np.abs(nx * j[0] + ny * j[2])
        b = np.abs(nx * j[1] + ny * j[3])
        # Straight-edge coverage around a circle adds pi * var to its area (var of the
        # footprint projected on the normal); shrinking the radius keeps the integral exact.
        r_eff = np.sqrt(np.maximum(self.r * self.r - (a * a + b * b) / 12.0, 0.0))
        return _halfplane_coverage(r_eff - rho, a, b)


# ---------------------------------------------------------------- values

@dataclass
class _Constant:
    value: float

    def __call__(self, u, v, j):
        return np.full(np.shape(u), self.value)


@dataclass
class _Grating:
    cx: float
    cy: float
    kx: float  # wave vector, cycles per mm
    ky: float
    mean: float
    amp: float
    square: bool

    def __call__(self, u, v, j):
        t = self.kx * (u - self.cx) + self.ky * (v - self.cy)  # phase in cycles
        a = self.kx * j[0] + self.ky * j[2]  # footprint extent along k, cycles
        b = self.kx * j[1] + self.ky * j[3]
        if not self.square:
            # Exact mean of cos over the footprint parallelogram.
            return self.mean + self.amp * np.cos(2 * np.pi * t) * np.sinc(a) * np.sinc(b)
        return self.mean + self.amp * _square_box2(t, np.abs(a), np.abs(b))


def _tri(t):
    """Antiderivative of the unit square wave sign(cos 2 pi t) (odd, zero mean)."""
    s = t - np.round(t)
    return np.where(s > 0.25, 0.5 - s, np.where(s < -0.25, -0.5 - s, s))


def _quad(t):
    """Second antiderivative of the square wave (periodic, even)."""
    s = np.abs(t - np.round(t))
    return np.where(s <= 0.25, 0.5 * s * s, 1 / 32 + 0.5 * (s - 0.25) - 0.5 * (s * s - 1 / 16))


def _square_box2(t, a, b):
    """Mean of the square wave over the sum of two boxes of widths a and b (cycles)."""
    a, b = np.maximum(a, b), np.minimum(a, b)
    a = np.maximum(a, 1e-9)
    one = (_tri(t + a / 2) - _tri(t - a / 2)) / a
    two_ok = b > 1e-3 * a
    bb = np.where(two_ok, b, 1.0)
    two = (_quad(t + (a + bb) / 2) - _quad(t + (a - bb) / 2) - _quad(t - (a - bb) / 2) + _quad(t - (a + bb) / 2)) / (a * bb)
    return np.where(two_ok, two, one)


@dataclass
class _Cells:
    """Piecewise-constant grid, box-filtered exactly over an axis-aligned footprint.

    Footprints no larger than a cell overlap at most 2 x 2 cells (4 look-ups);
    larger ones go through the summed-area table.
    """

    x0: float
    y0: float
    cw: float
    ch: float
    vals: np.ndarray  # (ny, nx)
    sat: np.ndarray  # (ny + 1, nx + 1)

    @staticmethod
    def of(x0, y0, cw, ch, values) -> _Cells:
        v = np.ascontiguousarray(values, dtype=np.float64)
        sat = np.zeros((v.shape[0] + 1, v.shape[1] + 1))
        sat[1:, 1:] = v.cumsum(0).cumsum(1)
        return _Cells(x0, y0, cw, ch, v, sat)

    def _integral(self, qx, qy):
        ny, nx = self.vals.shape
        ix = np.clip(qx.astype(np.int64), 0, nx - 1)
        iy = np.clip(qy.astype(np.int64), 0, ny - 1)
        fx, fy = qx - ix, qy - iy
        flat = self.sat.ravel()
        k = iy * (nx + 1) + ix
        s00, s01 = flat.take(k), flat.take(k + 1)
        s10, s11 = flat.take(k + nx + 1), flat.take(k + nx + 2)
        return (s00 + (s01 - s00) * fx) * (1 - fy) + (s10 + (s11 - s10) * fx) * fy

    def __call__(self, u, v, j):
        ny, nx = self.vals.shape
        hx = 0.5 * np.hypot(j[0], j[1]) / self.cw
        hy = 0.5 * np.hypot(j[2], j[3]) / self.ch
        qx, qy = (u - self.x0) / self.cw, (v - self.y0) / self.ch
        if np.max(hx) <= 0.5 and np.max(hy) <= 0.5:
            lo_x = np.clip(qx - hx, 0, nx - 1e-9)
            lo_y = np.clip(qy - hy, 0, ny - 1e-9)
            ix0, iy0 = lo_x.astype(np.int64), lo_y.astype(np.int64)
            wx0 = np.clip((ix0 + 1 - lo_x) / (2 * hx + 1e-15), 0.0, 1.0)
            wy0 = np.clip((iy0 + 1 - lo_y) / (2 * hy + 1e-15), 0.0, 1.0)
            dx = (ix0 < nx - 1).astype(np.int64)
            dy = (iy0 < ny - 1).astype(np.int64) * nx
            flat = self.vals.ravel()
            k = iy0 * nx + ix0
            top = flat.take(k) * wx0 + flat.take(k + dx) * (1 - wx0)
            bot = flat.take(k + dy) * wx0 + flat.take(k + dy + dx) * (1 - wx0)
            return top * wy0 + bot * (1 - wy0)
        x0, x1 = np.clip(qx - hx, 0, nx), np.clip(qx + hx, 0, nx)
        y0, y1 = np.clip(qy - hy, 0, ny), np.clip(qy + hy, 0, ny)
        x1 = np.maximum(x1, x0 + 1e-9)
        y1 = np.maximum(y1, y0 + 1e-9)
        tot = self._integral(x1, y1) - self._integral(x0, y1) - self._integral(x1, y0) + self._integral(x0, y0)
        return tot / ((x1 - x0) * (y1 - y0))


@dataclass
class _Element:
    shape: object
    value: object
    rotation_sensitive: bool = False  # cell values assume an axis-aligned footprint


def _rect(x0, y0, x1, y1) -> _Polygon:
    return _Polygon.of([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def compile_layout(layout: Layout) -> list[_Element]:
    """Turn a layout into render primitives in drawing order."""
    ink = layout.reflectance
    els: list[_Element] = []
    for r in layout.regions:
        els.append(_Element(_rect(r.x0_mm, r.y0_mm, r.x1_mm, r.y1_mm), _Constant(ink(r.ink))))
    for n in layout.noise:
        vals = np.where(n.bits() > 0, ink(n.ink_on), ink(n.ink_off))
        els.append(_Element(_rect(n.x0_mm, n.y0_mm, n.x1_mm, n.y1_mm),
                            _Cells.of(n.x0_mm, n.y0_mm, n.cell_mm, n.cell_mm, vals), True))
    for p in layout.stripes:
        cx, cy = p.centre_mm
        t = math.radians(p.orientation_deg)
        k = p.frequency_cpmm
        els.append(_Element(_rect(p.x0_mm, p.y0_mm, p.x1_mm, p.y1_mm),
                            _Grating(cx, cy, k * math.cos(t), k * math.sin(t), p.mean, p.amplitude,
                                     p.profile == "square")))
    for e in layout.edges:
        els.append(_Element(_Polygon.of(e.corners_mm), _Constant(ink(e.ink))))
    for d in layout.dots:
        els.append(_Element(_Disc(d.x_mm, d.y_mm, d.diameter_mm / 2), _Constant(ink(d.ink))))
    ms = layout.markers
    for m in ms.items:
        (x0, y0), (x1, _), (_, y1) = m.corners_mm[0], m.corners_mm[1], m.corners_mm[2]
        q = ms.quiet_zone_of(m)
        els.append(_Element(_rect(x0 - q, y0 - q, x1 + q, y1 + q), _Constant(ink("paper"))))
        bits = marker_modules(ms.dictionary, m.id, ms.modules)
        vals = ink("black") + bits * (ink("paper") - ink("black"))
        els.append(_Element(_rect(x0, y0, x1, y1),
                            _Cells.of(x0, y0, (x1 - x0) / ms.modules, (y1 - y0) / ms.modules, vals), True))
    b = layout.scale_bar
    els.append(_Element(_rect(b.x0_mm, b.y0_mm, b.x0_mm + b.length_mm, b.y0_mm + b.height_mm), _Constant(ink(b.ink))))
    for line in layout.text:
        alpha = _text_alpha(line.text)
        cell = line.height_mm / alpha.shape[0]
        vals = ink(layout.background) + alpha * (ink(line.ink) - ink(layout.background))
        w = cell * alpha.shape[1]
        els.append(_Element(_rect(line.x_mm, line.y_mm, line.x_mm + w, line.y_mm + line.height_mm),
                            _Cells.of(line.x_mm, line.y_mm, cell, cell, vals), True))
    return els


# ---------------------------------------------------------------- rendering

def page_homography(layout: Layout, shape: tuple[int, int]) -> np.ndarray:
    """Homography that scales the whole page onto an image of ``shape`` (H, W)."""
    h, w = shape
    pw, ph = layout.page_mm
    return np.array([[w / pw, 0.0, -0.5], [0.0, h / ph, -0.5], [0.0, 0.0, 1.0]])


def _map(hinv, x, y):
    """Chart mm of pixel coordinates and the Jacobian d(mm)/d(px) as 4 arrays."""
    a, b, c = hinv[0]
    d, e, f = hinv[1]
    g, h, i = hinv[2]
    w = g * x + h * y + i
    u = (a * x + b * y + c) / w
    v = (d * x + e * y + f) / w
    j = ((a - u * g) / w, (b - u * h) / w, (d - v * g) / w, (e - v * h) / w)
    return u, v, j


def _project_bbox(hom, bbox):
    x0, y0, x1, y1 = bbox
    pts = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], dtype=np.float64) @ hom.T
    if np.any(pts[:, 2] <= 0):
        return None
    return pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]


def render_layout(layout: Layout, shape: tuple[int, int], *, homography: np.ndarray | None = None,
                  supersample: int = 4) -> np.ndarray:
    """Render the ideal chart: reflectance 0..1 as float32 (H, W).

    Parameters
    ----------
    layout : Layout
        The chart.
    shape : (int, int)
        Output (height, width) in pixels.
    homography : (3, 3) array, optional
        Maps chart millimetres (x right, y down, origin at the page's top-left
        corner) to output pixel coordinates (origin at the top-left pixel
        centre). None scales the whole page to fill ``shape``.
    supersample : int
        Sub-samples per axis for pixels a shape boundary crosses (and for cell
        patterns seen at a rotation). Pixels fully inside a shape are
        box-filtered analytically.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) reflectance, box-filtered over each pixel.

    Examples
    --------
    >>> img = render_layout(layout, (1169, 827))  # doctest: +SKIP
    """
    h, w = (int(shape[0]), int(shape[1]))
    if h < 1 or w < 1:
        raise TargetError(f"render shape {shape} must be at least 1x1 pixels")
    ss = int(supersample)
    if ss < 1:
        raise TargetError(f"supersample must be at least 1, got {supersample}")
    hom = page_homography(layout, (h, w)) if homography is None else np.asarray(homography, dtype=np.float64)
    if hom.shape != (3, 3) or not np.all(np.isfinite(hom)):
        raise TargetError("homography must be a finite 3x3 matrix mapping chart mm to pixels")
    hinv = np.linalg.inv(hom)
    # float32 is ample for compositing (errors ~1e-7) and halves memory on 35 MP pages.
    out = np.full((h, w), layout.reflectance(layout.background), dtype=np.float32)
    for el in compile_layout(layout):
        _draw(out, el, hom, hinv, ss)
    return out


def _draw(out, el: _Element, hom, hinv, ss: int) -> None:
    proj = _project_bbox(hom, el.shape.bbox)
    if proj is None:
        return
    xs, ys = proj
    h, w = out.shape
    c0 = max(0, int(math.floor(xs.min())) - 2)
    c1 = min(w, int(math.ceil(xs.max())) + 3)
    r0 = max(0, int(math.floor(ys.min())) - 2)
    r1 = min(h, int(math.ceil(ys.max())) + 3)
    if c0 >= c1 or r0 >= r1:
        return
    if isinstance(el.shape, _Polygon):
        _draw_polygon(out, el, hom, hinv, ss, r0, r1, c0, c1)
        return
    rows_per_chunk = max(1, _CHUNK_PX // (c1 - c0))
    for ra in range(r0, r1, rows_per_chunk):
        rb = min(r1, ra + rows_per_chunk)
        _draw_block(out, el, hinv, ss, ra, rb, c0, c1)


def _pixel_edges(el: _Element, hom):
    """The polygon's edges in pixel space (projective maps keep lines straight): a x + b y >= c inside."""
    poly = el.shape
    k = len(poly.offsets)
    # Recover vertices as intersections of consecutive edge lines, then project them.
    verts = []
    for i in range(k):
        (a1, b1), c1_ = poly.normals[i - 1], poly.offsets[i - 1]
        (a2, b2), c2_ = poly.normals[i], poly.offsets[i]
        verts.append(np.linalg.solve([[a1, b1], [a2, b2]], [c1_, c2_]))
    v = np.column_stack([np.asarray(verts), np.ones(k)]) @ hom.T
    v = v[:, :2] / v[:, 2:3]
    centre = v.mean(axis=0)
    e = np.roll(v, -1, axis=0) - v
    n = np.stack([-e[:, 1], e[:, 0]], axis=1)
    c = np.einsum("ij,ij->i", n, v)
    flip = (n @ centre - c) < 0
    n[flip] *= -1
    c[flip] *= -1
    return n, c


def _row_limits(n, c, y, slack_sign: float, w: int):
    """Per row, the pixel-centre x range where every (slack_sign=-1) or some (+1) corner is inside."""
    lo = np.full(y.shape, -np.inf)
    hi = np.full(y.shape, np.inf)
    for (a, b), cc in zip(n, c):
        rhs = cc - b * y - slack_sign * 0.5 * (abs(a) + abs(b))
        if abs(a) < 1e-12:
            bad = rhs > 0
            lo[bad], hi[bad] = np.inf, -np.inf
        elif a > 0:
            lo = np.maximum(lo, rhs / a)
        else:
            hi = np.minimum(hi, rhs / a)
    lo = np.clip(np.ceil(lo - 1e-9), 0, w).astype(np.int64)
    hi = np.clip(np.floor(hi + 1e-9) + 1, 0, w).astype(np.int64)
    return lo, np.maximum(hi, lo)


def _ranges(rows, lo, hi):
    """Row and column indices of every pixel in [lo, hi) on each row."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rr = np.repeat(rows, counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    cc = np.arange(total) - start + np.repeat(lo, counts)
    return rr, cc


def _draw_polygon(out, el: _Element, hom, hinv, ss, r0, r1, c0, c1) -> None:
    n, c = _pixel_edges(el, hom)
    w = out.shape[1]
    rows = np.arange(r0, r1)
    y = rows.astype(np.float64)
    in_lo, in_hi = _row_limits(n, c, y, -1.0, w)
    t_lo, t_hi = _row_limits(n, c, y, +1.0, w)
    has_in = in_hi > in_lo
    # Boundary: touched pixels left and right of the fully covered run.
    left_hi = np.where(has_in, np.minimum(in_lo, t_hi), t_hi)
    right_lo = np.where(has_in, np.maximum(in_hi, t_lo), t_hi)
    constant = el.value.value if isinstance(el.value, _Constant) else None
    step = max(1, _CHUNK_PX // max(1, c1 - c0))
    for a in range(0, len(rows), step):
        sl = slice(a, a + step)
        if constant is not None:
            for r, lo_, hi_ in zip(rows[sl], in_lo[sl], in_hi[sl]):
                if hi_ > lo_:
                    out[r, lo_:hi_] = constant
        else:
            rr, cc = _ranges(rows[sl], in_lo[sl], in_hi[sl])
            if rr.size:
                u, v, j = _map(hinv, cc.astype(np.float64), rr.astype(np.float64))
                rotated = el.rotation_sensitive and np.any(
                    np.abs(j[1]) + np.abs(j[2]) > 0.02 * (np.abs(j[0]) + np.abs(j[3])))
                if rotated:
                    out[rr, cc] = _supersampled(el, u, v, j, min(ss, 2), with_coverage=False)
                else:
                    out[rr, cc] = el.value(u, v, j)
        r1_, c1_ = _ranges(rows[sl], t_lo[sl], left_hi[sl])
        r2_, c2_ = _ranges(rows[sl], right_lo[sl], t_hi[sl])
        rr, cc = np.concatenate([r1_, r2_]), np.concatenate([c1_, c2_])
        if rr.size:
            u, v, j = _map(hinv, cc.astype(np.float64), rr.astype(np.float64))
            cov, covval = _supersampled(el, u, v, j, ss, with_coverage=True)
            out[rr, cc] = out[rr, cc] * (1.0 - cov) + covval


def _offsets(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n - 0.5


def _draw_block(out, el: _Element, hinv, ss, r0, r1, c0, c1) -> None:
    y, x = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    u, v, j = _map(hinv, x, y)
    d = el.shape.distance(u, v)
    # Distance from a pixel centre to the farthest corner of its footprint.
    reach = 0.5 * np.maximum(np.hypot(j[0] + j[1], j[2] + j[3]), np.hypot(j[0] - j[1], j[2] - j[3]))
    inside = d > reach
    edge = ~inside & (d > -reach)
    if not inside.any() and not edge.any():
        return
    block = out[r0:r1, c0:c1]
    if inside.any():
        ui, vi = u[inside], v[inside]
        ji = tuple(a[inside] for a in j)
        rotated = el.rotation_sensitive and np.any(np.abs(ji[1]) + np.abs(ji[2]) > 0.02 * (np.abs(ji[0]) + np.abs(ji[3])))
        if rotated:
            block[inside] = _supersampled(el, ui, vi, ji, ss, with_coverage=False)
        else:
            block[inside] = el.value(ui, vi, ji)
    if edge.any():
        ue, ve = u[edge], v[edge]
        je = tuple(a[edge] for a in j)
        n = ss
        if isinstance(el.shape, _Disc):
            # Keep sub-samples well below the disc radius so tiny dots keep their area.
            foot = float(np.sqrt(np.abs(je[0] * je[3] - je[1] * je[2])).max())
            n = int(min(32, max(ss, math.ceil(4.0 * foot / el.shape.r))))
        cov, covval = _supersampled(el, ue, ve, je, n, with_coverage=True)
        block[edge] = block[edge] * (1.0 - cov) + covval


def _supersampled(el: _Element, u, v, j, n: int, *, with_coverage: bool):
    step = max(1, (1 << 20) // (n * n))  # bound the (n*n, pixels) temporaries
    if u.size > step:
        parts = [_supersampled(el, u[k:k + step], v[k:k + step], tuple(a[k:k + step] for a in j), n,
                               with_coverage=with_coverage) for k in range(0, u.size, step)]
        if not with_coverage:
            return np.concatenate(parts)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    off = _offsets(n)
    dx, dy = np.meshgrid(off, off)
    dx, dy = dx.ravel()[:, None], dy.ravel()[:, None]
    us = u[None, :] + j[0][None, :] * dx + j[1][None, :] * dy
    vs = v[None, :] + j[2][None, :] * dx + j[3][None, :] * dy
    js = tuple(a[None, :] / n for a in j)  # one footprint per pixel, broadcast over its sub-samples
    val = el.value(us, vs, js)
    if not with_coverage:
        return val.mean(axis=0)
    cov = el.shape.coverage(us, vs, js)
    return cov.mean(axis=0), (cov * val).mean(axis=0)
