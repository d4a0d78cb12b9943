"""MTF accuracy against the simulated camera: stripe MTF errors, best-focus errors, edge MTF50.

Usage: ``python bench/bench_mtf.py [--quick]``.

Stripes: every grating patch of a stripes chart shot by the simulated camera (each lens
profile, with its distortion), measured with ``calib.measure_stripes`` and compared with
the MTF of ``true_psf`` at the patch centre (``psf_mtf`` of the renderer's own kernel, at
``render_oversample``, times the box over which the renderer averages the chart), and with
the MTF of the true PSF averaged over the analysed window (what a patch-sized measurement
sees where the PSF changes across the field). Target: |error| < 0.02.

Through focus: ``calib.through_focus`` on true PSF maps and on stripe shots at several
focus positions, best focus per zone and channel against ``best_focus_position``.
Target: < 1 focus step.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

import targets
from calib import (
    SENSOR_PRESETS, Calibration, CalibrationKey, SimulatedCamera, measure_stripes, through_focus,
)
from calib._mtf_psf import psf_mtf

DIST_M = 2.0


def _camera(lens: str, w: int, h: int, oversample: int = 5) -> SimulatedCamera:
    sensor = dataclasses.replace(SENSOR_PRESETS["small"], name=f"bench{w}x{h}", width_px=w, height_px=h)
    return SimulatedCamera(lens, sensor, seed=7, render_oversample=oversample, render_grid=(5, 7))


def _stripes_layout(cam: SimulatedCamera, profile: str) -> targets.Layout:
    w, h = cam.image_size
    px_per_mm = 0.85 * min(w / 297.0, h / 210.0)
    return targets.make_layout("stripes", paper="A4", landscape=True, field=(2, 1), profile=profile,
                               frequencies_cpmm=[round(f * px_per_mm, 4) for f in (0.1, 0.25, 0.42)],
                               orientations_deg=(0.0, 90.0, 30.0))


def _truths(cam, lay, res, focus):
    centre_err, avg_err = [], []
    for pr in res.patches:
        p = lay.stripes[pr.index]
        side_px = (p.x1_mm - p.x0_mm) * 0.85 * min(cam.image_size[0] / 297.0, cam.image_size[1] / 210.0)
        offs = np.linspace(-0.3, 0.3, 3) * side_px
        for r in pr.records:
            if r.flags:
                continue
            # The renderer's own operator: its PSFs at render_oversample (another sampling
            # windows the PSF differently) times the box of 1/render_oversample px over
            # which it averages the chart (the grating's modulation includes it).
            s = cam.render_oversample
            kw = dict(focus_position=focus, object_distance_m=DIST_M, oversample=s)
            t = np.radians(r.orientation_deg)
            box = np.abs(np.sinc(r.freq_cpp * np.cos(t) / s) * np.sinc(r.freq_cpp * np.sin(t) / s))
            psf = cam.true_psf(r.x_px, r.y_px, r.channel, **kw)
            _, t0 = psf_mtf(psf, r.orientation_deg, sampling=s, freq_cpp=r.freq_cpp)
            t0 = t0 * box
            k = psf.shape[0]
            mean = np.zeros((k, k))
            for dy in offs:
                for dx in offs:
                    mean += cam.true_psf(r.x_px + dx, r.y_px + dy, r.channel, size=k, **kw)
            _, t1 = psf_mtf(mean, r.orientation_deg, sampling=s, freq_cpp=r.freq_cpp)
            t1 = t1 * box
            centre_err.extend(r.mtf - t0)
            avg_err.extend(r.mtf - t1)
    return np.abs(centre_err), np.abs(avg_err)


def bench_stripes(quick: bool) -> None:
    print("stripe MTF vs truth (|measured - true|; 400x280 px sensor, chart rendered 5x, noise on)")
    print(f"{'lens':<12} {'profile':<7} {'n':>4} {'max':>7} {'p95':>7} {'rms':>7} | {'max(avg PSF)':>12} {'p95':>7}  time")
    cases = [("sharp-prime", "sine")] if quick else [
        (lens, prof) for lens in ("sharp-prime", "soft-zoom", "vintage") for prof in ("sine", "square")]
    for lens, prof in cases:
        cam = _camera(lens, 400, 280)
        lay = _stripes_layout(cam, prof)
        focus = round(cam.best_focus_position(DIST_M))
        shot = cam.shoot(lay, focus_position=focus, object_distance_m=DIST_M)
        t0 = time.perf_counter()
        res = measure_stripes(shot.rgb_linear, lay, shot.homography)
        dt = time.perf_counter() - t0
        e0, e1 = _truths(cam, lay, res, focus)
        print(f"{lens:<12} {prof:<7} {len(e0):>4} {e0.max():7.4f} {np.percentile(e0, 95):7.4f} "
              f"{np.sqrt(np.mean(e0**2)):7.4f} | {e1.max():12.4f} {np.percentile(e1, 95):7.4f}  "
              f"{dt * 1000:.0f} ms ({len(res.patches)} patches x 3 ch); flagged patches: {len(res.flagged())}",
              flush=True)


def _zone_truth(cam, tf, zone, channel):
    """True best focus averaged over the nodes ``through_focus`` assigns to ``zone``."""
    nodes = [tf.nodes_xy[n] for n in tf.zone_nodes[zone]]
    pts = [xy for xy in nodes if np.all(np.isfinite(xy))]
    if not pts:
        return float("nan")
    return float(np.mean([cam.best_focus_position(DIST_M, field_xy=tuple(xy), channel=channel) for xy in pts]))


def _report_tf(cam, tf, label):
    errs = []
    for zone in tf.zones:
        row = []
        for ch in tf.channels:
            b = tf.best_focus_of(zone, ch)
            e = b - _zone_truth(cam, tf, zone, ch)
            row.append(f"{ch} {e:+.2f}" if np.isfinite(e) else f"{ch}  n/a ")
            if np.isfinite(e):
                errs.append(abs(e))
        print(f"  {label:<28} {zone:<7} " + "  ".join(row))
    lc = tf.longitudinal_colour_steps()
    print(f"  {label:<28} max |error| {max(errs):.2f} steps over {len(errs)} zone/channel fits; "
          f"longitudinal colour R {lc['R']:+.1f} B {lc['B']:+.1f} steps", flush=True)


def bench_through_focus(quick: bool) -> None:
    print("\nbest focus per zone: measured - true (focus steps; target < 1)")
    lenses = ("sharp-prime",) if quick else ("sharp-prime", "soft-zoom", "vintage")
    for lens in lenses:
        cam = _camera(lens, 240, 160, oversample=1)
        c0 = round(cam.best_focus_position(DIST_M))
        spread = abs(cam.best_focus_position(DIST_M, field_xy=(0, 0), channel="B") - cam.best_focus_position(DIST_M, channel="R"))
        step = max(2, int(round((spread + 8) / 6)))
        positions = [c0 + step * k for k in range(-4, 3)]
        cals = [Calibration(key=CalibrationKey("sim", lens, 50.0, 4.0, p),
                            psf_map=cam.true_psf_map(focus_position=p, object_distance_m=DIST_M, grid=(3, 5), oversample=3))
                for p in positions]
        _report_tf(cam, through_focus(cals, method="psf"), f"{lens} psf ({len(positions)} pos, step {step})")
    if quick:
        return
    cam = _camera("sharp-prime", 400, 280)
    lay = _stripes_layout(cam, "sine")
    c0 = round(cam.best_focus_position(DIST_M))
    records = {}
    for p in range(c0 - 8, c0 + 5, 3):
        shot = cam.shoot(lay, focus_position=p, object_distance_m=DIST_M)
        records[p] = measure_stripes(shot.rgb_linear, lay, shot.homography).records
    tf = through_focus(records, method="stripes", image_size=cam.image_size, grid=(1, 2))
    _report_tf(cam, tf, "sharp-prime stripes (5 shots)")


def bench_edge() -> None:
    try:
        from calib import measure_edge
        from calib._edge import render_slanted_edge, true_edge_mtf
    except ImportError:
        print("\n(edge: calib._edge has no synthetic edge helpers; see bench_edge.py)")
        return
    print("\nslanted edge MTF50 (calib.measure_edge on exact synthetic edges, noise 0.005)")
    rng = np.random.default_rng(5)
    errs = []
    for angle in (3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 40.0):
        for sigma in (0.5, 0.8, 1.2):
            img = render_slanted_edge((120, 120), angle, sigma, noise=0.005, rng=rng)
            res = measure_edge(img)
            f = np.linspace(0, 1, 2001)
            t = true_edge_mtf(f, angle, sigma)
            true50 = float(f[np.nonzero(t < 0.5)[0][0]])
            ch = res.channels[0]
            errs.append(abs(res.mtf50_cpp[ch] / true50 - 1))
    errs = np.array(errs)
    print(f"  {len(errs)} edges: median {np.median(errs) * 100:.2f} %, p95 {np.percentile(errs, 95) * 100:.2f} %")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one lens, fewer cases")
    args = parser.parse_args()
    t0 = time.perf_counter()
    bench_stripes(args.quick)
    bench_through_focus(args.quick)
    bench_edge()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
