import numpy as np
import pytest

from calib import CalibError, PSFMap


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
