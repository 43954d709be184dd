"""Take the README's screenshots from a real napari window (run under Xvfb on a headless machine).

    xvfb-run -a python docs/screenshots.py

Writes PNGs to docs/images/. Each screenshot shows what a user sees after one flow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).parent / "images"


def _settle(viewer: napari.Viewer) -> None:
    """Let Qt lay out the window, then fit the view, as a user's first look would."""
    for _ in range(3):
        QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()


def samples() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1100, 640)
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    viewer.open_sample("napari-emdenoise", "clean_lattice")
    viewer.grid.enabled = True
    _settle(viewer)
    viewer.screenshot(str(HERE / "samples.png"), canvas_only=False)
    viewer.close()


SHOTS = {"samples": samples}

if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or SHOTS:
        SHOTS[name]()
        print(f"wrote {HERE / (name + '.png')}")
