"""Through-focus analysis: sharpness against focus, best focus per zone, node and channel.

Several calibrations of one lens at different focus settings (or MTF records per focus
setting) give, per field zone (centre, mid, corner) and colour channel, curves of MTF50
and of a sharpness measure against the focus axis. The peak of the chosen measure, found
by a Gaussian fit (a parabola through the logarithm of the values round the maximum), is
that zone's best focus. The same fit per field node gives the best-focus (field-curvature)
map, and the per-channel best focus in the centre the longitudinal (axial) colour.

Why the default peak measure is the mean MTF and not MTF50: a sharp lens near focus keeps
its MTF above 0.5 up to Nyquist, so the MTF50 of a PSF map sampled at sensor pixels
saturates there and the top of the through-focus curve is flat; the mean of the MTF from
0 to Nyquist keeps rising until best focus. MTF50 is still computed (extrapolated a little
beyond the last measured frequency) for display.

Every value of a field point is the mean over the directions measured there (sagittal
and tangential for PSF maps), so the peak sits near the medial focus, between the
sagittal and tangential foci of an astigmatic point.

Zones are sets of field nodes (PSF grid nodes, or the cells of ``grid`` for records); see
:func:`zone_nodes`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import CalibError
from ._mtf_psf import psf_map_mtf
from ._records import MTFRecord, mtf50

#: Zone names, the first axis of ``ThroughFocus.mtf50_cpp`` (see :func:`zone_nodes`).
ZONES: tuple[str, ...] = ("centre", "mid", "corner")
#: Nyquist frequency, cycles/pixel: the mean MTF is taken from 0 up to here.
NYQUIST_CPP = 0.5
#: Frequencies (c/p) at which PSF maps are sampled (0.005 c/p steps).
_PSF_STEP_CPP = 0.005
#: Points on each side of the maximum used by the peak fit.
_FIT_HALF_WIDTH = 2
#: MTF50 beyond the last measured frequency is extrapolated at most this far (factor).
_MAX_EXTRAPOLATION = 2.0
#: Orientation bins (degrees) when stripe records of one field cell are joined to a curve.
_ORIENT_BIN_DEG = 15.0
#: Mid-field nodes: those within this of the field height nearest 0.5.
_MID_TOLERANCE = 0.02

FLAG_PEAK_AT_END = "peak_at_end"
FLAG_TOO_FEW_POSITIONS = "too_few_positions"
FLAG_EXTRAPOLATED = "mtf50_extrapolated"
FLAG_SHORT_CURVE = "mtf_ends_below_nyquist"


@dataclass(frozen=True, eq=False)
class ThroughFocus:
    """MTF against focus and the best focus it implies.

    Attributes
    ----------
    method : str
        Where the MTF came from: ``"psf"``, ``"edge"`` or ``"stripes"``.
    metric : str
        The measure whose peak is the best focus: ``"mean_mtf"`` or ``"mtf50"``.
    focus_axis : str
        ``"focus_position"`` (focus-drive steps) or ``"diopters"`` (1 / focus distance in
        metres, used when calibrations have distances but no drive positions).
    positions : ndarray (P,)
        The focus axis values, ascending.
    channels : tuple of str
    zones : tuple of str
        Zone names (``ZONES``), the first axis of the zone arrays.
    zone_nodes : dict
        ``zone -> tuple of (i, j)`` node indices the zone averages over.
    mtf50_cpp : ndarray (Z, C, P)
        Mean MTF50 of each zone, channel and focus position, cycles/pixel (NaN: nothing
        measured there); above the last measured frequency it is extrapolated.
    mean_mtf : ndarray (Z, C, P)
        Mean of the MTF from 0 to Nyquist (or to the last measured frequency below it).
    best_focus : ndarray (Z, C)
        Best focus per zone and channel, on the focus axis (NaN: no peak inside the
        swept range; the flags say why).
    nodes_xy : ndarray (ny, nx, 2)
        Field nodes, pixels (the PSF grid nodes, or the centres of the cells of ``grid``).
    node_mtf50_cpp, node_mean_mtf : ndarray (C, ny, nx, P)
        The same per node.
    best_focus_map : ndarray (C, ny, nx)
        Best focus per node and channel: the field-curvature map.
    image_size : (int, int)
        (width, height) of the frame.
    flags : dict
        ``(zone, channel) -> tuple of flags`` for the zone fits that had problems
        (``peak_at_end``, ``too_few_positions``, ``mtf50_extrapolated``,
        ``mtf_ends_below_nyquist``).
    """

    method: str
    metric: str
    focus_axis: str
    positions: np.ndarray
    channels: tuple[str, ...]
    zones: tuple[str, ...]
    zone_nodes: dict[str, tuple[tuple[int, int], ...]]
    mtf50_cpp: np.ndarray
    mean_mtf: np.ndarray
    best_focus: np.ndarray
    nodes_xy: np.ndarray
    node_mtf50_cpp: np.ndarray
    node_mean_mtf: np.ndarray
    best_focus_map: np.ndarray
    image_size: tuple[int, int]
    flags: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @property
    def focus_axis_label(self) -> str:
        """Axis label of ``positions`` with its unit."""
        return _AXIS_LABELS[self.focus_axis]

    @property
    def sharpness(self) -> np.ndarray:
        """The zone values (Z, C, P) whose peak is the best focus (``metric``)."""
        return self.mean_mtf if self.metric == "mean_mtf" else self.mtf50_cpp

    def best_focus_of(self, zone: str, channel: str) -> float:
        """Best focus of one zone and channel."""
        return float(self.best_focus[self._zone(zone), self._channel(channel)])

    @property
    def node_sharpness(self) -> np.ndarray:
        """The node values (C, ny, nx, P) whose peak is ``best_focus_map`` (``metric``)."""
        return self.node_mean_mtf if self.metric == "mean_mtf" else self.node_mtf50_cpp

    def mtf50_of(self, zone: str, channel: str) -> np.ndarray:
        """MTF50 (c/p) of one zone and channel against ``positions``."""
        return self.mtf50_cpp[self._zone(zone), self._channel(channel)]

    def longitudinal_colour_steps(self, *, zone: str = "centre", reference: str = "G") -> dict[str, float]:
        """Best focus of each channel minus that of ``reference`` in ``zone`` (focus axis units)."""
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


_AXIS_LABELS = {"focus_position": "focus-drive position (steps)",
                "diopters": "focus distance (diopters, 1/m)"}


# ---------------------------------------------------------------- zones

def field_height(nodes_xy: np.ndarray, image_size: tuple[int, int], *,
                 centre_xy: tuple[float, float] | None = None) -> np.ndarray:
    """Distance of each node from the optical centre over the half-diagonal ``hypot(w-1, h-1)/2``."""
    w, h = image_size
    cx, cy = centre_xy if centre_xy is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    xy = np.asarray(nodes_xy, np.float64)
    return np.hypot(xy[..., 0] - cx, xy[..., 1] - cy) / (math.hypot(w - 1, h - 1) / 2.0 or 1.0)


def zone_nodes(nodes_xy: np.ndarray, image_size: tuple[int, int], *,
               centre_xy: tuple[float, float] | None = None) -> dict[str, tuple[tuple[int, int], ...]]:
    """The nodes of a field grid that make up each zone.

    *centre*: the node(s) nearest the optical centre; *corner*: the four corner nodes of
    the grid; *mid*: of the others, those whose field height (:func:`field_height`) is
    nearest 0.5 (all within 0.02 of the nearest). Whole grid nodes rather than bands of
    field height, so on a small grid the middles of the long sides (field height 0.8 on
    a 3:2 frame) do not pass for corners.
    """
    height = field_height(nodes_xy, image_size, centre_xy=centre_xy)
    ny, nx = height.shape
    every = [(i, j) for i in range(ny) for j in range(nx)]
    centre = tuple(n for n in every if height[n] <= height.min() + 1e-9)
    corner = tuple(sorted({(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1)}))
    rest = [n for n in every if n not in centre and n not in corner]
    mid: tuple[tuple[int, int], ...] = ()
    if rest:
        nearest = min(abs(height[n] - 0.5) for n in rest)
        mid = tuple(n for n in rest if abs(height[n] - 0.5) <= nearest + _MID_TOLERANCE)
    return {"centre": centre, "mid": mid, "corner": corner}


# ---------------------------------------------------------------- per-curve measures

def _clean_curve(freq_cpp: np.ndarray, mtf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite samples sorted by frequency, starting at (0, 1) (every MTF is 1 there)."""
    f = np.asarray(freq_cpp, np.float64).ravel()
    m = np.asarray(mtf, np.float64).ravel()
    ok = np.isfinite(f) & np.isfinite(m)
    f, m = f[ok], m[ok]
    order = np.argsort(f, kind="stable")
    f, m = f[order], m[order]
    if len(f) == 0 or f[0] > 0:
        f, m = np.concatenate([[0.0], f]), np.concatenate([[1.0], m])
    return f, m


def mtf50_cpp(freq_cpp: np.ndarray, mtf: np.ndarray) -> tuple[float, bool]:
    """Frequency where an MTF curve first falls to 0.5, and whether it was extrapolated.

    Beyond the last frequency the curve is continued linearly (slope of its last
    quarter) up to ``2 x`` the last frequency, so a curve that stays above 0.5 up to
    Nyquist (a sharp lens, well focused) still ranks above a softer one.
    """
    f, m = _clean_curve(freq_cpp, mtf)
    if len(f) < 2:
        return math.nan, False
    if m[0] < 0.5:
        return 0.0, False
    crossing = mtf50(f, m)
    if math.isfinite(crossing):
        return crossing, False
    n = max(2, len(f) // 4)
    slope = np.polyfit(f[-n:], m[-n:], 1)[0]
    if slope >= 0:
        return float(_MAX_EXTRAPOLATION * f[-1]), True
    return float(min(f[-1] + (0.5 - m[-1]) / slope, _MAX_EXTRAPOLATION * f[-1])), True


def mean_mtf(freq_cpp: np.ndarray, mtf: np.ndarray) -> tuple[float, bool]:
    """Mean of an MTF curve from 0 to Nyquist, and whether the curve ended below Nyquist.

    The curve (linearly interpolated, 1 at zero frequency) is sampled at 101 equally
    spaced frequencies from 0 to Nyquist, or to its last frequency when that is lower.
    Unlike MTF50 it does not saturate when a sharp lens keeps its MTF above 0.5.
    """
    f, m = _clean_curve(freq_cpp, mtf)
    if len(f) < 2:
        return math.nan, False
    top = min(NYQUIST_CPP, float(f[-1]))
    grid = np.linspace(0.0, top, 101)
    return float(np.mean(np.interp(grid, f, m))), top < NYQUIST_CPP - 1e-9


#: Per-curve measures by name: value and whether it had to go beyond the data.
_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[float, bool]]] = {
    "mean_mtf": mean_mtf,
    "mtf50": mtf50_cpp,
}
_METRIC_FLAGS = {"mean_mtf": FLAG_SHORT_CURVE, "mtf50": FLAG_EXTRAPOLATED}


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


# ---------------------------------------------------------------- field curves

@dataclass(frozen=True)
class FieldCurve:
    """One MTF curve at a field point: a PSF node direction, an edge, or joined stripe patches.

    Attributes
    ----------
    channel : str
    x_px, y_px : float
        Field position, pixels.
    freq_cpp, mtf : ndarray
        Frequencies (cycles/pixel) and modulation.
    n_records : int
        How many MTF records were joined into the curve.
    """

    channel: str
    x_px: float
    y_px: float
    freq_cpp: np.ndarray
    mtf: np.ndarray
    n_records: int = 1


def _cells(image_size: tuple[int, int], grid: tuple[int, int]) -> Callable[[float, float], tuple[int, int]]:
    w, h = image_size
    gy, gx = int(grid[0]), int(grid[1])

    def cell_of(x: float, y: float) -> tuple[int, int]:
        i = int(np.clip(np.floor((y + 0.5) / h * gy), 0, gy - 1))
        j = int(np.clip(np.floor((x + 0.5) / w * gx), 0, gx - 1))
        return i, j

    return cell_of


def _cell_centres(image_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    w, h = image_size
    gy, gx = int(grid[0]), int(grid[1])
    ys = (np.arange(gy) + 0.5) * h / gy - 0.5
    xs = (np.arange(gx) + 0.5) * w / gx - 0.5
    return np.stack(np.meshgrid(xs, ys), axis=-1)


def _edge_curves(records: Sequence[MTFRecord], _cell_of: Callable) -> list[FieldCurve]:
    return [FieldCurve(r.channel, r.x_px, r.y_px, np.asarray(r.freq_cpp, float), np.asarray(r.mtf, float))
            for r in records if r.method == "edge" and not r.flags]


def _stripe_curves(records: Sequence[MTFRecord], cell_of: Callable) -> list[FieldCurve]:
    """Stripe records hold one frequency (and harmonics) per patch: join the patches of one
    field cell, channel and orientation into a curve (sorted, starting at (0, 1))."""
    nbins = int(round(180.0 / _ORIENT_BIN_DEG))
    groups: dict[tuple, list[MTFRecord]] = {}
    for r in records:
        if r.method != "stripes" or r.flags:
            continue
        obin = int(round((r.orientation_deg % 180.0) / _ORIENT_BIN_DEG)) % nbins
        groups.setdefault((r.channel, cell_of(r.x_px, r.y_px), obin), []).append(r)
    out = []
    for (channel, _, _), recs in groups.items():
        f, m = _clean_curve(np.concatenate([np.asarray(r.freq_cpp, float) for r in recs]),
                            np.concatenate([np.asarray(r.mtf, float) for r in recs]))
        if len(f) < 3:  # (0, 1) and at least two measured frequencies
            continue
        out.append(FieldCurve(channel, float(np.mean([r.x_px for r in recs])),
                              float(np.mean([r.y_px for r in recs])), f, m, len(recs)))
    return out


_RECORD_CURVES: dict[str, Callable[[Sequence[MTFRecord], Callable], list[FieldCurve]]] = {
    "edge": _edge_curves,
    "stripes": _stripe_curves,
}


def measured_curves(records: Sequence[MTFRecord], method: str, *, image_size: tuple[int, int],
                    grid: tuple[int, int] = (3, 5)) -> list[FieldCurve]:
    """The MTF curves that a calibration's edge or stripe records make (flagged ones left out).

    Parameters
    ----------
    records : sequence of MTFRecord
    method : {"edge", "stripes"}
        Edge records are curves already; stripe patches of one cell of ``grid``, channel
        and orientation (15 degree bins) are joined into one curve.
    image_size : (int, int)
        (width, height) of the frame.
    grid : (ny, nx)
        Field cells used to join stripe patches.

    Returns
    -------
    list of FieldCurve
    """
    join = _RECORD_CURVES.get(method)
    if join is None:
        raise CalibError(f"MTF record method {method!r} has no curves; choose one of {', '.join(_RECORD_CURVES)}")
    return join(records, _cells(image_size, grid))


def _psf_curves(cal: Any, _records: Sequence[MTFRecord], _cell_of: Callable) -> list[FieldCurve]:
    pm = cal.psf_map
    freq = np.arange(0.0, 0.5 * pm.sampling + 1e-9, _PSF_STEP_CPP)
    return [FieldCurve(r.channel, r.x_px, r.y_px, r.freq_cpp, r.mtf) for r in psf_map_mtf(pm, freq_cpp=freq)]


_SAMPLERS: dict[str, Callable[[Any, Sequence[MTFRecord], Callable], list[FieldCurve]]] = {
    "psf": _psf_curves,
    **{name: (lambda _cal, records, cell_of, join=join: join(records, cell_of))
       for name, join in _RECORD_CURVES.items()},
}


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class _Setting:
    position: float
    calibration: Any
    records: tuple[MTFRecord, ...]
    image_size: tuple[int, int] | None
    nodes_xy: np.ndarray | None


def _axis_value(key: Any, axis: str) -> float:
    if axis == "focus_position":
        return float(key.focus_position)
    d = key.focus_distance_m
    return 0.0 if math.isinf(d) else 1.0 / d


def _settings(calibrations: Any, image_size: tuple[int, int] | None, method: str) -> tuple[list[_Setting], str]:
    if hasattr(calibrations, "summaries") and hasattr(calibrations, "get"):
        calibrations = [calibrations.get(s.id) for s in calibrations.summaries()]
    if isinstance(calibrations, Mapping):
        if method == "psf":
            raise CalibError("through-focus from MTF records needs method 'edge' or 'stripes'; "
                             "pass calibrations (with PSF maps) for method 'psf'")
        return [_Setting(float(pos), None, tuple(recs), image_size, None)
                for pos, recs in calibrations.items()], "focus_position"
    cals = list(calibrations)
    keys = [cal.key for cal in cals]
    if all(k.focus_position is not None for k in keys):
        axis = "focus_position"
    elif all(k.focus_distance_m is not None for k in keys):
        axis = "diopters"
    else:
        bad = next(cal for cal in cals if cal.key.focus_position is None)
        raise CalibError(f"calibration {getattr(bad, 'label', bad.key)} has no focus position or distance; "
                         "through-focus needs the focus-drive position (or distance) of every calibration")
    groups = {(k.camera, k.lens, k.focal_length_mm, k.f_number) for k in keys}
    if len(groups) > 1:
        raise CalibError(f"the calibrations are of {len(groups)} different camera/lens/focal length/f-number "
                         "settings; pass the calibrations of one lens setting only")
    return [_Setting(_axis_value(cal.key, axis), cal, tuple(cal.mtf), tuple(cal.psf_map.image_size),
                     np.asarray(cal.psf_map.nodes_xy, np.float64)) for cal in cals], axis


def _peaks(positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Peak of every curve along the last axis, with its flags (flattened order)."""
    flat = values.reshape(-1, values.shape[-1])
    best = np.full(len(flat), np.nan)
    flags: list[tuple[str, ...]] = []
    for k, v in enumerate(flat):
        if np.any(np.isfinite(v)):
            best[k], fl = peak_position(positions, v)
        else:
            fl = ()
        flags.append(fl)
    return best.reshape(values.shape[:-1]), flags


# ---------------------------------------------------------------- public

def through_focus(
    calibrations: Any,
    *,
    method: str = "psf",
    metric: str = "mean_mtf",
    channels: Sequence[str] | None = None,
    grid: tuple[int, int] = (3, 5),
    image_size: tuple[int, int] | None = None,
    centre_xy: tuple[float, float] | None = None,
) -> ThroughFocus:
    """MTF against focus per zone and channel; best focus per zone, node and channel.

    Parameters
    ----------
    calibrations : sequence of Calibration, PSFDatabase, or mapping
        Calibrations of one camera + lens + focal length + f-number at several focus
        settings (e.g. ``[db.get(i) for i in ids]``, or a whole ``PSFDatabase`` holding
        one lens setting); or a mapping ``focus_position -> sequence of MTFRecord``.
        The focus axis is the focus-drive position, or the focus distance in diopters
        when some calibration has no position but all have distances.
    method : {"psf", "edge", "stripes"}
        Which MTF to use: of the PSF maps, or the stored edge / stripe records
        (flagged records are left out).
    metric : {"mean_mtf", "mtf50"}
        The measure whose peak is the best focus: the mean MTF from 0 to Nyquist (does
        not saturate for sharp lenses) or MTF50.
    channels : sequence of str, optional
        Channels to analyse (default: all that were measured).
    grid : (ny, nx)
        Field cells that are the nodes when working from records (the PSF method uses
        the PSF grid's own nodes).
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
        Unknown method or metric, fewer than 3 focus settings, calibrations of different
        lens settings, records without an image size, or no usable MTF.

    Examples
    --------
    >>> tf = through_focus([db.get(s.id) for s in db.summaries()])   # doctest: +SKIP
    >>> tf.best_focus_of("corner", "G") - tf.best_focus_of("centre", "G")  # doctest: +SKIP
    """
    sampler = _SAMPLERS.get(method)
    if sampler is None:
        raise CalibError(f"through-focus method {method!r} is unknown; choose one of {', '.join(_SAMPLERS)}")
    if metric not in _METRICS:
        raise CalibError(f"through-focus metric {metric!r} is unknown; choose one of {', '.join(_METRICS)}")
    settings, axis = _settings(calibrations, image_size, method)
    sizes = {s.image_size for s in settings if s.image_size is not None}
    size = image_size or (sizes.pop() if len(sizes) == 1 else None)
    if size is None:
        raise CalibError("the image size is unknown or differs between calibrations; pass image_size=(width, height)")
    w, h = int(size[0]), int(size[1])
    positions = np.array(sorted({s.position for s in settings}), np.float64)
    if len(positions) < 3 or len(positions) < len(settings):
        raise CalibError(f"through-focus needs at least 3 distinct focus settings, got {len(positions)} "
                         f"for {len(settings)} calibrations; calibrate at more focus settings")

    # Nodes: the PSF grid of the first calibration (a point goes to its nearest node), or cells.
    cell_of = _cells((w, h), grid)
    if settings[0].nodes_xy is not None and method == "psf":
        nodes = settings[0].nodes_xy
        ny, nx = nodes.shape[:2]
        flat = nodes.reshape(-1, 2)

        def node_of(x: float, y: float) -> tuple[int, int]:
            return divmod(int(np.argmin(np.hypot(flat[:, 0] - x, flat[:, 1] - y))), nx)
    else:
        nodes = _cell_centres((w, h), grid)
        ny, nx = nodes.shape[:2]
        node_of = cell_of

    curves = [(int(np.searchsorted(positions, s.position)), sampler(s.calibration, s.records, cell_of))
              for s in settings]
    found = sorted({c.channel for _, cs in curves for c in cs}, key=lambda c: ("RGBY".find(c) % 10, c))
    if not found:
        raise CalibError(f"no usable {method} MTF was found in the calibrations; measure it first "
                         "(or choose another method)")
    chans = tuple(channels) if channels is not None else tuple(found)
    for c in chans:
        if c not in found:
            raise CalibError(f"channel {c!r} has no {method} MTF in the calibrations (they hold {', '.join(found)})")

    names = tuple(_METRICS)
    npos = len(positions)
    node_sum = np.zeros((len(names), len(chans), ny, nx, npos))
    node_n = np.zeros_like(node_sum)
    beyond = np.zeros((len(names), len(chans), ny, nx), bool)
    for k, cs in curves:
        for cv in cs:
            if cv.channel not in chans:
                continue
            c = chans.index(cv.channel)
            i, j = node_of(cv.x_px, cv.y_px)
            for q, name in enumerate(names):
                value, went_beyond = _METRICS[name](cv.freq_cpp, cv.mtf)
                if math.isfinite(value):
                    node_sum[q, c, i, j, k] += value
                    node_n[q, c, i, j, k] += 1
                    beyond[q, c, i, j] |= went_beyond
    with np.errstate(invalid="ignore", divide="ignore"):
        node_val = np.where(node_n > 0, node_sum / np.maximum(node_n, 1), np.nan)

    zones = zone_nodes(nodes, (w, h), centre_xy=centre_xy)
    zone_val = np.full((len(names), len(ZONES), len(chans), npos), np.nan)
    for z, name in enumerate(ZONES):
        members = zones[name]
        if not members:
            continue
        vals = np.stack([node_val[:, :, i, j] for i, j in members])  # (N, M, C, P)
        have = np.isfinite(vals).any(axis=0)
        with np.errstate(invalid="ignore"):
            zone_val[:, z] = np.where(have, np.nansum(vals, axis=0) / np.maximum(np.isfinite(vals).sum(0), 1),
                                      np.nan)
    q = names.index(metric)
    best, zflags = _peaks(positions, zone_val[q])
    bmap, _ = _peaks(positions, node_val[q])
    flags: dict[tuple[str, str], tuple[str, ...]] = {}
    for z, zname in enumerate(ZONES):
        for c, ch in enumerate(chans):
            fl = zflags[z * len(chans) + c]
            if any(beyond[q, c, i, j] for i, j in zones[zname]) and np.any(np.isfinite(zone_val[q, z, c])):
                fl = fl + (_METRIC_FLAGS[metric],)
            if fl:
                flags[(zname, ch)] = fl
    m50, mm = names.index("mtf50"), names.index("mean_mtf")
    return ThroughFocus(
        method=method, metric=metric, focus_axis=axis, positions=positions, channels=chans, zones=ZONES,
        zone_nodes=zones, mtf50_cpp=zone_val[m50], mean_mtf=zone_val[mm], best_focus=best,
        nodes_xy=np.asarray(nodes, np.float64), node_mtf50_cpp=node_val[m50], node_mean_mtf=node_val[mm],
        best_focus_map=bmap, image_size=(w, h), flags=flags,
    )
