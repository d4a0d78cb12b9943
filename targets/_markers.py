"""Find a chart's ArUco markers in a photo and pair their corners with chart millimetres.

OpenCV's detector finds and decodes the markers; each corner is then re-measured
from the marker's four outer border edges: the edge between the black border and
the white quiet zone is located at its 50 % level along many profiles, a straight
line is fitted per side and adjacent lines are intersected. Under any symmetric
blur the 50 % level of a step sits on the true edge, so the corners stay unbiased
on blurred photos where corner detectors drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import TargetError
from ._layout import Layout


@dataclass(frozen=True)
class MarkerMatch:
    """Marker corners found in an image, paired with their chart positions.

    Attributes
    ----------
    ids : tuple of int
        Marker ids found (each contributes 4 corners, in order).
    chart_mm : (N, 2) float64
        Corner positions on the chart, mm.
    image_px : (N, 2) float64
        The same corners in the image, pixels (origin at the top-left pixel centre).
    n_expected : int
        Markers the layout holds.
    foreign_ids : tuple of int
        Markers of the same dictionary found in the image that the layout does not hold
        (another chart's: see :func:`targets.marker_kind`).
    """

    ids: tuple[int, ...]
    chart_mm: np.ndarray
    image_px: np.ndarray
    n_expected: int
    foreign_ids: tuple[int, ...] = ()

    @property
    def n_found(self) -> int:
        return len(self.ids)

    def homography(self, *, ransac_px: float = 3.0) -> np.ndarray:
        """Robust 3x3 homography mapping chart mm to image px.

        RANSAC rejects corners of mis-read markers, then all inliers are refitted
        by least squares (Levenberg-Marquardt refinement inside OpenCV).

        Raises
        ------
        TargetError
            Fewer than two markers (8 corners) were found.
        """
        import cv2

        if len(self.ids) < 2:
            raise TargetError(
                f"only {len(self.ids)} of {self.n_expected} chart markers were found in the photo; "
                "make sure the whole chart is in the frame, lit evenly and roughly in focus"
            )
        src = self.chart_mm.astype(np.float64)
        dst = self.image_px.astype(np.float64)
        h, mask = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px, maxIters=5000, confidence=0.999)
        if h is None:
            raise TargetError("the chart markers found in the photo do not fit one plane; retake the photo")
        keep = mask.ravel().astype(bool)
        if keep.sum() >= 8:
            h2, _ = cv2.findHomography(src[keep], dst[keep], 0)
            if h2 is not None:
                h = h2
        return h / h[2, 2]


def _apply(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    q = np.column_stack([xy, np.ones(len(xy))]) @ h.T
    return q[:, :2] / q[:, 2:]


def _to_u8(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Single precision throughout: a 24 MP photo converts in a quarter of the time, and
    # the corner refinement's 50 % crossings need nowhere near double's digits.
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2, dtype=np.float32)
    if img.ndim != 2:
        raise TargetError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    lo, hi = np.percentile(img[:: max(1, img.shape[0] // 512), :: max(1, img.shape[1] // 512)], (0.5, 99.5))
    if not hi > lo:
        raise TargetError("the photo is uniform (no chart visible); check exposure and framing")
    scaled = (img - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    u8 = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    return u8, img


def _detector(dictionary: str):
    import cv2

    try:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    except AttributeError:
        raise TargetError(f"the layout names an unknown ArUco dictionary {dictionary!r}") from None
    p = cv2.aruco.DetectorParameters()
    # Big, possibly blurred markers: wide threshold windows, corner refinement on.
    p.adaptiveThreshWinSizeMin = 5
    p.adaptiveThreshWinSizeMax = 75
    p.adaptiveThreshWinSizeStep = 10
    p.minMarkerPerimeterRate = 0.01
    p.polygonalApproxAccuracyRate = 0.05
    p.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    p.cornerRefinementWinSize = 5
    p.perspectiveRemoveIgnoredMarginPerCell = 0.25
    p.errorCorrectionRate = 0.4
    return cv2.aruco.ArucoDetector(d, p)


def _refine(img: np.ndarray, corners: np.ndarray, modules: int) -> np.ndarray | None:
    """Corners from straight lines fitted to the 50 % crossings of the four outer edges."""
    from scipy.ndimage import map_coordinates

    centre = corners.mean(axis=0)
    lines = []
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        side = b - a
        length = np.hypot(*side)
        if length < 8:
            return None
        t = side / length
        n = np.array([t[1], -t[0]])
        if np.dot(n, (a + b) / 2 - centre) < 0:
            n = -n
        module = length / modules
        reach = max(1.5, 0.8 * module)
        s = np.arange(-reach, reach + 1e-9, 0.25)
        ts = np.linspace(0.2, 0.8, max(8, int(length / 3)))
        base = a[None, :] + ts[:, None] * side[None, :]
        pts = base[:, None, :] + s[None, :, None] * n[None, None, :]
        prof = map_coordinates(img, [pts[..., 1].ravel(), pts[..., 0].ravel()], order=1, mode="nearest")
        prof = prof.reshape(pts.shape[:2])
        q = max(2, len(s) // 6)
        dark = prof[:, :q].mean(axis=1)
        light = prof[:, -q:].mean(axis=1)
        mid = 0.5 * (dark + light)
        good = (light - dark) > 0.2 * np.median(light - dark)
        edge_pts = []
        for i in np.nonzero(good)[0]:
            above = prof[i] >= mid[i]
            idx = np.argmax(above)
            if idx == 0 or not above[idx:].all():
                continue  # not a single clean step
            f0, f1 = prof[i, idx - 1], prof[i, idx]
            frac = (mid[i] - f0) / (f1 - f0)
            edge_pts.append(base[i] + (s[idx - 1] + frac * 0.25) * n)
        if len(edge_pts) < 4:
            return None
        e = np.asarray(edge_pts)
        m = e.mean(axis=0)
        _, _, vt = np.linalg.svd(e - m)
        direction = vt[0]
        normal = np.array([-direction[1], direction[0]])
        lines.append((normal, float(normal @ m)))
    out = np.empty((4, 2))
    for k in range(4):
        (n1, c1), (n2, c2) = lines[k - 1], lines[k]
        try:
            out[k] = np.linalg.solve(np.array([n1, n2]), np.array([c1, c2]))
        except np.linalg.LinAlgError:
            return None
    if np.max(np.hypot(*(out - corners).T)) > 0.25 * np.hypot(*(corners[1] - corners[0])):
        return None
    return out


def find_markers(image: np.ndarray, layout: Layout, *, refine: bool = True) -> MarkerMatch:
    """Detect the layout's ArUco markers in ``image``.

    Parameters
    ----------
    image : array (H, W) or (H, W, C)
        Photo or rendering of the chart, any range (linear preferred).
    layout : Layout
        The chart the photo shows.
    refine : bool
        Re-measure corners from the markers' straight outer edges (recommended).

    Returns
    -------
    MarkerMatch
        Corner correspondences; ``.homography()`` maps chart mm to image px.

    Examples
    --------
    >>> match = find_markers(photo, load_layout("dots.json"))  # doctest: +SKIP
    >>> H = match.homography()  # doctest: +SKIP
    """
    u8, img = _to_u8(image)
    corners, ids, _ = _detector(layout.markers.dictionary).detectMarkers(u8)
    by_id = {m.id: m for m in layout.markers.items}
    candidates: dict[int, list[np.ndarray]] = {}
    foreign: set[int] = set()
    if ids is not None:
        for c, i in zip(corners, ids.ravel()):
            if int(i) in by_id:
                candidates.setdefault(int(i), []).append(c.reshape(4, 2).astype(np.float64))
            else:
                foreign.add(int(i))
    chosen = {i: c[0] for i, c in candidates.items() if len(c) == 1}
    repeated = {i: c for i, c in candidates.items() if len(c) > 1}
    if repeated and len(chosen) >= 2:
        # A marker read more than once (a quiet-zone ring decoded as well): keep the reading
        # that agrees with where the unambiguous markers put it.
        import cv2

        src = np.concatenate([np.asarray(by_id[i].corners_mm) for i in chosen])
        dst = np.concatenate(list(chosen.values()))
        h, _ = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
        if h is not None:
            for i, cands in repeated.items():
                want = _apply(h, np.asarray(by_id[i].corners_mm, dtype=np.float64))
                side = np.hypot(*(want[1] - want[0]))
                dist = [np.hypot(*(c - want).T).mean() for c in cands]
                best = int(np.argmin(dist))
                if dist[best] < 0.25 * side:
                    chosen[i] = cands[best]
    found, chart, px = [], [], []
    for i in sorted(chosen):
        c = chosen[i]
        if refine:
            r = _refine(img, c, layout.markers.modules)
            if r is not None:
                c = r
        found.append(i)
        chart.append(np.asarray(by_id[i].corners_mm, dtype=np.float64))
        px.append(c)
    chart_mm = np.concatenate(chart) if chart else np.zeros((0, 2))
    image_px = np.concatenate(px) if px else np.zeros((0, 2))
    return MarkerMatch(tuple(found), chart_mm, image_px, len(by_id), tuple(sorted(foreign)))
