"""The calibration report: one self-contained HTML file with plots of a PSF database.

What the numbers mean (the summary table and the embedded JSON use these definitions)
-------------------------------------------------------------------------------------
* **MTF from the PSF map**: the MTF of a node PSF along one frequency direction is
  :func:`calib._mtf_psf.psf_mtf` sampled at :data:`REPORT_FREQ_CPP` (0 to Nyquist,
  0.005 c/p steps). Sagittal = frequency across the radius from the optical centre
  (the frame centre), tangential = along it; at a node within 1 px of the centre the
  radius is taken along +x (tangential along x, sagittal along y).
* **MTF50**: the first frequency where the MTF drops below 0.5, linearly
  interpolated; when it never drops below 0.5 up to Nyquist it is "above Nyquist"
  (JSON ``null``, a node counted as +infinity in medians).
* **Zones** (:func:`calib._through_focus.zone_nodes`, the same for the table and through
  focus; normalised field height ``h`` = distance from the centre over the half-diagonal
  ``hypot(w - 1, h - 1) / 2``): *centre* = the node(s) nearest the centre; *corners* =
  the four corner nodes of the grid; *mid-field* = the remaining nodes whose ``h`` is
  nearest 0.5 (all within 0.02 of the nearest). A zone's MTF50 in the table is the
  median over its nodes, G channel (or the only channel).
* **Edge / stripe MTF50**: median of the MTF50 (:func:`calib._records.mtf50`, finite
  values only) over the G-channel curves of that method without flags: an edge record
  is one curve; stripe records (one grating frequency each, plus harmonics) of one
  field cell (3 x 5 cells) and orientation are joined into one curve first
  (:func:`calib._through_focus.measured_curves`). The count is the records used.
* **Lateral colour**: per node the PSF centroid of each channel in pixels; the R-B
  shift is ``|centroid_R - centroid_B|``; the table gives its maximum over nodes.
* **Flagged nodes**: nodes with any quality flag, summed over channels.
* **Through focus**: :func:`calib.through_focus` (method ``"psf"``, metric
  ``"mean_mtf"``) of every group of 3 or more calibrations sharing camera, lens, focal
  length and f-number; the focus axis is the focus-drive position (or, when positions
  are missing, the focus distance in diopters). Zone values are means over the zone's
  nodes of the mean over sagittal and tangential. Plotted: MTF50 (at or above Nyquist
  shown at 0.5 c/p) and the mean MTF from 0 to Nyquist, which does not saturate near
  focus; best focus is the peak of the mean MTF (Gaussian fit round the sharpest
  setting). Where the peak lies outside the swept range, the sharpest (end) setting
  is given instead, as a bound (``best_focus_is_bound``). Per node (G) this is the
  best-focus map; per channel at the centre it shows longitudinal colour.
* **PSF vs edge**: for every G/R/B edge record, the MTF of the map's PSF at the edge's
  position (``PSFMap.psf_at``) in the same channel along the edge's orientation, at
  the edge's frequencies up to Nyquist/2 (0.25 c/p); the figure is ``max |MTF_psf - MTF_edge|``.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from targets import atomic_write

from ._db import Calibration, PSFDatabase, describe_focus
from . import _records
from ._errors import CalibError
from ._mtf_psf import psf_mtf
from ._psfmap import psf_centroids
from . import _through_focus as _tf

#: Frequencies (cycles/pixel) at which the report samples PSF-derived MTFs.
REPORT_FREQ_CPP = np.round(np.linspace(0.0, 0.5, 101), 6)
#: Edge MTF compared with the PSF MTF up to this frequency (Nyquist/2), c/p.
AGREEMENT_MAX_CPP = 0.25
#: The project's goal for |PSF MTF - edge MTF| (issue 5).
AGREEMENT_GOAL = 0.03
#: Section ids in page order; the embedded JSON says which of them hold data.
SECTIONS = (
    "summary", "psf-montage", "mtf-curves", "mtf50-maps", "through-focus",
    "lateral-colour", "distortion", "psf-vs-edge", "restored", "truth",
)
#: Display names of the zones of :func:`calib._through_focus.zone_nodes`.
_ZONE_NAMES = {"centre": "centre", "mid": "mid-field", "corner": "corners"}


@dataclass(frozen=True, kw_only=True)
class RestoredExample:
    """A photo restored with the calibration, shown as before/after crops.

    Attributes
    ----------
    before, after : ndarray (H, W, 3) float32
        Linear 0..1 images: the photo as taken and as restored.
    truth : ndarray (H, W, 3) float32, optional
        The sharp original (simulated camera), when known.
    label : str
        What the photo is (shown as the caption).
    psnr_before_db, psnr_after_db : float
        PSNR against the truth, decibels (NaN when unknown).
    """

    before: np.ndarray
    after: np.ndarray
    truth: np.ndarray | None = None
    label: str = "restored photo"
    psnr_before_db: float = float("nan")
    psnr_after_db: float = float("nan")

    def __post_init__(self) -> None:
        arrays = {"before": self.before, "after": self.after}
        if self.truth is not None:
            arrays["truth"] = self.truth
        shape = None
        for name, a in arrays.items():
            a = np.asarray(a, dtype=np.float32)
            if a.ndim == 2:
                a = np.repeat(a[:, :, None], 3, axis=2)
            if a.ndim != 3 or a.shape[2] != 3:
                raise CalibError(f"restored example image {name!r} has shape {a.shape}; "
                                 "give an (H, W, 3) linear RGB image")
            if shape is not None and a.shape != shape:
                raise CalibError(f"restored example image {name!r} has shape {a.shape} but "
                                 f"'before' has {shape}; give images of one size")
            shape = a.shape
            object.__setattr__(self, name, a)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    path : Path
        The HTML file.
    rows : tuple of dict
        One summary row per calibration, exactly as embedded in the report's JSON
        (``<script id="lenspsf-summary">``).
    summary : dict
        The whole embedded JSON document (rows, through-focus, sections with data).
    """

    path: Path
    rows: tuple[dict[str, Any], ...]
    summary: dict[str, Any] = field(default_factory=dict)


# -- numbers --------------------------------------------------------------------------------


def _median_inf(values: Sequence[float]) -> float | None:
    """Median where NaN means "above Nyquist" (+inf); None when the median is above it."""
    if len(values) == 0:
        return None
    v = np.where(np.isfinite(values), values, np.inf)
    m = float(np.median(v))
    return m if math.isfinite(m) else None


def _clean(v: Any) -> Any:
    """JSON-ready: numpy scalars to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


@dataclass
class _Analysis:
    """Per-calibration numbers shared by the table, the JSON and the figures."""

    cal: Calibration
    centre_xy: tuple[float, float]
    height: np.ndarray  # (ny, nx) normalised field height
    zones: dict[str, tuple[tuple[int, int], ...]]  # zone_nodes() of the PSF grid
    orient: np.ndarray  # (ny, nx, 2): sagittal, tangential frequency directions, degrees
    curves: np.ndarray  # (C, ny, nx, 2, F) PSF MTF, sagittal/tangential
    mtf50: np.ndarray  # (C, ny, nx, 2)
    centroid_px: np.ndarray  # (C, ny, nx, 2)
    ref: int  # index of the reference channel (G or the only one)
    edge_rows: list[dict[str, Any]]
    row: dict[str, Any] = field(default_factory=dict)


def _analyse(cal: Calibration) -> _Analysis:
    pm = cal.psf_map
    w, h = pm.image_size
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    dx = pm.nodes_xy[..., 0] - centre[0]
    dy = pm.nodes_xy[..., 1] - centre[1]
    r = np.hypot(dx, dy)
    radial = np.where(r < 1.0, 0.0, np.degrees(np.arctan2(dy, dx)))
    orient = np.stack([radial + 90.0, radial], axis=-1)
    c, ny, nx = pm.psf.shape[:3]
    curves = np.empty((c, ny, nx, 2, len(REPORT_FREQ_CPP)))
    mtf50 = np.empty((c, ny, nx, 2))
    for ci in range(c):
        for i in range(ny):
            for j in range(nx):
                for d in range(2):
                    _, m = psf_mtf(pm.psf[ci, i, j], float(orient[i, j, d]), sampling=pm.sampling,
                                   freq_cpp=REPORT_FREQ_CPP)
                    curves[ci, i, j, d] = m
                    mtf50[ci, i, j, d] = _records.mtf50(REPORT_FREQ_CPP, m)
    ref = pm.channels.index("G") if "G" in pm.channels else 0
    height = _tf.field_height(pm.nodes_xy, pm.image_size)
    a = _Analysis(cal=cal, centre_xy=centre, height=height, zones=_tf.zone_nodes(pm.nodes_xy, pm.image_size),
                  orient=orient,
                  curves=curves, mtf50=mtf50, centroid_px=psf_centroids(pm.psf, pm.sampling), ref=ref,
                  edge_rows=_edge_agreement(cal, height))
    a.row = _summary_row(a)
    return a


def _edge_agreement(cal: Calibration, height: np.ndarray) -> list[dict[str, Any]]:
    pm = cal.psf_map
    nodes = pm.nodes_xy.reshape(-1, 2)
    out = []
    for rec in cal.mtf:
        if rec.method != "edge" or rec.channel not in pm.channels:
            continue
        f = np.asarray(rec.freq_cpp, float)
        sel = f <= AGREEMENT_MAX_CPP + 1e-9
        if sel.sum() < 2:
            continue
        n = int(np.argmin(np.hypot(nodes[:, 0] - rec.x_px, nodes[:, 1] - rec.y_px)))
        i, j = divmod(n, pm.grid_shape[1])
        # The PSF at the edge itself: a node up to half a cell away can differ by more than
        # the agreement being checked.
        _, m = psf_mtf(pm.psf_at(rec.x_px, rec.y_px, rec.channel), rec.orientation_deg,
                       sampling=pm.sampling, freq_cpp=f[sel])
        out.append({
            "channel": rec.channel, "x_px": rec.x_px, "y_px": rec.y_px, "node": (i, j),
            "field_height": float(height[i, j]),
            "max_abs_diff": float(np.max(np.abs(m - np.asarray(rec.mtf, float)[sel]))),
            "flags": list(rec.flags),
        })
    return out


def _measured_mtf50(cal: Calibration, method: str, channel: str) -> tuple[float | None, int]:
    """Median MTF50 over the unflagged curves of one method and channel (finite values only)
    and how many records those curves hold. A stripe patch is one frequency, so the patches
    of one field cell and orientation are joined into a curve first (``measured_curves``)."""
    vals, n = [], 0
    for c in _tf.measured_curves(cal.mtf, method, image_size=cal.psf_map.image_size):
        v = _records.mtf50(c.freq_cpp, c.mtf)
        if c.channel == channel and math.isfinite(v):
            vals.append(v)
            n += c.n_records
    return (float(statistics.median(vals)) if vals else None), n


def _distortion(metadata: dict[str, Any]) -> dict[str, Any] | None:
    d = metadata.get("distortion")
    return d if isinstance(d, dict) and d else None


def _summary_row(a: _Analysis) -> dict[str, Any]:
    cal, pm = a.cal, a.cal.psf_map
    ref_name = pm.channels[a.ref]
    zones = {}
    for zone, nodes in a.zones.items():
        zones[zone] = {
            direction: _median_inf([a.mtf50[a.ref, i, j, d] for i, j in nodes]) if nodes else None
            for d, direction in enumerate(("sagittal", "tangential"))
        }
    edge, n_edge = _measured_mtf50(cal, "edge", ref_name)
    stripes, n_stripes = _measured_mtf50(cal, "stripes", ref_name)
    if "R" in pm.channels and "B" in pm.channels:
        d = a.centroid_px[pm.channels.index("R")] - a.centroid_px[pm.channels.index("B")]
        lat = float(np.hypot(d[..., 0], d[..., 1]).max())
    else:
        lat = None
    noise = None
    if cal.noise is not None:
        noise = {"channels": list(cal.noise.channels),
                 "read_noise": [float(v) for v in cal.noise.read_noise],
                 "gain": [float(v) for v in cal.noise.gain]}
    agreement = None
    if a.edge_rows:
        diffs = [e["max_abs_diff"] for e in a.edge_rows]
        agreement = {"n_edges": len(diffs), "median": float(np.median(diffs)),
                     "max": float(np.max(diffs)),
                     "within_goal": int(sum(v <= AGREEMENT_GOAL for v in diffs))}
    dist = cal.key.focus_distance_m
    return _clean({
        "id": cal.id, "label": cal.label, "camera": cal.key.camera, "lens": cal.key.lens,
        "focal_length_mm": cal.key.focal_length_mm, "f_number": cal.key.f_number,
        "focus_position": cal.key.focus_position,
        "focus_distance_m": ("infinity" if dist is not None and math.isinf(dist) else dist),
        "channels": list(pm.channels), "reference_channel": ref_name,
        "image_size": list(pm.image_size), "grid": list(pm.grid_shape),
        "kernel_size": pm.kernel_size, "sampling": pm.sampling,
        "pixel_pitch_um": cal.pixel_pitch_um,
        "mtf50_psf_cpp": zones,
        "mtf50_edge_median_cpp": edge, "n_edge_records": n_edge,
        "mtf50_stripes_median_cpp": stripes, "n_stripes_records": n_stripes,
        "lateral_colour_max_rb_px": lat,
        "flagged_nodes": int(np.count_nonzero(pm.flags)),
        "noise": noise,
        "distortion": _distortion(cal.metadata),
        "psf_vs_edge": agreement,
    })


# -- through focus ------------------------------------------------------------------------------


def _series(analyses: list[_Analysis]) -> list[tuple[dict[str, Any], _tf.ThroughFocus]]:
    """Through focus of every lens setting with at least 3 focus settings: its JSON entry and
    the :func:`calib.through_focus` result it is made of (PSF maps, mean-MTF peak)."""
    groups: dict[tuple, list[_Analysis]] = {}
    for a in analyses:
        k = a.cal.key
        groups.setdefault((k.camera, k.lens, k.focal_length_mm, k.f_number), []).append(a)
    out = []
    for (camera, lens, focal, fnum), members in groups.items():
        if len(members) < 3:
            continue
        try:
            tf = _tf.through_focus([m.cal for m in members], method="psf", metric="mean_mtf")
        except CalibError:  # no focus axis, or settings repeated: nothing to plot
            continue
        ref = "G" if "G" in tf.channels else tf.channels[0]
        r, c0 = tf.channels.index(ref), tf.zones.index("centre")
        order = sorted(members, key=lambda m: _tf._axis_value(m.cal.key, tf.focus_axis))
        best = _bounded(tf.best_focus, tf.sharpness, tf.positions)  # (Z, C)
        entry = _clean({
            "camera": camera, "lens": lens, "focal_length_mm": focal, "f_number": fnum,
            "focus_axis": tf.focus_axis, "focus_axis_label": tf.focus_axis_label,
            "focus": tf.positions, "calibration_ids": [m.cal.id for m in order],
            "metric": tf.metric, "reference_channel": ref,
            "zone_nodes": {z: [list(n) for n in tf.zone_nodes[z]] for z in tf.zones},
            "mtf50_capped_cpp": {z: np.minimum(tf.mtf50_of(z, ref), _tf.NYQUIST_CPP) for z in tf.zones},
            "mean_mtf": {z: tf.mean_mtf[k, r] for k, z in enumerate(tf.zones)},
            "best_focus": {z: best[k, r] for k, z in enumerate(tf.zones)},
            "best_focus_is_bound": {z: not math.isfinite(tf.best_focus[k, r]) for k, z in enumerate(tf.zones)},
            "best_focus_map": _bounded(tf.best_focus_map[r], tf.node_sharpness[r], tf.positions),
            "centre_mtf50_capped_by_channel_cpp": {ch: np.minimum(tf.mtf50_of("centre", ch), _tf.NYQUIST_CPP)
                                                   for ch in tf.channels},
            "best_focus_centre_by_channel": {ch: best[c0, c] for c, ch in enumerate(tf.channels)},
            "flags": {f"{z}/{ch}": list(fl) for (z, ch), fl in tf.flags.items()},
        })
        out.append((entry, tf))
    return out


# -- HTML -------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1d2430; --muted:#5b6678; --line:#dfe3ea; --bg:#f6f7f9; --card:#fff; --accent:#2457c5; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#1d2430; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header p { margin:0; color:#c9d1de; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 32px; display:flex; flex-wrap:wrap; gap:4px 16px; font-size:13px; }
nav a { color:var(--accent); text-decoration:none; }
nav a.empty { color:#9aa3b2; }
main { max-width:1320px; margin:0 auto; padding:18px 24px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:16px 20px 18px; margin:0 0 18px; }
h2 { margin:0 0 4px; font-size:18px; font-weight:600; }
h3 { margin:14px 0 6px; font-size:14px; font-weight:600; color:var(--muted); }
p.what { margin:0 0 12px; color:var(--muted); }
p.missing { margin:6px 0 0; padding:8px 12px; background:#fff8e6; border-left:3px solid #f0b429;
            color:#6b5200; }
figure { margin:8px 0 12px; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:12px; margin-top:2px; }
table { border-collapse:collapse; font-size:12.5px; width:100%; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#f0f2f6; font-weight:600; color:#344054; vertical-align:bottom; }
td.l, th.l { text-align:left; }
tbody tr:hover { background:#f7f9fc; }
.scroll { overflow-x:auto; }
.kv { width:auto; min-width:420px; }
.crops { display:grid; gap:10px; max-width:1100px; }
.crops figure { margin:0; }
.crops img { width:100%; image-rendering:pixelated; border:1px solid var(--line); }
.note { font-size:12px; color:var(--muted); }
.good { color:#1a7f37; } .bad { color:#b42318; }
footer { text-align:center; color:var(--muted); font-size:12px; padding:0 0 24px; }
"""


def _img(png: bytes, alt: str, caption: str | None = None, *, heading: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    head = f"<h3>{html.escape(heading)}</h3>" if heading else ""
    return f'{head}<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _fmt(v: Any, digits: int = 3, *, none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return none
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e5:
            return f"{v:.{digits}g}"
        if abs(v) >= 1:
            return f"{v:.2f}".rstrip("0").rstrip(".")
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _focus_text(row: dict[str, Any]) -> str:
    d = row["focus_distance_m"]
    return describe_focus(row["focus_position"], math.inf if d == "infinity" else d)


def _summary_table(rows: list[dict[str, Any]]) -> str:
    nyq = "&gt;Nyq"
    head = (
        "<tr><th class=l rowspan=2>ID</th><th class=l rowspan=2>Focus</th>"
        "<th rowspan=2>Grid<br>(ny×nx)</th><th rowspan=2>Kernel<br>(px)</th>"
        "<th colspan=2>MTF50 centre<br>(c/p)</th><th colspan=2>MTF50 mid-field<br>(c/p)</th>"
        "<th colspan=2>MTF50 corners<br>(c/p)</th><th rowspan=2>Edge MTF50<br>median (c/p)</th>"
        "<th rowspan=2>Stripes MTF50<br>median (c/p)</th><th rowspan=2>Max R–B<br>shift (px)</th>"
        "<th rowspan=2>Flagged<br>nodes</th><th class=l rowspan=2>Noise (G)<br>read σ, gain</th></tr>"
        "<tr>" + "<th>sag</th><th>tan</th>" * 3 + "</tr>"
    )
    body = []
    for r in rows:
        cells = [f"<td class=l>{r['id']}</td>", f"<td class=l>{html.escape(_focus_text(r))}</td>",
                 f"<td>{r['grid'][0]}×{r['grid'][1]}</td>",
                 f"<td>{r['kernel_size']}{'' if r['sampling'] == 1 else ' /' + str(r['sampling'])}</td>"]
        for key in ("centre", "mid", "corner"):
            for d in ("sagittal", "tangential"):
                cells.append(f"<td>{_fmt(r['mtf50_psf_cpp'][key][d], 3, none=nyq)}</td>")
        for key, n in (("mtf50_edge_median_cpp", "n_edge_records"),
                       ("mtf50_stripes_median_cpp", "n_stripes_records")):
            cells.append(f"<td>{_fmt(r[key], 3)}" + (f" <span class=note>({r[n]})</span>" if r[n] else "")
                         + "</td>")
        cells.append(f"<td>{_fmt(r['lateral_colour_max_rb_px'], 2)}</td>")
        cells.append(f"<td>{r['flagged_nodes']}</td>")
        noise = r["noise"]
        if noise:
            ref = r["reference_channel"]
            c = noise["channels"].index(ref) if ref in noise["channels"] else 0
            cells.append(f"<td class=l>{noise['read_noise'][c]:.2e}, {noise['gain'][c]:.2e}</td>")
        else:
            cells.append("<td class=l>not measured</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><td class=l>{html.escape(k)}</td><td>{_fmt(v, 4)}</td></tr>"
                   for k, v in items)
    return ('<table class="kv"><thead><tr><th class=l>Quantity</th><th>Value</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, f"{name} / ")
        elif isinstance(v, (list, tuple)) and len(v) <= 6 and all(isinstance(x, (int, float)) for x in v):
            out.append((name, ", ".join(_fmt(x, 4) for x in v)))
        else:
            out.append((name, v))
    return out


def _to_srgb_u8(img: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(img, np.float64), 0.0, 1.0)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(s * 255).astype(np.uint8)


def _crop_montage(pl, ex: RestoredExample) -> str:
    h, w = ex.before.shape[:2]
    side = max(16, min(320, min(h, w) // 3))
    spots = {"centre": ((h - side) // 2, (w - side) // 2), "top-left corner": (0, 0),
             "bottom-right corner": (h - side, w - side)}
    variants = [(n, img) for n, img in (("before", ex.before), ("after", ex.after),
                                        ("truth", ex.truth)) if img is not None]
    cells = []
    for where, (y0, x0) in spots.items():
        for name, img in variants:
            png = pl.png_from_rgb(_to_srgb_u8(img[y0:y0 + side, x0:x0 + side]))
            cells.append(_img(png, f"{where} {name}", f"{where}, {name}"))
    psnr = ""
    if math.isfinite(ex.psnr_before_db) or math.isfinite(ex.psnr_after_db):
        gain = ex.psnr_after_db - ex.psnr_before_db
        cls = "good" if gain > 0 else "bad"
        psnr = (f"<p>PSNR against the truth: before <b>{ex.psnr_before_db:.2f} dB</b>, after "
                f"<b>{ex.psnr_after_db:.2f} dB</b> (<span class={cls}>{gain:+.2f} dB</span>).</p>")
    return (f"<h3>{html.escape(ex.label)}</h3>{psnr}"
            f'<div class="crops" style="grid-template-columns:repeat({len(variants)}, 1fr)">'
            f"{''.join(cells)}</div><p class=note>{side}×{side} px crops of a {w}×{h} px image, "
            "shown with the sRGB transfer curve.</p>")


def _display_crop(psf: np.ndarray) -> np.ndarray:
    """Crop the kernels to the central square that holds every visible sample."""
    k = psf.shape[-1]
    peak = psf.max(axis=(-1, -2), keepdims=True)
    visible = (psf > 0.004 * np.where(peak > 0, peak, 1)).any(axis=(0, 1, 2))
    ys, xs = np.nonzero(visible)
    if len(ys) == 0:
        return psf
    half = int(max(np.abs(ys - k // 2).max(), np.abs(xs - k // 2).max())) + 1
    half = min(max(half, 3), k // 2)
    c = k // 2
    return psf[..., c - half:c + half + 1, c - half:c + half + 1]


def _crop_text(shown: int, k: int) -> str:
    return f"full {k}×{k}-sample kernels" if shown >= k else f"central {shown}×{shown} of {k}×{k} samples"


def _section(sid: str, title: str, what: str, body: str) -> str:
    return (f'<section id="{sid}"><h2>{html.escape(title)}</h2><p class="what">{html.escape(what)}</p>'
            f"{body}</section>")


# -- the entry point ----------------------------------------------------------------------------------


def write_report(db_path: str | os.PathLike, out_html: str | os.PathLike, *,
                 truth: dict[str, Any] | None = None, restored: RestoredExample | None = None,
                 progress: Callable[[str], None] | None = None) -> ReportResult:
    """Write the HTML calibration report of a PSF database.

    Parameters
    ----------
    db_path : path-like
        The PSF database (``.psfdb``).
    out_html : path-like
        The report to write (one self-contained file; written atomically).
    truth : dict, optional
        Ground-truth comparisons to show (the simulated camera's demo passes e.g.
        ``{"PSF error vs truth, median (relative L2)": 0.031}``); nested dicts are
        flattened into "a / b" rows.
    restored : RestoredExample, optional
        A restored photo, shown as before/after crops (centre and corners).
    progress : callable, optional
        Called with one line of text per step.

    Returns
    -------
    ReportResult
        The path and the summary rows (also embedded in the report as JSON in
        ``<script type="application/json" id="lenspsf-summary">``).

    Raises
    ------
    CalibError
        Missing or invalid database, an empty database, a missing output folder, or
        matplotlib not installed.

    Examples
    --------
    >>> res = write_report("lens.psfdb", "report.html")  # doctest: +SKIP
    >>> res.rows[0]["mtf50_psf_cpp"]["corner"]["sagittal"]  # doctest: +SKIP
    0.21
    """
    say = progress or (lambda _msg: None)
    out = Path(out_html)
    if out.is_dir():
        raise CalibError(f"report output {out} is a folder; give a file name such as {out / 'report.html'}")
    if not out.parent.is_dir():
        raise CalibError(f"folder {out.parent} for the report {out.name} does not exist; create it first")
    db_path = Path(db_path)
    with PSFDatabase.open(db_path) as db:
        summaries = db.summaries()
        if not summaries:
            raise CalibError(f"{db_path} holds no calibrations; add some with `lenspsf analyze` "
                             "or `lenspsf db import`, then make the report")
        from . import _report_plots as pl  # matplotlib only now, and a clear error without it

        analyses = []
        for n, s in enumerate(summaries, 1):
            say(f"report: analysing calibration {s.id} ({n}/{len(summaries)}): {s.label}")
            analyses.append(_analyse(db.get(s.id)))
    series = _series(analyses)
    rows = [a.row for a in analyses]
    has: dict[str, bool] = {}
    parts: list[str] = []

    # Summary
    has["summary"] = True
    parts.append(_section(
        "summary", "Summary",
        "One row per calibration. MTF50 from the PSF map, G channel, median over the zone's "
        "nodes (sag = sagittal, tan = tangential; >Nyq: above Nyquist); edge and stripe "
        "medians from G-channel measurements (count in brackets).",
        _summary_table(rows) + _unmeasured_hint(analyses, "to fill its MTF50 column")))

    # PSF montage
    say("report: PSF montages")
    body = []
    for a in analyses:
        pm = a.cal.psf_map
        crop = _display_crop(pm.psf)
        body.append(_img(pl.psf_montage(crop, pm.channels, pm.node_x, pm.node_y, pm.flags, title=""),
                         f"PSF montage {a.cal.id}",
                         heading=f"#{a.cal.id}, focus {_focus_text(a.row)} "
                                 f"({_crop_text(crop.shape[-1], pm.kernel_size)})"))
    has["psf-montage"] = True
    parts.append(_section(
        "psf-montage", "PSF across the field",
        f"Each tile is the PSF at one grid node, scaled to its own peak and shown with "
        f"display gamma {pl.DISPLAY_GAMMA} (value^(1/{pl.DISPLAY_GAMMA})) so faint halos show. The RGB "
        "composite overlays the channels: colour fringes are lateral colour. Dashed orange frames "
        "mark flagged nodes.", "".join(body)))

    # MTF curves
    say("report: MTF curves")
    body = []
    for a in analyses:
        zc = _zone_curves(a, pl)
        body.append(_img(pl.mtf_curves(zc, pixel_pitch_um=a.cal.pixel_pitch_um, title=""),
                         f"MTF curves {a.cal.id}",
                         heading=f"#{a.cal.id}, focus {_focus_text(a.row)} ({_overlay_text(zc)})"))
    has["mtf-curves"] = True
    parts.append(_section(
        "mtf-curves", "MTF at centre, mid-field and corners",
        "MTF of the PSF map (median over the zone's nodes), sagittal solid, tangential dashed, "
        "per channel; slanted-edge (circles) and stripe (squares) measurements whose nearest "
        "node lies in the zone are overlaid.",
        "".join(body) + _unmeasured_hint(analyses, "to overlay them on the PSF curves")))

    # MTF50 maps
    say("report: MTF50 field maps")
    finite = np.concatenate([a.mtf50[a.ref].ravel() for a in analyses])
    finite = finite[np.isfinite(finite)]
    vmin = float(finite.min()) if len(finite) else 0.0
    vmax = float(finite.max()) if len(finite) else 0.5
    if vmax - vmin < 0.02:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    body = []
    for a in analyses:
        pm = a.cal.psf_map
        maps = [("sagittal", a.mtf50[a.ref, ..., 0]), ("tangential", a.mtf50[a.ref, ..., 1])]
        body.append(_img(pl.field_maps(pm.node_x, pm.node_y, maps, vmin=vmin, vmax=vmax,
                                       unit="MTF50 (cycles/pixel)", title=""),
                         f"MTF50 maps {a.cal.id}",
                         heading=f"#{a.cal.id}, focus {_focus_text(a.row)}, channel {pm.channels[a.ref]}"))
    has["mtf50-maps"] = True
    parts.append(_section("mtf50-maps", "MTF50 across the field",
                          "MTF50 of each node's PSF (cycles/pixel), one cell per grid node, one colour "
                          "scale for all focus settings.", "".join(body)))

    # Through focus
    say("report: through focus")
    body = []
    for s, tf in series:
        body.append(_through_focus_html(s, tf, pl))
    has["through-focus"] = bool(series)
    parts.append(_section(
        "through-focus", "Through focus",
        "MTF50 and the mean MTF from 0 to Nyquist against focus, per zone and per channel, from "
        "the PSF maps (mean of sagittal and tangential). Best focus (dotted) is the peak of the "
        "mean MTF, which keeps rising near focus where MTF50 reaches Nyquist: a Gaussian fitted "
        "round the sharpest focus setting. A peak outside the swept range is shown as a bound "
        "(≤ or ≥ the end setting).",
        "".join(body) if series else _missing(
            "Fewer than 3 focus settings per lens: capture at 3 or more focus settings "
            "(`lenspsf capture --focus ...`) and analyse them to see through-focus MTF and best focus.")))

    # Lateral colour
    say("report: lateral colour")
    body = []
    for a in _one_per_series(analyses):
        pm = a.cal.psf_map
        if not ("R" in pm.channels and "B" in pm.channels):
            continue
        g = a.centroid_px[a.ref]
        offsets = {ch: a.centroid_px[pm.channels.index(ch)] - g for ch in ("R", "B")}
        body.append(_img(pl.lateral_colour(pm.node_x, pm.node_y, offsets, image_size=pm.image_size,
                                           title=""),
                         "lateral colour map",
                         heading=f"#{a.cal.id}, focus {_focus_text(a.row)}: R and B PSF centroids "
                                 "relative to G"))
    has["lateral-colour"] = bool(body)
    parts.append(_section(
        "lateral-colour", "Lateral colour",
        "Shift of the R and B PSF centroids from G at each node (pixels), for the sharpest "
        "focus setting of each lens; arrows magnified, the key arrow gives the scale.",
        "".join(body) if body else _missing("The PSF maps have no R and B channels: analyse "
                                            "colour (RGB) captures to measure lateral colour.")))

    # Distortion
    say("report: distortion")
    body = _distortion_html(analyses, pl)
    has["distortion"] = bool(body)
    parts.append(_section(
        "distortion", "Distortion",
        "Radial distortion r_d = r (1 + k1 ρ² + k2 ρ⁴) fitted to the chart's dots and markers "
        "during analysis (negative: barrel), with the fit's residuals.",
        body or _missing("Distortion not measured: analyse a chart capture with fiducials "
                         "(`lenspsf analyze`) to fit it.")))

    # PSF vs edge
    say("report: PSF vs edge MTF")
    body = []
    for a in analyses:
        if not a.edge_rows:
            continue
        e = a.edge_rows
        body.append(_img(pl.edge_agreement(np.array([x["field_height"] for x in e]),
                                           np.array([x["max_abs_diff"] for x in e]),
                                           [x["channel"] for x in e], tolerance=AGREEMENT_GOAL,
                                           title=""),
                         f"PSF vs edge {a.cal.id}",
                         heading=f"#{a.cal.id}, focus {_focus_text(a.row)}: {len(e)} edge "
                                 f"measurements, median {a.row['psf_vs_edge']['median']:.3f}, "
                                 f"max {a.row['psf_vs_edge']['max']:.3f}"))
    has["psf-vs-edge"] = bool(body)
    parts.append(_section(
        "psf-vs-edge", "PSF map vs slanted-edge MTF",
        f"Two independent measurements of the same lens: for each edge, the largest difference "
        f"between its MTF and the MTF of the map's PSF at the edge (interpolated between "
        f"nodes) along the edge normal, up to Nyquist/2 ({AGREEMENT_MAX_CPP} c/p). Goal: below {AGREEMENT_GOAL}.",
        "".join(body) if body else _missing(
            "No slanted-edge measurements: shoot the edges chart and run `lenspsf analyze` "
            "to cross-check the PSFs.")))

    # Restored photo
    has["restored"] = restored is not None
    if restored is not None:
        say("report: restored crops")
    parts.append(_section(
        "restored", "Restored photo",
        "Crops of a photo before and after restoration with this PSF map.",
        _crop_montage(pl, restored) if restored is not None else _missing(
            "No restored photo given: run `lenspsf restore` on a photo and pass it to the report "
            "(the demo does) to see before/after crops.")))

    # Ground truth
    has["truth"] = bool(truth)
    parts.append(_section(
        "truth", "Ground truth (simulated camera)",
        "How the measurement compares with the simulated camera's known truth.",
        _kv_table(_flatten(truth)) if truth else _missing(
            "No ground truth: only the simulated camera (`lenspsf demo`) knows its true PSFs.")))

    summary = _clean({
        "format": "lenspsf-report-summary", "version": 1, "database": str(db_path),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mtf_freq_cpp": {"start": 0.0, "stop": 0.5, "step": 0.005},
        "sections": has, "calibrations": rows, "through_focus": [entry for entry, _ in series],
        "truth": truth or None,
        "restored": None if restored is None else {
            "label": restored.label, "psnr_before_db": restored.psnr_before_db,
            "psnr_after_db": restored.psnr_after_db},
    })
    page = _page(db_path, analyses, has, parts, summary)
    say(f"report: writing {out}")
    with atomic_write(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return ReportResult(path=out, rows=tuple(rows), summary=summary)


def _bound_labels(values: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Cell texts of a best-focus map; a peak at an end of the range is only a bound."""
    lo, hi = float(z.min()), float(z.max())
    return np.vectorize(lambda v: f"≤{v:.0f}" if v <= lo else f"≥{v:.0f}" if v >= hi
                        else f"{v:.1f}", otypes=[object])(values)


def _bounded(best: np.ndarray, sharpness: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Best focus where a peak was found, else the sharpest focus setting (an end of the
    range, so only a bound); NaN where nothing was measured."""
    have = np.isfinite(sharpness).any(axis=-1)
    arg = np.argmax(np.where(np.isfinite(sharpness), sharpness, -np.inf), axis=-1)
    return np.where(np.isfinite(best), best, np.where(have, positions[arg], np.nan))


def _through_focus_html(s: dict[str, Any], tf: _tf.ThroughFocus, pl) -> str:
    z = tf.positions
    title = f"{s['camera']} + {s['lens']}"
    ref = s["reference_channel"]
    r = tf.channels.index(ref)
    zones = [zn for zn in tf.zones if tf.zone_nodes[zn]]
    best = s["best_focus"]
    panels = [
        pl.FocusPanel(f"MTF50 per zone, {ref}", "MTF50 (cycles/pixel; ≥ Nyquist at 0.5)",
                      {_ZONE_NAMES[zn]: np.minimum(tf.mtf50_of(zn, ref), _tf.NYQUIST_CPP) for zn in zones}),
        pl.FocusPanel(f"mean MTF per zone, {ref}", "mean MTF, 0 to Nyquist",
                      {_ZONE_NAMES[zn]: tf.mean_mtf[tf.zones.index(zn), r] for zn in zones},
                      {_ZONE_NAMES[zn]: best[zn] for zn in zones}),
        pl.FocusPanel("mean MTF at the centre, per channel", "mean MTF, 0 to Nyquist",
                      {ch: tf.mean_mtf[tf.zones.index("centre"), c] for c, ch in enumerate(tf.channels)},
                      s["best_focus_centre_by_channel"]),
    ]
    out = [_img(pl.through_focus(z, tf.focus_axis_label, panels, title=""), "through-focus MTF",
                heading=f"{title}: MTF through focus")]
    bmap = np.asarray(s["best_focus_map"], float)
    nodes = tf.nodes_xy
    out.append(_img(pl.field_maps(nodes[0, :, 0], nodes[:, 0, 1], [("best focus per node", bmap)],
                                  vmin=float(z.min()), vmax=float(z.max()), unit=tf.focus_axis_label,
                                  title="", cmap="coolwarm", labels=[_bound_labels(bmap, z)]),
                    "best-focus map", heading=f"{title}: best-focus map (field curvature), channel {ref}"))
    bc = s["best_focus_centre_by_channel"]
    items = [(f"best focus, {_ZONE_NAMES[zn]}, {ref}", best[zn]) for zn in zones]
    items += [(f"best focus at the centre, {ch}", v) for ch, v in bc.items()]
    if "R" in bc and "B" in bc and bc["R"] is not None and bc["B"] is not None:
        items.append(("longitudinal colour, B − R", bc["B"] - bc["R"]))
    items.append(("focus unit", tf.focus_axis_label))
    out.append(_kv_table(items))
    return "".join(out)


def _one_per_series(analyses: list[_Analysis]) -> list[_Analysis]:
    """The sharpest calibration (highest centre MTF50 of the reference channel) per lens setting."""
    best: dict[tuple, _Analysis] = {}
    for a in analyses:
        k = a.cal.key
        g = (k.camera, k.lens, k.focal_length_mm, k.f_number)
        score = float(np.nan_to_num(a.mtf50[a.ref], nan=0.5).mean())
        if g not in best or score > float(np.nan_to_num(best[g].mtf50[best[g].ref], nan=0.5).mean()):
            best[g] = a
    return list(best.values())


def _zone_curves(a: _Analysis, pl) -> list:
    pm = a.cal.psf_map
    nodes_flat = pm.nodes_xy.reshape(-1, 2)
    zone_of = {n: zone for zone, nodes in a.zones.items() for n in nodes}
    measured: dict[str, list] = {z: [] for z in a.zones}
    for rec in a.cal.mtf:
        if rec.method not in ("edge", "stripes") or rec.flags:
            continue
        n = int(np.argmin(np.hypot(nodes_flat[:, 0] - rec.x_px, nodes_flat[:, 1] - rec.y_px)))
        zone = zone_of.get(divmod(n, pm.grid_shape[1]))
        if zone is not None:
            measured[zone].append((rec.channel, rec.method, np.asarray(rec.freq_cpp, float),
                                   np.asarray(rec.mtf, float)))
    out = []
    for zone, nodes in a.zones.items():
        if not nodes:
            continue
        zc = pl.ZoneCurves(name=f"{_ZONE_NAMES[zone]} (h = {np.mean([a.height[n] for n in nodes]):.2f}, "
                                f"{len(nodes)} node{'s' if len(nodes) > 1 else ''})",
                           measured=measured[zone])
        for ci, ch in enumerate(pm.channels):
            for d, direction in enumerate(("sagittal", "tangential")):
                m = np.median([a.curves[ci, i, j, d] for i, j in nodes], axis=0)
                zc.psf_curves.append((ch, direction, REPORT_FREQ_CPP, m))
        out.append(zc)
    return out


_HOW_TO_MEASURE = {
    "edge": ("slanted-edge", "the edges (or combo) chart"),
    "stripes": ("stripe", "the stripes (or combo) chart"),
}


def _unmeasured_hint(analyses: list[_Analysis], purpose: str) -> str:
    """A 'missing' note per MTF method no calibration has records of, saying how to measure it."""
    present = {r.method for a in analyses for r in a.cal.mtf}
    return "".join(
        _missing(f"No {what} MTF measured: shoot {chart} at each focus setting and run "
                 f"`lenspsf analyze` {purpose}.")
        for method, (what, chart) in _HOW_TO_MEASURE.items() if method not in present)


def _overlay_text(zone_curves: list) -> str:
    """What the MTF-curve panels overlay: counts of measured records per method."""
    counts = {"edge": 0, "stripes": 0}
    for zc in zone_curves:
        for _, method, *_ in zc.measured:
            counts[method] += 1
    said = [f"{n} {'slanted-edge' if m == 'edge' else 'stripe'} record{'s' if n != 1 else ''}"
            for m, n in counts.items() if n]
    return "overlaid: " + " and ".join(said) if said else "no edge or stripe records near the zones"


def _distortion_html(analyses: list[_Analysis], pl) -> str:
    body = []
    for a in _one_per_series(analyses):
        d = _distortion(a.cal.metadata)
        if d is None:
            continue
        w, h = a.cal.psf_map.image_size
        k1, k2 = d.get("k1"), d.get("k2", 0.0)
        if isinstance(k1, (int, float)) and isinstance(k2, (int, float)):
            cx, cy = d.get("centre_xy_px", d.get("centre_xy", ((w - 1) / 2.0, (h - 1) / 2.0)))
            norm = float(d.get("norm_radius_px", math.hypot(w, h) / 2.0))
            rho = np.linspace(0, 1, 101)
            pct = 100.0 * (k1 * rho**2 + k2 * rho**4)
            worst = float(np.max(np.abs(k1 * rho**2 + k2 * rho**4) * rho * norm)) or 1e-9
            mag = pl._nice_below(0.04 * min(w, h) / worst)

            def warp(xy: np.ndarray) -> np.ndarray:
                dx, dy = xy[:, 0] - cx, xy[:, 1] - cy
                r2 = (dx**2 + dy**2) / norm**2
                s = (k1 * r2 + k2 * r2**2) * mag
                return np.stack([xy[:, 0] + dx * s, xy[:, 1] + dy * s], axis=1)

            lines, ideal = [], []
            t = np.linspace(0, 1, 60)
            for gx in np.linspace(0, w - 1, 9):
                ideal.append(np.stack([np.full_like(t, gx), t * (h - 1)], 1))
            for gy in np.linspace(0, h - 1, 7):
                ideal.append(np.stack([t * (w - 1), np.full_like(t, gy)], 1))
            lines = [warp(line) for line in ideal]
            body.append(_img(pl.distortion(rho, pct, lines, ideal, image_size=(w, h),
                                           magnification=mag, title=""),
                             "distortion",
                             heading=f"#{a.cal.id}: r_d = r (1 + k1 ρ² + k2 ρ⁴), k1 = {k1:.4g}, "
                                     f"k2 = {k2:.4g} (ρ = r / {norm:.0f} px)"))
        # The chart homography is registration detail, not a lens property.
        body.append(_kv_table(_flatten({k: v for k, v in d.items() if k != "homography"})))
    return "".join(body)


def _page(db_path: Path, analyses: list[_Analysis], has: dict[str, bool], parts: list[str],
          summary: dict[str, Any]) -> str:
    titles = {"summary": "Summary", "psf-montage": "PSF montage", "mtf-curves": "MTF curves",
              "mtf50-maps": "MTF50 maps", "through-focus": "Through focus",
              "lateral-colour": "Lateral colour", "distortion": "Distortion",
              "psf-vs-edge": "PSF vs edge", "restored": "Restored photo", "truth": "Ground truth"}
    nav = "".join(f'<a href="#{s}"{"" if has.get(s) else " class=empty"}>{titles[s]}</a>'
                  for s in SECTIONS)
    lenses = sorted({f"{a.cal.key.camera} + {a.cal.key.lens}" for a in analyses})
    k = analyses[0].cal.key
    optics = ", ".join(x for x in (
        f"{k.focal_length_mm:g} mm" if k.focal_length_mm else "",
        f"f/{k.f_number:g}" if k.f_number else "") if x)
    w, h = analyses[0].cal.psf_map.image_size
    pitch = analyses[0].cal.pixel_pitch_um
    sub = (f"{len(analyses)} calibration{'s' if len(analyses) > 1 else ''} · {optics} · "
           f"{w}×{h} px" + (f" · {pitch:g} µm pixels" if pitch else "") +
           f" · database {html.escape(db_path.name)} · generated {summary['generated']}")
    data = json.dumps(summary, allow_nan=False, indent=1).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>lenspsf report: {html.escape(', '.join(lenses))}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>Lens calibration report: {html.escape(', '.join(lenses))}</h1>"
        f"<p>{sub}</p></header><nav>{nav}</nav><main>{''.join(parts)}</main>"
        "<footer>Made by lenspsf report. Frequencies in cycles/pixel (c/p); Nyquist = 0.5 c/p."
        "</footer>"
        f'<script type="application/json" id="lenspsf-summary">{data}</script></body></html>\n'
    )
