"""The chart layout: every printed element with its geometry in millimetres.

Coordinates are chart millimetres: x to the right, y down, origin at the page's
top-left corner. The layout is the contract between the chart on paper and the
analysis, so it round-trips through JSON without loss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import atomic_write
from ._errors import TargetError

FORMAT = "lenspsf-chart-layout"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Rect:
    """A filled axis-aligned rectangle (background regions, scale bar, ticks)."""

    x0_mm: float
    y0_mm: float
    x1_mm: float
    y1_mm: float
    ink: str
    role: str = "region"


@dataclass(frozen=True)
class Dot:
    """A bright disc; ``phase_*_px`` is its known sub-pixel offset in imaged pixels."""

    x_mm: float
    y_mm: float
    diameter_mm: float
    phase_x_px: float
    phase_y_px: float
    row: int
    col: int
    ink: str = "paper"


@dataclass(frozen=True)
class StripePatch:
    """A grating in a rectangle.

    Reflectance is ``mean + amplitude * profile(2 pi f ((x - xc) cos t + (y - yc) sin t))``
    with ``t = orientation_deg`` the direction of the wave vector measured from +x
    towards +y (0 = vertical lines, 90 = horizontal lines), ``profile`` cosine or
    its sign (square), phase zero at the patch centre.
    """

    x0_mm: float
    y0_mm: float
    x1_mm: float
    y1_mm: float
    frequency_cpmm: float
    orientation_deg: float
    profile: str
    mean: float
    amplitude: float
    field_ix: int
    field_iy: int

    @property
    def period_mm(self) -> float:
        return 1.0 / self.frequency_cpmm

    @property
    def contrast(self) -> float:
        """Michelson contrast (max - min) / (max + min)."""
        return self.amplitude / self.mean

    @property
    def centre_mm(self) -> tuple[float, float]:
        return (0.5 * (self.x0_mm + self.x1_mm), 0.5 * (self.y0_mm + self.y1_mm))


@dataclass(frozen=True)
class EdgeSquare:
    """A dark square rotated by ``tilt_deg``; corners clockwise on the page."""

    x_mm: float
    y_mm: float
    side_mm: float
    tilt_deg: float
    corners_mm: tuple[tuple[float, float], ...]
    ink: str
    row: int
    col: int


@dataclass(frozen=True)
class NoisePatch:
    """A random binary pattern: cell (i, j) is ``ink_on`` where the bit is 1.

    Bits are ``numpy.random.default_rng(seed).integers(0, 2, size=(ny, nx))``
    (row = y index); :meth:`bits` regenerates them.
    """

    x0_mm: float
    y0_mm: float
    cell_mm: float
    nx: int
    ny: int
    seed: int
    ink_on: str
    ink_off: str

    @property
    def x1_mm(self) -> float:
        return self.x0_mm + self.nx * self.cell_mm

    @property
    def y1_mm(self) -> float:
        return self.y0_mm + self.ny * self.cell_mm

    def bits(self):
        """The (ny, nx) uint8 pattern, 1 where the cell carries ``ink_on``."""
        import numpy as np

        return np.random.default_rng(self.seed).integers(0, 2, size=(self.ny, self.nx), dtype=np.uint8)


@dataclass(frozen=True)
class Marker:
    """One ArUco marker: outer corners of its black border (TL, TR, BR, BL as OpenCV orders them)."""

    id: int
    corners_mm: tuple[tuple[float, float], ...]

    @property
    def side_mm(self) -> float:
        """Mean side of the marker's black square, mm."""
        c = self.corners_mm
        return sum(math.dist(c[k], c[(k + 1) % len(c)]) for k in range(len(c))) / len(c)


@dataclass(frozen=True)
class MarkerSet:
    """The fiducials: OpenCV ArUco dictionary name, module count and the markers.

    ``modules`` counts cells across one marker including its one-cell black
    border; each marker is surrounded by a white quiet zone of ``quiet_modules``.
    ``size_mm`` is the side of the ring's markers; those inside a dots or noise field
    are smaller (``Marker.side_mm``).
    """

    dictionary: str
    size_mm: float
    modules: int
    quiet_modules: int
    items: tuple[Marker, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.items)

    @property
    def quiet_zone_mm(self) -> float:
        """Width of the white quiet zone around a marker of ``size_mm`` (the ring's), mm."""
        return self.size_mm / max(self.modules, 1) * self.quiet_modules

    def quiet_zone_of(self, marker: Marker) -> float:
        """Width of the white quiet zone around ``marker``, mm: the markers inside a
        uniform field are smaller than the ring's, and so are their quiet zones."""
        return marker.side_mm / max(self.modules, 1) * self.quiet_modules


@dataclass(frozen=True)
class TextLine:
    """A printed line of text; its cap box starts at (x_mm, y_mm) top-left."""

    x_mm: float
    y_mm: float
    height_mm: float
    text: str
    ink: str = "black"


@dataclass(frozen=True)
class ScaleBar:
    """A solid bar of exactly ``length_mm`` to check the print scale with a ruler."""

    x0_mm: float
    y0_mm: float
    length_mm: float
    height_mm: float
    ink: str = "black"


@dataclass(frozen=True)
class Screen:
    """Display target instead of paper: the page is ``width_px x height_px`` pixels of ``pixel_pitch_mm``."""

    width_px: int
    height_px: int
    pixel_pitch_mm: float


@dataclass(frozen=True)
class Layout:
    """A complete chart: page, inks, elements and fiducials, all in millimetres.

    Attributes
    ----------
    kind : str
        ``dots``, ``stripes``, ``edges``, ``noise`` or ``combo``.
    page_mm : (float, float)
        Page width and height in mm.
    paper : str
        Paper name as requested (``A4``, ``210x297mm``, ``screen``...).
    inks : dict
        Nominal reflectance (0..1) of every ink level used.
    background : str
        Ink of the bare page.
    regions, dots, stripes, edges, noise : tuple
        The elements, drawn in this order on top of the page.
    markers : MarkerSet
        ArUco fiducials for registration.
    scale_bar : ScaleBar
    text : tuple of TextLine
    params : dict
        The options the chart was made with (and derived figures such as the
        pixel footprint on the chart, the pinhole-plate description).
    screen : Screen or None
    """

    kind: str
    page_mm: tuple[float, float]
    paper: str
    landscape: bool
    inks: dict[str, float]
    background: str
    regions: tuple[Rect, ...]
    dots: tuple[Dot, ...]
    stripes: tuple[StripePatch, ...]
    edges: tuple[EdgeSquare, ...]
    noise: tuple[NoisePatch, ...]
    markers: MarkerSet
    scale_bar: ScaleBar
    text: tuple[TextLine, ...]
    params: dict[str, Any] = field(default_factory=dict)
    screen: Screen | None = None
    format_version: int = FORMAT_VERSION

    @property
    def layout_id(self) -> str:
        """Stable id: kind, paper and a short hash of the geometry."""
        digest = hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()
        return f"{self.kind}-{self.paper}{'-landscape' if self.landscape else ''}-{digest[:10]}"

    def dot_centres_mm(self):
        """(N, 2) float64 array of dot centres (x, y) in mm, in ``dots`` order."""
        import numpy as np

        return np.array([(d.x_mm, d.y_mm) for d in self.dots], dtype=np.float64).reshape(-1, 2)

    def reflectance(self, ink: str) -> float:
        """Nominal reflectance of ``ink``."""
        return float(self.inks[ink])

    def _content(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (format header first)."""
        d = {"format": FORMAT, "format_version": self.format_version, "layout_id": self.layout_id}
        body = self._content()
        body.pop("format_version")
        d.update(body)
        d["units"] = "mm; x right, y down, origin at the page's top-left corner"
        return d

    def to_json(self) -> str:
        """The layout as JSON text (see :func:`layout_from_json`)."""
        return json.dumps(self.to_dict(), indent=1)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _tuples(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tuples(v) for v in obj)
    return obj


def _build(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _tuples(v) for k, v in d.items() if k in names})


def layout_from_dict(d: dict[str, Any], *, source: str = "layout") -> Layout:
    """Rebuild a :class:`Layout` from :meth:`Layout.to_dict` output."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise TargetError(f"{source} is not a lenspsf chart layout; pass the .json written beside the chart")
    version = d.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TargetError(
            f"{source} has layout format version {version}, newer than this lenspsf reads "
            f"({FORMAT_VERSION}); upgrade lenspsf"
        )
    try:
        m = d["markers"]
        markers = MarkerSet(
            dictionary=m["dictionary"], size_mm=m["size_mm"], modules=m["modules"],
            quiet_modules=m["quiet_modules"],
            items=tuple(_build(Marker, x) for x in m["items"]),
        )
        screen = _build(Screen, d["screen"]) if d.get("screen") else None
        return Layout(
            kind=d["kind"], page_mm=tuple(d["page_mm"]), paper=d["paper"], landscape=d["landscape"],
            inks=dict(d["inks"]), background=d["background"],
            regions=tuple(_build(Rect, x) for x in d["regions"]),
            dots=tuple(_build(Dot, x) for x in d["dots"]),
            stripes=tuple(_build(StripePatch, x) for x in d["stripes"]),
            edges=tuple(_build(EdgeSquare, x) for x in d["edges"]),
            noise=tuple(_build(NoisePatch, x) for x in d["noise"]),
            markers=markers,
            scale_bar=_build(ScaleBar, d["scale_bar"]),
            text=tuple(_build(TextLine, x) for x in d["text"]),
            params=dict(d.get("params", {})), screen=screen, format_version=version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TargetError(f"{source} is a damaged chart layout ({exc!r} is wrong); write it again with 'lenspsf targets make'") from None


def layout_from_json(text: str, *, source: str = "layout") -> Layout:
    """Parse JSON text written by :meth:`Layout.to_json`."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        raise TargetError(f"{source} is not a lenspsf chart layout (not JSON); pass the .json written beside the chart") from None
    return layout_from_dict(d, source=source)


def load_layout(path: str | os.PathLike) -> Layout:
    """Read a chart layout file.

    Parameters
    ----------
    path : path-like
        The ``NAME.json`` written beside a chart.

    Returns
    -------
    Layout

    Raises
    ------
    TargetError
        The file is missing, not a layout, or of a newer format version.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TargetError(f"chart layout {path} does not exist; make it with 'lenspsf targets make'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"chart layout {path} cannot be read ({exc.__class__.__name__}); check the path") from None
    return layout_from_json(text, source=f"chart layout {path}")


def save_layout(layout: Layout, path: str | os.PathLike) -> Path:
    """Write ``layout`` as JSON to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(layout.to_json() + "\n", encoding="utf-8")
    return path
