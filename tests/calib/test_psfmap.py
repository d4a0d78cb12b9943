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
