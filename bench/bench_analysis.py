"""Analysis accuracy on the simulated camera: per-node relative L2 of the dots-chart PSF map
against the true map (green-centroid centred), lateral-colour and distortion errors, time;
the PSF-vs-edge cross-check of that map against an edges chart shot at the same setting;
then the analysis time of a 24 MP dots capture (a synthetic blurred render, timing only).

The chart's dots field overfills the frame by 6 % (the page by about 1.7: a page fill of
1.3 left the dots 25-80 px short of the frame edges, so edge and corner nodes were
extrapolated); its inner markers keep it registrable. Frame real charts the same way.

Run: ``.venv/bin/python bench/bench_analysis.py [--skip-24mp] [--workers N] [--defocus STEPS]
[--lens sharp-prime|soft-zoom|vintage] [--grid NY,NX|auto] [--skip-edges] [--render-oversample S]``
(default 5 scene samples per pixel) (slow: renders shots). Times are wall and CPU seconds (the CPU figure does not depend on other load).
"""
from __future__ import annotations

import sys
import time

import numpy as np

import calib
import targets


def _centroids(p: np.ndarray) -> np.ndarray:
    ax = np.arange(p.shape[-1]) - p.shape[-1] // 2
    return np.stack([(p.sum(-2) * ax).sum(-1), (p.sum(-1) * ax).sum(-1)], -1)


def main() -> None:
    # ~1 px dots need a fine scene. At 3 samples per pixel the renderer's cells (each
    # area-averaged, then treated as a point) lose a sub-pixel dot's detail near 1 c/px,
    # which the dots solve reads as blur: one PSF rendered everywhere came back 4.7 % off
    # at 3, 1.0 % at 5 and at 9 (soft-zoom's centre, green, no noise). A real chart is
    # continuous, so the figures are measured at 5.
    cam = calib.SimulatedCamera(LENS, "small", seed=1, render_oversample=RENDER_OVERSAMPLE)
    probe = targets.make_layout("dots", paper="300x200mm")  # the sensor's 3:2 aspect
    fill = cam.dots_field_fill(probe)  # the dots field 6 % beyond the frame, as the demo frames it
    dist = cam.chart_distance_m(probe, fill=fill)
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=cam.sensor.pixel_pitch_um,
                                 focal_mm=cam.focal_length_mm, distance_m=dist)
    fp = round(cam.best_focus_position(dist)) + DEFOCUS
    shot = cam.shoot(layout, focus_position=fp, object_distance_m=dist, fill=fill)
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    t0, c0 = time.perf_counter(), time.process_time()
    res = calib.analyze_images([img], layout, grid=GRID, workers=WORKERS)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    grid = res.psf_map.grid_shape
    grid_map = res.psf_map.on_sensor_grid()
    k = grid_map.kernel_size
    truth = cam.true_psf_map(focus_position=fp, object_distance_m=dist, grid=grid, size=k)
    est, tru = grid_map.psf, truth.psf
    err = np.linalg.norm((est - tru).reshape(3, *grid, -1), axis=-1) / np.linalg.norm(tru.reshape(3, *grid, -1), axis=-1)
    measured = (res.psf_map.flags[1] & calib.FLAG_FILLED) == 0
    print(f"focus {fp} ({DEFOCUS:+d} from best): analysis time {dt:.1f} s wall, {dc:.1f} s CPU for "
          f"{cam.image_size[0]}x{cam.image_size[1]}, PSF {k}x{k}, {grid[0]}x{grid[1]} nodes")
    for c, name in enumerate("RGB"):
        e = err[c][measured]
        print(f"dots rel L2 {name}: median {np.median(e):.3f} worst {e.max():.3f} (measured nodes {measured.sum()})")
    for c, name in enumerate("RGB"):
        print(f"per-node {name} error:\n", np.round(err[c], 3))
    ca = np.abs((_centroids(est[0]) - _centroids(est[2])) - (_centroids(tru[0]) - _centroids(tru[2])))
    print(f"R-B centroid error of the PSF map (sensor-grid centroids): max {ca[measured].max():.3f} px")
    pm = res.psf_map
    fine_truth = cam.true_psf_map(focus_position=fp, object_distance_m=dist, grid=grid, size=pm.kernel_size,
                                  oversample=pm.sampling)
    stored = _centroids(pm.psf) / pm.sampling
    cf = (stored[0] - stored[2]) - (_centroids(fine_truth.psf[0]) - _centroids(fine_truth.psf[2])) / pm.sampling
    cf = np.hypot(cf[..., 0], cf[..., 1])
    print(f"R-B centroid error of the PSF map as stored ({pm.sampling} samples/px, continuous centroids) "
          f"vs the true PSFs cut to the map's {pm.kernel_size // pm.sampling + 1} px: "
          f"max {cf[measured].max():.3f} median {np.median(cf[measured]):.3f} px")
    # The true PSF's centroid is the whole PSF's: light beyond the map's kernel moves it.
    lat = res.lateral_colour_px
    kw = dict(focus_position=fp, object_distance_m=dist)
    errs = np.zeros((2, *lat.shape[1:3]))
    for i, row in enumerate(res.psf_map.nodes_xy):
        for j, (x, y) in enumerate(row):
            r, b = cam.true_psf_centroid(x, y, "R", **kw), cam.true_psf_centroid(x, y, "B", **kw)
            true_rb = np.array([r.x_px - b.x_px, r.y_px - b.y_px])
            errs[:, i, j] = [np.hypot(*(lat[0, i, j] - lat[2, i, j] - true_rb)),
                             np.hypot(*(stored[0, i, j] - stored[2, i, j] - true_rb))]
    for name, e in (("lateral colour from dot centroids", errs[0]), ("PSF map as stored", errs[1][measured])):
        print(f"R-B {name} vs the true PSFs' centroids: max {np.nanmax(e):.3f} median {np.nanmedian(e):.3f} px")
    # A dot is recorded where its green PSF's centroid lies; off axis that is not the
    # chief ray (coma moves it by up to ~0.7 px on the soft lenses), so both are shown.
    dots = cam.true_dot_positions(layout, shot)
    fit_xy = res.registration.chart_to_image(dots.chart_mm)
    for name, ref in (("true dot positions (green PSF centroids)", dots.recorded_px),
                      ("chief-ray positions", dots.chief_ray_px)):
        de = np.hypot(*(fit_xy - ref).T)
        print(f"distortion/registration vs {name}: {len(dots.chart_mm)} dots in the frame, rms "
              f"{np.sqrt((de**2).mean()):.3f} px max {de.max():.3f} px")
    print(f"registration residual over {res.registration.n_points} measured dots: rms "
          f"{res.registration.residual_rms_px:.3f} px max {res.registration.residual_max_px:.3f} px")
    if "--skip-edges" not in sys.argv:
        edge_crosscheck(cam, fp, dist, res.psf_map)


def edge_crosscheck(cam: calib.SimulatedCamera, fp: int, dist: float, measured: calib.PSFMap) -> None:
    """The issue-5 cross-check with a measured map: an edges chart shot at the same focus
    and distance, its slanted-edge SFRs (registered from the photo, as a user would) against
    the MTF of the dots map's PSF at each edge (``psf_edge_agreement``, up to Nyquist/2),
    and the same for the true map: what the comparison itself contributes."""
    layout = targets.make_layout("edges", paper="300x200mm", grid=(8, 5), square_fraction=0.55,
                                 tilts_deg=(5.0, -12.0, 20.0, -33.0, 8.0, 38.0))
    shot = cam.shoot(layout, focus_position=fp, object_distance_m=dist, fill=0.97)
    t0 = time.perf_counter()
    reg = calib.register_chart(shot.rgb_linear[..., 1], layout)
    res = calib.measure_chart_mtf(shot.rgb_linear, layout, reg)
    dt = time.perf_counter() - t0
    true_map = cam.true_psf_map(focus_position=fp, object_distance_m=dist, grid=measured.grid_shape,
                                size=measured.kernel_size, oversample=measured.sampling)
    print(f"PSF-vs-edge (max |MTF_psf - SFR| up to Nyquist/2 per node and channel; goal 0.03): "
          f"{len(res.clean_records())} clean edge records, measured in {dt:.1f} s")
    for name, pm in (("dots map", measured), ("true map", true_map)):
        agree = calib.psf_edge_agreement(pm, res.records)
        for ch in pm.channels:
            d = np.array([a.max_abs_diff for a in agree if a.channel == ch])
            print(f"  {name} {ch}: median {np.median(d):.3f} max {d.max():.3f} over {len(d)} nodes, "
                  f"{int((d <= 0.03).sum())} within 0.03")


def time_24mp() -> None:
    """Analysis time of one 6000x4000 dots capture (a rendered chart blurred by a Gaussian,
    red and blue a little larger and smaller than green).

    The chart is made for the framing (3.9 um pixels, 50 mm lens, the distance at which
    the page overfills the frame by FILL), so its dots image to about a pixel.
    """
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    w, h = 6000, 4000
    page_w, page_h = 300.0, 200.0
    k = FILL * max(w / page_w, h / page_h)
    pitch_um, focal_mm = 3.9, 50.0
    distance_m = (focal_mm * 1000 / pitch_um / k + focal_mm) / 1000
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=pitch_um, focal_mm=focal_mm,
                                 distance_m=distance_m)
    hom = np.array([[k, 0, w / 2 - k * page_w / 2], [0, k, h / 2 - k * page_h / 2], [0, 0, 1.0]])
    rng = np.random.default_rng(0)
    chans = []
    # Red and blue magnified about the centre (lateral colour, 0.7-0.9 px at the corners),
    # so the solves move their samples back as a real lens needs them to.
    for sigma, magnification in ((1.1, 2e-4), (1.0, 0.0), (1.2, -2.5e-4)):
        zoom = np.array([[1 + magnification, 0, -magnification * w / 2],
                         [0, 1 + magnification, -magnification * h / 2], [0, 0, 1.0]])
        chans.append(gaussian_filter(targets.render_layout(layout, (h, w), homography=zoom @ hom, supersample=2),
                                     sigma))
    rgb = np.stack(chans, -1).astype(np.float32) * 0.8
    rgb += rng.standard_normal(rgb.shape).astype(np.float32) * 0.003
    img = calib.LinearImage(rgb, ("R", "G", "B"), 0, 1, rgb >= 0.999, calib.ShotMetadata(camera="synthetic"))
    t0, c0 = time.perf_counter(), time.process_time()
    res = calib.analyze_images([img], layout, grid=(6, 9), workers=WORKERS)
    print(f"24 MP analysis time {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU "
          f"(PSF {res.psf_map.on_sensor_grid().kernel_size} px on the sensor grid, "
          f"{res.registration.n_points} dots registered)")


FILL = 1.3  # the 24 MP timing render's page fill
WORKERS = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else None
DEFOCUS = int(sys.argv[sys.argv.index("--defocus") + 1]) if "--defocus" in sys.argv else 0
RENDER_OVERSAMPLE = int(sys.argv[sys.argv.index("--render-oversample") + 1]) if "--render-oversample" in sys.argv else 5
LENS = sys.argv[sys.argv.index("--lens") + 1] if "--lens" in sys.argv else "sharp-prime"
# PSF map nodes (ny, nx); a lens whose PSF changes fast across the field needs more
GRID = sys.argv[sys.argv.index("--grid") + 1] if "--grid" in sys.argv else "6,9"
GRID = GRID if GRID == "auto" else tuple(int(v) for v in GRID.split(","))

if __name__ == "__main__":
    main()
    if "--skip-24mp" not in sys.argv:
        time_24mp()
