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


def denoise() -> None:
    """Denoise the sample with the bundled model, then score it against the sample's truth."""
    from napari_emdenoise._widgets.denoise import DenoiseWidget
    from napari_emdenoise._widgets.score import ScoreWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 820)
    viewer.open_sample("napari-emdenoise", "noisy_with_truth")
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Denoise", area="right")
    worker = widget.start()  # the bundled default model
    _wait(lambda: worker is None or widget._worker is None, 120)
    _wait(lambda: "noisy dented denoised" in viewer.layers, 10)
    scores = ScoreWidget(viewer)
    viewer.window.add_dock_widget(scores, name="Scores", area="right")
    scores._reference.value = viewer.layers["noisy dented truth"]
    scores._dent.value = "noisy dented dent map"
    scores.start()
    _wait(lambda: scores._run.enabled, 60)
    viewer.layers.move(viewer.layers.index("noisy dented"), len(viewer.layers) - 2)  # input left of the result
    viewer.grid.enabled = True
    _settle(viewer)
    viewer.camera.zoom *= 2.0  # the facing halves of input (left) and result (right), at full detail
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "denoise.png"), canvas_only=False)
    viewer.close()


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
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    _settle(viewer)
    viewer.camera.zoom *= 2.5  # the middle of each panel at full detail
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "consistency.png"), canvas_only=False)
    viewer.close()


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
    viewer.close()


def targets() -> None:
    from napari_emdenoise._widgets.dataset import DatasetWidget
    from napari_emdenoise.masks import dent_mask

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 720)
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    viewer.add_image(dent_mask(viewer.layers["noisy dented"].data), name="noisy dented dent mask", visible=False)
    widget = DatasetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Target set", area="right")
    widget.reset_choices()
    widget._mask_layers.value = ["noisy dented dent mask"]
    widget._zooms.value = "20MX=32x32, 10MX=16x16"
    widget._per_mask.value = 2
    viewer.layers["noisy dented"].visible = False
    widget.preview()
    viewer.grid.enabled = True
    _settle(viewer)
    viewer.screenshot(str(HERE / "targets.png"), canvas_only=False)
    viewer.close()


def train() -> None:
    import tempfile

    from napari_emdenoise._widgets.train import PAIRED_SIM, TrainWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 800)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    widget._mode.value = PAIRED_SIM
    widget._iters.value = 2000
    widget._out.value = Path(tempfile.mkdtemp()) / "run"
    events = []
    worker = widget.start()
    worker.yielded.connect(events.append)
    _wait(lambda: len(events) >= 120, timeout_s=600)
    widget.toggle_pause()
    _settle(viewer)
    viewer.screenshot(str(HERE / "train.png"), canvas_only=False)
    widget.stop()
    _wait(lambda: widget._worker is None, timeout_s=120)
    viewer.close()


SHOTS = {"samples": samples, "denoise": denoise, "consistency": consistency, "mask": mask, "targets": targets, "train": train}

if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or SHOTS:
        SHOTS[name]()
        print(f"wrote {HERE / (name + '.png')}")
