"""A chart PNG photographed in simulation: warped, blurred, noisy; markers must register it."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from targets import find_markers, make_layout, marker_kind, read_chart_png, write_chart


def _apply(h, xy):
    q = np.column_stack([xy, np.ones(len(xy))]) @ h.T
    return q[:, :2] / q[:, 2:]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(20261123)
    layout = make_layout("dots", paper="A4", dpi=300, dot_mm=0.6, max_psf_px=20)
    files = write_chart(layout, tmp_path_factory.mktemp("chart") / "dots.png", dpi=300)
    page = read_chart_png(files.chart)
    h, w = page.shape
    # Random perspective: page corners land within +-80 px of a tilted quadrilateral.
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) - 0.5
    dst = np.float32([[150, 120], [2450, 200], [2400, 2900], [220, 2800]])
    dst += rng.uniform(-80, 80, dst.shape).astype(np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    blurred = ndimage.gaussian_filter(page, 1.2)
    img = cv2.warpPerspective(blurred, warp, (2600, 3000), flags=cv2.INTER_LINEAR, borderValue=0.3)
    img = ndimage.gaussian_filter(img, 0.7)
    img = img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)
    s = 300 / 25.4
    mm_to_page = np.array([[s, 0, -0.5], [0, s, -0.5], [0, 0, 1.0]])
    return layout, img, warp @ mm_to_page


def _centroids(img, approx_xy, radius=6):
    out = []
    for x, y in approx_xy:
        x0, y0 = int(round(x)), int(round(y))
        win = img[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1].astype(np.float64)
        ring = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
        wgt = np.clip(win - np.median(ring), 0, None)
        yy, xx = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
        out.append(((wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()))
    return np.asarray(out)


def test_every_marker_is_found_in_a_blurred_noisy_warped_photo(photo):
    layout, img, _ = photo
    match = find_markers(img, layout)
    assert sorted(match.ids) == sorted(layout.markers.ids)
    assert match.n_expected == len(layout.markers.items)
    assert match.chart_mm.shape == match.image_px.shape == (4 * len(layout.markers.items), 2)


def test_marker_homography_puts_every_dot_on_its_measured_centroid(photo):
    layout, img, truth = photo
    fitted = find_markers(img, layout).homography()
    xy = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    measured = _centroids(img, _apply(truth, xy))
    err = np.hypot(*(_apply(fitted, xy) - measured).T)
    assert np.median(err) <= 0.05
    assert err.max() <= 0.15


def test_too_few_markers_is_one_clear_sentence(photo):
    from targets import TargetError

    layout, img, _ = photo
    with pytest.raises(TargetError, match="markers were found"):
        find_markers(np.zeros_like(img) + np.linspace(0, 1, img.shape[1])[None, :], layout).homography()


def test_another_kinds_layout_finds_none_of_its_markers_and_reports_the_photos_kind(photo):
    layout, img, _ = photo
    noise = make_layout("noise", paper="A4", dpi=300)
    match = find_markers(img, noise)
    assert match.n_found == 0
    assert {marker_kind(i) for i in match.foreign_ids} == {layout.kind}
