import math

import numpy as np
import pytest

from targets import make_layout, render_layout


@pytest.mark.parametrize("profile", ["sine", "square"])
def test_each_stripe_patch_peaks_at_its_frequency_and_orientation(profile):
    layout = make_layout("stripes", dpi=300, profile=profile)
    s = 12.0  # px per mm, above twice the highest frequency
    shape = (int(layout.page_mm[1] * s), int(layout.page_mm[0] * s))
    img = render_layout(layout, shape, homography=np.array([[s, 0, -0.5], [0, s, -0.5], [0, 0, 1.0]]))
    pad = 4
    for p in layout.stripes:
        c0, c1 = int(math.ceil(p.x0_mm * s)) + 1, int(p.x1_mm * s) - 1
        r0, r1 = int(math.ceil(p.y0_mm * s)) + 1, int(p.y1_mm * s) - 1
        patch = img[r0:r1, c0:c1].astype(np.float64)
        n = min(patch.shape)
        patch = patch[:n, :n] - patch[:n, :n].mean()
        win = np.outer(np.hanning(n), np.hanning(n))
        spec = np.abs(np.fft.fft2(patch * win, s=(pad * n, pad * n)))
        ky, kx = np.unravel_index(np.argmax(spec), spec.shape)
        fy = np.fft.fftfreq(pad * n)[ky] * s  # cycles per mm
        fx = np.fft.fftfreq(pad * n)[kx] * s
        t = math.radians(p.orientation_deg)
        want = np.array([math.cos(t), math.sin(t)]) * p.frequency_cpmm
        got = np.array([fx, fy])
        err = min(np.hypot(*(got - want)), np.hypot(*(got + want)))  # +k and -k are the same grating
        assert err < s / n, (p, got, want)  # within one native frequency bin
