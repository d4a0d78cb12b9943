import numpy as np
import pytest

from calib import CalibError, PSFMap, sensor_grid_psf


def _two_node_map() -> PSFMap:
    k = np.zeros((1, 1, 2, 5, 5), np.float32)
    k[0, 0, 0, 2, 2] = 1.0
    k[0, 0, 1, 2, 3] = 1.0
    nodes = np.array([[[0.0, 0.0], [100.0, 0.0]]])
    return PSFMap(k, nodes, ("Y",), (101, 1))


def test_psf_at_node_returns_node_psf():
    m = _two_node_map()
    np.testing.assert_array_equal(m.psf_at(100.0, 0.0), m.psf[0, 0, 1])


def test_psf_at_midpoint_blends_linearly():
    p = _two_node_map().psf_at(25.0, 0.0)
    assert p[2, 2] == pytest.approx(0.75) and p[2, 3] == pytest.approx(0.25)


def test_psf_at_follows_a_psf_that_varies_quadratically_across_the_field():
    # nodes unevenly spaced; each sample of the PSF a parabola in x
    xs = np.array([0.0, 150.0, 400.0, 500.0, 750.0, 1000.0])
    a, b = np.array([0.5, 0.3, 0.2]), np.array([0.0, 0.2, -0.2])
    k = np.zeros((1, 1, len(xs), 1, 3), np.float64)
    u = xs / 1000
    k[0, 0, :, 0] = a + b * (u[:, None] - u[:, None] ** 2) * 0.9
    k = np.pad(k, ((0, 0), (0, 0), (0, 0), (1, 1), (0, 0)))
    m = PSFMap(k.astype(np.float32), np.stack([xs, np.zeros_like(xs)], -1)[None], ("Y",), (1001, 1))
    for x in (75.0, 333.0, 620.0, 990.0):
        v = x / 1000
        np.testing.assert_allclose(m.psf_at(x, 0.0)[1], a + b * (v - v * v) * 0.9, atol=2e-7)


def test_psf_at_moves_an_oversampled_psf_between_nodes_rather_than_spreading_it():
    # the same Gaussian at three nodes, its centre moving by 0.6 px per node (lateral colour)
    s, k = 3, 31
    ax = (np.arange(k) - k // 2) / s
    def spot(cx):
        g = np.exp(-0.5 * ((ax[None, :] - cx) ** 2 + ax[:, None] ** 2) / 0.8**2)
        return g / g.sum()
    psf = np.stack([spot(0.6 * j) for j in range(3)])[None, None].astype(np.float32)
    m = PSFMap(psf, np.array([[[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]]]), ("B",), (201, 1), sampling=s)
    p = m.psf_at(50.0, 0.0, "B").astype(np.float64)
    np.testing.assert_allclose(p, spot(0.3), atol=2e-4 * p.max())


def test_psf_at_clips_the_interpolants_negative_lobes():
    k = np.zeros((1, 1, 4, 3, 3), np.float32)
    k[0, 0, :, 1, 1] = 1.0
    k[0, 0, 0, 1, 1], k[0, 0, 0, 1, 2] = 0.0, 1.0  # only the first node has light at (1, 2)
    m = PSFMap(k, np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]]), ("Y",), (4, 1))
    assert m.column_weights([1.5])[0, 0] < 0
    p = m.psf_at(1.5, 0.0)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)


def test_psf_at_outside_grid_uses_edge_node():
    m = _two_node_map()
    np.testing.assert_array_equal(m.psf_at(-50.0, 30.0), m.psf[0, 0, 0])


def test_even_kernel_is_refused():
    with pytest.raises(CalibError, match="odd k"):
        PSFMap(np.zeros((1, 1, 1, 4, 4)), np.zeros((1, 1, 2)), ("Y",), (4, 4))


def test_unknown_channel_name_is_refused():
    with pytest.raises(CalibError, match="channel 'Q'"):
        _two_node_map().psf_at(0.0, 0.0, "Q")


def test_sensor_grid_psf_takes_every_sampling_th_sample_through_the_centre(rng):
    fine = rng.random((25, 25))
    coarse = sensor_grid_psf(fine, 3)
    # centre 12 -> 4; samples 0, 3, ..., 24
    expected = fine[::3, ::3] / fine[::3, ::3].sum()
    np.testing.assert_allclose(coarse, expected, rtol=1e-6)


def test_sensor_grid_psf_keeps_an_odd_side_with_the_centre_in_the_middle():
    fine = np.zeros((23, 23))
    fine[11, 11] = 1.0
    coarse = sensor_grid_psf(fine, 3)
    assert coarse.shape == (7, 7) and coarse[3, 3] == 1.0


def test_on_sensor_grid_keeps_nodes_flags_and_channels():
    k = np.zeros((1, 1, 2, 7, 7), np.float32)
    k[..., 3, 3] = 1.0
    flags = np.array([[[0, 1]]], np.uint8)
    m = PSFMap(k, np.array([[[0.0, 0.0], [9.0, 0.0]]]), ("Y",), (10, 1), sampling=3, flags=flags)
    c = m.on_sensor_grid()
    assert c.sampling == 1 and c.kernel_size == 3 and c.channels == ("Y",)
    np.testing.assert_array_equal(c.flags, flags)
    np.testing.assert_array_equal(c.nodes_xy, m.nodes_xy)
