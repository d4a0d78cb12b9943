"""Tethered camera through libgphoto2 (python-gphoto2).

This is the only module of the project that imports ``gphoto2``, and it does so
inside functions (:func:`_gp`) so ``import calib`` works where gphoto2 is missing.

Three rules keep a real body (and libgphoto2) safe:

* every value is checked against the camera's own choices before it is sent: an
  off-list value can crash libgphoto2 (it does, on the virtual camera);
* a closed camera is never touched again (libgphoto2 aborts the process);
* one shot is *trigger, then drain events*: a RAW+JPEG body adds two files, and
  both are downloaded and checked before the shot counts.
"""
from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from targets import atomic_write

from ._camera import CameraBase, CameraInfo, Setting, check_image_file
from ._errors import CalibError


def _gp():
    """The gphoto2 module, imported on first use."""
    try:
        import gphoto2
    except ImportError:
        raise CalibError(
            "the gphoto2 camera backend needs python-gphoto2; install it with "
            "`pip install 'lenspsf[camera]'` or use --camera sim"
        ) from None
    return gphoto2


# ---------------------------------------------------------------------------- errors

# libgphoto2 error name -> what the user should do. Resolved to numeric codes lazily
# because the constants live in the gphoto2 module.
_ERROR_HINTS: dict[str, str] = {
    "GP_ERROR_IO_USB_CLAIM": (
        "the camera is claimed by another process (usually the desktop's volume monitor "
        "gvfs-gphoto2-volume-monitor, or a photo importer); release it with "
        "`gio mount -s gphoto2` (or end gvfs-gphoto2-volume-monitor) and run again"
    ),
    "GP_ERROR_IO_LOCK": (
        "the camera port is locked by another process (a gphoto2 program, or "
        "gvfs-gphoto2-volume-monitor); close it (`gio mount -s gphoto2`) and run again"
    ),
    "GP_ERROR_MODEL_NOT_FOUND": (
        "no camera was found; connect it by USB, switch it on, set its USB mode to "
        "PTP/tethering and run again"
    ),
    "GP_ERROR_IO_USB_FIND": (
        "the camera is no longer on the USB bus (asleep or unplugged); wake it or "
        "reconnect it, turn off its auto power-off, and continue with --resume"
    ),
    "GP_ERROR_IO": (
        "the camera stopped answering (asleep or disconnected); wake it or reconnect "
        "it, turn off its auto power-off, and continue with --resume"
    ),
    "GP_ERROR_IO_READ": (
        "reading from the camera failed (asleep or disconnected); wake it or reconnect "
        "it and continue with --resume"
    ),
    "GP_ERROR_IO_WRITE": (
        "writing to the camera failed (asleep or disconnected); wake it or reconnect "
        "it and continue with --resume"
    ),
    "GP_ERROR_TIMEOUT": (
        "the camera did not answer in time (asleep or disconnected); wake it or "
        "reconnect it and continue with --resume"
    ),
    "GP_ERROR_CAMERA_BUSY": (
        "the camera stayed busy (still writing to its card, or a menu is open); wait, "
        "close its menus and continue with --resume"
    ),
    "GP_ERROR_NOT_SUPPORTED": "this camera does not support it through gphoto2",
}


def _hint(code: int) -> str | None:
    gp = _gp()
    for name, text in _ERROR_HINTS.items():
        if getattr(gp, name, None) == code:
            return text
    return None


def _explain(exc: Exception, action: str) -> CalibError:
    """A one-sentence CalibError for a libgphoto2 failure while doing ``action``."""
    code = getattr(exc, "code", None)
    hint = _hint(code) if isinstance(code, int) else None
    reason = getattr(exc, "string", None) or str(exc)
    if hint:
        return CalibError(f"could not {action}: {hint} (gphoto2: {reason})")
    return CalibError(
        f"could not {action} (gphoto2 error {code}: {reason}); check the camera and its "
        "cable, then continue with --resume"
    )


def call_with_retry(
    action: str,
    fn: Callable[..., Any],
    *args: Any,
    retries: int = 5,
    delay_s: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call a libgphoto2 function; retry with doubling delays while the camera is busy.

    Parameters
    ----------
    action : str
        What the call does, for the error message ("set f-number").
    fn, *args
        The call.
    retries : int
        Retries after the first attempt while the camera answers busy.
    delay_s : float
        First back-off delay; each retry doubles it.

    Raises
    ------
    CalibError
        Any libgphoto2 error (busy after every retry included), as one sentence.
    """
    gp = _gp()
    for attempt in range(retries + 1):
        try:
            return fn(*args)
        except gp.GPhoto2Error as exc:
            if exc.code == gp.GP_ERROR_CAMERA_BUSY and attempt < retries:
                sleep(delay_s * 2**attempt)
                continue
            raise _explain(exc, action) from exc
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectedCamera:
    """A camera libgphoto2 sees: its model name and port (``usb:001,004``)."""

    model: str
    port: str


def detect_cameras() -> list[DetectedCamera]:
    """Every camera libgphoto2 detects on this machine.

    Returns
    -------
    list of DetectedCamera
        Sorted by model then port; empty when none is connected.
    """
    gp = _gp()
    ports = gp.PortInfoList()
    ports.load()
    abilities = gp.CameraAbilitiesList()
    abilities.load()
    found = abilities.detect(ports)
    # Index access: iterating a CameraList is deprecated in python-gphoto2 2.6.
    cams = [DetectedCamera(found.get_name(i), found.get_value(i)) for i in range(found.count())]
    return sorted(cams, key=lambda c: (c.model, c.port))


def _choose(found: list[DetectedCamera], *, port: str | None, model: str | None) -> DetectedCamera:
    seen = ", ".join(f"{c.model} at {c.port}" for c in found)
    if not found:
        raise CalibError(
            "no camera was found by gphoto2; connect it by USB, switch it on, set its USB "
            "mode to PTP/tethering and run again"
        )
    pick = found
    if port is not None:
        pick = [c for c in pick if c.port == port]
    if model is not None:
        pick = [c for c in pick if model.lower() in c.model.lower()]
    if not pick:
        wanted = " and ".join(
            s for s in (f"port {port}" if port else "", f"model {model!r}" if model else "") if s
        )
        raise CalibError(f"no camera matches {wanted}; cameras found: {seen}")
    if len(pick) > 1:
        raise CalibError(f"several cameras found ({seen}); choose one with --port or --model")
    return pick[0]


# ------------------------------------------------------------------ setting matching

# Generic names -> the widget names bodies use for them (first present wins).
_ALIASES: dict[str, tuple[str, ...]] = {
    "fnumber": ("f-number", "aperture", "fnumber"),
    "shutter": ("shutterspeed", "shutterspeed2", "eos-shutterspeed"),
    "iso": ("iso", "isospeed", "eos-iso"),
    "format": ("imageformat", "imagequality", "imageformatsd", "imageformatcf"),
    "capturetarget": ("capturetarget",),
}

_RAW_TOKEN = re.compile(r"\b(c?raw|nef|cr2|cr3|arw|dng|raf|orf|rw2|pef|srw)\b", re.I)
_SMALL_RAW = re.compile(r"\b(s|m|s1|s2|m1|m2)\s*raw\b|\b(small|medium)\b.*\braw\b", re.I)
_JPEG_TOKEN = re.compile(r"jpe?g|fine|normal|basic|large|\bL\b|standard|\+|&", re.I)


def _number(text: str) -> float | None:
    """The number in a label: 'f/5.6' -> 5.6, '1/125' -> 0.008, '0.0100s' -> 0.01."""
    t = text.strip().lower().removeprefix("iso").removeprefix("f/").removeprefix("f").strip()
    t = t.removesuffix("s").removesuffix("sec").strip().replace(",", ".")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)", t)
    if m:
        return float(m.group(1)) / float(m.group(2))
    try:
        return float(t)
    except ValueError:
        return None


def _match_number(value: str, choices: tuple[str, ...], *, rel_tol: float) -> str | None:
    want = _number(value)
    if want is None or want <= 0:
        return None
    best, best_err = None, rel_tol
    for c in choices:
        got = _number(c)
        if got is not None and got > 0 and abs(got - want) / want <= best_err:
            best, best_err = c, abs(got - want) / want
    return best


def _match_iso(value: str, choices: tuple[str, ...]) -> str | None:
    if value.strip().lower() == "auto":
        return next((c for c in choices if "auto" in c.lower()), None)
    return _match_number(value, choices, rel_tol=1e-6)


def _jpeg_quality(label: str) -> int:
    """Higher for larger, finer JPEGs: the one a calibration wants alongside raw."""
    s = label.lower()
    score = 0
    score += 3 if "extra fine" in s or "extrafine" in s else 2 if "fine" in s else 0
    score += 1 if "large" in s or re.search(r"\bl\b", s) else 0
    score -= 2 if any(w in s for w in ("small", "medium", "basic", "normal")) else 0
    return score


def _match_format(value: str, choices: tuple[str, ...]) -> str | None:
    kind = value.strip().lower().replace(" ", "")
    full_raw = [c for c in choices if _RAW_TOKEN.search(c) and not _SMALL_RAW.search(c)]
    if kind == "raw":
        pick = [c for c in full_raw if not _JPEG_TOKEN.search(_RAW_TOKEN.sub("", c))]
        # Plain "RAW" before a compressed "cRAW": both full size, prefer lossless.
        return min(pick, key=lambda c: ("craw" in c.lower(), len(c)), default=None)
    if kind in ("raw+jpeg", "raw+jpg", "jpeg+raw"):
        pick = [c for c in full_raw if _JPEG_TOKEN.search(_RAW_TOKEN.sub("", c))]
        return max(pick, key=_jpeg_quality, default=None)
    if kind in ("jpeg", "jpg"):
        pick = [c for c in choices if not _RAW_TOKEN.search(c)]
        return max(pick, key=_jpeg_quality, default=None)
    return None


# Generic name -> matcher(value, choices) used when the value is not a label verbatim.
_MATCHERS: dict[str, Callable[[str, tuple[str, ...]], str | None]] = {
    "fnumber": lambda v, c: _match_number(v, c, rel_tol=2e-3),
    "shutter": lambda v, c: _match_number(v, c, rel_tol=1e-2),
    "iso": _match_iso,
    "format": _match_format,
}


def match_choice(generic: str | None, value: str, choices: tuple[str, ...]) -> str | None:
    """The camera label for ``value`` among ``choices`` (None when there is none).

    A label given verbatim (case-insensitive) always matches; otherwise the setting's
    matcher interprets it ('8' -> 'f/8', '1/100' -> '0.0100s', 'raw+jpeg' -> the
    body's finest RAW+JPEG label).
    """
    for c in choices:
        if c.strip().lower() == value.strip().lower():
            return c
    matcher = _MATCHERS.get(generic or "")
    return matcher(value, choices) if matcher else None


# ------------------------------------------------------------------------ focus drives


class _FocusDrive(ABC):
    """Moves the lens by counted steps; ``send(name, value)`` sets one checked widget.

    Positions count steps towards infinity from the near end stop; a move towards the
    near end re-references at the stop, so every position is approached from the
    same side and backlash does not shift it.
    """

    live_view = True
    step_pause_s = 0.05

    def __init__(self, send: Callable[[str, Any], None], *, settle_s: float, rack_moves: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.send, self.settle_s, self.rack_moves, self.sleep = send, settle_s, rack_moves, sleep

    @abstractmethod
    def step(self, count: int) -> None:
        """Move ``count`` steps (positive: away from the near end stop)."""

    @abstractmethod
    def rack_to_near_stop(self) -> None:
        """Drive to the near end stop, the reference of every position."""


class _CanonDrive(_FocusDrive):
    """EOS ``manualfocusdrive`` (Near/Far 1-3); a move registers only after 'None'."""

    def step(self, count: int) -> None:
        label = f"{'Far' if count > 0 else 'Near'} 1"
        for _ in range(abs(count)):
            self.send("manualfocusdrive", label)
            self.send("manualfocusdrive", "None")
            self.sleep(self.step_pause_s)

    def rack_to_near_stop(self) -> None:
        # No end-stop feedback: enough big steps to cross the whole range.
        for _ in range(self.rack_moves):
            self.send("manualfocusdrive", "Near 3")
            self.send("manualfocusdrive", "None")
            self.sleep(self.step_pause_s)


class _NikonDrive(_FocusDrive):
    """Nikon ``manualfocusdrive`` takes signed steps; the body reports the end stop."""

    def step(self, count: int) -> None:
        if count:
            self.send("manualfocusdrive", count)

    def rack_to_near_stop(self) -> None:
        for _ in range(self.rack_moves):
            try:
                self.send("manualfocusdrive", -32767)
            except CalibError:  # "manual focus at limit": the stop is reached
                return
            self.sleep(self.step_pause_s)


class _SonyDrive(_FocusDrive):
    """Sony ``manualfocus``: signed speed 1..7 per call (1 = finest)."""

    def step(self, count: int) -> None:
        for _ in range(abs(count)):
            self.send("manualfocus", 1 if count > 0 else -1)
            self.sleep(self.step_pause_s)

    def rack_to_near_stop(self) -> None:
        for _ in range(self.rack_moves):
            self.send("manualfocus", -7)
            self.sleep(self.step_pause_s)


_FOCUS_DRIVES: dict[str, type[_FocusDrive]] = {
    "canon": _CanonDrive,
    "nikon": _NikonDrive,
    "sony": _SonyDrive,
}


def detect_focus_drive(settings: dict[str, Setting]) -> str | None:
    """Which focus drive a body has, from the shape of its widgets (None: none)."""
    mfd = settings.get("manualfocusdrive")
    if mfd is not None and mfd.kind == "range":
        return "nikon"
    if mfd is not None and any(c.lower().startswith(("near", "far")) for c in mfd.choices):
        return "canon"
    if "manualfocus" in settings:
        return "sony"
    return None


# ----------------------------------------------------------------------------- camera


class GPhoto2Camera(CameraBase):
    """A tethered camera driven through libgphoto2.

    Parameters
    ----------
    port : str, optional
        Port to use (``usb:001,004``), as ``gphoto2 --auto-detect`` shows it.
    model : str, optional
        Part of the model name, case-insensitive (``"D750"``).
    settle_s : float
        Pause after each focus move before shooting (lens and body settle).
    event_timeout_s : float
        How long to wait for the first file of a shot after the trigger.
    quiet_s : float
        A shot is complete once the camera stays quiet this long after its files.
    busy_retries, busy_delay_s : int, float
        Retries with doubling delays while the camera answers busy.
    rack_moves : int
        Big moves towards the near end stop that cross the whole focus range.

    Examples
    --------
    >>> with GPhoto2Camera(model="D750") as cam:  # doctest: +SKIP
    ...     cam.set("fnumber", "8")
    ...     files = cam.capture(Path("captures/x"))
    """

    def __init__(self, *, port: str | None = None, model: str | None = None,
                 settle_s: float = 0.5, event_timeout_s: float = 15.0, quiet_s: float = 0.3,
                 busy_retries: int = 5, busy_delay_s: float = 0.25, rack_moves: int = 40) -> None:
        gp = _gp()
        self._cam = None
        self._retry = {"retries": busy_retries, "delay_s": busy_delay_s}
        self.settle_s, self.event_timeout_s, self.quiet_s = settle_s, event_timeout_s, quiet_s
        chosen = _choose(detect_cameras(), port=port, model=model)
        ports = gp.PortInfoList()
        ports.load()
        abilities = gp.CameraAbilitiesList()
        abilities.load()
        cam = gp.Camera()
        cam.set_port_info(ports[ports.lookup_path(chosen.port)])
        cam.set_abilities(abilities[abilities.lookup_model(chosen.model)])
        self._call(f"open the {chosen.model} at {chosen.port}", cam.init)
        self._cam = cam
        self._detected = chosen
        self._settings = self._read_settings()
        kind = detect_focus_drive(self._settings)
        self._drive = (
            _FOCUS_DRIVES[kind](self._send, settle_s=settle_s, rack_moves=rack_moves) if kind else None
        )
        self._drive_kind = kind
        self._focus_pos: int | None = None
        self._live_view = False

    # -- plumbing
    def _call(self, action: str, fn: Callable[..., Any], *args: Any) -> Any:
        return call_with_retry(action, fn, *args, **self._retry)

    def _open(self):
        if self._cam is None:
            # libgphoto2 aborts the process when a closed camera is used again.
            raise CalibError("the camera was closed; open it again to use it")
        return self._cam

    def _read_settings(self) -> dict[str, Setting]:
        root = self._call("read the camera settings", self._open().get_config)
        out: dict[str, Setting] = {}
        _walk(root, out)
        return out

    # -- interface
    def info(self) -> CameraInfo:
        """Model (as detected), serial, port, manufacturer, lens and focus drive."""
        s = self._settings

        def val(*names: str) -> str | None:
            for n in names:
                if n in s and s[n].value not in ("", "None"):
                    return s[n].value
            return None

        return CameraInfo(
            backend="gphoto2", model=self._detected.model,
            serial=val("serialnumber", "eosserialnumber"), port=self._detected.port,
            manufacturer=val("manufacturer"), lens=val("lensname", "lens"),
            focus_drive=self._drive_kind, needs_operator=True,
            extra={"reported_model": val("cameramodel", "model")},
        )

    def settings(self) -> dict[str, Setting]:
        """Every setting the camera reports, read fresh from the body."""
        self._settings = self._read_settings()
        return dict(self._settings)

    def resolve(self, name: str) -> str:
        """The body's widget name for a generic (``"fnumber"``) or widget name."""
        if name in self._settings:
            return name
        for widget in _ALIASES.get(name, ()):
            if widget in self._settings:
                return widget
        if name in _ALIASES:
            raise CalibError(
                f"the {self._detected.model} has no {name} setting (gphoto2 names tried: "
                f"{', '.join(_ALIASES[name])}); leave it out or set it on the camera"
            )
        raise CalibError(
            f"the {self._detected.model} has no setting {name!r}; known settings: "
            f"{', '.join(sorted(self._settings))}"
        )

    def set(self, name: str, value: str) -> str:
        """Set ``name`` to ``value`` after checking it against the camera's choices.

        Parameters
        ----------
        name : str
            Generic name (``fnumber``, ``shutter``, ``iso``, ``format``,
            ``capturetarget``) or the body's widget name (``f-number``).
        value : str
            A label from the choices, or a value the setting understands
            (``"8"`` for ``f/8``, ``"1/100"``, ``"raw+jpeg"``).

        Returns
        -------
        str
            The label sent to the camera.

        Raises
        ------
        CalibError
            Unknown setting, read-only, or a value not among the camera's choices (the
            message lists them); nothing was sent to the camera.
        """
        widget = self.resolve(name)
        cam = self._open()
        w = self._call(f"read setting {widget}", cam.get_single_config, widget)
        current = _setting_of(w)
        if current.readonly:
            raise CalibError(f"setting {widget} is read-only on the {self._detected.model}")
        generic = name if name in _ALIASES else next((g for g, a in _ALIASES.items() if widget in a), None)
        label: Any = _validate(widget, generic, str(value), current)
        w.set_value(label)
        self._call(f"set {widget} to {label}", cam.set_single_config, widget, w)
        self._settings[widget] = _setting_of(
            self._call(f"read setting {widget}", cam.get_single_config, widget))
        return str(label)

    def exposure(self) -> dict[str, str | None]:
        """Current f-number, shutter speed, ISO and image format labels (None: absent)."""
        out: dict[str, str | None] = {}
        for generic in ("fnumber", "shutter", "iso", "format"):
            widget = next((w for w in _ALIASES[generic] if w in self._settings), None)
            out[generic] = self._settings[widget].value if widget else None
        return out

    def _send(self, widget: str, value: Any) -> None:
        """Checked set used by focus drives (values are ints or labels)."""
        cam = self._open()
        w = self._call(f"read setting {widget}", cam.get_single_config, widget)
        label = _validate(widget, None, str(value), _setting_of(w))
        w.set_value(label)
        self._call(f"set {widget} to {label}", cam.set_single_config, widget, w)

    def focus(self, position: int) -> None:
        """Drive focus to ``position`` steps from the near end stop.

        The first move, and any move towards the near end, racks to the near stop
        and counts steps from there, so positions repeat within a session.

        Raises
        ------
        CalibError
            The body has no focus drive gphoto2 can move, or ``position`` < 0.
        """
        if self._drive is None:
            raise CalibError(
                f"the {self._detected.model} has no focus drive gphoto2 can move (no "
                "manualfocusdrive or manualfocus setting); focus by hand and use "
                "--focus current, or let the session prompt you at each focus setting"
            )
        if position < 0:
            raise CalibError(f"focus position {position} is negative; positions count steps from the near end stop")
        if self._drive.live_view and not self._live_view and "viewfinder" in self._settings:
            self._send("viewfinder", 1)  # Canon/Nikon drive the lens only in live view
            self._live_view = True
        if self._focus_pos is None or position < self._focus_pos:
            self._drive.rack_to_near_stop()
            self._focus_pos = 0
        self._drive.step(position - self._focus_pos)
        self._focus_pos = position
        time.sleep(self.settle_s)

    def present_chart(self, layout: Any | None, *, name: str) -> str | None:
        """The instruction for the operator: put up chart ``name``, or cap the lens."""
        if layout is None:
            return "put the lens cap on (and close the viewfinder shutter) for dark frames"
        return f"put chart {name} in front of the camera, framed and lit"

    def capture(self, folder: Path, *, prefix: str = "") -> list[Path]:
        """Trigger one shot, wait for every file it adds, download and check each.

        Returns
        -------
        list of Path
            Files saved in ``folder`` as ``prefix + camera file name``.

        Raises
        ------
        CalibError
            The camera delivered nothing in time, a download is empty or not
            decodable, or the camera failed (asleep, unplugged, busy).
        """
        gp = _gp()
        cam = self._open()
        added: list[tuple[str, str]] = []
        try:
            cam.trigger_capture()
        except gp.GPhoto2Error as exc:
            if exc.code != gp.GP_ERROR_NOT_SUPPORTED:
                if exc.code == gp.GP_ERROR_CAMERA_BUSY:
                    self._call("trigger a capture", cam.trigger_capture)
                else:
                    raise _explain(exc, "trigger a capture") from exc
            else:  # bodies without remote trigger: blocking capture reports the file
                path = self._call("capture an image", cam.capture, gp.GP_CAPTURE_IMAGE)
                added.append((path.folder, path.name))
        added += self._drain(gp, cam, have_file=bool(added))
        folder = Path(folder)
        out = []
        for cam_folder, name in added:
            out.append(self._download(gp, cam, cam_folder, name, folder / f"{prefix}{name}"))
        return out

    def _drain(self, gp: Any, cam: Any, *, have_file: bool) -> list[tuple[str, str]]:
        """Files the camera adds after a trigger, until it has been quiet a while.

        Property-change events keep coming on some bodies, so only files and
        capture-complete count as activity; the shot ends at the first timeout that
        comes ``quiet_s`` after the last activity.
        """
        files: list[tuple[str, str]] = []
        start = last = time.monotonic()
        poll_ms = max(1, int(self.quiet_s * 500))
        while True:
            kind, data = self._call("wait for the camera", cam.wait_for_event, poll_ms)
            now = time.monotonic()
            got = bool(files) or have_file
            if kind == gp.GP_EVENT_FILE_ADDED:
                files.append((data.folder, data.name))
                last = now
            elif kind == gp.GP_EVENT_CAPTURE_COMPLETE:
                last = now
            elif kind == gp.GP_EVENT_TIMEOUT and got and now - last >= self.quiet_s:
                return files
            if not got and now - start > self.event_timeout_s:
                raise CalibError(
                    f"the {self._detected.model} delivered no file within "
                    f"{self.event_timeout_s:g} s of the trigger; if autofocus could not lock, "
                    "switch the lens to MF, then continue with --resume"
                )
            if got and now - last > self.event_timeout_s:
                return files

    def _download(self, gp: Any, cam: Any, cam_folder: str, name: str, dest: Path) -> Path:
        last: CalibError | None = None
        for _attempt in range(2):  # one retry: a USB hiccup can truncate a transfer
            cam_file = self._call(f"download {name}", cam.file_get, cam_folder, name,
                                  gp.GP_FILE_TYPE_NORMAL)
            try:
                with atomic_write(dest) as tmp:
                    cam_file.save(str(tmp))
                    check_image_file(tmp)
                return dest
            except CalibError as exc:
                last = CalibError(str(exc).replace(str(tmp), str(dest)))
        assert last is not None
        raise last

    def close(self) -> None:
        """Release the camera; further use raises CalibError (safe to call twice)."""
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.exit()
            except Exception:  # noqa: BLE001 - a vanished camera cannot be released
                pass


# -------------------------------------------------------------------- widget helpers


def _walk(widget: Any, out: dict[str, Setting]) -> None:
    gp = _gp()
    kind = widget.get_type()
    if kind in (gp.GP_WIDGET_WINDOW, gp.GP_WIDGET_SECTION):
        for i in range(widget.count_children()):
            _walk(widget.get_child(i), out)
    elif kind != gp.GP_WIDGET_BUTTON:
        s = _setting_of(widget)
        out.setdefault(s.name, s)


def _setting_of(widget: Any) -> Setting:
    gp = _gp()
    kind = widget.get_type()
    common = {"name": widget.get_name(), "label": widget.get_label(),
              "readonly": bool(widget.get_readonly())}
    if kind in (gp.GP_WIDGET_RADIO, gp.GP_WIDGET_MENU):
        choices = tuple(widget.get_choice(i) for i in range(widget.count_choices()))
        return Setting(value=str(widget.get_value()), choices=choices, kind="choice", **common)
    if kind == gp.GP_WIDGET_RANGE:
        lo, hi, step = widget.get_range()
        return Setting(value=_fmt(widget.get_value()), kind="range",
                       range=(float(lo), float(hi), float(step)), **common)
    if kind == gp.GP_WIDGET_TOGGLE:
        return Setting(value=str(widget.get_value()), kind="toggle", **common)
    return Setting(value=str(widget.get_value()), kind="text", **common)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _validate(widget: str, generic: str | None, value: str, s: Setting) -> Any:
    """The value to hand to libgphoto2, or CalibError before anything is sent."""
    if s.kind == "choice":
        label = match_choice(generic, value, s.choices)
        if label is None:
            raise CalibError(
                f"{value!r} is not a valid {widget}; choose one the camera offers: {', '.join(s.choices)}"
            )
        return label
    if s.kind == "range":
        assert s.range is not None
        lo, hi, _step = s.range
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not lo <= v <= hi:
            raise CalibError(f"{value!r} is not a valid {widget}; use a number from {_fmt(lo)} to {_fmt(hi)}")
        return float(v)
    if s.kind == "toggle":
        table = {"1": 1, "on": 1, "true": 1, "yes": 1, "0": 0, "off": 0, "false": 0, "no": 0}
        if value.strip().lower() not in table:
            raise CalibError(f"{value!r} is not a valid {widget}; use 1/on or 0/off")
        return table[value.strip().lower()]
    return value
