"""Build chart layouts: page, fiducial ring, footer and the kind-specific content."""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import TargetError
from ._layout import (
    Dot, EdgeSquare, Layout, Marker, MarkerSet, NoisePatch, Rect, ScaleBar, Screen,
    StripePatch, TextLine,
)

# ISO 216 and ANSI sizes, portrait (width, height) in mm.
PAPER_SIZES_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
    "A2": (420.0, 594.0),
    "letter": (215.9, 279.4),
    "tabloid": (279.4, 431.8),
}

# Nominal reflectance of each grey level the charts print. Edges use 4:1 contrast.
INKS: dict[str, float] = {
    "paper": 1.0,
    "black": 0.0,
    "light_grey": 0.8,
    "dark_grey": 0.2,
    "mid_grey": 0.5,
}

MARKER_DICTIONARY = "DICT_4X4_250"
_MARKER_MODULES = 6  # 4x4 data bits plus a one-module black border
_QUIET_MODULES = 1
CRITICAL_ANGLES_DEG = (0.0, math.degrees(math.atan(0.25)), math.degrees(math.atan(0.5)), 45.0)
EDGE_TILTS_DEG = (5.0, -7.0, 10.0, -5.0, 7.0, -10.0, 20.0, -33.0)
MIN_PRINT_PX_DOT = 3.0  # a printed dot narrower than this many printer pixels is not round
MIN_PRINT_PX_PERIOD = 4.0  # a grating period needs this many printer pixels to stay a grating
_DEFAULT_FRAME_PX = 6000.0  # assumed sensor width when no shooting geometry is given


def critical_angle_distance_deg(angle_deg: float) -> float:
    """Distance of an edge direction from the nearest critical slanted-edge angle.

    Edge directions are equivalent modulo 90 degrees and under mirroring, so the
    critical set is {0, 14.04, 26.57, 45, 63.43, 75.96, 90}.
    """
    a = angle_deg % 90.0
    crit = [c for base in CRITICAL_ANGLES_DEG for c in (base, 90.0 - base)] + [90.0]
    return min(abs(a - c) for c in crit)


def parse_paper(paper: str, *, landscape: bool = False) -> tuple[float, float]:
    """Page (width, height) in mm from a paper name or ``WxHmm``."""
    key = {k.lower(): k for k in PAPER_SIZES_MM}.get(str(paper).strip().lower())
    if key is not None:
        w, h = PAPER_SIZES_MM[key]
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[xX]\s*(\d+(?:\.\d+)?)\s*mm\s*", str(paper))
        if not m:
            raise TargetError(
                f"unknown paper size {paper!r}; use A4, A3, A2, letter, tabloid or WxHmm such as 300x200mm"
            )
        w, h = float(m.group(1)), float(m.group(2))
        if not (50.0 <= w <= 5000.0 and 50.0 <= h <= 5000.0):
            raise TargetError(f"paper size {paper!r} is out of range; each side must be 50 to 5000 mm")
    if landscape:
        w, h = max(w, h), min(w, h)
    return (w, h)


def parse_screen(screen: str) -> tuple[int, int]:
    """``WxHpx`` -> (width_px, height_px)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:px)?\s*", str(screen))
    if not m or int(m.group(1)) < 200 or int(m.group(2)) < 200:
        raise TargetError(f"screen size {screen!r} is not understood; use WxHpx such as 3840x2160px (at least 200 px a side)")
    return int(m.group(1)), int(m.group(2))


def pixel_footprint_mm(pixel_pitch_um: float, focal_mm: float, distance_m: float) -> float:
    """Size on the chart of one sensor pixel (thin lens, chart at ``distance_m``)."""
    for name, v in (("--pixel-pitch-um", pixel_pitch_um), ("--focal-mm", focal_mm), ("--distance-m", distance_m)):
        if not (v is not None and math.isfinite(v) and v > 0):
            raise TargetError(f"{name} must be a positive number, got {v}")
    d_mm = distance_m * 1000.0
    if d_mm <= focal_mm:
        raise TargetError(f"--distance-m {distance_m} is inside the focal length {focal_mm} mm; give the chart distance in metres")
    return pixel_pitch_um * 1e-3 * (d_mm - focal_mm) / focal_mm


@dataclass(frozen=True)
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def w(self) -> float:
        return self.x1 - self.x0

    @property
    def h(self) -> float:
        return self.y1 - self.y0

    def split(self, nx: int, ny: int, gap: float) -> list[list[_Box]]:
        """ny rows x nx columns of sub-boxes separated by ``gap``."""
        cw = (self.w - (nx - 1) * gap) / nx
        ch = (self.h - (ny - 1) * gap) / ny
        return [[_Box(self.x0 + i * (cw + gap), self.y0 + j * (ch + gap),
                      self.x0 + i * (cw + gap) + cw, self.y0 + j * (ch + gap) + ch)
                 for i in range(nx)] for j in range(ny)]


@dataclass(frozen=True)
class _Context:
    page_w: float
    page_h: float
    dpi: float
    footprint_mm: float  # chart mm imaged onto one sensor pixel
    footprint_known: bool


@dataclass
class _Content:
    regions: list
    dots: list
    stripes: list
    edges: list
    noise: list
    params: dict

    @staticmethod
    def empty() -> _Content:
        return _Content([], [], [], [], [], {})

    def merge(self, other: _Content) -> None:
        for name in ("regions", "dots", "stripes", "edges", "noise"):
            getattr(self, name).extend(getattr(other, name))
        self.params.update(other.params)


# ---------------------------------------------------------------- content builders

def _dots(ctx: _Context, box: _Box, *, dot_mm: float | None = None, max_psf_px: float = 25.0,
          phases: int = 4, seed_offset: int = 0) -> _Content:
    if dot_mm is None:
        dot_mm = ctx.footprint_mm if ctx.footprint_known else 0.4
    if not (math.isfinite(dot_mm) and dot_mm > 0):
        raise TargetError(f"--dot-mm must be a positive number, got {dot_mm}")
    if not (math.isfinite(max_psf_px) and max_psf_px >= 1):
        raise TargetError(f"--max-psf-px must be at least 1, got {max_psf_px}")
    if not (1 <= int(phases) <= 16):
        raise TargetError(f"--phases must be 1 to 16, got {phases}")
    phases = int(phases)
    # Without a known shooting geometry the dot is taken to image onto one pixel.
    foot = ctx.footprint_mm if ctx.footprint_known else dot_mm
    # Neighbouring PSFs (plus the dot itself and the largest jitter) must never touch.
    pitch = (max_psf_px + 2.0) * foot + dot_mm
    pitch = max(pitch, 3.0 * dot_mm)
    region = Rect(box.x0, box.y0, box.x1, box.y1, "black", "dots_background")
    nx = int((box.w - pitch) // pitch) + 1
    ny = int((box.h - pitch) // pitch) + 1
    if nx < 1 or ny < 1:
        raise TargetError(
            f"dot spacing {pitch:.1f} mm (from --max-psf-px {max_psf_px:g}) leaves no room on this page; "
            "use a larger paper or a smaller --max-psf-px"
        )
    ox = box.x0 + 0.5 * (box.w - (nx - 1) * pitch)
    oy = box.y0 + 0.5 * (box.h - (ny - 1) * pitch)
    dots = []
    for r in range(ny):
        for c in range(nx):
            # Phases cycle on a lattice so any phases x phases block holds every phase pair.
            k = (r * 3 + c + seed_offset) % (phases * phases)
            px = (k % phases) / phases
            py = ((k // phases + r) % phases) / phases
            dots.append(Dot(round(ox + c * pitch + px * foot, 6), round(oy + r * pitch + py * foot, 6),
                            dot_mm, px, py, r, c, "paper"))
    params = {
        "dot_mm": dot_mm,
        "dot_pitch_mm": pitch,
        # Dot phases are in units of this length: one sensor pixel on the chart (the dot
        # diameter when no shooting geometry was given).
        "phase_unit_mm": foot,
        "max_psf_px": max_psf_px,
        "phases": phases,
        "pinhole_plate": {
            "description": (
                "back-lit pinhole plate with the same geometry: an opaque plate with a hole of "
                "hole_diameter_mm at every dot centre, lit from behind; print the ArUco ring on "
                "transparent film over the plate or use the same page size so the marker corners "
                "stay valid"
            ),
            "hole_diameter_mm": dot_mm,
            "holes": "dots",
            "polarity": "bright holes on an opaque plate (same as the printed dots)",
        },
    }
    return _Content([region], dots, [], [], [], params)


def _default_frequencies(ctx: _Context, patch_mm: float, n: int) -> list[float]:
    lo = 4.0 / patch_mm  # at least four periods across a patch
    hi_print = ctx.dpi / 25.4 / (MIN_PRINT_PX_PERIOD + 1.0)
    hi_camera = 0.45 / ctx.footprint_mm  # stay below the sensor's Nyquist frequency
    hi = min(hi_print, hi_camera)
    if hi <= lo * 1.5:
        raise TargetError(
            f"stripe patches of {patch_mm:.1f} mm cannot hold gratings between {lo:.2f} and {hi:.2f} "
            "cycles/mm; use a larger paper, a higher --dpi or fewer --field positions"
        )
    return [float(f) for f in np.round(np.geomspace(lo, hi, n), 4)]


def _stripes(ctx: _Context, box: _Box, *, field: tuple[int, int] = (3, 3),
             frequencies_cpmm: Sequence[float] | None = None, n_frequencies: int = 6,
             profile: str = "sine", contrast: float = 0.8,
             orientations_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0)) -> _Content:
    if profile not in ("sine", "square"):
        raise TargetError(f"unknown stripe profile {profile!r}; use sine or square")
    if not (0 < contrast <= 1):
        raise TargetError(f"--contrast must be in (0, 1], got {contrast}")
    fx, fy = int(field[0]), int(field[1])
    if fx < 1 or fy < 1:
        raise TargetError(f"--field must be at least 1x1, got {fx}x{fy}")
    nf = len(frequencies_cpmm) if frequencies_cpmm else int(n_frequencies)
    if nf < 1:
        raise TargetError("at least one stripe frequency is needed")
    no = len(orientations_deg)
    gap_block = max(2.0, 0.03 * min(box.w, box.h))
    blocks = box.split(fx, fy, gap_block)
    b0 = blocks[0][0]
    gap = max(0.8, 0.06 * min(b0.w / nf, b0.h / no))
    # Columns = frequencies, rows = orientations; square patches.
    side = min((b0.w - (nf - 1) * gap) / nf, (b0.h - (no - 1) * gap) / no)
    if side < 3.0:
        raise TargetError("stripe patches would be smaller than 3 mm; use a larger paper or fewer --field positions")
    freqs = list(frequencies_cpmm) if frequencies_cpmm else _default_frequencies(ctx, side, nf)
    for f in freqs:
        if not (math.isfinite(f) and f > 0):
            raise TargetError(f"stripe frequency {f} is not a positive number of cycles per mm")
    mean = 0.5
    amp = contrast * mean
    patches = []
    for j, row in enumerate(blocks):
        for i, b in enumerate(row):
            x_start = b.x0 + 0.5 * (b.w - (nf * side + (nf - 1) * gap))
            y_start = b.y0 + 0.5 * (b.h - (no * side + (no - 1) * gap))
            for oi, ori in enumerate(orientations_deg):
                for fi, f in enumerate(freqs):
                    x0 = x_start + fi * (side + gap)
                    y0 = y_start + oi * (side + gap)
                    patches.append(StripePatch(round(x0, 6), round(y0, 6), round(x0 + side, 6), round(y0 + side, 6),
                                               float(f), float(ori), profile, mean, amp, i, j))
    params = {"field": [fx, fy], "frequencies_cpmm": freqs, "orientations_deg": list(orientations_deg),
              "profile": profile, "contrast": contrast, "patch_mm": side}
    return _Content([], [], patches, [], [], params)


def _edges(ctx: _Context, box: _Box, *, grid: tuple[int, int] | None = None,
           tilts_deg: Sequence[float] = EDGE_TILTS_DEG, square_fraction: float = 0.5,
           background: bool = True) -> _Content:
    for t in tilts_deg:
        if critical_angle_distance_deg(t) < 2.0:
            raise TargetError(
                f"edge tilt {t} degrees is within 2 degrees of a critical angle (0, 14, 26.6, 45); choose another tilt"
            )
    if grid is None:
        grid = (max(3, round(box.w / 45.0)), max(3, round(box.h / 45.0)))
    gx, gy = int(grid[0]), int(grid[1])
    if gx < 1 or gy < 1:
        raise TargetError(f"--grid must be at least 1x1, got {gx}x{gy}")
    cw, ch = box.w / gx, box.h / gy
    side = square_fraction * min(cw, ch)
    regions = [Rect(box.x0, box.y0, box.x1, box.y1, "light_grey", "edges_background")] if background else []
    squares = []
    for r in range(gy):
        for c in range(gx):
            tilt = float(tilts_deg[(r * gx + c) % len(tilts_deg)])
            cx, cy = box.x0 + (c + 0.5) * cw, box.y0 + (r + 0.5) * ch
            a = math.radians(tilt)
            ca, sa = math.cos(a), math.sin(a)
            corners = []
            for ux, uy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):  # clockwise on the page (y down)
                dx, dy = ux * side / 2, uy * side / 2
                corners.append((round(cx + ca * dx - sa * dy, 6), round(cy + sa * dx + ca * dy, 6)))
            squares.append(EdgeSquare(round(cx, 6), round(cy, 6), side, tilt, tuple(corners), "dark_grey", r, c))
    params = {"edge_grid": [gx, gy], "edge_side_mm": side, "edge_tilts_deg": list(tilts_deg),
              "edge_contrast": INKS["light_grey"] / INKS["dark_grey"]}
    return _Content(regions, [], [], squares, [], params)


def _noise(ctx: _Context, box: _Box, *, cell_mm: float | None = None, seed: int = 1) -> _Content:
    if cell_mm is None:
        # 2.3 sensor pixels, not a whole number: seen square-on, cells of exactly 2 px put
        # every cell edge at the same sub-pixel phase and a sub-pixel PSF cannot be solved.
        cell_mm = max(2.3 * ctx.footprint_mm, (MIN_PRINT_PX_DOT + 1.0) * 25.4 / ctx.dpi)
    if not (math.isfinite(cell_mm) and cell_mm > 0):
        raise TargetError(f"--cell-mm must be a positive number, got {cell_mm}")
    nx, ny = int(box.w // cell_mm), int(box.h // cell_mm)
    if nx < 8 or ny < 8:
        raise TargetError(f"--cell-mm {cell_mm} leaves fewer than 8x8 noise cells; use a smaller cell")
    x0 = box.x0 + 0.5 * (box.w - nx * cell_mm)
    y0 = box.y0 + 0.5 * (box.h - ny * cell_mm)
    patch = NoisePatch(round(x0, 6), round(y0, 6), float(cell_mm), nx, ny, int(seed), "black", "paper")
    return _Content([], [], [], [], [patch], {"cell_mm": float(cell_mm), "seed": int(seed)})


def _combo(ctx: _Context, box: _Box, *, field: tuple[int, int] = (3, 3), dot_mm: float | None = None,
           max_psf_px: float = 15.0, profile: str = "sine",
           frequencies_cpmm: Sequence[float] | None = None) -> _Content:
    fx, fy = int(field[0]), int(field[1])
    if fx < 1 or fy < 1:
        raise TargetError(f"--field must be at least 1x1, got {fx}x{fy}")
    gap = max(2.0, 0.03 * min(box.w, box.h))
    out = _Content.empty()
    for j, row in enumerate(box.split(fx, fy, gap)):
        for i, b in enumerate(row):
            top = _Box(b.x0, b.y0, b.x1, b.y0 + 0.55 * b.h)
            bottom = _Box(b.x0, top.y1 + gap / 2, b.x1, b.y1)
            left, right = bottom.split(2, 1, gap / 2)[0]
            s = _stripes(ctx, top, field=(1, 1), profile=profile, frequencies_cpmm=frequencies_cpmm)
            s.stripes = [dataclasses.replace(p, field_ix=i, field_iy=j) for p in s.stripes]
            d = _dots(ctx, left, dot_mm=dot_mm, max_psf_px=max_psf_px, seed_offset=i + 3 * j)
            e = _edges(ctx, right, grid=(1, 1), tilts_deg=(EDGE_TILTS_DEG[(i + fx * j) % len(EDGE_TILTS_DEG)],),
                       square_fraction=0.6)
            e.edges = [dataclasses.replace(q, row=j, col=i) for q in e.edges]
            for part in (s, d, e):
                out.merge(part)
    out.params.pop("field", None)
    out.params["field"] = [fx, fy]
    out.params.pop("edge_grid", None)
    return out


# ONE mapping from kind name to content builder.
_KINDS: dict[str, Callable[..., _Content]] = {
    "dots": _dots,
    "stripes": _stripes,
    "edges": _edges,
    "noise": _noise,
    "combo": _combo,
}

KINDS: tuple[str, ...] = tuple(_KINDS)

# Each kind prints its own block of marker ids: a photo analysed with another kind's layout
# then finds none of the expected markers (and can say which chart it shows) instead of
# registering and yielding a calibration of nonsense.
MARKER_IDS_PER_KIND = 50
_MAX_RING_MARKERS = 38
_MAX_INTERIOR = (4, 3)


def marker_kind(marker_id: int) -> str | None:
    """The chart kind whose block of ids holds ``marker_id`` (``None`` outside every block).

    Examples
    --------
    >>> marker_kind(3), marker_kind(MARKER_IDS_PER_KIND + 3)
    ('dots', 'stripes')
    """
    k = int(marker_id) // MARKER_IDS_PER_KIND
    return KINDS[k] if 0 <= k < len(KINDS) else None


# ---------------------------------------------------------------- page frame

def _marker_ring(page_w: float, page_h: float, margin: float, size: float, quiet: float, *,
                 first_id: int) -> list[Marker]:
    """Markers around the border: along the top and both sides; bottom corners only (footer between)."""
    lo_x, hi_x = margin + quiet, page_w - margin - quiet - size
    lo_y, hi_y = margin + quiet, page_h - margin - quiet - size
    spacing = max(60.0, 3.0 * size)
    while True:  # wider spacing on very large pages keeps the ring inside the kind's id block
        nx = max(2, math.ceil((hi_x - lo_x) / spacing) + 1)
        ny = max(2, math.ceil((hi_y - lo_y) / spacing) + 1)
        if nx + 2 * ny - 2 <= _MAX_RING_MARKERS:
            break
        spacing *= 1.1
    xs = np.linspace(lo_x, hi_x, nx)
    ys = np.linspace(lo_y, hi_y, ny)
    spots = [(x, lo_y) for x in xs]  # top row, left to right
    spots += [(hi_x, y) for y in ys[1:]]  # right column, downwards
    spots += [(lo_x, hi_y)]  # bottom-left corner
    spots += [(lo_x, y) for y in ys[-2:0:-1]]  # left column, upwards
    markers = []
    for k, (x, y) in enumerate(spots):
        x, y = round(float(x), 6), round(float(y), 6)
        corners = ((x, y), (x + size, y), (x + size, y + size), (x, y + size))
        markers.append(Marker(first_id + k, corners))
    return markers


_INTERIOR_MARKER_KINDS = ("dots", "noise")
#: Side of the markers inside a uniform field relative to the ring's. Each hides the field
#: under it: at full size (149 px in the 1200x800 bench framing) the PSF map's nodes beside
#: one read dots 40-110 px away across it, and soft-zoom's came out 17-21 % off the true
#: PSF (median over the map R/G/B 7.5/8.7/9.1 %); at 0.6 4-12 % (6.0/7.1/8.3 %; 0.5 gave
#: the same). Smaller ones are lost sooner in an overexposed photo: on the 720x480 test
#: sensor, eight times overexposed, 0.5 was found nowhere, 0.6 and 0.7 everywhere.
_INTERIOR_MARKER_SCALE = 0.6


def _interior_markers(box: _Box, size: float, quiet: float, *, first_id: int) -> list[Marker]:
    """Markers at the thirds of the content box (2 x 2 on small pages, more on large ones)."""
    wide = box.w >= box.h
    nx = min(_MAX_INTERIOR[0 if wide else 1], max(2, round(box.w / 150.0)))
    ny = min(_MAX_INTERIOR[1 if wide else 0], max(2, round(box.h / 150.0)))
    out = []
    for j in range(ny):
        for i in range(nx):
            cx = box.x0 + box.w * (i + 1) / (nx + 1)
            cy = box.y0 + box.h * (j + 1) / (ny + 1)
            x, y = round(cx - size / 2, 6), round(cy - size / 2, 6)
            out.append(Marker(first_id + len(out), ((x, y), (x + size, y), (x + size, y + size), (x, y + size))))
    return out


def _near_marker(x: float, y: float, m: Marker, pad: float) -> bool:
    (x0, y0), (x1, y1) = m.corners_mm[0], m.corners_mm[2]
    return x0 - pad <= x <= x1 + pad and y0 - pad <= y <= y1 + pad


def make_layout(kind: str, *, paper: str = "A4", landscape: bool = False,
                screen_px: tuple[int, int] | str | None = None, pixel_pitch_mm: float | None = None,
                dpi: float = 600.0, pixel_pitch_um: float | None = None, focal_mm: float | None = None,
                distance_m: float | None = None, **options: Any) -> Layout:
    """Design a chart of ``kind`` for a paper size (or a monitor).

    Parameters
    ----------
    kind : str
        ``dots``, ``stripes``, ``edges``, ``noise`` or ``combo``.
    paper : str
        ``A4``, ``A3``, ``A2``, ``letter``, ``tabloid`` or ``WxHmm``.
    landscape : bool
        Long side horizontal.
    screen_px, pixel_pitch_mm : optional
        Design for a monitor of ``screen_px`` (``(w, h)`` or ``"WxHpx"``) pixels of
        ``pixel_pitch_mm`` instead of paper; the output resolution is then one
        image pixel per screen pixel.
    dpi : float
        Output resolution the chart will be printed at; used to keep dots and
        gratings printable.
    pixel_pitch_um, focal_mm, distance_m : float, optional
        Shooting geometry. When all three are given, dots image to about one
        pixel and grating frequencies stay below the sensor's Nyquist frequency.
    **options
        Kind options. dots: ``dot_mm``, ``max_psf_px`` (largest PSF diameter
        expected, in pixels), ``phases``. stripes: ``field`` (nx, ny),
        ``frequencies_cpmm``, ``n_frequencies``, ``profile`` (sine|square),
        ``contrast``. edges: ``grid`` (nx, ny), ``tilts_deg``. noise: ``cell_mm``,
        ``seed``. combo: ``field``, ``dot_mm``, ``max_psf_px``, ``profile``.

    Returns
    -------
    Layout

    Examples
    --------
    >>> layout = make_layout("dots", paper="A4", dot_mm=0.5)  # doctest: +SKIP
    """
    builder = _KINDS.get(kind)
    if builder is None:
        raise TargetError(f"unknown chart kind {kind!r}; choose one of {', '.join(KINDS)}")
    screen = None
    if screen_px is not None or pixel_pitch_mm is not None:
        if screen_px is None or pixel_pitch_mm is None:
            raise TargetError("--screen and --pixel-pitch-mm go together; give both to make a chart for a monitor")
        if isinstance(screen_px, str):
            screen_px = parse_screen(screen_px)
        if not (math.isfinite(pixel_pitch_mm) and 0.01 <= pixel_pitch_mm <= 5.0):
            raise TargetError(f"--pixel-pitch-mm must be between 0.01 and 5 mm, got {pixel_pitch_mm}")
        sw, sh = int(screen_px[0]), int(screen_px[1])
        screen = Screen(sw, sh, float(pixel_pitch_mm))
        page_w, page_h = sw * pixel_pitch_mm, sh * pixel_pitch_mm
        dpi = 25.4 / pixel_pitch_mm
        paper, landscape = f"screen{sw}x{sh}px", page_w > page_h
        margin = 2.0 * pixel_pitch_mm
    else:
        page_w, page_h = parse_paper(paper, landscape=landscape)
        margin = 6.0  # most printers cannot print the outer few mm
    if not (math.isfinite(dpi) and dpi > 0):
        raise TargetError(f"--dpi must be a positive number, got {dpi}")

    if pixel_pitch_um is not None or focal_mm is not None or distance_m is not None:
        foot, known = pixel_footprint_mm(pixel_pitch_um, focal_mm, distance_m), True
    else:
        foot, known = max(page_w, page_h) / _DEFAULT_FRAME_PX, False
    ctx = _Context(page_w, page_h, float(dpi), foot, known)

    size = float(np.clip(round(min(page_w, page_h) / 10.0), 12.0, 45.0))
    quiet = size / _MARKER_MODULES * _QUIET_MODULES
    id0 = KINDS.index(kind) * MARKER_IDS_PER_KIND
    markers = _marker_ring(page_w, page_h, margin, size, quiet, first_id=id0)
    band = margin + 2 * quiet + size
    gap = 2.0
    box = _Box(band + gap, band + gap, page_w - band - gap, page_h - band - gap)
    if box.w < 30 or box.h < 30:
        raise TargetError(f"page {page_w:.0f}x{page_h:.0f} mm is too small for a chart; use at least A5-sized paper")

    try:
        content = builder(ctx, box, **options)
    except TypeError as exc:
        raise TargetError(f"option not understood for chart kind {kind!r} ({exc}); see 'lenspsf targets make --help'") from None

    # Uniform fields (dots, noise) also carry markers inside, so registration holds
    # locally where lens distortion bends a single homography.
    if kind in _INTERIOR_MARKER_KINDS:
        inner_size, inner_quiet = size * _INTERIOR_MARKER_SCALE, quiet * _INTERIOR_MARKER_SCALE
        inner = _interior_markers(box, inner_size, inner_quiet, first_id=id0 + len(markers))
        markers += inner
        keep_out = (content.params.get("max_psf_px", 0.0) * content.params.get("phase_unit_mm", 0.0)
                    + content.params.get("dot_mm", 0.0))
        content.dots = [d for d in content.dots
                        if not any(_near_marker(d.x_mm, d.y_mm, m, inner_quiet + keep_out / 2) for m in inner)]

    # Footer in the bottom band, between the two bottom-corner markers.
    bar_h = 2.5
    text_h = min(3.5, 0.25 * size)
    foot_y0 = page_h - margin - quiet - size + 0.15 * size
    bar = ScaleBar(round(page_w / 2 - 50.0, 6), round(foot_y0, 6), 100.0, bar_h)
    dims = f"{page_w:g} x {page_h:g} mm"
    label = (f"lenspsf {kind} chart, {paper}{' landscape' if landscape and screen is None else ''}, {dims}: "
             + ("show at 1 image pixel per screen pixel, no scaling" if screen else "print at 100 %, no scaling")
             + "; the bar is 100 mm")
    text_y = foot_y0 + bar_h + 1.5
    inner_w = page_w - 2 * (margin + 2 * quiet + size) - 4.0
    if inner_w < 100.0:
        raise TargetError(f"page {page_w:.0f} mm wide has no room for the 100 mm scale bar; use a larger paper")
    text = (TextLine(round(page_w / 2 - inner_w / 2, 6), round(text_y, 6), text_h, label),)

    params = {"dpi": float(dpi), "pixel_footprint_mm": foot, "pixel_footprint_from_geometry": known,
              "margin_mm": margin, **content.params}
    if known:
        params.update({"pixel_pitch_um": pixel_pitch_um, "focal_mm": focal_mm, "distance_m": distance_m})
    return Layout(
        kind=kind, page_mm=(page_w, page_h), paper=str(paper), landscape=bool(landscape), inks=dict(INKS),
        background="paper", regions=tuple(content.regions), dots=tuple(content.dots),
        stripes=tuple(content.stripes), edges=tuple(content.edges), noise=tuple(content.noise),
        markers=MarkerSet(MARKER_DICTIONARY, size, _MARKER_MODULES, _QUIET_MODULES, tuple(markers)),
        scale_bar=bar, text=text, params=params, screen=screen,
    )


def check_printable(layout: Layout, dpi: float) -> None:
    """Raise :class:`TargetError` if ``layout`` cannot be reproduced at ``dpi``."""
    if not (isinstance(dpi, (int, float)) and math.isfinite(dpi) and dpi > 0):
        raise TargetError(f"--dpi must be a positive number, got {dpi}")
    px_mm = 25.4 / dpi
    if layout.dots:
        d = min(dot.diameter_mm for dot in layout.dots)
        if d < MIN_PRINT_PX_DOT * px_mm:
            raise TargetError(
                f"dot diameter {d:g} mm is smaller than {MIN_PRINT_PX_DOT:g} pixels at {dpi:g} dpi "
                f"({MIN_PRINT_PX_DOT * px_mm:.3f} mm); use a larger --dot-mm, a longer --distance-m or a higher --dpi"
            )
    if layout.stripes:
        f = max(p.frequency_cpmm for p in layout.stripes)
        if 1.0 / f < MIN_PRINT_PX_PERIOD * px_mm:
            raise TargetError(
                f"stripe frequency {f:g} cycles/mm needs at least {MIN_PRINT_PX_PERIOD:g} pixels per period at "
                f"{dpi:g} dpi; use a higher --dpi or lower frequencies"
            )
    for n in layout.noise:
        if n.cell_mm < 2.0 * px_mm:
            raise TargetError(
                f"noise cell {n.cell_mm:g} mm is smaller than 2 pixels at {dpi:g} dpi; use a larger --cell-mm or a higher --dpi"
            )
