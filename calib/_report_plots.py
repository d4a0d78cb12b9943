"""Figures of the calibration report, rendered to PNG bytes (matplotlib, Agg).

Imported by :mod:`calib._report` only while a report is written, so ``import calib``
works without matplotlib. Figures use the object-oriented API (``Figure`` + Agg
canvas) and never pyplot, so no global GUI backend or figure registry is touched.
Every function takes plain arrays and returns PNG bytes; the numbers are computed in
``_report``.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
    from ._errors import CalibError

    raise CalibError(
        "the HTML report needs matplotlib, which is not installed; install the plot extra "
        "with `pip install 'lenspsf[plot]'`"
    ) from exc

#: Line colours per channel name (luminance and unknown channels in grey).
CHANNEL_COLOURS = {"R": "#d62728", "G": "#2a9d3a", "B": "#1f5fbf", "Y": "#555555"}
#: Display gamma used for every PSF picture (value ** (1 / gamma)).
DISPLAY_GAMMA = 2.2
_DPI = 100
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.grid": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def _colour(channel: str) -> str:
    return CHANNEL_COLOURS.get(channel, "#777777")


def _figure(width_in: float, height_in: float, *, left: float = 0.7, right: float = 0.2,
            bottom: float = 0.55, top: float = 0.55, wspace: float = 0.25,
            hspace: float = 0.3) -> Figure:
    """A figure with fixed margins in inches (no layout engine: it doubles drawing time)."""
    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width_in, right=1 - right / width_in,
                        bottom=bottom / height_in, top=1 - top / height_in,
                        wspace=wspace, hspace=hspace)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def png_from_rgb(rgb_u8: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 picture (no matplotlib needed, Pillow only)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_u8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# -- PSF montage ------------------------------------------------------------------------


def _tile_grid(tiles: np.ndarray, gap: int) -> np.ndarray:
    """(ny, nx, k, k[, 3]) tiles -> one picture with ``gap``-pixel white separators."""
    ny, nx, k = tiles.shape[:3]
    extra = tiles.shape[4:]
    out = np.ones((ny * k + (ny + 1) * gap, nx * k + (nx + 1) * gap, *extra), np.float32)
    for i in range(ny):
        for j in range(nx):
            y0, x0 = gap + i * (k + gap), gap + j * (k + gap)
            out[y0:y0 + k, x0:x0 + k] = tiles[i, j]
    return out


def _row_of_axes(widths_in: Sequence[float], height_in: float, *, left: float, right: float,
                 bottom: float, top: float, gap: float) -> tuple[Figure, list]:
    """A figure holding one row of axes of exact sizes (inches), margins in inches."""
    fig_w = left + sum(widths_in) + gap * (len(widths_in) - 1) + right
    fig_h = bottom + height_in + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes, x = [], left
    for w in widths_in:
        axes.append(fig.add_axes((x / fig_w, bottom / fig_h, w / fig_w, height_in / fig_h)))
        x += w + gap
    return fig, axes


def _node_ticks(ax, node_x: np.ndarray, node_y: np.ndarray, pos_x: np.ndarray,
                pos_y: np.ndarray) -> None:
    ax.set_xticks(pos_x, [f"{v:.0f}" for v in node_x], rotation=90 if len(node_x) > 7 else 0)
    ax.set_yticks(pos_y, [f"{v:.0f}" for v in node_y])
    ax.set_xlabel("node x (px)")
    ax.set_ylabel("node y (px)")
    ax.tick_params(length=2, labelsize=7)


def psf_montage(psf: np.ndarray, channels: Sequence[str], node_x: np.ndarray,
                node_y: np.ndarray, flags: np.ndarray, *, title: str) -> bytes:
    """Montage of the node PSFs across the field: an RGB composite and each channel.

    Parameters
    ----------
    psf : ndarray (C, ny, nx, k, k)
        PSFs, already cropped for display.
    flags : ndarray (C, ny, nx)
        Nodes with any flag get a dashed orange frame.
    """
    c, ny, nx, k, _ = psf.shape
    gap = max(1, k // 10)
    peak = psf.max(axis=(-1, -2), keepdims=True)
    per_channel = np.where(peak > 0, psf / np.where(peak > 0, peak, 1), 0) ** (1 / DISPLAY_GAMMA)
    panels: list[tuple[str, np.ndarray, str | None]] = []
    names = list(channels)
    if set("RGB") <= set(names):
        rgb = np.stack([psf[names.index(ch)] for ch in "RGB"], axis=-1)  # (ny, nx, k, k, 3)
        top = rgb.max(axis=(2, 3, 4), keepdims=True)
        rgb = np.where(top > 0, rgb / np.where(top > 0, top, 1), 0) ** (1 / DISPLAY_GAMMA)
        panels.append(("RGB composite", _tile_grid(rgb, gap), None))
    for ci, ch in enumerate(names):
        # NaN separators are drawn white by the colour map's "bad" colour.
        panels.append((f"channel {ch}", _tile_grid(per_channel[ci], gap) + _gap_mask(ny, nx, k, gap),
                       "inferno"))
    n = len(panels)
    h_px, w_px = panels[0][1].shape[:2]
    panel_w = min(3.1, 12.0 / n)
    fig, axes = _row_of_axes([panel_w] * n, panel_w * h_px / w_px, left=0.75, right=0.15,
                             bottom=0.6, top=0.7 if title else 0.35, gap=0.7)
    ticks_x = gap + np.arange(nx) * (k + gap) + (k - 1) / 2
    ticks_y = gap + np.arange(ny) * (k + gap) + (k - 1) / 2
    any_flag = flags.any(axis=0)
    for ax, (name, img, cmap) in zip(axes, panels):
        if cmap is None:
            ax.imshow(img, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        else:
            cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
            ax.imshow(img, cmap=cm, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_title(name)
        _node_ticks(ax, node_x, node_y, ticks_x, ticks_y)
        for i, j in zip(*np.nonzero(any_flag)):
            y0, x0 = gap + i * (k + gap) - 0.5, gap + j * (k + gap) - 0.5
            ax.add_patch(Rectangle((x0, y0), k, k, fill=False, ec="#ff9f1c", lw=1.5, ls="--"))
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_figheight())
    return _png(fig)


def _gap_mask(ny: int, nx: int, k: int, gap: int) -> np.ndarray:
    """0 inside the tiles, NaN on the separators of a ``_tile_grid`` picture."""
    inside = _tile_grid(np.zeros((ny, nx, k, k), np.float32), gap)
    return np.where(inside == 0, 0.0, np.nan).astype(np.float32)


# -- MTF curves -------------------------------------------------------------------------


@dataclass
class ZoneCurves:
    """What one MTF-curve panel shows."""

    name: str
    psf_curves: list[tuple[str, str, np.ndarray, np.ndarray]] = field(default_factory=list)
    """(channel, "sagittal"/"tangential", freq_cpp, mtf) from the PSF map."""
    measured: list[tuple[str, str, np.ndarray, np.ndarray]] = field(default_factory=list)
    """(channel, method "edge"/"stripes", freq_cpp, mtf) measured near the zone."""


def mtf_curves(zones: Sequence[ZoneCurves], *, pixel_pitch_um: float | None, title: str) -> bytes:
    """One panel per zone: PSF-derived sagittal (solid) and tangential (dashed) MTF per
    channel, with edge / stripe measurements near the zone as markers."""
    fig = _figure(3.9 * len(zones), 3.6, left=0.65, right=0.15, bottom=0.85, top=0.55, wspace=0.08)
    axes = fig.subplots(1, len(zones), squeeze=False, sharey=True).ravel()
    for ax, zone in zip(axes, zones):
        for ch, direction, f, m in zone.psf_curves:
            ax.plot(f, m, color=_colour(ch), lw=2.0 if ch in ("G", "Y") else 1.1,
                    ls="-" if direction == "sagittal" else "--", alpha=0.95)
        for ch, method, f, m in zone.measured:
            sel = f <= 0.5 + 1e-9
            if method == "edge":
                ax.plot(f[sel][::3], m[sel][::3], ls="none", marker="o", ms=3.2, mfc="none",
                        color=_colour(ch), alpha=0.8)
            else:
                ax.plot(f[sel], m[sel], ls="none", marker="s", ms=4.5, color=_colour(ch),
                        alpha=0.9)
        ax.axhline(0.5, color="#999999", lw=0.7, ls=":")
        ax.set_xlim(0, 0.5)
        ax.set_ylim(0, 1.05)
        ax.set_title(zone.name)
        ax.set_xlabel("spatial frequency (cycles/pixel)" + (
            f"\n(x {1000.0 / pixel_pitch_um:.4g} = line pairs/mm)" if pixel_pitch_um else ""))
        ax.grid(True, color="#eeeeee", lw=0.6)
    axes[0].set_ylabel("MTF (contrast, 0..1)")
    channels = sorted({c for z in zones for c, *_ in z.psf_curves}, key="RGBY".find)
    handles = [Line2D([], [], color=_colour(c), lw=2, label=c) for c in channels]
    handles += [Line2D([], [], color="k", lw=1.2, ls="-", label="sagittal (PSF)"),
                Line2D([], [], color="k", lw=1.2, ls="--", label="tangential (PSF)")]
    methods = {m for z in zones for _, m, *_ in z.measured}
    if "edge" in methods:
        handles.append(Line2D([], [], color="k", ls="none", marker="o", mfc="none", label="slanted edge"))
    if "stripes" in methods:
        handles.append(Line2D([], [], color="k", ls="none", marker="s", label="stripes"))
    axes[-1].legend(handles=handles, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


# -- field maps -------------------------------------------------------------------------


def field_maps(node_x: np.ndarray, node_y: np.ndarray, maps: Sequence[tuple[str, np.ndarray]],
               *, vmin: float, vmax: float, unit: str, title: str, cmap: str = "viridis",
               fmt: str = "{:.2f}", labels: Sequence[np.ndarray] | None = None) -> bytes:
    """Per-node values as a grid of cells (one per node, labelled with the node's pixel
    position), the value printed in each cell.

    Parameters
    ----------
    maps : sequence of (panel title, ndarray (ny, nx))
        NaN cells are drawn grey and labelled ">Nyq" (no crossing below Nyquist).
    labels : sequence of ndarray (ny, nx) of str, optional
        Cell texts per panel, instead of the formatted values.
    """
    ny, nx = maps[0][1].shape
    cell = min(0.6, 4.4 / nx, 3.2 / ny)
    fig, axes = _row_of_axes([nx * cell] * len(maps) + [0.15], ny * cell, left=0.75, right=0.85,
                             bottom=0.6, top=0.7 if title else 0.35, gap=0.6)
    cax = axes.pop()
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#cccccc")
    image = None
    for p, (ax, (name, values)) in enumerate(zip(axes, maps)):
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cm, vmin=vmin, vmax=vmax,
                          interpolation="nearest", aspect="auto")
        _node_ticks(ax, node_x, node_y, np.arange(nx), np.arange(ny))
        ax.set_title(name)
        if values.size <= 160:
            for i in range(ny):
                for j in range(nx):
                    val = values[i, j]
                    text = ">Nyq" if not np.isfinite(val) else fmt.format(val)
                    if labels is not None:
                        text = str(labels[p][i, j])
                    rgba = cm(np.clip((val - vmin) / max(vmax - vmin, 1e-12), 0, 1)) \
                        if np.isfinite(val) else (0.8, 0.8, 0.8, 1)
                    light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55
                    ax.text(j, i, text, ha="center", va="center", fontsize=7 if nx > 7 else 8,
                            color="black" if light else "white")
    fig.colorbar(image, cax=cax, label=unit)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_figheight())
    return _png(fig)


# -- through focus --------------------------------------------------------------------------


@dataclass
class FocusPanel:
    """One panel of the through-focus figure: curves against focus, peaks as dotted lines."""

    title: str
    ylabel: str
    curves: dict[str, np.ndarray]
    """label -> values at each focus setting; labels R/G/B/Y take the channel colours."""
    peaks: dict[str, float | None] = field(default_factory=dict)
    """label -> best focus (None: none)."""


_ZONE_STYLES = {"centre": ("#222222", "o"), "mid-field": ("#7a5195", "s"), "corners": ("#ef5675", "^")}


def through_focus(focus: np.ndarray, axis_label: str, panels: Sequence[FocusPanel], *, title: str) -> bytes:
    """Side-by-side panels of values against the focus axis."""
    fig = _figure(4.2 * len(panels), 3.6, left=0.7, right=0.2, bottom=0.55, top=0.6, wspace=0.3)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for name, vals in panel.curves.items():
            colour, marker = _ZONE_STYLES.get(name, (_colour(name), "o"))
            ax.plot(focus, vals, color=colour, marker=marker, label=name)
            peak = panel.peaks.get(name)
            if peak is not None and np.isfinite(peak):
                ax.axvline(peak, color=colour, lw=0.8, ls=":")
        ax.set_title(panel.title)
        ax.set_xlabel(axis_label)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, color="#eeeeee", lw=0.6)
        ax.legend(loc="best")
        ax.set_ylim(bottom=0)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


# -- lateral colour -----------------------------------------------------------------------


def lateral_colour(node_x: np.ndarray, node_y: np.ndarray, offsets: dict[str, np.ndarray], *,
                   image_size: tuple[int, int], title: str) -> bytes:
    """Arrows from each node along each channel's centroid offset from G, magnified.

    Parameters
    ----------
    offsets : dict channel -> ndarray (ny, nx, 2)
        (dx, dy) in pixels.
    """
    w, h = image_size
    pad = 0.1
    ax_w = 6.4
    fig, (ax,) = _row_of_axes([ax_w], ax_w * h / w, left=0.8, right=1.7, bottom=0.55,
                              top=0.45 if title else 0.2, gap=0)
    largest = max(float(np.nanmax(np.hypot(o[..., 0], o[..., 1]))) for o in offsets.values())
    spacing = min(np.diff(node_x).min() if len(node_x) > 1 else w,
                  np.diff(node_y).min() if len(node_y) > 1 else h)
    # Longest arrow about half the node spacing; a round magnification reads better.
    magnification = _nice_below(0.5 * spacing / largest) if largest > 0 else 1.0
    gx, gy = np.meshgrid(node_x, node_y)
    for ch, off in offsets.items():
        ax.quiver(gx.ravel(), gy.ravel(), off[..., 0].ravel() * magnification,
                  off[..., 1].ravel() * magnification, color=_colour(ch), angles="xy",
                  scale_units="xy", scale=1.0, width=0.005, label=f"{ch} − G")
    ax.plot(gx.ravel(), gy.ravel(), "o", color=_colour("G"), ms=3.5, label="node (G)")
    ax.set_xlim(-pad * w, (1 + pad) * w)
    ax.set_ylim((1 + pad) * h, -pad * h)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="#bbbbbb", lw=0.8, ls="-"))
    key_px = _nice_below(largest * 1.3) if largest > 0 else 1.0
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.annotate("", xy=(1.04 + key_px * magnification / (w * (1 + 2 * pad)), 0.55),
                xytext=(1.04, 0.55), xycoords="axes fraction",
                arrowprops=dict(arrowstyle="-|>", color="black", lw=1.4))
    ax.text(1.04, 0.48, f"key: {key_px:g} px\n(magnified {magnification:g}x)",
            transform=ax.transAxes, fontsize=8, va="top")
    if title:
        ax.set_title(title)
    return _png(fig)


def _nice_below(v: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``v``."""
    if v <= 0:
        return 1.0
    exp = np.floor(np.log10(v))
    for m in (5, 3, 2, 1.5, 1):
        if m * 10**exp <= v:
            return float(m * 10**exp)
    return float(10**exp)


def _field_axes(ax, image_size: tuple[int, int]) -> None:
    w, h = image_size
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")


# -- distortion -------------------------------------------------------------------------------


def distortion(rho: np.ndarray, percent: np.ndarray, grid_lines: list[np.ndarray],
               grid_ideal: list[np.ndarray], *, image_size: tuple[int, int],
               magnification: float, title: str) -> bytes:
    """Radial distortion against field height, and a magnified warped grid."""
    fig = _figure(10.0, 3.9, left=0.7, right=0.2, bottom=0.6, top=0.6, wspace=0.3)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.2])
    ax1.plot(rho, percent, color="#1f5fbf", lw=2)
    ax1.axhline(0, color="#999999", lw=0.7)
    ax1.set_xlabel("field height (fraction of the half-diagonal)")
    ax1.set_ylabel("distortion (% of radius)")
    ax1.grid(True, color="#eeeeee", lw=0.6)
    ax1.set_title("(r_distorted - r) / r")
    for line in grid_ideal:
        ax2.plot(line[:, 0], line[:, 1], color="#cccccc", lw=0.7)
    for line in grid_lines:
        ax2.plot(line[:, 0], line[:, 1], color="#1f5fbf", lw=1.1)
    _field_axes(ax2, image_size)
    ax2.set_title(f"square grid as imaged (displacement magnified {magnification:g}x)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


# -- PSF vs edge ---------------------------------------------------------------------------------


def edge_agreement(field_height: np.ndarray, max_diff: np.ndarray, channels: Sequence[str],
                   *, tolerance: float, title: str) -> bytes:
    """Largest |PSF MTF - edge MTF| up to Nyquist/2 per edge, against field height."""
    fig = _figure(7.0, 3.4, left=0.75, right=0.2, bottom=0.55, top=0.4)
    ax = fig.subplots()
    chans = np.asarray(channels)
    for ch in sorted(set(channels), key="RGBY".find):
        sel = chans == ch
        ax.plot(field_height[sel], max_diff[sel], "o", color=_colour(ch), ms=5, alpha=0.8, label=ch)
    ax.axhline(tolerance, color="#d62728", lw=0.9, ls="--", label=f"goal {tolerance:g}")
    ax.set_xlabel("field height of the edge (fraction of the half-diagonal)")
    ax.set_ylabel("max |MTF_PSF - MTF_edge| up to 0.25 c/p")
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(0, max(tolerance * 2, float(np.nanmax(max_diff)) * 1.15 if len(max_diff) else 0))
    ax.grid(True, color="#eeeeee", lw=0.6)
    ax.legend(loc="upper left", ncol=5)
    if title:
        ax.set_title(title)
    return _png(fig)
