"""``lenspsf demo``: the whole path on the simulated camera, scored against its ground truth.

It lives in ``restore`` because it drives all three packages (charts, capture, analysis,
database, restore, report) and ``restore`` is the top of the dependency chain.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import calib
import targets

from ._errors import RestoreError
from ._files import restore_files

#: Focus-drive offsets (steps) from best focus that the demo calibrates; +-16 steps is
#: about 4 px of defocus blur on the small simulated sensor at f/4.
_FOCUS_OFFSETS = (-16, 0, 16)
_PHOTO_OFFSET = 16
_LENS = "soft-zoom"
_SEED = 7


@dataclass(frozen=True)
class DemoResult:
    """What the demo made and the key figures it measured.

    Attributes
    ----------
    out_dir, db_path, report_path, photo_path, restored_path : Path
    session_dir : Path
    psf_error_median, psf_error_worst : float
        Relative L2 error of the estimated PSFs against the simulated camera's true
        PSFs (all channels, measured nodes, every focus setting).
    mtf50_centre_cpp, mtf50_corner_cpp : float
        Green MTF50 (cycles/pixel) of the best-focus calibration at the centre and the
        mean of the four corners (sagittal and tangential averaged), from the PSF map;
        0.5 (Nyquist) where the MTF stays above 0.5 up to Nyquist.
    psnr_before_db, psnr_after_db : float
        PSNR of the out-of-focus photo and of its restoration against the sharp scene.
    seconds : float
        Wall time of the whole demo.
    """

    out_dir: Path
    session_dir: Path
    db_path: Path
    photo_path: Path
    restored_path: Path
    report_path: Path
    psf_error_median: float
    psf_error_worst: float
    mtf50_centre_cpp: float
    mtf50_corner_cpp: float
    psnr_before_db: float
    psnr_after_db: float
    seconds: float


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out_dir: str | Path, *, lens: str = _LENS, seed: int = _SEED,
             progress: Callable[[str], None] = _stderr) -> DemoResult:
    """Print charts, shoot them, analyse, restore a photo and write the report.

    Parameters
    ----------
    out_dir : path-like
        Created if missing; a previous demo there is replaced.
    lens : str
        Simulated lens profile (``calib.LENS_PROFILES``).
    seed : int
        Seeds the sensor noise so the figures are reproducible.
    progress : callable
        Receives one line per step.

    Returns
    -------
    DemoResult
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A printed chart is continuous: render it at 3 samples per pixel so ~1 px dots are
    # integrated over the pixel area rather than point-sampled.
    model = calib.SimulatedCamera(lens, "small", seed=seed, render_oversample=3)

    progress("1/6 charts: a dots chart designed for the simulated camera's geometry, and an edges chart")
    probe = targets.make_layout("dots", paper="A3", landscape=True)
    # The dots field overfills the frame (as the README tells users to frame a chart).
    fill = model.dots_field_fill(probe)
    distance_m = model.chart_distance_m(probe, fill=fill)
    # Dots far enough apart for the widest PSF the demo meets (soft-zoom's corners at
    # +16 steps, 21 px): at 15 px the corners' light spilled past the kernel and between
    # neighbouring dots, and those nodes came out 50-75 % off (now at most 23 %).
    layout = targets.make_layout(
        "dots", paper="A3", landscape=True, pixel_pitch_um=model.sensor.pixel_pitch_um,
        focal_mm=model.focal_length_mm, distance_m=distance_m, max_psf_px=21,
    )
    charts_dir = out / "charts"
    charts_dir.mkdir(exist_ok=True)
    # The edges chart gives slanted-edge MTF at every focus setting, which the report
    # compares with the MTF of the PSFs measured from the dots.
    charts = [
        targets.write_chart(layout, charts_dir / "dots.pdf"),
        targets.write_chart(targets.make_layout("edges", paper="A3", landscape=True), charts_dir / "edges.pdf"),
    ]
    for chart in charts:
        progress(f"    {chart.chart} and its layout {chart.layout}")

    best = round(model.best_focus_position(distance_m))
    positions = [best + d for d in _FOCUS_OFFSETS]
    session_dir = out / "captures" / "demo"
    progress(f"2/6 capture: shooting the charts at focus positions {positions} (+2 dark frames)")
    with calib.SimCamera(model=model, object_distance_m=distance_m, fill={"dots": fill}) as camera:
        calib.run_session(
            camera, session_dir, charts=calib.load_charts([c.layout for c in charts]),
            focus=calib.parse_focus_spec(",".join(map(str, positions))), darks=2,
            resume=(session_dir / "session.json").exists(), progress=progress,
        )

    db_path = out / "lens.psfdb"
    progress(f"3/6 analyze: PSF maps per focus setting into {db_path}")
    with calib.PSFDatabase.open(db_path, create=True) as db:
        calib.analyze_session(session_dir, db=db, replace=True, progress=True)
        calibrations = [db.get(s.id) for s in db.summaries()]

    progress("4/6 truth: comparing every estimated PSF with the simulated camera's")
    errors = np.concatenate([_psf_errors(model, cal, distance_m) for cal in calibrations])
    best_cal = min(calibrations, key=lambda c: abs(c.key.focus_position - best))
    centre, corner = _mtf50_centre_corner(best_cal.psf_map)

    progress(f"5/6 restore: an out-of-focus photo (focus {best + _PHOTO_OFFSET}) of a real scene")
    photo_path, restored_path, before, after, truth = _restore_photo(
        model, out, db_path, focus_position=best + _PHOTO_OFFSET, distance_m=distance_m,
        progress=progress,
    )
    psnr_before, psnr_after = _psnr(before, truth), _psnr(after, truth)

    progress("6/6 report: writing the calibration report")
    report_path = out / "report.html"
    calib.write_report(
        db_path, report_path,
        truth={
            "PSF relative L2 error vs truth, median": f"{np.median(errors):.1%}",
            "PSF relative L2 error vs truth, worst node": f"{errors.max():.1%}",
            "Restored photo PSNR before / after": f"{psnr_before:.2f} dB / {psnr_after:.2f} dB",
            "Simulated lens": f"{lens}, chart at {distance_m:.2f} m, best focus position {best}",
        },
        restored=calib.RestoredExample(
            before=before, after=after, truth=truth, label=photo_path.name,
            psnr_before_db=psnr_before, psnr_after_db=psnr_after,
        ),
    )
    return DemoResult(
        out_dir=out, session_dir=session_dir, db_path=db_path, photo_path=photo_path,
        restored_path=restored_path, report_path=report_path,
        psf_error_median=float(np.median(errors)), psf_error_worst=float(errors.max()),
        mtf50_centre_cpp=centre, mtf50_corner_cpp=corner,
        psnr_before_db=psnr_before, psnr_after_db=psnr_after,
        seconds=time.perf_counter() - t0,
    )


def _psf_errors(model: calib.SimulatedCamera, cal: calib.Calibration, distance_m: float) -> np.ndarray:
    """Relative L2 error of each measured node PSF (all channels) against the truth."""
    est = cal.psf_map.on_sensor_grid()
    truth = model.true_psf_map(
        focus_position=cal.key.focus_position, object_distance_m=distance_m,
        grid=est.grid_shape, size=est.kernel_size,
    )
    if not np.allclose(truth.nodes_xy, est.nodes_xy):
        raise RestoreError("the demo's truth comparison needs the analysis to use the simulator's node grid")
    diff = (est.psf - truth.psf).reshape(*est.psf.shape[:3], -1)
    ref = truth.psf.reshape(*est.psf.shape[:3], -1)
    err = np.linalg.norm(diff, axis=-1) / np.linalg.norm(ref, axis=-1)
    measured = (est.flags & calib.FLAG_FILLED) == 0
    return err[measured]


def _mtf50_centre_corner(psf_map: calib.PSFMap) -> tuple[float, float]:
    """Green MTF50 at the node nearest the centre and averaged over the four corner nodes."""
    g = psf_map.channel_index("G")
    records = [r for r in calib.psf_map_mtf(psf_map) if r.channel == psf_map.channels[g]]
    w, h = psf_map.image_size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    radius = {id(r): np.hypot(r.x_px - cx, r.y_px - cy) for r in records}
    r_min, r_max = min(radius.values()), max(radius.values())
    # An MTF that stays above 0.5 up to Nyquist has no MTF50 on the sensor grid: count
    # it as Nyquist (0.5 c/p), which the CLI prints as "above Nyquist".
    def mtf50(r: calib.MTFRecord) -> float:
        v = r.mtf50_cpp()
        return 0.5 if np.isnan(v) else v

    centre = [mtf50(r) for r in records if radius[id(r)] == r_min]
    corner = [mtf50(r) for r in records if np.isclose(radius[id(r)], r_max)]
    return float(np.mean(centre)), float(np.mean(corner))


def _demo_scene(width: int, height: int) -> np.ndarray:
    """A real-looking linear RGB scene from the photos scikit-image ships (no download)."""
    try:
        from skimage import data, transform  # noqa: PLC0415
    except ImportError:
        raise RestoreError(
            "the demo's scene needs scikit-image; install it with pip install 'lenspsf[demo]'"
        ) from None
    tiles = [data.coffee(), data.rocket(), data.astronaut(), data.chelsea()]
    tw, th = width // 2, height // 2
    out = np.zeros((height, width, 3), np.float32)
    for k, img in enumerate(tiles):
        scale = max(th / img.shape[0], tw / img.shape[1])
        big = transform.rescale(img, scale, channel_axis=2, anti_aliasing=True, order=3)
        y0, x0 = (big.shape[0] - th) // 2, (big.shape[1] - tw) // 2
        out[(k // 2) * th:(k // 2 + 1) * th, (k % 2) * tw:(k % 2 + 1) * tw] = big[y0:y0 + th, x0:x0 + tw]
    # sRGB-encoded photos -> linear radiance, kept below white so nothing clips
    return (0.9 * targets.srgb_decode(np.clip(out, 0, 1))).astype(np.float32)


def _restore_photo(model, out: Path, db_path: Path, *, focus_position: int, distance_m: float,
                   progress: Callable[[str], None]):
    """Shoot the scene out of focus, restore it from the database, return images for scoring."""
    w, h = model.image_size
    scene = _demo_scene(w, h)
    shot = model.shoot(scene, focus_position=focus_position, object_distance_m=distance_m)
    photos = out / "photos"
    photos.mkdir(exist_ok=True)
    photo_path = photos / f"scene_focus{focus_position}.tif"
    model.write_tiff(shot, photo_path)
    restored_dir = out / "restored"
    restored_dir.mkdir(exist_ok=True)
    results = restore_files([photo_path], db=db_path, out_dir=restored_dir, log=progress)
    restored_path = results[0].output
    after = calib.load_linear(restored_path).data
    before = shot.rgb_linear
    # Ground truth: the sharp scene as this sensor records it (vignetting and exposure
    # included, no blur, no noise); the exposure scale is the blurred ideal's over the scene's.
    vig = model.relative_illumination(np.arange(w)[None, :], np.arange(h)[:, None])[..., None]
    sharp = scene * vig
    inner = (slice(40, -40), slice(40, -40))
    scale = float(shot.rgb_ideal[inner].sum() / sharp[inner].sum())
    return photo_path, restored_path, before, after, (sharp * scale).astype(np.float32)


def _psnr(image: np.ndarray, truth: np.ndarray, *, border: int = 16) -> float:
    """PSNR (peak 1.0) away from the frame border, dB."""
    inner = (slice(border, -border), slice(border, -border))
    mse = float(np.mean((np.asarray(image)[inner] - truth[inner]) ** 2))
    return 10.0 * np.log10(1.0 / mse)
