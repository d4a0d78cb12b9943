"""Through-focus analysis: MTF50 against focus, best focus per zone, node and channel.

Several calibrations of one lens at different focus settings (or MTF records per focus
setting) give, per field zone (centre, mid, corner) and colour channel, a curve of MTF50
against the focus-drive position. The peak of each curve, found by a Gaussian fit (a
parabola through the logarithm of the MTF50 values round the maximum), is that zone's
best focus. The same fit per field node gives the field-curvature map, and the
per-channel best focus in the centre the longitudinal (axial) colour.

MTF50 is the mean of the MTF50 of the sagittal and tangential (or whatever directions
were measured) curves at a field point, so the peak sits near the medial focus, between
the sagittal and tangential foci of an astigmatic field point.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import CalibError
from ._mtf_psf import psf_map_mtf
from ._records import MTFRecord

#: Field zones by normalised field height h (radius / half-diagonal): [lo, hi).
ZONES: dict[str, tuple[float, float]] = {
    "centre": (0.0, 0.3),
    "mid": (0.3, 0.7),
    "corner": (0.7, math.inf),
}
#: Points on each side of the maximum used by the peak fit.
_FIT_HALF_WIDTH = 2
#: MTF50 beyond the last measured frequency is extrapolated at most this far (factor).
_MAX_EXTRAPOLATION = 2.0
#: Orientation bins (degrees) when stripe records of one field cell are joined to a curve.
_ORIENT_BIN_DEG = 15.0

FLAG_PEAK_AT_END = "peak_at_end"
FLAG_TOO_FEW_POSITIONS = "too_few_positions"
FLAG_EXTRAPOLATED = "mtf50_extrapolated"


@dataclass(frozen=True, eq=False)
class ThroughFocus:
    """MTF50 against focus and the best focus it implies.

    Attributes
    ----------
    method : str
        Where the MTF came from: ``"psf"``, ``"edge"`` or ``"stripes"``.
    positions : ndarray (P,)
        Focus-drive positions, ascending.
    channels : tuple of str
    zones : tuple of str
        Zone names (see ``ZONES``), the first axis of ``mtf50_cpp`` and ``best_focus``.
    mtf50_cpp : ndarray (Z, C, P)
        Mean MTF50 of each zone, channel and focus position, cycles/pixel (NaN: nothing
        measured there).
    best_focus : ndarray (Z, C)
        Best focus position per zone and channel (fractional steps; NaN: no peak inside
        the swept range).
    nodes_xy : ndarray (ny, nx, 2)
        Field nodes of the map, pixels (PSF grid nodes, or cells of ``grid`` for records).
    node_mtf50_cpp : ndarray (C, ny, nx, P)
        MTF50 per node, channel and focus position.
    best_focus_map : ndarray (C, ny, nx)
        Best focus per node and channel: the field-curvature map.
    image_size : (int, int)
        (width, height) of the frame.
    flags : dict
        ``(zone, channel) -> tuple of flags`` for the zone fits that had problems
        (``peak_at_end``, ``too_few_positions``, ``mtf50_extrapolated``).
    """

    method: str
    positions: np.ndarray
    channels: tuple[str, ...]
    zones: tuple[str, ...]
    mtf50_cpp: np.ndarray
    best_focus: np.ndarray
    nodes_xy: np.ndarray
    node_mtf50_cpp: np.ndarray
    best_focus_map: np.ndarray
    image_size: tuple[int, int]
    flags: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def best_focus_of(self, zone: str, channel: str) -> float:
        """Best focus position of one zone and channel."""
        return float(self.best_focus[self._zone(zone), self._channel(channel)])

    def mtf50_of(self, zone: str, channel: str) -> np.ndarray:
        """MTF50 (c/p) of one zone and channel against ``positions``."""
        return self.mtf50_cpp[self._zone(zone), self._channel(channel)]

    def longitudinal_colour_steps(self, *, zone: str = "centre", reference: str = "G") -> dict[str, float]:
        """Best focus of each channel minus that of ``reference`` in ``zone`` (focus steps)."""
        ref = self.best_focus_of(zone, reference)
        return {c: self.best_focus_of(zone, c) - ref for c in self.channels}

    def field_curvature_steps(self, channel: str = "G") -> np.ndarray:
        """Best-focus map of one channel relative to its value nearest the frame centre."""
        bmap = self.best_focus_map[self._channel(channel)]
        w, h = self.image_size
        d = np.hypot(self.nodes_xy[..., 0] - (w - 1) / 2, self.nodes_xy[..., 1] - (h - 1) / 2)
        d = np.where(np.isfinite(bmap), d, np.inf)
        return bmap - bmap.flat[int(np.argmin(d))]

    def _zone(self, zone: str) -> int:
        if zone not in self.zones:
            raise CalibError(f"zone {zone!r} is not one of {', '.join(self.zones)}")
        return self.zones.index(zone)

    def _channel(self, channel: str) -> int:
        if channel not in self.channels:
            raise CalibError(f"channel {channel!r} is not one of {', '.join(self.channels)}")
        return self.channels.index(channel)


# ---------------------------------------------------------------- MTF50 and the peak

def mtf50_cpp(freq_cpp: np.ndarray, mtf: np.ndarray) -> tuple[float, bool]:
    """Frequency where an MTF curve first falls to 0.5, and whether it was extrapolated.

    Beyond the last frequency the curve is continued linearly (slope of its last
    quarter) up to ``2 x`` the last frequency, so a curve that stays above 0.5 up to
    Nyquist (a sharp lens, well focused) still ranks above a softer one.
    """
    f = np.asarray(freq_cpp, np.float64)
    m = np.asarray(mtf, np.float64)
    ok = np.isfinite(f) & np.isfinite(m)
    f, m = f[ok], m[ok]
    if len(f) == 0:
        return float("nan"), False
    order = np.argsort(f)
    f, m = f[order], m[order]
    if f[0] > 0:  # every MTF is 1 at zero frequency
        f, m = np.concatenate([[0.0], f]), np.concatenate([[1.0], m])
    below = np.nonzero(m < 0.5)[0]
    if len(below):
        i = below[0]
        if i == 0:
            return 0.0, False
        return float(f[i - 1] + (m[i - 1] - 0.5) * (f[i] - f[i - 1]) / (m[i - 1] - m[i])), False
    n = max(2, len(f) // 4)
    slope = np.polyfit(f[-n:], m[-n:], 1)[0] if len(f) >= 2 else 0.0
    if slope >= 0:
        return float(_MAX_EXTRAPOLATION * f[-1]), True
    return float(min(f[-1] + (0.5 - m[-1]) / slope, _MAX_EXTRAPOLATION * f[-1])), True


def peak_position(positions: np.ndarray, values: np.ndarray) -> tuple[float, tuple[str, ...]]:
    """Position of the maximum of ``values`` by a Gaussian fit round the largest sample.

    Returns
    -------
    position : float
        NaN when the maximum is at either end of the sweep or fewer than 3 finite values.
    flags : tuple of str
    """
    p = np.asarray(positions, np.float64)
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v) & (v > 0)
    p, v = p[ok], v[ok]
    if len(p) < 3:
        return float("nan"), (FLAG_TOO_FEW_POSITIONS,)
    i = int(np.argmax(v))
    if i == 0 or i == len(p) - 1:
        return float("nan"), (FLAG_PEAK_AT_END,)
    lo, hi = max(0, i - _FIT_HALF_WIDTH), min(len(p), i + _FIT_HALF_WIDTH + 1)
    x = p[lo:hi] - p[i]
    y = np.log(v[lo:hi])
    # weight the points by their height so the flanks' shape matters less than the top
    a, b, _ = np.polyfit(x, y, 2, w=v[lo:hi] / v[i])
    if not a < 0:
        return float(p[i]), ()
    vertex = -b / (2 * a)
    # the vertex of a good fit lies between the neighbours of the largest sample
    vertex = float(np.clip(vertex, x[0] if lo < i else -1.0, x[-1] if hi > i + 1 else 1.0))
    return float(p[i] + vertex), ()


# ---------------------------------------------------------------- field samples

@dataclass(frozen=True)
class _Sample:
    channel: str
    x_px: float
    y_px: float
    mtf50_cpp: float
    extrapolated: bool


def _psf_samples(cal: Any, _records: Sequence[MTFRecord], grid: Any) -> tuple[list[_Sample], np.ndarray | None]:
    pm = cal.psf_map
    top = min(1.0, 0.5 * pm.sampling)
    freq = np.arange(0.0, top + 1e-9, 0.005)
    samples = []
    for r in psf_map_mtf(pm, freq_cpp=freq):
        m50, ext = mtf50_cpp(r.freq_cpp, r.mtf)
        samples.append(_Sample(r.channel, r.x_px, r.y_px, m50, ext))
    return samples, np.asarray(pm.nodes_xy, np.float64)


def _edge_samples(_cal: Any, records: Sequence[MTFRecord], grid: Any) -> tuple[list[_Sample], None]:
    out = []
    for r in records:
        if r.method != "edge" or r.flags:
            continue
        m50, ext = mtf50_cpp(r.freq_cpp, r.mtf)
        out.append(_Sample(r.channel, r.x_px, r.y_px, m50, ext))
    return out, None


def _stripe_samples(_cal: Any, records: Sequence[MTFRecord], grid: Any) -> tuple[list[_Sample], None]:
    """Stripe records hold one frequency (and harmonics) per patch: join the patches of one
    field cell, channel and orientation into a curve before taking its MTF50."""
    cells, _ = grid
    groups: dict[tuple, list[MTFRecord]] = {}
    for r in records:
        if r.method != "stripes" or r.flags:
            continue
        cell = cells(r.x_px, r.y_px)
        obin = int(round((r.orientation_deg % 180.0) / _ORIENT_BIN_DEG)) % int(180 / _ORIENT_BIN_DEG)
        groups.setdefault((r.channel, cell, obin), []).append(r)
    out = []
    for (channel, _, _), recs in groups.items():
        f = np.concatenate([np.asarray(r.freq_cpp, float) for r in recs])
        m = np.concatenate([np.asarray(r.mtf, float) for r in recs])
        if len(f) < 2:
            continue
        m50, ext = mtf50_cpp(f, m)
        out.append(_Sample(channel, float(np.mean([r.x_px for r in recs])),
                           float(np.mean([r.y_px for r in recs])), m50, ext))
    return out, None


_SAMPLERS: dict[str, Callable] = {"psf": _psf_samples, "edge": _edge_samples, "stripes": _stripe_samples}


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class _Setting:
    position: float
    calibration: Any
    records: tuple[MTFRecord, ...]
    image_size: tuple[int, int] | None


def _settings(calibrations: Any, image_size: tuple[int, int] | None, method: str) -> list[_Setting]:
    if hasattr(calibrations, "summaries") and hasattr(calibrations, "get"):
        calibrations = [calibrations.get(s.id) for s in calibrations.summaries()]
    if isinstance(calibrations, Mapping):
        if method == "psf":
            raise CalibError("through-focus from MTF records needs method 'edge' or 'stripes'; "
                             "pass calibrations (with PSF maps) for method 'psf'")
        return [_Setting(float(pos), None, tuple(recs), image_size) for pos, recs in calibrations.items()]
    cals = list(calibrations)
    settings = []
    groups = set()
    for cal in cals:
        key = cal.key
        if key.focus_position is None:
            raise CalibError(f"calibration {getattr(cal, 'label', key)} has no focus position; "
                             "through-focus needs the focus-drive position of every calibration")
        groups.add((key.camera, key.lens, key.focal_length_mm, key.f_number))
        settings.append(_Setting(float(key.focus_position), cal, tuple(cal.mtf),
                                 tuple(cal.psf_map.image_size)))
    if len(groups) > 1:
        raise CalibError(f"the calibrations are of {len(groups)} different camera/lens/focal length/f-number "
                         "settings; pass the calibrations of one lens setting only")
    return settings


# ---------------------------------------------------------------- public

def through_focus(
    calibrations: Any,
    *,
    method: str = "psf",
    channels: Sequence[str] | None = None,
    grid: tuple[int, int] = (3, 5),
    image_size: tuple[int, int] | None = None,
    centre_xy: tuple[float, float] | None = None,
) -> ThroughFocus:
    """MTF50 against focus per zone and channel; best focus per zone, node and channel.

    Parameters
    ----------
    calibrations : sequence of Calibration, PSFDatabase, or mapping
        Calibrations of one camera + lens + focal length + f-number at several focus
        positions (e.g. ``[db.get(i) for i in ids]``, or a whole ``PSFDatabase`` holding
        one lens setting); or a mapping ``focus_position -> sequence of MTFRecord``.
    method : {"psf", "edge", "stripes"}
        Which MTF to use: of the PSF maps, or the stored edge / stripe records
        (flagged records are left out).
    channels : sequence of str, optional
        Channels to analyse (default: all that were measured).
    grid : (ny, nx)
        Field cells for the best-focus map from records (the PSF method uses the PSF
        grid's own nodes).
    image_size : (int, int), optional
        (width, height); needed with a mapping of records.
    centre_xy : (float, float), optional
        Optical centre (default: the frame centre).

    Returns
    -------
    ThroughFocus

    Raises
    ------
    CalibError
        Unknown method, fewer than 3 focus positions, calibrations of different lens
        settings, records without an image size, or no usable MTF.

    Examples
    --------
    >>> tf = through_focus([db.get(s.id) for s in db.summaries()])   # doctest: +SKIP
    >>> tf.best_focus_of("corner", "G") - tf.best_focus_of("centre", "G")  # doctest: +SKIP
    """
    sampler = _SAMPLERS.get(method)
    if sampler is None:
        raise CalibError(f"through-focus method {method!r} is unknown; choose one of {', '.join(_SAMPLERS)}")
    settings = _settings(calibrations, image_size, method)
    sizes = {s.image_size for s in settings if s.image_size is not None}
    size = image_size or (sizes.pop() if len(sizes) == 1 else None)
    if size is None:
        raise CalibError("the image size is unknown or differs between calibrations; pass image_size=(width, height)")
    w, h = int(size[0]), int(size[1])
    positions = np.array(sorted({s.position for s in settings}), np.float64)
    if len(positions) < 3:
        raise CalibError(f"through-focus needs at least 3 focus positions, got {len(positions)}; "
                         "calibrate at more focus settings")
    centre = centre_xy if centre_xy is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    norm = math.hypot(w / 2.0, h / 2.0)

    gy, gx = int(grid[0]), int(grid[1])

    def cell_of(x: float, y: float) -> tuple[int, int]:
        i = int(np.clip(np.floor((y + 0.5) / h * gy), 0, gy - 1))
        j = int(np.clip(np.floor((x + 0.5) / w * gx), 0, gx - 1))
        return i, j

    per_setting = []
    node_grid = None
    for s in settings:
        samples, nodes = sampler(s.calibration, s.records, (cell_of, (gy, gx)))
        if nodes is not None:
            node_grid = nodes
        per_setting.append((s.position, samples))
    all_samples = [smp for _, ss in per_setting for smp in ss if np.isfinite(smp.mtf50_cpp)]
    if not all_samples:
        raise CalibError(f"no usable {method} MTF was found in the calibrations; measure it first "
                         "(or choose another method)")
    found = sorted({smp.channel for smp in all_samples}, key=lambda c: ("RGBY".find(c) % 10, c))
    chans = tuple(channels) if channels is not None else tuple(found)
    for c in chans:
        if c not in found:
            raise CalibError(f"channel {c!r} has no {method} MTF in the calibrations (they hold {', '.join(found)})")

    # nodes: the PSF grid, or cells of `grid`
    if node_grid is not None:
        nodes = node_grid
        ny, nx = nodes.shape[:2]
        flat = nodes.reshape(-1, 2)

        def node_of(x: float, y: float) -> tuple[int, int]:
            k = int(np.argmin(np.hypot(flat[:, 0] - x, flat[:, 1] - y)))
            return divmod(k, nx)
    else:
        ny, nx = gy, gx
        node_of = cell_of
        sums = np.zeros((ny, nx, 2))
        counts = np.zeros((ny, nx))
        for smp in all_samples:
            i, j = cell_of(smp.x_px, smp.y_px)
            sums[i, j] += (smp.x_px, smp.y_px)
            counts[i, j] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            nodes = np.where(counts[..., None] > 0, sums / counts[..., None], np.nan)

    zones = tuple(ZONES)
    npos = len(positions)
    zone_sum = np.zeros((len(zones), len(chans), npos))
    zone_n = np.zeros_like(zone_sum)
    node_sum = np.zeros((len(chans), ny, nx, npos))
    node_n = np.zeros_like(node_sum)
    extrap: set[tuple[int, int]] = set()
    for pos, samples in per_setting:
        k = int(np.searchsorted(positions, pos))
        for smp in samples:
            if smp.channel not in chans or not np.isfinite(smp.mtf50_cpp):
                continue
            c = chans.index(smp.channel)
            hgt = math.hypot(smp.x_px - centre[0], smp.y_px - centre[1]) / norm
            for z, name in enumerate(zones):
                lo, hi = ZONES[name]
                if lo <= hgt < hi:
                    zone_sum[z, c, k] += smp.mtf50_cpp
                    zone_n[z, c, k] += 1
                    if smp.extrapolated:
                        extrap.add((z, c))
            i, j = node_of(smp.x_px, smp.y_px)
            node_sum[c, i, j, k] += smp.mtf50_cpp
            node_n[c, i, j, k] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        zone_mtf = np.where(zone_n > 0, zone_sum / np.maximum(zone_n, 1), np.nan)
        node_mtf = np.where(node_n > 0, node_sum / np.maximum(node_n, 1), np.nan)

    best = np.full((len(zones), len(chans)), np.nan)
    flags: dict[tuple[str, str], tuple[str, ...]] = {}
    for z, name in enumerate(zones):
        for c, ch in enumerate(chans):
            if not np.any(np.isfinite(zone_mtf[z, c])):
                continue
            best[z, c], fl = peak_position(positions, zone_mtf[z, c])
            fl = fl + ((FLAG_EXTRAPOLATED,) if (z, c) in extrap else ())
            if fl:
                flags[(name, ch)] = fl
    bmap = np.full((len(chans), ny, nx), np.nan)
    for c in range(len(chans)):
        for i in range(ny):
            for j in range(nx):
                if np.any(np.isfinite(node_mtf[c, i, j])):
                    bmap[c, i, j] = peak_position(positions, node_mtf[c, i, j])[0]
    return ThroughFocus(
        method=method, positions=positions, channels=chans, zones=zones, mtf50_cpp=zone_mtf,
        best_focus=best, nodes_xy=np.asarray(nodes, np.float64), node_mtf50_cpp=node_mtf,
        best_focus_map=bmap, image_size=(w, h), flags=flags,
    )
