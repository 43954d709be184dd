"""What a new user meets in a real napari window across the plugin's docks: sizes that fit a laptop screen, a
tooltip on every control, progress in napari's activity dock, settings that are remembered, sensible defaults."""

import json

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

import napari_emdenoise._widgets.base as base_module
import napari_emdenoise._widgets.mask as mask_module
from napari_emdenoise._widgets._common import tooltip_gaps
from napari_emdenoise._widgets._settings import settings_path
from napari_emdenoise._widgets.dataset import DatasetWidget
from napari_emdenoise._widgets.denoise import DenoiseWidget
from napari_emdenoise._widgets.mask import MaskWidget
from napari_emdenoise._widgets.score import NO_DENT, ScoreWidget
from napari_emdenoise._widgets.train import PAIRED_SIM, TrainWidget
from napari_emdenoise.simulate import simulate

DOCKS = (DenoiseWidget, MaskWidget, DatasetWidget, TrainWidget, ScoreWidget)


@pytest.fixture
def recorded_progress(monkeypatch):
    """Every napari progress bar the docks open (they appear in the activity dock): their descriptions."""
    from napari.utils import progress

    opened = []

    class Recorded(progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self.desc)

    monkeypatch.setattr(base_module, "progress", Recorded)
    monkeypatch.setattr(mask_module, "progress", Recorded)
    return opened


def test_every_dock_fits_a_laptop_screen_and_explains_every_control(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-emdenoise", "noisy_with_truth")
    for cls in DOCKS:
        w = cls(viewer)
        dock = viewer.window.add_dock_widget(w, name=cls.__name__, area="right")
        QApplication.processEvents()
        hint = dock.minimumSizeHint()
        assert hint.height() <= 450 and hint.width() <= 420, (cls.__name__, hint)
        assert w.body.minimumSizeHint().width() <= 420, cls.__name__  # nothing is cut off or needs a sideways scroll
        assert w.native.minimumWidth() >= w.body.minimumSizeHint().width(), cls.__name__
        assert tooltip_gaps(w) == [], cls.__name__
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1000  # all five docks open at once


def test_the_activity_dock_shows_denoise_mask_preview_build_and_train(make_napari_viewer, qtbot, tmp_path,
                                                                      recorded_progress, tiny_training):
    viewer = make_napari_viewer()
    viewer.add_image(simulate(size=128, period=10, dents=1, seed=2).noisy, name="scan", scale=(0.02, 0.02))
    denoise = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(denoise)
    with qtbot.waitSignal(denoise.start().finished, timeout=60_000):
        pass
    mask = MaskWidget(viewer)
    viewer.window.add_dock_widget(mask)
    qtbot.waitUntil(lambda: "scan dent mask" in viewer.layers and mask.idle, timeout=20_000)
    build = DatasetWidget(viewer)
    viewer.window.add_dock_widget(build)
    build.reset_choices()
    build._mask_layers.value = ["scan dent mask"]
    build._zooms.value = "20MX=8x8"
    build._per_mask.value = 1
    build._out.value = tmp_path / "set"
    with qtbot.waitSignal(build.start().finished, timeout=60_000):
        pass
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    train._mode.value = PAIRED_SIM
    tiny_training(train, tmp_path / "run", timeout=120_000)
    assert recorded_progress == ["Denoising", "Dent mask preview", "Building the target set", "Training"]


def test_settings_are_remembered_between_sessions(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    w._tile.value, w._invert.value = 256, True
    t = TrainWidget(viewer)
    t._iters.value, t._preset.value, t._out.value = 1234, "small", tmp_path / "runs"
    stored = json.loads(settings_path().read_text())
    assert stored["denoise"]["tile"] == 256 and stored["train"]["output folder"] == str(tmp_path / "runs")
    again, t2 = DenoiseWidget(viewer), TrainWidget(viewer)  # napari opened again
    assert again._tile.value == 256
    assert again._invert.value is False  # it belongs to each image: remembered, it wrecked the next session's ADF images
    assert t2._iters.value == 1234 and t2._preset.value == "small" and t2._out.value == tmp_path / "runs"
    settings_path().write_text("{ damaged")  # a damaged file: the defaults, and no error
    assert DenoiseWidget(viewer)._tile.value == 512


def test_scores_pick_the_matching_truth_and_dent_map(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-emdenoise", "noisy_with_truth")
    viewer.add_image(np.zeros((8, 8)), name="other")  # the first image layer is not the reference
    w = ScoreWidget(viewer)
    assert w._dent.value == NO_DENT
    viewer.add_image(viewer.layers["noisy dented"].data.astype(np.float32), name="noisy dented denoised")
    assert w._output.value.name == "noisy dented denoised"
    assert w._reference.value.name == "noisy dented truth"
    assert w._dent.value == "noisy dented dent map"


def test_the_mask_dock_lists_no_masks_of_its_own_and_warns_of_a_mask_of_everything(make_napari_viewer, qtbot,
                                                                                   monkeypatch):
    warnings = []
    monkeypatch.setattr(mask_module, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    sim = simulate(size=256, period=10, dose=6, dents=1, dent_radius=30, seed=5)
    viewer.add_image(sim.noisy, name="scan")
    w = MaskWidget(viewer)
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: "scan dent mask" in viewer.layers and w.idle, timeout=20_000)
    w.reset_choices()
    assert [name for name, _ in w._image_choices()] == ["scan"]
    assert not warnings
    w._threshold.value = 0  # everything darker than the brightest pixel is "dent"
    qtbot.waitUntil(lambda: w.idle and bool(warnings), timeout=20_000)
    assert "raise the threshold" in warnings[-1] and "almost all" in w._status.value
