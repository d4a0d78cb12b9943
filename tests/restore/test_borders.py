import numpy as np

from restore._borders import extract_reflected, reflect_indices, taper_edges


def test_reflect_indices_mirror_at_both_ends():
    assert reflect_indices(-3, 0, 5).tolist() == [2, 1, 0]
    assert reflect_indices(5, 8, 5).tolist() == [4, 3, 2]


def test_extract_inside_the_frame_is_a_plain_copy(rng):
    img = rng.random((20, 30, 3)).astype(np.float32)
    out = extract_reflected(img, 2, 10, 5, 25)
    assert np.array_equal(out, img[2:10, 5:25]) and not np.shares_memory(out, img)


def test_extract_beyond_the_frame_mirrors_it(rng):
    img = rng.random((20, 30)).astype(np.float32)
    out = extract_reflected(img, -4, 24, -2, 32)
    assert np.array_equal(out[4:24, 2:32], img)
    assert np.array_equal(out[3, 2:32], img[0]) and np.array_equal(out[0, 2:32], img[3])


def test_taper_fades_edges_to_the_mean_and_keeps_the_centre(rng):
    tile = rng.random((40, 50)).astype(np.float32)
    before = tile.copy()
    taper_edges(tile, 8)
    assert np.array_equal(tile[8:-8, 8:-8], before[8:-8, 8:-8])
    assert np.allclose(tile[0, 0], before.mean(), atol=0.05)


def test_extract_into_a_given_buffer_mirrors_every_side_and_corner(rng):
    img = rng.random((20, 30, 3)).astype(np.float32)
    buf = np.full((31, 44, 3), np.nan, np.float32)
    out = extract_reflected(img, -6, 25, -9, 35, out=buf)
    expected = img[reflect_indices(-6, 25, 20)][:, reflect_indices(-9, 35, 30)]
    assert out is buf and np.array_equal(out, expected)
