"""Slanted-edge MTF50 accuracy sweep against the analytic truth, and time per edge.

Prints per case the true and measured MTF50 and the worst SFR error up to Nyquist,
then the median / 95th percentile errors (goal: 1 % / 2 %; SFR within 0.02 of the true
MTF up to Nyquist) and the CPU time per edge, at each noise level asked for (default
0.5 % and 1 % of white, Poisson-like: 1 % is a well-exposed chart at base ISO).
The time for a whole 24 MP edges chart is in ``bench/bench_edges_chart.py``.

    .venv/bin/python bench/bench_edge.py [--noise 0.005 0.01] [--size 100] [--seed 1] [--quiet]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calib import measure_edge  # noqa: E402
from calib._edge import render_slanted_edge, true_edge_mtf  # noqa: E402


def _sigma_for(mtf50: float, angle: float) -> float:
    def m50(s):
        return brentq(lambda f: true_edge_mtf(np.array([f]), angle, s)[0] - 0.5, 1e-4, 1.0)

    return brentq(lambda s: m50(s) - mtf50, 0.01, 10.0)


def sweep(noise: float, size: int, seed: int, quiet: bool) -> None:
    rng = np.random.default_rng(seed)
    errs, curve, times = [], [], []
    if not quiet:
        print(f"{'angle':>6} {'true':>6} {'meas':>7} {'err%':>7} {'sfr_err':>8}")
    for angle in (3, 5, 8, 12, 17, 22, 26, 30, 35, 40):
        for m50 in (0.1, 0.2, 0.3, 0.4, 0.5):
            s = _sigma_for(m50, angle)
            c = ((size - 1) / 2 + rng.uniform(-1, 1), (size - 1) / 2)
            img = render_slanted_edge((size, size), angle, s, noise=noise, rng=rng, centre_xy=c)
            t0 = time.process_time()
            r = measure_edge(img)
            times.append(time.process_time() - t0)
            e = r.mtf50_cpp["Y"] / m50 - 1
            f = r.freq_cpp
            ce = float(np.max(np.abs(r.mtf_of("Y") - true_edge_mtf(f, angle, s))[f <= 0.5]))
            errs.append(abs(e))
            curve.append(ce)
            if not quiet:
                print(f"{angle:6.1f} {m50:6.2f} {r.mtf50_cpp['Y']:7.4f} {100 * e:+7.2f} {ce:8.3f} {' '.join(r.all_flags())}")
    errs = np.asarray(errs)
    print(
        f"noise {100 * noise:.1f} %: MTF50 error: median {100 * np.median(errs):.2f} %, "
        f"95th {100 * np.percentile(errs, 95):.2f} %, max {100 * errs.max():.2f} %; SFR error to Nyquist: "
        f"median {np.median(curve):.3f}, 95th {np.percentile(curve, 95):.3f}; "
        f"{1000 * np.median(times):.1f} ms CPU per {size}x{size} edge", flush=True
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.005, 0.01],
                    help="noise sigma at white (Poisson-like), one sweep per value")
    ap.add_argument("--size", type=int, default=100, help="ROI side, px")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="only the summary lines")
    a = ap.parse_args()
    for noise in a.noise:
        sweep(noise, a.size, a.seed, a.quiet)


if __name__ == "__main__":
    main()
