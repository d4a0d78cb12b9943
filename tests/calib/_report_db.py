"""A PSF database of the simulated camera's true maps, shared by the report tests.

Built once per test process (the simulated optics take a few seconds): three focus
settings of the "soft-zoom" lens on the "small" sensor, a 3 x 3 node grid, the sensor's
noise model, the lens's distortion in the metadata and, at the middle focus, real
slanted-edge and stripe measurements (an edge and a small stripes chart rendered through
node PSFs, measured with ``calib``'s e-SFR and ``calib.measure_stripes``).
"""
from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from calib import (
    Calibration,
    CalibrationKey,
    PSFDatabase,
    ReportResult,
    RestoredExample,
    SimulatedCamera,
    measure_stripes,
    write_report,
)
from calib._edge import measure_edge
import targets
from targets._render import page_homography

GRID = (3, 3)
KERNEL = 25
OBJECT_DISTANCE_M = 2.0
STEP = 12


@functools.cache
def camera() -> SimulatedCamera:
    # The render grid equals the map grid, so every map node is one pupil-model PSF.
    return SimulatedCamera("soft-zoom", "small", render_grid=GRID, seed=5)


def focus_positions() -> list[int]:
    best = round(camera().best_focus_position(OBJECT_DISTANCE_M))
    return [best - STEP, best, best + STEP]


def _edge_image(psfs: list[np.ndarray], angle_deg: float, size: int = 72) -> np.ndarray:
    """A slanted dark/bright step seen through per-channel PSFs, linear RGB."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    t = np.radians(angle_deg)
    return _blurred(np.where((x - c) * np.cos(t) - (y - c) * np.sin(t) > 0, 0.8, 0.2), psfs)


def _edge_records(pm) -> list:
    """Slanted edges seen through the map's own node PSFs, measured with the e-SFR.

    Each edge is labelled a few pixels from its node, so the report pairs it with that node.
    """
    ny, nx = pm.grid_shape
    spots = [(ny // 2, nx // 2, 5.0), (0, nx // 2, 7.0), (ny - 1, nx - 1, 95.0)]
    out = []
    for i, j, angle in spots:
        x, y = pm.nodes_xy[i, j]
        res = measure_edge(_edge_image([pm.psf[c, i, j] for c in range(3)], angle))
        for rec in res.to_records():
            if rec.channel == "Y":
                continue
            out.append(type(rec)(rec.channel, float(x) + 3.0, float(y) + 2.0, rec.orientation_deg,
                                 "none", rec.method, rec.freq_cpp, rec.mtf, rec.flags))
    return out


#: Nodes whose PSF the stripes chart is seen through: centre, mid-field, corner.
STRIPE_NODES = ((1, 1), (0, 1), (2, 2))


def _blurred(image: np.ndarray, psfs: list[np.ndarray]) -> np.ndarray:
    pad = psfs[0].shape[0]
    big = np.pad(image, pad, mode="edge")
    return np.stack([fftconvolve(big, p, mode="same")[pad:-pad, pad:-pad] for p in psfs], -1).astype(np.float32)


def _stripe_records(pm) -> list:
    """A small sine stripes chart seen through node PSFs, measured with ``measure_stripes``.

    The chart fills a 226 x 160 px frame (0.13 to 0.39 c/p, horizontal and vertical
    gratings); each record is moved next to its node (offsets shrunk to 0.3 x), so the
    report pairs it with that node and joins the patches of one node and orientation.
    """
    layout = targets.make_layout("stripes", paper="A4", landscape=True, field=(1, 1),
                                 frequencies_cpmm=[0.1, 0.2, 0.3], orientations_deg=(0.0, 90.0))
    shape = (160, 226)
    # Rendered 5x finer and point-sampled: the PSFs already hold the pixel aperture, and a
    # chart box-filtered at this size would add it a second time.
    chart = targets.render_layout(layout, (shape[0] * 5, shape[1] * 5))[2::5, 2::5]
    hom = page_homography(layout, shape)
    w, h = pm.image_size
    out = []
    for i, j in STRIPE_NODES:
        res = measure_stripes(_blurred(chart, [pm.psf[c, i, j] for c in range(3)]), layout, hom)
        x0, y0 = pm.nodes_xy[i, j]
        for rec in res.records:
            x = float(np.clip(x0 + 0.3 * (rec.x_px - shape[1] / 2), 0, w - 1))
            y = float(np.clip(y0 + 0.3 * (rec.y_px - shape[0] / 2), 0, h - 1))
            out.append(dataclasses.replace(rec, x_px=x, y_px=y))
    return out


def calibrations(*, edges: bool = True, distortion: bool = True,
                 only: int | None = None) -> list[Calibration]:
    """The three calibrations (or only the one at index ``only``)."""
    cam = camera()
    cals = []
    positions = focus_positions()
    for fp in positions if only is None else [positions[only]]:
        pm = cam.true_psf_map(focus_position=fp, object_distance_m=OBJECT_DISTANCE_M,
                              grid=GRID, size=KERNEL)
        meta = {}
        if distortion:
            d = cam.distortion
            # The keys ``calib._register`` stores (Registration.to_dict), residuals made up.
            meta["distortion"] = {"homography": np.eye(3).tolist(),
                                  "centre_xy_px": [d.centre_x_px, d.centre_y_px],
                                  "norm_radius_px": d.norm_radius_px, "k1": d.k1, "k2": d.k2,
                                  "residual_rms_px": 0.04, "residual_max_px": 0.11,
                                  "n_points": 180, "n_markers": 4}
        cals.append(Calibration(
            key=CalibrationKey("SimCam", "soft-zoom", cam.focal_length_mm, cam.f_number, fp,
                               cam.focus_distance_m(fp)),
            psf_map=pm, noise=cam.noise_model(), pixel_pitch_um=cam.sensor.pixel_pitch_um,
            mtf=_edge_records(pm) + _stripe_records(pm) if edges and fp == positions[1] else (),
            metadata=meta,
        ))
    return cals


@functools.cache
def three_focus_db() -> Path:
    """Path of a database with three focus settings (built once per process)."""
    folder = Path(tempfile.mkdtemp(prefix="lenspsf-report-db-"))
    path = folder / "simcam.psfdb"
    with PSFDatabase.open(path, create=True) as db:
        for cal in calibrations():
            db.add(cal)
    return path


@functools.cache
def one_focus_db() -> Path:
    """A database with the middle focus setting only, no edges and no distortion."""
    folder = Path(tempfile.mkdtemp(prefix="lenspsf-report-db1-"))
    path = folder / "one.psfdb"
    (cal,) = calibrations(edges=False, distortion=False, only=1)
    with PSFDatabase.open(path, create=True) as db:
        db.add(dataclasses.replace(cal, noise=None))
    return path


def restored_example() -> RestoredExample:
    """A small synthetic scene, blurred ("before") and partly sharpened ("after")."""
    rng = np.random.default_rng(11)
    h, w = 180, 240
    y, x = np.mgrid[0:h, 0:w]
    truth = np.stack([0.5 + 0.4 * np.sin(x / (3 + c) + c) * np.cos(y / (4 + c)) for c in range(3)], -1)
    truth = np.clip(truth + 0.05 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)
    before = ndimage.gaussian_filter(truth, (2.0, 2.0, 0)).astype(np.float32)
    after = (truth + 0.5 * (before - truth)).astype(np.float32)

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a - truth) ** 2)))

    return RestoredExample(before=before, after=after, truth=truth, label="synthetic scene",
                           psnr_before_db=psnr(before), psnr_after_db=psnr(after))


TRUTH = {"PSF error vs truth (relative L2), median": 0.031,
         "MTF50 error vs truth": {"centre": 0.002, "corner": 0.011}}


@functools.cache
def full_report() -> tuple[Path, ReportResult]:
    """The report of ``three_focus_db`` with truth and a restored example (written once)."""
    out = Path(tempfile.mkdtemp(prefix="lenspsf-report-")) / "report.html"
    return out, write_report(three_focus_db(), out, truth=TRUTH, restored=restored_example())
