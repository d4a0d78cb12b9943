import numpy as np
import pytest
from restore_synth import blur_with_map, constant_map, gaussian_psf, scene

from restore import restore_image

distributed = pytest.importorskip("distributed")


def test_tile_rows_on_a_local_cluster_match_the_local_restore(noisy):
    img = scene("camera", (160, 200))
    m = constant_map(gaussian_psf(9, 1.2), 200, 160)
    obs = noisy(blur_with_map(img, m))
    local = restore_image(obs, m, tile=64, noise=0.005).image
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            remote = restore_image(obs, m, tile=64, noise=0.005, scheduler=client).image
    assert np.allclose(remote, local, atol=1e-5)
