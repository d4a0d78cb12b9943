"""The simulated camera: lens profile + sensor model, ground-truth PSFs and shots."""
from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

from .._distortion import RadialDistortion
from .._errors import CalibError
from .._mtf_psf import psf_mtf
from .._psfmap import PSFMap
from .._records import NoiseModel, ShotMetadata
from ._lens import CHANNELS, LENS_PROFILES, LensProfile
from ._output import write_shot_tiff
from ._pupil import Wavefront, system_psf
from ._render import render_varying, tent_weights
from ._threads import parallel_map, serial_blas
from ._sensor import SENSOR_PRESETS, SensorModel, mosaic_rggb

#: Exposure that takes a scene value of 1.0 to the white level at base ISO and f/4.
_REF_EXPOSURE_S = 0.01
_REF_F_NUMBER = 4.0
#: Samples per pixel used to find centroids (the sampled centroid of a sharp PSF is biased).
_CENTROID_OVERSAMPLE = 5
#: Render grids tried, coarsest first (each nests the previous one's nodes).
RENDER_GRIDS: tuple[tuple[int, int], ...] = ((9, 13), (17, 25), (33, 49))
#: How far the rendered (blended) PSF's MTF may stray from the pupil model's between
#: render nodes: half the PSF-vs-edge tolerance the analysis is held to. On the small
#: sensor, 9x13 nodes keep sharp-prime within 0.002 and vintage within 0.008, while
#: soft-zoom strayed by 0.025-0.039 (its PSF 6-14 % off in relative L2 between nodes,
#: which put the shots' operator, and so the truth the analysis is scored against,
#: visibly away from the lens it models); at 17x25 soft-zoom is within 0.007-0.011,
#: for a render about 1.1-1.4x as long.
RENDER_MTF_TOL = 0.015
_BLEND_CHECK_OVERSAMPLE = 3


@dataclass(frozen=True)
class PointPx:
    """A position or offset on the sensor, pixels."""

    x_px: float
    y_px: float


@dataclass
class SimShot:
    """One simulated exposure.

    Attributes
    ----------
    raw : ndarray (H, W) uint16
        RGGB Bayer mosaic, raw numbers (black level included).
    rgb_dn : ndarray (H, W, 3) uint16
        Raw numbers of all three channels at every pixel (the same exposure and noise
        as ``raw``; ``raw`` picks one channel per pixel from it).
    rgb_linear : ndarray (H, W, 3) float32
        ``(rgb_dn - black_level) / (white_level - black_level)``: developed without
        demosaicing, so a PSF measured on it is ``true_psf``.
    rgb_ideal : ndarray (H, W, 3) float32
        The noise-free expectation of ``rgb_linear`` (not quantised, clipped at 1).
    metadata : ShotMetadata
    homography : ndarray (3, 3) or None
        Chart millimetres -> sensor pixels before distortion (chart scenes only).
    focus_position : int
    object_distance_m : float
    black_level, white_level : int
    """

    raw: np.ndarray
    rgb_dn: np.ndarray
    rgb_linear: np.ndarray
    rgb_ideal: np.ndarray
    metadata: ShotMetadata
    homography: np.ndarray | None
    focus_position: int
    object_distance_m: float
    black_level: int
    white_level: int
    cfa: str = field(default="RGGB")


@dataclass(frozen=True)
class TrueDots:
    """Where a chart's dots land in a simulated shot: those whose chief ray is in the frame.

    Attributes
    ----------
    chart_mm : ndarray (n, 2)
        The dots' centres on the chart, millimetres.
    chief_ray_px : ndarray (n, 2)
        Where their chief rays meet the sensor (homography, then distortion), pixels.
    recorded_px : ndarray (n, 2)
        Where the photo records them: their green PSFs' centroids (off axis, coma moves
        these off the chief rays), pixels.
    """

    chart_mm: np.ndarray
    chief_ray_px: np.ndarray
    recorded_px: np.ndarray


def psf_centroid_px(psf: np.ndarray, *, oversample: int = 1) -> PointPx:
    """Centroid of ``psf`` relative to its centre sample, in sensor pixels."""
    p = np.asarray(psf, dtype=np.float64)
    k = p.shape[0]
    c = (np.arange(k) - k // 2) / oversample
    total = p.sum()
    return PointPx(float((p.sum(0) * c).sum() / total), float((p.sum(1) * c).sum() / total))


class SimulatedCamera:
    """A lens + sensor model that gives ground truth and camera-like shots.

    Parameters
    ----------
    lens : str or LensProfile
        A name from ``LENS_PROFILES`` or a profile.
    sensor : str or SensorModel
        A name from ``SENSOR_PRESETS`` or a model.
    f_number : float, optional
        Aperture (default: the profile's ``f_number_default``).
    focal_length_mm : float, optional
        Overrides the profile's focal length (a zoom setting; aberrations unchanged).
    seed : int, optional
        Seeds the noise of shots taken without an explicit ``rng``.
    render_grid : (int, int), optional
        (ny, nx) PSF nodes used when rendering shots (spanning the frame). Default: per
        focus setting and distance, the coarsest of ``RENDER_GRIDS`` whose interpolated
        PSF stays within ``RENDER_MTF_TOL`` of the pupil model (``render_grid_for``).
    render_oversample : int
        Odd number of scene samples per pixel when rendering chart scenes.

    Notes
    -----
    Coordinates: pixels, origin at the top-left pixel centre; the optical centre is
    the frame centre. Field heights are normalised to the half-diagonal.

    Examples
    --------
    >>> cam = SimulatedCamera("sharp-prime", "small")
    >>> p = cam.best_focus_position(2.0)
    >>> psf = cam.true_psf(600, 400, "G", focus_position=round(p), object_distance_m=2.0)
    """

    def __init__(
        self,
        lens: str | LensProfile = "sharp-prime",
        sensor: str | SensorModel = "small",
        *,
        f_number: float | None = None,
        focal_length_mm: float | None = None,
        seed: int | None = None,
        render_grid: tuple[int, int] | None = None,
        render_oversample: int = 1,
    ) -> None:
        self.lens = _pick(lens, LENS_PROFILES, "lens")
        self.sensor = _pick(sensor, SENSOR_PRESETS, "sensor")
        self.f_number = float(f_number or self.lens.f_number_default)
        if self.f_number < self.lens.f_number_min:
            raise CalibError(
                f"f-number {self.f_number} is wider than lens {self.lens.name!r} opens "
                f"(f/{self.lens.f_number_min}); choose f/{self.lens.f_number_min} or more"
            )
        self.focal_length_mm = float(focal_length_mm or self.lens.focal_length_mm)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        if render_oversample < 1 or render_oversample % 2 == 0:
            raise CalibError(f"render_oversample {render_oversample} must be an odd integer >= 1")
        self.render_grid = None if render_grid is None else (int(render_grid[0]), int(render_grid[1]))
        self._auto_grids: dict[tuple[float, float], tuple[int, int]] = {}
        self.render_oversample = int(render_oversample)
        w, h = self.sensor.size
        self.centre = PointPx((w - 1) / 2.0, (h - 1) / 2.0)
        self.norm_radius_px = math.hypot(w / 2.0, h / 2.0)
        self.distortion = RadialDistortion(
            self.centre.x_px, self.centre.y_px, self.norm_radius_px,
            self.lens.distortion_k1, self.lens.distortion_k2,
        )
        self._cache: OrderedDict = OrderedDict()

    # -- basic facts -----------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.sensor.size

    def focus_distance_m(self, focus_position: float) -> float | None:
        """Object distance (m) in focus on axis (green, paraxial) at a position; None at infinity."""
        v = self.lens.image_distance_mm(focus_position, self.focal_length_mm)
        f = self.focal_length_mm
        if v <= f:
            return None
        return 1.0 / (1.0 / f - 1.0 / v) / 1000.0

    def relative_illumination(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Vignetting factor (cos^4 x mechanical; 1 on axis) at pixel (x, y)."""
        h = np.hypot(np.asarray(x, float) - self.centre.x_px, np.asarray(y, float) - self.centre.y_px)
        return self.lens.relative_illumination(h / self.norm_radius_px, self.f_number)

    def _vignetting_f32(self, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        """``relative_illumination`` on the grid of columns ``cx`` x rows ``cy``, float32."""
        dx2 = ((cx - self.centre.x_px) / self.norm_radius_px).astype(np.float32) ** 2
        dy2 = ((cy - self.centre.y_px) / self.norm_radius_px).astype(np.float32) ** 2
        h = dy2[:, None] + dx2[None, :]
        np.sqrt(h, out=h)
        return self.lens.relative_illumination(h, self.f_number)

    def lateral_colour_px(self, x: float, y: float, channel: str) -> PointPx:
        """Offset of ``channel``'s image from green's at pixel (x, y) (lateral colour)."""
        d = self.lens.lateral_colour[_channel_index(channel)]
        return PointPx(d * (x - self.centre.x_px), d * (y - self.centre.y_px))

    def noise_model(self, iso: float = 100.0) -> NoiseModel:
        """The sensor's noise in developed 0..1 units at ``iso`` (truth for the analysis)."""
        return self.sensor.noise_model(iso)

    # -- optics ---------------------------------------------------------------------
    def _optics(self, x: float, y: float, c: int, focus_position: float, object_distance_m: float):
        lam = self.sensor.wavelengths_nm[c] / 1000.0
        f = self.focal_length_mm
        v = self.lens.image_distance_mm(focus_position, f)
        v_obj = self.lens.conjugate_mm(object_distance_m, f)
        if not (object_distance_m > f / 1000.0):
            raise CalibError(
                f"object distance {object_distance_m} m is inside the focal length; use a distance beyond {f / 1000:.3f} m"
            )
        n_w = self.f_number * v / f
        s = self.lens.scaled_seidel_um(self.f_number)
        dx, dy = x - self.centre.x_px, y - self.centre.y_px
        h = math.hypot(dx, dy) / self.norm_radius_px
        dz_um = (v - v_obj) * 1000.0 - self.lens.axial_colour_um[c]
        wf = Wavefront(
            defocus_um=dz_um / (8.0 * n_w**2) + s["W220"] * h**2,
            spherical_um=s["W040"],
            coma_um=s["W131"] * h,
            astigmatism_um=s["W222"] * h**2,
            azimuth_rad=math.atan2(dy, dx),
        )
        d = self.lens.lateral_colour[c]
        return wf, lam, n_w, (d * dx, d * dy)

    def _auto_size(self, wf: Wavefront, lam: float, n_w: float, offset: tuple[float, float]) -> int:
        """Odd PSF side (pixels) holding the geometric blur, the Airy rings and the pixel."""
        pitch = self.sensor.pixel_pitch_um
        geometric = 1.15 * 2.0 * n_w * lam * wf.max_slope_waves(lam)
        radius = geometric + 5.0 * lam * n_w + 0.5 * pitch * (1 + self.sensor.aa_shift_px)
        radius += math.hypot(*offset) * pitch
        return int(np.clip(2 * math.ceil(radius / pitch + 1.0) + 1, 9, 255))

    def psf_size(self, x: float, y: float, channel: str, *, focus_position: float, object_distance_m: float) -> int:
        """The default (odd) ``size`` of ``true_psf`` at oversample 1 for this field point."""
        wf, lam, n_w, off = self._optics(x, y, _channel_index(channel), focus_position, object_distance_m)
        return self._auto_size(wf, lam, n_w, off)

    @staticmethod
    def _psf_key(x, y, c, focus_position, object_distance_m, oversample, size, shift=(0.0, 0.0)):
        return (round(float(x), 4), round(float(y), 4), c, float(focus_position), float(object_distance_m),
                oversample, size, tuple(shift))

    def _psf_compute(self, x, y, c, focus_position, object_distance_m, oversample, size, shift=(0.0, 0.0)):
        """The pupil-model PSF (no cache; safe to call from several threads)."""
        wf, lam, n_w, off = self._optics(x, y, c, focus_position, object_distance_m)
        if size is None:
            size = self._auto_size(wf, lam, n_w, off) * oversample
            size += 1 - size % 2
        if size % 2 == 0 or size < 1:
            raise CalibError(f"PSF size {size} must be a positive odd number")
        psf = system_psf(
            wf, wavelength_um=lam, n_w=n_w, pitch_um=self.sensor.pixel_pitch_um,
            fill_factor=self.sensor.fill_factor, aa_shift_px=self.sensor.aa_shift_px,
            oversample=oversample, size=size, offset_px=(off[0] + shift[0], off[1] + shift[1]),
        )
        psf.setflags(write=False)
        return psf

    def _store(self, key, psf: np.ndarray) -> None:
        self._cache[key] = psf
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)

    def _psf(self, x, y, c, focus_position, object_distance_m, oversample, size, shift=(0.0, 0.0)):
        key = self._psf_key(x, y, c, focus_position, object_distance_m, oversample, size, shift)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with serial_blas():
            psf = self._psf_compute(x, y, c, focus_position, object_distance_m, oversample, size, shift)
        self._store(key, psf)
        return psf

    def _psf_many(self, requests) -> None:
        """Compute the uncached PSFs among ``requests`` (``_psf`` argument tuples) in parallel."""
        todo = {}
        for r in requests:
            key = self._psf_key(*r)
            if key not in self._cache and key not in todo:
                todo[key] = r
        results = parallel_map(lambda r: self._psf_compute(*r), list(todo.values()))
        for key, psf in zip(todo, results):
            self._store(key, psf)

    def _psf_pupil(self, x, y, c, focus_position, object_distance_m, oversample, size, shift=(0.0, 0.0)):
        """The pupil-model PSF computed directly at (x, y)."""
        return self._psf(x, y, c, focus_position, object_distance_m, oversample, size, shift)

    def render_grid_for(self, *, focus_position: float, object_distance_m: float) -> tuple[int, int]:
        """The (ny, nx) PSF nodes a shot at this setting is rendered with.

        The renderer blends node PSFs bilinearly, and a blend of PSFs that differ in
        width or position is not the lens's PSF between them. Unless the camera was made
        with a fixed ``render_grid``, the grid is the coarsest of ``RENDER_GRIDS`` whose
        blend at the centres of its corner, edge and central cells keeps the MTF (along
        x and y, up to Nyquist/2, every channel) within ``RENDER_MTF_TOL`` of the pupil
        model computed there.

        Examples
        --------
        >>> cam = SimulatedCamera("sharp-prime", "small")
        >>> cam.render_grid_for(focus_position=round(cam.best_focus_position(2.0)), object_distance_m=2.0)
        (9, 13)
        """
        if self.render_grid is not None:
            return self.render_grid
        key = (float(focus_position), float(object_distance_m))
        if key not in self._auto_grids:
            grid = RENDER_GRIDS[-1]
            for candidate in RENDER_GRIDS[:-1]:
                if self._blend_mtf_error(candidate, *key) <= RENDER_MTF_TOL:
                    grid = candidate
                    break
            self._auto_grids[key] = grid
        return self._auto_grids[key]

    def _blend_mtf_error(self, grid: tuple[int, int], focus_position: float, object_distance_m: float) -> float:
        """Largest MTF difference (x and y, up to Nyquist/2) between the bilinear blend of
        ``grid``'s node PSFs and the pupil model at the centres of nine of its cells."""
        xs, ys = self._render_nodes(grid)
        ny, nx = grid
        s = _BLEND_CHECK_OVERSAMPLE
        rows, cols = sorted({0, max(ny // 2 - 1, 0), ny - 2}), sorted({0, max(nx // 2 - 1, 0), nx - 2})
        cells = [(i, j) for i in rows for j in cols]
        centres = [((xs[j] + xs[j + 1]) / 2, (ys[i] + ys[i + 1]) / 2) for i, j in cells]
        corners = [(x, y) for i, j in cells for x in xs[j:j + 2] for y in ys[i:i + 2]]
        self._psf_many([(x, y, c, focus_position, object_distance_m, s, None)
                        for c in range(3) for x, y in centres + corners])
        freq = np.linspace(0.0, 0.25, 11)
        worst = 0.0
        for (i, j), (x, y) in zip(cells, centres):
            for c in range(3):
                truth = self._psf(x, y, c, focus_position, object_distance_m, s, None)
                k = truth.shape[0]
                blend = sum(_fit(self._psf(nx_, ny_, c, focus_position, object_distance_m, s, None), k)
                            for nx_ in xs[j:j + 2] for ny_ in ys[i:i + 2])
                for angle in (0.0, 90.0):
                    worst = max(worst, float(np.max(np.abs(psf_mtf(blend, angle, sampling=s, freq_cpp=freq)[1]
                                                           - psf_mtf(truth, angle, sampling=s, freq_cpp=freq)[1]))))
        return worst

    def _render_nodes(self, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """x and y of the render nodes of ``grid`` (ny, nx), spanning the frame."""
        w, h = self.image_size
        ny, nx = grid
        return np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)

    def _rendered_terms(self, x, y, focus_position, object_distance_m) -> list[tuple[float, float, float]]:
        """(weight, node x, node y) of the render nodes that blend into the PSF at (x, y)."""
        xs, ys = self._render_nodes(self.render_grid_for(focus_position=focus_position,
                                                         object_distance_m=object_distance_m))
        ax = np.array([float(x)])
        ay = np.array([float(y)])
        terms = []
        for i in range(len(ys)):
            wy = float(tent_weights(ay, ys, i)[0])
            if wy == 0.0:
                continue
            for j in range(len(xs)):
                wx = float(tent_weights(ax, xs, j)[0])
                if wx == 0.0:
                    continue
                terms.append((wy * wx, xs[j], ys[i]))
        return terms

    def _prefetch_rendered(self, points, c, focus_position, object_distance_m, oversample, shift=(0.0, 0.0)) -> None:
        """Compute (in parallel) the node PSFs ``_psf_rendered`` needs at ``points``.

        ``shift`` is one (dx, dy) for all points or a list with one per point.
        """
        shifts = shift if isinstance(shift, list) else [shift] * len(points)
        self._psf_many([
            (nx_, ny_, c, focus_position, object_distance_m, oversample, None, sh)
            for (x, y), sh in zip(points, shifts)
            for _, nx_, ny_ in self._rendered_terms(x, y, focus_position, object_distance_m)
        ])

    def _psf_rendered(self, x, y, c, focus_position, object_distance_m, oversample, size, shift=(0.0, 0.0)):
        """The PSF the renderer applies to a point at (x, y): node PSFs, bilinearly weighted."""
        terms = self._rendered_terms(x, y, focus_position, object_distance_m)
        self._psf_many([(nx_, ny_, c, focus_position, object_distance_m, oversample, None, shift)
                        for _, nx_, ny_ in terms])
        terms = [(wgt, self._psf(nx_, ny_, c, focus_position, object_distance_m, oversample, None, shift))
                 for wgt, nx_, ny_ in terms]
        k = size if size is not None else max(p.shape[0] for _, p in terms)
        if k % 2 == 0 or k < 1:
            raise CalibError(f"PSF size {k} must be a positive odd number")
        out = np.zeros((k, k), np.float64)
        for wgt, p in terms:
            out += wgt * _fit(p, k)
        total = out.sum()
        return (out / total if total > 0 else out).astype(np.float32)

    def true_psf(
        self,
        x: float,
        y: float,
        channel: str,
        *,
        focus_position: float,
        object_distance_m: float,
        oversample: int = 1,
        size: int | None = None,
        model: str = "rendered",
    ) -> np.ndarray:
        """The true system PSF (optics x pixel aperture x AA filter) at sensor pixel (x, y).

        Parameters
        ----------
        x, y : float
            Where green's chief ray meets the sensor: the distortion-mapped ideal image
            of the point (pixels). It also sets the field point of the aberrations.
        channel : {"R", "G", "B"}
        focus_position : float
            Focus-drive steps from the infinity end stop.
        object_distance_m : float
            Distance of the (point) object from the lens.
        oversample : int
            Samples per pixel (1: the sensor grid).
        size : int, optional
            Odd side in samples; default: large enough for the geometric blur, the
            first Airy rings and the pixel (``psf_size``).
        model : {"rendered", "pupil"}
            ``"rendered"`` (default): exactly the operator ``shoot`` applies, i.e. the
            pupil-model PSFs at the ``render_grid`` nodes, bilinearly interpolated at
            (x, y). ``"pupil"``: the pupil model evaluated at (x, y) itself (equal at
            the nodes; between nodes they differ by the interpolation error).

        Returns
        -------
        ndarray (size, size) float32, sums to 1.
            Sample ``(size//2, size//2)`` is at (x, y), green's chief-ray position. The
            PSF is not re-centred: its centroid sits at green's aberration offset
            (coma) for "G" and additionally at the lateral-colour offset
            ``lateral_colour_px`` for "R"/"B". ``psf_centroid_px`` measures it.
        """
        if oversample < 1:
            raise CalibError(f"oversample {oversample} must be >= 1")
        try:
            fn = self._MODELS[model]
        except KeyError:
            raise CalibError(f"PSF model {model!r} is not one of {', '.join(self._MODELS)}") from None
        return fn(self, x, y, _channel_index(channel), focus_position, object_distance_m, int(oversample), size)

    _MODELS = {"rendered": _psf_rendered, "pupil": _psf_pupil}

    def true_psf_centroid(
        self, x: float, y: float, channel: str, *, focus_position: float, object_distance_m: float
    ) -> PointPx:
        """Absolute sensor position (pixels) of the true PSF's centroid for a point imaged at (x, y)."""
        # a pixel-sampled PSF narrower than a pixel hides sub-pixel shifts: centroid it
        # finely sampled (the pixel box and AA filter are symmetric, so no bias)
        psf = self.true_psf(x, y, channel, focus_position=focus_position, object_distance_m=object_distance_m,
                            oversample=_CENTROID_OVERSAMPLE)
        c = psf_centroid_px(psf, oversample=_CENTROID_OVERSAMPLE)
        return PointPx(x + c.x_px, y + c.y_px)

    def true_dot_positions(self, layout, shot: SimShot) -> TrueDots:
        """The true positions of ``layout``'s dots in ``shot`` (a shot of that chart),
        for the dots whose chief ray lands in the frame."""
        if shot.homography is None:
            raise CalibError("the shot is not of a chart (no homography); shoot a targets.Layout")
        mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots], np.float64).reshape(-1, 2)
        v = np.c_[mm, np.ones(len(mm))] @ np.asarray(shot.homography).T
        chief = self.distortion.distort(v[:, :2] / v[:, 2:])
        w, h = self.image_size
        framed = (chief[:, 0] >= 0) & (chief[:, 1] >= 0) & (chief[:, 0] <= w - 1) & (chief[:, 1] <= h - 1)
        kw = dict(focus_position=shot.focus_position, object_distance_m=shot.object_distance_m)
        recorded = [self.true_psf_centroid(x, y, "G", **kw) for x, y in chief[framed]]
        return TrueDots(mm[framed], chief[framed],
                        np.array([(p.x_px, p.y_px) for p in recorded], np.float64).reshape(-1, 2))

    def true_psf_map(
        self,
        *,
        focus_position: float,
        object_distance_m: float,
        grid: tuple[int, int] = (6, 9),
        size: int | None = None,
        oversample: int = 1,
        centre_on: str = "green_centroid",
    ) -> PSFMap:
        """The true PSFs on a (ny, nx) grid of nodes spanning the frame (corners included).

        Parameters
        ----------
        grid : (ny, nx)
        size : int, optional
            Common odd side; default the largest ``psf_size`` over nodes and channels.
        centre_on : {"green_centroid", "chief_ray"}
            ``"green_centroid"`` (the ``PSFMap`` contract): every channel of a node is
            shifted so that green's centroid (of the continuous PSF, found at 5 samples
            per pixel) is on the centre sample; R/B keep their
            offset from green. ``"chief_ray"``: as ``true_psf``.
        """
        if centre_on not in ("green_centroid", "chief_ray"):
            raise CalibError(f"centre_on {centre_on!r} must be 'green_centroid' or 'chief_ray'")
        ny, nx = grid
        w, h = self.image_size
        xs, ys = np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)
        points = [(x, y) for y in ys for x in xs]
        if size is None:
            for c in range(3):
                self._prefetch_rendered(points, c, focus_position, object_distance_m, oversample)
            size = max(
                self._psf_rendered(x, y, c, focus_position, object_distance_m, oversample, None).shape[0]
                for x in xs for y in ys for c in range(3)
            )
        shifts = [(0.0, 0.0)] * len(points)
        if centre_on == "green_centroid":
            # the window truncates the tails differently once shifted: refine twice
            for _ in range(2):
                self._prefetch_rendered(points, 1, focus_position, object_distance_m, _CENTROID_OVERSAMPLE, shifts)
                new = []
                for (x, y), shift in zip(points, shifts):
                    g = self._psf_rendered(x, y, 1, focus_position, object_distance_m,
                                           _CENTROID_OVERSAMPLE, None, shift)
                    cg = psf_centroid_px(g, oversample=_CENTROID_OVERSAMPLE)
                    new.append((shift[0] - cg.x_px, shift[1] - cg.y_px))
                shifts = new
        for c in range(3):
            self._prefetch_rendered(points, c, focus_position, object_distance_m, oversample, shifts)
        psf = np.zeros((3, ny, nx, size, size), np.float32)
        for k, ((x, y), shift) in enumerate(zip(points, shifts)):
            i, j = divmod(k, nx)
            for c in range(3):
                psf[c, i, j] = self._psf_rendered(x, y, c, focus_position, object_distance_m,
                                                  oversample, size, shift)
        nodes = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)
        return PSFMap(psf, nodes, CHANNELS, (w, h), sampling=oversample)

    def best_focus_position(
        self, object_distance_m: float, *, field_xy: tuple[float, float] | None = None, channel: str = "G"
    ) -> float:
        """Focus position (steps, fractional) of least RMS wavefront error at a field point.

        Balances defocus against spherical aberration (``W020 = -W040``), field
        curvature and astigmatism (medial focus, ``-W222 h^2 / 2``) and the channel's
        axial colour. Default field point: the optical centre.
        """
        c = _channel_index(channel)
        x, y = field_xy if field_xy is not None else (self.centre.x_px, self.centre.y_px)
        f = self.focal_length_mm
        s = self.lens.scaled_seidel_um(self.f_number)
        hh = math.hypot(x - self.centre.x_px, y - self.centre.y_px) / self.norm_radius_px
        target_w020 = -(s["W040"] + s["W220"] * hh**2 + 0.5 * s["W222"] * hh**2)
        v_obj = self.lens.conjugate_mm(object_distance_m, f)
        v = v_obj
        for _ in range(20):  # the working f-number depends weakly on v
            n_w = self.f_number * v / f
            v = v_obj + (self.lens.axial_colour_um[c] + 8.0 * n_w**2 * target_w020) / 1000.0
        return (v - f) / (self.lens.focus_step_um * 1e-3)

    # -- shooting ------------------------------------------------------------------------
    def chart_homography(
        self,
        layout,
        *,
        tilt_deg: tuple[float, float] = (0.0, 0.0),
        roll_deg: float = 0.0,
        fill: float = 0.85,
    ) -> np.ndarray:
        """Chart millimetres -> sensor pixels (before distortion) for a chart filling the frame.

        The page's image spans ``fill`` of the frame's limiting side; perspective is that
        of this focal length at the distance where it would; ``tilt_deg`` rotates the
        chart about its x and y axes, ``roll_deg`` in its plane.
        """
        pw, ph = (float(v) for v in layout.page_mm)
        w, h = self.image_size
        scale = fill * min(w / pw, h / ph)  # px per chart mm at the chart centre
        f_px = self.focal_length_mm * 1000.0 / self.sensor.pixel_pitch_um
        z0 = f_px / scale  # mm
        tx, ty = (math.radians(a) for a in tilt_deg)
        rz = math.radians(roll_deg)
        rx = np.array([[1, 0, 0], [0, math.cos(tx), -math.sin(tx)], [0, math.sin(tx), math.cos(tx)]])
        ry = np.array([[math.cos(ty), 0, math.sin(ty)], [0, 1, 0], [-math.sin(ty), 0, math.cos(ty)]])
        rr = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
        r = rr @ ry @ rx
        k = np.array([[f_px, 0, self.centre.x_px], [0, f_px, self.centre.y_px], [0, 0, 1.0]])
        ext = np.column_stack([r[:, 0], r[:, 1], [0.0, 0.0, z0]])
        shift = np.array([[1, 0, -pw / 2], [0, 1, -ph / 2], [0, 0, 1.0]])
        hmat = k @ ext @ shift
        return hmat / hmat[2, 2]

    def dots_field_fill(self, layout, *, overfill: float = 1.06) -> float:
        """The ``fill`` (see :meth:`chart_homography`) at which ``layout``'s dots field spans
        at least ``overfill`` times the frame along both axes, so that dots reach the
        frame's corners (the chart's inner markers keep it registrable): how a dots chart
        should be framed.

        Examples
        --------
        >>> cam = SimulatedCamera("sharp-prime", "small")  # doctest: +SKIP
        >>> fill = cam.dots_field_fill(layout)  # doctest: +SKIP
        >>> shot = cam.shoot(layout, focus_position=377, fill=fill,  # doctest: +SKIP
        ...                  object_distance_m=cam.chart_distance_m(layout, fill=fill))
        """
        if not layout.dots:
            raise CalibError(f"layout {getattr(layout, 'layout_id', '')} has no dots field to frame")
        mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
        (w, h), (pw, ph) = self.image_size, layout.page_mm
        needed_px_per_mm = overfill * max(w / np.ptp(mm[:, 0]), h / np.ptp(mm[:, 1]))
        return float(needed_px_per_mm / min(w / pw, h / ph))

    def chart_distance_m(self, layout, *, fill: float) -> float:
        """Chart distance (m) at which :meth:`chart_homography` frames the page with ``fill``
        (what sets the chart's defocus in :meth:`shoot`)."""
        hom = self.chart_homography(layout, fill=fill)
        px_per_mm = float(np.hypot(hom[0, 0], hom[1, 0]))
        f_px = self.focal_length_mm * 1000.0 / self.sensor.pixel_pitch_um
        return (f_px / px_per_mm + self.focal_length_mm) / 1000.0

    def _fine_coords(self, s: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.image_size
        cx = (np.arange((w + 2 * margin) * s) - (s - 1) / 2) / s - margin
        cy = (np.arange((h + 2 * margin) * s) - (s - 1) / 2) / s - margin
        return cx, cy

    def _chart_scene(self, layout, hmat: np.ndarray, s: int, margin: int, supersample: int) -> np.ndarray:
        import targets  # noqa: PLC0415

        render = getattr(targets, "render_layout", None)
        if render is None:
            raise CalibError("targets.render_layout is not available in this installation; update lenspsf")
        cx, cy = self._fine_coords(s, margin)
        distorted = self.lens.distortion_k1 != 0 or self.lens.distortion_k2 != 0
        if not distorted:
            to_fine = np.array([[s, 0, s * margin + (s - 1) / 2], [0, s, s * margin + (s - 1) / 2], [0, 0, 1.0]])
            img = render(layout, (len(cy), len(cx)), homography=to_fine @ hmat, supersample=supersample)
            return np.asarray(img, np.float32)
        return _distorted_scene(render, layout, hmat, self.distortion, cx, cy, supersample=supersample)

    def render_linear(
        self,
        scene,
        *,
        focus_position: float,
        object_distance_m: float,
        tilt_deg: tuple[float, float] = (0.0, 0.0),
        roll_deg: float = 0.0,
        fill: float = 0.85,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The noise-free sensor irradiance (H, W, 3), scene units, and the chart homography.

        ``scene``: a ``targets.Layout`` (a grey chart, rendered at ``render_oversample``
        samples per pixel, then distorted), or a float image (H, W, 3) / (s H, s W, 3)
        with odd s: scene radiance sampled at the (sub-)pixel centres, in *sensor*
        coordinates (no distortion is applied to image scenes). Each scene sample acts as
        a point source; vignetting, then the spatially varying system PSF apply.
        """
        w, h = self.image_size
        kw = dict(focus_position=focus_position, object_distance_m=object_distance_m)
        hmat = None
        # margin: the widest kernel's half width, so light from just outside the frame
        # reaches the border pixels
        ny, nx = self.render_grid_for(**kw)
        xs, ys = self._render_nodes((ny, nx))
        corner_sizes = [self.psf_size(x, y, ch, **kw) for x in (xs[0], xs[nx // 2]) for y in (ys[0], ys[ny // 2]) for ch in CHANNELS]
        margin = max(corner_sizes) // 2 + 1
        if isinstance(scene, np.ndarray):
            arr = np.asarray(scene, np.float32)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            s = arr.shape[0] // h
            if arr.ndim != 3 or arr.shape[2] != 3 or s < 1 or s % 2 == 0 or arr.shape[:2] != (h * s, w * s):
                raise CalibError(
                    f"scene image has shape {arr.shape}; expected ({h}, {w}, 3) or an odd multiple of it for this sensor"
                )
            planes = np.pad(arr, ((margin * s, margin * s), (margin * s, margin * s), (0, 0)), mode="reflect")
            planes = np.moveaxis(planes, 2, 0)
        elif hasattr(scene, "page_mm"):
            s = self.render_oversample
            hmat = self.chart_homography(scene, tilt_deg=tilt_deg, roll_deg=roll_deg, fill=fill)
            grey = self._chart_scene(scene, hmat, s, margin, supersample=3 if s == 1 else 2)
            planes = np.broadcast_to(grey, (3,) + grey.shape)
        else:
            raise CalibError("scene must be a targets.Layout or a float image (H, W, 3); got " + type(scene).__name__)
        cx, cy = self._fine_coords(s, margin)
        vig = self._vignetting_f32(cx, cy)
        take = slice(margin * s + (s - 1) // 2, (margin + h) * s, s), slice(margin * s + (s - 1) // 2, (margin + w) * s, s)
        self._psf_many([(x, y, c, focus_position, object_distance_m, s, None)
                        for c in range(3) for y in ys for x in xs])
        if progress:
            print(f"rendering {len(CHANNELS)} channels ({ny}x{nx} PSF nodes)", file=sys.stderr, flush=True)

        def kernel(c, i, j):
            return self._psf(xs[j], ys[i], c, focus_position, object_distance_m, s, None)

        # a grey chart is one plane shared by the channels: vignette and transform it once
        src = planes[:1] if planes.strides[0] == 0 else planes
        blurred = render_varying(src * vig, cx, cy, xs, ys, kernel, len(CHANNELS))
        out = np.ascontiguousarray(np.moveaxis(blurred[(slice(None),) + take], 0, -1))
        return out, hmat

    def shoot(
        self,
        scene,
        *,
        focus_position: int,
        object_distance_m: float,
        exposure_s: float | None = None,
        iso: float = 100.0,
        rng: np.random.Generator | None = None,
        tilt_deg: tuple[float, float] = (0.0, 0.0),
        roll_deg: float = 0.0,
        fill: float = 0.85,
        progress: bool = False,
    ) -> SimShot:
        """Take a photo of ``scene`` (a ``targets.Layout`` or a float image; see ``render_linear``).

        Parameters
        ----------
        exposure_s : float, optional
            Shutter time. A scene value of 1.0 reaches the white level at ISO 100, f/4,
            1/100 s; default: the time that puts 1.0 at 85 % of the white level.
        iso : float
            Higher ISO: fewer electrons for the same raw level (more shot noise).
        rng : numpy Generator, optional
            Noise source (default: the camera's own, seeded by ``seed``).
        """
        if exposure_s is None:
            exposure_s = 0.85 * _REF_EXPOSURE_S * (self.f_number / _REF_F_NUMBER) ** 2 * self.sensor.base_iso / iso
        irr, hmat = self.render_linear(
            scene, focus_position=focus_position, object_distance_m=object_distance_m,
            tilt_deg=tilt_deg, roll_deg=roll_deg, fill=fill, progress=progress,
        )
        electrons = irr * np.float32(
            self.sensor.full_well_e * (exposure_s / _REF_EXPOSURE_S) * (_REF_F_NUMBER / self.f_number) ** 2
        )
        g = self.sensor.gain_dn_per_e(iso)
        span = float(self.sensor.white_level_dn - self.sensor.black_level_dn)
        ideal = np.minimum(electrons * np.float32(g / span), np.float32(1.0))
        dn = self.sensor.expose(electrons, iso=iso, rng=rng if rng is not None else self._rng)
        meta = self.metadata(focus_position=focus_position, exposure_s=exposure_s, iso=iso)
        return SimShot(
            raw=mosaic_rggb(dn), rgb_dn=dn, rgb_linear=self.sensor.develop(dn), rgb_ideal=ideal,
            metadata=meta, homography=hmat, focus_position=int(focus_position),
            object_distance_m=float(object_distance_m),
            black_level=self.sensor.black_level_dn, white_level=self.sensor.white_level_dn,
        )

    def metadata(self, *, focus_position: int, exposure_s: float | None = None, iso: float | None = None) -> ShotMetadata:
        """What this camera writes about a shot."""
        return ShotMetadata(
            camera=f"lenspsf SimCam {self.sensor.name}",
            serial=f"SIM-{self.seed if self.seed is not None else 0}",
            lens=f"sim {self.lens.name} {self.focal_length_mm:g}mm",
            focal_length_mm=self.focal_length_mm,
            f_number=self.f_number,
            exposure_s=exposure_s,
            iso=iso,
            focus_position=int(focus_position),
            focus_distance_m=self.focus_distance_m(focus_position),
            pixel_pitch_um=self.sensor.pixel_pitch_um,
        )

    def write_tiff(self, shot: SimShot, path: str | os.PathLike, *, raw: bool = False):
        """Write ``shot`` as a 16-bit linear TIFF like a camera would (see ``_output``)."""
        return write_shot_tiff(shot, path, raw=raw)


# A tile's local homography may miss the true distortion mapping by this much (pixels):
# far below the scale of any chart feature, so each scene sample keeps its exact footprint.
_TILE_TOL_PX = 0.005
_TILE_PX = 64  # starting tile side (pixels); tiles halve until the fit meets the tolerance
_TILE_MIN_SAMPLES = 4  # below this a tile renders even if the fit misses (extreme distortion)


def _distorted_scene(render, layout, hmat: np.ndarray, distortion, cx: np.ndarray, cy: np.ndarray, *,
                     supersample: int, tol_px: float = _TILE_TOL_PX) -> np.ndarray:
    """The chart seen through radial distortion, box-filtered over each scene sample.

    ``cx``, ``cy``: uniform sample centres (pixels, distorted sensor coordinates).
    Resampling an undistorted render would add an interpolation blur the true PSF
    lacks; instead each tile of the output gets its own homography (chart mm -> tile
    samples) fitted to the distortion mapping, and ``render`` area-samples the chart
    through it directly. Tiles split until the fit is within ``tol_px``.
    """
    import cv2  # noqa: PLC0415

    step = float(cx[1] - cx[0]) if len(cx) > 1 else 1.0
    boxes = _element_boxes(layout)
    out = np.empty((len(cy), len(cx)), np.float32)
    side = max(_TILE_MIN_SAMPLES, int(round(_TILE_PX / step)))
    todo = [(r, min(r + side, len(cy)), c, min(c + side, len(cx)))
            for r in range(0, len(cy), side) for c in range(0, len(cx), side)]
    while todo:
        r0, r1, c0, c1 = todo.pop()
        th, tw = r1 - r0, c1 - c0
        # fit points span every sample's footprint (half a sample beyond the centres)
        lx = np.linspace(-0.5, tw - 0.5, 9)
        ly = np.linspace(-0.5, th - 0.5, 9)
        gx, gy = np.meshgrid(lx, ly)
        local = np.stack([gx.ravel(), gy.ravel()], -1)
        q = np.column_stack([cx[c0] + local[:, 0] * step, cy[r0] + local[:, 1] * step])
        ideal = distortion.undistort(q)
        g, _ = cv2.findHomography(local, ideal, 0)
        fit = cv2.perspectiveTransform(local[None], g)[0]
        if np.abs(fit - ideal).max() > tol_px and min(th, tw) >= 2 * _TILE_MIN_SAMPLES:
            rm, cm = r0 + th // 2, c0 + tw // 2
            todo += [(r0, rm, c0, cm), (r0, rm, cm, c1), (rm, r1, c0, cm), (rm, r1, cm, c1)]
            continue
        to_tile = np.linalg.solve(g, hmat)
        out[r0:r1, c0:c1] = render(_layout_near(layout, boxes, np.linalg.solve(hmat, g), tw, th),
                                   (th, tw), homography=to_tile, supersample=supersample)
    return out


def _element_boxes(layout) -> dict:
    """Chart-mm bounding boxes (N, 4: x0, y0, x1, y1) of the layout's many-element fields."""
    def corners(items):
        c = np.array([it.corners_mm for it in items], float)
        return np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1)

    pw = float(layout.page_mm[0])
    boxes = {}
    for name, fn in (
        ("regions", lambda v: [(e.x0_mm, e.y0_mm, e.x1_mm, e.y1_mm) for e in v]),
        ("noise", lambda v: [(e.x0_mm, e.y0_mm, e.x1_mm, e.y1_mm) for e in v]),
        ("stripes", lambda v: [(e.x0_mm, e.y0_mm, e.x1_mm, e.y1_mm) for e in v]),
        ("edges", corners),
        ("dots", lambda v: [(d.x_mm - d.diameter_mm / 2, d.y_mm - d.diameter_mm / 2,
                             d.x_mm + d.diameter_mm / 2, d.y_mm + d.diameter_mm / 2) for d in v]),
        # a line's width is known only once its glyphs are drawn: it may reach the page's edge
        ("text", lambda v: [(t.x_mm, t.y_mm, max(pw, t.x_mm), t.y_mm + t.height_mm) for t in v]),
    ):
        items = getattr(layout, name, ())
        if len(items) > 0:
            boxes[name] = np.asarray(fn(items), float).reshape(-1, 4)
    items = layout.markers.items
    if len(items) > 0:
        b = corners(items)
        quiet = (b[:, 2:] - b[:, :2]).max(axis=1, keepdims=True)  # the quiet zone is narrower than the marker
        boxes["markers"] = np.concatenate([b[:, :2] - quiet, b[:, 2:] + quiet], axis=1)
    return boxes


def _layout_near(layout, boxes: dict, tile_to_mm: np.ndarray, tw: int, th: int):
    """``layout`` keeping only the elements that can reach a tile (``tile_to_mm``: samples -> chart mm).

    A dots chart holds thousands of dots and the renderer compiles and visits every
    element per call; culling keeps the per-tile cost proportional to the tile.
    """
    corners = np.array([[-3, -3, 1], [tw + 2, -3, 1], [-3, th + 2, 1], [tw + 2, th + 2, 1]], float) @ tile_to_mm.T
    if np.any(corners[:, 2] * corners[0, 2] <= 0):  # the tile sees the chart's horizon: keep everything
        return layout
    mm = corners[:, :2] / corners[:, 2:]
    (x0, y0), (x1, y1) = mm.min(axis=0), mm.max(axis=0)
    changes = {}
    for name, b in boxes.items():
        keep = np.flatnonzero((b[:, 2] >= x0) & (b[:, 0] <= x1) & (b[:, 3] >= y0) & (b[:, 1] <= y1))
        if name == "markers":
            items = layout.markers.items
            changes[name] = replace(layout.markers, items=tuple(items[i] for i in keep))
        else:
            items = getattr(layout, name)
            changes[name] = tuple(items[i] for i in keep)
    return replace(layout, **changes)

def _fit(p: np.ndarray, k: int) -> np.ndarray:
    """Centre-crop or zero-pad an odd square array to k x k."""
    n = p.shape[0]
    if n == k:
        return p
    if n > k:
        a = (n - k) // 2
        return p[a : a + k, a : a + k]
    a = (k - n) // 2
    return np.pad(p, a)


def _pick(value, table: dict, what: str):
    if isinstance(value, str):
        try:
            return table[value]
        except KeyError:
            raise CalibError(
                f"unknown simulated {what} {value!r}; choose one of {', '.join(sorted(table))}"
            ) from None
    return value


def _channel_index(channel: str | int) -> int:
    if isinstance(channel, int):
        return channel
    try:
        return CHANNELS.index(channel)
    except ValueError:
        raise CalibError(f"channel {channel!r} is not one of R, G, B") from None
