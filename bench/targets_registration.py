"""Chart registration accuracy: ArUco markers -> homography -> dot centres, on simulated photos.

Renders a chart through a random perspective homography straight to a 6000 x 4000
photo (render_layout), blurs it with a Gaussian PSF and adds noise, then prints how
far the marker-fitted homography puts each dot centre from the true projection
(and from the measured dot centroid), with and without the edge-line corner
refinement. Run: .venv/bin/python bench/targets_registration.py
"""
from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from targets import find_markers, make_layout, render_layout


def _apply(h, xy):
    q = np.column_stack([xy, np.ones(len(xy))]) @ h.T
    return q[:, :2] / q[:, 2:]


def main() -> None:
    rng = np.random.default_rng(7)
    layout = make_layout("dots", paper="A4", landscape=True, dot_mm=0.3, max_psf_px=25)
    w, h = 6000, 4000
    page = np.array([[0, 0], [297, 0], [297, 210], [0, 210]], dtype=np.float64)
    dst = np.array([[250, 200], [5750, 150], [5800, 3850], [200, 3800]], dtype=np.float64)
    print(f"{'blur sigma px':>13} {'noise':>6} {'markers':>8} {'refine':>6} {'fit-true med/max px':>22} "
          f"{'fit-centroid med/max px':>25} {'render s':>8}")
    for sigma, noise in ((0.8, 0.005), (2.0, 0.01), (4.0, 0.02)):
        import cv2

        d = dst + rng.uniform(-120, 120, dst.shape)
        truth = cv2.getPerspectiveTransform(page.astype(np.float32), d.astype(np.float32)).astype(np.float64)
        t = time.time()
        img = render_layout(layout, (h, w), homography=truth)
        t = time.time() - t
        img = ndimage.gaussian_filter(img, sigma) + rng.normal(0, noise, img.shape).astype(np.float32)
        xy = np.array([(p.x_mm, p.y_mm) for p in layout.dots])
        true_px = _apply(truth, xy)
        cents = []
        for x, y in true_px:
            r = int(3 * sigma + 6)
            x0, y0 = int(round(x)), int(round(y))
            win = img[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1].astype(np.float64)
            ring = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
            wgt = np.clip(win - np.median(ring), 0, None)
            yy, xx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
            cents.append(((wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()))
        cents = np.asarray(cents)
        for refine in (True, False):
            m = find_markers(img, layout, refine=refine)
            fit = _apply(m.homography(), xy)
            e1 = np.hypot(*(fit - true_px).T)
            e2 = np.hypot(*(fit - cents).T)
            print(f"{sigma:13.1f} {noise:6.3f} {m.n_found:>3}/{m.n_expected:<4} {str(refine):>6} "
                  f"{np.median(e1):10.3f} / {e1.max():.3f} {np.median(e2):12.3f} / {e2.max():.3f} {t:8.1f}")


if __name__ == "__main__":
    main()
