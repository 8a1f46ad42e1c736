"""Debian's chromium, headless, for tests that check a page really renders.

``make test`` installs the ``chromium`` package; a machine without it fails these tests
with that advice rather than skipping them. Each call gets its own profile folder, so
tests running at the same time never share chromium's profile lock.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

WINDOW = (1200, 2000)
TIMEOUT_S = 90


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="qat-chromium-") as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}"]
        return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def screenshot(page: Path, png: Path) -> bytes:
    """The page as a WINDOW-sized PNG, as a browser draws it (CSS and inline SVG applied)."""
    run = _chromium("--hide-scrollbars", f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri())
    assert png.is_file(), f"chromium wrote no screenshot (exit {run.returncode}):\n{run.stderr[-2000:]}"
    return png.read_bytes()


def dump_dom(page: Path) -> str:
    """The DOM after chromium parsed and laid out the page, serialized back to HTML."""
    run = _chromium("--dump-dom", page.as_uri())
    assert run.returncode == 0 and "<html" in run.stdout, f"chromium --dump-dom failed:\n{run.stderr[-2000:]}"
    return run.stdout


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header; fails on anything that is not a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def blank_screenshot(folder: Path) -> bytes:
    """A screenshot of an empty page: what 'nothing rendered' compresses to, for comparison."""
    page = folder / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    return screenshot(page, folder / "blank.png")
