"""Take the README's screenshots from a real napari window (run under Xvfb on a headless machine).

    xvfb-run -a python docs/screenshots.py

    xvfb-run -a python docs/screenshots.py train     # one shot (or several), by function name

Writes PNGs to docs/images/. Each screenshot shows what a user sees after one flow, with the
docks' default settings: the settings the docks remember between sessions go to a temporary
file here, so neither the user's stored settings reach the pictures nor the other way round.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).parent / "images"
# before any dock is made: the docks' remembered settings (napari_emdenoise._widgets._settings.ENV) stay out of the shots
os.environ["NAPARI_EMDENOISE_SETTINGS"] = str(Path(tempfile.mkdtemp(prefix="emdenoise-shots-")) / "widgets.json")


def _settle(viewer: napari.Viewer) -> None:
    """Let Qt lay out the window, then fit the view, as a user's first look would."""
    for _ in range(3):
        QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()


def _close(viewer: napari.Viewer) -> None:
    """Close the window, then wait for the docks' workers: closing removes the layers, which may start one (the Denoise
    dock estimates the period of the image it now shows), and a worker still running as Python exits aborts it."""
    from napari.qt.threading import WorkerBase

    viewer.close()
    QApplication.processEvents()
    WorkerBase.await_workers(msecs=120_000)


def _fit_docks(viewer: napari.Viewer, *docks) -> None:
    """Docks stacked in one area: each but the last as tall as its controls, the last gets the rest (Qt would share the
    height out by the docks' size hints, squashing the last one)."""
    from qtpy.QtCore import Qt

    QApplication.processEvents()
    heights = [dock.titleBarWidget().sizeHint().height() + dock.widget().widget().sizeHint().height() + 8
               for dock in docks[:-1]]
    total = sum(dock.height() for dock in docks)
    viewer.window._qt_window.resizeDocks(list(docks), [*heights, max(total - sum(heights), 100)], Qt.Vertical)
    QApplication.processEvents()


def _widen_layer_list(viewer: napari.Viewer, width: int) -> None:
    """A layer list wide enough for the layers' full names (napari elides the middle of a long one)."""
    from qtpy.QtCore import Qt

    qt = viewer.window._qt_viewer
    viewer.window._qt_window.resizeDocks([qt.dockLayerList, qt.dockLayerControls], [width, width], Qt.Horizontal)
    QApplication.processEvents()


def samples() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1100, 640)
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    viewer.open_sample("napari-emdenoise", "clean_lattice")
    viewer.canvas.grid.enabled = True
    _settle(viewer)
    viewer.screenshot(str(HERE / "samples.png"), canvas_only=False)
    _close(viewer)


def denoise() -> None:
    """Denoise the sample with the bundled model, then score it against the sample's truth."""
    from napari_emdenoise._widgets.denoise import DenoiseWidget
    from napari_emdenoise._widgets.score import ScoreWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 820)
    viewer.open_sample("napari-emdenoise", "noisy_with_truth")
    widget = DenoiseWidget(viewer)
    denoise_dock = viewer.window.add_dock_widget(widget, name="Denoise", area="right")
    worker = widget.start()  # the bundled default model
    _wait(lambda: worker is None or widget._worker is None, 120)
    _wait(lambda: "noisy dented denoised" in viewer.layers, 10)
    scores = ScoreWidget(viewer)
    scores_dock = viewer.window.add_dock_widget(scores, name="Scores", area="right")
    scores._reference.value = viewer.layers["noisy dented truth"]
    scores._dent.value = "noisy dented dent map"
    scores.start()
    _wait(lambda: scores._run.enabled, 60)
    viewer.layers.move(viewer.layers.index("noisy dented"), len(viewer.layers) - 2)  # input left of the result
    viewer.canvas.grid.enabled = True
    _fit_docks(viewer, denoise_dock, scores_dock)
    _settle(viewer)
    viewer.camera.zoom *= 2.0  # the facing halves of input (left) and result (right), at full detail
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "denoise.png"), canvas_only=False)
    _close(viewer)


def consistency() -> None:
    """Denoise the SrTiO3 sample with the consistency map, shown beside input and output."""
    from napari_emdenoise._widgets.denoise import DenoiseWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 720)
    viewer.open_sample("napari-emdenoise", "specimen")
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Denoise", area="right")
    widget._map.value = True
    widget.start()
    _wait(lambda: "SrTiO3 with vacancies consistency" in viewer.layers, 180)
    _wait(lambda: widget._worker is None, 10)
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (1, 3)
    _widen_layer_list(viewer, 380)
    _settle(viewer)
    viewer.camera.zoom *= 2.5  # the middle of each panel at full detail
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "consistency.png"), canvas_only=False)
    _close(viewer)


def _wait(condition, timeout_s: float = 60.0) -> None:
    import time

    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def mask() -> None:
    from napari_emdenoise._widgets.mask import MaskWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 720)
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    widget = MaskWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Dent mask", area="right")
    _wait(lambda: "noisy dented dent mask" in viewer.layers and widget.idle)
    widget.make_editable()
    _settle(viewer)
    viewer.screenshot(str(HERE / "mask.png"), canvas_only=False)
    _close(viewer)


def targets() -> None:
    from napari_emdenoise._widgets.dataset import DatasetWidget
    from napari_emdenoise.masks import dent_mask

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 960)  # the dock's two layer lists take room: Build and the status line stay in view
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    noisy = viewer.layers["noisy dented"]
    # as the Dent mask dock makes it: the image's pixel size and units (else napari warns of mixed units)
    viewer.add_image(dent_mask(noisy.data), name="noisy dented dent mask", visible=False, scale=noisy.scale,
                     units=noisy.units)
    widget = DatasetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Target set", area="right")
    widget.reset_choices()
    widget._mask_layers.value = ["noisy dented dent mask"]
    widget._zooms.value = "20MX=16x16, 10MX=32x32"  # the lower magnification, the more columns
    widget._per_mask.value = 2
    viewer.layers["noisy dented"].visible = False
    worker = widget.preview()  # in a worker: the targets become layers when it finishes
    if worker is None:
        raise RuntimeError("the Target set dock did not start its preview (see the notification above)")
    _wait(lambda: not widget.running, 120)
    if not any(layer.name.startswith("target ") for layer in viewer.layers):
        raise RuntimeError(f"no preview targets were added: {widget._status.value}")
    viewer.canvas.grid.enabled = True
    _widen_layer_list(viewer, 470)  # the targets' full file names
    _settle(viewer)
    viewer.screenshot(str(HERE / "targets.png"), canvas_only=False)
    _close(viewer)


def train() -> None:
    """A short paired run on simulated pairs, paused: the measured time estimate, the progress line, the loss curves with
    their axes and legend, and the live preview layer. The CPU-sized "small" model (Advanced, folded) keeps the 120
    iterations short: on 2 busy CPU cores it measured 0.84 s per iteration against the default model's 1.63 s (120
    iterations took 5 and 8 minutes)."""
    from napari_emdenoise._widgets.train import PAIRED_SIM, TrainWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 1000)  # the whole dock, the loss plot's iteration axis included, without scrolling
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    widget._mode.value = PAIRED_SIM
    widget._preset.value = "small"
    widget._iters.value = 2000
    widget._out.value = Path(tempfile.mkdtemp()) / "run"
    _settle(viewer)
    # the estimate a user reads before Start: measured in a worker (its text lands in the label under "iterations")
    estimate = widget.update_estimate(force=True)
    _wait(lambda: estimate is None or widget._estimate_worker is None, timeout_s=300)
    _wait(lambda: widget._estimate.value.startswith("about"), timeout_s=10)
    if not widget._estimate.value.startswith("about"):
        raise RuntimeError(f"no time estimate: {widget._estimate.value!r}")
    worker = widget.start()
    if worker is None:
        raise RuntimeError("the Train dock did not start (see the notification above)")
    _wait(lambda: len(widget.plot.iterations) >= 120 or widget._worker is None, timeout_s=600)
    widget.toggle_pause()  # it pauses after the current iteration
    _wait(lambda: worker.is_paused, timeout_s=60)
    widget.plot.redraw()  # the last iterations too (the plot redraws at most four times a second)
    _settle(viewer)
    viewer.screenshot(str(HERE / "train.png"), canvas_only=False)
    widget.stop()
    _wait(lambda: widget._worker is None, timeout_s=120)
    _close(viewer)


SHOTS = {"samples": samples, "denoise": denoise, "consistency": consistency, "mask": mask, "targets": targets, "train": train}

if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    unknown = [name for name in sys.argv[1:] if name not in SHOTS]
    if unknown:
        sys.exit(f"unknown shot(s) {', '.join(unknown)}; choose from {', '.join(SHOTS)}")
    for name in sys.argv[1:] or SHOTS:
        SHOTS[name]()
        print(f"wrote {HERE / (name + '.png')}")
