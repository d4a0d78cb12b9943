"""Camera-like output: 16-bit linear TIFF with the lenspsf metadata block."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._camera import SimShot

MAKE = "lenspsf"


def write_shot_tiff(shot: SimShot, path: str | os.PathLike, *, raw: bool = False) -> Path:
    """Write ``shot`` as a 16-bit TIFF, atomically.

    ``raw=False``: (H, W, 3) RGB of raw numbers per channel (black level included, no
    demosaicing: every pixel carries all three channels). ``raw=True``: the (H, W)
    RGGB mosaic. The ImageDescription holds ``{"lenspsf": {...ShotMetadata...,
    "black_level", "white_level", "cfa"}}``; Make/Model are set.
    """
    import tifffile  # noqa: PLC0415
    from targets import atomic_write  # noqa: PLC0415

    arr = shot.raw if raw else shot.rgb_dn
    block = {
        **shot.metadata.to_dict(),
        "black_level": int(shot.black_level),
        "white_level": int(shot.white_level),
        "cfa": "RGGB" if raw else None,
    }
    path = Path(path)
    with atomic_write(path) as tmp:
        tifffile.imwrite(
            tmp,
            arr,
            photometric="minisblack" if raw else "rgb",
            description=json.dumps({"lenspsf": block}),
            # tifffile's own shape description would be a second ImageDescription tag:
            # libtiff (OpenCV, GIMP) then warns that the tags are not in ascending order.
            metadata=None,
            extratags=[
                (271, "s", 0, MAKE, True),
                (272, "s", 0, shot.metadata.camera or "SimCam", True),
            ],
        )
    return path
