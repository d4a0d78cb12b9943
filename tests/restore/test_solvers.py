import numpy as np
import pytest
from restore_synth import NOISE, gaussian_psf, psnr, scene
from scipy.signal import fftconvolve

from restore import METHODS, _fft
from restore._solvers import TileProblem


def _problem(rng, method_options=None, clip=None):
    img = scene("camera", (128, 128))
    psf = gaussian_psf(15, 2.0)
    blur = fftconvolve(np.pad(img, 7, mode="wrap"), psf, mode="valid")
    y = (blur + NOISE * rng.standard_normal(img.shape)).astype(np.float32)
    mask = None
    if clip is not None:
        mask = (y < clip).astype(np.float32)
        y = np.minimum(y, clip)
    return img, y, TileProblem(y, _fft.psf2otf(psf, y.shape), NOISE, 1.0, mask, method_options or {})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_sharpens_a_blurred_noisy_tile(rng, method):
    img, y, prob = _problem(rng)
    x = METHODS[method](prob)
    assert x.shape == y.shape and x.dtype == np.float32
    assert psnr(x, img) > psnr(y, img) + 1.0


def test_rl_stops_early_by_the_discrepancy_rule(rng):
    img, y, prob = _problem(rng, {"iterations": 200, "tol": 0.0})
    free = METHODS["rl"](TileProblem(y, prob.otf, NOISE, 1.0, None, {"iterations": 200, "tol": 0.0, "discrepancy": False, "damping": 0.0}))
    stopped = METHODS["rl"](prob)
    # Unstopped, undamped RL amplifies noise; the stop rule keeps the result closer to the truth.
    assert psnr(stopped, img) > psnr(free, img)


def test_larger_strength_gives_a_smoother_result(rng):
    img, y, prob = _problem(rng)
    sharp = METHODS["wiener"](prob)
    prob.strength = 30.0
    smooth = METHODS["wiener"](prob)
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(sharp, axis=1)).mean()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_clipped_pixels_left_out_of_the_data_term_leave_no_halo(rng, method):
    img = np.full((96, 96), 0.2, np.float32)
    img[44:52, 44:52] = 4.0  # a lamp far above white
    psf = gaussian_psf(15, 2.0)
    blur = fftconvolve(np.pad(img, 7, mode="wrap"), psf, mode="valid")
    y = np.minimum(blur + NOISE * rng.standard_normal(img.shape), 1.0).astype(np.float32)
    otf = _fft.psf2otf(psf, y.shape)
    clipped = (y >= 0.999).astype(np.float32)
    ring = np.zeros_like(img, bool)
    ring[34:62, 34:62] = True
    ring[40:56, 40:56] = False
    naive = METHODS[method](TileProblem(y, otf, NOISE, 1.0, None, {}))
    masked = METHODS[method](TileProblem(y, otf, NOISE, 1.0, 1.0 - clipped, {}))
    halo = lambda x: float(np.abs(x[ring] - 0.2).mean())  # noqa: E731
    assert halo(masked) < 0.5 * halo(naive)
