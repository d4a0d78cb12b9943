import numpy as np
from scipy.signal import fftconvolve

from restore import _fft


def test_psf2otf_blurs_like_direct_convolution_without_shift(rng):
    img = rng.random((64, 80)).astype(np.float32)
    psf = rng.random((7, 7)).astype(np.float32)
    psf /= psf.sum()
    otf = _fft.psf2otf(psf, img.shape)
    circ = _fft.irfft2(_fft.rfft2(img) * otf, img.shape)
    direct = fftconvolve(np.pad(img, 3, mode="wrap"), psf, mode="valid")
    assert np.allclose(circ, direct, atol=1e-5)


def test_psf2otf_keeps_the_lateral_offset_of_an_off_centre_psf():
    psf = np.zeros((5, 5), np.float32)
    psf[2, 3] = 1.0  # centroid one pixel right of the middle sample
    img = np.zeros((16, 16), np.float32)
    img[8, 8] = 1.0
    out = _fft.irfft2(_fft.rfft2(img) * _fft.psf2otf(psf, img.shape), img.shape)
    assert np.unravel_index(np.argmax(out), out.shape) == (8, 9)


def test_transforms_stay_single_precision(rng):
    x = rng.random((30, 40)).astype(np.float32)
    spec = _fft.rfft2(x)
    assert spec.dtype == np.complex64
    back = _fft.irfft2(spec, x.shape)
    assert back.dtype == np.float32 and np.allclose(back, x, atol=1e-5)


def test_fast_len_is_at_least_n_and_smooth():
    for n in (97, 257, 1000, 1031):
        m = _fft.fast_len(n)
        f = m
        for p in (2, 3, 5):
            while f % p == 0:
                f //= p
        assert m >= n and f == 1


def test_otf_cache_returns_the_stored_otf_for_an_equal_psf(rng):
    cache = _fft.OTFCache()
    psf = rng.random((5, 5)).astype(np.float32)
    a = cache.otf(psf, (32, 32))
    b = cache.otf(psf.copy(), (32, 32))
    assert a is b
    assert cache.otf(psf, (32, 48)) is not a


def test_otf_cache_evicts_other_groups_first_when_full(rng):
    cache = _fft.OTFCache(max_bytes=3 * 32 * 17 * 8)
    psfs = [rng.random((3, 3)).astype(np.float32) for _ in range(4)]
    old = cache.otf(psfs[0], (32, 32), group="old map")
    for p in psfs[1:]:
        cache.otf(p, (32, 32), group="new map")
    assert cache.otf(psfs[0], (32, 32), group="new map") is not old
    assert cache.nbytes <= cache.max_bytes


def test_otf_cache_keeps_its_first_entries_when_one_group_overflows_it(rng):
    cache = _fft.OTFCache(max_bytes=3 * 32 * 17 * 8)
    psfs = [rng.random((3, 3)).astype(np.float32) for _ in range(5)]
    first = [cache.otf(p, (32, 32), group="map") for p in psfs]
    again = [cache.otf(p, (32, 32), group="map") for p in psfs]
    assert [a is b for a, b in zip(first, again)] == [True, True, True, False, False]


def test_otf_variance_is_the_quarter_power_of_the_psf_differences_summed_over_axes(rng):
    deltas = rng.standard_normal((3, 2, 7, 7)).astype(np.float32)
    shape = (41, 36)
    var = _fft.otf_variance(deltas, shape)
    direct = sum(np.abs(_fft.psf2otf(deltas[:, a], shape)) ** 2 for a in range(2)) / 4
    assert all(np.allclose(var[c], direct[c], atol=1e-4 * direct.max()) for c in range(3))


def test_filter_built_from_psfs_equals_the_regularised_inverse_of_their_otf(rng):
    psfs = rng.random((2, 5, 5)).astype(np.float32)
    psfs /= psfs.sum(axis=(1, 2), keepdims=True)
    shape = (24, 30)
    prior = _fft.gradient_power(shape)
    weights = np.array([0.01, 0.05], np.float32)
    built = _fft.inverse_filter_from_psfs(psfs, shape, prior, weights, normalised=True)
    reference = _fft.inverse_filter(_fft.psf2otf(psfs, shape), prior, weights) / (shape[0] * shape[1])
    assert np.allclose(built, reference, rtol=1e-4, atol=1e-7)


def test_inverse_transform_of_chosen_rows_matches_those_rows_of_the_full_one(rng):
    tile = rng.random((30, 26, 3)).astype(np.float32)
    spec = _fft.rfft2_planar(tile)
    rows = _fft.irfft2_interleaved(spec.copy(), (30, 26), rows=slice(4, 21))
    assert np.allclose(rows, tile[4:21], atol=1e-5)
