import numpy as np
import pytest

from restore import plan_tiles


def _weight_sum(axis):
    total = np.zeros(axis.length_px)
    for s, w in zip(axis.starts_px, axis.weights):
        total[s : s + axis.core_px] += w
    return total


@pytest.mark.parametrize("length", [100, 257, 1000, 6000, 6001])
def test_blending_weights_sum_to_exactly_one(length):
    lay = plan_tiles(length, length, kernel_size=41)
    assert np.allclose(_weight_sum(lay.y), 1.0, atol=1e-6)


def test_cores_cover_the_frame_and_guards_reach_the_psf_support():
    lay = plan_tiles(4000, 6000, kernel_size=41)
    for ax in (lay.y, lay.x):
        assert ax.starts_px[0] == 0 and ax.starts_px[-1] + ax.core_px == ax.length_px
        assert min(ax.guard_lo_px, ax.guard_hi_px) >= 41


def test_tile_fft_size_is_fast_and_overridable():
    lay = plan_tiles(2000, 3000, kernel_size=21, tile_px=300)
    assert lay.fft_shape[0] >= 300 and lay.fft_shape[0] <= 320
    assert lay.count > 1


def test_tile_larger_than_the_frame_gives_one_tile():
    lay = plan_tiles(300, 400, kernel_size=21, tile_px=4096)
    assert lay.count == 1 and lay.y.core_px == 300 and lay.x.core_px == 400


def test_core_follows_the_node_spacing_cap():
    lay = plan_tiles(4000, 6000, kernel_size=41, max_core_px=500)
    assert lay.x.core_px <= 500
