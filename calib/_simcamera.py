"""The simulated camera behind the same interface as a tethered body.

:class:`SimCamera` adapts :class:`calib._sim.SimulatedCamera` (the physical lens +
sensor model) to :class:`calib._camera.Camera`: its settings have choices like a
body's, ``focus`` moves the model's focus position, ``present_chart`` puts a chart
layout in front of it (no operator needed) and ``capture`` writes a 16-bit linear
TIFF with the model's writer.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from targets import atomic_write

from ._camera import CameraBase, CameraInfo, Setting
from ._errors import CalibError

# Third-stop scales, as a body offers them.
_F_NUMBERS = ("1.4", "1.6", "1.8", "2", "2.2", "2.5", "2.8", "3.2", "3.5", "4", "4.5", "5",
              "5.6", "6.3", "7.1", "8", "9", "10", "11", "13", "14", "16", "18", "20", "22")
_SHUTTERS = ("1", "1/2", "1/4", "1/8", "1/15", "1/30", "1/60", "1/100", "1/125", "1/160",
             "1/200", "1/250", "1/500", "1/1000")
_ISOS = ("100", "200", "400", "800", "1600", "3200", "6400")
# Image format label -> write_tiff(raw=...): RGB per pixel, or the RGGB mosaic.
_FORMATS = {"TIFF 16-bit RGB": False, "TIFF 16-bit raw mosaic": True}
# Generic format names a session may ask for -> label.
_FORMAT_ALIASES = {"raw": "TIFF 16-bit raw mosaic", "tiff": "TIFF 16-bit RGB"}
# Framing per chart kind: charts with markers inside their field overfill the frame so
# the field reaches the corners; the rest ("" = any other kind) are framed whole.
_FRAMING = {"dots": 1.3, "noise": 1.3, "": 0.85}


def _seconds(label: str) -> float:
    num, _, den = label.partition("/")
    return float(num) / float(den or 1)


class SimCamera(CameraBase):
    """A simulated lens + sensor that shoots like a tethered camera.

    Parameters
    ----------
    lens_profile : str
        Lens profile of the simulated lens (``sharp-prime``, ``soft-zoom``, ``vintage``).
    sensor : str or SensorModel
        Sensor preset (``small`` for tests and the demo, ``24mp``) or a model.
    object_distance_m : float
        Distance of the chart from the camera.
    seed : int
        Seeds the sensor noise, so sessions are reproducible.
    model : SimulatedCamera, optional
        A ready model (``lens_profile``, ``sensor`` and ``seed`` are then ignored).
    fill : float or mapping of chart kind to float, optional
        Framing: the chart page's image spans this fraction of the frame's limiting
        side, for every chart or per chart kind. By default dots and noise charts
        overfill the frame (1.3) as a calibration should, so that the field reaches
        the corners while the markers inside it stay visible; other kinds, whose
        markers ring the sheet, are framed whole (0.85).

    Examples
    --------
    >>> with SimCamera(lens_profile="sharp-prime") as cam:  # doctest: +SKIP
    ...     cam.present_chart(layout, name="dots")
    ...     cam.focus(120)
    ...     files = cam.capture(Path("captures/sim"))
    """

    def __init__(self, *, lens_profile: str = "sharp-prime", sensor: Any = "small",
                 object_distance_m: float = 2.0, seed: int = 1, model: Any = None,
                 fill: float | Mapping[str, float] | None = None) -> None:
        if model is None:
            from ._sim import SimulatedCamera  # heavy: only when a simulator is opened

            model = SimulatedCamera(lens_profile, sensor, seed=seed)
        if object_distance_m <= 0:
            raise CalibError(f"chart distance {object_distance_m} m must be positive")
        framing = dict(_FRAMING)
        if isinstance(fill, Mapping):
            framing.update(fill)
        elif fill is not None:
            framing = dict.fromkeys(framing, fill) | {"": fill}
        if any(v <= 0 for v in framing.values()):
            raise CalibError(f"chart framing fill {fill} must be positive")
        self._framing = {k: float(v) for k, v in framing.items()}
        self.model = model
        self.object_distance_m = float(object_distance_m)
        self._scene: Any = None
        self._scene_set = False
        self._focus = int(round(model.best_focus_position(self.object_distance_m)))
        self._shots = 0
        self._closed = False
        fmin = float(model.lens.f_number_min)
        self._choices: dict[str, tuple[str, ...]] = {
            "fnumber": tuple(f"f/{f}" for f in _F_NUMBERS if float(f) >= fmin - 1e-9),
            "shutter": _SHUTTERS,
            "iso": _ISOS,
            "format": tuple(_FORMATS),
        }
        self._values = {"fnumber": f"f/{model.f_number:g}", "shutter": "",
                        "iso": "100", "format": "TIFF 16-bit RGB"}
        if self._values["fnumber"] not in self._choices["fnumber"]:
            self._choices["fnumber"] = (self._values["fnumber"], *self._choices["fnumber"])
        self._values["shutter"] = self._auto_shutter()

    def _auto_shutter(self) -> str:
        # The model's own default exposure rounded to the nearest listed speed.
        ref = 0.85 * 0.01 * (self.model.f_number / 4.0) ** 2 * 100.0 / float(self._values["iso"])
        return min(_SHUTTERS, key=lambda s: abs(np.log(_seconds(s) / ref)))

    def _check_open(self) -> None:
        if self._closed:
            raise CalibError("the simulated camera was closed; open it again to use it")

    def info(self) -> CameraInfo:
        """The simulated body: model, serial and lens as its TIFFs record them."""
        meta = self.model.metadata(focus_position=self._focus)
        return CameraInfo(
            backend="sim", model=meta.camera or "lenspsf SimCam", serial=meta.serial,
            port=None, manufacturer="lenspsf", lens=meta.lens, focus_drive="sim",
            needs_operator=False,
            extra={"object_distance_m": self.object_distance_m, "sensor": self.model.sensor.name},
        )

    def settings(self) -> dict[str, Setting]:
        """f-number, shutter, ISO and image format with their choices."""
        self._check_open()
        return {name: Setting(name=name, label=name, value=self._values[name], choices=choices)
                for name, choices in self._choices.items()}

    def set(self, name: str, value: str) -> str:
        """Set a setting to one of its choices (``"8"`` matches ``f/8``, ``"raw"`` the mosaic)."""
        self._check_open()
        if name not in self._choices:
            raise CalibError(
                f"the simulated camera has no setting {name!r}; known settings: {', '.join(self._choices)}"
            )
        choices = self._choices[name]
        text = str(value).strip()
        wanted = {"fnumber": f"f/{text.lower().removeprefix('f/')}",
                  "format": _FORMAT_ALIASES.get(text.lower(), text)}.get(name, text)
        label = next((c for c in choices if c.lower() == wanted.lower()), None)
        if label is None and name == "fnumber":
            label = next((c for c in choices if _same_number(c[2:], text.lower().removeprefix("f/"))), None)
        if label is None:
            raise CalibError(
                f"{value!r} is not a valid {name} for the simulated camera; choose one of: {', '.join(choices)}"
            )
        self._values[name] = label
        if name == "fnumber":
            self.model.f_number = float(label[2:])
        return label

    def exposure(self) -> dict[str, str | None]:
        """Current f-number, shutter, ISO and format labels."""
        return dict(self._values)

    def focus(self, position: int) -> None:
        """Move the simulated focus to ``position`` (steps of the model's focus drive)."""
        self._check_open()
        if position < 0:
            raise CalibError(f"focus position {position} is negative; positions count steps from the near end stop")
        self._focus = int(position)

    def fill_for(self, layout: Any) -> float:
        """The framing (``fill``) this camera uses for ``layout``'s chart kind."""
        return self._framing.get(getattr(layout, "kind", ""), self._framing[""])

    def present_chart(self, layout: Any | None, *, name: str) -> str | None:
        """Put ``layout`` in front of the simulated camera (None: lens cap on)."""
        self._scene, self._scene_set = layout, True
        return None

    def capture(self, folder: Path, *, prefix: str = "") -> list[Path]:
        """Render, expose and write one 16-bit TIFF into ``folder``."""
        self._check_open()
        if not self._scene_set:
            raise CalibError("no chart is in front of the simulated camera; present one first")
        scene = self._scene
        if scene is None:  # lens cap on: no light at all, only the sensor's own noise
            w, h = self.model.image_size
            scene = np.zeros((h, w), np.float32)
        shot = self.model.shoot(
            scene, focus_position=self._focus, object_distance_m=self.object_distance_m,
            exposure_s=_seconds(self._values["shutter"]), iso=float(self._values["iso"]),
            fill=self.fill_for(scene),
        )
        self._shots += 1
        path = Path(folder) / f"{prefix}SIM_{self._shots:04d}.TIF"
        with atomic_write(path) as tmp:
            self.model.write_tiff(shot, tmp, raw=_FORMATS[self._values["format"]])
        return [path]

    def close(self) -> None:
        """Nothing to release; further use raises CalibError."""
        self._closed = True


def _same_number(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return False
