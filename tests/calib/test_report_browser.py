"""The report as a user sees it: opened in headless Chromium, screenshot not blank."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _report_db import full_report

_CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (as root); else a skip."""
    if _CHROMIUM.exists():
        return _CHROMIUM
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed (/usr/bin/chromium) and installing it needs root")
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`{' '.join(cmd)}` did not finish in 20 minutes")
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no message"])[-1]
            pytest.skip(f"`{' '.join(cmd)}` failed (exit {res.returncode}): {last}")
    if not _CHROMIUM.exists():
        pytest.skip("apt-get installed chromium but /usr/bin/chromium is missing")
    return _CHROMIUM


def test_report_renders_in_headless_chromium_and_is_not_blank(chromium, tmp_path):
    report, _ = full_report()
    shot = tmp_path / "shot.png"
    cmd = [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1400,3000", report.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (3000, 1400)
    # A rendered page of tables and plots: many colours, and content all the way down
    # (a blank or broken page is one or two flat colours).
    for part in (img[:1000], img[1000:2000], img[2000:]):
        assert part.astype(float).std() > 10
        assert len(np.unique(part.reshape(-1, 3), axis=0)) > 500
