"""One camera interface for every backend (tethered gphoto2 body, simulated camera).

A capture session talks to a camera only through :class:`Camera`: it reads what the
camera is (:meth:`Camera.info`), reads and sets exposure settings, drives focus to
repeatable positions, tells the camera which chart is in front of it and shoots.
Backends are chosen by name through :data:`_BACKENDS` (see :func:`open_camera`).
"""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from ._errors import CalibError

# Generic setting names a session uses; each backend maps them to its own widgets.
GENERIC_SETTINGS: tuple[str, ...] = ("fnumber", "shutter", "iso", "format", "capturetarget")

# Image formats a session can ask for (matched by pattern against the camera's labels).
IMAGE_FORMATS: tuple[str, ...] = ("raw", "raw+jpeg", "jpeg")

# Raw files by extension: checked by decoding with rawpy when it is installed.
RAW_SUFFIXES = frozenset(
    {".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".dng", ".raf",
     ".orf", ".rw2", ".pef", ".srw", ".3fr", ".iiq", ".x3f", ".erf", ".kdc", ".mos"}
)
PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".tif", ".tiff", ".png"})


@dataclass(frozen=True)
class Setting:
    """One camera setting as the camera reports it.

    Attributes
    ----------
    name : str
        The backend's own name (``"f-number"``, ``"shutterspeed"``, ...).
    label : str
        Human-readable label.
    value : str
        Current value, as text.
    choices : tuple of str
        Valid values; empty when the setting is free text, a range or a toggle.
    readonly : bool
    kind : str
        ``"choice"``, ``"text"``, ``"range"`` or ``"toggle"``.
    range : tuple of float or None
        (min, max, step) for ``kind == "range"``.
    """

    name: str
    label: str
    value: str
    choices: tuple[str, ...] = ()
    readonly: bool = False
    kind: str = "choice"
    range: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class CameraInfo:
    """What a camera is: recorded in every session manifest.

    Attributes
    ----------
    backend : str
        ``"gphoto2"`` or ``"sim"``.
    model : str
    serial : str or None
    port : str or None
        Where the camera is connected (``"usb:001,004"``), None for the simulator.
    manufacturer : str or None
    lens : str or None
    focus_drive : str or None
        Which focus drive moves the lens (``"canon"``, ``"nikon"``, ``"sony"``,
        ``"sim"``); None when the body has none that can be driven remotely.
    needs_operator : bool
        True when charts must be swapped or the lens capped by a person.
    """

    backend: str
    model: str
    serial: str | None = None
    port: str | None = None
    manufacturer: str | None = None
    lens: str | None = None
    focus_drive: str | None = None
    needs_operator: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_focus_drive(self) -> bool:
        """True when :meth:`Camera.focus` can move the lens."""
        return self.focus_drive is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for the session manifest)."""
        return {
            "backend": self.backend, "model": self.model, "serial": self.serial,
            "port": self.port, "manufacturer": self.manufacturer, "lens": self.lens,
            "focus_drive": self.focus_drive, **({"extra": self.extra} if self.extra else {}),
        }


@runtime_checkable
class Camera(Protocol):
    """The interface every camera backend implements.

    Use as a context manager so the camera is always released::

        with open_camera("sim", lens_profile="sharp_prime") as cam:
            cam.set("fnumber", "8")
            cam.focus(120)
            files = cam.capture(Path("captures/x"), prefix="s0001_")
    """

    def info(self) -> CameraInfo:
        """What the camera is (model, serial, lens, focus drive)."""

    def settings(self) -> dict[str, Setting]:
        """Every setting the camera reports, by the backend's own name."""

    def set(self, name: str, value: str) -> str:
        """Set ``name`` (generic or backend name) to ``value``; return the value sent.

        Raises :class:`CalibError` naming the setting and the valid choices when
        ``value`` is not one of them; nothing reaches the camera in that case.
        """

    def exposure(self) -> dict[str, str | None]:
        """Current exposure by generic name (``fnumber``, ``shutter``, ``iso``, ``format``).

        A value is None where the camera has no such setting.
        """

    def focus(self, position: int) -> None:
        """Drive focus to ``position`` steps from the reference end stop."""

    def present_chart(self, layout: Any | None, *, name: str) -> str | None:
        """Put chart ``layout`` in front of the camera (None: lens capped, dark frames).

        Returns an instruction for the operator (swap the print, cap the lens) or
        None when the camera arranged it itself (the simulator).
        """

    def capture(self, folder: Path, *, prefix: str = "") -> list[Path]:
        """Shoot once and save every file of the shot into ``folder``; return them."""

    def close(self) -> None:
        """Release the camera (idempotent)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class CameraBase(ABC):
    """Context-manager plumbing shared by the backends."""

    @abstractmethod
    def close(self) -> None:
        """Release the camera."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Backend name -> (module, class); modules import lazily so that an unused backend's
# dependencies (gphoto2) are never needed.
_BACKENDS: dict[str, tuple[str, str]] = {
    "gphoto2": ("calib._gphoto2_backend", "GPhoto2Camera"),
    "sim": ("calib._simcamera", "SimCamera"),
}


def open_camera(backend: str, **options: Any) -> Camera:
    """Open a camera by backend name.

    Parameters
    ----------
    backend : str
        ``"gphoto2"`` (tethered body) or ``"sim"`` (simulated lens + sensor).
    **options
        Passed to the backend's constructor (``port=``, ``model=`` for gphoto2;
        ``lens_profile=`` and others for sim).

    Returns
    -------
    Camera
        Open camera; use it as a context manager.
    """
    try:
        module, cls = _BACKENDS[backend]
    except KeyError:
        raise CalibError(
            f"unknown camera backend {backend!r}; choose one of {', '.join(_BACKENDS)}"
        ) from None
    return getattr(importlib.import_module(module), cls)(**options)


def check_image_file(path: Path) -> None:
    """Check that a downloaded file is complete: non-empty and decodable.

    JPEG/TIFF/PNG are decoded with Pillow (JPEG at reduced scale, which still reads
    the whole entropy-coded stream); raw files with rawpy when it is installed.

    Raises
    ------
    CalibError
        The file is empty, truncated or not an image.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CalibError(f"downloaded file {path} is empty; check the cable and run again with --resume")
    suffix = path.suffix.lower()
    try:
        if suffix in PIL_SUFFIXES:
            _decode_with_pil(path)
        elif suffix in RAW_SUFFIXES:
            _decode_raw(path)
    except CalibError:
        raise
    except Exception as exc:  # any decoder failure means a damaged download
        raise CalibError(
            f"downloaded file {path} is not a readable image ({exc}); check the cable "
            "and run again with --resume"
        ) from exc


def _decode_with_pil(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()


def _decode_raw(path: Path) -> None:
    try:
        import rawpy
    except ImportError:  # size was checked; decoding raw needs the optional extra
        return
    with rawpy.imread(os.fspath(path)) as raw:
        raw.raw_image_visible.shape  # noqa: B018 - touching it unpacks the raw data
