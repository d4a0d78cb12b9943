"""The one function that loads photos for analysis and restore: linear float32 data.

Every reader ends in a :class:`LinearImage` whose ``data`` is float32 (H, W, C),
0 at the black level and 1 at the white (clipping) level. The development of raw files
is fixed (see :func:`load_linear`) so that a PSF measured on a calibration shot
includes exactly the processing that restore later sees.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import CalibError
from ._records import ShotMetadata

__all__ = ["GammaEncodedWarning", "LinearImage", "load_linear", "RAW_SUFFIXES"]

RAW_SUFFIXES = frozenset(
    ".dng .nef .nrw .cr2 .cr3 .crw .arw .srf .sr2 .raf .orf .rw2 .rwl .pef .srw .x3f "
    ".3fr .fff .iiq .erf .kdc .dcr .mrw .mos .raw".split()
)
_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
_CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

# Rec. 709 / sRGB luminance weights (also what sfrmat uses for its luminance record).
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)


class GammaEncodedWarning(UserWarning):
    """The file holds gamma-encoded (display) values, not linear sensor data."""


@dataclass(frozen=True, eq=False)
class LinearImage:
    """A photo as the analysis sees it.

    Attributes
    ----------
    data : ndarray, float32, shape (H, W, C)
        0 at ``black_level``, 1 at ``white_level``. Not clipped: noise may dip a little
        below 0 in the dark.
    channels : tuple of str
        ``("R", "G", "B")``, ``("Y",)`` for a grey image, or ``("CFA",)`` for an
        undemosaiced mosaic (then ``cfa`` names its 2x2 pattern).
    black_level, white_level : float
        The levels in the file's own units that map to 0 and 1.
    saturated : ndarray, bool, shape (H, W, C)
        Pixels at or above the white level (for demosaiced raws: pixels whose
        interpolation used a clipped photosite).
    metadata : ShotMetadata
    linear : bool
        False when gamma-encoded values were kept as they are (``linearize=False``).
    path : Path
    cfa : str or None
        2x2 colour filter pattern (``"RGGB"``, ...) when ``data`` is a mosaic.
    """

    data: np.ndarray
    channels: tuple[str, ...]
    black_level: float
    white_level: float
    saturated: np.ndarray
    metadata: ShotMetadata = field(default_factory=ShotMetadata)
    linear: bool = True
    path: Path | None = None
    cfa: str | None = None

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def channel(self, name: str) -> np.ndarray:
        """One channel as (H, W) float32; ``"Y"`` of an RGB image is its luminance."""
        if name in self.channels:
            return self.data[:, :, self.channels.index(name)]
        if name == "Y" and self.channels == ("R", "G", "B"):
            return luminance(self.data)
        raise CalibError(
            f"{self.path or 'the image'} has no channel {name!r}; "
            f"choose one of {', '.join(self.channels + (('Y',) if len(self.channels) == 3 else ()))}"
        )


def luminance(rgb: np.ndarray, weights: tuple[float, float, float] = LUMA_WEIGHTS) -> np.ndarray:
    """Weighted sum of the R, G, B planes of an (H, W, 3) array, float32 (H, W)."""
    w = np.asarray(weights, dtype=np.float32)
    return np.tensordot(np.asarray(rgb, dtype=np.float32), w, axes=([2], [0])).astype(np.float32)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """Inverse of the sRGB transfer curve for values 0..1."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


# ---------------------------------------------------------------- raw development
# Demosaic by name: (rawpy algorithm name, OpenCV Bayer code suffix or None). "linear"
# is the default because it is available for raw files and for mosaic TIFFs alike, so
# both are developed the same way.
_DEMOSAIC: dict[str, tuple[str | None, str | None]] = {
    "linear": ("LINEAR", ""),
    "ahd": ("AHD", None),
    "vng": ("VNG", "_VNG"),
    "ppg": ("PPG", None),
    "dcb": ("DCB", None),
    "none": (None, None),
}

# White balance multipliers by name. "none" keeps the sensor's own channel response
# (no extra clipping from multipliers > 1; a fixed per-channel gain does not change a PSF).
_WHITE_BALANCE: dict[str, dict[str, Any]] = {
    "none": {"use_camera_wb": False, "use_auto_wb": False, "user_wb": [1.0, 1.0, 1.0, 1.0]},
    "camera": {"use_camera_wb": True, "use_auto_wb": False},
}


def _import_rawpy(path: Path):
    try:
        import rawpy  # noqa: PLC0415 - optional dependency, imported only for raw files
    except ImportError:
        raise CalibError(
            f"reading the raw file {path} needs rawpy, which is not installed; "
            "install the 'raw' extra (pip install 'lenspsf[raw]') or convert it to a 16-bit TIFF"
        ) from None
    return rawpy


def _cfa_name(raw) -> str | None:
    desc = raw.color_desc.decode("ascii", "replace")
    pattern = np.asarray(raw.raw_pattern)
    if pattern.shape != (2, 2):
        return None
    # color_desc is "RGBG": index 3 is the second green, which reads as G too.
    name = "".join(desc[int(i)] for i in pattern.ravel())
    return name if name in _CFA_PATTERNS else None


def _read_raw(path: Path, demosaic: str, white_balance: str) -> tuple[np.ndarray, tuple, float, float, np.ndarray, str | None]:
    rawpy = _import_rawpy(path)
    try:
        with rawpy.imread(str(path)) as raw:
            black = float(np.mean(raw.black_level_per_channel))
            white = float(raw.white_level)
            mosaic = raw.raw_image_visible.astype(np.float32)
            clipped = mosaic >= white
            cfa = _cfa_name(raw)
            algo, _ = _DEMOSAIC[demosaic]
            if algo is None:
                blacks = np.asarray(raw.black_level_per_channel, dtype=np.float32)
                colors = raw.raw_colors_visible
                data = (mosaic - blacks[colors]) / (white - blacks[colors])
                return data[:, :, None], ("CFA",), black, white, clipped[:, :, None], cfa
            rgb = raw.postprocess(
                demosaic_algorithm=getattr(rawpy.DemosaicAlgorithm, algo),
                gamma=(1.0, 1.0),
                no_auto_bright=True,
                output_bps=16,
                output_color=rawpy.ColorSpace.raw,
                user_flip=0,
                highlight_mode=rawpy.HighlightMode.Clip,
                **_WHITE_BALANCE[white_balance],
            )
    except rawpy.LibRawError as exc:
        raise CalibError(
            f"cannot read the raw file {path}: {type(exc).__name__} ({exc}); the file is "
            "truncated, corrupt or of an unsupported camera, copy it again from the card"
        ) from None
    data = rgb.astype(np.float32) / 65535.0
    sat = data >= 1.0
    if clipped.shape == data.shape[:2] and clipped.any():
        # Demosaicing spreads a clipped photosite into its 3x3 neighbourhood.
        import cv2  # noqa: PLC0415

        grown = cv2.dilate(clipped.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        sat |= grown[:, :, None]
    return data, ("R", "G", "B"), black, white, sat, None


# ---------------------------------------------------------------- metadata
def _num(v: Any) -> float | None:
    """A float from an EXIF number (int, float, IFDRational, (num, den) tuple)."""
    if v is None:
        return None
    try:
        if isinstance(v, tuple | list):
            if len(v) == 2 and all(isinstance(x, int | np.integer) for x in v):
                return float(v[0]) / float(v[1]) if v[1] else None
            return _num(v[0]) if v else None
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if np.isfinite(f) else None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v).strip("\x00 ").strip()
    return s or None


def _metadata_from_exif(tags: Mapping[str, Any]) -> ShotMetadata:
    """ShotMetadata from EXIF/TIFF tags keyed by their standard names."""
    make, model = _text(tags.get("Make")), _text(tags.get("Model"))
    camera = model if (make and model and model.lower().startswith(make.lower().split()[0])) else (
        " ".join(p for p in (make, model) if p) or None
    )
    distance = _num(tags.get("SubjectDistance"))
    iso = _num(tags.get("ISOSpeedRatings", tags.get("PhotographicSensitivity")))
    pitch = None
    res = _num(tags.get("FocalPlaneXResolution"))
    unit = int(_num(tags.get("FocalPlaneResolutionUnit")) or 2)
    unit_um = {2: 25400.0, 3: 10000.0, 4: 1000.0}.get(unit)
    if res and unit_um:
        pitch = unit_um / res
    return ShotMetadata(
        camera=camera,
        serial=_text(tags.get("BodySerialNumber", tags.get("CameraSerialNumber"))),
        lens=_text(tags.get("LensModel")),
        focal_length_mm=_num(tags.get("FocalLength")),
        f_number=_num(tags.get("FNumber")),
        exposure_s=_num(tags.get("ExposureTime")),
        iso=iso,
        focus_distance_m=distance if distance and distance > 0 else None,
        pixel_pitch_um=pitch,
    )


def _tifffile_tags(page) -> dict[str, Any]:
    """Name -> value of a tifffile page's tags, with its EXIF IFD merged in."""
    tags: dict[str, Any] = {}
    for tag in page.tags.values():
        # tifffile may add its own second ImageDescription; ours is the one with "lenspsf".
        if tag.name == "ImageDescription" and "lenspsf" in str(tags.get(tag.name, "")):
            continue
        tags[tag.name] = tag.value
    exif = tags.get("ExifTag")
    if isinstance(exif, dict):
        for k, v in exif.items():
            tags.setdefault(k, v)
    return tags


def _pillow_exif(path: Path) -> dict[str, Any]:
    from PIL import ExifTags, Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            tags = {ExifTags.TAGS.get(k, str(k)): v for k, v in exif.items()}
            for k, v in exif.get_ifd(ExifTags.IFD.Exif).items():
                tags.setdefault(ExifTags.TAGS.get(k, str(k)), v)
    except Exception:  # noqa: BLE001 - metadata is optional; the pixels are read elsewhere
        return {}
    return tags


def _lenspsf_json(description: Any) -> dict[str, Any] | None:
    """The ``{"lenspsf": {...}}`` block our simulated camera writes, or None."""
    text = _text(description)
    if not text or not text.startswith("{"):
        return None
    try:
        block = json.loads(text).get("lenspsf")
    except (ValueError, AttributeError):
        return None
    return block if isinstance(block, dict) else None


# ---------------------------------------------------------------- pixel readers
def _read_tiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile  # noqa: PLC0415

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = _tifffile_tags(page)
            try:
                arr = page.asarray()
            except ValueError as exc:
                if "imagecodecs" not in str(exc):
                    raise
                arr = None  # compressed with a codec tifffile lacks here: Pillow reads it
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise CalibError(
            f"cannot read the TIFF {path}: {exc}; the file is truncated or not a valid TIFF, "
            "write or copy it again"
        ) from None
    if arr is None:
        arr = _read_pillow(path)
    if arr.ndim == 3 and tags.get("PlanarConfiguration") in (2, "SEPARATE") and arr.shape[0] <= 4:
        arr = np.moveaxis(arr, 0, -1)
    return arr, tags


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "1"):
                im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CalibError(
            f"cannot read the image {path}: {exc}; the file is truncated or not an image, "
            "copy it again"
        ) from None


def _read_png(path: Path) -> np.ndarray:
    import cv2  # noqa: PLC0415

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return _read_pillow(path)  # raises a CalibError naming the file when it is bad
    if arr.ndim == 3:
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
    return arr


def _demosaic_cv2(mosaic: np.ndarray, cfa: str, demosaic: str, path: Path) -> np.ndarray:
    import cv2  # noqa: PLC0415

    suffix = _DEMOSAIC[demosaic][1]
    if suffix is None:
        raise CalibError(
            f"demosaic {demosaic!r} is available for raw files only, not for the mosaic TIFF "
            f"{path}; use demosaic='linear', 'vng' or 'none'"
        )
    # OpenCV names a Bayer pattern by its second row: an RGGB sensor is its "BayerBG".
    cv_name = {"RGGB": "BG", "BGGR": "RG", "GRBG": "GB", "GBRG": "GR"}[cfa]
    code = getattr(cv2, f"COLOR_Bayer{cv_name}2RGB{suffix}")
    src = mosaic if mosaic.dtype in (np.uint8, np.uint16) else np.clip(mosaic, 0, 65535).astype(np.uint16)
    return cv2.cvtColor(np.ascontiguousarray(src), code)


def _as_hwc(arr: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if arr.ndim == 2:
        return arr[:, :, None], ("Y",)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return arr[:, :, :3], ("R", "G", "B")
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        return arr[:, :, :1], ("Y",)
    raise CalibError(f"{path} holds an image of shape {arr.shape}, not a photo; give a grey or RGB image")


# ---------------------------------------------------------------- the loader
def load_linear(
    path: str | Path,
    *,
    linearize: bool = True,
    demosaic: str = "linear",
    white_balance: str = "none",
    metadata: ShotMetadata | None = None,
) -> LinearImage:
    """Load a photo as linear float32 (H, W, C) data, 0 at black and 1 at white.

    Parameters
    ----------
    path : str or Path
        Raw file (any format LibRaw reads, DNG included; needs the ``raw`` extra),
        TIFF or PNG (16-bit or float data are taken as linear), or an 8-bit
        JPEG/TIFF/PNG (gamma-encoded: a :class:`GammaEncodedWarning` is issued).
    linearize : bool
        For gamma-encoded (8-bit) files: undo the sRGB curve (default), or keep the
        encoded values as they are (``False``; ``LinearImage.linear`` is then False),
        which is how the reference slanted-edge tools read such files.
        Linear files are never changed.
    demosaic : str
        Fixed demosaic for raw files and mosaic TIFFs: ``"linear"`` (bilinear, the
        default, available for both), ``"vng"``, or for raw files only ``"ahd"``,
        ``"ppg"``, ``"dcb"``; ``"none"`` returns the undemosaiced mosaic as one
        ``"CFA"`` channel with ``cfa`` set.
    white_balance : str
        Raw files: ``"none"`` (default: unit multipliers, the sensor's own channel
        response, nothing clipped by a multiplier) or ``"camera"`` (as shot).
        Raw development is otherwise fixed: gamma 1, no auto-brightness, 16-bit,
        camera RGB (no colour matrix), no rotation, highlights clipped.
    metadata : ShotMetadata, optional
        Use this instead of what the file says (e.g. from a session manifest).

    Returns
    -------
    LinearImage

    Raises
    ------
    CalibError
        Missing, truncated or unreadable file; rawpy missing for a raw file.

    Examples
    --------
    >>> img = load_linear("shot_0001.tif")            # doctest: +SKIP
    >>> img.data.shape, img.channels                  # doctest: +SKIP
    ((4000, 6000, 3), ('R', 'G', 'B'))
    """
    path = Path(path)
    if demosaic not in _DEMOSAIC:
        raise CalibError(f"unknown demosaic {demosaic!r}; choose one of {', '.join(_DEMOSAIC)}")
    if white_balance not in _WHITE_BALANCE:
        raise CalibError(
            f"unknown white balance {white_balance!r}; choose one of {', '.join(_WHITE_BALANCE)}"
        )
    if not path.is_file():
        raise CalibError(f"image file {path} does not exist; check the path")
    suffix = path.suffix.lower()

    if suffix in RAW_SUFFIXES:
        data, channels, black, white, sat, cfa = _read_raw(path, demosaic, white_balance)
        meta = metadata or _raw_metadata(path)
        return LinearImage(data.astype(np.float32, copy=False), channels, black, white, sat, meta, True, path, cfa)

    tags: dict[str, Any] = {}
    if suffix in _TIFF_SUFFIXES:
        arr, tags = _read_tiff(path)
    else:
        arr = _read_png(path) if suffix == ".png" else _read_pillow(path)
        tags = _pillow_exif(path)

    block = _lenspsf_json(tags.get("ImageDescription"))
    if metadata is None:
        if block is not None:
            metadata = ShotMetadata.from_dict(block)
        elif tags:
            metadata = _metadata_from_exif(tags)
        else:
            metadata = ShotMetadata()

    cfa = None
    if block is not None and block.get("cfa"):
        cfa = str(block["cfa"]).upper()
        if cfa not in _CFA_PATTERNS:
            raise CalibError(f"{path} names an unknown CFA pattern {cfa!r}; expected one of {_CFA_PATTERNS}")
        if arr.ndim != 2:
            raise CalibError(f"{path} says it is a {cfa} mosaic but holds {arr.ndim}-D data; write the mosaic as (H, W)")

    if arr.dtype == np.uint8:
        return _gamma_image(arr, path, linearize, metadata)
    if arr.dtype.kind == "f":
        black = float(block.get("black_level", 0.0)) if block else 0.0
        white = float(block.get("white_level", 1.0)) if block else 1.0
    elif arr.dtype.kind in "ui":
        black = float(block.get("black_level", 0)) if block else 0.0
        white = float(block.get("white_level", np.iinfo(arr.dtype).max)) if block else float(np.iinfo(arr.dtype).max)
    else:
        raise CalibError(f"{path} holds {arr.dtype} pixels; give an 8/16-bit or float image")
    if white <= black:
        raise CalibError(f"{path} has white level {white} <= black level {black}; fix its metadata")

    sat_mosaic = arr >= white
    if cfa is not None and demosaic != "none":
        rgb = _demosaic_cv2(arr, cfa, demosaic, path)
        import cv2  # noqa: PLC0415

        grown = cv2.dilate(sat_mosaic.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        data = (rgb.astype(np.float32) - black) / (white - black)
        sat = (rgb >= white) | grown[:, :, None]
        channels: tuple[str, ...] = ("R", "G", "B")
        cfa = None
    elif cfa is not None:
        data = ((arr.astype(np.float32) - black) / (white - black))[:, :, None]
        sat = sat_mosaic[:, :, None]
        channels = ("CFA",)
    else:
        hwc, channels = _as_hwc(arr, path)
        data = (hwc.astype(np.float32) - black) / (white - black)
        sat = hwc >= white
    return LinearImage(data.astype(np.float32, copy=False), channels, black, white, sat, metadata, True, path, cfa)


def _gamma_image(arr: np.ndarray, path: Path, linearize: bool, metadata: ShotMetadata) -> LinearImage:
    hwc, channels = _as_hwc(arr, path)
    action = "undoing the sRGB curve, an approximation" if linearize else "keeping the encoded values"
    warnings.warn(
        f"{path} is 8-bit gamma-encoded, not linear sensor data ({action}); PSFs and MTFs "
        "measured on it are biased, shoot raw or 16-bit linear TIFF for calibration",
        GammaEncodedWarning,
        stacklevel=3,
    )
    data = hwc.astype(np.float32) / 255.0
    if linearize:
        data = srgb_to_linear(data)
    return LinearImage(data, channels, 0.0, 255.0, hwc >= 255, metadata, linearize, path, None)


def _raw_metadata(path: Path) -> ShotMetadata:
    """EXIF of a TIFF-based raw (DNG, NEF, CR2, ARW, ...) read with tifffile; else empty."""
    import tifffile  # noqa: PLC0415

    try:
        with tifffile.TiffFile(path) as tif:
            return _metadata_from_exif(_tifffile_tags(tif.pages[0]))
    except Exception:  # noqa: BLE001 - not TIFF-based (CR3, RAF, ...): metadata unknown
        return ShotMetadata()
