"""Restore speed and memory, side by side with scikit-image, measured in one run.

Usage: ``python bench/bench_restore.py [--quick]`` (quick: 6 MP instead of 24 MP, no 100 MP).
Prints wall and CPU seconds (the machine may be shared: CPU/cores is the idle-machine estimate).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import calib  # noqa: E402
import restore  # noqa: E402


def make_map(w: int, h: int, k: int = 41, grid=(6, 9)) -> calib.PSFMap:
    ny, nx = grid
    r = np.arange(k) - k // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    psf = np.zeros((3, ny, nx, k, k), np.float32)
    for c in range(3):
        for i in range(ny):
            for j in range(nx):
                s = 1.0 + 0.3 * abs(i - ny / 2) + 0.2 * abs(j - nx / 2) + 0.1 * c
                p = np.exp(-(xx**2 + yy**2) / (2 * s * s))
                psf[c, i, j] = p / p.sum()
    nodes = np.stack(np.meshgrid(np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)), -1)
    return calib.PSFMap(psf, nodes, ("R", "G", "B"), (w, h))


def photo(w: int, h: int) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut().astype(np.float32) / 255, (h, w), order=1).astype(np.float32)
    return 0.05 + 0.9 * img


def timed(fn, reps):
    walls, cpus = [], []
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def child_peak(w: int, h: int, out_uint16: bool) -> float:
    """Peak RSS (GB) of a child process that builds a (h, w, 3) image and restores it."""
    code = f"""
import sys, resource, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bench_restore import make_map
import restore
rng = np.random.default_rng(0)
img = rng.random(({h}, {w}, 3), dtype=np.float32); img *= 0.9
out = np.empty(img.shape, np.uint16) if {out_uint16} else None
restore.restore_image(img, make_map({w}, {h}), noise=0.005, out=out)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from skimage import restoration

    w, h = (3000, 2000) if args.quick else (6000, 4000)
    reps = 1 if args.quick else 3
    img = photo(w, h)
    m = make_map(w, h)
    rows = []
    t_ours, c_ours, _ = timed(lambda: restore.restore_image(img, m, noise=0.005), reps)
    centre = [m.psf_at(w / 2, h / 2, c) for c in range(3)]

    def sk():
        return np.stack([restoration.wiener(img[..., c], centre[c], balance=0.01) for c in range(3)], -1)

    t_sk, c_sk, _ = timed(sk, 1)
    rows.append((f"wiener {w * h / 1e6:.0f} MP RGB, 9x6x3 map of 41x41", t_ours, c_ours, f"skimage wiener 1 PSF/ch", t_sk, c_sk))
    # RL: time to reach skimage's 30-iteration PSNR, on a 1 MP grey crop with one PSF.
    g = img[:1000, :1000, 1].copy()
    psf = centre[1]
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(1)
    blur = (fftconvolve(np.pad(g, 20, mode="symmetric"), psf, mode="valid") + 0.005 * rng.standard_normal(g.shape)).astype(np.float32)
    psnr = lambda a: 10 * np.log10(1 / np.mean((a[40:-40, 40:-40] - g[40:-40, 40:-40]) ** 2))  # noqa: E731
    t_skrl, c_skrl, sk_out = timed(lambda: restoration.richardson_lucy(blur, psf, num_iter=30, clip=False), 1)
    target = psnr(sk_out)
    cm = calib.PSFMap(psf[None, None, None], np.array([[[500.0, 500.0]]]), ("Y",), (1000, 1000))
    n_used = None
    for n in range(1, 31):
        opts = {"iterations": n, "tol": 0.0, "discrepancy": False, "damping": 0.0}
        r = restore.restore_image(blur, cm, method="rl", noise=0.005, options=opts, saturated=False)
        if psnr(r.image) >= target:
            n_used = n
            break
    t_rl, c_rl, _ = timed(lambda: restore.restore_image(blur, cm, method="rl", noise=0.005, options=opts, saturated=False), reps)
    rows.append((f"rl to {target:.2f} dB ({n_used} it), 1 MP", t_rl, c_rl, "skimage richardson_lucy 30 it", t_skrl, c_skrl))
    print(f"{'case':48s} {'ours wall/cpu s':>16s}  {'peer':30s} {'peer wall/cpu s':>16s}  speed-up (wall, cpu)")
    for name, a, ac, peer, b, bc in rows:
        print(f"{name:48s} {a:7.2f}/{ac:7.2f}  {peer:30s} {b:7.2f}/{bc:7.2f}  {b / a:5.1f}x, {bc / ac:5.1f}x")
    print(f"peak RSS restoring {w * h / 1e6:.0f} MP RGB (child process, float32 in + out): {child_peak(w, h, False):.2f} GB")
    if not args.quick:
        print(f"peak RSS restoring 100 MP RGB (float32 in, uint16 out): {child_peak(12240, 8160, True):.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
