"""`measure_edge` on real third-party edge photos vs three reference implementations.

The photos and reference MTF50 values are in ``../shared/realdata`` (see its README);
these tests are skipped only when that folder is absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib import CalibError, GammaEncodedWarning, load_linear, measure_edge

REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real-photo folder {REALDATA} is absent")

# README: sfrmat5, sfrmat3, MTF Mapper 0.7.38 (-l); luminance, no linearisation.
REFERENCES = {
    "01_sfrmat3_burns_edges/v_edge.tif": (0.1964, 0.1978, 0.2005),
    "01_sfrmat3_burns_edges/v_edge_mono.tif": (0.1956, 0.1977, 0.2002),
    "01_sfrmat3_burns_edges/h_edge.tif": (0.1967, 0.1979, 0.2005),
    "01_sfrmat3_burns_edges/h_edge_mono.tif": (0.1962, 0.1979, 0.2006),
    "02_sfrmat5_burns_testedge/Test_edge1.tif": (0.2698, 0.2799, 0.2817),
    "02_sfrmat5_burns_testedge/Test_edge1_mono.tif": (0.2753, 0.2834, 0.2850),
}


def _mtf50(rel: str) -> float:
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(REALDATA / rel, linearize=False)
    return measure_edge(img, channel="Y").mtf50_cpp["Y"]


@pytest.mark.parametrize("rel", list(REFERENCES))
def test_mtf50_inside_the_reference_spread_or_within_2_percent(rel):
    lo, hi = min(REFERENCES[rel]), max(REFERENCES[rel])
    assert lo / 1.02 <= _mtf50(rel) <= hi * 1.02


def test_sfr_is_near_one_half_where_the_references_put_mtf50():
    # Where MTF50 is ill-conditioned the SFR level is the fair comparison: at each
    # reference's MTF50 our SFR is within 0.02 of 0.5 (the tolerance on the SFR).
    rel = "02_sfrmat5_burns_testedge/Test_edge1_mono.tif"
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(REALDATA / rel, linearize=False)
    res = measure_edge(img, channel="Y")
    at_refs = np.interp(REFERENCES[rel], res.freq_cpp, res.mtf_of("Y"))
    assert np.abs(at_refs - 0.5).max() < 0.02


def test_bin_correction_is_what_lifts_test_edge1_mono_above_the_spread():
    # Its SFR runs within 0.006 of 0.5 from 0.28 to 0.30 c/p, so the 0.8 % that the bin
    # averaging takes off at 0.28 c/p (divided out on linear data, left in by ISO 12233
    # and the reference tools, and so in this gamma-encoded comparison mode) moves its
    # MTF50 by 5 %.
    rel = "02_sfrmat5_burns_testedge/Test_edge1_mono.tif"
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(REALDATA / rel, linearize=False)
    iso = measure_edge(img, channel="Y").mtf50_cpp["Y"]
    corrected = measure_edge(img, channel="Y", bin_correction=True).mtf50_cpp["Y"]
    assert iso <= max(REFERENCES[rel]) < max(REFERENCES[rel]) * 1.02 < corrected


def test_bayer_mosaic_jpeg_is_refused_with_the_reason():
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(REALDATA / "03_mtfmapper_doc_single_roi/single_roi_input.jpg", linearize=False)
    with pytest.raises(CalibError, match="Bayer mosaic.*--cfa"):
        measure_edge(img)


def test_bayer_mosaic_jpeg_measured_per_cfa_channel():
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(REALDATA / "03_mtfmapper_doc_single_roi/single_roi_input.jpg", linearize=False)
    res = measure_edge(img, cfa="GRBG")
    assert res.channels == ("R", "G", "B")
    assert all(0.1 < res.mtf50_cpp[ch] < 0.35 for ch in res.channels)
