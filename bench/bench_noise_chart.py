"""Noise-chart PSF accuracy on the simulated camera: per-node relative L2 of the PSF map
estimated from a random-noise chart against the true map (green centred by its centroid,
red and blue keeping their offset from green), in focus and defocused, and the time.

The chart overfills the frame (the simulated camera's default framing for noise charts):
its inner markers keep it registrable and the pattern reaches the frame corners. The
pattern's cell is sized from the shooting geometry (``--cell-px`` pixels per cell; a
non-integer size puts cell edges at every sub-pixel phase, which the sub-pixel solve needs).

``--distortion on`` (default) shoots through the sharp-prime lens with its radial
distortion (the registration then also fits k1, k2 on the pattern); ``--distortion off``
switches it off. The simulator area-samples the distorted chart tile by tile, so both
compare against the operator that made the image.

Run: ``.venv/bin/python bench/bench_noise_chart.py [--defocus 0,15] [--cell-px 2.3]
[--grid 6x9] [--distortion off|on] [--render-oversample 5]`` (renders one 1200x800 shot per
focus setting at 5 scene samples per pixel, as ``bench_analysis.py``: at 3 the renderer's
cells act as points and blur the finest detail of the chart).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import calib
import targets

FILL = 1.3  # as calib's SimCamera frames a noise chart


def shoot_noise_chart(cam: calib.SimulatedCamera, *, defocus: int, cell_px: float, seed: int = 1):
    """One simulated RGB capture of a noise chart sized so a cell images to ``cell_px`` pixels."""
    probe = targets.make_layout("noise", paper="300x200mm")
    hom = cam.chart_homography(probe, fill=FILL)
    px_per_mm = float(np.hypot(hom[0, 0], hom[1, 0]) / hom[2, 2])
    dist = cam.chart_distance_m(probe, fill=FILL)
    layout = targets.make_layout("noise", paper="300x200mm", pixel_pitch_um=cam.sensor.pixel_pitch_um,
                                 focal_mm=cam.focal_length_mm, distance_m=dist,
                                 cell_mm=cell_px / px_per_mm, seed=seed)
    fp = round(cam.best_focus_position(dist)) + defocus
    shot = cam.shoot(layout, focus_position=fp, object_distance_m=dist, fill=FILL)
    rgb = shot.rgb_linear
    img = calib.LinearImage(rgb, ("R", "G", "B"), 0, 1, rgb >= 0.999, shot.metadata)
    return img, layout, fp, dist


def rel_l2(est: np.ndarray, tru: np.ndarray) -> np.ndarray:
    """(C, ny, nx) relative L2 error of PSF stacks (C, ny, nx, k, k)."""
    c, ny, nx = est.shape[:3]
    d = (est - tru).reshape(c, ny, nx, -1)
    return np.linalg.norm(d, axis=-1) / np.linalg.norm(tru.reshape(c, ny, nx, -1), axis=-1)


def camera(distortion: bool, render_oversample: int) -> calib.SimulatedCamera:
    lens = calib.LENS_PROFILES["sharp-prime"]
    if not distortion:
        lens = dataclasses.replace(lens, distortion_k1=0.0, distortion_k2=0.0)
    return calib.SimulatedCamera(lens, "small", seed=1, render_oversample=render_oversample)


def run(defocus: int, cell_px: float, grid: tuple[int, int], psf_size: int | None, distortion: bool,
        render_oversample: int) -> None:
    cam = camera(distortion, render_oversample)
    t0 = time.perf_counter()
    img, layout, fp, dist = shoot_noise_chart(cam, defocus=defocus, cell_px=cell_px)
    t_shoot = time.perf_counter() - t0
    w0, c0 = time.perf_counter(), time.process_time()
    res = calib.analyze_images([img], layout, grid=grid, psf_size=psf_size)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    # The map is stored at the solve's sampling; the figure is on the sensor grid.
    grid_map = res.psf_map.on_sensor_grid()
    k = grid_map.kernel_size
    truth = cam.true_psf_map(focus_position=fp, object_distance_m=dist, grid=grid, size=k)
    err = rel_l2(grid_map.psf, truth.psf)
    measured = (res.psf_map.flags[1] & calib.FLAG_FILLED) == 0
    print(f"defocus {defocus:+d} (focus {fp}), distortion {'on' if distortion else 'off'}, cell {cell_px:g} px, "
          f"rendered at {render_oversample} samples/px, PSF {k}x{k} ({res.psf_map.sampling} samples/px stored), grid {grid[0]}x{grid[1]}: "
          f"analysis {wall:.1f} s wall, {cpu:.1f} s CPU (shot rendered in {t_shoot:.0f} s); "
          f"{int(measured.sum())} of {measured.size} nodes measured")
    for c, name in enumerate("RGB"):
        e = err[c][measured]
        print(f"  noise rel L2 {name}: median {np.median(e):.3f} worst {e.max():.3f}")
    for c, name in enumerate("RGB"):
        print(f"  per-node {name} error:\n" + "\n".join("    " + " ".join(f"{v:.3f}" for v in row)
                                                     for row in err[c]))
    for note in res.notes:
        print("  note:", note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defocus", default="0,15", help="comma-separated focus offsets from best focus (steps)")
    ap.add_argument("--cell-px", type=float, default=2.3, help="noise cell size at the sensor, pixels")
    ap.add_argument("--distortion", choices=("off", "on"), default="on", help="the lens's radial distortion")
    ap.add_argument("--grid", default="6x9", help="nodes NYxNX")
    ap.add_argument("--psf-size", type=int, default=None)
    ap.add_argument("--render-oversample", type=int, default=5, help="scene samples per pixel (odd)")
    args = ap.parse_args()
    ny, nx = (int(v) for v in args.grid.lower().split("x"))
    for d in (int(v) for v in args.defocus.split(",")):
        run(d, args.cell_px, (ny, nx), args.psf_size, args.distortion == "on", args.render_oversample)


if __name__ == "__main__":
    main()
