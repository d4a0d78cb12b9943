"""libgphoto2's virtual camera for the capture tests (real library, no mocks).

python-gphoto2 picks its I/O libraries from ``IOLIBS`` each time a port list is
loaded, and ``VCAMERADIR`` names the folder the virtual camera "shoots" from; both
are set per test, so it does not matter whether gphoto2 was imported earlier.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def gphoto2_dir() -> Path:
    spec = importlib.util.find_spec("gphoto2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("python-gphoto2 is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def make_vcamera_dir(folder: Path, seed: int = 7) -> Path:
    """A folder holding the one JPEG the virtual camera copies on every shot."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "scene.jpg", quality=95)
    return folder / "scene.jpg"


def use_virtual_camera(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    """Point libgphoto2 at its virtual camera; return the JPEG it will deliver."""
    jpeg = make_vcamera_dir(root / "vcamera")
    (root / "xdg").mkdir(exist_ok=True)
    monkeypatch.setenv("VCAMERADIR", str(jpeg.parent))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "xdg"))
    monkeypatch.setenv("IOLIBS", str(gphoto2_dir() / "libgphoto2" / "vusb"))
    return jpeg


def use_real_usb_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real I/O libraries: on a machine without a tethered camera nothing is found."""
    monkeypatch.delenv("VCAMERADIR", raising=False)
    monkeypatch.setenv("IOLIBS", str(gphoto2_dir() / "libgphoto2" / "iolibs"))


@pytest.fixture
def vcam(monkeypatch, tmp_path) -> Path:
    """The virtual camera is connected; yields the JPEG every shot delivers."""
    return use_virtual_camera(monkeypatch, tmp_path)
