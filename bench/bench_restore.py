"""Restore speed, quality and memory side by side with scikit-image, measured in one run.

Usage::

    .venv/bin/python bench/bench_restore.py            # 24 MP + 100 MP (several minutes)
    .venv/bin/python bench/bench_restore.py --quick    # 6 MP, no 100 MP

The PSF map is the simulated camera's true map ("soft-zoom" lens, "24mp" sensor,
2 m object, focus 20 steps behind best: corners much softer than the centre), 9x6
nodes of 41x41 per colour channel; it is computed once and cached in
``/tmp/lenspsf_bench_map_24mp.npz``. Times are CPU seconds (all threads) and wall
seconds; on a shared machine wall time is inflated by other load, CPU time is the
fairer figure (CPU / cores estimates the idle-machine wall time). The 24 MP
``wiener`` run is reported cold (filters computed) and warm (a second photo from
the same calibration: filters come from the cache). Peak memory is the maximum
resident set of a child process that holds the photo and restores it.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import calib  # noqa: E402
import restore  # noqa: E402
from restore import _fft  # noqa: E402

MAP_CACHE = Path("/tmp/lenspsf_bench_map_24mp.npz")
NOISE = 0.005


def true_map() -> calib.PSFMap:
    """The soft-zoom lens's true 9x6x3 map of 41x41 PSFs on the 24 MP sensor (cached)."""
    if MAP_CACHE.exists():
        d = np.load(MAP_CACHE)
        return calib.PSFMap(d["psf"], d["nodes_xy"], tuple(str(c) for c in d["channels"]),
                            tuple(int(v) for v in d["image_size"]))
    cam = calib.SimulatedCamera("soft-zoom", "24mp")
    focus = round(cam.best_focus_position(2.0)) + 20
    m = cam.true_psf_map(focus_position=focus, object_distance_m=2.0, grid=(6, 9), size=41)
    np.savez(MAP_CACHE, psf=m.psf, nodes_xy=m.nodes_xy, channels=np.array(m.channels),
             image_size=np.array(m.image_size), focus=focus)
    return m


def scaled_map(m: calib.PSFMap, w: int, h: int) -> calib.PSFMap:
    """The same PSFs on a frame of another size (nodes stretched to it)."""
    sx, sy = (w - 1) / (m.image_size[0] - 1), (h - 1) / (m.image_size[1] - 1)
    nodes = m.nodes_xy * np.array([sx, sy])
    return calib.PSFMap(m.psf, nodes, m.channels, (w, h))


def photo(w: int, h: int, *, noisy: bool = True) -> np.ndarray:
    """The astronaut, resized to (h, w), linear 0.05..0.95 (with 0.5 % noise when ``noisy``)."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut().astype(np.float32) / 255, (h, w), order=1).astype(np.float32)
    img *= 0.9
    img += 0.05
    if noisy:
        img += NOISE * np.random.default_rng(0).standard_normal(img.shape, dtype=np.float32)
    return img


def timed(fn, reps: int = 1):
    """(median wall s, median CPU s, last result) over ``reps`` calls."""
    walls, cpus, out = [], [], None
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def psnr(a: np.ndarray, b: np.ndarray, border: int = 40) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


# VmHWM (this process image's peak RSS, kB): getrusage's ru_maxrss would carry the
# forking parent's peak across exec on Linux.
_CHILD = """
import sys, numpy as np
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from bench_restore import true_map, scaled_map
import restore
w, h = {w}, {h}
m = scaled_map(true_map(), w, h)
img = np.empty((h, w, 3), np.float32)
rng = np.random.default_rng(0)
for y in range(0, h, 512):  # filled in blocks: no float64 full-frame temporary
    img[y:y + 512] = rng.random((min(512, h - y), w, 3), dtype=np.float32) * 0.9 + 0.05
base = hwm()
out = np.empty(img.shape, {out_dtype})
restore.restore_image(img, m, noise=0.005, out=out)
peak = hwm()
print(base, peak)
"""


def child_peak_gb(w: int, h: int, out_dtype: str) -> tuple[float, float]:
    """(RSS after the photo is in memory, peak RSS) in GB of a child restoring a (h, w, 3) photo."""
    code = _CHILD.format(root=str(ROOT), bench=str(Path(__file__).resolve().parent), w=w, h=h, out_dtype=out_dtype)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak = (int(v) for v in res.stdout.split()[-2:])
    return base / 2**20, peak / 2**20


def bench_wiener(w: int, h: int, reps: int) -> list[tuple]:
    from skimage import restoration

    m = scaled_map(true_map(), w, h)
    img = photo(w, h)
    centre = [m.psf_at((w - 1) / 2, (h - 1) / 2, c) for c in range(3)]

    def peer() -> np.ndarray:
        # skimage's balance is the constant noise-to-signal ratio of its Wiener filter.
        return np.stack([restoration.wiener(img[..., c], centre[c], balance=0.01) for c in range(3)], -1)

    _fft.OTF_CACHE.clear()
    t_cold, c_cold, _ = timed(lambda: restore.restore_image(img, m, noise=NOISE))
    # Alternate ours and the peer, so that both see the same share of a shared machine.
    ours, theirs = [], []
    for _ in range(reps):
        ours.append(timed(lambda: restore.restore_image(img, m, noise=NOISE)))
        theirs.append(timed(peer))
    t_warm, c_warm = statistics.median(o[0] for o in ours), statistics.median(o[1] for o in ours)
    t_sk, c_sk = statistics.median(o[0] for o in theirs), statistics.median(o[1] for o in theirs)
    r = ours[-1][2]
    mp = f"{w * h / 1e6:.0f} MP"
    label = f"wiener {mp} RGB, 9x6x3 map 41x41, {r.tile_count} tiles {r.tile_fft_px[0]}x{r.tile_fft_px[1]}"
    peer = f"skimage wiener 1 PSF/ch (med. {reps})"
    return [
        (label + " (cold)", t_cold, c_cold, peer, t_sk, c_sk),
        (label + f" (warm, median of {reps})", t_warm, c_warm, peer, t_sk, c_sk),
    ]


def bench_rl(reps: int) -> tuple[tuple, str]:
    """RL on a 1 MP grey crop blurred by the map's PSF at that field position."""
    from scipy.signal import fftconvolve
    from skimage import restoration

    m = true_map()
    g = np.ascontiguousarray(photo(1000, 1000, noisy=False)[..., 1])
    field = (1200.0, 900.0)  # a mid-field point of the 24 MP frame, well blurred
    psf = m.psf_at(*field, "G")
    r = psf.shape[0] // 2
    rng = np.random.default_rng(1)
    blur = fftconvolve(np.pad(g, r, mode="symmetric"), psf, mode="valid")
    blur = (blur + NOISE * rng.standard_normal(g.shape)).astype(np.float32)
    t_sk, c_sk, sk_out = timed(lambda: restoration.richardson_lucy(blur, psf, num_iter=30, clip=False), reps)
    target = psnr(sk_out, g)
    cm = calib.PSFMap(psf[None, None, None], np.array([[[499.5, 499.5]]]), ("Y",), (1000, 1000))
    n_used, opts = None, None
    for n in range(1, 31):
        o = {"iterations": n, "tol": 0.0, "discrepancy": False, "damping": 0.0}
        out = restore.restore_image(blur, cm, method="rl", noise=NOISE, options=o, saturated=False)
        if psnr(out.image, g) >= target:
            n_used, opts = n, o
            break
    if opts is None:
        return ("rl: never reached skimage's PSNR in 30 iterations", float("nan"), float("nan"),
                "skimage richardson_lucy 30 it", t_sk, c_sk), f"skimage 30 it: {target:.2f} dB (blurred {psnr(blur, g):.2f} dB)"
    t_rl, c_rl, out = timed(
        lambda: restore.restore_image(blur, cm, method="rl", noise=NOISE, options=opts, saturated=False), reps
    )
    note = (f"RL target: skimage 30 it {target:.2f} dB, ours {psnr(out.image, g):.2f} dB after {n_used} it "
            f"(blurred {psnr(blur, g):.2f} dB); PSF at field {field}")
    return (f"rl 1 MP grey to skimage's 30-it PSNR ({n_used} it)", t_rl, c_rl,
            f"skimage richardson_lucy 30 it (med. {reps})", t_sk, c_sk), note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 MP instead of 24 MP, no 100 MP")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    w, h = (3000, 2000) if args.quick else (6000, 4000)
    reps = 3
    rows = bench_wiener(w, h, reps)
    rl_row, rl_note = bench_rl(reps)
    rows.append(rl_row)
    mem = [(f"{w * h / 1e6:.0f} MP RGB, float32 in + out", *child_peak_gb(w, h, "np.float32"))]
    if not args.quick:
        mem.append(("100 MP RGB (12240x8160), float32 in, uint16 out", *child_peak_gb(12240, 8160, "np.uint16")))
    print(f"lenspsf restore bench — FFT backend {_fft.BACKEND}, {_fft.WORKERS} cores, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print(f"command: .venv/bin/python bench/bench_restore.py{' --quick' if args.quick else ''}")
    print()
    print(f"| {'case':70s} | ours wall / CPU s | {'peer':30s} | peer wall / CPU s | speed-up wall, CPU |")
    print(f"|{'-' * 72}|-------------------|{'-' * 32}|-------------------|--------------------|")
    for name, a, ac, peer, b, bc in rows:
        print(f"| {name:70s} | {a:7.2f} / {ac:7.2f} | {peer:30s} | {b:7.2f} / {bc:7.2f} | "
              f"{b / a:6.1f}x, {bc / ac:5.1f}x  |")
    print()
    print(rl_note)
    print()
    print("| peak memory (child process)                       | photo in memory | peak RSS |")
    print("|---------------------------------------------------|-----------------|----------|")
    for name, base, peak in mem:
        print(f"| {name:49s} | {base:12.2f} GB | {peak:5.2f} GB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory": mem, "rl": rl_note}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
