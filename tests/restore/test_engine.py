import numpy as np
import pytest
from restore_synth import blur_with_map, constant_map, disc_psf, gaussian_psf, psnr, scene, soft_corner_map

import calib
import restore
from restore import RestoreError, restore_image


@pytest.mark.parametrize("method", ["wiener", "tikhonov", "tv"])
def test_tiled_restore_equals_the_global_one_without_seams(noisy, method):
    img = scene("astronaut", (200, 280), rgb=True)
    psf = gaussian_psf(15, 2.0)
    m = constant_map(psf, 280, 200, ("R", "G", "B"))
    obs = noisy(blur_with_map(img, m))
    whole = restore_image(obs, m, method=method, noise=0.005, tile=4096)
    tiled = restore_image(obs, m, method=method, noise=0.005, tile=96)
    assert whole.tile_count == 1 and tiled.tile_count > 9
    assert psnr(tiled.image, whole.image, border=24) > 50.0


def test_rl_with_a_fixed_iteration_count_tiles_without_seams(noisy):
    img = scene("camera", (160, 200))
    m = constant_map(gaussian_psf(15, 2.0), 200, 160)
    obs = noisy(blur_with_map(img, m))
    opts = {"iterations": 10, "tol": 0.0, "discrepancy": False}
    whole = restore_image(obs, m, method="rl", noise=0.005, tile=4096, options=opts)
    tiled = restore_image(obs, m, method="rl", noise=0.005, tile=96, options=opts)
    assert psnr(tiled.image, whole.image, border=24) > 50.0


def _best_single_psf(obs, img, m, method):
    h, w = img.shape[:2]
    candidates = [
        m.psf_at((w - 1) / 2, (h - 1) / 2),
        m.psf[0].mean(axis=(0, 1)),
        m.psf_at(0.75 * w, 0.75 * h),
    ]
    best = -np.inf
    for p in candidates:
        cm = constant_map(p / p.sum(), w, h)
        for s in (0.25, 0.5, 1, 2, 4, 8, 16):
            r = restore_image(obs, cm, method=method, strength=s, tile=4096)
            best = max(best, psnr(r.image, img, border=12))
    return best


def test_true_map_beats_the_best_single_psf_by_3db_on_a_soft_cornered_lens(noisy):
    img = scene("astronaut", (240, 360))
    m = soft_corner_map(360, 240)
    obs = noisy(blur_with_map(img, m))
    mapped = psnr(restore_image(obs, m, method="wiener").image, img, border=12)
    assert mapped >= _best_single_psf(obs, img, m, "wiener") + 3.0


def test_true_map_improves_on_the_blurred_photo_in_every_tile(noisy):
    img = scene("astronaut", (240, 360))
    m = soft_corner_map(360, 240)
    obs = noisy(blur_with_map(img, m))
    out = restore_image(obs, m, method="wiener").image
    for ys in np.array_split(np.arange(240), 3):
        for xs in np.array_split(np.arange(360), 4):
            sl = np.ix_(ys, xs)
            assert psnr(out[sl], img[sl]) > psnr(obs[sl], img[sl])


def test_tiles_are_smaller_where_the_psf_changes_faster():
    varying = soft_corner_map(360, 240)
    same_everywhere = np.broadcast_to(varying.psf[:, 1:2, 2:3], varying.psf.shape).copy()
    steady = calib.PSFMap(same_everywhere, varying.nodes_xy, varying.channels, varying.image_size)
    img = np.full((240, 360), 0.5, np.float32)
    fast = restore_image(img, varying, noise=0.005)
    slow = restore_image(img, steady, noise=0.005)
    assert fast.tile_count > slow.tile_count


def test_tv_beats_the_best_wiener_on_a_natural_scene(noisy):
    img = scene("astronaut", (192, 256))
    m = constant_map(disc_psf(15, 5.5), 256, 192)  # slightly missed focus
    obs = noisy(blur_with_map(img, m))
    best_wiener = max(
        psnr(restore_image(obs, m, method="wiener", strength=s).image, img, border=12)
        for s in (0.25, 0.5, 1, 2, 4, 8)
    )
    tv = psnr(restore_image(obs, m, method="tv").image, img, border=12)
    assert tv >= best_wiener + 0.5


def test_frame_edges_are_as_clean_as_the_centre(noisy):
    img = scene("camera", (200, 240))
    m = constant_map(gaussian_psf(15, 2.0), 240, 200)
    obs = noisy(blur_with_map(img, m))
    out = restore_image(obs, m).image
    edge = np.ones(img.shape, bool)
    edge[12:-12, 12:-12] = False
    centre = ~edge
    err = (out - img) ** 2
    assert err[edge].mean() < 2.0 * err[centre].mean()


def test_a_constant_image_stays_constant(rng):
    m = soft_corner_map(200, 150)
    r = restore_image(np.full((150, 200), 0.4, np.float32), m, noise=0.005, tile=96)
    assert np.allclose(r.image, 0.4, atol=1e-4)


def test_output_goes_into_a_uint16_buffer(noisy):
    img = scene("camera", (120, 160))
    m = constant_map(gaussian_psf(9, 1.2), 160, 120)
    obs = noisy(blur_with_map(img, m))
    ref = restore_image(obs, m, tile=64).image
    buf = np.zeros(obs.shape, np.uint16)
    restore_image(obs, m, tile=64, out=buf)
    assert np.abs(buf / 65535.0 - np.clip(ref, 0, 1)).max() < 2e-5


def test_progress_is_reported_per_tile_row(noisy):
    img = scene("camera", (200, 160))
    m = constant_map(gaussian_psf(9, 1.2), 160, 200)
    seen = []
    restore_image(noisy(img), m, tile=64, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == len(seen) > 1


def test_nan_in_the_image_is_refused_in_one_sentence():
    m = constant_map(gaussian_psf(9, 1.2), 64, 48)
    img = np.full((48, 64), 0.3, np.float32)
    img[10, 10] = np.nan
    with pytest.raises(RestoreError, match="NaN"):
        restore_image(img, m)


def test_strongly_negative_values_are_refused():
    m = constant_map(gaussian_psf(9, 1.2), 64, 48)
    with pytest.raises(RestoreError, match="below black"):
        restore_image(np.full((48, 64), -0.5, np.float32), m)


def test_an_image_of_another_size_than_the_calibration_is_refused():
    m = constant_map(gaussian_psf(9, 1.2), 64, 48)
    with pytest.raises(RestoreError, match="64x48"):
        restore_image(np.zeros((40, 64), np.float32), m)


def test_an_unknown_method_names_the_known_ones():
    m = constant_map(gaussian_psf(9, 1.2), 64, 48)
    with pytest.raises(RestoreError, match="wiener"):
        restore_image(np.zeros((48, 64), np.float32), m, method="magic")


def test_methods_are_registered_in_one_mapping():
    assert set(restore.METHODS) == {"wiener", "tikhonov", "rl", "tv"}


@pytest.fixture(scope="module")
def soft_zoom_shot():
    """The simulated soft-zoom lens, 20 focus steps behind best focus for 2 m (corners far
    softer than the centre): its true green map on the small sensor, a sharp scene, the photo."""
    import calib
    from scipy.ndimage import zoom
    from skimage import data

    cam = calib.SimulatedCamera("soft-zoom", "small")
    focus = round(cam.best_focus_position(2.0)) + 20
    full = cam.true_psf_map(focus_position=focus, object_distance_m=2.0, grid=(5, 7))
    m = calib.PSFMap(full.psf[1:2], full.nodes_xy, ("G",), full.image_size)
    grey = data.astronaut().astype(np.float32).mean(axis=-1) / 255.0
    img = (0.05 + 0.9 * np.clip(zoom(grey, (800 / 512, 1200 / 512), order=1), 0, 1)).astype(np.float32)
    rng = np.random.default_rng(20)
    obs = (blur_with_map(img, m) + 0.005 * rng.standard_normal(img.shape)).astype(np.float32)
    return m, img, obs


def test_true_soft_zoom_map_beats_the_best_single_psf_by_3db(soft_zoom_shot):
    m, img, obs = soft_zoom_shot
    mapped = psnr(restore_image(obs, m, method="wiener").image, img, border=12)
    assert mapped >= _best_single_psf(obs, img, m, "wiener") + 3.0


def test_a_clipped_highlight_in_the_frame_grows_no_halo(noisy):
    yy, xx = np.mgrid[:128, :160]
    sun = np.hypot(yy - 64, xx - 80) < 10
    img = np.where(sun, 3.0, 0.3).astype(np.float32)  # far brighter than white
    m = constant_map(gaussian_psf(15, 2.0), 160, 128)
    obs = np.minimum(noisy(blur_with_map(img, m)), 1.0).astype(np.float32)
    ring = (np.hypot(yy - 64, xx - 80) > 14) & (np.hypot(yy - 64, xx - 80) < 24)
    kept = restore_image(obs, m, noise=0.005, tile=96).image
    ignored = restore_image(obs, m, noise=0.005, tile=96, saturated=False).image
    halo = lambda out: float(np.abs(out[ring] - 0.3).mean())  # noqa: E731
    assert halo(kept) < 0.7 * halo(ignored)
