"""Simulated camera: time to render one frame through the spatially varying PSF.

Prints the render time of a 24 MP frame (goal: under 60 s on 2 cores), split into
PSF computation and convolution, wall and CPU time (the CPU time of all threads: on a
machine shared with other work the wall time says little), and the PSF widths the
model gives. ``--quick``
renders the small demo sensor instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calib import SimulatedCamera  # noqa: E402


def _scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A sharp test scene: random rectangles of random colour on grey."""
    img = np.full((h, w, 3), 0.4, np.float32)
    for _ in range(400):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(4, w // 10), y0 + rng.integers(4, h // 10)
        img[y0:y1, x0:x1] = rng.uniform(0.05, 0.95, 3)
    return img


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sensor instead of 24 MP")
    parser.add_argument("--lens", default="soft-zoom")
    args = parser.parse_args()
    sensor = "small" if args.quick else "24mp"
    cam = SimulatedCamera(args.lens, sensor, seed=1)
    w, h = cam.image_size
    rng = np.random.default_rng(1)
    scene = _scene(h, w, rng)
    dist = 2.0
    focus = round(cam.best_focus_position(dist))
    kw = dict(focus_position=focus, object_distance_m=dist)

    c0, t0 = time.process_time(), time.perf_counter()
    grid = cam.render_grid_for(**kw)
    xs, ys = cam._render_nodes(grid)
    cam._psf_many([(x, y, c, focus, dist, 1, None) for c in range(3) for y in ys for x in xs])
    c_psf, t_psf = time.process_time() - c0, time.perf_counter() - t0
    c1, t1 = time.process_time(), time.perf_counter()
    shot = cam.shoot(scene, **kw)
    c_shot, t_shot = time.process_time() - c1, time.perf_counter() - t1
    ny, nx = grid
    print(f"sensor {sensor} {w}x{h}, lens {args.lens} f/{cam.f_number:g}, {ny}x{nx} PSF nodes x 3 channels")
    print(f"  {'':51s}  wall s   CPU s (all threads)")
    print(f"  PSF computation (pupil model, {3 * nx * ny} PSFs):                {t_psf:6.1f}  {c_psf:6.1f}")
    print(f"  render + sensor (convolution, noise, mosaic):           {t_shot:6.1f}  {c_shot:6.1f}")
    print(f"  total frame:                                            {t_psf + t_shot:6.1f}  {c_psf + c_shot:6.1f}"
          f"   (goal < 60 s wall on 2 idle cores)")
    print(f"  load average (1 min) while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("  PSF widths (G, best focus on axis; 2nd-moment sigma, px):")
    for name, (x, y) in {"centre": (cam.centre.x_px, cam.centre.y_px), "corner": (0.0, 0.0)}.items():
        p = cam.true_psf(x, y, "G", oversample=3, **kw).astype(float)
        k = p.shape[0]
        c = (np.arange(k) - k // 2) / 3
        sx = np.sqrt((p.sum(0) * c**2).sum() - (p.sum(0) * c).sum() ** 2)
        sy = np.sqrt((p.sum(1) * c**2).sum() - (p.sum(1) * c).sum() ** 2)
        print(f"    {name:6s} sigma_x {sx:5.2f}  sigma_y {sy:5.2f}  (kernel {cam.psf_size(x, y, 'G', **kw)} px)")
    assert shot.raw.shape == (h, w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
