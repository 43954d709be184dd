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


def _quick_model(path: Path) -> Path:
    """A small denoiser trained for ~10 s on simulated pairs (until a bundled default model exists)."""
    from napari_emdenoise.nets import GeneratorConfig
    from napari_emdenoise.simulate import simulate
    from napari_emdenoise.train import TrainConfig, run, train

    sims = [simulate(size=192, period=16, dose=d, dents=1, seed=i) for i, d in enumerate((3, 6, 12, 4))]
    cfg = TrainConfig(mode="paired", generator=GeneratorConfig("resnet_6blocks", ngf=8), iterations=200, batch_size=8,
                      crop=64, lr=2e-3, decay_from=0.0, preview_every=0)
    return run(train([s.noisy for s in sims], [s.clean for s in sims], path, cfg))


def denoise() -> None:
    import tempfile

    from napari_emdenoise._widgets.denoise import FILE, DenoiseWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 720)
    viewer.open_sample("napari-emdenoise", "noisy_dented")
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Denoise", area="right")
    widget._source.value = FILE
    widget._file.value = _quick_model(Path(tempfile.mkdtemp()) / "run")
    worker = widget.start()
    while worker is not None and widget._worker is not None:
        QApplication.processEvents()
    for _ in range(20):
        QApplication.processEvents()
    viewer.grid.enabled = True
    _settle(viewer)
    viewer.camera.zoom *= 2.0  # the facing halves of input (left) and result (right), at full detail
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "denoise.png"), canvas_only=False)
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


SHOTS = {"samples": samples, "denoise": denoise, "mask": mask, "targets": targets, "train": train}

if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or SHOTS:
        SHOTS[name]()
        print(f"wrote {HERE / (name + '.png')}")
